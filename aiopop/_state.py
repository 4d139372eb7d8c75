"""Every rule that changes or checks a POP3 session's state (RFC 1939 sections 3-6).

One place, as in h11's ``_state.py``: which command is valid in which state
(:data:`ALLOWED`), which reply moves the session where (:data:`TRANSITIONS`),
which commands may be queued or pipelined together (:func:`may_follow`), and
the few facts a session remembers between commands (:class:`Session`). The
sans-I/O protocol and the connection consult this module; neither repeats it.
"""

from __future__ import annotations

import enum

__all__ = [
    "ALLOWED",
    "LIVE_STATES",
    "SESSION_CHANGING",
    "TRANSITIONS",
    "Pipelining",
    "Session",
    "State",
    "allowed_states",
    "may_follow",
    "next_state",
]


class State(enum.Enum):
    """Where a POP3 session is."""

    GREETING = "greeting"
    """Connected, the greeting not read yet."""
    AUTHORIZATION = "authorization"
    TRANSACTION = "transaction"
    UPDATE = "update"
    """QUIT was answered in TRANSACTION: deletions are being committed."""
    CLOSED = "closed"


LIVE_STATES = frozenset({State.AUTHORIZATION, State.TRANSACTION})
"""The states in which commands may be sent (and CAPA asked)."""

_AUTH = frozenset({State.AUTHORIZATION})
_TRANS = frozenset({State.TRANSACTION})

ALLOWED: dict[str, frozenset[State]] = {
    "USER": _AUTH,
    "PASS": _AUTH,
    "APOP": _AUTH,
    "AUTH": _AUTH,
    "STLS": _AUTH,
    "UTF8": _AUTH,
    "STAT": _TRANS,
    "LIST": _TRANS,
    "RETR": _TRANS,
    "DELE": _TRANS,
    "NOOP": _TRANS,
    "RSET": _TRANS,
    "TOP": _TRANS,
    "UIDL": _TRANS,
    "CAPA": LIVE_STATES,
    "LANG": LIVE_STATES,
    "QUIT": LIVE_STATES,
}
"""The states in which each known verb may be sent."""

GREETING = "greeting"
"""The pseudo-verb of the server's greeting in :data:`TRANSITIONS`."""

TRANSITIONS: dict[tuple[State, str, bool], State] = {
    (State.GREETING, GREETING, True): State.AUTHORIZATION,
    (State.GREETING, GREETING, False): State.CLOSED,
    (State.AUTHORIZATION, "PASS", True): State.TRANSACTION,
    (State.AUTHORIZATION, "APOP", True): State.TRANSACTION,
    (State.AUTHORIZATION, "AUTH", True): State.TRANSACTION,
    (State.AUTHORIZATION, "QUIT", True): State.CLOSED,
    (State.TRANSACTION, "QUIT", True): State.UPDATE,
}
"""(state, verb, reply was ``+OK``) -> the next state; any other reply leaves the state."""

SESSION_CHANGING = frozenset({"USER", "PASS", "APOP", "AUTH", "STLS", "UTF8", "QUIT"})
"""Commands whose reply changes what may be sent next: never queued behind or before others."""


def allowed_states(verb: str) -> frozenset[State]:
    """The states in which ``verb`` may be sent; unknown verbs may be sent in either live state."""
    return ALLOWED.get(verb, LIVE_STATES)


def next_state(state: State, verb: str, ok: bool) -> State:
    """The state after the reply (``ok``: ``+OK``) to ``verb`` sent in ``state``."""
    return TRANSITIONS.get((state, verb, ok), state)


def may_follow(last: str, verb: str) -> bool:
    """Whether ``verb`` may be sent while ``last`` (the newest command in flight) awaits its reply.

    This is the whole queueing rule: the protocol refuses anything else, and
    the connection pipelines nothing else (PIPELINING, RFC 2449 section 6.6).
    """
    return last not in SESSION_CHANGING and verb not in SESSION_CHANGING


class Session:
    """What one session remembers between commands, and the checks that depend on it.

    The sans-I/O protocol owns one: it asks :meth:`check` before it queues a
    command and tells :meth:`greeted` and :meth:`replied` what came back.
    """

    __slots__ = ("state", "tls", "user_accepted", "utf8")

    def __init__(self) -> None:
        self.state = State.GREETING
        self.user_accepted = False
        """The last reply was ``+OK`` to USER: PASS may follow (RFC 1939 section 7)."""
        self.utf8 = False
        """The server accepted UTF8 (RFC 6856); it is never left."""
        self.tls = False
        """The connection runs over TLS (implicit, or after STLS)."""

    def check(self, verb: str, last_pending: str | None, *, at_eof: bool = False) -> str | None:
        """Why ``verb`` may not be sent now (a CommandStateError's message), or None.

        ``last_pending`` is the newest command still awaiting its reply.
        """
        state = self.state
        if state is State.GREETING:
            return "the greeting has not been read yet"
        if state not in LIVE_STATES or at_eof:
            return "the session is closed"
        if last_pending is not None and not may_follow(last_pending, verb):
            return f"{verb} cannot be queued behind another command"
        if state not in allowed_states(verb):
            where = "before logging in" if state is State.AUTHORIZATION else "after logging in"
            return f"{verb} is not allowed {where}"
        if verb == "PASS" and not self.user_accepted:
            return "PASS must follow a USER the server accepted"
        if verb == "STLS" and self.tls:
            return "the connection is already encrypted: STLS again is refused"
        return None

    def greeted(self, ok: bool) -> None:
        """The greeting arrived: ``+OK`` opens AUTHORIZATION, ``-ERR`` ends the session."""
        self.state = next_state(self.state, GREETING, ok)

    def replied(self, verb: str, ok: bool) -> None:
        """The status line answering ``verb`` arrived (RFC 1939 sections 4-6)."""
        self.user_accepted = verb == "USER" and ok
        if verb == "UTF8" and ok:
            self.utf8 = True
        self.state = next_state(self.state, verb, ok)

    def closed(self) -> None:
        """The connection ended, or the session failed."""
        self.state = State.CLOSED


class Pipelining:
    """When commands may go out without waiting for replies (PIPELINING, RFC 2449 section 6.6).

    ``option`` is the client's ``pipelining``: True or False decides; None
    follows what CAPA said in the current session state, which the
    connection asks (a probe) only when several commands wait at once.
    What CAPA said is forgotten after STLS (RFC 2595 section 4) and does
    not carry over to another state (RFC 2449 section 6).
    """

    __slots__ = ("learned_in", "max_in_flight", "offered", "option")

    def __init__(self, option: bool | None, max_in_flight: int) -> None:
        self.option = option
        self.max_in_flight = max_in_flight
        self.learned_in: State | None = None
        self.offered = False

    def known(self, state: State) -> bool | None:
        """Whether to pipeline in ``state``; None while CAPA has not said."""
        if self.option is not None:
            return self.option
        return self.offered if self.learned_in is state else None

    def learned(self, state: State, offered: bool) -> None:
        """A CAPA reply in ``state`` did (or did not) announce PIPELINING."""
        self.learned_in = state
        self.offered = offered

    def forget(self) -> None:
        """TLS began: what CAPA said in the clear proves nothing."""
        self.learned_in = None
        self.offered = False

    def may_send(self, state: State, in_flight: int, last: str, verb: str) -> bool:
        """Whether ``verb`` may go out now: ``in_flight`` unanswered, the newest ``last``."""
        return in_flight < self.max_in_flight and may_follow(last, verb) and bool(self.known(state))

    def should_probe(self, state: State, waiting: int, verb: str) -> bool:
        """Whether to ask CAPA before sending ``verb``, ``waiting`` commands being queued."""
        return (
            self.option is None
            and waiting > 1
            and self.learned_in is not state
            and state in LIVE_STATES
            and may_follow("CAPA", verb)
        )
