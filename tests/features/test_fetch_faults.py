"""fetch_to_maildir loses no mail whatever fails: the network, the disk, or the server's word.

Each test runs fetches as a careful user does (``async with client``, then
an explicit QUIT, deletions counted done only when QUIT returned) against
:class:`~aiopop.testing.POP3TestServer`, with one fault per run, then clean
reruns. After every run :meth:`Harness.check` asserts docs/security.md
rules 18-20:

* each message ever put on the server is still there, or complete, byte
  for byte, in ``new/`` or ``cur/``; nothing else is there;
* with ``new_only``, no message is in the Maildir twice, across runs;
* what the run reports matches the server: each Delivery is in the
  Maildir as its number's message, and the messages the server expunged
  are those marked, when QUIT returned; none, when no QUIT was carried
  out; a part of those marked, when QUIT was carried out but its reply lost;
* after the clean reruns ``tmp/`` is empty.

The faults: a cut after each command, in the middle of each reply and
before QUIT's reply (tests/helpers/cutting.py); ``-ERR [SYS/TEMP]`` to each
command; ENOSPC, EIO and EROFS at each file-system operation
(tests/helpers/faultfs.py); and servers that break RFC 1939 (a unique-id repeated or
reused, a message number listed twice, no UIDL, sizes in LIST that lie).
The exhaustive loops cover every point of one dialogue; the hypothesis
state machine mixes them over several runs, with mail arriving between.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import errno
import os
import shutil
import sqlite3
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    precondition,
    rule,
    run_state_machine_as_test,
)

import aiopop
from aiopop._fetch import FetchResult, fetch_to_maildir
from aiopop._maildir import Maildir
from aiopop.testing import Faults, Mailbox, POP3TestServer, SessionRecord
from tests.helpers.cutting import HOW, Cut, CuttingProxy
from tests.helpers.faultfs import ERRNOS, OPERATIONS, Fault, FaultFS, points

USER = "alice"
PASSWORD = "secret"
ACCOUNT = "alice@test"
THRESHOLD = 400
"""stream_threshold: messages above it are streamed through aiofiles, the rest pipelined."""
BATCH = 2
FLAGS = [(False, False), (True, False), (False, True), (True, True)]
FLAG_IDS = ["keep", "delete", "new-only", "delete+new-only"]
FAILURES = (aiopop.POP3Error, OSError, sqlite3.Error)
"""What a careful caller catches: a fetch that fails otherwise is a bug."""


def message(serial: int, lines: int = 1) -> bytes:
    """A message unique by ``serial``; equal ``lines`` give equal sizes."""
    body = b"".join(b"line %02d of %04d\r\n" % (i, serial) for i in range(lines))
    return b"Subject: message %04d\r\n\r\n.dot\r\n" % serial + body


def base_messages() -> list[bytes]:
    """Three messages: the second over THRESHOLD, so both ways of writing are used."""
    return [message(0), message(1, 40), message(2)]


def marked_of(result: FetchResult) -> list[int]:
    """The numbers the fetch marked deleted (``marked``, formerly ``deleted``)."""
    marked = getattr(result, "marked", None)
    if marked is None:  # before the rename
        marked = getattr(result, "deleted")  # noqa: B009 - not in the new FetchResult's type
    return list(marked)


def names(messages: list[bytes]) -> list[str]:
    """The subject lines of ``messages``, for assertion messages."""
    return [data.split(b"\n", 1)[0].decode(errors="replace").strip() for data in messages]


@dataclasses.dataclass
class Run:
    """One run as the careful caller saw it, and the server before and after."""

    result: FetchResult | None
    error: BaseException | None
    quit_returned: bool
    before: list[bytes]
    after: list[bytes]
    session: SessionRecord | None
    label: str


class Harness:
    """A Maildir, the server and its mailbox, and every message ever put on it."""

    def __init__(
        self,
        path: Path,
        mailbox: Mailbox,
        server: POP3TestServer,
        *,
        delete: bool,
        new_only: bool,
        keep_crlf: bool = False,
    ) -> None:
        self.path = path
        self.mailbox = mailbox
        self.server = server
        self.delete = delete
        self.new_only = new_only
        self.keep_crlf = keep_crlf
        self.universe: list[bytes] = [bytes(m) for m in mailbox.messages]  # type: ignore[arg-type]
        self.runs: list[Run] = []
        self.elsewhere: Path | None = None
        """Where the user moved messages out of the Maildir; they count as held."""

    def add(self, data: bytes, uid: str | None = None) -> str:
        uid = self.mailbox.add(data, uid)
        self.universe.append(bytes(self.mailbox.messages[-1]))  # type: ignore[arg-type]
        return uid

    def stored(self, data: bytes) -> bytes:
        return data if self.keep_crlf else data.replace(b"\r\n", b"\n")

    def in_maildir(self) -> collections.Counter[bytes]:
        directories = [self.path / "new", self.path / "cur"]
        if self.elsewhere is not None:
            directories.append(self.elsewhere)
        return collections.Counter(
            file.read_bytes()
            for directory in directories
            if directory.is_dir()
            for file in directory.iterdir()
        )

    def tmp(self) -> list[str]:
        directory = self.path / "tmp"
        return sorted(os.listdir(directory)) if directory.is_dir() else []

    async def run(self, port: int | None = None, label: str = "clean") -> Run:
        """One fetch and QUIT through ``port`` (default: the server's own)."""
        before = [bytes(m) for m in self.mailbox.messages]  # type: ignore[arg-type]
        start = len(self.server.sessions)
        result: FetchResult | None = None
        error: BaseException | None = None
        quit_returned = False
        box = Maildir(self.path, keep_crlf=self.keep_crlf)
        client = aiopop.POP3("127.0.0.1", port or self.server.port, timeout=5)
        try:
            async with client:
                await client.login(USER, PASSWORD)
                result = await fetch_to_maildir(
                    client,
                    box,
                    account=ACCOUNT,
                    delete=self.delete,
                    new_only=self.new_only,
                    batch_messages=BATCH,
                    stream_threshold=THRESHOLD,
                )
                await client.quit()
                quit_returned = True
        except FAILURES as exc:
            error = exc
        await self.server.wait_idle()
        sessions = self.server.sessions[start:]
        after = [bytes(m) for m in self.mailbox.messages]  # type: ignore[arg-type]
        run = Run(
            result, error, quit_returned, before, after, sessions[0] if sessions else None, label
        )
        self.runs.append(run)
        self.check(run)
        return run

    def check(self, run: Run) -> None:
        """Rules 18-20 after ``run``; see the module docstring."""
        where = f"after {run.label} (error: {run.error!r})"
        held = self.in_maildir()
        expected = {self.stored(m) for m in self.universe}
        assert set(held) <= expected, f"{where}: a partial or foreign file is in the Maildir"
        if self.new_only:
            twice = [data for data, count in held.items() if count > 1]
            assert not twice, f"{where}: delivered twice with new_only: {names(twice)}"
        on_server = {self.stored(m) for m in run.after}
        lost = [m for m in self.universe if self.stored(m) not in on_server | set(held)]
        assert not lost, f"{where}: lost, neither on the server nor in the Maildir: {names(lost)}"
        expunged = {m for m in run.before if m not in run.after}
        if run.result is not None:
            for delivery in run.result.delivered:
                assert delivery.name is not None  # a Maildir's deliveries have files
                file = self.path / "new" / delivery.name
                assert file.exists(), f"{where}: reported delivered, not in new/: {delivery}"
                assert file.read_bytes() == self.stored(run.before[delivery.number - 1]), (
                    f"{where}: {delivery} is not its number's message"
                )
        marked = (
            {run.before[n - 1] for n in marked_of(run.result)} if run.result is not None else set()
        )
        if run.quit_returned:
            assert expunged == marked, (
                f"{where}: the server expunged {len(expunged)} messages, the report says"
                f" {len(marked)} ({sorted(marked_of(run.result or FetchResult()))})"
            )
        elif run.session is None or not run.session.quit:
            assert not expunged, f"{where}: the server expunged mail without a QUIT"
        else:  # QUIT was carried out, its reply lost: the caller cannot know; nothing more
            assert expunged <= marked, f"{where}: expunged what was never marked"

    async def clean_reruns(self, count: int = 2) -> None:
        for index in range(count):
            await self.run(label=f"clean rerun {index + 1}")
        assert self.tmp() == [], f"tmp/ still holds {self.tmp()} after the clean reruns"

    def finished(self) -> None:
        """After clean reruns against an honest server: the job is done."""
        held = self.in_maildir()
        assert set(held) == {self.stored(m) for m in self.universe}, "not everything arrived"
        if self.delete:
            assert self.mailbox.messages == [], "the reruns did not empty the server"


def honest(messages: list[bytes] | None = None, **options: Any) -> tuple[Mailbox, POP3TestServer]:
    mailbox = Mailbox(PASSWORD, list(base_messages() if messages is None else messages))
    return mailbox, POP3TestServer({USER: mailbox}, **options)


async def dialogue_length(path: Path, delete: bool, new_only: bool) -> int:
    """How many commands one clean run sends."""
    mailbox, server = honest()
    async with server, CuttingProxy(server.port) as proxy:
        harness = Harness(path, mailbox, server, delete=delete, new_only=new_only)
        run = await harness.run(proxy.port)
    assert run.quit_returned
    assert proxy.commands[-1] == b"QUIT"
    return len(proxy.commands)


# -- the testing server's hostile options ---------------------------------------------------


async def raw_dialogue(server: POP3TestServer, *commands: bytes) -> bytes:
    """Send ``commands`` (pipelined) after USER and PASS; everything the server answered."""
    reader, writer = await asyncio.open_connection(server.host, server.port)
    lines = [b"USER " + USER.encode(), b"PASS " + PASSWORD.encode(), *commands, b"QUIT"]
    writer.write(b"".join(line + b"\r\n" for line in lines))
    answer = await reader.read()
    writer.close()
    await writer.wait_closed()
    return answer


async def test_the_hostile_listings_the_server_can_send() -> None:
    mailbox = Mailbox(PASSWORD, [b"a\r\n", b"bc\r\n"], uids=["same", "same"])
    faults = Faults(size_error=-3, repeat_in_list={1: 99}, repeat_in_uidl={2: "other"})
    async with POP3TestServer({USER: mailbox}, faults=faults) as server:
        answer = await raw_dialogue(server, b"LIST", b"UIDL", b"LIST 2", b"STAT", b"RETR 2")
        server.faults = Faults(size_error=5)
        larger = await raw_dialogue(server, b"LIST 1")
    assert b"1 0\r\n1 99\r\n2 1\r\n.\r\n" in answer  # 3 and 4 octets, less 3
    assert b"1 same\r\n2 same\r\n2 other\r\n.\r\n" in answer
    assert b"+OK 2 1\r\n" in answer  # LIST 2
    assert b"+OK 2 7\r\n" in answer  # STAT stays true
    assert b"bc\r\n.\r\n" in answer  # RETR sends the real message
    assert b"+OK 1 8\r\n" in larger
    with pytest.raises(ValueError, match="unique-id"):
        Faults(repeat_in_uidl={1: "has space"})
    with pytest.raises(ValueError, match="below range"):
        Faults(repeat_in_list={0: 1})


async def test_a_server_without_uidl() -> None:
    _, server = honest(uidl=False)
    async with server, aiopop.POP3("127.0.0.1", server.port, timeout=5) as client:
        capabilities = await client.capabilities()
        await client.login(USER, PASSWORD)
        with pytest.raises(aiopop.ResponseError):
            await client.uidl()
    assert "UIDL" not in str(capabilities)


# -- every file-system operation, each errno ---------------------------------------------


async def clean_counts(path: Path, monkeypatch: pytest.MonkeyPatch, **flags: bool) -> Any:
    mailbox, server = honest()
    fs = FaultFS(path)
    with monkeypatch.context() as patch:
        fs.install(patch)
        async with server:
            await Harness(path, mailbox, server, **flags).run()
    return fs.counts.copy()


@pytest.mark.parametrize(("delete", "new_only"), FLAGS, ids=FLAG_IDS)
async def test_every_file_system_fault_loses_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, delete: bool, new_only: bool
) -> None:
    counts = await clean_counts(tmp_path / "probe", monkeypatch, delete=delete, new_only=new_only)
    for operation in OPERATIONS:
        assert counts[operation] >= 1, f"a clean run makes no {operation}: {counts}"
    faults = points(counts)
    for index, fault in enumerate(faults):
        path = tmp_path / f"{index}-{fault}"
        fs = FaultFS(path)
        with monkeypatch.context() as patch:
            fs.install(patch)
            fs.arm(fault)
            mailbox, server = honest()
            async with server:
                harness = Harness(path, mailbox, server, delete=delete, new_only=new_only)
                await harness.run(label=f"{fault}")
                assert fs.injected, f"{fault} was never reached"
                fs.reset()
                await harness.clean_reruns()
        harness.finished()


async def test_a_failed_rename_is_not_taken_for_a_delivery(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Defect (a): the rename into new/ fails with ENOSPC; the message must not
    # count as saved, or the next --new-only --delete run deletes it unsaved.
    fs = FaultFS(tmp_path)
    fs.install(monkeypatch)
    fs.arm(Fault("rename", 1, errno.ENOSPC))
    mailbox, server = honest()
    async with server:
        harness = Harness(tmp_path, mailbox, server, delete=True, new_only=True)
        run = await harness.run(label="rename failing with ENOSPC")
        assert isinstance(run.error, OSError)
        assert fs.injected
        fs.reset()
        await harness.clean_reruns()
    harness.finished()


# -- the network: a cut at every reply, -ERR to every command --------------------------------


def cut_points(commands: int) -> list[Cut]:
    return [Cut(0, "half"), Cut(0, "whole")] + [
        Cut(reply, how)  # type: ignore[arg-type]
        for reply in range(1, commands + 1)
        for how in HOW
    ]


@pytest.mark.parametrize(("delete", "new_only"), FLAGS, ids=FLAG_IDS)
async def test_every_network_fault_loses_nothing(
    tmp_path: Path, delete: bool, new_only: bool
) -> None:
    commands = await dialogue_length(tmp_path / "probe", delete, new_only)
    for index, cut in enumerate(cut_points(commands)):
        path = tmp_path / f"cut-{index}-{cut}"
        mailbox, server = honest()
        async with server:
            harness = Harness(path, mailbox, server, delete=delete, new_only=new_only)
            async with CuttingProxy(server.port, cut) as proxy:
                await harness.run(proxy.port, label=f"cut {cut}")
            assert proxy.cuts == 1, f"{cut} was never reached"
            await harness.clean_reruns()
        harness.finished()
    for command in range(1, commands + 1):
        path = tmp_path / f"err-{command}"
        mailbox, server = honest(faults=Faults(error_at=command))
        async with server:
            harness = Harness(path, mailbox, server, delete=delete, new_only=new_only)
            await harness.run(label=f"-ERR [SYS/TEMP] to command {command}")
            server.faults = Faults()
            await harness.clean_reruns()
        harness.finished()


async def test_a_cut_before_quits_reply_counts_no_deletion(tmp_path: Path) -> None:
    # Defect (d): QUIT reached the server but its reply did not reach the client.
    commands = await dialogue_length(tmp_path / "probe", True, True)
    for how in ("executed", "half"):
        mailbox, server = honest()
        async with server:
            harness = Harness(tmp_path / how, mailbox, server, delete=True, new_only=True)
            cut = Cut(commands, how)
            async with CuttingProxy(server.port, cut) as proxy:
                run = await harness.run(proxy.port, label=f"cut {how} at QUIT")
            assert proxy.cuts == 1
            assert not run.quit_returned
            assert isinstance(run.error, aiopop.ConnectionLostError)
            assert run.session is not None
            assert run.session.quit
            assert mailbox.messages == []  # the server committed: the mail is in the Maildir
            await harness.clean_reruns()
        harness.finished()


# -- servers that break RFC 1939 ------------------------------------------------------------


@pytest.mark.parametrize(("delete", "new_only"), FLAGS, ids=FLAG_IDS)
async def test_a_unique_id_shared_by_two_messages(
    tmp_path: Path, delete: bool, new_only: bool
) -> None:
    mailbox = Mailbox(PASSWORD, [*base_messages()], uids=["a", "dup", "dup"])
    server = POP3TestServer({USER: mailbox})
    async with server:
        harness = Harness(tmp_path, mailbox, server, delete=delete, new_only=new_only)
        await harness.run(label="two messages, one unique-id")
        await harness.clean_reruns()


@pytest.mark.parametrize(("delete", "new_only"), FLAGS, ids=FLAG_IDS)
async def test_a_unique_id_reused_for_another_message(
    tmp_path: Path, delete: bool, new_only: bool
) -> None:
    # The same size: only the unique-id and the size can tell them apart, and they cannot.
    mailbox = Mailbox(PASSWORD, [message(0), message(1)], uids=["a", "b"])
    server = POP3TestServer({USER: mailbox})
    async with server:
        harness = Harness(tmp_path, mailbox, server, delete=delete, new_only=new_only)
        await harness.run(label="first run")
        for number in (2, 3):
            harness.add(message(number, 2), uid="a")  # another size than message 0's
            await harness.run(label=f"unique-id 'a' reused by message {number}")
        await harness.clean_reruns()


@pytest.mark.parametrize(("delete", "new_only"), FLAGS, ids=FLAG_IDS)
async def test_a_message_number_listed_twice(tmp_path: Path, delete: bool, new_only: bool) -> None:
    # Defect (c): UIDL says "1 NEW" then "1 OLD", OLD being a message saved before.
    first, later = message(0), message(1)
    assert len(first) == len(later)
    mailbox = Mailbox(PASSWORD, [first], uids=["OLD"])
    server = POP3TestServer({USER: mailbox})
    async with server:
        harness = Harness(tmp_path, mailbox, server, delete=False, new_only=new_only)
        await harness.run(label="OLD saved")
        mailbox.messages.clear()
        assert mailbox.uids is not None
        mailbox.uids.clear()
        harness.delete = delete
        harness.add(later, uid="NEW")
        for faults in (
            Faults(repeat_in_uidl={1: "OLD"}),
            Faults(repeat_in_uidl={1: "NEW"}),
            Faults(repeat_in_list={1: len(later)}),
            Faults(repeat_in_list={1: 5}),
        ):
            server.faults = faults
            run = await harness.run(label=f"a listing with {faults}")
            if run.error is None:
                assert run.result is not None
        server.faults = Faults()
        await harness.clean_reruns()
    if delete:
        assert mailbox.messages == []


@pytest.mark.parametrize(("delete", "new_only"), FLAGS, ids=FLAG_IDS)
@pytest.mark.parametrize("size_error", [-7, 7])
async def test_sizes_in_list_that_lie(
    tmp_path: Path, delete: bool, new_only: bool, size_error: int
) -> None:
    mailbox, server = honest(faults=Faults(size_error=size_error))
    async with server:
        harness = Harness(tmp_path, mailbox, server, delete=delete, new_only=new_only)
        commands_run = await harness.run(label=f"LIST sizes off by {size_error}")
        del commands_run
        await harness.clean_reruns()
        harness.finished()


@pytest.mark.parametrize(("delete", "new_only"), FLAGS, ids=FLAG_IDS)
async def test_a_server_without_uidl_loses_nothing(
    tmp_path: Path, delete: bool, new_only: bool
) -> None:
    mailbox, server = honest(uidl=False)
    async with server:
        harness = Harness(tmp_path, mailbox, server, delete=delete, new_only=new_only)
        run = await harness.run(label="no UIDL")
        if new_only:
            assert isinstance(run.error, aiopop.UIDLUnavailableError)
            assert not harness.in_maildir()
        await harness.clean_reruns()
    if not new_only:
        harness.finished()


# -- the model: several runs, mail arriving, faults of every kind mixed ------------------------

NETWORK = st.one_of(
    st.builds(Cut, st.integers(0, 16), st.sampled_from(HOW)),
    st.builds(lambda n: Faults(error_at=n), st.integers(1, 16)),
    st.builds(lambda n: Faults(drop_at=n), st.integers(1, 16)),
    st.builds(
        lambda n, k: Faults(drop_at=n, drop_after_octets=k), st.integers(1, 16), st.integers(0, 60)
    ),
)
DISK = st.builds(
    Fault,
    st.sampled_from(OPERATIONS),
    st.integers(1, 6),
    st.sampled_from(ERRNOS),
    st.booleans(),
)


class Delivering(RuleBasedStateMachine):
    """A mailbox fetched again and again, with mail arriving and a fault in most runs.

    The server may be dishonest from the start (no UIDL, sizes in LIST that
    lie) or in one run (a message number listed twice); mail may arrive
    under the unique-id of a message on the server now, or of one gone.
    """

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.directory = Path(tempfile.mkdtemp(prefix="aiopop-delivering-"))
        self.patch = pytest.MonkeyPatch()
        self.fs = FaultFS(self.directory / "Maildir")
        self.fs.install(self.patch)
        self.serial = 10
        self.used: list[str] = []
        self.harness: Harness | None = None
        self.base = Faults()

    @initialize(
        delete=st.booleans(),
        new_only=st.booleans(),
        keep_crlf=st.booleans(),
        uidl=st.booleans(),
        size_error=st.sampled_from([0, 0, -9, 9]),
        lines=st.lists(st.sampled_from([0, 1, 30]), min_size=1, max_size=4),
    )
    def start(
        self,
        delete: bool,
        new_only: bool,
        keep_crlf: bool,
        uidl: bool,
        size_error: int,
        lines: list[int],
    ) -> None:
        mailbox = Mailbox(PASSWORD, [message(i, n) for i, n in enumerate(lines)])
        self.base = Faults(size_error=size_error)
        server = POP3TestServer({USER: mailbox}, uidl=uidl, faults=self.base)
        self.loop.run_until_complete(server.start())
        self.harness = Harness(
            self.directory / "Maildir",
            mailbox,
            server,
            delete=delete,
            new_only=new_only,
            keep_crlf=keep_crlf,
        )
        self.used = list(mailbox.uids or ())

    @property
    def h(self) -> Harness:
        assert self.harness is not None
        return self.harness

    def arrive(self, lines: int, uid: str | None) -> None:
        self.serial += 1
        self.used.append(self.h.add(message(self.serial, lines), uid))

    @rule(lines=st.sampled_from([0, 1, 30]))
    def new_mail(self, lines: int) -> None:
        self.arrive(lines, None)

    @rule(data=st.data(), lines=st.sampled_from([0, 1, 30]))
    def mail_reusing_a_unique_id(self, data: st.DataObject, lines: int) -> None:
        # Of a message on the server now (two messages, one unique-id) or gone.
        self.arrive(lines, data.draw(st.sampled_from(self.used), label="uid"))

    @precondition(lambda self: self.harness is not None and self.h.mailbox.messages)
    @rule(data=st.data(), which=st.sampled_from(["LIST", "UIDL"]))
    def run_with_a_number_listed_twice(self, data: st.DataObject, which: str) -> None:
        number = data.draw(st.integers(1, len(self.h.mailbox.messages)), label="number")
        if which == "LIST":
            size = data.draw(st.integers(0, 2000), label="size")
            faults = dataclasses.replace(self.base, repeat_in_list={number: size})
        else:
            uid = data.draw(st.sampled_from(self.used), label="uid")
            faults = dataclasses.replace(self.base, repeat_in_uidl={number: uid})
        self.h.server.faults = faults
        try:
            self.loop.run_until_complete(self.h.run(label=f"{which} naming {number} twice"))
        finally:
            self.h.server.faults = self.base

    @rule(fault=NETWORK)
    def run_with_a_network_fault(self, fault: Cut | Faults) -> None:
        if isinstance(fault, Cut):
            self.loop.run_until_complete(self.cut(fault))
            return
        self.h.server.faults = dataclasses.replace(
            fault, size_error=self.base.size_error, latency=0.0
        )
        try:
            self.loop.run_until_complete(self.h.run(label=str(fault)))
        finally:
            self.h.server.faults = self.base

    async def cut(self, cut: Cut) -> None:
        async with CuttingProxy(self.h.server.port, cut) as proxy:
            await self.h.run(proxy.port, label=f"cut {cut}")

    @rule(fault=DISK)
    def run_with_a_disk_fault(self, fault: Fault) -> None:
        self.fs.arm(fault)
        try:
            self.loop.run_until_complete(self.h.run(label=str(fault)))
        finally:
            self.fs.reset()

    @rule()
    def clean_run(self) -> None:
        self.loop.run_until_complete(self.h.run())

    def teardown(self) -> None:
        try:
            if self.harness is not None:
                self.fs.reset()
                self.loop.run_until_complete(self.h.clean_reruns())
        finally:
            if self.harness is not None:
                self.loop.run_until_complete(self.h.server.close())
            self.loop.close()
            self.patch.undo()
            shutil.rmtree(self.directory, ignore_errors=True)


def test_the_model_loses_nothing() -> None:
    run_state_machine_as_test(
        Delivering,
        settings=settings(
            max_examples=int(os.environ.get("AIOPOP_FAULT_EXAMPLES", "60")),
            stateful_step_count=8,
            deadline=None,
            # No shrinking: on failing code it costs minutes; the failing steps are printed.
            phases=[Phase.explicit, Phase.reuse, Phase.generate],
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        ),
    )


# -- a real full disk ------------------------------------------------------------------------------


@contextlib.contextmanager
def small_tmpfs(size: str) -> Iterator[Path]:
    if os.environ.get("CI", "").lower() == "true":
        pytest.skip("mounts a file system: never on CI")
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount = shutil.which("mount")
    if mount is None:
        pytest.skip("no mount command")
    point = Path(tempfile.mkdtemp(prefix="aiopop-tmpfs-"))
    done = subprocess.run(
        [mount, "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(point)],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        point.rmdir()
        pytest.skip(f"cannot mount a tmpfs: {done.stderr.decode(errors='replace').strip()}")
    try:
        yield point
    finally:
        subprocess.run(["umount", str(point)], check=False)
        point.rmdir()


@pytest.mark.parametrize(("delete", "new_only"), [(True, True), (False, True)])
async def test_a_really_full_disk_loses_nothing(
    tmp_path: Path, delete: bool, new_only: bool
) -> None:
    # 24 messages of ~9 KB do not fit in 160 KB beside the state database.
    messages = [message(i, 500) for i in range(24)]
    with small_tmpfs("160k") as mounted:
        mailbox, server = honest(messages)
        async with server:
            harness = Harness(
                mounted / "Maildir", mailbox, server, delete=delete, new_only=new_only
            )
            harness.elsewhere = tmp_path / "read"
            harness.elsewhere.mkdir()
            run = await harness.run(label="a full tmpfs")
            assert run.error is not None, "the disk did not fill up"
            for attempt in range(10):
                # Make room as a user would: move what arrived out, fetch again.
                for sub in ("new", "cur"):
                    for file in (harness.path / sub).iterdir():
                        shutil.move(file, harness.elsewhere / file.name)
                run = await harness.run(label=f"after making room ({attempt + 1})")
                if run.error is None and (not delete or not mailbox.messages):
                    break
            left = {
                str(p.relative_to(mounted)): p.stat().st_size
                for p in mounted.rglob("*")
                if p.is_file()
            }
            assert run.error is None, f"still failing after making room: {run.error!r} {left}"
            assert harness.tmp() == []
