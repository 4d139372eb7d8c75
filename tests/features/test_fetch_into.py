"""fetch_into with a delivery callable: what it hands over, records, leaves and deletes.

Each test runs the engine against :class:`~aiopop.testing.POP3TestServer`
(or a scripted server) and looks at three things: what the callable was
given, what reached the wire (RETR, DELE, QUIT) and what the state file
holds, read with sqlite3 behind the engine's back. The policies shared
with the Maildir destination are in test_fetch_policies.py.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest

import aiopop
from aiopop.testing import Faults, ScriptedServer
from tests.helpers.fetch import (
    ACCOUNT,
    LISTING,
    NO_UIDL,
    PASSWORD,
    USER,
    Hand,
    rows,
    run_into,
    script,
    scripted_client,
    serve,
    wire,
)

MAIL = [
    b"Subject: one\r\n\r\nHello\r\n",
    # Dot-stuffed on the wire ("..", "...", "..dot"); a bare CR is content.
    b"Subject: two\r\n\r\n.\r\n..\r\n.dot\r\nbare\rCR\r\n",
    b"Subject: three\r\n\r\nthird\r\n",
    b"Subject: four\r\n\r\nlast one\r\n",
]


def uids_of(mailbox: aiopop.testing.Mailbox) -> list[str]:
    assert mailbox.uids is not None
    return list(mailbox.uids)


# -- what is handed over, and when it is recorded --------------------------------------------


async def test_each_message_is_handed_over_once_in_order_with_its_exact_bytes(
    tmp_path: Path,
) -> None:
    mailbox, server = serve(*MAIL)
    uids = uids_of(mailbox)
    hand = Hand()
    state = tmp_path / "state.sqlite3"
    async with server:
        account = aiopop.Account(host="127.0.0.1", user=USER, port=server.port)
        result = await run_into(server, hand, account=account, state=state)
        assert wire(server) == [b"RETR 1", b"RETR 2", b"RETR 3", b"RETR 4", b"QUIT"]
    assert [(m.number, m.uid, m.data) for m in hand.got] == [
        (n, uids[n - 1], MAIL[n - 1]) for n in (1, 2, 3, 4)
    ]
    assert hand.got[1].data.endswith(b"\r\n.\r\n..\r\n.dot\r\nbare\rCR\r\n")
    assert all(m.account is account for m in hand.got)
    assert [m.size for m in hand.got] == list(map(len, MAIL))
    assert result.delivered == [
        aiopop.Delivery(n, uids[n - 1], None, len(MAIL[n - 1])) for n in (1, 2, 3, 4)
    ]
    assert (result.skipped, result.marked, result.refused, result.oversized) == (0, [], [], [])
    assert (result.undelivered, result.filtered, result.plan) == ([], [], None)
    # Recorded under the account's mailbox key, with the LIST size; kept on the server.
    recorded = rows(state, account.mailbox_key)
    assert {uid: (r.size, r.name, r.delivered, r.marked) for uid, r in recorded.items()} == {
        uid: (len(data), None, 1, None) for uid, data in zip(uids, MAIL, strict=True)
    }
    assert rows(state, ACCOUNT) == {}
    assert mailbox.messages == MAIL


async def test_a_string_account_hands_over_messages_without_an_account(tmp_path: Path) -> None:
    _, server = serve(*MAIL[:1])
    hand = Hand()
    async with server:
        await run_into(server, hand, state=tmp_path / "s")
    assert [m.account for m in hand.got] == [None]
    assert list(rows(tmp_path / "s")) == [hand.got[0].uid]


async def test_a_message_is_recorded_only_once_the_callable_has_returned(tmp_path: Path) -> None:
    mailbox, server = serve(*MAIL[:3])
    uids = uids_of(mailbox)
    state = tmp_path / "state.sqlite3"
    seen: list[list[str]] = []

    async def deliver(message: aiopop.NewMessage) -> None:
        # Behind the engine's back, while it waits for this callable.
        db = sqlite3.connect(state)
        try:
            seen.append(sorted(uid for (uid,) in db.execute("SELECT uid FROM messages")))
        finally:
            db.close()
        await asyncio.sleep(0)

    async with server:
        await run_into(server, deliver, state=state)
    assert seen == [[], sorted(uids[:1]), sorted(uids[:2])]
    assert sorted(rows(state)) == sorted(uids)


async def test_a_second_run_hands_over_nothing_and_then_only_a_new_message(
    tmp_path: Path,
) -> None:
    mailbox, server = serve(*MAIL[:2])
    state = tmp_path / "state.sqlite3"
    async with server:
        await run_into(server, Hand(), state=state)
        first = rows(state)
        hand = Hand()
        again = await run_into(server, hand, state=state)
        assert (hand.got, again.delivered, again.skipped) == ([], [], 2)
        assert wire(server) == [b"QUIT"]
        new = mailbox.add(b"Subject: later\r\n\r\nnew\r\n")
        hand = Hand()
        third = await run_into(server, hand, state=state)
        assert wire(server) == [b"RETR 3", b"QUIT"]
    assert [(m.number, m.uid) for m in hand.got] == [(3, new)]
    assert (third.skipped, [d.number for d in third.delivered]) == (2, [3])
    after = rows(state)
    assert {uid: after[uid] for uid in first} == first  # the earlier rows untouched
    assert after[new].size == len(b"Subject: later\r\n\r\nnew\r\n")


# -- a refusal, a failure, a cancellation ------------------------------------------------------


async def test_a_delivery_error_leaves_that_message_and_the_others_go_on(tmp_path: Path) -> None:
    mailbox, server = serve(*MAIL)
    uids = uids_of(mailbox)
    state = tmp_path / "state.sqlite3"
    async with server:
        result = await run_into(server, Hand(refuse={2}), state=state, delete=True)
        assert wire(server, "RETR", "DELE") == [
            b"RETR 1", b"RETR 2", b"RETR 3", b"RETR 4", b"DELE 1", b"DELE 3", b"DELE 4",
        ]  # fmt: skip
        assert [d.number for d in result.delivered] == [1, 3, 4]
        [undelivered] = result.undelivered
        assert (undelivered.number, undelivered.uid) == (2, uids[1])
        assert isinstance(undelivered.error, aiopop.DeliveryError)
        assert undelivered.error.uid == uids[1]  # filled in by the engine
        assert result.marked == [1, 3, 4]
        assert mailbox.messages == [MAIL[1]]  # QUIT committed the others only
        assert sorted(rows(state)) == sorted([uids[0], uids[2], uids[3]])
        # The next run hands it over again (now number 1), and deletes it.
        hand = Hand()
        again = await run_into(server, hand, state=state, delete=True)
        assert wire(server) == [b"RETR 1", b"DELE 1", b"QUIT"]
    assert [(m.number, m.uid, m.data) for m in hand.got] == [(1, uids[1], MAIL[1])]
    assert again.marked == [1]
    assert mailbox.messages == []
    assert list(rows(state)) == [uids[1]]  # the others' rows went with their messages


async def test_another_exception_stops_the_run_and_nothing_is_deleted(tmp_path: Path) -> None:
    mailbox, server = serve(*MAIL)
    uids = uids_of(mailbox)
    state = tmp_path / "state.sqlite3"
    hand = Hand(fail={2: RuntimeError("the destination broke")})
    async with server:
        with pytest.raises(RuntimeError, match="the destination broke"):
            await run_into(server, hand, state=state, delete=True)
        assert hand.numbers == [1]
        assert "DELE" not in server.sessions[-1].keywords
        assert not server.sessions[-1].quit
        assert mailbox.messages == MAIL
        assert list(rows(state)) == [uids[0]]  # handed over before the failure: recorded
        # The next run takes up from message 2, and deletes all four.
        hand = Hand()
        result = await run_into(server, hand, state=state, delete=True)
        assert wire(server, "RETR", "DELE") == [
            b"RETR 2", b"RETR 3", b"RETR 4", b"DELE 1", b"DELE 2", b"DELE 3", b"DELE 4",
        ]  # fmt: skip
    assert hand.numbers == [2, 3, 4]
    assert (result.skipped, result.marked) == (1, [1, 2, 3, 4])
    assert mailbox.messages == []


async def test_cancelled_while_the_callable_runs_records_nothing_of_that_message(
    tmp_path: Path,
) -> None:
    mailbox, server = serve(*MAIL)
    uids = uids_of(mailbox)
    state = tmp_path / "state.sqlite3"
    handing = asyncio.Event()
    given: list[int] = []

    async def deliver(message: aiopop.NewMessage) -> None:
        given.append(message.number)
        if message.number == 2:
            handing.set()
            await asyncio.sleep(60)

    async with server:
        client = aiopop.POP3(server.host, server.port, timeout=5)
        await client.connect()
        await client.login(USER, PASSWORD)
        run = asyncio.create_task(
            aiopop.fetch_into(client, deliver, account=ACCOUNT, state=state, delete=True)
        )
        await handing.wait()
        run.cancel()
        with pytest.raises(asyncio.CancelledError):
            await run
        await client.close()
        await server.wait_idle()
        assert "DELE" not in server.sessions[-1].keywords
        assert mailbox.messages == MAIL
        assert list(rows(state)) == [uids[0]]
        hand = Hand()
        await run_into(server, hand, state=state)  # the lock was released
    assert given == [1, 2]
    assert hand.numbers == [2, 3, 4]


# -- size limits -------------------------------------------------------------------------------


async def test_a_message_listed_over_max_size_is_not_retrieved(tmp_path: Path) -> None:
    big = b"Subject: big\r\n\r\n" + b"x" * 200 + b"\r\n"
    mailbox, server = serve(MAIL[0], big, MAIL[2])
    uids = uids_of(mailbox)
    state = tmp_path / "state.sqlite3"
    hand = Hand()
    async with server:
        result = await run_into(server, hand, state=state, max_size=100, delete=True)
        assert wire(server, "RETR", "DELE") == [b"RETR 1", b"RETR 3", b"DELE 1", b"DELE 3"]
        again = await run_into(server, Hand(), state=state, max_size=100)
    assert hand.numbers == [1, 3]
    assert result.oversized == [aiopop.Oversized(2, uids[1], len(big))]
    assert mailbox.messages == [big]
    assert uids[1] not in rows(state)
    assert again.oversized == [aiopop.Oversized(1, uids[1], len(big))]  # not taken for known


async def test_a_message_that_arrives_larger_than_listed_is_dropped(tmp_path: Path) -> None:
    # LIST says 30 octets less than each message has.
    small, lying = b"a" * 40 + b"\r\n", b"b" * 120 + b"\r\n"
    mailbox, server = serve(small, lying, small, faults=Faults(size_error=-30))
    uids = uids_of(mailbox)
    state = tmp_path / "state.sqlite3"
    hand = Hand()
    async with server:
        result = await run_into(server, hand, state=state, max_size=100, delete=True)
        # Listed at 92 octets, it was retrieved, read to its end and dropped.
        assert wire(server, "RETR", "DELE") == [
            b"RETR 1", b"RETR 2", b"RETR 3", b"DELE 1", b"DELE 3",
        ]  # fmt: skip
    assert hand.numbers == [1, 3]
    assert [m.data for m in hand.got] == [small, small]  # the next message intact
    [oversized] = result.oversized
    assert (oversized.number, oversized.uid) == (2, uids[1])
    assert 100 < oversized.size <= len(lying)
    assert mailbox.messages == [lying]
    assert sorted(rows(state)) == sorted([uids[0], uids[2]])


# -- the state: required, refused, locked ------------------------------------------------------


async def test_a_callable_needs_a_state_file_and_a_maildir_refuses_one(tmp_path: Path) -> None:
    mailbox, server = serve(*MAIL)
    async with server:
        with pytest.raises(ValueError, match="needs state="):
            await run_into(server, Hand())
        with pytest.raises(ValueError, match="leave state out"):
            await run_into(server, tmp_path / "Maildir", state=tmp_path / "s")
        for session in server.sessions:
            assert not {"UIDL", "LIST", "RETR", "DELE"} & set(session.keywords)
    assert os.listdir(tmp_path) == []  # no Maildir, no state file
    assert mailbox.messages == MAIL


@pytest.mark.parametrize(
    ("option", "value", "words"),
    [
        ("delete_after_days", -1, "delete_after_days must be a number >= 0"),
        ("delete_after_days", float("nan"), "delete_after_days must be a number >= 0"),
        ("delete_after_days", float("inf"), "delete_after_days must be a number >= 0"),
        ("max_size", -1, "max_size must be at least 0"),
        ("delete_larger_than", -1, "delete_larger_than must be at least 0"),
        ("batch_messages", 0, "batch_messages must be at least 1"),
        ("memory", 0, "memory must be at least 1"),
    ],
)
async def test_an_invalid_option_is_refused_before_anything_is_done(
    tmp_path: Path, option: str, value: float, words: str
) -> None:
    mailbox, server = serve(*MAIL)
    options: dict[str, Any] = {option: value, "state": tmp_path / "s", "delete": True}
    async with server:
        with pytest.raises(ValueError, match=words):
            await run_into(server, Hand(), **options)
        assert not {"UIDL", "LIST", "RETR", "DELE"} & set(server.sessions[-1].keywords)
    assert os.listdir(tmp_path) == []
    assert mailbox.messages == MAIL


async def test_a_second_run_on_the_same_state_and_account_waits_then_gives_up(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state.sqlite3"
    mailbox, server = serve(*MAIL[:2])
    server.mailboxes["bob"] = aiopop.testing.Mailbox(PASSWORD, [b"for bob\r\n"])
    holding, release = asyncio.Event(), asyncio.Event()

    async def slow(message: aiopop.NewMessage) -> None:
        holding.set()
        await release.wait()

    async def as_bob(deliver: Hand, account: str, lock_wait: float) -> aiopop.FetchResult:
        # Another user on the server (alice's mailbox is in use), while alice's run goes on.
        async with aiopop.POP3(server.host, server.port, timeout=5) as client:
            await client.login("bob", PASSWORD)
            return await aiopop.fetch_into(
                client, deliver, account=account, state=state, lock_wait=lock_wait
            )

    async with server, asyncio.timeout(10):
        first = asyncio.create_task(run_into(server, slow, state=state))
        await holding.wait()
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(aiopop.StateLockedError):
            await as_bob(Hand(), account=ACCOUNT, lock_wait=0.2)  # the account alice's run holds
        waited = loop.time() - started
        other = Hand()
        await as_bob(other, account="bob@test", lock_wait=0)  # another account: not held up
        release.set()
        result = await first
    assert 0.15 <= waited < 2
    locked_out = server.sessions[1]
    assert not {"UIDL", "LIST", "RETR", "DELE"} & set(locked_out.keywords)  # did nothing
    assert [m.data for m in other.got] == [b"for bob\r\n"]
    assert [d.number for d in result.delivered] == [1, 2]
    assert sorted(rows(state)) == sorted(uids_of(mailbox))
    assert len(rows(state, "bob@test")) == 1


# -- without UIDL -------------------------------------------------------------------------------


async def test_without_uidl_new_only_refuses_before_any_retr(tmp_path: Path) -> None:
    hand = Hand()
    async with ScriptedServer(script(NO_UIDL, LISTING)) as server:
        client = await scripted_client(server)
        with pytest.raises(aiopop.UIDLUnavailableError) as caught:
            await aiopop.fetch_into(client, hand, account=ACCOUNT, state=tmp_path / "s")
        await client.close()
    assert caught.value.refusal.command == "UIDL"
    assert server.received[-2:] == [b"UIDL", b"LIST"]  # and nothing after: no RETR
    assert server.mismatches == []
    assert hand.got == []
    assert rows(tmp_path / "s") == {}


async def test_without_uidl_every_message_is_handed_over_and_none_recorded(
    tmp_path: Path,
) -> None:
    dialogue = [NO_UIDL, LISTING]
    dialogue += [(b"RETR %d" % n, b"+OK\r\nm%d\r\n.\r\n" % n) for n in (1, 2, 3)]
    dialogue += [(b"DELE 1", b"+OK\r\n"), (b"DELE 3", b"+OK\r\n"), (b"QUIT", b"+OK\r\n")]
    hand = Hand(refuse={2})
    async with ScriptedServer(script(*dialogue)) as server:
        client = await scripted_client(server)
        result = await aiopop.fetch_into(
            client, hand, account=ACCOUNT, state=tmp_path / "s", new_only=False, delete=True
        )
        await client.quit()
    assert server.mismatches == []  # no DELE 2: refused by the callable
    assert [(m.number, m.uid, m.data) for m in hand.got] == [(1, "", b"m1\r\n"), (3, "", b"m3\r\n")]
    assert [(d.number, d.uid) for d in result.delivered] == [(1, None), (3, None)]
    assert [(u.number, u.uid) for u in result.undelivered] == [(2, None)]
    assert result.marked == [1, 3]
    assert rows(tmp_path / "s") == {}


# -- surprises ---------------------------------------------------------------------------------


async def test_a_refused_retr_costs_at_most_one_more_retr_of_the_others(tmp_path: Path) -> None:
    """A -ERR ends the pipelined RETRs: those queued behind it are sent again, once."""
    _, server = serve(*MAIL)
    hand = Hand()
    async with server:
        await run_into(server, Hand(), state=tmp_path / "probe")
        command = server.sessions[-1].lines.index(b"RETR 2") + 1  # counted from 1
        server.faults = Faults(error_at=command)
        result = await run_into(server, hand, state=tmp_path / "s")
        retrs = wire(server, "RETR")
    assert [r.number for r in result.refused] == [2]
    assert hand.numbers == [1, 3, 4]
    assert retrs[:4] == [b"RETR 1", b"RETR 2", b"RETR 3", b"RETR 4"]
    assert sorted(retrs[4:]) in ([], [b"RETR 3"], [b"RETR 3", b"RETR 4"])


async def test_a_server_refusing_every_retr_costs_a_linear_number_of_commands(
    tmp_path: Path,
) -> None:
    """Not the whole window again after each refusal (quadratic): one more each at most."""
    messages = [b"Subject: %d\r\n\r\nbody\r\n" % n for n in range(60)]
    mailbox, server = serve(*messages)
    server.faults = Faults(error_at="RETR")
    hand = Hand()
    async with server:
        result = await run_into(server, hand, state=tmp_path / "s", delete=True)
        retrs = wire(server, "RETR")
    assert hand.numbers == []
    assert [r.number for r in result.refused] == list(range(1, 61))
    assert len(retrs) <= 2 * 60, len(retrs)  # the first window, then one at a time (1,830 before)
    assert len(mailbox.messages) == 60  # nothing delivered, so nothing deleted


async def test_a_filters_delivery_error_gets_the_uid_like_the_callables(tmp_path: Path) -> None:
    mailbox, server = serve(*MAIL[:2])

    async def broken(headers: aiopop.MessageHeaders) -> aiopop.Verdict:
        raise aiopop.DeliveryError("the filter program failed")

    async with server:
        result = await run_into(server, Hand(), state=tmp_path / "s", filter=broken)
    errors = [u.error for u in result.undelivered]
    assert [e.uid if isinstance(e, aiopop.DeliveryError) else e for e in errors] == uids_of(mailbox)


async def test_a_callables_state_folder_is_made_private(tmp_path: Path) -> None:
    _, server = serve(*MAIL[:1])
    state = tmp_path / "new" / "folder" / "state.sqlite3"
    async with server:
        await run_into(server, Hand(), state=state)
    assert len(rows(state)) == 1
    assert (state.parent.stat().st_mode & 0o777) == 0o700
