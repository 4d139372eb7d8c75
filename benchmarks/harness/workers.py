"""One client run in a fresh Python process: no run inherits another's heap, caches or loop."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

from .paths import REPOSITORY, BenchmarkAbortedError

__all__ = ["WORKER_TIMEOUT", "run_module", "run_module_json"]

WORKER_TIMEOUT = 300.0
"""Seconds one worker may take, start to exit, before the benchmark gives up."""


def run_module(module: str, arguments: Sequence[str], *, what: str) -> str:
    """Run ``python -m module *arguments`` from the repository; return its last line of output.

    A timeout, a non-zero exit status or no output raises
    :class:`BenchmarkAbortedError` naming ``what`` (the client, usually).
    """
    try:
        done = subprocess.run(
            [sys.executable, "-m", module, *arguments],
            cwd=REPOSITORY,
            capture_output=True,
            text=True,
            timeout=WORKER_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise BenchmarkAbortedError(f"{what}: no result within {WORKER_TIMEOUT:g} s") from None
    if done.returncode != 0:
        why = done.stderr.strip() or f"exit status {done.returncode}"
        raise BenchmarkAbortedError(f"{what} failed:\n{why}")
    lines = done.stdout.strip().splitlines()
    if not lines:
        raise BenchmarkAbortedError(f"{what}: the worker printed no result")
    return lines[-1]


def run_module_json(module: str, request: dict[str, Any], *, what: str) -> dict[str, Any]:
    """:func:`run_module` with one JSON argument, and a JSON object as the answer."""
    found: dict[str, Any] = json.loads(run_module(module, [json.dumps(request)], what=what))
    return found
