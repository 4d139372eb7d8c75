"""The throughput suite (``python -m benchmarks [throughput]``): aiopop, poplib, ceilings.

Every workload, one run, one report (see benchmarks/README.md).

Progress goes to stderr, the report to stdout; the whole result also goes
to a JSON file, and the throughput chart to a PNG. Only 127.0.0.1 is ever
contacted. Exit status: 0 when everything ran (targets may have failed;
``--strict`` makes a failed target exit 1), 2 when a client got a wrong
result or a worker failed, 1 for anything else.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from benchmarks.harness.machine import machine_info, one_line, short_line
from benchmarks.harness.options import (
    RoundDefaults,
    add_round_options,
    resolve_round_options,
    wanted,
)
from benchmarks.harness.paths import CACHE, NOISY, REPOSITORY, RESULTS, BenchmarkAbortedError
from benchmarks.harness.paths import progress as _progress
from benchmarks.harness.report import settings_of
from benchmarks.harness.rounds import alternate
from servers.popa3d import NoCorkServerError

from .chart import draw
from .mailboxes import dovecot_mailboxes, popa3d_mailbox
from .profiling import profile_client
from .report import print_report, write_json
from .results import Verdict, WorkloadResult, verdicts
from .spec import run_worker
from .workloads import (
    POPA3D_COUNT,
    POPA3D_SIZE,
    Workload,
    chart_workloads,
    dovecot_plans,
    dovecot_workloads,
    parser_workloads,
    popa3d_workload,
)

ROUNDS = RoundDefaults(
    rounds=9, quick_rounds=2, results="latest.json", partial_results="partial.json"
)


def _options(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks [throughput]",
        description="aiopop against stdlib poplib and raw-socket ceilings, on a private "
        "Dovecot and popa3d on 127.0.0.1, plus the parser alone; prints one report.",
    )
    add_round_options(parser, ROUNDS, only="8KB, parser, popa3d", strict=True)
    parser.add_argument(
        "--chart-rounds", type=int, default=None, help="rounds per chart size (3; --quick 1)"
    )
    parser.add_argument("--no-chart", action="store_true", help="skip the chart's runs")
    parser.add_argument("--chart", type=Path, default=None, help="where the PNG chart goes")
    parser.add_argument(
        "--no-profile", action="store_true", help="no cProfile run when a target fails"
    )
    options = parser.parse_args(argv)
    quick = options.quick
    # A smoke run or a partial one must not overwrite the committed results.
    partial = quick or options.only is not None
    resolve_round_options(parser, options, ROUNDS, partial=partial)
    if options.chart_rounds is None:
        options.chart_rounds = 1 if quick else 3
    options.chart = options.chart or RESULTS / (
        "partial-throughput.png" if partial else "throughput.png"
    )
    if options.chart_rounds < 1:
        parser.error("--chart-rounds must be at least 1")
    return options


class ThroughputBench:
    """One benchmark run: measures workloads and collects their results."""

    def __init__(self, options: argparse.Namespace, workdir: Path) -> None:
        self.options = options
        self.workdir = workdir
        self.results: list[WorkloadResult] = []
        self.chart_results: list[WorkloadResult] = []
        self.profiles: list[str] = []

    def wanted_key(self, key: str) -> bool:
        return wanted(self.options, key)

    def wanted(self, workload: Workload) -> bool:
        return self.wanted_key(workload.key)

    def measure(self, workload: Workload, rounds: int) -> WorkloadResult:
        _progress(f"{workload.title}: {rounds} rounds of {', '.join(workload.clients)}")
        began = time.perf_counter()
        rounds_run = alternate(
            list(workload.clients),
            lambda client, _number: run_worker(workload.clients[client]),
            rounds=rounds,
            warmup=self.options.warmup,
            label=workload.key,
            retries=self.options.retries if self.options.retries is not None else rounds,
        )
        result = WorkloadResult(
            workload, rounds_run.runs, rounds_run, elapsed=time.perf_counter() - began
        )
        if not self.options.no_profile:
            self._profile_failures(result)
        return result

    def run(self, workload: Workload) -> None:
        if self.wanted(workload):
            self.results.append(self.measure(workload, self.options.rounds))

    def _profile_failures(self, result: WorkloadResult) -> None:
        clients = {v.client for v in verdicts([result]) if v.status == "FAIL"}
        for client in sorted(clients):
            _progress(f"  a target failed: profiling {client} once")
            self.profiles.append(profile_client(result.workload, client, CACHE / "bench-profiles"))

    def dovecot(self) -> None:
        plans = dovecot_plans(self.wanted_key, chart=not self.options.no_chart)
        if not plans:
            return
        _progress(f"writing {sum(p.count for p in plans)} messages and starting Dovecot")
        with dovecot_mailboxes(plans, self.workdir) as (_server, mailboxes):
            for workload in dovecot_workloads(mailboxes, str(self.workdir)):
                self.run(workload)
            self.chart_results = [
                self.measure(workload, self.options.chart_rounds)
                for workload in chart_workloads(mailboxes)
            ]

    def popa3d(self) -> None:
        if not self.wanted(popa3d_workload(None)):
            return
        _progress("starting popa3d")
        try:
            with popa3d_mailbox(POPA3D_COUNT, POPA3D_SIZE, self.workdir) as (server, mailbox):
                _progress(f"  {server.implementation} on {server.host}:{server.port}")
                self.run(popa3d_workload(mailbox))
        except NoCorkServerError as exc:
            why = f"popa3d unavailable ({type(exc).__name__}: {exc})"
            _progress(f"  SKIP: {why}")
            self.results.append(WorkloadResult(popa3d_workload(None, why), {}))

    def parser(self) -> None:
        for workload in parser_workloads():
            self.run(workload)


def _settings(options: argparse.Namespace) -> str:
    chart = "no chart" if options.no_chart else f"chart {options.chart_rounds} rounds per size"
    quick = ", --quick" if options.quick else ""
    only = "".join(f", --only {text!r}" for text in options.only or ())
    return (
        f"{options.rounds} rounds after {options.warmup} warm-up, clients alternating, "
        f"medians; {chart}{quick}{only}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run everything, print the report, write the JSON and the chart."""
    options = _options(argv)
    began = time.perf_counter()
    machine = machine_info(REPOSITORY)
    CACHE.mkdir(exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="bench-", dir=CACHE))  # same file system as the repo
    bench = ThroughputBench(options, workdir)
    try:
        bench.dovecot()
        bench.popa3d()
        bench.parser()
    except BenchmarkAbortedError as exc:
        print(f"benchmark aborted: {exc}", file=sys.stderr)
        return 2
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    results = bench.results
    found: list[Verdict] = verdicts(results)
    elapsed = time.perf_counter() - began
    if bench.chart_results:
        draw(bench.chart_results, options.chart, short_line(machine))
    print_report(
        sys.stdout,
        machine=one_line(machine),
        settings=_settings(options),
        results=[*results, *bench.chart_results],
        verdicts=found,
        elapsed=elapsed,
        noisy_share=NOISY,
    )
    for profile in bench.profiles:
        print(f"\n{profile}")
    write_json(
        options.json,
        machine=machine,
        settings=settings_of(options),
        results=[*results, *bench.chart_results],
        verdicts=found,
        elapsed=elapsed,
    )
    print(f"\nJSON: {options.json}" + (f"; chart: {options.chart}" if bench.chart_results else ""))
    return 1 if options.strict and any(v.status == "FAIL" for v in found) else 0


if __name__ == "__main__":
    sys.exit(main())
