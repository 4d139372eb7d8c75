"""Result types returned by the client."""

from __future__ import annotations

import enum
from typing import NamedTuple

__all__ = ["AuthMethod", "ListEntry", "Stat", "UidEntry"]


class Stat(NamedTuple):
    """The answer to STAT: how many messages, and their total size in octets.

    A tuple, so ``"%d messages totaling %d bytes" % await client.stat()`` works
    as it does with poplib.
    """

    # Shadows tuple.count() on purpose: poplib users know these as count and size.
    count: int  # type: ignore[assignment]
    size: int


class ListEntry(NamedTuple):
    """One line of LIST: a message number and its size in octets."""

    number: int
    size: int


class UidEntry(NamedTuple):
    """One line of UIDL: a message number and its unique id (RFC 1939 section 7)."""

    number: int
    uid: str


class AuthMethod(enum.StrEnum):
    """How :meth:`aiopop.POP3.login` authenticated."""

    APOP = "APOP"
    USER = "USER"

    def __str__(self) -> str:
        return self.value
