"""``python -m benchmarks fetch``: ``aiopop fetch`` against the POP3 downloaders people use.

One run, one report (see benchmarks/README.md, "aiopop fetch against mpop,
fetchmail and getmail6"). A private Dovecot (``servers/dovecot.py``) on
127.0.0.1 serves two mailboxes, 2,000 x 8 KB and 5 x 5 MB, and three
accounts of 700 x 8 KB each (``--many-messages``), over plain POP3 with
USER/PASS. Round after round, clients alternating, each client run
downloads a whole mailbox into a fresh Maildir of its own, keeping the mail
on the server, with no UID state from an earlier run:

* ``aiopop fetch``: the command as a user runs it, ``aiopop fetch ...
  --maildir DIR`` (process start-up included), from a venv of its own
  where this checkout is installed with ``pip install .``;
* ``aiopop in-process``: the same download in a Python process that times
  its parts (imports, login, :func:`aiopop.fetch_to_maildir`, QUIT),
  so that the command's start-up cost is visible; its *seconds* are the
  ``fetch_to_maildir`` call alone;
* ``mpop`` (C, pipelining), ``fetchmail`` (with a small MDA that writes into
  ``tmp/``, fsyncs and renames into ``new/``) and ``getmail6`` (as the
  unprivileged user ``nobody``: it refuses to write a Maildir as root),
  configured as /work/shared/peers.md says;
* ``raw socket``: the ceiling, a Python process with one blocking socket that
  sends every RETR at once, cuts the replies apart, unstuffs them, and writes
  each message into ``tmp/``, fsyncs it and renames it into ``new/`` (one
  fsync of ``new/`` before QUIT).

The many-account workload (``many-3x700x8KB``; ``--only many``) has each
client fetch all three accounts in one process, each into a fresh Maildir
of its own: ``aiopop fetch ACCOUNTS.toml`` (the accounts at once, with the
default ``--concurrency`` 100 and ``--per-host`` 10), ``aiopop watch
ACCOUNTS.toml --polls 1`` (one poll of every account; reported as not
available when this aiopop has no such command), ``mpop -a`` (one rc file of
three accounts), fetchmail (one rc file of three ``poll`` entries, each with
its MDA), getmail6 (one process, three ``--rcfile``, run in turn), and the
raw socket with a thread per account (all at once, as ``aiopop fetch``
does). ``aiopop in-process`` does not run there.

Every client fsyncs every message. Every process is started by a small
launcher (C when a compiler is there) that measures it from ``fork`` to
``wait4``: wall seconds, CPU seconds (user + system, with the children it
reaped: fetchmail's MDAs) and peak RSS (``ru_maxrss``, the largest of the
process and its reaped children; a launcher of its own keeps the
benchmark's own memory out of it). After each run, outside the timing, the
Maildir is checked: every stored message exactly once (line ends made LF;
the headers a peer puts in front are counted, not compared) and nothing
else. Every run's Maildir is kept until the end of the benchmark: on this
machine's ext4, deleting a large Maildir slows file creation for about a
minute.

The suite's parts: :mod:`.peers` (the clients' names, the peers' packages,
the targets), :mod:`.maildir` (the mailboxes and the Maildir check),
:mod:`.runs` (the launcher and MDA, one measured run, the rounds through
the harness), :mod:`.report` (medians, ratios, verdicts, the report), and
:mod:`.inproc` (the raw socket and the in-process run, as entry points).
Only 127.0.0.1 is ever contacted.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from benchmarks.harness.endpoint import DIRECT, Endpoint
from benchmarks.harness.options import (
    RoundDefaults,
    add_round_options,
    resolve_round_options,
    wanted,
)
from benchmarks.harness.paths import CACHE, REPOSITORY, BenchmarkAbortedError
from benchmarks.harness.paths import progress as _progress
from benchmarks.harness.report import settings_of, write_json

from .maildir import AccountSet, PeerMailbox, Workload, peer_mailbox, peer_mailboxes
from .peers import AIOPOP, CLIENTS, KIB, MANY_ONLY, MIB, SINGLE_ONLY, WATCH
from .report import print_report, to_json, verdicts
from .runs import (
    RUN_TIMEOUT,
    FetchBench,
    FetchResult,
    find_tools,
    install_aiopop,
    wait_for_quiet,
    watch_missing,
)

__all__ = ["main"]

ROUNDS = RoundDefaults(
    rounds=5,
    quick_rounds=1,
    results="fetch.json",
    partial_results="partial-fetch.json",
    quick_warmup=0,
    quick_help="a smoke run: 200 x 8 KB, 2 x 5 MB and 3 accounts of 70 x 8 KB, one round",
)
FULL = (("2000x8KB", "fetch8k", 2000, 8 * KIB), ("5x5MB", "fetch5m", 5, 5 * MIB))
QUICK = (("200x8KB", "fetch8k", 200, 8 * KIB), ("2x5MB", "fetch5m", 2, 5 * MIB))
MANY_ACCOUNTS = 3
MANY_MESSAGES = 700
"""Messages per account of the many-account workload (--quick: a tenth)."""
MANY_SIZE = 8 * KIB
MANY_USER = "fetchmany"
"""The many-account workload's users are fetchmany1, fetchmany2, ..."""


# -- main --------------------------------------------------------------------------------------


def _options(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks fetch",
        description="aiopop fetch against mpop, fetchmail, getmail6 and a raw Python socket, "
        "each downloading a Dovecot mailbox on 127.0.0.1 into a fresh Maildir with an fsync "
        "per message; prints one report.",
    )
    add_round_options(parser, ROUNDS, only="2000x8KB, 5MB, many")
    parser.add_argument(
        "--clients",
        help=f"comma-separated clients to run (default all: {', '.join(CLIENTS)})",
    )
    parser.add_argument(
        "--many-messages",
        type=int,
        default=None,
        metavar="N",
        help=f"messages per account of the {MANY_ACCOUNTS}-account workload "
        f"({MANY_MESSAGES}; --quick {MANY_MESSAGES // 10})",
    )
    parser.add_argument("--timeout", type=float, default=RUN_TIMEOUT, help="seconds per run (120)")
    parser.add_argument(
        "--max-load",
        type=float,
        default=0.7,
        help="wait until the 1-minute load is below this before measuring (0.7)",
    )
    parser.add_argument(
        "--wait", type=float, default=1200, help="wait at most this many seconds for it (1200)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument(
        "--no-profile", action="store_true", help="do not time aiopop's steps when a target fails"
    )
    options = parser.parse_args(argv)
    clients = CLIENTS
    if options.clients:
        clients = tuple(name.strip() for name in options.clients.split(","))
        unknown = set(clients) - set(CLIENTS)
        if unknown:
            parser.error(f"unknown clients {sorted(unknown)}: choose among {', '.join(CLIENTS)}")
    options.client_list = clients
    if options.many_messages is None:
        options.many_messages = MANY_MESSAGES // 10 if options.quick else MANY_MESSAGES
    elif options.many_messages < 1:
        parser.error("--many-messages must be at least 1")
    partial = (
        options.only is not None
        or options.clients is not None
        or options.many_messages != MANY_MESSAGES
    )
    resolve_round_options(parser, options, ROUNDS, partial=partial)
    return options


def _many_plan(options: argparse.Namespace) -> tuple[str, list[tuple[str, int, int, int]]]:
    """The many-account workload's key, and (user, first message, count, size) per account."""
    count = options.many_messages
    key = f"many-{MANY_ACCOUNTS}x{count}x{MANY_SIZE // KIB}KB"
    accounts = [
        (f"{MANY_USER}{number + 1}", number * count + 1, count, MANY_SIZE)
        for number in range(MANY_ACCOUNTS)
    ]
    return key, accounts


def _clients_of(workload: Workload, chosen: Sequence[str]) -> list[str]:
    """The chosen clients that a workload runs (its kind's own, in the order of CLIENTS)."""
    other = SINGLE_ONLY if isinstance(workload, AccountSet) else MANY_ONLY
    return [client for client in chosen if client not in other]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark, print the report, write the JSON."""
    from benchmarks.harness.machine import machine_info, one_line
    from benchmarks.harness.messages import build_message
    from servers.dovecot import DovecotServer, MailUser

    options = _options(argv)
    began = time.perf_counter()
    plans = [plan for plan in (QUICK if options.quick else FULL) if wanted(options, plan[0])]
    many_key, many_accounts = _many_plan(options)
    if not wanted(options, many_key):
        many_accounts = []
    CACHE.mkdir(exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="bench-fetch-", dir=CACHE))  # the repository's disk
    workdir.chmod(0o755)  # getmail6 runs as nobody
    workloads: list[FetchResult] = []
    startup: dict[str, Any] | None = None
    try:
        tools = find_tools(workdir)
        unavailable: dict[str, str] = {}
        if {AIOPOP, WATCH} & set(options.client_list):
            tools = replace(tools, aiopop=install_aiopop(workdir))
            if many_accounts and WATCH in options.client_list:
                missing = watch_missing(tools.aiopop)
                if missing is not None:
                    _progress(f"aiopop watch: {missing}")
                    unavailable[WATCH] = missing
        machine = machine_info(REPOSITORY)
        quiet = wait_for_quiet(options.max_load, options.wait if not options.quick else 0)
        messages = sum(p[2] for p in plans) + sum(a[2] for a in many_accounts)
        _progress(f"writing {messages} messages and starting Dovecot")
        stored = [(user, 1, count, size) for _key, user, count, size in plans] + many_accounts
        users = [
            MailUser(
                user,
                f"{user}-Secret-1",
                tuple(build_message(index, size) for index in range(first, first + count)),
            )
            for user, first, count, size in stored
        ]
        with DovecotServer(users) as server:
            # Every client dials the route's endpoint (straight to Dovecot today; a delay
            # proxy's address when a suite puts one in between).
            endpoint = DIRECT.endpoint(Endpoint(server.host, server.pop3_port))
            ports = {user.name: endpoint.port for user in users}
            passwords = {user.name: user.password for user in users}
            bench = FetchBench(options, workdir, tools)
            mailboxes: list[Workload] = list(peer_mailboxes(plans, endpoint.host, ports, passwords))
            if many_accounts:
                accounts = tuple(
                    peer_mailbox(
                        many_key,
                        user,
                        count,
                        size,
                        endpoint.host,
                        ports[user],
                        passwords[user],
                        first=first,
                    )
                    for user, first, count, size in many_accounts
                )
                mailboxes.append(AccountSet(many_key, accounts))
            for mailbox in mailboxes:
                clients = _clients_of(mailbox, options.client_list)
                skipped = {c: why for c, why in unavailable.items() if c in clients}
                clients = [client for client in clients if client not in skipped]
                if not clients:
                    if skipped:
                        _progress(f"{mailbox.key}: nothing to run; " + "; ".join(skipped.values()))
                    continue
                _progress(
                    f"{mailbox.key}: {options.rounds} rounds after {options.warmup} warm-up "
                    f"of {', '.join(clients)}"
                )
                workload = bench.measure(mailbox, clients, skipped)
                workloads.append(workload)
                failed = any(v["status"] == "FAIL" for v in verdicts(workload))
                if failed and not options.no_profile:
                    if isinstance(mailbox, PeerMailbox):
                        _progress(f"  a target failed: timing aiopop's steps once ({mailbox.key})")
                        workload.profile = bench.profile(mailbox)
                    if startup is None:
                        startup = bench.startup()
    except BenchmarkAbortedError as exc:
        print(f"benchmark aborted: {exc}", file=sys.stderr)
        return 2
    finally:
        if options.keep:
            _progress(f"work directory kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    elapsed = time.perf_counter() - began
    found = [verdict for workload in workloads for verdict in verdicts(workload)]
    helpers = "C launcher and MDA" if tools.compiled else "Python launcher and MDA (no compiler)"
    versions = ", ".join(f"{client} {version}" for client, version in tools.versions.items())
    info = {
        "settings_line": (
            f"{options.rounds} rounds after {options.warmup} warm-up, clients alternating, "
            f"medians; plain POP3 with USER/PASS on 127.0.0.1"
            + (", --quick" if options.quick else "")
        ),
        "machine_line": one_line(machine),
        "tools_line": f"{versions}; {helpers}",
        "elapsed": elapsed,
    }
    print_report(workloads, info, found, startup)
    data = {
        "machine": machine,
        "settings": settings_of(options),
        "load": quiet,
        "tools": {"versions": tools.versions, "compiled_helpers": tools.compiled},
        "elapsed_seconds": elapsed,
        "workloads": {workload.mailbox.key: to_json(workload) for workload in workloads},
        "targets": found,
        "startup": startup,
    }
    write_json(options.json, data)
    print(f"\nJSON: {options.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
