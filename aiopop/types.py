"""Result types returned by the client."""

from __future__ import annotations

import enum
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

__all__ = [
    "AuthMethod",
    "Capabilities",
    "Expire",
    "ListEntry",
    "LoginDelay",
    "Stat",
    "UidEntry",
]


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

    SCRAM_SHA_256 = "SCRAM-SHA-256"
    SCRAM_SHA_1 = "SCRAM-SHA-1"
    CRAM_MD5 = "CRAM-MD5"
    APOP = "APOP"
    PLAIN = "PLAIN"
    LOGIN = "LOGIN"
    USER = "USER"
    OAUTHBEARER = "OAUTHBEARER"
    XOAUTH2 = "XOAUTH2"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True, slots=True)
class Expire:
    """The EXPIRE capability (RFC 2449 section 6.7): how long the server keeps mail.

    ``days`` is the minimum retention in days, ``None`` for NEVER; ``0``
    means mail must not be left on the server. ``per_user`` (the USER
    token, before login) says a more exact value comes after login.
    """

    days: int | None
    per_user: bool = False


@dataclass(frozen=True, slots=True)
class LoginDelay:
    """The LOGIN-DELAY capability (RFC 2449 section 6.5): minimum seconds between logins.

    ``per_user`` (the USER token, before login) says the value announced is
    the largest any user has, and a more exact one comes after login.
    """

    seconds: int
    per_user: bool = False


class Capabilities(Mapping[str, list[str]]):
    """The answer to CAPA (RFC 2449): a read-only mapping of tags to arguments, plus helpers.

    Tags are upper case (``caps["SASL"]`` is ``["PLAIN", "SCRAM-SHA-256"]``);
    a tag the server repeated has the arguments of every line. The helpers
    read the capabilities RFC 2449, RFC 2595, RFC 5034 and RFC 6856 define.
    ``announced`` is False when the server refused CAPA, as RFC 1939 servers
    do: then the mapping is empty and every helper says "not offered".
    """

    __slots__ = ("_entries", "announced")

    def __init__(
        self, entries: Mapping[str, Sequence[str]] | None = None, *, announced: bool = True
    ) -> None:
        self._entries = {tag.upper(): list(args) for tag, args in (entries or {}).items()}
        self.announced = announced

    def __getitem__(self, tag: str) -> list[str]:
        return list(self._entries[tag.upper()])

    def __contains__(self, tag: object) -> bool:
        return isinstance(tag, str) and tag.upper() in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        if not self.announced:
            return "Capabilities(announced=False)"
        return f"Capabilities({self._entries!r})"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Capabilities):
            return self.announced == other.announced and self._entries == other._entries
        return super().__eq__(other)

    __hash__ = None  # type: ignore[assignment]  # a mapping, compared by content

    def _flag(self, tag: str) -> bool:
        return tag in self._entries

    @property
    def sasl(self) -> tuple[str, ...]:
        """The SASL mechanisms offered for AUTH (RFC 5034), upper case, in the server's order."""
        seen: dict[str, None] = {}
        for name in self._entries.get("SASL", ()):
            seen.setdefault(name.upper(), None)
        return tuple(seen)

    @property
    def stls(self) -> bool:
        """STLS is offered (RFC 2595): the session can be upgraded to TLS."""
        return self._flag("STLS")

    @property
    def pipelining(self) -> bool:
        """Commands may be sent without waiting for replies (RFC 2449 section 6.6)."""
        return self._flag("PIPELINING")

    @property
    def uidl(self) -> bool:
        """UIDL is supported."""
        return self._flag("UIDL")

    @property
    def top(self) -> bool:
        """TOP is supported."""
        return self._flag("TOP")

    @property
    def user(self) -> bool:
        """USER/PASS is offered (RFC 2449 section 6.3)."""
        return self._flag("USER")

    @property
    def resp_codes(self) -> bool:
        """-ERR lines may carry response codes in brackets (RFC 2449 section 8)."""
        return self._flag("RESP-CODES")

    @property
    def auth_resp_code(self) -> bool:
        """Failed logins say whether the credentials were at fault, [AUTH] (RFC 3206)."""
        return self._flag("AUTH-RESP-CODE")

    @property
    def expire(self) -> Expire | None:
        """The EXPIRE capability, or None when absent or unreadable."""
        args = self._entries.get("EXPIRE")
        if not args:
            return None
        per_user = any(arg.upper() == "USER" for arg in args[1:])
        if args[0].upper() == "NEVER":
            return Expire(None, per_user)
        days = _small_number(args[0])
        return None if days is None else Expire(days, per_user)

    @property
    def login_delay(self) -> LoginDelay | None:
        """The LOGIN-DELAY capability, or None when absent or unreadable."""
        args = self._entries.get("LOGIN-DELAY")
        seconds = _small_number(args[0]) if args else None
        if args is None or seconds is None:
            return None
        return LoginDelay(seconds, any(arg.upper() == "USER" for arg in args[1:]))

    @property
    def implementation(self) -> str | None:
        """The server's free-form IMPLEMENTATION text, if it sent one."""
        args = self._entries.get("IMPLEMENTATION")
        return " ".join(args) if args is not None else None

    @property
    def utf8(self) -> bool:
        """UTF8 is offered (RFC 6856): after the UTF8 command, UTF-8 everywhere."""
        return self._flag("UTF8")

    @property
    def utf8_arguments(self) -> tuple[str, ...]:
        """UTF8's arguments, upper case: ``("USER",)`` means UTF-8 user names and passwords."""
        return tuple(arg.upper() for arg in self._entries.get("UTF8", ()))

    @property
    def lang(self) -> bool:
        """LANG is offered (RFC 6856): the server's responses can change language."""
        return self._flag("LANG")


def _small_number(text: str) -> int | None:
    """A non-negative decimal of at most 10 digits, or None."""
    return int(text) if text.isascii() and text.isdigit() and len(text) <= 10 else None
