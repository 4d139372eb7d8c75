"""The sans-I/O core: every input whole, byte by byte and split at random points."""

from __future__ import annotations

import copy
from collections.abc import Sequence

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
from tests.feeding import comparable, merge_data, run, run_all_ways

RETR = Command("RETR", ("1",), ReplyShape.DATA)
LIST = Command("LIST", shape=ReplyShape.LINES)


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
    protocol.receive_data(b"-ERR [SYS/TEMP] go away\r\n")
    event = protocol.next_event()
    assert isinstance(event, Greeting)
    assert not event.status.ok
    assert event.status.code == "SYS/TEMP"
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


# -- listings ----------------------------------------------------------------------


def test_listing_lines() -> None:
    events, error = run_all_ways(
        b"+OK 2 messages\r\n1 120\r\n2 200\r\n..3 x\r\n.\r\n", [LIST], make=transaction
    )
    assert error is None
    assert [e.data for e in events if isinstance(e, Line)] == [b"1 120", b"2 200", b".3 x"]
    assert isinstance(events[-1], End)


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
    with pytest.raises(CommandStateError):
        POP3Protocol().send(Command("USER", ("u",)))


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
    with pytest.raises(CommandStateError, match="closed"):
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
    with pytest.raises(RuntimeError):
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
    st.binary(max_size=20).map(lambda b: b"." + b.replace(b"\r\n", b"\n")),
)
_LINE = st.one_of(
    st.binary(max_size=60).map(lambda b: b.replace(b"\r\n", b"\n")),
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
