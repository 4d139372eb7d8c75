"""Benchmarks: aiopop measured against stdlib poplib and raw-socket baselines, in one run."""
