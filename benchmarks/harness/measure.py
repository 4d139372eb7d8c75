"""The timed span of one run: wall clock, CPU time and memory, from inside the worker.

A client calls :meth:`Span.start` just before it sends its first RETR and
:meth:`Span.stop` once the last octet has arrived. CPU time is
``time.process_time`` (user + system, every thread of the worker). Memory
comes from ``/proc/self/status``: the resident set at the start, and the
high-water mark at the end, after resetting it at the start (``clear_refs``)
so that it covers the span only. (``ru_maxrss`` would not do: after
``vfork`` and ``exec`` Linux may charge the parent's peak to the child.)
"""

from __future__ import annotations

import contextlib
import cProfile
import re
import time
from pathlib import Path

__all__ = ["Span", "peak_rss", "resident"]

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_kib(field: str) -> int:
    match = re.search(rf"^{field}:\s+(\d+) kB", _STATUS.read_text(), re.MULTILINE)
    if match is None:
        raise RuntimeError(f"no {field} in {_STATUS}: Linux is needed for memory figures")
    return int(match.group(1))


def resident() -> int:
    """The resident set size of this process now, in octets."""
    return _status_kib("VmRSS") * 1024


def peak_rss() -> int:
    """The highest resident set size since start or the last :func:`reset_peak`, in octets."""
    return _status_kib("VmHWM") * 1024


def reset_peak() -> None:
    """Make the high-water mark the current resident set (Linux 4.0 and later)."""
    with contextlib.suppress(OSError):
        _CLEAR_REFS.write_text("5")


class Span:
    """Wall and CPU seconds and memory between :meth:`start` and :meth:`stop`."""

    def __init__(self, profiler: cProfile.Profile | None = None) -> None:
        self.profiler = profiler
        """Profiles the span (only the thread that starts it), when given."""
        self.wall = 0.0
        self.cpu = 0.0
        self.rss_before = 0
        self.peak = 0
        self._wall0 = 0.0
        self._cpu0 = 0.0
        self.started = False
        self.stopped = False

    def start(self) -> None:
        """Start the clocks (just before the first RETR goes out)."""
        reset_peak()
        if not self.started:
            self.rss_before = resident()
        self.started = True
        if self.profiler is not None:
            self.profiler.enable()
        self._cpu0 = time.process_time()
        self._wall0 = time.perf_counter()

    def stop(self) -> None:
        """Stop the clocks (the last octet has arrived).

        A span started and stopped more than once (a short run repeated) keeps
        the fastest interval's wall and CPU time, and the highest peak.
        """
        wall = time.perf_counter() - self._wall0
        cpu = time.process_time() - self._cpu0
        if self.profiler is not None:
            self.profiler.disable()
        peak = peak_rss()
        if not self.stopped or wall < self.wall:
            self.wall = wall
            self.cpu = cpu
        self.peak = max(self.peak, peak)
        self.stopped = True
