"""watch(): each new message once, at least once, with backoff, LOGIN-DELAY and clean stops."""

from __future__ import annotations

import asyncio
import contextlib
import random
import sqlite3
import ssl
from email.message import EmailMessage
from pathlib import Path

import pytest
import trustme

from aiopop._accounts import Account
from aiopop._errors import CredentialsError
from aiopop._message import NewMessage
from aiopop._stores import MemoryStore, SQLiteStore
from aiopop._watch import Watcher, full_jitter, watch
from aiopop.testing import (
    Close,
    Expect,
    Mailbox,
    POP3ServerFixture,
    POP3TestServer,
    ScriptedServer,
    Step,
    WaitForClose,
)
from servers.ports import free_port
from tests.helpers.tls import server_context
from tests.helpers.watch import (
    GREETING,
    MESSAGES,
    PASSWORD,
    FakeTime,
    Stop,
    account_for,
    collect,
    exact,
    login_refused,
    sent,
    uids_of,
    until_uidl,
)

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
    context = server_context(ca, "127.0.0.1")
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


async def test_cancelling_between_polls_stops_at_once(pop3_server: POP3ServerFixture) -> None:
    server = (
        await pop3_server.start(mailboxes={"alice": Mailbox(PASSWORD, list(MESSAGES))})
    ).server
    task = asyncio.create_task(collect(watch(account_for(server), interval=3600)))
    for _ in range(500):
        if server.sessions and server.sessions[0].quit:
            break
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 5)
    assert len(server.sessions) == 1
