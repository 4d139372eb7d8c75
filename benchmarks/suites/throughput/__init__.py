"""The throughput suite: aiopop against stdlib poplib and raw-socket ceilings."""
