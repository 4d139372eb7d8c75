"""One client run in a process of its own.

``python -m benchmarks.suites.throughput.worker '<RunSpec JSON>'``

It runs the client named in the spec, checks what arrived against the
stored mailbox (after the span, outside it), and prints one line of JSON: a
:class:`~benchmarks.suites.throughput.spec.RunResult`. A wrong result exits with status 3 and
says why on stderr; any other failure with status 1 and a traceback.
"""

from __future__ import annotations

import cProfile
import sys
from collections.abc import Callable

from benchmarks.harness.measure import Span
from benchmarks.harness.messages import check_digests, load_manifest

from .bigfile import fetch_memory, fetch_to_file
from .clients import fetch_aiopop, fetch_ceiling, fetch_poplib
from .outcome import Outcome
from .parsing import parse_aiopop, parse_find_replace
from .spec import RunResult, RunSpec, ServerSpec

__all__ = ["CLIENTS", "main", "run"]

MISMATCH = 3


def _server(spec: RunSpec) -> ServerSpec:
    if spec.server is None:
        raise ValueError(f"{spec.client} needs a server")
    return spec.server


def _directory(spec: RunSpec) -> str:
    if spec.directory is None:
        raise ValueError(f"{spec.client} needs a directory")
    return spec.directory


CLIENTS: dict[str, Callable[[RunSpec, Span], Outcome]] = {
    "aiopop": lambda spec, span: fetch_aiopop(_server(spec), spec.count, span),
    "poplib": lambda spec, span: fetch_poplib(_server(spec), spec.count, span),
    "ceiling": lambda spec, span: fetch_ceiling(_server(spec), spec.count, span),
    "retr_to_file": lambda spec, span: fetch_to_file(
        _server(spec), _directory(spec), span, fsync=spec.fsync
    ),
    "retr": lambda spec, span: fetch_memory(_server(spec), span),
    "aiopop-parser": lambda spec, span: parse_aiopop(spec.size, spec.dot_every, spec.repeat, span),
    "find+replace": lambda spec, span: parse_find_replace(
        spec.size, spec.dot_every, spec.repeat, span
    ),
}
"""Every client a spec may name."""


def _verify(spec: RunSpec, outcome: Outcome) -> None:
    if spec.manifest is None:
        return
    if outcome.digests is not None:
        check_digests(spec.client, outcome.digests, spec.manifest)
        return
    stored = sum(size for size, _ in load_manifest(spec.manifest))
    if outcome.octets < stored:
        raise AssertionError(f"{spec.client}: {outcome.octets} octets for {stored} of mail")


def run(spec: RunSpec) -> RunResult:
    """Run ``spec`` here and now; raise AssertionError when the result is wrong."""
    client = CLIENTS[spec.client]
    profiler = cProfile.Profile() if spec.profile is not None else None
    span = Span(profiler)
    outcome = client(spec, span)
    if profiler is not None and spec.profile is not None:
        profiler.dump_stats(spec.profile)
    if not span.stopped:
        raise RuntimeError(f"{spec.client} never stopped its clock")
    _verify(spec, outcome)
    return RunResult(
        seconds=span.wall,
        cpu_seconds=span.cpu,
        peak_rss=span.peak,
        rss_before=span.rss_before,
        octets=outcome.octets,
        messages=outcome.messages,
    )


def main(argv: list[str]) -> int:
    """Run the spec given as the only argument; print the result as JSON."""
    if len(argv) != 1:
        print(
            "usage: python -m benchmarks.suites.throughput.worker '<RunSpec JSON>'", file=sys.stderr
        )
        return 2
    try:
        result = run(RunSpec.from_json(argv[0]))
    except AssertionError as exc:
        print(f"MISMATCH: {exc}", file=sys.stderr)
        return MISMATCH
    print(result.to_json(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
