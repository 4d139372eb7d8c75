"""watch(): each new message once, at least once, with backoff, LOGIN-DELAY and clean stops.

The watcher's waits go through a fake clock and sleep (:class:`FakeTime`),
so backoff and LOGIN-DELAY are checked exactly and no test waits for real;
the POP3 traffic is real, against the in-process servers.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import random
import re
import sqlite3
import ssl
import warnings
from collections.abc import Callable
from dataclasses import replace
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
import trustme

import aiopop
from aiopop._accounts import Account
from aiopop._delivery_state import StateLockedError
from aiopop._errors import CredentialsError, ResponseError
from aiopop._stores import MemoryStore, SeenStore, SQLiteStore
from aiopop._types import AuthMethod
from aiopop._watch import NewMessage, Watcher, full_jitter, watch
from aiopop.testing import (
    Close,
    Expect,
    Faults,
    Mailbox,
    POP3TestServer,
    ScriptedServer,
    Send,
    Step,
    WaitForClose,
)
from servers.ports import free_port

PASSWORD = "s3cret"
MESSAGES = [
    b"Subject: one\r\nFrom: a@example.org\r\n\r\nfirst\r\n",
    b"Subject: two\r\n\r\nsecond\r\n",
    b"Subject: =?utf-8?q?caf=C3=A9?=\r\n\r\nthird\r\n",
]


class Stop(Exception):
    """Raised by FakeTime.sleep to end a watcher that would retry forever."""


class FakeTime:
    """A clock that moves only when the watcher sleeps; records every sleep."""

    def __init__(
        self, *, stop_after: int | None = None, on_sleep: Callable[[int], object] | None = None
    ) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []
        self.stop_after = stop_after
        self.on_sleep = on_sleep

    def clock(self) -> float:
        return self.now

    async def sleep(self, delay: float) -> None:
        self.sleeps.append(delay)
        self.now += delay
        if self.on_sleep is not None:
            self.on_sleep(len(self.sleeps))
        if self.stop_after is not None and len(self.sleeps) >= self.stop_after:
            raise Stop
        await asyncio.sleep(0)

    def watch(self, account: Account, **options: Any) -> Watcher:
        """:func:`watch` on this clock."""
        return watch(account, sleep=self.sleep, clock=self.clock, **options)


def account_for(server: POP3TestServer | ScriptedServer, user: str = "alice") -> Account:
    return Account(
        server.host,
        user,
        port=server.port,
        tls="none",
        password=PASSWORD,
        allow_cleartext=True,
        timeout=10,
    )


def uids_of(mailbox: Mailbox) -> list[str]:
    """A copy of the mailbox's unique-ids, in order."""
    assert mailbox.uids is not None
    return list(mailbox.uids)


def exact(ceiling: float) -> float:
    """No jitter: the backoff ceiling itself, to check the exponential growth."""
    return ceiling


async def collect(watcher: Watcher) -> list[NewMessage]:
    async with watcher:
        return [message async for message in watcher]


def sent(server: POP3TestServer, keyword: str) -> list[list[bytes]]:
    """Per session, the command lines starting with ``keyword``."""
    return [
        [line for line in session.lines if line.upper().startswith(keyword.encode())]
        for session in server.sessions
    ]


# -- each new message once -------------------------------------------------------------


async def test_each_new_message_is_yielded_once_across_polls() -> None:
    mailbox = Mailbox(PASSWORD, list(MESSAGES[:2]))
    later = [b"Subject: later %d\r\n\r\nx\r\n" % n for n in range(2)]

    def new_mail(count: int) -> None:
        # Between polls: the previous session has ended (QUIT), and mail arrives.
        assert all(session.quit for session in server.sessions)
        if count <= len(later):
            mailbox.add(later[count - 1])

    time = FakeTime(on_sleep=new_mail)
    store = MemoryStore()
    async with POP3TestServer({"alice": mailbox}) as server:
        account = account_for(server)
        got = await collect(time.watch(account, interval=5, store=store, polls=4))
    assert [m.data for m in got] == [*MESSAGES[:2], *later]
    assert [m.uid for m in got] == uids_of(mailbox)  # nothing deleted, each uid once, in order
    assert [m.number for m in got] == [1, 2, 3, 4]
    assert time.sleeps == [5, 5, 5]
    assert sent(server, "RETR") == [[b"RETR 1", b"RETR 2"], [b"RETR 3"], [b"RETR 4"], []]
    assert not any(sent(server, "DELE"))
    assert all(session.quit for session in server.sessions)
    assert store.uids(account.mailbox_key) == set(uids_of(mailbox))


async def test_several_new_messages_are_fetched_pipelined() -> None:
    mailbox = Mailbox(PASSWORD, list(MESSAGES))
    async with POP3TestServer({"alice": mailbox}) as server:
        got = await collect(watch(account_for(server), polls=1))
    assert len(got) == 3
    assert b"RETR 2" in server.sessions[0].pipelined
    assert b"RETR 3" in server.sessions[0].pipelined


async def test_message_parses_with_the_default_policy_once() -> None:
    async with POP3TestServer({"alice": Mailbox(PASSWORD, list(MESSAGES))}) as server:
        got = await collect(watch(account_for(server), polls=1))
    first = got[0].message()
    assert isinstance(first, EmailMessage)
    assert first["Subject"] == "one"
    assert first.get_content() == "first\n"
    assert got[0].message() is first
    assert got[2].message()["Subject"] == "café"  # RFC 2047 decoded: policy.default
    assert got[0].size == len(MESSAGES[0])
    assert "first" not in repr(got[0])  # the bytes stay out of the repr


async def test_a_restart_with_sqlite_store_does_not_redeliver(tmp_path: Path) -> None:
    database = tmp_path / "seen.db"
    mailbox = Mailbox(PASSWORD, list(MESSAGES[:2]))
    async with POP3TestServer({"alice": mailbox}) as server:
        account = account_for(server)
        first = await collect(watch(account, store=SQLiteStore(database), polls=1))
        mailbox.add(MESSAGES[2])
        # A new process: a new store object over the same file.
        second = await collect(watch(account, store=SQLiteStore(database), polls=1))
        third = await collect(watch(account, store=SQLiteStore(database), polls=1))
    assert [m.data for m in first] == MESSAGES[:2]
    assert [m.data for m in second] == [MESSAGES[2]]
    assert third == []
    assert sent(server, "RETR") == [[b"RETR 1", b"RETR 2"], [b"RETR 3"], []]
    with sqlite3.connect(database) as connection:
        rows = connection.execute("SELECT mailbox, uid, size FROM messages").fetchall()
    connection.close()
    pairs = zip(uids_of(mailbox), MESSAGES[:3], strict=True)
    expected = [(account.mailbox_key, uid, len(m)) for uid, m in pairs]
    assert sorted(rows) == sorted(expected)


async def test_messages_gone_from_the_server_are_forgotten() -> None:
    mailbox = Mailbox(PASSWORD, list(MESSAGES[:2]))
    store = MemoryStore()
    async with POP3TestServer({"alice": mailbox}) as server:
        account = account_for(server)
        await collect(watch(account, store=store, polls=1))
        gone = uids_of(mailbox)[0]
        assert mailbox.uids is not None
        del mailbox.messages[0], mailbox.uids[0]  # another client deleted it
        assert await collect(watch(account, store=store, polls=1)) == []
    assert store.uids(account.mailbox_key) == set(uids_of(mailbox)) != set()
    assert gone not in store.uids(account.mailbox_key)


# -- at least once: acknowledged when the loop asks for more ---------------------------


class RecordingStore(MemoryStore):
    """A MemoryStore that notes, at each add, how many DELEs had reached the server."""

    def __init__(self, server: POP3TestServer) -> None:
        super().__init__()
        self.server = server
        self.adds: list[tuple[str, int]] = []

    async def add(self, key: str, uid: str, size: int | None = None) -> None:
        await asyncio.sleep(0.01)  # a slow disk: DELE must wait for it
        self.adds.append((uid, len(sent(self.server, "DELE")[-1])))
        await super().add(key, uid, size)


async def test_delete_only_after_the_handler_returned_and_the_store_recorded() -> None:
    mailbox = Mailbox(PASSWORD, list(MESSAGES[:2]))
    uids = uids_of(mailbox)
    async with POP3TestServer({"alice": mailbox}) as server:
        store = RecordingStore(server)
        async with watch(account_for(server), store=store, delete=True, polls=1) as messages:
            async for message in messages:
                await asyncio.sleep(0.01)  # handling takes a while
                # While handling: neither recorded nor deleted.
                assert message.uid not in store.uids(messages.key)
                assert len(sent(server, "DELE")[-1]) == message.number - 1
    assert store.adds == [(uids[0], 0), (uids[1], 1)]
    session = server.sessions[0]
    assert session.keywords[-3:] == ["DELE", "DELE", "QUIT"]
    assert session.quit
    assert mailbox.messages == []


@pytest.mark.parametrize("leave", ["break", "raise"])
async def test_a_message_not_acknowledged_is_kept_and_redelivered(leave: str) -> None:
    mailbox = Mailbox(PASSWORD, list(MESSAGES[:2]))
    uids = uids_of(mailbox)
    store = MemoryStore()
    async with POP3TestServer({"alice": mailbox}) as server:
        account = account_for(server)
        handled: list[NewMessage] = []
        failure = pytest.raises(RuntimeError) if leave == "raise" else contextlib.nullcontext()
        with failure:
            async with watch(account, store=store, delete=True) as messages:
                async for message in messages:
                    handled.append(message)
                    if leave == "raise":
                        raise RuntimeError("the handler failed")
                    break
        await asyncio.wait_for(server.wait_idle(), 5)
        assert store.uids(account.mailbox_key) == set()
        assert len(mailbox.messages) == 2
        assert not server.sessions[0].quit  # closed without QUIT
        assert sent(server, "DELE") == [[]]
        again = await collect(watch(account, store=store, delete=True, polls=1))
    assert [m.uid for m in handled] == uids[:1]
    assert [m.uid for m in again] == uids  # the first one again, then the second
    assert mailbox.messages == []


async def test_finish_acknowledges_the_message_in_hand_and_quits() -> None:
    mailbox = Mailbox(PASSWORD, list(MESSAGES))
    uids = uids_of(mailbox)
    store = MemoryStore()
    async with POP3TestServer({"alice": mailbox}) as server:
        account = account_for(server)
        async with watch(account, store=store, delete=True) as messages:
            async for new in messages:
                handled = new
                await messages.finish()
        assert [await anext(messages, None)] == [None]  # the iteration is over
        # Recorded, deleted, and QUIT answered: gone, so forgotten again.
        assert store.uids(account.mailbox_key) == set()
        assert mailbox.uids == uids[1:]
        later = await collect(watch(account, store=store, delete=True, polls=1))
    assert handled.uid == uids[0]
    assert [m.uid for m in later] == uids[1:]
    assert server.sessions[0].keywords[-2:] == ["DELE", "QUIT"]
    assert server.sessions[0].quit
    assert mailbox.messages == []


async def test_finish_before_any_message_just_stops() -> None:
    async with POP3TestServer({"alice": Mailbox(PASSWORD, [])}) as server:
        messages = watch(account_for(server))
        await messages.finish()
        assert [m async for m in messages] == []
    assert server.sessions == []


async def test_recorded_but_undeleted_messages_are_deleted_not_redelivered() -> None:
    # A crash (or a lost connection) between the store's add and QUIT.
    mailbox = Mailbox(PASSWORD, list(MESSAGES[:2]))
    uids = uids_of(mailbox)
    store = MemoryStore()
    async with POP3TestServer({"alice": mailbox}) as server:
        account = account_for(server)
        await store.add(account.mailbox_key, uids[0])
        got = await collect(watch(account, store=store, delete=True, polls=1))
    assert [m.uid for m in got] == [uids[1]]
    assert sent(server, "RETR") == [[b"RETR 2"]]
    assert sent(server, "DELE") == [[b"DELE 1", b"DELE 2"]]
    assert mailbox.messages == []


# -- retries ------------------------------------------------------------------------


GREETING = Send(b"+OK ready\r\n")


def login_refused(reply: bytes, capa: bytes = b"USER") -> list[Step]:
    """A server whose PASS gets ``reply``."""
    return [
        GREETING,
        Expect(b"CAPA"),
        Send(b"+OK\r\n" + capa + b"\r\n.\r\n"),
        Expect(b"USER alice"),
        Send(b"+OK\r\n"),
        Expect(b"PASS " + PASSWORD.encode()),
        Send(reply),
        WaitForClose(),
    ]


@pytest.mark.parametrize(
    "script",
    [
        login_refused(b"-ERR [SYS/TEMP] try later\r\n"),
        login_refused(b"-ERR [IN-USE] locked\r\n"),
        [GREETING, Expect(b"CAPA"), Close()],  # the connection is lost
        [Close()],  # before the greeting
    ],
    ids=["sys-temp", "in-use", "lost", "no-greeting"],
)
async def test_backoff_grows_exponentially_up_to_the_maximum(script: list[Step]) -> None:
    time = FakeTime(stop_after=7)
    async with ScriptedServer(script) as server:
        watcher = time.watch(
            account_for(server),
            backoff=(0.5, 10.0),
            jitter=exact,
        )
        with pytest.raises(Stop):
            await collect(watcher)
    assert time.sleeps == [0.5, 1, 2, 4, 8, 10, 10]
    assert server.connections == 7  # one attempt per wait
    assert server.mismatches == []


async def test_backoff_when_nothing_listens() -> None:
    account = Account("127.0.0.1", "alice", port=free_port(), tls="none", password=PASSWORD)
    time = FakeTime(stop_after=3)
    with pytest.raises(Stop):
        await collect(time.watch(account, backoff=(1, 60), jitter=exact))
    assert time.sleeps == [1, 2, 4]


async def test_backoff_is_jittered_within_its_bounds() -> None:
    time = FakeTime(stop_after=8)
    draws = random.Random(1939)
    async with ScriptedServer(login_refused(b"-ERR [SYS/TEMP] busy\r\n")) as server:
        watcher = time.watch(
            account_for(server),
            backoff=(1.0, 30.0),
            jitter=lambda ceiling: draws.uniform(0, ceiling),
        )
        with pytest.raises(Stop):
            await collect(watcher)
    ceilings = [1, 2, 4, 8, 16, 30, 30, 30]
    assert all(0 <= d <= c for d, c in zip(time.sleeps, ceilings, strict=True))
    assert time.sleeps != ceilings  # jittered
    assert len(set(time.sleeps)) == len(time.sleeps)
    assert all(0 <= full_jitter(4.0) <= 4.0 for _ in range(100))
    assert len({full_jitter(4.0) for _ in range(10)}) > 1


async def test_backoff_starts_over_after_a_successful_poll() -> None:
    mailbox = Mailbox(PASSWORD, list(MESSAGES[:1]), locked=True)

    def locks(count: int) -> None:
        # Refused twice, then a poll goes through, then refused again.
        mailbox.locked = count not in (2, 3)
        if count == 3:
            mailbox.add(MESSAGES[1])

    time = FakeTime(stop_after=5, on_sleep=locks)
    got: list[NewMessage] = []
    async with POP3TestServer({"alice": mailbox}) as server:
        watcher = time.watch(
            account_for(server),
            interval=100,
            backoff=(1, 60),
            jitter=exact,
        )

        async def bot() -> None:
            async with watcher:
                async for message in watcher:
                    got.append(message)

        with pytest.raises(Stop):
            await bot()
    assert [m.data for m in got] == MESSAGES[:2]
    # [IN-USE], [IN-USE], poll, poll, [IN-USE] again: the backoff restarts at 1.
    assert time.sleeps == [1, 2, 100, 100, 1]
    assert [session.quit for session in server.sessions] == [False, False, True, True, False]


async def test_wrong_credentials_are_raised_not_retried() -> None:
    time = FakeTime(stop_after=1)
    async with POP3TestServer({"alice": Mailbox("another", list(MESSAGES))}) as server:
        with pytest.raises(CredentialsError):
            await collect(time.watch(account_for(server)))
    assert time.sleeps == []
    assert len(server.sessions) == 1


async def test_an_unverified_certificate_is_raised_not_retried(ca: trustme.CA) -> None:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    time = FakeTime(stop_after=1)
    mailbox = Mailbox(PASSWORD, list(MESSAGES))
    async with POP3TestServer({"alice": mailbox}, ssl_context=context) as server:
        account = Account(server.host, "alice", port=server.port, password=PASSWORD)
        with pytest.raises(ssl.SSLCertVerificationError):
            await collect(time.watch(account))
    assert time.sleeps == []


# -- LOGIN-DELAY ------------------------------------------------------------------------


@pytest.mark.parametrize(("interval", "expected"), [(0.01, 900), (1200, 1200)])
async def test_polls_are_never_closer_than_the_login_delay(
    interval: float, expected: float
) -> None:
    time = FakeTime(stop_after=10)
    mailbox = Mailbox(PASSWORD, list(MESSAGES[:1]))
    async with POP3TestServer({"alice": mailbox}, extra_capabilities=["LOGIN-DELAY 900"]) as server:
        watcher = time.watch(account_for(server), interval=interval, polls=3)
        await collect(watcher)
    assert time.sleeps == [expected, expected]
    assert watcher.login_delay == 900
    assert len(server.sessions) == 3


async def test_a_retry_after_login_waits_for_the_login_delay() -> None:
    # Logged in, LOGIN-DELAY 900 announced, then the connection is lost:
    # the backoff says 0.5 s, the server says not before 900 s.
    script: list[Step] = [*until_uidl(b"LOGIN-DELAY 900\r\n"), Close()]
    time = FakeTime(stop_after=3)
    async with ScriptedServer(script) as server:
        watcher = time.watch(account_for(server), backoff=(0.5, 10))
        with pytest.raises(Stop):
            await collect(watcher)
    assert time.sleeps == [900, 900, 900]
    assert server.mismatches == []


async def test_a_login_delay_refusal_waits_at_least_its_delay() -> None:
    script = login_refused(b"-ERR [LOGIN-DELAY] too soon\r\n", capa=b"USER\r\nLOGIN-DELAY 120")
    time = FakeTime(stop_after=9)
    async with ScriptedServer(script) as server:
        watcher = time.watch(
            account_for(server),
            backoff=(1, 600),
            jitter=exact,
        )
        with pytest.raises(Stop):
            await collect(watcher)
    # The backoff (1, 2, 4 ... 256) but never less than the 120 s the server announced.
    assert time.sleeps == [120] * 7 + [128, 256]
    assert server.connections == 9


async def test_a_login_delay_refusal_without_a_known_delay_backs_off() -> None:
    time = FakeTime(stop_after=3)
    async with ScriptedServer(login_refused(b"-ERR [LOGIN-DELAY] too soon\r\n")) as server:
        watcher = time.watch(account_for(server), backoff=(1, 600), jitter=exact)
        with pytest.raises(Stop):
            await collect(watcher)
    assert time.sleeps == [1, 2, 4]


# -- stopping ---------------------------------------------------------------------------


async def test_cancelling_the_handler_closes_the_connection_unacknowledged() -> None:
    mailbox = Mailbox(PASSWORD, list(MESSAGES[:2]))
    store = MemoryStore()
    handling = asyncio.Event()
    watchers: list[Watcher] = []  # kept alive: only aclose() may close the connection

    async def bot(account: Account) -> None:
        async with watch(account, store=store, delete=True) as messages:
            watchers.append(messages)
            async for _ in messages:
                handling.set()
                await asyncio.Event().wait()

    async with POP3TestServer({"alice": mailbox}) as server:
        task = asyncio.create_task(bot(account_for(server)))
        await asyncio.wait_for(handling.wait(), 5)
        assert not server.sessions[0].closed
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.wait_for(server.wait_idle(), 5)
        assert server.sessions[0].closed
        assert not server.sessions[0].quit
    assert store.uids(account_for(server).mailbox_key) == set()
    assert len(mailbox.messages) == 2


async def test_cancelling_while_waiting_for_the_server_closes_the_connection() -> None:
    async with ScriptedServer([GREETING, WaitForClose()]) as server:
        task = asyncio.create_task(collect(watch(account_for(server))))
        for _ in range(500):
            if server.received:
                break
            await asyncio.sleep(0.01)
        assert server.received == [b"CAPA"]  # the watcher waits for the reply
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.wait_for(server.wait_idle(), 5)


async def test_cancelling_between_polls_stops_at_once() -> None:
    async with POP3TestServer({"alice": Mailbox(PASSWORD, list(MESSAGES))}) as server:
        task = asyncio.create_task(collect(watch(account_for(server), interval=3600)))
        for _ in range(500):
            if server.sessions and server.sessions[0].quit:
                break
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 5)
        assert len(server.sessions) == 1


# -- the stores --------------------------------------------------------------------------


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> SeenStore:
    if request.param == "memory":
        return MemoryStore()
    return SQLiteStore(tmp_path / "seen.db")


async def test_stores_keep_uids_and_sizes_per_key(store: SeenStore) -> None:
    assert isinstance(store, SeenStore)
    assert await store.known("a", ["1", "2"]) == {}
    await store.add("a", "1", 10)
    await store.add("a", "1", 10)  # twice is fine
    await store.add("b", "2")
    assert await store.known("a", ["1", "2", "3"]) == {"1": 10}
    assert await store.known("b", ["1", "2"]) == {"2": None}
    await store.add("a", "1", 11)  # the unique-id now names another message
    await store.add("a", "3", 30)
    assert await store.known("a", ["1"]) == {"1": 11}
    await store.forget_missing("a", ["3", "4"])
    assert await store.known("a", ["1", "2", "3"]) == {"3": 30}
    assert await store.known("b", ["2"]) == {"2": None}  # another key is untouched
    await store.forget_missing("c", [])


async def test_sqlite_store_commits_each_add_before_returning(tmp_path: Path) -> None:
    path = tmp_path / "seen.db"
    await SQLiteStore(path).add("k", "uid-1", 5)
    # Another connection (another process, after a crash) sees it at once.
    with sqlite3.connect(path) as connection:
        rows = connection.execute("SELECT mailbox, uid, size, delivered FROM messages")
        assert rows.fetchall() == [("k", "uid-1", 5, 1)]
        assert connection.execute("PRAGMA journal_mode").fetchone() == ("delete",)
    connection.close()
    assert await SQLiteStore(path).known("k", ["uid-1", "uid-2"]) == {"uid-1": 5}
    assert "seen.db" in repr(SQLiteStore(path))


def test_mailbox_key_names_the_mailbox_not_the_way_in() -> None:
    """The rule fetch uses too: the standard ports (POP3, POP3S, STLS) share a key."""
    plain = Account("Mail.Example.org", "alice", tls="none", port=110, auth="+APOP")
    assert plain.mailbox_key == "alice@mail.example.org"
    assert Account("mail.example.org", "alice", tls="starttls").mailbox_key == (
        "alice@mail.example.org"
    )
    assert Account("mail.example.org", "alice").mailbox_key == "alice@mail.example.org"
    assert Account("::1", "bob", port=1100).mailbox_key == "bob@[::1]:1100"
    assert Account("h", "bob", state_key="inbox").mailbox_key == "inbox"


def test_watch_keys_its_store_by_the_one_mailbox_identity() -> None:
    module = importlib.import_module("aiopop._watch")
    assert not hasattr(module, "mailbox_key")  # one rule: aiopop.mailbox_key
    account = Account("h", "bob", state_key="inbox")
    assert watch(account).key == account.mailbox_key == "inbox"
    plain = Account("Mail.Example.org", "bob", port=1100)
    assert watch(plain).key == aiopop.mailbox_key("bob", "Mail.Example.org", 1100)


async def test_the_key_and_the_account_reach_the_store_and_the_messages() -> None:
    store = MemoryStore()
    async with POP3TestServer({"alice": Mailbox(PASSWORD, list(MESSAGES[:3]))}) as server:
        account = account_for(server)
        got = await collect(watch(account, store=store, key="inbox-1", polls=1))
    uids = [m.uid for m in got]
    assert [m.account for m in got] == [account] * 3
    assert set(await store.known("inbox-1", uids)) == set(uids)
    assert await store.known(account.mailbox_key, uids) == {}


@pytest.mark.parametrize(
    ("options", "pipelined"),
    [
        ({}, True),  # by default RETRs are pipelined: the test can see it
        ({"prefetch": 1}, False),  # one message fetched ahead at most
        ({"client_options": {"max_in_flight": 1}}, False),  # the client's own limit
    ],
)
async def test_prefetch_and_client_options_reach_the_client(
    options: dict[str, Any], pipelined: bool
) -> None:
    async with POP3TestServer({"alice": Mailbox(PASSWORD, list(MESSAGES[:3]))}) as server:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            watcher = watch(account_for(server), polls=1, **options)
        got = await collect(watcher)
    # client_options is deprecated (the Account configures the client), and still works.
    deprecated = [w for w in caught if issubclass(w.category, DeprecationWarning)]
    assert len(deprecated) == ("client_options" in options)
    assert len(got) == 3
    retrs_pipelined = [c for c in server.sessions[0].pipelined if c.startswith(b"RETR")]
    assert bool(retrs_pipelined) is pipelined


def test_watch_accepts_the_smallest_options() -> None:
    account = Account("127.0.0.1", "alice", password=PASSWORD)
    watcher = watch(account, interval=0, backoff=(5, 5), polls=1, prefetch=1)
    assert (watcher.interval, watcher.backoff, watcher.prefetch) == (0, (5, 5), 1)


@pytest.mark.parametrize(
    "options",
    [
        {"interval": -1},
        {"interval": float("nan")},
        {"backoff": (0, 1)},
        {"backoff": (2, 1)},
        {"polls": 0},
        {"prefetch": 0},
    ],
)
def test_watch_refuses_bad_options(options: dict[str, object]) -> None:
    account = Account("127.0.0.1", "alice", password=PASSWORD)
    with pytest.raises(ValueError, match=next(iter(options))):
        watch(account, **options)  # type: ignore[arg-type]


EMPTY_LIST: list[Step] = [Send(b"+OK\r\n.\r\n"), Expect(b"LIST"), Send(b"+OK\r\n.\r\n")]


def until_uidl(capa: bytes = b"") -> list[Step]:
    """A session up to its UIDL: USER and PASS accepted, ``capa`` in CAPA after login."""
    return [
        GREETING,
        Expect(b"CAPA"),
        Send(b"+OK\r\nUSER\r\n.\r\n"),
        Expect(b"USER alice"),
        Send(b"+OK\r\n"),
        Expect(b"PASS " + PASSWORD.encode()),
        Send(b"+OK\r\n"),
        Expect(b"CAPA"),
        Send(b"+OK\r\n" + capa + b".\r\n"),
        Expect(b"UIDL"),
    ]


async def test_a_refused_quit_is_retried_and_a_refused_uidl_is_raised() -> None:
    def session(after_uidl: list[Step]) -> list[Step]:
        return [*until_uidl(), *after_uidl]

    # -ERR to QUIT: the deletions did not commit; the next poll tries again.
    quit_refused = session(
        [*EMPTY_LIST, Expect(b"QUIT"), Send(b"-ERR oops\r\n")]  # UIDL, LIST: empty
    )
    time = FakeTime(stop_after=2)
    async with ScriptedServer(quit_refused) as server:
        watcher = time.watch(account_for(server), backoff=(0.5, 10), jitter=exact)
        with pytest.raises(Stop):
            await collect(watcher)
    assert time.sleeps == [0.5, 1]
    assert server.mismatches == []
    # A server without UIDL cannot be watched: that is raised, not retried.
    time = FakeTime(stop_after=1)
    async with ScriptedServer(session([Send(b"-ERR no UIDL here\r\n")])) as server:
        with pytest.raises(ResponseError, match="no UIDL here"):
            await collect(time.watch(account_for(server)))
    assert time.sleeps == []


async def test_finish_stops_even_when_the_connection_drops_at_its_dele(
    caplog: pytest.LogCaptureFixture,
) -> None:
    message = b"Subject: hi\r\n\r\nhello\r\n"
    script: list[Step] = [
        *until_uidl(),
        Send(b"+OK\r\n1 uid-1\r\n.\r\n"),
        Expect(b"LIST"),
        Send(b"+OK\r\n1 %d\r\n.\r\n" % len(message)),
        Expect(b"RETR 1"),
        Send(b"+OK\r\n" + message + b".\r\n"),
        Expect(b"DELE 1"),
        Close(),
    ]
    store = MemoryStore()
    time = FakeTime(stop_after=1)
    async with ScriptedServer(script) as server:
        account = account_for(server)
        messages = time.watch(account, store=store, delete=True)
        assert "alice@127.0.0.1" in repr(messages)
        async with messages:
            async for new in messages:
                assert new.data == message
                await messages.finish()
    assert store.uids(account.mailbox_key) == {"uid-1"}  # recorded: the next poll deletes it
    assert time.sleeps == []  # no retry after finish()
    assert "while finishing" in caplog.text
    assert repr(store) == "MemoryStore(1 uids)"


# -- unique-ids that servers get wrong, QUIT, the login, the lock -------------------------------


async def test_a_shared_unique_id_is_never_deleted_unseen() -> None:
    """Two messages under one unique-id: each is yielded before its DELE, even across polls."""
    first, second = b"Subject: a\r\n\r\nfirst\r\n", b"Subject: b\r\n\r\nother\r\n"  # same size
    mailbox = Mailbox(PASSWORD, [first, second], uids=["same", "same"])
    store = MemoryStore()
    async with POP3TestServer({"alice": mailbox}) as server:
        account = account_for(server)
        async with watch(account, store=store, delete=True, polls=1) as messages:
            async for message in messages:
                assert message.data == first
                await messages.finish()  # handled the first only
        assert mailbox.messages == [second]
        # Alone now, "second" has the unique-id of a handled message of its size:
        # that message was never recorded, so "second" is no known message.
        later = await collect(watch(account, store=store, delete=True, polls=1))
    assert [m.data for m in later] == [second]
    assert mailbox.messages == []
    assert sent(server, "DELE") == [[b"DELE 1"], [b"DELE 1"]]


async def test_a_shared_unique_id_without_delete_yields_the_first_once() -> None:
    mailbox = Mailbox(PASSWORD, list(MESSAGES[:2]), uids=["same", "same"])
    store = MemoryStore()
    async with POP3TestServer({"alice": mailbox}) as server:
        polls = [await collect(watch(account_for(server), store=store, polls=1)) for _ in "ab"]
    assert [[m.data for m in poll] for poll in polls] == [[MESSAGES[0]], []]
    assert len(mailbox.messages) == 2


async def test_a_unique_id_reused_for_another_message_is_a_new_message() -> None:
    mailbox = Mailbox(PASSWORD, [MESSAGES[0]], uids=["reused"])
    store = MemoryStore()
    async with POP3TestServer({"alice": mailbox}) as server:
        account = account_for(server)
        await collect(watch(account, store=store, delete=True, polls=1))
        mailbox.add(MESSAGES[1], uid="reused")  # sizes differ
        later = await collect(watch(account, store=store, delete=True, polls=1))
    assert [m.data for m in later] == [MESSAGES[1]]
    assert mailbox.messages == []
    assert await store.known(account.mailbox_key, ["reused"]) == {}  # deleted: forgotten


async def test_a_poll_counts_as_completed_only_when_quit_was_answered() -> None:
    """Cut before QUIT's reply: the deletions were rolled back, the poll is retried."""
    mailbox = Mailbox(PASSWORD, list(MESSAGES[:2]))
    time = FakeTime(stop_after=1)
    async with POP3TestServer({"alice": mailbox}, faults=Faults(drop_at="QUIT")) as server:
        watcher = time.watch(account_for(server), delete=True)
        with pytest.raises(Stop):
            await collect(watcher)
    assert watcher.completed_polls == 0
    assert len(time.sleeps) == 1  # a retry was due
    assert [s.quit for s in server.sessions] == [False]
    assert len(mailbox.messages) == 2


async def test_a_watcher_remembers_the_login_method_in_its_sqlite_store(tmp_path: Path) -> None:
    """SCRAM refused for the right password: the next watcher logs in with no failed attempt."""
    mailbox = Mailbox(PASSWORD, list(MESSAGES[:1]))
    faults = Faults(error_at="AUTH", error="[AUTH] Authentication failed.")
    store = tmp_path / "seen.db"
    async with POP3TestServer({"alice": mailbox}, sasl=["SCRAM-SHA-256"], faults=faults) as server:
        account = replace(account_for(server), allow_cleartext=True)
        first = watch(account, store=SQLiteStore(store), polls=2, interval=0)
        await collect(first)
        await collect(watch(account, store=SQLiteStore(store), polls=1))
    assert first.login_method is AuthMethod.USER
    auths = [[line for line in s.lines if line.startswith(b"AUTH")] for s in server.sessions]
    assert [len(a) for a in auths] == [1, 0, 0]  # one failed attempt, once ever


async def test_a_poll_waits_for_a_fetch_holding_the_mailbox(tmp_path: Path) -> None:
    """Another process holds the state: the poll fails, is retried, and runs once it is free."""
    store = SQLiteStore(tmp_path / "seen.db")
    mailbox = Mailbox(PASSWORD, list(MESSAGES[:1]))
    async with POP3TestServer({"alice": mailbox}) as server:
        account = account_for(server)
        holder = store.lock(account.mailbox_key)
        await holder.acquire()
        time = FakeTime(on_sleep=lambda _: holder.release())
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(importlib.import_module("aiopop._watch"), "LOCK_WAIT", 0.05)
            got = await collect(time.watch(account, store=store, polls=1))
    assert [m.data for m in got] == MESSAGES[:1]
    assert len(time.sleeps) == 1
    assert len(server.sessions) == 1  # nothing was sent while the lock was held


async def test_a_unique_id_deleted_then_reused_at_the_same_size_is_a_new_message() -> None:
    """After a QUIT that committed a deletion, the unique-id names nothing: forgotten."""
    first, same_size = b"Subject: a\r\n\r\nfirst\r\n", b"Subject: b\r\n\r\nother\r\n"
    mailbox = Mailbox(PASSWORD, [first], uids=["u"])
    store = MemoryStore()
    async with POP3TestServer({"alice": mailbox}) as server:
        account = account_for(server)
        await collect(watch(account, store=store, delete=True, polls=1))
        assert store.uids(account.mailbox_key) == set()
        mailbox.add(same_size, uid="u")
        later = await collect(watch(account, store=store, delete=True, polls=1))
    assert [m.data for m in later] == [same_size]
    assert mailbox.messages == []


# -- pinned by mutation testing: what the watcher sends, records and logs ---------------------


def session_script(uidl: bytes, listing: bytes, *rest: Step, capa: bytes = b"") -> list[Step]:
    """A logged-in session (``capa`` in CAPA after login) answering UIDL and LIST with
    these listings, then ``rest``."""
    return [
        *until_uidl(capa),
        Send(b"+OK\r\n" + uidl + b".\r\n"),
        Expect(b"LIST"),
        Send(b"+OK\r\n" + listing + b".\r\n"),
        *rest,
    ]


async def test_the_store_records_the_size_list_gave_not_the_octets_received() -> None:
    """The next poll compares LIST with LIST: a server whose LIST counts otherwise
    (or lies) must not get its messages delivered again. A message LIST leaves out
    is recorded with the octets received."""
    first, second = b"Subject: a\r\n\r\nfirst\r\n", b"Subject: b\r\n\r\nsecond\r\n"
    script = session_script(
        b"1 u1\r\n2 u2\r\n",
        b"1 999\r\n",  # says nothing of message 2
        Expect(b"RETR 1"),
        Send(b"+OK\r\n" + first + b".\r\n"),
        Expect(b"RETR 2"),
        Send(b"+OK\r\n" + second + b".\r\n"),
        Expect(b"QUIT"),
        Send(b"+OK\r\n"),
    )
    store = MemoryStore()
    async with ScriptedServer(script) as server:
        account = account_for(server)
        got = await collect(watch(account, store=store, polls=1))
    assert server.mismatches == []
    assert [m.data for m in got] == [first, second]
    assert await store.known(account.mailbox_key, ["u1", "u2"]) == {"u1": 999, "u2": len(second)}


async def test_two_messages_sharing_a_unique_id_are_both_yielded_and_deleted() -> None:
    """Exactly two (the smallest sharing): each is yielded under its unique-id, in the same
    poll as the messages listed after them, and deleted; none is recorded."""
    shared_a, shared_b, other = MESSAGES
    mailbox = Mailbox(PASSWORD, [shared_a, shared_b, other], uids=["same", "same", "other"])
    store = MemoryStore()
    async with POP3TestServer({"alice": mailbox}) as server:
        account = account_for(server)
        got = await collect(watch(account, store=store, delete=True, polls=1))
    assert [(m.uid, m.data) for m in got] == [
        ("same", shared_a),
        ("same", shared_b),
        ("other", other),
    ]
    assert sent(server, "DELE") == [[b"DELE 1", b"DELE 2", b"DELE 3"]]
    assert mailbox.messages == []
    assert store.uids(account.mailbox_key) == set()


async def test_without_delete_a_shared_unique_id_does_not_hide_the_messages_after_it() -> None:
    shared_a, shared_b, other = MESSAGES
    mailbox = Mailbox(PASSWORD, [shared_a, shared_b, other], uids=["same", "same", "other"])
    async with POP3TestServer({"alice": mailbox}) as server:
        got = await collect(watch(account_for(server), polls=1))
    assert [(m.uid, m.data) for m in got] == [("same", shared_a), ("other", other)]
    assert sent(server, "RETR") == [[b"RETR 1", b"RETR 3"]]


async def test_a_recorded_message_deleted_at_the_next_poll_is_forgotten_after_quit() -> None:
    """Else a unique-id reused later at the same size would be deleted unseen."""
    mailbox = Mailbox(PASSWORD, list(MESSAGES[:2]))
    uids = uids_of(mailbox)
    store = MemoryStore()
    async with POP3TestServer({"alice": mailbox}) as server:
        account = account_for(server)
        await store.add(account.mailbox_key, uids[0], len(MESSAGES[0]))
        got = await collect(watch(account, store=store, delete=True, polls=1))
        assert [m.uid for m in got] == [uids[1]]
        assert sent(server, "DELE") == [[b"DELE 1", b"DELE 2"]]
        assert store.uids(account.mailbox_key) == set()
        mailbox.add(MESSAGES[0], uid=uids[0])  # the same unique-id and size, another message
        later = await collect(watch(account, store=store, delete=True, polls=1))
    assert [m.data for m in later] == [MESSAGES[0]]


async def test_a_remembered_login_method_of_a_newer_aiopop_is_ignored(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "seen.db")
    mailbox = Mailbox(PASSWORD, list(MESSAGES[:1]))
    async with POP3TestServer({"alice": mailbox}) as server:
        account = account_for(server)
        await store.remember_login(account.mailbox_key, "SOME-FUTURE-METHOD")
        watcher = watch(account, store=store, polls=1)
        got = await collect(watcher)
    assert [m.data for m in got] == MESSAGES[:1]
    assert watcher.login_method is not None
    assert await store.login_method(account.mailbox_key) == watcher.login_method.value


async def test_a_login_delay_refusal_before_any_login_waits_only_the_backoff() -> None:
    """No LOGIN-DELAY known yet (none announced, none in the refusal): the backoff alone."""
    time = FakeTime(stop_after=3)
    async with ScriptedServer(login_refused(b"-ERR [LOGIN-DELAY] too soon\r\n")) as server:
        watcher = time.watch(account_for(server), backoff=(0.25, 600), jitter=exact)
        with pytest.raises(Stop):
            await collect(watcher)
    assert time.sleeps == [0.25, 0.5, 1.0]
    assert watcher.login_delay == 0


async def test_a_login_delay_refusal_waits_the_delay_announced_at_the_last_login() -> None:
    """Announced after the first login (900 s); the second login is refused with
    [LOGIN-DELAY] and no delay of its own: the retry still waits 900 s, not the backoff."""
    empty = session_script(b"", b"", Expect(b"QUIT"), Send(b"+OK\r\n"), capa=b"LOGIN-DELAY 900\r\n")
    time = FakeTime(stop_after=2)
    refused = login_refused(b"-ERR [LOGIN-DELAY] too soon\r\n")
    async with ScriptedServer(empty, then=[refused]) as server:
        watcher = time.watch(account_for(server), interval=0, backoff=(0.5, 600), jitter=exact)
        with pytest.raises(Stop):
            await collect(watcher)
    assert server.mismatches == []
    assert watcher.completed_polls == 1
    assert time.sleeps == [900, 900]


async def test_polls_with_no_interval_follow_each_other_without_a_wait() -> None:
    mailbox = Mailbox(PASSWORD, list(MESSAGES[:1]))
    time = FakeTime()
    async with POP3TestServer({"alice": mailbox}) as server:
        watcher = time.watch(account_for(server), interval=0, polls=3)
        await collect(watcher)
    assert watcher.completed_polls == 3
    assert time.sleeps == []  # not even a wait of 0 s


async def test_by_default_polls_are_a_minute_apart_with_eight_messages_fetched_ahead() -> None:
    mailbox = Mailbox(PASSWORD, list(MESSAGES[:1]))
    time = FakeTime()
    async with POP3TestServer({"alice": mailbox}) as server:
        watcher = time.watch(account_for(server), polls=2)
        await collect(watcher)
    assert time.sleeps == [60.0]
    assert watcher.prefetch == 8


def test_full_jitter_spreads_over_the_whole_range_from_zero() -> None:
    state = random.getstate()
    try:
        random.seed(1939)
        draws = [full_jitter(0.5) for _ in range(200)]
    finally:
        random.setstate(state)
    assert all(0.0 <= d <= 0.5 for d in draws)
    assert min(draws) < 0.05


async def test_a_retry_is_logged_with_the_account_the_error_and_the_wait(
    caplog: pytest.LogCaptureFixture,
) -> None:
    time = FakeTime(stop_after=1)
    async with ScriptedServer(login_refused(b"-ERR [SYS/TEMP] try later\r\n")) as server:
        account = account_for(server)
        with caplog.at_level("WARNING", logger="aiopop.watch"), pytest.raises(Stop):
            await collect(time.watch(account, backoff=(2.5, 10), jitter=exact))
    messages = [r.getMessage() for r in caplog.records if r.name == "aiopop.watch"]
    assert len(messages) == 1
    error = r"\w+: PASS: -ERR \[SYS/TEMP\] try later"
    expected = rf"{re.escape(account.name)}: {error}; trying again in 2\.5 s"
    assert re.fullmatch(expected, messages[0])


async def test_an_error_while_finishing_is_logged_with_the_account_and_the_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    message = b"Subject: hi\r\n\r\nhello\r\n"
    script = session_script(
        b"1 uid-1\r\n",
        b"1 %d\r\n" % len(message),
        Expect(b"RETR 1"),
        Send(b"+OK\r\n" + message + b".\r\n"),
        Expect(b"DELE 1"),
        Close(),
    )
    async with ScriptedServer(script) as server:
        account = account_for(server)
        messages = FakeTime(stop_after=1).watch(account, delete=True)
        with caplog.at_level("WARNING", logger="aiopop.watch"):
            async with messages:
                async for _ in messages:
                    await messages.finish()
    logged = [r.getMessage() for r in caplog.records if r.name == "aiopop.watch"]
    assert len(logged) == 1
    assert logged[0].startswith(f"{account.name}: ConnectionLostError: ")
    assert logged[0].endswith(" while finishing; stopping all the same")


def test_an_error_is_described_by_its_type_and_its_text() -> None:
    from aiopop._watch import _describe

    assert _describe(ConnectionResetError("reset by peer")) == "ConnectionResetError: reset by peer"
    assert _describe(TimeoutError()) == "TimeoutError"


async def test_a_poll_waits_lock_wait_seconds_for_a_fetch_not_the_locks_default(
    tmp_path: Path,
) -> None:
    """The watcher's own LOCK_WAIT applies (here shortened), not StateLock's default."""
    store = SQLiteStore(tmp_path / "seen.db")
    mailbox = Mailbox(PASSWORD, list(MESSAGES[:1]))
    async with POP3TestServer({"alice": mailbox}) as server:
        account = account_for(server)
        holder = store.lock(account.mailbox_key)
        await holder.acquire()
        time = FakeTime(stop_after=1)
        try:
            with pytest.MonkeyPatch.context() as patch:
                patch.setattr(importlib.import_module("aiopop._watch"), "LOCK_WAIT", 0.05)
                async with asyncio.timeout(3):  # StateLock's default would wait 5 s
                    with pytest.raises(Stop):
                        await collect(time.watch(account, store=store))
        finally:
            holder.release()
    assert len(time.sleeps) == 1
    assert server.sessions == []


async def test_sqlite_store_waits_its_timeout_for_a_busy_file(tmp_path: Path) -> None:
    """``timeout`` reaches SQLite: a write held by another connection fails the add
    after that long, not after the 30 s default."""
    path = tmp_path / "seen.db"
    await SQLiteStore(path).add("k", "u0", 1)
    assert SQLiteStore(path).timeout == 30.0
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("BEGIN EXCLUSIVE")
        async with asyncio.timeout(10):
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                await SQLiteStore(path, timeout=0.1).add("k", "u1", 1)
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert await SQLiteStore(path).known("k", ["u0", "u1"]) == {"u0": 1}


async def test_sqlite_store_lock_waits_as_long_as_asked(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "seen.db")
    async with store.lock("k", wait=0.05):
        second = store.lock("k", wait=0.1)
        assert second.wait == 0.1
        async with asyncio.timeout(3):  # the default would wait 5 s
            with pytest.raises(StateLockedError):
                await second.acquire()
