"""The POP3 session states (RFC 1939 section 3) and which command is valid where."""

from __future__ import annotations

import enum

__all__ = ["SESSION_CHANGING", "State", "allowed_states"]


class State(enum.Enum):
    """Where a POP3 session is."""

    GREETING = "greeting"
    """Connected, the greeting not read yet."""
    AUTHORIZATION = "authorization"
    TRANSACTION = "transaction"
    UPDATE = "update"
    """QUIT was answered in TRANSACTION: deletions are being committed."""
    CLOSED = "closed"


_AUTH = frozenset({State.AUTHORIZATION})
_TRANS = frozenset({State.TRANSACTION})
_BOTH = frozenset({State.AUTHORIZATION, State.TRANSACTION})

_ALLOWED: dict[str, frozenset[State]] = {
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
    "CAPA": _BOTH,
    "LANG": _BOTH,
    "QUIT": _BOTH,
}

SESSION_CHANGING = frozenset({"USER", "PASS", "APOP", "AUTH", "STLS", "UTF8", "QUIT"})
"""Commands whose reply changes what may be sent next: never queued behind or before others."""


def allowed_states(verb: str) -> frozenset[State]:
    """The states in which ``verb`` may be sent; unknown verbs may be sent in either live state."""
    return _ALLOWED.get(verb, _BOTH)
