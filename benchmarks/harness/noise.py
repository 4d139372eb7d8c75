"""How much CPU other programs took while a workload ran: the benchmark's noise meter.

The machine's busy time comes from ``/proc/stat``; the benchmark's own
(this process, its live descendants such as Dovecot, and every child they
reaped: workers, Dovecot's per-connection processes) from ``/proc/PID/stat``.
What is left was used by something else, and makes the numbers noisy.
Linux only; elsewhere nothing is measured.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CpuSample", "Meter"]

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _machine_busy() -> float:
    """Seconds of busy CPU since boot, all CPUs together."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    ticks = [int(value) for value in fields[:8]]  # user nice system idle iowait irq softirq steal
    idle = ticks[3] + ticks[4]
    return (sum(ticks) - idle) / _TICK


def _processes() -> dict[int, tuple[int, float]]:
    """Every process: parent pid, and its CPU seconds including its reaped children."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            text = (entry / "stat").read_text()
        except OSError:
            continue  # it ended meanwhile
        # The command name may hold spaces and parentheses: split after its last ")".
        fields = text[text.rindex(")") + 2 :].split()
        ppid = int(fields[1])
        utime, stime, cutime, cstime = (int(v) for v in fields[11:15])
        found[int(entry.name)] = (ppid, (utime + stime + cutime + cstime) / _TICK)
    return found


def _own_cpu() -> float:
    """CPU seconds of this process and all its descendants, living or reaped."""
    processes = _processes()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in processes.items():
        children.setdefault(ppid, []).append(pid)
    total = 0.0
    todo = [os.getpid()]
    while todo:
        pid = todo.pop()
        if pid in processes:
            total += processes[pid][1]
        todo += children.get(pid, [])
    return total


@dataclass(frozen=True)
class CpuSample:
    """The machine's and the benchmark's CPU seconds at one moment."""

    machine: float
    own: float


class Meter:
    """CPU seconds used by other programs between :meth:`start` and :meth:`others`."""

    def __init__(self) -> None:
        self._start: CpuSample | None = None

    @staticmethod
    def sample() -> CpuSample | None:
        """Now, or None where /proc cannot tell."""
        try:
            return CpuSample(_machine_busy(), _own_cpu())
        except (OSError, ValueError, IndexError):
            return None

    def start(self) -> None:
        """Start counting."""
        self._start = self.sample()

    def others(self) -> float | None:
        """CPU seconds other programs used since :meth:`start` (None: unknown)."""
        now = self.sample()
        if self._start is None or now is None:
            return None
        machine = now.machine - self._start.machine
        own = now.own - self._start.own
        return max(0.0, machine - own)
