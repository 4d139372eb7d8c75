"""The session rules of aiopop._state, row by row, checked against the sans-I/O protocol.

The cases are generated from the tables (every state, every verb the table
knows and one it does not, both outcomes), and a few rows are written out
by hand too, so that a wrong table fails here rather than passing itself.
"""

from __future__ import annotations

import itertools

import pytest

from aiopop._errors import CommandStateError
from aiopop._protocol import Command, POP3Protocol, Reply
from aiopop._state import (
    ALLOWED,
    LIVE_STATES,
    SESSION_CHANGING,
    TRANSITIONS,
    Pipelining,
    State,
    allowed_states,
    may_follow,
    next_state,
)

VERBS = [*sorted(ALLOWED), "XTND"]  # XTND: a verb the table does not know


def _answer(protocol: POP3Protocol, ok: bool) -> Reply:
    protocol.receive_data(b"+OK\r\n" if ok else b"-ERR no\r\n")
    event = protocol.next_event()
    assert isinstance(event, Reply)
    return event


def protocol_in(state: State, *, user_accepted: bool = False) -> POP3Protocol:
    """A protocol driven, by bytes, into ``state``."""
    protocol = POP3Protocol()
    if state is State.GREETING:
        return protocol
    protocol.receive_data(b"+OK ready\r\n" if state is not State.CLOSED else b"-ERR busy\r\n")
    assert protocol.next_event() is not None
    if state in (State.TRANSACTION, State.UPDATE):
        protocol.send(Command("USER", ("u",)))
        _answer(protocol, True)
        protocol.send(Command("PASS", ("p",), secret=True))
        _answer(protocol, True)
    if state is State.UPDATE:
        protocol.send(Command("QUIT"))
        _answer(protocol, True)
    if user_accepted:
        protocol.send(Command("USER", ("u",)))
        _answer(protocol, True)
    assert protocol.state is state
    return protocol


def sendable(protocol: POP3Protocol, verb: str) -> bool:
    try:
        protocol.send(Command(verb))
    except CommandStateError:
        return False
    return True


# -- which verb is allowed where -----------------------------------------------------------


@pytest.mark.parametrize("state", list(State))
@pytest.mark.parametrize("verb", VERBS)
def test_every_verb_is_allowed_exactly_where_the_table_says(state: State, verb: str) -> None:
    protocol = protocol_in(state, user_accepted=verb == "PASS" and state is State.AUTHORIZATION)
    expected = state in LIVE_STATES and state in allowed_states(verb)
    assert sendable(protocol, verb) is expected


@pytest.mark.parametrize(
    ("state", "verb", "allowed"),
    [
        (State.AUTHORIZATION, "USER", True),
        (State.AUTHORIZATION, "RETR", False),
        (State.AUTHORIZATION, "CAPA", True),
        (State.AUTHORIZATION, "STLS", True),
        (State.TRANSACTION, "STAT", True),
        (State.TRANSACTION, "USER", False),
        (State.TRANSACTION, "STLS", False),
        (State.TRANSACTION, "QUIT", True),
        (State.TRANSACTION, "XTND", True),
        (State.GREETING, "CAPA", False),
        (State.UPDATE, "NOOP", False),
        (State.CLOSED, "QUIT", False),
    ],
)
def test_hand_written_rows_of_the_allowed_table(state: State, verb: str, allowed: bool) -> None:
    assert (state in LIVE_STATES and state in allowed_states(verb)) is allowed
    assert sendable(protocol_in(state), verb) is allowed


def test_pass_must_follow_an_accepted_user_and_stls_is_refused_over_tls() -> None:
    assert not sendable(protocol_in(State.AUTHORIZATION), "PASS")
    protocol = protocol_in(State.AUTHORIZATION)
    protocol.send(Command("USER", ("u",)))
    _answer(protocol, False)
    assert not sendable(protocol, "PASS")  # USER refused
    protocol = protocol_in(State.AUTHORIZATION)
    protocol.tls_started()
    assert not sendable(protocol, "STLS")


# -- what each reply changes ---------------------------------------------------------------

TRANSITION_CASES = [
    (state, verb, ok)
    for state in sorted(LIVE_STATES, key=lambda s: s.value)
    for verb in VERBS
    for ok in (True, False)
    if state in allowed_states(verb)
]


@pytest.mark.parametrize(("state", "verb", "ok"), TRANSITION_CASES)
def test_every_reply_moves_the_session_where_the_table_says(
    state: State, verb: str, ok: bool
) -> None:
    protocol = protocol_in(state, user_accepted=verb == "PASS")
    protocol.send(Command(verb))
    _answer(protocol, ok)
    assert protocol.state is next_state(state, verb, ok)


def test_every_table_transition_is_among_the_generated_cases() -> None:
    generated = {(state, verb, ok) for state, verb, ok in TRANSITION_CASES}
    for state, verb, ok in TRANSITIONS:
        if state is State.GREETING:
            continue  # the greeting: checked below
        assert (state, verb, ok) in generated


@pytest.mark.parametrize(("ok", "after"), [(True, State.AUTHORIZATION), (False, State.CLOSED)])
def test_the_greeting_opens_or_ends_the_session(ok: bool, after: State) -> None:
    protocol = POP3Protocol()
    protocol.receive_data(b"+OK hi\r\n" if ok else b"-ERR go away\r\n")
    protocol.next_event()
    assert protocol.state is after is next_state(State.GREETING, "greeting", ok)


@pytest.mark.parametrize(
    ("state", "verb", "ok", "after"),
    [
        (State.AUTHORIZATION, "PASS", True, State.TRANSACTION),
        (State.AUTHORIZATION, "PASS", False, State.AUTHORIZATION),
        (State.AUTHORIZATION, "APOP", True, State.TRANSACTION),
        (State.AUTHORIZATION, "AUTH", True, State.TRANSACTION),
        (State.AUTHORIZATION, "USER", True, State.AUTHORIZATION),
        (State.AUTHORIZATION, "QUIT", True, State.CLOSED),
        (State.TRANSACTION, "QUIT", True, State.UPDATE),
        (State.TRANSACTION, "QUIT", False, State.TRANSACTION),
        (State.TRANSACTION, "DELE", True, State.TRANSACTION),
    ],
)
def test_hand_written_transitions(state: State, verb: str, ok: bool, after: State) -> None:
    assert next_state(state, verb, ok) is after
    protocol = protocol_in(state, user_accepted=verb == "PASS")
    protocol.send(Command(verb))
    _answer(protocol, ok)
    assert protocol.state is after


# -- what may be queued behind what ------------------------------------------------------


QUEUE_CASES = [
    (state, last, verb)
    for state in sorted(LIVE_STATES, key=lambda s: s.value)
    for last, verb in itertools.product(VERBS, repeat=2)
    if state in allowed_states(last)
    and state in allowed_states(verb)
    and not (verb == "PASS" and last != "USER")  # PASS needs its USER: not a queueing rule
]


@pytest.mark.parametrize(("state", "last", "verb"), QUEUE_CASES)
def test_a_command_may_be_queued_behind_another_exactly_where_may_follow_says(
    state: State, last: str, verb: str
) -> None:
    protocol = protocol_in(state, user_accepted=last == "PASS")
    protocol.send(Command(last))
    assert sendable(protocol, verb) is may_follow(last, verb)


@pytest.mark.parametrize(
    ("last", "verb", "may"),
    [
        ("RETR", "RETR", True),
        ("LIST", "UIDL", True),
        ("CAPA", "NOOP", True),
        ("USER", "CAPA", False),
        ("RETR", "QUIT", False),
        ("STLS", "CAPA", False),
        ("UIDL", "UTF8", False),
    ],
)
def test_hand_written_queueing_rows(last: str, verb: str, may: bool) -> None:
    assert may_follow(last, verb) is may
    state = State.TRANSACTION if State.TRANSACTION in allowed_states(last) else State.AUTHORIZATION
    protocol = protocol_in(state)
    protocol.send(Command(last))
    assert sendable(protocol, verb) is may


def test_session_changing_commands_are_those_whose_reply_changes_what_may_follow() -> None:
    changing = {verb for _, verb, _ in TRANSITIONS} - {"greeting"}
    assert changing <= SESSION_CHANGING
    assert {"USER", "STLS", "UTF8"} <= SESSION_CHANGING  # they change PASS, TLS, encoding


# -- when the connection pipelines ----------------------------------------------------------


@pytest.mark.parametrize("option", [None, True, False])
@pytest.mark.parametrize("offered", [None, True, False])  # None: CAPA not asked in this state
@pytest.mark.parametrize(("last", "verb"), [("RETR", "RETR"), ("RETR", "QUIT"), ("DELE", "NOOP")])
def test_may_pipeline_rows(option: bool | None, offered: bool | None, last: str, verb: str) -> None:
    rules = Pipelining(option, max_in_flight=3)
    if offered is not None:
        rules.learned(State.TRANSACTION, offered)
    known = option if option is not None else offered
    expected = bool(known) and may_follow(last, verb)
    assert rules.may_send(State.TRANSACTION, 1, last, verb) is expected
    assert rules.may_send(State.TRANSACTION, 3, last, verb) is False  # the window is full
    assert rules.may_send(State.AUTHORIZATION, 1, last, verb) is (
        bool(option) and may_follow(last, verb)
    )  # what CAPA said in one state says nothing in another
    rules.forget()  # STLS
    assert rules.known(State.TRANSACTION) is option


def test_a_probe_is_asked_only_when_unknown_and_several_wait() -> None:
    rules = Pipelining(None, max_in_flight=10)
    assert rules.should_probe(State.TRANSACTION, 2, "RETR")
    assert not rules.should_probe(State.TRANSACTION, 1, "RETR")  # one command: just send it
    assert not rules.should_probe(State.AUTHORIZATION, 2, "USER")  # session-changing
    assert not rules.should_probe(State.UPDATE, 2, "RETR")
    rules.learned(State.TRANSACTION, False)
    assert not rules.should_probe(State.TRANSACTION, 2, "RETR")
    assert not Pipelining(False, max_in_flight=10).should_probe(State.TRANSACTION, 2, "RETR")
