"""The chart: throughput by message size for each client, plain POP3 against Dovecot."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # before pyplot: no display needed

import matplotlib.pyplot as plt

from .results import WorkloadResult
from .workloads import KIB, MIB

__all__ = ["CLIENTS", "draw"]

CLIENTS = ("aiopop", "poplib", "ceiling")
COLOURS = {"aiopop": "#1f77b4", "poplib": "#ff7f0e", "ceiling": "#7f7f7f"}


def _label(size: int) -> str:
    return f"{size // MIB} MB" if size >= MIB else f"{size // KIB} KB"


def _mb_per_s(result: WorkloadResult, client: str) -> tuple[float, float, float]:
    """Median, lowest and highest MB/s over the rounds."""
    octets = result.workload.octets
    speeds = sorted(octets / run.seconds / 1e6 for run in result.runs[client])
    return result.summary(client).mb_per_s, speeds[0], speeds[-1]


def draw(results: Sequence[WorkloadResult], path: Path, subtitle: str) -> None:
    """Grouped bars, one group per message size: median MB/s, whiskers from slowest to fastest."""
    sizes = [result.workload.size for result in results]
    figure, axes = plt.subplots(figsize=(8, 4.6), dpi=100)
    width = 0.8 / len(CLIENTS)
    for index, client in enumerate(CLIENTS):
        values = [_mb_per_s(result, client) for result in results]
        positions = [
            group + (index - (len(CLIENTS) - 1) / 2) * width for group in range(len(sizes))
        ]
        medians = [median for median, _, _ in values]
        errors = [
            [median - low for median, low, _ in values],
            [high - median for median, _, high in values],
        ]
        bars = axes.bar(
            positions,
            medians,
            width,
            yerr=errors,
            capsize=2,
            label=client,
            color=COLOURS[client],
            error_kw={"elinewidth": 0.8},
        )
        axes.bar_label(bars, labels=[f"{m:.0f}" for m in medians], fontsize=7, padding=2)
    axes.set_xticks(range(len(sizes)), [_label(size) for size in sizes])
    axes.set_xlabel("message size (about 16 MB of mail per size)")
    axes.set_ylabel("MB/s of message content (median)")
    axes.set_title("RETR throughput against a local Dovecot, plain POP3", fontsize=11)
    figure.text(0.01, 0.01, subtitle, fontsize=6.5, color="#555555", va="bottom")
    axes.legend(frameon=False)
    axes.grid(axis="y", alpha=0.3)
    axes.set_axisbelow(True)
    figure.tight_layout(rect=(0, 0.04, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
