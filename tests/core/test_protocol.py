"""The sans-I/O core: every input whole, byte by byte and split at random points."""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aiopop import CommandStateError, ConnectionLostError, ProtocolError, State
from aiopop._protocol import (
    Command,
    Data,
    End,
    Event,
    Greeting,
    Line,
    POP3Protocol,
    Reply,
    ReplyShape,
)
from tests.helpers.feeding import comparable, every_split, merge_data, run, run_all_ways, splits

RETR = Command("RETR", ("1",), ReplyShape.DATA)
LIST = Command("LIST", shape=ReplyShape.LINES)
NOOP = Command("NOOP")


def greeted(greeting: bytes = b"+OK hi\r\n") -> POP3Protocol:
    """A protocol that has read ``greeting``."""
    protocol = POP3Protocol()
    protocol.receive_data(greeting)
    assert isinstance(protocol.next_event(), Greeting)
    return protocol


def exchange(protocol: POP3Protocol, command: Command, reply: bytes) -> Reply:
    """Send ``command`` and feed its single-line ``reply``."""
    protocol.send(command)
    protocol.receive_data(reply)
    event = protocol.next_event()
    assert isinstance(event, Reply)
    return event


def transaction(max_line_length: int = 8192) -> POP3Protocol:
    """A protocol that is logged in."""
    protocol = greeted()
    protocol.max_line_length = max_line_length
    for command, reply in (
        (Command("USER", ("u",)), b"+OK\r\n"),
        (Command("PASS", ("p",), secret=True), b"+OK\r\n"),
    ):
        protocol.send(command)
        protocol.receive_data(reply)
        assert isinstance(protocol.next_event(), Reply)
    assert protocol.state is State.TRANSACTION
    return protocol


def copy_of(protocol: POP3Protocol) -> POP3Protocol:
    twin = copy.deepcopy(protocol)
    assert twin.buffered == protocol.buffered
    return twin


def body_of(events: Sequence[Event]) -> bytes:
    return b"".join(e.data for e in events if isinstance(e, Data))


def failure(
    wire: bytes, commands: Sequence[Command] = (), *, make: Callable[[], POP3Protocol] = transaction
) -> Exception:
    """The error that feeding ``wire`` (after sending ``commands``) ends in."""
    protocol = make()
    for command in commands:
        protocol.send(command)
    protocol.receive_data(wire)
    try:
        while protocol.next_event() is not None:
            pass
    except (ProtocolError, ConnectionLostError) as exc:
        return exc
    raise AssertionError("no error")


# -- the greeting ------------------------------------------------------------------


def test_greeting_with_timestamp() -> None:
    events, error = run_all_ways(
        b"+OK POP3 server ready <1896.697170952@dbc.mtview.ca.us>\r\n", greeting=None
    )
    assert error is None
    [greeting] = events
    assert isinstance(greeting, Greeting)
    assert greeting.timestamp == b"<1896.697170952@dbc.mtview.ca.us>"
    assert greeting.status.raw == b"+OK POP3 server ready <1896.697170952@dbc.mtview.ca.us>"


def test_greeting_without_timestamp_offers_no_apop() -> None:
    events, error = run_all_ways(b"+OK ready <\x80@x>\r\n", greeting=None)
    assert error is None
    assert isinstance(events[0], Greeting)
    assert events[0].timestamp is None


def test_err_greeting_closes_the_session() -> None:
    protocol = POP3Protocol()
    protocol.receive_data(b"-ERR [SYS/TEMP] go away <1896.697170952@dbc.mtview.ca.us>\r\n")
    event = protocol.next_event()
    assert isinstance(event, Greeting)
    assert not event.status.ok
    assert event.status.code == "SYS/TEMP"
    assert event.timestamp is None  # a refusal offers no APOP, whatever it carries
    assert protocol.state is State.CLOSED
    with pytest.raises(CommandStateError):
        protocol.send(Command("USER", ("u",)))


def test_huge_greeting_is_refused_with_bounded_memory() -> None:
    protocol = POP3Protocol()
    fed = 0
    for _ in range(100):
        protocol.receive_data(b"+OK " + b"<" * 1024)
        fed += 1
        try:
            assert protocol.next_event() is None
        except ProtocolError:
            break
    # Refused as soon as the 8 KiB bound is passed, not after the whole 100 kB.
    assert fed == 8
    assert protocol.buffered == 0
    with pytest.raises(ProtocolError):
        protocol.next_event()


def test_greeting_line_limit_is_configurable() -> None:
    line = b"+OK " + b"x" * 9000 + b"\r\n"
    assert run_all_ways(line, greeting=None)[1] is ProtocolError
    events, error = run_all_ways(
        line, greeting=None, make=lambda: POP3Protocol(max_line_length=16384)
    )
    assert error is None
    assert isinstance(events[0], Greeting)


def test_eof_before_greeting() -> None:
    assert run_all_ways(b"+OK rea", greeting=None, eof=True)[1] is ConnectionLostError
    protocol = POP3Protocol()
    protocol.receive_data(b"+OK rea")
    protocol.receive_eof()
    with pytest.raises(ConnectionLostError) as info:
        protocol.next_event()
    assert str(info.value) == "server closed the connection in the middle of the greeting"


def test_eof_mid_reply_names_the_command_and_stays_the_error() -> None:
    protocol = transaction()
    protocol.send(RETR)
    protocol.receive_data(b"+OK\r\npart of a mess")
    assert isinstance(protocol.next_event(), Reply)
    assert isinstance(protocol.next_event(), Data)
    protocol.receive_eof()
    with pytest.raises(ConnectionLostError) as info:
        protocol.next_event()
    assert str(info.value) == "server closed the connection in the middle of the reply to RETR"
    assert protocol.state is State.CLOSED
    # The session is dead: every later call raises that same error.
    with pytest.raises(ConnectionLostError) as again:
        protocol.next_event()
    assert again.value is info.value
    with pytest.raises(ConnectionLostError) as sending:
        protocol.send(NOOP)
    assert sending.value is info.value


@pytest.mark.parametrize("ending", [b"\r\n", b"\n"])
def test_line_limit_is_exact(ending: bytes) -> None:
    def small() -> POP3Protocol:
        return POP3Protocol(max_line_length=600)

    at_limit = b"+OK " + b"x" * 596
    events, error = run_all_ways(at_limit + ending, greeting=None, make=small)
    assert error is None
    assert isinstance(events[0], Greeting)
    assert events[0].status.raw == at_limit
    assert run_all_ways(at_limit + b"y" + ending, greeting=None, make=small)[1] is ProtocolError
    listing = b"+OK\r\n" + b"1 " + b"9" * 598 + b"\r\n.\r\n"
    assert run_all_ways(listing, [LIST], make=lambda: transaction(600))[1] is None
    too_long = b"+OK\r\n" + b"1 " + b"9" * 599 + b"\r\n.\r\n"
    assert run_all_ways(too_long, [LIST], make=lambda: transaction(600))[1] is ProtocolError


@pytest.mark.parametrize("ending", [b"\r\n", b"\n"])
def test_line_limit_error(ending: bytes) -> None:
    def small() -> POP3Protocol:
        return POP3Protocol(max_line_length=600)

    error = failure(b"+OK " + b"x" * 597 + ending, make=small)
    assert type(error) is ProtocolError
    assert str(error) == "line longer than 600 octets"


def test_an_overlong_line_is_refused_at_the_first_octet_that_proves_it() -> None:
    # 600 octets and a CR may still be a line; 602 octets without an LF cannot.
    protocol = POP3Protocol(max_line_length=600)
    wire = b"+OK " + b"x" * 700
    waited = []
    error: ProtocolError | None = None
    for i in range(len(wire)):
        protocol.receive_data(wire[i : i + 1])
        try:
            waited.append(protocol.next_event())
        except ProtocolError as exc:
            error = exc
            break
    assert waited == [None] * 601
    assert str(error) == "line longer than 600 octets"
    # ...also when the server closes right there: not a mere truncation.
    protocol = POP3Protocol(max_line_length=600)
    protocol.receive_data(b"+OK " + b"x" * 598)
    protocol.receive_eof()
    with pytest.raises(ProtocolError, match="longer"):
        protocol.next_event()


def test_greeting_with_bare_lf_is_accepted() -> None:
    events, error = run_all_ways(b"+OK ready\n", greeting=None)
    assert error is None
    assert isinstance(events[0], Greeting)


# -- single-line replies -----------------------------------------------------------------


def test_single_line_reply() -> None:
    stat = Command("STAT")
    events, error = run_all_ways(b"+OK 2 320\r\n", [stat], make=transaction)
    assert error is None
    [reply] = events
    assert isinstance(reply, Reply)
    assert reply.command is stat
    assert reply.status.text == b"2 320"


def test_err_reply_carries_code_and_ends_a_multiline_command() -> None:
    events, error = run_all_ways(b"-ERR [SYS/PERM] no such message\r\n", [RETR], make=transaction)
    assert error is None
    [reply] = events
    assert isinstance(reply, Reply)
    assert not reply.status.ok
    assert reply.status.code == "SYS/PERM"


def test_long_status_line_is_a_protocol_error() -> None:
    # security.md 1: "+OK " then 100 kB with no CRLF.
    events, error = run_all_ways(b"+OK " + b"a" * 100_000, [Command("NOOP")], make=transaction)
    assert error is ProtocolError
    assert events == []


# -- multi-line messages -----------------------------------------------------------------


MESSAGE_WIRE = (
    b"+OK 120 octets\r\n"
    b"Subject: dots\r\n"
    b"\r\n"
    b"..leading dot\r\n"
    b"...two dots\r\n"
    b". space after dot\r\n"
    b"..\r\n"
    b"middle . dot\r\n"
    b".\rnot a terminator\r\n"
    b"last line\r\n"
    b".\r\n"
)
MESSAGE = (
    b"Subject: dots\r\n"
    b"\r\n"
    b".leading dot\r\n"
    b"..two dots\r\n"
    b" space after dot\r\n"
    b".\r\n"
    b"middle . dot\r\n"
    b"\rnot a terminator\r\n"
    b"last line\r\n"
)


def test_message_is_unstuffed_the_same_way_however_split() -> None:
    events, error = run_all_ways(MESSAGE_WIRE, [RETR], make=transaction)
    assert error is None
    assert isinstance(events[0], Reply)
    assert body_of(events) == MESSAGE
    assert isinstance(events[-1], End)
    assert events[-1].command is RETR


@pytest.mark.parametrize("offset", range(1, len(MESSAGE_WIRE)))
def test_message_split_at_every_offset(offset: int) -> None:
    # node-pop3#36 hung when "\r\n.\r\n" was split across reads.
    events, error = run([MESSAGE_WIRE[:offset], MESSAGE_WIRE[offset:]], [RETR], make=transaction)
    assert error is None
    assert body_of(events) == MESSAGE
    assert isinstance(events[-1], End)


def test_empty_message() -> None:
    events, error = run_all_ways(b"+OK\r\n.\r\n", [RETR], make=transaction)
    assert error is None
    assert [type(e) for e in events] == [Reply, End]


def test_only_crlf_dot_crlf_terminates() -> None:
    wire = b"+OK\r\nline\n.\nstill body\r\n.x\r\n.\r\n"
    events, error = run_all_ways(wire, [RETR], make=transaction)
    assert error is None
    assert body_of(events) == b"line\n.\nstill body\r\nx\r\n"


def test_no_per_line_limit_in_messages() -> None:
    long_line = b"x" * 100_000
    wire = b"+OK\r\n" + long_line + b"\r\n.\r\n"
    events, error = run(
        [wire[i : i + 4096] for i in range(0, len(wire), 4096)], [RETR], make=transaction
    )
    assert error is None
    assert body_of(events) == long_line + b"\r\n"


def test_message_size_cap() -> None:
    capped = Command("RETR", ("1",), ReplyShape.DATA, limit=10)
    wire = b"+OK\r\n" + b"y" * 9 + b"\r\n.\r\n"
    assert run_all_ways(wire, [capped], make=transaction)[1] is ProtocolError
    events, error = run_all_ways(b"+OK\r\n12345678\r\n.\r\n", [capped], make=transaction)
    assert error is None
    assert body_of(events) == b"12345678\r\n"


@pytest.mark.parametrize("cut", [5, 20, len(MESSAGE_WIRE) - 3, len(MESSAGE_WIRE) - 1])
def test_connection_closed_mid_message_is_an_error(cut: int) -> None:
    events, error = run_all_ways(MESSAGE_WIRE[:cut], [RETR], eof=True, make=transaction)
    assert error is ConnectionLostError
    assert not any(isinstance(e, End) for e in events)


def test_data_after_the_terminator_waits_for_the_next_command() -> None:
    protocol = transaction()
    protocol.send(RETR)
    protocol.receive_data(b"+OK\r\nbody\r\n.\r\n+OK 1 5\r\n")
    events = []
    while (event := protocol.next_event()) is not None:
        events.append(event)
        if isinstance(event, End):
            break
    assert body_of(events) == b"body\r\n"
    # security.md 15: the extra line is nobody's reply, whether the reader
    # notices it first or the next command does.
    with pytest.raises(ProtocolError, match="nobody asked for"):
        copy_of(protocol).next_event()
    with pytest.raises(ProtocolError, match="nobody asked for"):
        protocol.send(Command("STAT"))
    with pytest.raises(ProtocolError):
        protocol.next_event()


def test_unrequested_data_is_quoted_up_to_80_octets() -> None:
    protocol = transaction()
    protocol.receive_data(b"+OK " + b"z" * 96 + b"\x1b")
    with pytest.raises(ProtocolError) as info:
        protocol.next_event()
    assert str(info.value) == "server sent data nobody asked for: " + repr("+OK " + "z" * 76)


def stuffed(lines: Sequence[bytes], end: bytes = b"\r\n") -> bytes:
    """A message body as a server sends it: a dot before each line that starts with one."""
    return b"".join((b"." if line.startswith(b".") else b"") + line + end for line in lines)


def decided(wire: bytes, bare_lf: bool = False) -> tuple[bytes, bool]:
    """Reference reader: what a reader may hand out once ``wire``, a message body so far, arrived.

    Returns the unstuffed octets and whether the terminator came. Lines end at
    CRLF, or at LF after a bare-LF status line. Only what the next octets could
    still change is held back: a line that so far is ``.`` or ``.`` CR (the
    terminator, or not) and, in a CRLF message, a final CR (a line end, or not).
    """
    end = b"\n" if bare_lf else b"\r\n"
    terminators = (b".\n", b".\r\n") if bare_lf else (b".\r\n",)
    out: list[bytes] = []
    start = 0
    while (stop := wire.find(end, start)) >= 0:
        line = wire[start : stop + len(end)]
        if line in terminators:
            return b"".join(out), True
        out.append(line[1:] if line.startswith(b".") else line)
        start = stop + len(end)
    rest = wire[start:]
    if rest in (b".", b".\r"):
        rest = b""
    elif rest.startswith(b"."):
        rest = rest[1:]
    if not bare_lf and rest.endswith(b"\r"):
        rest = rest[:-1]
    out.append(rest)
    return b"".join(out), False


def assert_handed_out_when_decided(
    status: bytes, body: bytes, pieces: Sequence[bytes], bare_lf: bool = False
) -> None:
    """Feed ``pieces`` (the reply to RETR, then NOOP's); after each, check what came out.

    The message octets handed out so far must be exactly what :func:`decided`
    allows, and at the end the whole ``body``, its End and NOOP's reply.
    """
    protocol = transaction()
    protocol.send(RETR)
    protocol.send(NOOP)
    arrived = b""
    handed_out = b""
    events: list[Event] = []
    for piece in pieces:
        arrived += piece
        protocol.receive_data(piece)
        while (event := protocol.next_event()) is not None:
            events.append(event)
            if isinstance(event, Data):
                handed_out += event.data
        ended = any(isinstance(e, End) for e in events)
        assert (handed_out, ended) == decided(arrived[len(status) :], bare_lf), arrived
    assert handed_out == body
    assert [type(e) for e in events if not isinstance(e, Data)] == [Reply, End, Reply]
    assert [e.command for e in events if not isinstance(e, Greeting)] == [RETR] * (
        len(events) - 1
    ) + [NOOP]


# Densely stuffed, so that it is unstuffed in bulk; and a CR, a bare LF and an
# empty line among the dots.
DENSE_LINES = [b"." * (1 + i % 3) + b"-" * (i % 4) for i in range(40)]
DENSE_LINES[5:5] = [b"plain", b"", b"a\rb", b"\rx", b"c\nd", b".\r", b"x\r"]
DENSE_STATUS = b"+OK\r\n"
DENSE_WIRE = DENSE_STATUS + stuffed(DENSE_LINES) + b".\r\n" + b"+OK\r\n"


def test_dense_stuffing_is_handed_out_as_soon_as_decided_however_split(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bulk_calls: list[int] = []
    real_bulk = POP3Protocol._bulk

    def bulk(self: POP3Protocol, start: int, n: int) -> bytes:
        bulk_calls.append(start)
        return real_bulk(self, start, n)

    monkeypatch.setattr(POP3Protocol, "_bulk", bulk)
    body = b"".join(line + b"\r\n" for line in DENSE_LINES)
    for pieces in [*splits(DENSE_WIRE), *every_split(DENSE_WIRE)]:
        assert_handed_out_when_decided(DENSE_STATUS, body, pieces)
    assert bulk_calls  # the test covers the bulk path, not only the line-by-line one


def test_dense_messages_pipelined_in_one_chunk() -> None:
    second = Command("RETR", ("2",), ReplyShape.DATA)
    other = [b".." + bytes([0x41 + i % 26]) for i in range(30)]
    wire = b"+OK\r\n" + stuffed(DENSE_LINES) + b".\r\n+OK\r\n" + stuffed(other) + b".\r\n+OK\r\n"
    events, error = run_all_ways(wire, [RETR, second, NOOP], make=transaction)
    assert error is None
    assert [(type(e), e.command) for e in events if not isinstance(e, Greeting)] == [
        (Reply, RETR),
        (Data, RETR),
        (End, RETR),
        (Reply, second),
        (Data, second),
        (End, second),
        (Reply, NOOP),
    ]
    data = [e.data for e in events if isinstance(e, Data)]
    assert data == [
        b"".join(line + b"\r\n" for line in DENSE_LINES),
        b"".join(line + b"\r\n" for line in other),
    ]


# A lax server: the status line ends with a bare LF, and so do the lines.
LF_LINES = [
    b"Subject: bare LF",
    b"",
    b".leading dot",
    b"..two dots",
    b" space",
    b".",
    b"CRLF inside\r",
    b".\rnot a terminator",
    b".\r",
    b"last",
]
LF_STATUS = b"+OK lax\n"


@pytest.mark.parametrize("terminator", [b".\n", b".\r\n"])
def test_bare_lf_message_is_handed_out_as_soon_as_decided_however_split(
    terminator: bytes,
) -> None:
    wire = LF_STATUS + stuffed(LF_LINES, b"\n") + terminator + b"+OK\r\n"
    body = b"".join(line + b"\n" for line in LF_LINES)
    for pieces in [*splits(wire), *every_split(wire)]:
        assert_handed_out_when_decided(LF_STATUS, body, pieces, bare_lf=True)


def test_bare_lf_message_with_dense_stuffing() -> None:
    wire = LF_STATUS + stuffed(DENSE_LINES, b"\n") + b".\n" + b"+OK\r\n"
    body = b"".join(line + b"\n" for line in DENSE_LINES)
    for pieces in splits(wire):
        assert_handed_out_when_decided(LF_STATUS, body, pieces, bare_lf=True)


def test_bare_lf_message_size_cap_holds_inside_an_endless_line() -> None:
    capped = Command("RETR", ("1",), ReplyShape.DATA, limit=1000)
    protocol = transaction()
    protocol.send(capped)
    protocol.receive_data(b"+OK\n")
    assert isinstance(protocol.next_event(), Reply)
    fed = 0
    with pytest.raises(ProtocolError, match=r"^RETR reply larger than 1000 octets$"):  # noqa: PT012
        while fed < 2000:
            protocol.receive_data(b"x" * 100)
            fed += 100
            while protocol.next_event() is not None:
                pass
    assert fed == 1100  # refused as soon as the cap is passed, long before any line end


@pytest.mark.parametrize(
    ("status", "chunk"),
    [(b"+OK\r\n", b"line one\r\nline two\r\n"), (b"+OK\n", b"one line\n")],
)
def test_a_chunk_of_message_text_is_handed_on_without_a_copy(status: bytes, chunk: bytes) -> None:
    protocol = transaction()
    protocol.send(RETR)
    protocol.receive_data(status)
    assert isinstance(protocol.next_event(), Reply)
    assert protocol.next_event() is None
    protocol.receive_data(chunk)
    event = protocol.next_event()
    assert isinstance(event, Data)
    assert event.data is chunk


def no_crlf(data: bytes) -> bytes:
    """``data`` with no CRLF left in it, not even one that removing another makes."""
    while b"\r\n" in data:
        data = data.replace(b"\r\n", b"\n")
    return data


@given(
    st.booleans(),
    st.lists(
        st.one_of(
            st.binary(max_size=30),
            st.binary(max_size=12).map(lambda b: b"." + b),
            st.sampled_from([b".", b"..", b".\r", b"\r", b""]),
        ),
        max_size=60,
    ),
    st.data(),
)
def test_message_octets_are_handed_out_as_soon_as_they_are_decided(
    bare_lf: bool, lines: list[bytes], data: st.DataObject
) -> None:
    """A message with CRLF or bare-LF line ends, split at random, compared with the reference."""
    if bare_lf:
        status, end, terminator = b"+OK\n", b"\n", data.draw(st.sampled_from([b".\n", b".\r\n"]))
        lines = [line.replace(b"\n", b"") for line in lines]
    else:
        status, end, terminator = b"+OK\r\n", b"\r\n", b".\r\n"
        lines = [no_crlf(line) for line in lines]
    wire = status + stuffed(lines, end) + terminator + b"+OK\r\n"
    cuts = sorted(data.draw(st.lists(st.integers(1, len(wire) - 1), max_size=8)))
    pieces = [wire[a:b] for a, b in zip([0, *cuts], [*cuts, len(wire)], strict=True)]
    body = b"".join(line + end for line in lines)
    assert_handed_out_when_decided(status, body, [p for p in pieces if p], bare_lf)


# -- listings ----------------------------------------------------------------------


def test_listing_lines() -> None:
    events, error = run_all_ways(
        b"+OK 2 messages\r\n1 120\r\n2 200\r\n..3 x\r\n.\r\n", [LIST], make=transaction
    )
    assert error is None
    assert [e.data for e in events if isinstance(e, Line)] == [b"1 120", b"2 200", b".3 x"]
    assert all(e.command is LIST for e in events if not isinstance(e, Greeting))
    assert isinstance(events[-1], End)


def test_listing_lines_with_mixed_line_ends_however_split() -> None:
    # Lax servers end lines with a bare LF; an empty line is a line too. Every
    # way to cut this in three, e.g. a piece that starts with an empty line's LF
    # and ends with a CR, gives the same lines.
    wire = b"+OK\r\n\n1 2\r\n..x\n.\r\n"
    expected = [Reply, Line, Line, Line, End]
    for pieces in every_split(wire, 2):
        events, error = run(pieces, [LIST], make=transaction)
        assert error is None
        assert [type(e) for e in events] == expected
        assert [e.data for e in events if isinstance(e, Line)] == [b"", b"1 2", b".x"]


def test_listing_size_cap_is_exact() -> None:
    # The cap counts every line with its CRLF: here 5 + 5 octets.
    wire = b"+OK\r\n1 1\r\n2 2\r\n.\r\n"
    at_cap = Command("LIST", shape=ReplyShape.LINES, limit=10)
    events, error = run_all_ways(wire, [at_cap], make=transaction)
    assert error is None
    assert [e.data for e in events if isinstance(e, Line)] == [b"1 1", b"2 2"]
    below = Command("LIST", shape=ReplyShape.LINES, limit=9)
    assert run_all_ways(wire, [below], make=transaction)[1] is ProtocolError
    error_seen = failure(wire, [below])
    assert str(error_seen) == "LIST listing larger than 9 octets"


def test_listing_line_limit() -> None:
    wire = b"+OK\r\n1 " + b"9" * 9000 + b"\r\n.\r\n"
    assert run_all_ways(wire, [LIST], make=transaction)[1] is ProtocolError


def test_listing_closed_midway() -> None:
    assert (
        run_all_ways(b"+OK\r\n1 120\r\n2 2", [LIST], eof=True, make=transaction)[1]
        is ConnectionLostError
    )


# -- pipelining: replies matched first in, first out -----------------------------------


def test_pipelined_replies_in_order() -> None:
    stat, retr, noop = Command("STAT"), RETR, Command("NOOP")
    wire = b"+OK 1 6\r\n+OK\r\nbody\r\n.\r\n+OK\r\n"
    events, error = run_all_ways(wire, [stat, retr, noop], make=transaction)
    assert error is None
    assert [(type(e).__name__, getattr(e, "command", None)) for e in events] == [
        ("Reply", stat),
        ("Reply", retr),
        ("Data", retr),
        ("End", retr),
        ("Reply", noop),
    ]


# -- state and commands ---------------------------------------------------------------


def test_commands_before_the_greeting_are_refused() -> None:
    with pytest.raises(CommandStateError, match=r"^the greeting has not been read yet$"):
        POP3Protocol().send(Command("USER", ("u",)))


@pytest.mark.parametrize(
    ("make", "command", "message"),
    [
        (greeted, Command("STAT"), "STAT is not allowed before logging in"),
        (transaction, Command("USER", ("u",)), "USER is not allowed after logging in"),
        (
            greeted,
            Command("PASS", ("p",), secret=True),
            "PASS must follow a USER the server accepted",
        ),
        (greeted, Command("USER", ("a\nb",)), "USER: control character in 'a\\nb'"),
        (greeted, Command("USER", ("",)), "USER: empty argument"),
        (greeted, Command("US ER"), "invalid command verb 'US ER'"),
        (greeted, Command("USER", ("u" * 250,)), "USER: command longer than 255 octets"),
        (
            greeted,
            Command("USER", ("j\u00fcrgen",)),
            "USER: non-ASCII characters in 'j\u00fcrgen' need the server's UTF8 support"
            " (call utf8() first)",
        ),
        # Only a secret command's last argument is withheld from the message.
        (
            greeted,
            Command("APOP", ("m\x00rose", "c4c9334bac560ecc979e58001b3e22fb"), secret=True),
            "APOP: control character in 'm\\x00rose'",
        ),
        (
            greeted,
            Command("APOP", ("mrose", "c4c9\n334b"), secret=True),
            "APOP: control character in a secret argument",
        ),
        (
            greeted,
            Command("APOP", ("mrose", "c\u00e4"), secret=True),
            "APOP: non-ASCII characters in a secret argument need the server's UTF8 support"
            " (call utf8() first)",
        ),
    ],
)
def test_local_errors_say_what_is_wrong(
    make: Callable[[], POP3Protocol], command: Command, message: str
) -> None:
    protocol = make()
    with pytest.raises((CommandStateError, ValueError)) as info:
        protocol.send(command)
    assert str(info.value) == message
    assert protocol.pending == 0


def test_verbs_without_a_rule_may_be_sent_in_either_live_state() -> None:
    assert greeted().send(Command("AUTH", ("PLAIN",))) == b"AUTH PLAIN\r\n"
    assert greeted().send(Command("STLS")) == b"STLS\r\n"
    assert greeted().send(Command("XTND", ("x",))) == b"XTND x\r\n"
    assert transaction().send(Command("XTND", ("x",))) == b"XTND x\r\n"


def test_send_writes_a_line_encoded_earlier_as_it_is() -> None:
    protocol = transaction()
    line = protocol.encode(RETR)
    assert line == b"RETR 1\r\n"
    assert protocol.send(RETR, encoded=line) is line


@pytest.mark.parametrize("verb", ["STAT", "LIST", "RETR", "DELE", "NOOP", "RSET", "TOP", "UIDL"])
def test_transaction_commands_before_login_are_refused(verb: str) -> None:
    protocol = greeted()
    with pytest.raises(CommandStateError, match="before logging in"):
        protocol.send(Command(verb))
    assert protocol.pending == 0


@pytest.mark.parametrize("verb", ["USER", "PASS", "APOP"])
def test_authorization_commands_after_login_are_refused(verb: str) -> None:
    protocol = transaction()
    with pytest.raises(CommandStateError, match="after logging in"):
        protocol.send(Command(verb, ("x",)))


def test_pass_needs_an_accepted_user() -> None:
    protocol = greeted()
    with pytest.raises(CommandStateError, match="USER"):
        protocol.send(Command("PASS", ("p",), secret=True))
    exchange(protocol, Command("USER", ("nobody",)), b"-ERR no such user\r\n")
    with pytest.raises(CommandStateError):
        protocol.send(Command("PASS", ("p",), secret=True))


def test_failed_pass_needs_user_again_and_stays_in_authorization() -> None:
    protocol = greeted()
    exchange(protocol, Command("USER", ("u",)), b"+OK\r\n")
    exchange(protocol, Command("PASS", ("wrong",), secret=True), b"-ERR [AUTH] bad\r\n")
    assert protocol.state is State.AUTHORIZATION
    with pytest.raises(CommandStateError):
        protocol.send(Command("PASS", ("p",), secret=True))


def test_apop_moves_to_transaction_and_quit_to_update() -> None:
    protocol = greeted(b"+OK hi <1@x>\r\n")
    exchange(protocol, Command("APOP", ("u", "0" * 32), secret=True), b"+OK\r\n")
    assert protocol.state is State.TRANSACTION
    exchange(protocol, Command("QUIT"), b"+OK bye\r\n")
    assert protocol.state is State.UPDATE  # type: ignore[comparison-overlap]  # mypy narrowed it
    with pytest.raises(CommandStateError, match=r"^the session is closed$"):
        protocol.send(Command("NOOP"))


def test_quit_in_authorization_closes() -> None:
    protocol = greeted()
    exchange(protocol, Command("QUIT"), b"+OK\r\n")
    assert protocol.state is State.CLOSED


def test_locally_closed() -> None:
    protocol = transaction()
    protocol.connection_closed()
    assert protocol.state is State.CLOSED
    with pytest.raises(CommandStateError, match="closed"):
        protocol.send(Command("NOOP"))


def test_clean_eof_when_idle_closes() -> None:
    protocol = transaction()
    protocol.receive_eof()
    assert protocol.next_event() is None
    assert protocol.state is State.CLOSED
    with pytest.raises(CommandStateError):
        protocol.send(Command("NOOP"))
    with pytest.raises(RuntimeError, match=r"^receive_data\(\) after receive_eof\(\)$"):
        protocol.receive_data(b"late")


def test_session_changing_commands_are_never_queued() -> None:
    protocol = transaction()
    protocol.send(Command("STAT"))
    with pytest.raises(CommandStateError, match="queued"):
        protocol.send(Command("QUIT"))
    protocol.receive_data(b"+OK 0 0\r\n")
    protocol.next_event()
    protocol.send(Command("QUIT"))
    with pytest.raises(CommandStateError, match="queued"):
        protocol.send(Command("NOOP"))


@pytest.mark.parametrize(
    "arg",
    ["a\r\nDELE 1", "a\nb", "a\rb", "nul\x00", "tab\t", "del\x7f", "c1\x85", "esc\x1b[0m", ""],
)
def test_injection_is_refused_before_anything_is_queued(arg: str) -> None:
    # security.md 6: poplib gh-94019 / gh-143923.
    protocol = greeted()
    with pytest.raises(ValueError, match=r"control character|empty argument"):
        protocol.send(Command("USER", (arg,)))
    assert protocol.pending == 0


def test_secret_argument_never_in_error_or_repr() -> None:
    protocol = greeted()
    exchange(protocol, Command("USER", ("u",)), b"+OK\r\n")
    command = Command("PASS", ("hunter2\n",), secret=True)
    with pytest.raises(ValueError, match="control character") as info:
        protocol.send(command)
    assert "hunter2" not in str(info.value)
    assert "hunter2" not in repr(command)
    assert command.loggable() == "PASS <redacted>"
    apop = Command("APOP", ("mrose", "c4c9334bac560ecc979e58001b3e22fb"), secret=True)
    assert apop.loggable() == "APOP mrose <redacted>"
    assert Command("RETR", ("1",)).loggable() == "RETR 1"


def test_command_length_limit_and_encoding() -> None:
    protocol = greeted()
    # 255 octets including CRLF is the most RFC 2449 allows, and allowed.
    longest = Command("USER", ("u" * 248,))
    assert len(protocol.encode(longest)) == 255
    with pytest.raises(ValueError, match="255"):
        protocol.send(Command("USER", ("u" * 250,)))
    with pytest.raises(ValueError, match="UTF8"):
        protocol.send(Command("USER", ("j\u00fcrgen",)))
    with pytest.raises(ValueError, match="verb"):
        protocol.send(Command("US ER"))
    assert protocol.send(Command("UTF8")) == b"UTF8\r\n"
    protocol.receive_data(b"+OK UTF8 enabled\r\n")
    protocol.next_event()
    assert protocol.utf8
    assert protocol.send(Command("USER", ("j\u00fcrgen",))) == "USER j\u00fcrgen\r\n".encode()


def test_a_dead_protocol_keeps_raising() -> None:
    protocol = transaction()
    protocol.send(Command("STAT"))
    protocol.receive_data(b"garbage\r\n")
    with pytest.raises(ProtocolError):
        protocol.next_event()
    with pytest.raises(ProtocolError):
        protocol.send(Command("NOOP"))
    assert protocol.state is State.CLOSED


# -- anything else is a ProtocolError ------------------------------------------------


@settings(max_examples=300)
@given(
    st.lists(
        st.one_of(
            st.binary(max_size=40),
            st.sampled_from(
                [b"+OK", b"-ERR", b"\r\n", b".", b"\r\n.\r\n", b"..", b"\r", b"\n", b" "]
            ),
        ),
        max_size=30,
    ),
    st.sampled_from(["STAT", "RETR", "LIST", "UIDL1"]),
    st.booleans(),
)
def test_any_input_parses_or_raises_a_remote_error(
    pieces: list[bytes], which: str, eof: bool
) -> None:
    command = {
        "STAT": Command("STAT"),
        "RETR": RETR,
        "LIST": LIST,
        "UIDL1": Command("UIDL", ("1",)),
    }[which]

    def small() -> POP3Protocol:
        protocol = transaction()
        protocol.max_line_length = 64
        return protocol

    events, error = run(pieces, [command], eof=eof, make=small)
    assert error in (None, ProtocolError, ConnectionLostError)
    # Splitting differently never changes the outcome.
    whole = run([b"".join(pieces)], [command], eof=eof, make=small)
    assert comparable(whole) == comparable((events, error))
    assert merge_data(events) == events


# Lines as real mail has them, and the ones that need stuffing: ".", "..", ".x".
_DOTTED = st.one_of(
    st.sampled_from([b".", b"..", b"...", b".\r"]),
    st.binary(max_size=20).map(lambda b: no_crlf(b"." + b)),
)
_LINE = st.one_of(
    st.binary(max_size=60).map(no_crlf),
    st.sampled_from([b"", b"\r", b"\n", b"\r\r"]),
    _DOTTED,
)


@given(st.lists(_LINE, max_size=40), _DOTTED, st.integers(0, 40), st.data())
def test_stuffing_round_trip(
    lines: list[bytes], dotted: bytes, where: int, data: st.DataObject
) -> None:
    """Whatever a server stuffs correctly comes back byte for byte, however it is split.

    Every example has at least one line that needs stuffing (``dotted``).
    """
    lines.insert(where, dotted)
    body = b"".join(line + b"\r\n" for line in lines)
    stuffed = b"".join((b"." if line.startswith(b".") else b"") + line + b"\r\n" for line in lines)
    assert len(stuffed) > len(body)
    wire = b"+OK\r\n" + stuffed + b".\r\n"
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=6)))
    pieces = [wire[a:b] for a, b in zip([0, *cuts], [*cuts, len(wire)], strict=True)]
    events, error = run(pieces, [RETR], make=transaction)
    assert error is None
    assert body_of(events) == body
    assert isinstance(events[-1], End)
