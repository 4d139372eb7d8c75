"""The rounds loop every suite uses: clients alternating, noisy rounds run again.

Each round runs every client of a workload once, in turn; each round starts
with the next client (round 1 with the first, round 2 with the second, ...),
so that no client always runs right after the same other one. Warm-up
rounds run first and are not kept. The noise meter (:mod:`.noise`) watches
every round: a round during which other programs used more than ``noisy``
of one CPU is run again, ``retries`` times at most per workload; after
that, noisy rounds are kept, and the result says how many.

What one run is (a worker process, a peer's command, a check afterwards) is
the suite's business: it hands in ``run(client, number)``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from .noise import Meter
from .paths import NOISY, progress

__all__ = ["Rounds", "alternate"]

R = TypeVar("R")


@dataclass
class Rounds(Generic[R]):
    """A workload's kept runs by client, in round order, and how the rounds went."""

    runs: dict[str, list[R]]
    repeated: int = 0
    """Rounds run again because other programs were busy meanwhile."""
    noisy_kept: int = 0
    """Noisy rounds kept because no retry was left."""
    others_cpu: float | None = 0.0
    """CPU seconds other programs used during the kept rounds (None: unknown)."""
    kept_seconds: float = 0.0
    """How long the kept rounds took, workers' start-up included."""
    log: list[dict[str, Any]] = field(default_factory=list)
    """One entry per kept round: its number, the order, seconds, others' share, the notes."""

    @property
    def others_share(self) -> float:
        """What other programs used during the kept rounds, as a share of one CPU."""
        if self.others_cpu is None or self.kept_seconds <= 0:
            return 0.0
        return self.others_cpu / self.kept_seconds

    def noise_line(self, label: str) -> str | None:
        """The report's ``noisy:`` line for this workload, or None when every round was quiet."""
        if not (self.repeated or self.noisy_kept):
            return None
        return (
            f"noisy: {label}: {self.repeated} rounds run again, {self.noisy_kept} noisy rounds "
            f"kept; other programs used {self.others_share:.0%} of a CPU during the kept rounds"
        )

    def to_json(self) -> dict[str, Any]:
        """How the rounds went (not the runs: the suite writes those its own way)."""
        return {
            "rounds_repeated_as_noisy": self.repeated,
            "noisy_rounds_kept": self.noisy_kept,
            "other_programs_cpu_seconds": self.others_cpu,
            "other_programs_share_of_a_cpu": self.others_share,
            "rounds": self.log,
        }


def _seconds(run: object) -> str:
    seconds = getattr(run, "seconds", None)
    return f"{seconds:.3f} s" if isinstance(seconds, float) else "done"


def alternate(
    clients: Sequence[str],
    run: Callable[[str, int], R],
    *,
    rounds: int,
    warmup: int,
    retries: int,
    label: str,
    noisy: float = NOISY,
    describe: Callable[[R], str] = _seconds,
    before: Callable[[], dict[str, Any]] | None = None,
    after: Callable[[], dict[str, Any]] | None = None,
) -> Rounds[R]:
    """Run every client once per round, ``warmup`` untimed rounds first.

    ``run(client, number)`` does one run (``number`` counts rounds from 0;
    warm-up rounds are negative) and returns what the suite keeps.
    ``describe`` says how a run went in the progress line; ``before`` and
    ``after``, if given, are asked before and after each round for facts to
    log with it (the load, say).
    """
    names = list(clients)
    result: Rounds[R] = Rounds({name: [] for name in names})
    number = -warmup
    while number < rounds:
        shift = number % len(names)
        order = names[shift:] + names[:shift]
        noted = before() if before is not None else {}
        meter = Meter()
        meter.start()
        began = time.perf_counter()
        seen = {name: run(name, number) for name in order}
        others = meter.others()
        took = time.perf_counter() - began
        share = 0.0 if others is None else others / took
        what = "warm-up" if number < 0 else f"round {number + 1}/{rounds}"
        timings = ", ".join(f"{name} {describe(seen[name])}" for name in names)
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
            result.log.append(
                {
                    "round": number + 1,
                    "order": order,
                    "seconds": round(took, 3),
                    "others_cpu_share": None if others is None else round(share, 4),
                    **noted,
                    **(after() if after is not None else {}),
                }
            )
        number += 1
    return result
