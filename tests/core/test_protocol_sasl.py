"""The sans-I/O core during AUTH (RFC 5034) and around STLS (RFC 2595)."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aiopop import CommandStateError, ConnectionLostError, ProtocolError, State
from aiopop._protocol import Challenge, Command, End, Greeting, POP3Protocol, Reply, ReplyShape
from tests.helpers.feeding import run, run_all_ways

AUTH = Command("AUTH", ("SCRAM-SHA-256",), ReplyShape.SASL)


def greeted() -> POP3Protocol:
    protocol = POP3Protocol()
    protocol.receive_data(b"+OK ready\r\n")
    assert isinstance(protocol.next_event(), Greeting)
    return protocol


def challenge_of(protocol: POP3Protocol, wire: bytes) -> Challenge:
    protocol.receive_data(wire)
    event = protocol.next_event()
    assert isinstance(event, Challenge)
    return event


@pytest.mark.parametrize(
    ("line", "data"),
    [
        (b"+ \r\n", b""),
        (b"+\r\n", b""),
        (b"+ cj1meWtvK2QybGJiRmdPTlJ2OXFreGRhd0w=\r\n", b"r=fyko+d2lbbFgONRv9qkxdawL"),
        (b"+ " + base64.b64encode(b"\0\xff" * 100) + b"\r\n", b"\0\xff" * 100),
        (b"+ not base64!\r\n", None),
        (b"+ =AAA\r\n", None),
        (b"+ AAA=BBB\r\n", None),
        (b"+ QQ\r\n", None),  # missing padding
        (b"+ QUJD\n", b"ABC"),  # a bare LF ends a status line too
    ],
)
def test_challenges(line: bytes, data: bytes | None) -> None:
    events, error = run_all_ways(line, [AUTH], greeting=b"+OK ready\r\n")
    assert error is None
    assert events == [Challenge(AUTH, data)]


def test_a_whole_exchange() -> None:
    protocol = greeted()
    assert protocol.send(AUTH) == b"AUTH SCRAM-SHA-256\r\n"
    assert challenge_of(protocol, b"+ \r\n").data == b""
    assert protocol.send_response(b"n,,n=user,r=abc") == b"biwsbj11c2VyLHI9YWJj\r\n"
    assert challenge_of(protocol, b"+ dj1zaWc=\r\n").data == b"v=sig"
    assert protocol.send_response(b"") == b"\r\n"
    protocol.receive_data(b"+OK logged in\r\n")
    reply = protocol.next_event()
    assert isinstance(reply, Reply)
    assert reply.status.ok
    assert protocol.state is State.TRANSACTION
    assert protocol.pending == 0
    with pytest.raises(CommandStateError, match=r"before logging in|after logging in"):
        protocol.send(AUTH)


def test_cancelling_and_a_refusal_keep_authorization() -> None:
    protocol = greeted()
    protocol.send(AUTH)
    assert challenge_of(protocol, b"+ !!\r\n").data is None
    assert protocol.send_response(None) == b"*\r\n"
    protocol.receive_data(b"-ERR [AUTH] cancelled\r\n")
    reply = protocol.next_event()
    assert isinstance(reply, Reply)
    assert reply.status.code == "AUTH"
    assert protocol.state is State.AUTHORIZATION
    protocol.send(Command("USER", ("u",)))  # other logins may follow


@pytest.mark.parametrize(
    ("line", "data"),
    [
        (b"+  \r\n", None),  # a space is not base64
        (b"+ QUJD \r\n", None),
        (b"+ Q UJD\r\n", None),
        (b"+ =\r\n", None),  # padding alone
        (b"+ QQ=\r\n", None),  # padding cut short
        (b"+ QUJDRA\r\n", None),  # a quantum cut short, unpadded
        (b"+ QQ==\r\n", b"A"),
        (b"+ QUI=\r\n", b"AB"),
        (b"+QUJD\r\n", None),  # not a continuation line at all: no space after "+"
    ],
)
def test_the_edges_of_a_challenge(line: bytes, data: bytes | None) -> None:
    events, error = run_all_ways(line, [AUTH])
    if line.startswith(b"+ "):
        assert error is None
        assert events == [Challenge(AUTH, data)]
    else:
        assert error is ProtocolError
        assert events == []


def test_after_a_cancel_only_err_may_come() -> None:
    """RFC 5034 section 4: the server answers ``*`` with -ERR, never a challenge or +OK."""
    for wire, message in [
        (b"+ \r\n", "a SASL challenge after the client cancelled"),
        (b"+\r\n", "a SASL challenge after the client cancelled"),
        (b"+OK welcome\r\n", "accepted an AUTH exchange the client cancelled"),
    ]:
        protocol = greeted()
        protocol.send(AUTH)
        challenge_of(protocol, b"+ \r\n")
        assert protocol.send_response(None) == b"*\r\n"
        protocol.receive_data(wire)
        with pytest.raises(ProtocolError, match=message):
            protocol.next_event()
        assert protocol.state is State.CLOSED


def test_an_exchange_after_a_cancelled_one_starts_afresh() -> None:
    protocol = greeted()
    protocol.send(AUTH)
    challenge_of(protocol, b"+ \r\n")
    protocol.send_response(None)
    protocol.receive_data(b"-ERR cancelled\r\n")
    assert isinstance(protocol.next_event(), Reply)
    # The cancel belonged to the first exchange only.
    protocol.send(AUTH)
    assert challenge_of(protocol, b"+ \r\n").data == b""
    assert protocol.send_response(b"abc") == b"YWJj\r\n"
    protocol.receive_data(b"+OK in\r\n")
    reply = protocol.next_event()
    assert isinstance(reply, Reply)
    assert reply.status.ok
    assert protocol.state is State.TRANSACTION


def test_a_response_goes_out_as_one_base64_line() -> None:
    protocol = greeted()
    protocol.send(AUTH)
    challenge_of(protocol, b"+\r\n")
    response = bytes(range(256)) * 2
    line = protocol.send_response(response)
    assert line == base64.b64encode(response) + b"\r\n"
    assert line.count(b"\n") == 1  # not wrapped, as base64.encodebytes would
    assert protocol.pending == 1
    with pytest.raises(CommandStateError, match="no SASL challenge"):
        protocol.send_response(b"again")  # one response per challenge


def test_a_dead_session_refuses_responses_with_its_error() -> None:
    protocol = greeted()
    protocol.send(AUTH)
    challenge_of(protocol, b"+ \r\n")
    protocol.receive_eof()
    with pytest.raises(ConnectionLostError):
        protocol.next_event()
    with pytest.raises(ConnectionLostError):
        protocol.send_response(b"late")


def test_the_server_must_wait_for_the_response() -> None:
    protocol = greeted()
    protocol.send(AUTH)
    challenge_of(protocol, b"+ \r\n")
    protocol.receive_data(b"+OK too early\r\n")
    with pytest.raises(ProtocolError, match="nobody asked for"):
        protocol.next_event()


def test_responses_only_answer_challenges() -> None:
    protocol = greeted()
    with pytest.raises(CommandStateError, match="no SASL challenge"):
        protocol.send_response(b"x")
    protocol.send(AUTH)
    with pytest.raises(CommandStateError, match="no SASL challenge"):
        protocol.send_response(b"x")  # the challenge has not arrived yet


def test_plus_ok_is_not_a_challenge_and_other_commands_get_no_challenges() -> None:
    protocol = greeted()
    protocol.send(AUTH)
    protocol.receive_data(b"+OK\r\n")
    assert isinstance(protocol.next_event(), Reply)
    protocol = greeted()
    protocol.send(Command("CAPA", shape=ReplyShape.LINES))
    protocol.receive_data(b"+ \r\n")
    with pytest.raises(ProtocolError, match="expected \\+OK or -ERR"):
        protocol.next_event()


def test_auth_is_never_queued_with_others() -> None:
    protocol = greeted()
    protocol.send(Command("CAPA", shape=ReplyShape.LINES))
    with pytest.raises(CommandStateError, match="cannot be queued"):
        protocol.send(AUTH)


def test_a_challenge_line_is_bounded() -> None:
    def small() -> POP3Protocol:
        return POP3Protocol(max_line_length=600)

    wire = b"+ " + b"A" * 1000
    assert run_all_ways(wire, [AUTH], make=small)[1] is ProtocolError


@pytest.mark.parametrize("wire", [b"", b"+ QUJ", b"+ QUJD\r\n", b"+OK lo"])
def test_the_server_closing_mid_exchange(wire: bytes) -> None:
    # Closing before +OK or -ERR ends AUTH is a lost connection, even while
    # the server waits for our response.
    events, error = run_all_ways(wire, [AUTH], eof=True) if wire else run([], [AUTH], eof=True)
    assert error is ConnectionLostError
    assert all(isinstance(event, Challenge) for event in events)


def test_stls_and_tls_started() -> None:
    protocol = greeted()
    assert not protocol.tls
    protocol.send(Command("STLS"))
    protocol.receive_data(b"+OK Begin TLS\r\n")
    assert isinstance(protocol.next_event(), Reply)
    protocol.tls_started()
    assert protocol.tls
    with pytest.raises(CommandStateError, match="already encrypted"):
        protocol.send(Command("STLS"))


def test_data_after_stls_ok_is_an_injection() -> None:
    protocol = greeted()
    protocol.send(Command("STLS"))
    protocol.receive_data(b"+OK Begin TLS\r\n-ERR injected\r\n")
    assert isinstance(protocol.next_event(), Reply)
    with pytest.raises(ProtocolError, match="after STLS"):
        protocol.tls_started()
    assert protocol.state is State.CLOSED
    with pytest.raises(ProtocolError):
        protocol.send(Command("CAPA", shape=ReplyShape.LINES))


def test_lang_is_allowed_in_both_states() -> None:
    protocol = greeted()
    protocol.send(Command("LANG", ("fr",)))
    protocol.receive_data(b"+OK Bonjour\r\n")
    assert isinstance(protocol.next_event(), Reply)
    protocol.send(Command("LANG", shape=ReplyShape.LINES))
    protocol.receive_data(b"+OK\r\nen English\r\n.\r\n")
    while not isinstance(protocol.next_event(), End):
        pass


@given(
    st.lists(
        st.one_of(
            st.binary(max_size=30),
            st.sampled_from([b"+ ", b"+", b"+OK", b"-ERR", b"\r\n", b"=", b"QUJD", b"\n"]),
        ),
        max_size=20,
    ),
    st.booleans(),
)
def test_anything_during_auth_parses_or_raises_a_remote_error(
    pieces: list[bytes], eof: bool
) -> None:
    def small() -> POP3Protocol:
        protocol = POP3Protocol(max_line_length=64)
        protocol.receive_data(b"+OK ready\r\n")
        protocol.next_event()
        return protocol

    events, error = run(pieces, [AUTH], eof=eof, greeting=None, make=small)
    assert error in (None, ProtocolError, ConnectionLostError)
    whole = run([b"".join(pieces)], [AUTH], eof=eof, greeting=None, make=small)
    assert whole[1] == error
    assert [type(e) for e in whole[0]] == [type(e) for e in events]
