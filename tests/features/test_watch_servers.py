"""watch() against servers that get unique-ids, QUIT, the login or the lock wrong, and what
it sends, records and logs (pinned by mutation testing).
"""

from __future__ import annotations

import asyncio
import importlib
import random
import re
import sqlite3
from dataclasses import replace
from pathlib import Path

import pytest

from aiopop._delivery_state import StateLockedError
from aiopop._stores import MemoryStore, SQLiteStore
from aiopop._types import AuthMethod
from aiopop._watch import full_jitter, watch
from aiopop.testing import (
    Close,
    Expect,
    Faults,
    Mailbox,
    POP3TestServer,
    ScriptedServer,
    Send,
    Step,
)
from tests.helpers.watch import (
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
