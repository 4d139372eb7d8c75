"""Where things are, and what every suite says when its numbers cannot be trusted."""

from __future__ import annotations

import sys
from pathlib import Path

__all__ = ["CACHE", "NOISY", "REPOSITORY", "RESULTS", "BenchmarkAbortedError", "progress"]

REPOSITORY = Path(__file__).resolve().parents[2]
RESULTS = REPOSITORY / "benchmarks" / "results"
CACHE = REPOSITORY / ".cache"
"""Work directories go here: on the repository's file system, git-ignored."""
NOISY = 0.10
"""Other programs using more than this share of one CPU during a round make it noisy."""


class BenchmarkAbortedError(Exception):
    """A worker failed or a client got a wrong result: the numbers cannot be trusted."""


def progress(message: str) -> None:
    """Progress goes to stderr (the report goes to stdout)."""
    print(message, file=sys.stderr, flush=True)
