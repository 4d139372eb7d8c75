"""From runs to numbers: medians, per-round ratios, and one verdict per target."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any

from benchmarks.harness.ratios import round_ratios
from benchmarks.harness.rounds import Rounds

from .spec import RunResult
from .workloads import MIB, Ratio, RssLimit, Workload

__all__ = ["ClientSummary", "Verdict", "WorkloadResult", "verdicts"]


@dataclass(frozen=True)
class ClientSummary:
    """One client's medians over the rounds of a workload."""

    seconds: float
    messages_per_s: float
    mb_per_s: float
    cpu_seconds: float
    peak_rss_mib: float
    rss_growth_mib: float
    max_rss_growth_mib: float


@dataclass(frozen=True)
class WorkloadResult:
    """A workload's runs, by client, in round order (empty when it was skipped)."""

    workload: Workload
    runs: dict[str, list[RunResult]]
    rounds: Rounds[RunResult] | None = None
    """How the rounds went (None when skipped)."""
    elapsed: float = 0.0
    """Seconds the whole workload took: every worker, warm-up and repeated rounds included."""

    @property
    def skipped(self) -> str | None:
        """Why the workload did not run, or None."""
        return self.workload.skipped

    def summary(self, client: str) -> ClientSummary:
        """Medians of ``client``'s runs (MB = 10^6 octets of message content; RSS in MiB)."""
        runs = self.runs[client]
        seconds = statistics.median(r.seconds for r in runs)
        growth = [r.rss_growth / MIB for r in runs]
        return ClientSummary(
            seconds=seconds,
            messages_per_s=self.workload.messages / seconds,
            mb_per_s=self.workload.octets / seconds / 1e6,
            cpu_seconds=statistics.median(r.cpu_seconds for r in runs),
            peak_rss_mib=statistics.median(r.peak_rss / MIB for r in runs),
            rss_growth_mib=statistics.median(growth),
            max_rss_growth_mib=max(growth),
        )

    def round_ratios(self, ratio: Ratio) -> list[float]:
        """The ratio in each round: the reference's time over the client's time."""
        return round_ratios(
            [run.seconds for run in self.runs[ratio.reference]],
            [run.seconds for run in self.runs[ratio.client]],
        )

    def median_ratio(self, ratio: Ratio) -> float:
        """The median over rounds of :meth:`round_ratios`."""
        return statistics.median(self.round_ratios(ratio))

    def to_json(self) -> dict[str, Any]:
        """Everything about this workload, for ``--json``."""
        workload = self.workload
        data: dict[str, Any] = {
            "title": workload.title,
            "messages": workload.messages,
            "octets": workload.octets,
            "message_size": workload.size,
            "skipped": workload.skipped,
            "elapsed_seconds": self.elapsed,
        }
        if workload.skipped is not None or self.rounds is None:
            return data
        data.update(self.rounds.to_json())
        data["clients"] = {
            name: {
                "median": vars(self.summary(name)),
                "runs": [vars(run) for run in runs],
            }
            for name, runs in self.runs.items()
        }
        data["ratios"] = [
            {
                "label": ratio.label,
                "client": ratio.client,
                "reference": ratio.reference,
                "target_minimum": ratio.minimum,
                "median": self.median_ratio(ratio),
                "rounds": self.round_ratios(ratio),
            }
            for ratio in workload.ratios
        ]
        return data


@dataclass(frozen=True)
class Verdict:
    """One target: PASS, FAIL or SKIP, and the line that says so."""

    status: str
    workload: str
    client: str
    """The client the target is about."""
    text: str

    def line(self) -> str:
        """The report's line for this target."""
        return f"{self.status:<4}  {self.text}"


def _ratio_verdict(result: WorkloadResult, ratio: Ratio, minimum: float) -> Verdict:
    value = result.median_ratio(ratio)
    status = "PASS" if value >= minimum else "FAIL"
    text = f"{result.workload.title}: {ratio.label} {value:.2f}x (target >= {minimum:g}x)"
    return Verdict(status, result.workload.key, ratio.client, text)


def _rss_verdict(result: WorkloadResult, limit: RssLimit) -> Verdict:
    summary = result.summary(limit.client)
    worst = summary.max_rss_growth_mib
    status = "PASS" if worst <= limit.mib else "FAIL"
    text = (
        f"{result.workload.title}: {limit.client} peak RSS growth {worst:.1f} MiB, worst of "
        f"{len(result.runs[limit.client])} runs (median {summary.rss_growth_mib:.1f}; "
        f"target <= {limit.mib:g} MiB)"
    )
    return Verdict(status, result.workload.key, limit.client, text)


def verdicts(results: list[WorkloadResult]) -> list[Verdict]:
    """Every target of every workload, in report order."""
    found = []
    for result in results:
        workload = result.workload
        targets = [r for r in workload.ratios if r.minimum is not None]
        if workload.skipped is not None:
            found += [
                Verdict(
                    "SKIP",
                    workload.key,
                    r.client,
                    f"{workload.title}: {r.label}: {workload.skipped}",
                )
                for r in targets
            ]
            continue
        found += [_ratio_verdict(result, r, r.minimum) for r in targets if r.minimum is not None]
        found += [_rss_verdict(result, limit) for limit in workload.rss_limits]
    return found
