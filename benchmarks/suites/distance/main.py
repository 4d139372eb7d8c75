"""``python -m benchmarks distance``: aiopop at a distance, through a delay proxy.

One run measures every distance asked (``--rtt``, default 0, 50 and 200 ms
round-trip time). At 0 ms clients dial the server directly; at any other,
through the delay proxy (:mod:`benchmarks.harness.delay`, a process of its
own: a fixed one-way delay of RTT/2 per direction, order and throughput
kept), after its self-check (echo RTT within ±10 % of the one asked, 10 MB
through it not much slower than direct; a failed check aborts a full run and
is only reported by ``--quick``). Three workloads, each its own rounds
(the harness's: clients alternating, a fresh process per run):

* **fetch** (``--only fetch``), per distance: 1,000 x 8 KB (``--messages``)
  from a private Dovecot into a fresh Maildir with an fsync per message, by
  ``aiopop library`` (connect, login, :func:`aiopop.fetch_to_maildir`, QUIT,
  timed in its process: the fetch suite's in-process run), ``aiopop fetch``
  (the command, fork to exit), ``poplib`` (one RETR after the other,
  :mod:`.clients`), ``mpop``, ``fetchmail`` and ``getmail6`` (set up as the
  fetch suite sets them up). The serial clients (poplib, fetchmail,
  getmail6: one round trip per message) fetch fewer messages at a distance,
  ``messages x min(1, 10 ms / RTT)`` (200 at 50 ms, 50 at 200 ms), from a
  mailbox of their own holding the first ones, so that the suite stays
  short; **their times are scaled per message to the full count**
  (seconds / messages x ``--messages``), fixed costs (start-up, login,
  QUIT) included, which overstates their time by those costs times the
  scale. Every comparison uses the scaled times. Every Maildir is checked.

  The physical limit of a fetch at a distance is the round trips the
  protocol needs, :data:`ROUND_TRIPS` (connect and greeting, USER, PASS,
  CAPA, the pipelined RETRs, QUIT), times the RTT, plus the time the same
  client takes for the same fetch on loopback in this run (its 0 ms
  median; no limit when 0 ms is not run). Targets at 50 ms: the library
  within 1.5x of its limit, the command at least 1.0x mpop; the library's
  ratio against poplib is reported (the limit implies about 100x).

* **check** (``--only check``), at ``--check-rtt`` (50 ms): ``check_many``
  over 1,000 accounts (``--mailboxes``) against poplib in 32 threads and a
  bare asyncio loop making the same exchange (the scale suite's clients),
  against :mod:`servers.latency` answering at once on 25 loopback
  addresses, each behind the proxy on its own address (so that
  ``per_host`` still sees 25 hosts). Target: check_many at least 10x
  poplib, or, where the bare loop itself is below 10x poplib, at least 0.9x
  the bare loop.

* **new-only** (``--only new``), per distance: a mailbox of 100,000
  messages of 1 KB (``--big``; ``--quick``: 2,000), all of them fetched
  before (once, directly, by ``aiopop fetch --new-only``; each run starts
  from a copy of that Maildir's state file, in an empty Maildir) and 10
  new ones: ``aiopop fetch --new-only`` (the command, fork to exit, peak
  RSS) against a bare socket that logs in, sends UIDL and LIST at once and
  reads both replies (:mod:`.clients`; its *seconds* are the two replies
  alone). Targets on loopback (0 ms): the command at most 2x the replies'
  time, peak RSS at most 64 MiB; at a distance the command needs more
  round trips than the two replies, so its ratio there is against the bare
  socket's whole process and has no target; the RSS target holds at every
  distance.

Results: the JSON (``results/distance.json``; ``--quick`` and partial runs
``results/partial-distance.json``), and a chart per distance
(``results/distance-RTTms.png``; partial: ``partial-distance-RTTms.png``).
Only loopback addresses are ever contacted.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from benchmarks.harness.delay import DelayRoute, self_check
from benchmarks.harness.endpoint import Endpoint
from benchmarks.harness.options import RoundDefaults, add_round_options, resolve_round_options
from benchmarks.harness.paths import CACHE, REPOSITORY, RESULTS, BenchmarkAbortedError
from benchmarks.harness.paths import progress as _progress
from benchmarks.harness.report import settings_of, write_json
from benchmarks.harness.rounds import alternate
from benchmarks.harness.workers import run_module_json
from benchmarks.suites.fetch.maildir import PeerMailbox, peer_mailbox
from benchmarks.suites.fetch.peers import FETCHMAIL, GETMAIL, KIB, MPOP
from benchmarks.suites.fetch.runs import RUN_TIMEOUT, find_tools, install_aiopop, wait_for_quiet

from .bench import AIOPOP, LIBRARY, POPLIB, SERIAL, DistanceBench
from .report import check_summary, fetch_summary, new_only_summary, print_report

__all__ = ["main", "serial_count"]

ROUNDS = RoundDefaults(
    rounds=3,
    quick_rounds=1,
    results="distance.json",
    partial_results="partial-distance.json",
    quick_warmup=0,
    quick_help="a smoke run: 50 x 8 KB, 100 accounts, 2,000 messages for new-only; one round",
)
FETCH_CLIENTS = (LIBRARY, AIOPOP, POPLIB, MPOP, FETCHMAIL, GETMAIL)
CHECK_CLIENTS = ("check_many", "poplib-32-threads", "bare-asyncio")
SIZE = 8 * KIB
BIG_SIZE = 1 * KIB
NEW = 10
SERIAL_RTT_MS = 10.0
"""Serial clients fetch ``messages x min(1, SERIAL_RTT_MS / RTT)`` messages."""


def serial_count(messages: int, rtt_ms: float) -> int:
    """How many messages the serial clients fetch at ``rtt_ms`` (at least 5)."""
    if rtt_ms <= SERIAL_RTT_MS:
        return messages
    return max(min(5, messages), round(messages * SERIAL_RTT_MS / rtt_ms))


def _options(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks distance",
        description="aiopop against poplib, mpop, fetchmail and getmail6 through a delay proxy "
        "at several round-trip times; check_many at a distance; fetch --new-only on a big "
        "mailbox. 127.0.0.0/8 only.",
    )
    add_round_options(parser, ROUNDS, only="fetch, check, new")
    parser.add_argument(
        "--rtt", default="0,50,200", help="round-trip times in ms, comma-separated (0,50,200)"
    )
    parser.add_argument("--messages", type=int, help="8 KB messages fetched (1000; --quick 50)")
    parser.add_argument(
        "--mailboxes", type=int, help="accounts check_many checks (1000; --quick 100)"
    )
    parser.add_argument("--check-rtt", type=float, default=50.0, help="check's RTT in ms (50)")
    parser.add_argument(
        "--big", type=int, help="messages of the new-only mailbox (100000; --quick 2000)"
    )
    parser.add_argument(
        "--clients", help=f"comma-separated fetch clients (default all: {', '.join(FETCH_CLIENTS)})"
    )
    parser.add_argument("--timeout", type=float, default=RUN_TIMEOUT, help="seconds per run (120)")
    parser.add_argument(
        "--max-load",
        type=float,
        default=0.7,
        help="wait until the 1-minute load is below this before measuring (0.7)",
    )
    parser.add_argument(
        "--wait", type=float, default=1200, help="wait at most this many seconds (1200; --quick 0)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument("--no-self-check", action="store_true", help="skip the proxy's self-check")
    options = parser.parse_args(argv)
    try:
        options.rtts = [float(text) for text in options.rtt.split(",") if text.strip()]
    except ValueError:
        parser.error("--rtt takes numbers of milliseconds, comma-separated")
    if not options.rtts or any(rtt < 0 for rtt in options.rtts):
        parser.error("--rtt needs at least one round-trip time, none negative")
    partial = options.clients is not None or options.only is not None
    for name, full, quick in (
        ("messages", 1000, 50),
        ("mailboxes", 1000, 100),
        ("big", 100_000, 2000),
    ):
        value = getattr(options, name)
        if value is None:
            setattr(options, name, quick if options.quick else full)
        else:
            partial = partial or value != full
            if value < 1:
                parser.error(f"--{name} must be at least 1")
    partial = partial or options.rtts != [0.0, 50.0, 200.0] or options.check_rtt != 50
    clients = FETCH_CLIENTS
    if options.clients:
        clients = tuple(name.strip() for name in options.clients.split(","))
        unknown = set(clients) - set(FETCH_CLIENTS)
        if unknown:
            parser.error(f"unknown clients {sorted(unknown)}: choose among {FETCH_CLIENTS}")
    options.client_list = clients
    resolve_round_options(parser, options, ROUNDS, partial=partial)
    if options.retries is None:
        options.retries = options.rounds
    options.partial = partial or options.quick
    return options


def _wanted(options: argparse.Namespace, name: str) -> bool:
    only: list[str] | None = options.only
    return only is None or any(text.lower() in name for text in only)


def _check_proxy(options: argparse.Namespace, rtt: float, found: dict[str, Any]) -> None:
    if options.no_self_check or f"{rtt:g}" in found:
        return
    check = self_check(rtt)
    found[f"{rtt:g}"] = check.to_json()
    _progress("  " + check.line())
    if not check.ok and not options.quick:
        raise BenchmarkAbortedError(f"the delay proxy's self-check failed: {check.line()}")


def _chart_path(options: argparse.Namespace, rtt: float) -> Path:
    prefix = "partial-distance" if options.partial else "distance"
    return RESULTS / f"{prefix}-{rtt:g}ms.png"


def _check_workload(options: argparse.Namespace, checks: dict[str, Any]) -> dict[str, Any]:
    from servers.latency import ServerProcess, raise_file_limit

    raise_file_limit()
    rtt = options.check_rtt
    _check_proxy(options, rtt, checks)
    _progress(
        f"check: {options.mailboxes} accounts on 25 loopback addresses at {rtt:g} ms RTT; "
        f"{options.rounds} rounds of {', '.join(CHECK_CLIENTS)}"
    )
    with ServerProcess(25, 0.0) as server, DelayRoute(rtt) as route:
        proxied = route.endpoints([Endpoint(host, port) for host, port in server.addresses])
        base = {
            "addresses": [[e.host, e.port] for e in proxied],
            "mailboxes": options.mailboxes,
            "concurrency": 250,
            "per_host": 10,
            "threads": 32,
        }

        def run(name: str, _number: int) -> dict[str, Any]:
            return run_module_json(
                "benchmarks.suites.scale.clients", {**base, "client": name}, what=name
            )

        rounds = alternate(
            CHECK_CLIENTS,
            run,
            rounds=options.rounds,
            warmup=options.warmup,
            retries=options.retries,
            label=f"check@{rtt:g}ms",
            describe=lambda seen: f"{seen['seconds']:.3f} s",
        )
    return check_summary(rounds, rtt, options.mailboxes)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the suite, print the report, write the JSON and the charts."""
    from benchmarks.harness.machine import machine_info, one_line
    from benchmarks.harness.messages import build_message
    from servers.dovecot import DovecotServer, MailUser

    options = _options(argv)
    began = time.perf_counter()
    CACHE.mkdir(exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="bench-distance-", dir=CACHE))
    workdir.chmod(0o755)  # getmail6 runs as nobody
    checks: dict[str, Any] = {}
    fetches: list[dict[str, Any]] = []
    news: list[dict[str, Any]] = []
    check: dict[str, Any] | None = None
    charts: list[str] = []
    do_fetch, do_new = _wanted(options, "fetch"), _wanted(options, "new-only")
    try:
        machine = machine_info(REPOSITORY)
        quiet = wait_for_quiet(options.max_load, 0 if options.quick else options.wait)
        tools = find_tools(workdir) if do_fetch or do_new else None
        if do_fetch or do_new:
            assert tools is not None
            tools = replace(tools, aiopop=install_aiopop(workdir))
            n = options.messages
            counts = sorted({serial_count(n, rtt) for rtt in options.rtts} - {n})
            users = []
            if do_fetch:
                messages = tuple(build_message(index, SIZE) for index in range(1, n + 1))
                users.append(MailUser("dist8k", "dist8k-Secret-1", messages))
                users += [
                    MailUser(f"distserial{c}", f"distserial{c}-Secret-1", messages[:c])
                    for c in counts
                ]
            if do_new:
                _progress(f"writing the new-only mailbox: {options.big} messages")
                big = tuple(build_message(index, BIG_SIZE) for index in range(1, options.big + 1))
                users.append(MailUser("distbig", "distbig-Secret-1", big))
            _progress("starting Dovecot")
            with DovecotServer(users) as server:
                bench = DistanceBench(options, workdir, tools)
                direct = Endpoint(server.host, server.pop3_port)
                with contextlib.ExitStack() as stack:
                    routes = {rtt: stack.enter_context(DelayRoute(rtt)) for rtt in options.rtts}
                    for rtt in options.rtts:
                        if rtt > 0:
                            _check_proxy(options, rtt, checks)
                    endpoints = {rtt: route.endpoint(direct) for rtt, route in routes.items()}
                    if do_new:
                        bench.seed_new_only(
                            server, list(endpoints.values()), options.big, BIG_SIZE, NEW
                        )
                    for rtt, endpoint in endpoints.items():
                        if do_fetch:
                            fetches.append(_fetch(options, bench, endpoint, rtt, n))
                        if do_new:
                            news.append(bench.measure_new_only(endpoint, rtt))
        if _wanted(options, "check"):
            check = _check_workload(options, checks)
    except BenchmarkAbortedError as exc:
        print(f"benchmark aborted: {exc}", file=sys.stderr)
        return 2
    finally:
        if options.keep:
            _progress(f"work directory kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    summaries = fetch_summary(fetches, options.messages)
    new_summaries = new_only_summary(news)
    if summaries:
        from .chart import chart

        for summary in summaries:
            path = _chart_path(options, summary["rtt_ms"])
            if chart(summary, path):
                charts.append(str(path.relative_to(REPOSITORY)))
    elapsed = time.perf_counter() - began
    info = {
        "settings_line": (
            f"{options.rounds} rounds after {options.warmup} warm-up, clients alternating, "
            f"medians; plain POP3 with USER/PASS on 127.0.0.1; RTTs "
            f"{', '.join(f'{r:g}' for r in options.rtts)} ms"
            + (", --quick" if options.quick else "")
        ),
        "machine_line": one_line(machine),
        "elapsed": elapsed,
        "proxy": checks,
    }
    print_report(summaries, check, new_summaries, info)
    data = {
        "machine": machine,
        "settings": settings_of(options),
        "load": quiet,
        "tools": None if tools is None else {"versions": tools.versions},
        "elapsed_seconds": elapsed,
        "proxy_self_checks": checks,
        "fetch": summaries,
        "check": check,
        "new_only": new_summaries,
        "charts": charts,
    }
    write_json(options.json, data)
    print(f"\nJSON: {options.json}")
    return 0


def _fetch(
    options: argparse.Namespace, bench: DistanceBench, endpoint: Endpoint, rtt: float, n: int
) -> dict[str, Any]:
    key = f"{n}x8KB@{rtt:g}ms"
    mailbox = peer_mailbox(key, "dist8k", n, SIZE, endpoint.host, endpoint.port, "dist8k-Secret-1")
    count = serial_count(n, rtt)
    serial: PeerMailbox = mailbox
    if count != n:
        user = f"distserial{count}"
        serial = peer_mailbox(
            f"{count}x8KB@{rtt:g}ms", user, count, SIZE, endpoint.host, endpoint.port,
            f"{user}-Secret-1",
        )  # fmt: skip
    bench.serial[key] = serial
    clients = list(options.client_list)
    _progress(
        f"fetch {key}: {options.rounds} rounds after {options.warmup} warm-up of "
        f"{', '.join(clients)}"
        + (f" (the serial ones: {count} messages)" if count != n and SERIAL & set(clients) else "")
    )
    result = bench.measure(mailbox, clients)
    return {"rtt_ms": rtt, "messages": n, "serial_messages": count, "result": result}


if __name__ == "__main__":
    sys.exit(main())
