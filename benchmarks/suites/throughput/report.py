"""The printed report: one table of every client run, the ratios, then PASS/FAIL per target."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from benchmarks.harness.report import noise_lines
from benchmarks.harness.report import write_json as save

from .results import Verdict, WorkloadResult

__all__ = ["print_report", "write_json"]

_HEADER = (
    f"{'client':<21}{'workload':<17}{'median s':>10}{'messages/s':>12}{'MB/s':>9}"
    f"{'CPU s':>8}{'peak RSS MB':>13}{'RSS +MB':>9}"
)


def _rows(result: WorkloadResult) -> list[str]:
    key = result.workload.key
    if result.skipped is not None:
        return [f"{'-':<21}{key:<17}  skipped: {result.skipped}"]
    rows = []
    for client in result.runs:
        s = result.summary(client)
        rows.append(
            f"{client:<21}{key:<17}{s.seconds:>10.4f}{s.messages_per_s:>12.0f}"
            f"{s.mb_per_s:>9.1f}{s.cpu_seconds:>8.3f}{s.peak_rss_mib:>13.1f}"
            f"{s.rss_growth_mib:>9.1f}"
        )
    return rows


def _ratio_lines(result: WorkloadResult) -> list[str]:
    if result.skipped is not None:
        return []
    lines = []
    for ratio in result.workload.ratios:
        rounds = result.round_ratios(ratio)
        lines.append(
            f"  {result.workload.key:<16} {ratio.label:<46} {result.median_ratio(ratio):>6.2f}x"
            f"   (rounds {min(rounds):.2f} to {max(rounds):.2f})"
        )
    return lines


def print_report(
    out: TextIO,
    *,
    machine: str,
    settings: str,
    results: Sequence[WorkloadResult],
    verdicts: Sequence[Verdict],
    elapsed: float,
    noisy_share: float,
) -> None:
    """Write the whole human-readable report to ``out``.

    Workloads during which other programs used more than ``noisy_share`` of
    one CPU are named.
    """
    print(f"aiopop RETR benchmark: {settings}", file=out)
    print(machine, file=out)
    print(file=out)
    print(_HEADER, file=out)
    print("-" * len(_HEADER), file=out)
    previous = None
    for result in results:
        group = result.workload.key.split()[0]
        if previous is not None and group != previous:
            print(file=out)
        previous = group
        for row in _rows(result):
            print(row, file=out)
    print(file=out)
    print(
        "ratios, median over rounds of (the reference's time / the client's time); "
        "above 1: the client is faster",
        file=out,
    )
    for result in results:
        for line in _ratio_lines(result):
            print(line, file=out)
    print(file=out)
    for line in noise_lines(
        (r.rounds.noise_line(r.workload.key) for r in results if r.rounds is not None),
        noisy_share,
    ):
        print(line, file=out)
    print(file=out)
    for verdict in verdicts:
        print(verdict.line(), file=out)
    failed = sum(v.status == "FAIL" for v in verdicts)
    skipped = sum(v.status == "SKIP" for v in verdicts)
    passed = len(verdicts) - failed - skipped
    print(file=out)
    print(
        f"targets: {passed} passed, {failed} failed, {skipped} skipped; "
        f"total run time {elapsed:.0f} s",
        file=out,
    )


def write_json(
    path: Path,
    *,
    machine: dict[str, Any],
    settings: dict[str, Any],
    results: Sequence[WorkloadResult],
    verdicts: Sequence[Verdict],
    elapsed: float,
) -> None:
    """Write every run, median, ratio and verdict to ``path``."""
    data = {
        "machine": machine,
        "settings": settings,
        "elapsed_seconds": elapsed,
        "workloads": {result.workload.key: result.to_json() for result in results},
        "targets": [vars(v) for v in verdicts],
    }
    save(path, data)
