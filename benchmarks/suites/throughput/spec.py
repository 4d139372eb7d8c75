"""What the parent asks a worker to run, and what the worker answers: both as JSON."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

from benchmarks.harness.workers import run_module

__all__ = ["WORKER", "RunResult", "RunSpec", "ServerSpec", "run_worker"]

WORKER = "benchmarks.suites.throughput.worker"
"""The module a fresh worker process runs."""


@dataclass(frozen=True)
class ServerSpec:
    """Where a mailbox is and how to log in. ``cafile`` set means implicit TLS (POP3S)."""

    host: str
    port: int
    user: str
    password: str
    cafile: str | None = None


@dataclass(frozen=True)
class RunSpec:
    """One run of one client in a fresh worker process.

    ``client`` names a function in :data:`benchmarks.suites.throughput.worker.CLIENTS`.
    ``manifest`` is the JSON file of sizes and digests the result is checked
    against; ``directory`` where a message is written to a file; ``size``
    and ``dot_every`` shape the parser's message; ``repeat`` is how often a
    (short) parser run is repeated, the fastest counting; ``fsync`` is passed
    to ``retr_to_file``.
    """

    client: str
    count: int = 1
    server: ServerSpec | None = None
    manifest: str | None = None
    directory: str | None = None
    size: int = 0
    dot_every: int = 0
    repeat: int = 1
    fsync: bool = True
    profile: str | None = None
    """Write cProfile statistics of the timed span (the thread that runs it) here."""

    def to_json(self) -> str:
        """The spec as one line of JSON (a worker's command-line argument)."""
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> RunSpec:
        """The spec ``to_json`` wrote."""
        fields: dict[str, Any] = json.loads(text)
        server = fields.pop("server", None)
        return cls(server=ServerSpec(**server) if server is not None else None, **fields)


@dataclass(frozen=True)
class RunResult:
    """One run's measurements, all of the timed span (first RETR to last octet) unless noted.

    ``rss_before`` is the resident set just before the span starts and
    ``peak_rss`` the process's high-water mark at its end, both in octets;
    ``octets`` the message content that arrived (unstuffed, as stored).
    """

    seconds: float
    cpu_seconds: float
    peak_rss: int
    rss_before: int
    octets: int
    messages: int

    @property
    def rss_growth(self) -> int:
        """How far the process's peak rose above what it held before the span, in octets."""
        return max(0, self.peak_rss - self.rss_before)

    def to_json(self) -> str:
        """The result as one line of JSON (a worker's last line of output)."""
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> RunResult:
        """The result ``to_json`` wrote."""
        return cls(**json.loads(text))


def run_worker(spec: RunSpec) -> RunResult:
    """Run ``spec`` in a fresh worker process (:data:`WORKER`) and return its measurements."""
    return RunResult.from_json(run_module(WORKER, [spec.to_json()], what=spec.client))
