"""watch() and its stores: what it remembers between polls and across restarts."""

from __future__ import annotations

import importlib
import warnings
from typing import Any

import pytest

import aiopop
from aiopop._accounts import Account
from aiopop._errors import ResponseError
from aiopop._stores import MemoryStore
from aiopop._watch import watch
from aiopop.testing import (
    Close,
    Expect,
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
    until_uidl,
)


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
