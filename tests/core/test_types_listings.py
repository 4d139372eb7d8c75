"""LIST and UIDL listings: one entry per message number, stored compactly.

A listing that names a message number twice is a malformed reply
(../shared/security.md rule 19): ``1 NEW`` then ``1 OLD`` would let a fetcher
take a message it never saved for one it did, and delete it. The core is
fed the reply every way it can be split; the client is run against a
scripted server, with what reached the wire checked. The listing types
behave as the lists of entries they replace, in a fraction of the memory.
"""

from __future__ import annotations

import pickle
import tracemalloc
from array import array

import pytest

from aiopop import ListEntry, MalformedReplyError, ProtocolError, UidEntry
from aiopop._parse import (
    SizeListingParser,
    UidListingParser,
    parse_list_listing,
    parse_uid_listing,
)
from aiopop._protocol import Command, End, Line, POP3Protocol, Reply, ReplyShape
from aiopop._types import SizeListing, UidListing
from aiopop.testing import Expect, Send, Step
from tests.helpers.feeding import run_all_ways
from tests.helpers.scripted import logged_in

UIDL = Command("UIDL", shape=ReplyShape.LINES)
LIST = Command("LIST", shape=ReplyShape.LINES)


def transaction() -> POP3Protocol:
    """A protocol past its greeting and login: LIST and UIDL may be sent."""
    protocol = POP3Protocol()
    protocol.receive_data(b"+OK ready\r\n")
    assert protocol.next_event() is not None
    for command, reply in (
        (Command("USER", ("u",)), b"+OK\r\n"),
        (Command("PASS", ("p",)), b"+OK\r\n"),
    ):
        protocol.send(command)
        protocol.receive_data(reply)
        assert isinstance(protocol.next_event(), Reply)
    return protocol


def parse_reply(wire: bytes, command: Command) -> SizeListing | UidListing:
    """Feed ``wire`` to the core every way it can be split; parse its lines as the client does."""
    events, error = run_all_ways(wire, [command], make=transaction)
    assert error is None
    assert isinstance(events[0], Reply)
    assert events[0].status.ok
    assert isinstance(events[-1], End)
    lines = [event.data for event in events if isinstance(event, Line)]
    if command.verb == "UIDL":
        return parse_uid_listing(lines)
    return parse_list_listing(lines)


# -- a number listed twice ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "wire", "number"),
    [
        (UIDL, b"+OK\r\n1 NEW\r\n1 OLD\r\n.\r\n", 1),
        (UIDL, b"+OK\r\n1 a\r\n2 b\r\n3 c\r\n2 d\r\n.\r\n", 2),
        (UIDL, b"+OK\r\n3 a\r\n1 b\r\n2 c\r\n3 d\r\n.\r\n", 3),  # out of order, then again
        (UIDL, b"+OK\r\n7 a\r\n7 a\r\n.\r\n", 7),  # the same line twice
        (LIST, b"+OK\r\n1 100\r\n2 200\r\n1 300\r\n.\r\n", 1),
        (LIST, b"+OK\r\n5 100\r\n5 100\r\n.\r\n", 5),
    ],
)
def test_a_listing_that_names_a_number_twice_is_malformed(
    command: Command, wire: bytes, number: int
) -> None:
    with pytest.raises(MalformedReplyError, match=rf"message {number} is listed twice") as info:
        parse_reply(wire, command)
    assert isinstance(info.value, ProtocolError)
    assert command.verb in str(info.value)


def test_the_parsers_reject_the_repeat_at_the_line_that_repeats() -> None:
    uids = UidListingParser()
    uids.add(b"1 NEW")
    with pytest.raises(MalformedReplyError, match=r"^UIDL: message 1 is listed twice, in '1 OLD'$"):
        uids.add(b"1 OLD")
    sizes = SizeListingParser()
    sizes.add(b"2 20")
    with pytest.raises(MalformedReplyError, match=r"^LIST: message 2 is listed twice, in '2 30'$"):
        sizes.add(b"2 30")


def test_numbers_out_of_order_are_accepted_when_none_repeats() -> None:
    listing = parse_reply(b"+OK\r\n3 c\r\n1 a\r\n2 b\r\n.\r\n", UIDL)
    assert listing == [UidEntry(3, "c"), UidEntry(1, "a"), UidEntry(2, "b")]
    assert isinstance(listing, UidListing)
    assert listing.by_number()[1] == "a"
    assert listing.by_number()[3] == "c"
    assert 4 not in listing.by_number()


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (b"18446744073709551616 x", "message number 18446744073709551616 out of range"),
        (b"18446744073709551615 x", None),
    ],
)
def test_numbers_beyond_64_bits_are_malformed_in_a_listing(
    line: bytes, message: str | None
) -> None:
    parser = UidListingParser()
    if message is None:
        parser.add(line)
        assert parser.listing[0].number == 2**64 - 1
    else:
        with pytest.raises(MalformedReplyError, match=message):
            parser.add(line)


def test_a_size_beyond_64_bits_is_malformed() -> None:
    parser = SizeListingParser()
    with pytest.raises(MalformedReplyError, match="size 18446744073709551616 out of range"):
        parser.add(b"1 18446744073709551616")
    assert len(parser.listing) == 0
    parser.add(b"1 18446744073709551615")
    assert parser.listing == [ListEntry(1, 2**64 - 1)]


async def test_uidl_naming_a_number_twice_raises_and_the_session_goes_on() -> None:
    steps: list[Step] = [
        Expect(b"UIDL"),
        Send(b"+OK\r\n1 NEW\r\n2 x\r\n1 OLD\r\n.\r\n"),
        Expect(b"NOOP"),
        Send(b"+OK\r\n"),
    ]
    async with logged_in(steps) as (server, client):
        with pytest.raises(MalformedReplyError, match="UIDL: message 1 is listed twice"):
            await client.uidl()
        assert await client.noop() == b"+OK"  # the whole reply was read: still in step
    assert server.received[2:] == [b"UIDL", b"NOOP"]
    assert server.mismatches == []


async def test_list_naming_a_number_twice_raises() -> None:
    steps: list[Step] = [
        Expect(b"LIST"),
        Send(b"+OK 2 messages\r\n1 10\r\n1 20\r\n.\r\n"),
        Expect(b"QUIT"),
    ]
    async with logged_in(steps) as (server, client):
        with pytest.raises(MalformedReplyError, match="LIST: message 1 is listed twice"):
            await client.list()
        assert client.is_connected
    assert server.received[2:3] == [b"LIST"]


async def test_a_bad_line_after_a_repeat_still_reports_the_first_problem() -> None:
    steps: list[Step] = [Expect(b"UIDL"), Send(b"+OK\r\n1 a\r\n1 b\r\nbad\r\n.\r\n")]
    async with logged_in(steps) as (_, client):
        with pytest.raises(MalformedReplyError, match="message 1 is listed twice"):
            await client.uidl()


async def test_the_client_returns_compact_listings() -> None:
    steps: list[Step] = [
        Expect(b"UIDL"),
        Send(b"+OK\r\n1 aa\r\n2 bb\r\n.\r\n"),
        Expect(b"LIST"),
        Send(b"+OK\r\n1 10\r\n2 20\r\n.\r\n"),
    ]
    async with logged_in(steps, pipelining=False) as (server, client):
        uids = await client.uidl()
        sizes = await client.list()
    assert isinstance(uids, UidListing)
    assert isinstance(sizes, SizeListing)
    assert uids == [UidEntry(1, "aa"), UidEntry(2, "bb")]
    assert sizes == [ListEntry(1, 10), ListEntry(2, 20)]
    assert server.received[2:] == [b"UIDL", b"LIST"]


# -- the listing types behave as lists of entries ----------------------------------------


def test_a_uid_listing_is_a_sequence_of_entries() -> None:
    entries = [UidEntry(1, "a"), UidEntry(2, "bb"), UidEntry(4, "a"), UidEntry(9, "ccc")]
    listing = UidListing(entries)
    assert len(listing) == 4
    assert list(listing) == entries
    assert listing == entries
    assert entries == listing
    assert listing != entries[:3]
    assert listing != [*entries[:3], UidEntry(9, "cc")]
    assert listing != tuple(entries)
    assert listing == UidListing(entries)
    assert listing != UidListing(entries[1:])
    assert listing != SizeListing([(1, 1), (2, 2), (4, 4), (9, 9)])
    assert listing[0] == UidEntry(1, "a")
    assert listing[1] == UidEntry(2, "bb")
    assert listing[-1] == UidEntry(9, "ccc")
    assert listing[-4] == UidEntry(1, "a")
    for bad in (4, -5):
        with pytest.raises(IndexError, match="UidListing index out of range"):
            listing[bad]
    assert listing[1:3] == entries[1:3]
    assert isinstance(listing[1:3], UidListing)
    assert listing[::-1] == entries[::-1]
    assert listing[::2] == entries[::2]
    assert listing[5:] == []
    assert UidEntry(4, "a") in listing
    assert (4, "a") in listing
    assert UidEntry(4, "b") not in listing
    assert UidEntry(3, "a") not in listing
    assert "a" not in listing  # type: ignore[comparison-overlap]
    assert (1, "a", 3) not in listing  # type: ignore[comparison-overlap]
    assert listing.index(UidEntry(4, "a")) == 2
    assert list(reversed(listing)) == entries[::-1]
    assert listing.numbers() == array("Q", [1, 2, 4, 9])
    assert pickle.loads(pickle.dumps(listing)) == entries
    assert type(pickle.loads(pickle.dumps(listing))) is UidListing
    with pytest.raises(TypeError):
        hash(listing)


def test_a_uid_listing_looks_up_by_number_and_by_uid() -> None:
    listing = UidListing([(1, "a"), (2, "bb"), (4, "a"), (9, "ccc")])
    by_number = listing.by_number()
    assert dict(by_number) == {1: "a", 2: "bb", 4: "a", 9: "ccc"}
    assert by_number[4] == "a"
    assert len(by_number) == 4
    for missing in (0, 3, 10, "1", 1.5):
        assert missing not in by_number
    with pytest.raises(KeyError):
        by_number[3]
    by_uid = listing.by_uid()
    assert dict(by_uid) == {"a": (1, 4), "bb": (2,), "ccc": (9,)}
    assert list(by_uid) == ["a", "bb", "ccc"]
    assert len(by_uid) == 3
    for missing in ("b", "é", "A"):
        assert missing not in by_uid
    with pytest.raises(KeyError):
        by_uid["cc"]
    assert "4 messages" in repr(by_number)
    assert "3 unique-ids" in repr(by_uid)


def test_a_size_listing_is_a_sequence_of_entries() -> None:
    entries = [ListEntry(1, 100), ListEntry(3, 0), ListEntry(7, 2**40)]
    listing = SizeListing(entries)
    assert listing == entries
    assert list(listing) == entries
    assert listing[-1] == ListEntry(7, 2**40)
    assert listing[1:] == entries[1:]
    assert listing.numbers() == array("Q", [1, 3, 7])
    assert listing.sizes() == array("Q", [100, 0, 2**40])
    assert dict(listing.by_number()) == {1: 100, 3: 0, 7: 2**40}
    assert listing.by_number()[3] == 0
    assert sum(listing.sizes()) == 100 + 2**40
    assert repr(listing) == (
        "SizeListing([ListEntry(number=1, size=100), ListEntry(number=3, size=0), "
        "ListEntry(number=7, size=1099511627776)])"
    )
    assert pickle.loads(pickle.dumps(listing)) == listing


def test_what_is_returned_is_a_copy() -> None:
    listing = SizeListing([(1, 10)])
    listing.numbers().append(2)
    listing.sizes()[0] = 99
    assert listing == [ListEntry(1, 10)]


def test_a_long_listing_has_a_short_repr() -> None:
    listing = UidListing((n, f"u{n}") for n in range(1, 12))
    assert repr(listing) == (
        "UidListing([UidEntry(number=1, uid='u1'), UidEntry(number=2, uid='u2'), "
        "UidEntry(number=3, uid='u3'), ...], 11 entries)"
    )
    assert repr(listing[:10]).count("UidEntry") == 10
    assert repr(UidListing()) == "UidListing([])"


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ([(1, "a"), (1, "b")], "message 1 is listed twice"),
        ([(2, "a"), (1, "b"), (2, "c")], "message 2 is listed twice"),
        ([(0, "a")], "message number 0 out of range"),
        ([(2**64, "a")], "out of range"),
        ([(1, "")], "invalid unique-id"),
        ([(1, "a b")], "invalid unique-id"),
        ([(1, "a\x7f")], "invalid unique-id"),
    ],
)
def test_a_uid_listing_refuses_what_no_server_may_send(
    entries: list[tuple[int, str]], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        UidListing(entries)


def test_a_uid_listing_refuses_non_ascii() -> None:
    with pytest.raises(ValueError, match="ascii"):
        UidListing([(1, "é")])


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ([(1, -1)], "size -1 out of range"),
        ([(1, 2**64)], "size 18446744073709551616 out of range"),
        ([(2, 1), (2, 1)], "message 2 is listed twice"),
        ([(0, 1)], "message number 0 out of range"),
    ],
)
def test_a_size_listing_refuses_what_no_server_may_send(
    entries: list[tuple[int, int]], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        SizeListing(entries)


def test_a_refused_entry_leaves_the_listing_as_it_was() -> None:
    listing = SizeListing([(1, 10)])
    with pytest.raises(ValueError, match="out of range"):
        listing._append(2, -1)
    with pytest.raises(ValueError, match="listed twice"):
        listing._append(1, 5)
    assert listing == [ListEntry(1, 10)]
    assert listing.sizes() == array("Q", [10])


# -- memory --------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_large_listing_costs_a_small_multiple_of_its_wire_size() -> None:
    """800,000 UIDL lines (12.9 MiB) parsed and held in under 8x their size (was 13.8x).

    Measured with tracemalloc, through the sans-I/O core as the connection
    drives it: the reply arrives in 64 KiB pieces, each line goes to the
    parser as it is framed, and the listing is still held at the end.
    """
    count = 800_000
    wire = b"".join(b"%d %08x\r\n" % (n, n * 7919 % 2**32) for n in range(1, count + 1))
    pieces = [b"+OK\r\n", *(wire[i : i + 65536] for i in range(0, len(wire), 65536)), b".\r\n"]
    size = len(wire)
    del wire
    assert 12.5 * 2**20 < size < 13.5 * 2**20
    protocol = transaction()
    protocol.send(Command("UIDL", shape=ReplyShape.LINES, limit=16 * 2**20))
    tracemalloc.start()
    try:
        parser = UidListingParser()
        ended = False
        for piece in pieces:
            protocol.receive_data(piece)
            while (event := protocol.next_event()) is not None:
                if isinstance(event, Line):
                    parser.add(event.data)
                ended = isinstance(event, End)
        listing = parser.listing
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert ended
    assert len(listing) == count
    assert listing[-1] == UidEntry(count, f"{count * 7919 % 2**32:08x}")
    assert listing.by_number()[400_000] == f"{400_000 * 7919 % 2**32:08x}"
    assert peak < 8 * size, f"peak {peak / size:.1f}x the wire size"


_LONG = b"1 " + b"w" * 100


def _cut(text: str) -> str:
    return text[:80] + "..."


@pytest.mark.parametrize(
    ("parser", "lines", "message"),
    [
        (SizeListingParser, [b"1"], "malformed LIST line '1'"),
        (SizeListingParser, [b"one 120"], "bad LIST in 'one 120'"),
        (SizeListingParser, [b"0 120"], "message number 0 in '0 120'"),
        (SizeListingParser, [b"0 " + b"9" * 100], "bad LIST in '" + _cut("0 " + "9" * 100) + "'"),
        (
            SizeListingParser,
            [b"1 5", b"1 " + b"7" * 19 + b" " + b"x" * 100],
            "LIST: message 1 is listed twice, in '" + _cut("1 " + "7" * 19 + " " + "x" * 100) + "'",
        ),
        (UidListingParser, [b"1"], "malformed UIDL line '1'"),
        (UidListingParser, [b"0 abc"], "bad UIDL line '0 abc'"),
        (
            UidListingParser,
            [b"1 a", _LONG],
            "UIDL: message 1 is listed twice, in '" + _cut("1 " + "w" * 100) + "'",
        ),
    ],
)
def test_what_a_bad_listing_line_is_called(
    parser: type[SizeListingParser | UidListingParser], lines: list[bytes], message: str
) -> None:
    reader = parser()
    *before, last = lines
    for line in before:
        reader.add(line)
    with pytest.raises(MalformedReplyError) as info:
        reader.add(last)
    assert str(info.value) == message
