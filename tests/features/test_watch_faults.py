"""watch(delete=True) loses no mail when the network fails or the server breaks RFC 1939.

A consumer handles each message (appends it to ``handled``) and asks for
the next; the watcher runs a few polls on a fake clock (tests/features/test_watch.py
FakeTime) against :class:`~aiopop.testing.POP3TestServer`, the first session
with a fault. After it, :func:`check` asserts:

* a message deleted from the server was yielded and its handling returned;
* each message is still on the server or was handled;
* ``completed_polls`` equals the number of QUITs whose ``+OK`` reached the
  client (docs/security.md rule 20).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest

from aiopop._errors import POP3Error
from aiopop._watch import Watcher
from aiopop.testing import Faults, Mailbox, POP3TestServer
from tests.helpers.watch import PASSWORD, FakeTime, account_for, exact

POLLS = 3
QUIT_CUT = 3
"""Octets of QUIT's reply sent before a cut: the client never sees a whole +OK line."""


def message(serial: int, lines: int = 1) -> bytes:
    body = b"".join(b"line %02d of %04d\r\n" % (i, serial) for i in range(lines))
    return b"Subject: message %04d\r\n\r\n" % serial + body


@dataclasses.dataclass
class Outcome:
    handled: list[bytes]
    universe: list[bytes]
    left: list[bytes]
    completed_polls: int
    quits_answered: int
    label: str


async def watching(
    mailbox: Mailbox,
    first: Faults,
    *,
    label: str,
    between: Callable[[int], object] | None = None,
) -> Outcome:
    """Watch ``mailbox`` for POLLS polls; the first session suffers ``first``."""
    universe = [bytes(m) for m in mailbox.messages]  # type: ignore[arg-type]
    server = POP3TestServer({"alice": mailbox}, faults=first)

    def on_sleep(count: int) -> None:
        server.faults = Faults()
        before = len(mailbox.messages)
        if between is not None:
            between(count)
        universe.extend(bytes(m) for m in mailbox.messages[before:])  # type: ignore[arg-type]

    handled: list[bytes] = []
    time = FakeTime(on_sleep=on_sleep, stop_after=40)
    async with server:
        watcher: Watcher = time.watch(
            account_for(server), delete=True, polls=POLLS, interval=5, jitter=exact
        )
        try:
            async with watcher:
                async for new in watcher:
                    handled.append(new.data)  # handled: the loop asks for the next one
        except POP3Error:
            pass  # refused (a malformed listing): fine, as long as nothing was lost
        await server.wait_idle()
    quits = sum(1 for s in server.sessions if s.quit and not s.dropped)
    return Outcome(
        handled,
        universe,
        [bytes(m) for m in mailbox.messages],  # type: ignore[arg-type]
        watcher.completed_polls,
        quits,
        label,
    )


def check(outcome: Outcome) -> None:
    where = f"after {outcome.label}"
    gone = [m for m in outcome.universe if m not in outcome.left]
    unhandled = [m for m in gone if m not in outcome.handled]
    assert not unhandled, f"{where}: deleted from the server, never handled: {unhandled}"
    lost = [m for m in outcome.universe if m not in outcome.left and m not in outcome.handled]
    assert not lost, f"{where}: lost: {lost}"
    assert outcome.completed_polls == outcome.quits_answered, (
        f"{where}: completed_polls {outcome.completed_polls}, but the client got"
        f" {outcome.quits_answered} QUIT replies +OK"
    )


def three() -> Mailbox:
    return Mailbox(PASSWORD, [message(0), message(1, 30), message(2)])


async def dialogue_length() -> int:
    mailbox = three()
    async with POP3TestServer({"alice": mailbox}) as server:
        watcher = FakeTime().watch(account_for(server), delete=True, polls=1)
        async with watcher:
            async for _ in watcher:
                pass
    assert server.sessions[0].keywords[-1] == "QUIT"
    return len(server.sessions[0].lines)


async def test_every_network_fault_loses_nothing() -> None:
    commands = await dialogue_length()
    faults = [
        fault
        for command in range(1, commands + 1)
        for fault in (
            Faults(drop_at=command),
            Faults(drop_at=command, drop_after_octets=QUIT_CUT),
            Faults(error_at=command),
        )
    ]
    for fault in faults:
        check(await watching(three(), fault, label=str(fault)))


@pytest.mark.parametrize("octets", [0, QUIT_CUT])
async def test_a_cut_before_quits_reply_is_no_completed_poll(octets: int) -> None:
    # Defect (d): QUIT was carried out, its +OK never arrived.
    outcome = await watching(
        three(), Faults(drop_at="QUIT", drop_after_octets=octets), label="QUIT's reply cut"
    )
    check(outcome)


async def test_two_messages_sharing_a_unique_id_are_both_handled_before_deletion() -> None:
    # Defect (b): the second message with the unique-id is deleted, never yielded.
    mailbox = Mailbox(PASSWORD, [message(0), message(1), message(2)], uids=["a", "dup", "dup"])
    check(await watching(mailbox, Faults(), label="two messages, one unique-id"))


async def test_a_unique_id_reused_between_polls() -> None:
    mailbox = Mailbox(PASSWORD, [message(0), message(1)], uids=["a", "b"])

    def reuse(count: int) -> None:
        if count == 1:  # after the first poll deleted "a" and "b"
            mailbox.add(message(10, 3), uid="a")

    check(await watching(mailbox, Faults(), label="unique-id 'a' reused", between=reuse))


@pytest.mark.parametrize(
    "faults",
    [
        Faults(repeat_in_uidl={1: "b"}),
        Faults(repeat_in_uidl={2: "a"}),
        Faults(repeat_in_uidl={1: "new"}),
        Faults(repeat_in_list={1: 5}),
        Faults(size_error=-5),
        Faults(size_error=5),
    ],
    ids=["uidl-1-b", "uidl-2-a", "uidl-1-new", "list-1-twice", "list-smaller", "list-larger"],
)
async def test_hostile_listings_lose_nothing(faults: Faults) -> None:
    mailbox = Mailbox(PASSWORD, [message(0), message(1)], uids=["a", "b"])

    def more(count: int) -> None:
        if count == 1:
            mailbox.add(message(5), uid="b")  # under a unique-id the server gave before

    check(await watching(mailbox, faults, label=str(faults), between=more))
