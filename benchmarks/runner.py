"""Running workers: one process per client run, clients alternating round by round."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from .others import Meter
from .spec import RunResult, RunSpec

__all__ = ["REPOSITORY", "BenchmarkAbortedError", "Rounds", "alternate", "run_worker"]

REPOSITORY = Path(__file__).resolve().parent.parent
WORKER_TIMEOUT = 300.0
"""Seconds one worker may take, connect to exit, before the benchmark gives up."""

Progress = Callable[[str], None]


class BenchmarkAbortedError(Exception):
    """A worker failed or a client got a wrong result: the numbers cannot be trusted."""


def run_worker(spec: RunSpec) -> RunResult:
    """Run ``spec`` in a fresh ``python -m benchmarks.worker`` and return its measurements."""
    try:
        done = subprocess.run(
            [sys.executable, "-m", "benchmarks.worker", spec.to_json()],
            cwd=REPOSITORY,
            capture_output=True,
            text=True,
            timeout=WORKER_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise BenchmarkAbortedError(
            f"{spec.client}: no result within {WORKER_TIMEOUT:g} s"
        ) from None
    if done.returncode != 0:
        why = done.stderr.strip() or f"exit status {done.returncode}"
        raise BenchmarkAbortedError(f"{spec.client} failed:\n{why}")
    lines = done.stdout.strip().splitlines()
    if not lines:
        raise BenchmarkAbortedError(f"{spec.client}: the worker printed no result")
    return RunResult.from_json(lines[-1])


@dataclass
class Rounds:
    """A workload's measured runs by client, in round order, and how the rounds went."""

    runs: dict[str, list[RunResult]]
    repeated: int = 0
    """Rounds run again because other programs were busy meanwhile."""
    noisy_kept: int = 0
    """Noisy rounds kept because no retry was left."""
    others_cpu: float | None = 0.0
    """CPU seconds other programs used during the kept rounds (None: unknown)."""
    kept_seconds: float = 0.0
    """How long the kept rounds took, workers' start-up included."""


def alternate(
    clients: Mapping[str, RunSpec],
    *,
    rounds: int,
    warmup: int,
    progress: Progress,
    label: str,
    noisy: float,
    retries: int,
) -> Rounds:
    """Run every client once per round, ``warmup`` untimed rounds first.

    Each round starts with the next client (round 1 with the first, round 2
    with the second, ...), so no client always runs right after the same
    other one. Warm-up runs are checked like the others but not kept. A round
    during which other programs used more than ``noisy`` of one CPU is run
    again, ``retries`` times at most for the whole workload; after that,
    noisy rounds are kept (and the report says so).
    """
    names = list(clients)
    result = Rounds({name: [] for name in names})
    number = -warmup
    while number < rounds:
        shift = number % len(names)
        order = names[shift:] + names[:shift]
        meter = Meter()
        meter.start()
        began = time.perf_counter()
        seen = {name: run_worker(clients[name]) for name in order}
        others = meter.others()
        took = time.perf_counter() - began
        share = 0.0 if others is None else others / took
        what = "warm-up" if number < 0 else f"round {number + 1}/{rounds}"
        timings = ", ".join(f"{name} {seen[name].seconds:.3f} s" for name in names)
        busy = f" (others used {share:.0%} of a CPU)" if share > noisy else ""
        if number >= 0 and share > noisy and result.repeated < retries:
            result.repeated += 1
            progress(f"  {label} {what}: {timings}{busy}: noisy, running it again")
            continue
        progress(f"  {label} {what}: {timings}{busy}")
        if number >= 0:
            for name in names:
                result.runs[name].append(seen[name])
            result.kept_seconds += took
            result.noisy_kept += share > noisy
            if result.others_cpu is not None:
                result.others_cpu = None if others is None else result.others_cpu + others
        number += 1
    return result
