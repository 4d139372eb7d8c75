"""The distance suite's runs: the fetch suite's launcher, peers and Maildir check, plus its own.

:class:`DistanceBench` is the fetch suite's :class:`FetchBench` with four
more clients: ``aiopop library`` (the fetch suite's in-process run, timed
from connect to the end of QUIT), ``poplib`` and the new-only workload's
``aiopop fetch --new-only`` and bare UIDL+LIST socket. The serial clients
fetch from a smaller mailbox of their own (:attr:`DistanceBench.serial`).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.harness.endpoint import Endpoint
from benchmarks.harness.paths import BenchmarkAbortedError
from benchmarks.harness.paths import progress as _progress
from benchmarks.suites.fetch.maildir import PeerMailbox, Workload, peer_mailbox
from benchmarks.suites.fetch.peers import AIOPOP, FETCHMAIL, GETMAIL, INPROC, PASSWORD_ENV
from benchmarks.suites.fetch.runs import FetchBench, FetchResult, Run

__all__ = ["AIOPOP", "LIBRARY", "LISTS", "NEW_ONLY", "POPLIB", "SERIAL", "DistanceBench"]

LIBRARY = "aiopop library"
POPLIB = "poplib"
NEW_ONLY = "aiopop fetch --new-only"
LISTS = "UIDL+LIST replies"
SERIAL = frozenset({POPLIB, FETCHMAIL, GETMAIL})
"""Clients that wait for each message before asking for the next: one round trip each."""
ENTRY = "benchmarks.suites.distance.clients"
STATE_FILE = "aiopop-uidl.sqlite3"
"""aiopop's state file inside a Maildir (aiopop.STATE_FILE)."""
BIG_USER = "distbig"
BIG_PASSWORD = "distbig-Secret-1"


class DistanceBench(FetchBench):
    """:class:`FetchBench` with the distance suite's clients."""

    serial: dict[str, PeerMailbox]
    seeds: dict[int, Path]
    """The seed Maildir (its state file) of each endpoint's port."""
    new_mailbox: PeerMailbox | None = None
    big_count = 0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.serial = {}
        self.seeds = {}

    def _command(
        self, client: str, mailbox: PeerMailbox, directory: Path, maildir: Path
    ) -> tuple[list[str], tuple[int, int], dict[str, str]]:
        login = {
            "host": mailbox.host,
            "port": mailbox.port,
            "user": mailbox.user,
            "password": mailbox.password,
            "maildir": str(maildir),
        }
        same = (-1, -1)
        if client == LIBRARY:
            return super()._command(INPROC, mailbox, directory, maildir)
        if client == POPLIB:
            return (
                [sys.executable, "-m", ENTRY, "poplib", json.dumps(login)],
                same,
                dict(os.environ),
            )
        if client == LISTS:
            request = {**login, "count": self.big_count, "report": str(directory / "lists.json")}
            return (
                [sys.executable, "-m", ENTRY, "lists", json.dumps(request)],
                same,
                dict(os.environ),
            )
        if client == NEW_ONLY:
            seed = self.seeds[mailbox.port]
            for path in seed.glob(STATE_FILE + "*"):
                shutil.copy2(path, maildir / path.name)
            argv, ids, env = super()._command(AIOPOP, mailbox, directory, maildir)
            return [*argv, "--new-only"], ids, env
        return super()._command(client, mailbox, directory, maildir)

    def run_client(self, client: str, workload: Workload, number: int) -> Run:
        if client in SERIAL and isinstance(workload, PeerMailbox):
            workload = self.serial.get(workload.key, workload)
        if client == LISTS and isinstance(workload, PeerMailbox):
            workload = peer_mailbox(
                workload.key, workload.user, 0, 1024, workload.host, workload.port,
                workload.password,
            )  # fmt: skip  # nothing delivered: the Maildir must stay empty
        run = super().run_client(client, workload, number)
        if run.ok and client == LIBRARY:
            parts = json.loads((Path(run.directory) / "parts.json").read_text())["times"]
            run.parts = parts
            run.seconds = parts["connect_login"] + parts["fetch_to_maildir"] + parts["quit"]
        if run.ok and client == LISTS:
            report = json.loads((Path(run.directory) / "lists.json").read_text())
            run.parts = {"lists_seconds": report["lists_seconds"]}
            run.seconds = report["lists_seconds"]
        return run

    # -- the new-only workload -----------------------------------------------------------------

    def seed_new_only(
        self, server: Any, endpoints: Sequence[Endpoint], count: int, size: int, new: int
    ) -> None:
        """Fetch the big mailbox once through each endpoint, then add ``new`` messages.

        Once per endpoint: aiopop keeps a mailbox's state under ``user@host:port``,
        and each distance has its own port (its proxy's). The seed Maildirs stay
        until the end: deleting them would slow file creation here for a while.
        """
        from benchmarks.harness.messages import build_message

        self.big_count = count + new
        for endpoint in endpoints:
            seed = self.workdir / "seed" / f"{endpoint.port}" / "Maildir"
            for sub in ("tmp", "new", "cur"):
                (seed / sub).mkdir(parents=True)
            _progress(
                f"new-only: fetching the {count} messages once through port {endpoint.port}, "
                "to record them as delivered"
            )
            env = dict(os.environ)
            env[PASSWORD_ENV] = BIG_PASSWORD
            argv = [
                self.tools.aiopop, "fetch", endpoint.host, BIG_USER, "--port", str(endpoint.port),
                "--tls", "none", "--allow-cleartext", "--auth", "+USER",
                "--password-env", PASSWORD_ENV, "--maildir", str(seed), "--new-only",
            ]  # fmt: skip
            done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=3600)
            if done.returncode != 0:
                raise BenchmarkAbortedError(f"seeding the new-only state failed:\n{done.stderr}")
            delivered = sum(len(os.listdir(seed / sub)) for sub in ("new", "cur"))
            if delivered != count or not (seed / STATE_FILE).exists():
                raise BenchmarkAbortedError(f"seeding delivered {delivered} of {count} messages")
            self.seeds[endpoint.port] = seed
        # The new messages, as a local delivery agent would add them: later names, LF ends.
        maildir = Path(server.maildir(BIG_USER))
        owner = os.stat(maildir)
        for index in range(count + 1, count + new + 1):
            name = f"{1_000_000_000 + index}.M{index}P{os.getpid()}.aiopop-test:2,"
            path = maildir / "cur" / name
            path.write_bytes(build_message(index, size).replace(b"\r\n", b"\n"))
            os.chown(path, owner.st_uid, owner.st_gid)
            path.chmod(0o600)
        first = endpoints[0]
        self.new_mailbox = peer_mailbox(
            "new", BIG_USER, new, size, first.host, first.port, BIG_PASSWORD, first=count + 1
        )

    def measure_new_only(self, endpoint: Endpoint, rtt: float) -> dict[str, Any]:
        assert self.new_mailbox is not None
        mailbox = PeerMailbox(
            f"new-only-{self.big_count}@{rtt:g}ms",
            self.new_mailbox.user,
            self.new_mailbox.count,
            self.new_mailbox.size,
            endpoint.host,
            endpoint.port,
            self.new_mailbox.password,
            self.new_mailbox.octets,
            self.new_mailbox.expected,
            self.new_mailbox.lengths,
        )
        _progress(
            f"{mailbox.key}: {self.options.rounds} rounds after {self.options.warmup} warm-up "
            f"of {NEW_ONLY}, {LISTS}"
        )
        result: FetchResult = self.measure(mailbox, [NEW_ONLY, LISTS])
        return {"rtt_ms": rtt, "messages": self.big_count, "new": mailbox.count, "result": result}
