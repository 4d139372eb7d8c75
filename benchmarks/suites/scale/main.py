"""``python -m benchmarks scale``: check_many over many mailboxes, and memory per connection.

Two measurements, one run, one report (see benchmarks/README.md, "check_many
at scale"):

1. **Throughput.** 1,000 mailboxes on a server that answers each command
   after 20 ms, checked (connect, USER, PASS, STAT, QUIT) by three clients
   in turn, round after round, each in a fresh process: aiopop's
   ``check_many``; stdlib ``poplib`` in a ``ThreadPoolExecutor`` of 32
   threads; and a bare asyncio loop of raw stream calls under a semaphore
   (the same number of sessions at once as ``check_many``). Medians, and
   per-round ratios.
2. **Memory.** 5,000 aiopop sessions logged in and left idle at once in one
   process: the growth of its resident set, divided by 5,000.

The server (:mod:`servers.latency`, which says why it is not
aiopop.testing's) runs in a process of its own, so that the client's
process is measured alone; it listens on several loopback addresses
(127.0.0.1, 127.0.0.2, ...), one per "provider". Only 127.0.0.0/8 is ever
contacted. The clients are :mod:`.clients`, one fresh process per run; the
rounds are the harness's.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

from benchmarks.harness.machine import machine_info, one_line
from benchmarks.harness.options import RoundDefaults, add_round_options, resolve_round_options
from benchmarks.harness.paths import REPOSITORY, BenchmarkAbortedError
from benchmarks.harness.paths import progress as _progress
from benchmarks.harness.ratios import round_ratios
from benchmarks.harness.report import settings_of, write_json
from benchmarks.harness.rounds import alternate
from benchmarks.harness.workers import run_module_json
from servers.latency import ServerProcess, host_of, raise_file_limit

__all__ = ["main"]

CLIENT_MODULE = "benchmarks.suites.scale.clients"
POPLIB_THREADS = 32
TARGET_VS_POPLIB = 5.0
TARGET_VS_BARE = 0.8
TARGET_KIB_PER_CONNECTION = 64.0

CLIENTS = ("check_many", "poplib-32-threads", "bare-asyncio")
ROUNDS = RoundDefaults(
    rounds=7, quick_rounds=2, results="scale.json", partial_results="partial-scale.json"
)


def run_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one client in a fresh process (:data:`CLIENT_MODULE`)."""
    return run_module_json(CLIENT_MODULE, spec, what=str(spec["client"]))


def _options(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks scale",
        description="check_many over many mailboxes against poplib in threads and a bare "
        "asyncio loop, and aiopop's memory per idle connection; 127.0.0.0/8 only.",
    )
    add_round_options(parser, ROUNDS, strict=True)
    parser.add_argument("--mailboxes", type=int, default=1000, help="mailboxes checked (1000)")
    parser.add_argument("--delay", type=float, default=0.020, help="seconds per reply (0.020)")
    parser.add_argument("--hosts", type=int, default=25, help="loopback addresses (25)")
    parser.add_argument(
        "--concurrency", type=int, default=250, help="check_many's and the bare loop's (250)"
    )
    parser.add_argument("--per-host", type=int, default=10, help="check_many's per_host (10)")
    parser.add_argument("--threads", type=int, default=POPLIB_THREADS, help="poplib's (32)")
    parser.add_argument(
        "--connections", type=int, default=5000, help="idle sessions held at once (5000)"
    )
    parser.add_argument(
        "--memory-rounds", type=int, default=None, help="memory runs (3; --quick 1)"
    )
    parser.add_argument("--no-memory", action="store_true", help="skip the memory measurement")
    parser.add_argument(
        "--no-tls-memory",
        dest="tls_memory",
        action="store_false",
        help="memory over plain TCP only",
    )
    parser.add_argument("--no-throughput", action="store_true", help="skip the throughput runs")
    options = parser.parse_args(argv)
    partial = options.quick or options.no_memory or options.no_throughput
    resolve_round_options(parser, options, ROUNDS, partial=partial)
    if options.memory_rounds is None:
        options.memory_rounds = 1 if options.quick else 3
    if options.retries is None:
        options.retries = options.rounds
    if not 1 <= options.hosts <= 254:
        parser.error("--hosts must be between 1 and 254 (127.0.0.1 to 127.0.0.254)")
    if options.memory_rounds < 1:
        parser.error("--memory-rounds must be at least 1")
    return options


def _throughput(options: argparse.Namespace) -> dict[str, Any]:
    _progress(
        f"throughput: {options.mailboxes} mailboxes on {options.hosts} loopback addresses, "
        f"{options.delay * 1000:g} ms per reply; {options.rounds} rounds of {', '.join(CLIENTS)}"
    )
    with ServerProcess(options.hosts, options.delay) as server:
        base = {
            "addresses": server.addresses,
            "mailboxes": options.mailboxes,
            "concurrency": options.concurrency,
            "per_host": options.per_host,
            "threads": options.threads,
        }

        def run(name: str, _number: int) -> dict[str, Any]:
            server.stats()  # resets the peaks
            seen = run_worker({**base, "client": name})
            stats = server.stats()
            seen["peak_sessions"] = stats["peak"]
            seen["peak_sessions_per_host"] = stats["peak_per_host"]
            if stats["open"]:
                raise BenchmarkAbortedError(f"{name} left {stats['open']} connections open")
            return seen

        rounds = alternate(
            CLIENTS,
            run,
            rounds=options.rounds,
            warmup=options.warmup,
            retries=options.retries,
            label="throughput",
            describe=lambda seen: f"{seen['seconds']:.3f} s",
        )
    return {
        "runs": rounds.runs,
        "repeated": rounds.repeated,
        "noisy_kept": rounds.noisy_kept,
        "others": rounds.others_cpu or 0.0,
        "rounds": rounds.log,
    }


def _memory(options: argparse.Namespace) -> dict[str, Any]:
    count = options.connections
    found: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="scale-tls-") as directory:
        certfile = cafile = None
        if options.tls_memory:
            certfile, cafile = _certificates(Path(directory), options.hosts)
        variants: list[tuple[str, str | None, str | None]] = [("plain", None, None)]
        if options.tls_memory:
            variants.append(("TLS", certfile, cafile))
        for name, cert, ca in variants:
            _progress(
                f"memory, {name}: {count} idle aiopop sessions at once, "
                f"{options.memory_rounds} runs"
            )
            runs = []
            with ServerProcess(options.hosts, 0.0, cert) as server:
                base = {
                    "addresses": server.addresses,
                    "mailboxes": count,
                    "opening": 200,
                    "cafile": ca,
                }
                for number in range(options.memory_rounds):
                    runs.append(_memory_run(server, base, count))
                    _progress(
                        f"  run {number + 1}/{options.memory_rounds}: RSS "
                        f"{runs[-1]['rss_before'] / 2**20:.1f} -> "
                        f"{runs[-1]['rss_after'] / 2**20:.1f} MiB, "
                        f"{runs[-1]['kib_per_connection']:.1f} KiB per connection"
                    )
                sample = min(count, 1000)
                _progress(f"  where the memory goes: tracemalloc over {sample} sessions")
                breakdown = run_worker({**base, "mailboxes": sample, "client": "memory-breakdown"})
            found[name] = {"runs": runs, "breakdown": breakdown}
    return found


def _memory_run(server: ServerProcess, base: dict[str, Any], count: int) -> dict[str, Any]:
    run = run_worker({**base, "client": "memory"})
    stats = server.stats()
    if run["connections"] != count or stats["peak"] < count:
        raise RuntimeError(
            f"only {run['connections']} sessions were open at once (the server saw {stats['peak']})"
        )
    run["kib_per_connection"] = (run["rss_after"] - run["rss_before"]) / count / 1024
    return run


def _certificates(directory: Path, hosts: int) -> tuple[str, str]:
    """A throw-away CA and a certificate for every loopback address used: (certfile, cafile)."""
    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert(*(host_of(n, hosts) for n in range(hosts)))
    certfile, cafile = directory / "server.pem", directory / "ca.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(certfile))
    ca.cert_pem.write_to_path(str(cafile))
    return str(certfile), str(cafile)


def _ratios(runs: dict[str, list[dict[str, Any]]], client: str, reference: str) -> list[float]:
    """Per round: the reference's time / the client's time (above 1: the client is faster)."""
    return round_ratios(
        [r["seconds"] for r in runs[reference]], [r["seconds"] for r in runs[client]]
    )


def _report(
    out: IO[str],
    options: argparse.Namespace,
    machine: str,
    throughput: dict[str, Any] | None,
    memory: dict[str, Any] | None,
) -> list[dict[str, Any]]:
    verdicts: list[dict[str, Any]] = []
    print(f"machine: {machine}", file=out)
    if throughput is not None:
        runs = throughput["runs"]
        print(
            f"\n{options.mailboxes} mailboxes on {options.hosts} loopback addresses, "
            f"{options.delay * 1000:g} ms per reply (USER, PASS, STAT, QUIT); "
            f"check_many concurrency={options.concurrency}, per_host={options.per_host}; "
            f"bare asyncio: the same concurrency; poplib: {options.threads} threads; "
            f"{options.rounds} rounds after {options.warmup} warm-up, clients alternating\n",
            file=out,
        )
        header = (
            f"{'client':<18} {'median s':>9} {'mailboxes/s':>12} {'CPU s':>7} "
            f"{'CPU ms/mailbox':>15} {'peak sessions':>14} {'per host':>9}"
        )
        print(header, file=out)
        print("-" * len(header), file=out)
        for name in CLIENTS:
            client_runs = runs[name]
            seconds = statistics.median(r["seconds"] for r in client_runs)
            cpu = statistics.median(r["cpu_seconds"] for r in client_runs)
            peak = max(r["peak_sessions"] for r in client_runs)
            per_host = max(r["peak_sessions_per_host"] for r in client_runs)
            print(
                f"{name:<18} {seconds:>9.3f} {options.mailboxes / seconds:>12.0f} "
                f"{cpu:>7.3f} {cpu / options.mailboxes * 1000:>15.3f} {peak:>14} {per_host:>9}",
                file=out,
            )
        print(
            "\nratios, median over rounds of (the reference's time / check_many's time)",
            file=out,
        )
        for reference, target, label in (
            ("poplib-32-threads", TARGET_VS_POPLIB, "check_many speedup over poplib in threads"),
            ("bare-asyncio", TARGET_VS_BARE, "check_many as a fraction of the bare loop"),
        ):
            ratios = _ratios(runs, "check_many", reference)
            median = statistics.median(ratios)
            print(
                f"  {label:<45} {median:6.2f}x   (rounds {min(ratios):.2f} to {max(ratios):.2f})",
                file=out,
            )
            verdicts.append(
                {
                    "status": "PASS" if median >= target else "FAIL",
                    "what": f"{options.mailboxes} mailboxes at {options.delay * 1000:g} ms "
                    f"per reply: {label}",
                    "value": median,
                    "target": f">= {target:g}x",
                }
            )
        noise = (
            f"{throughput['repeated']} rounds run again, {throughput['noisy_kept']} noisy "
            f"rounds kept; other programs used {throughput['others']:.1f} CPU s in the kept rounds"
        )
        print(f"\nnoise: {noise}", file=out)
    if memory is not None:
        for name, variant in memory.items():
            per = [run["kib_per_connection"] for run in variant["runs"]]
            worst = max(per)
            first = variant["runs"][0]
            print(
                f"\nmemory, {name}: {options.connections} aiopop sessions (USER/PASS, each "
                f"held by a task) logged in and idle at once in one process; RSS growth / "
                f"{options.connections}: median {statistics.median(per):.1f} KiB, worst "
                f"{worst:.1f} KiB over {len(per)} runs (RSS before "
                f"{first['rss_before'] / 2**20:.1f} MiB, file limit {first['file_limit']})",
                file=out,
            )
            breakdown = variant["breakdown"]
            print(
                f"  tracemalloc: {breakdown['python_bytes_per_connection'] / 1024:.1f} KiB of "
                "Python allocations per session (OpenSSL's own memory is not seen); "
                "octets per session by file:",
                file=out,
            )
            files = breakdown["files"][:6]
            print(
                "    " + ", ".join(f"{f['file']} {f['bytes_per_connection']:.0f}" for f in files),
                file=out,
            )
            print("  the largest allocation sites (octets per session):", file=out)
            for site in breakdown["sites"][:6]:
                print(f"    {site['bytes_per_connection']:8.0f}  {site['where']}", file=out)
            verdicts.append(
                {
                    "status": "PASS" if worst <= TARGET_KIB_PER_CONNECTION else "FAIL",
                    "what": f"memory per open, idle connection, {name} "
                    f"({options.connections} at once), worst run",
                    "value": worst,
                    "target": f"<= {TARGET_KIB_PER_CONNECTION:g} KiB",
                }
            )
    print("", file=out)
    for verdict in verdicts:
        unit = " KiB" if "KiB" in verdict["target"] else "x"
        print(
            f"{verdict['status']}  {verdict['what']}: {verdict['value']:.2f}{unit} "
            f"(target {verdict['target']})",
            file=out,
        )
    return verdicts


def main(argv: Sequence[str] | None = None) -> int:
    """Run the throughput rounds and the memory runs, print the report, write the JSON."""
    options = _options(argv)
    raise_file_limit()
    began = time.perf_counter()
    machine = machine_info(REPOSITORY)
    try:
        throughput = None if options.no_throughput else _throughput(options)
        memory = None if options.no_memory else _memory(options)
    except (RuntimeError, BenchmarkAbortedError) as exc:
        print(f"benchmark aborted: {exc}", file=sys.stderr)
        return 2
    verdicts = _report(sys.stdout, options, one_line(machine), throughput, memory)
    elapsed = time.perf_counter() - began
    print(f"\ntotal run time {elapsed:.0f} s", file=sys.stdout)
    write_json(
        options.json,
        {
            "machine": machine,
            "settings": settings_of(options),
            "throughput": throughput,
            "memory": memory,
            "verdicts": verdicts,
            "elapsed": elapsed,
        },
    )
    print(f"JSON: {options.json}")
    return 1 if options.strict and any(v["status"] == "FAIL" for v in verdicts) else 0


if __name__ == "__main__":
    sys.exit(main())
