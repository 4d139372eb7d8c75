"""A chart per distance: each fetch client's seconds for the whole mailbox, and the limits."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

__all__ = ["chart"]


def chart(summary: dict[str, Any], path: Path) -> bool:
    """Horizontal bars (log scale): median seconds per client (serial ones scaled, hatched),
    slowest and fastest round as whiskers, each aiopop client's physical limit as a line.
    False when there is nothing to draw."""
    import matplotlib

    matplotlib.use("Agg")  # before pyplot: no display needed
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    clients = [
        (name, found)
        for name, found in summary["clients"].items()
        if not math.isnan(found["scaled_seconds_median"])
    ]
    if not clients:
        return False
    n = summary["messages"]
    figure, axes = plt.subplots(figsize=(8, 0.5 * len(clients) + 1.8), dpi=100)
    for index, (name, found) in enumerate(clients):
        runs = [run for run in found["runs"] if run["ok"]]
        seconds = [run["seconds"] / max(run["delivered"], 1) * n for run in runs]
        median = found["scaled_seconds_median"]
        axes.barh(
            index,
            median,
            color="#1f77b4" if name.startswith("aiopop") else "#999999",
            hatch="//" if found["scaled"] else None,
            xerr=[[median - min(seconds)], [max(seconds) - median]],
        )
        axes.text(median * 1.05, index, f"{median:.2f} s", va="center", fontsize=8)
    styles = ("--", ":")
    for (name, limit), style in zip(
        summary["physical_limit_seconds"].items(), styles, strict=False
    ):
        axes.axvline(
            limit,
            linestyle=style,
            linewidth=1.2,
            color="#d62728",
            label=f"physical limit of {name}: {limit:.2f} s",
        )
    if summary["physical_limit_seconds"]:
        axes.legend(fontsize=7, loc="upper right")  # the top rows (aiopop) are short
    axes.set_yticks(range(len(clients)), [name for name, _ in clients])
    axes.invert_yaxis()
    axes.set_xscale("log")
    axes.xaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
    axes.xaxis.set_major_formatter(ticker.FuncFormatter(lambda value, _: f"{value:g}"))
    axes.xaxis.set_minor_formatter(ticker.NullFormatter())
    axes.set_xlabel(f"seconds for {n} x 8 KB into a Maildir (log scale; lower is better)")
    scaled = f"; hatched: fetched {summary['serial_messages']}, scaled per message"
    axes.set_title(
        f"{summary['rtt_ms']:g} ms round-trip time through the delay proxy"
        + (scaled if any(found["scaled"] for _, found in clients) else ""),
        fontsize=9,
    )
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
    return True
