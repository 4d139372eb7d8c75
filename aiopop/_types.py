"""Result types returned by the client."""

from __future__ import annotations

import bisect
import enum
import operator
from array import array
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Literal, NamedTuple, Self, SupportsIndex, TypeVar, overload

__all__ = [
    "TLS_POLICIES",
    "AuthMethod",
    "Capabilities",
    "Expire",
    "ListEntry",
    "LoginDelay",
    "SizeListing",
    "Stat",
    "TLSPolicy",
    "UidEntry",
    "UidListing",
]

TLSPolicy = Literal["implicit", "starttls", "if-offered", "none"]
"""How a connection gets TLS; one set of words for the client, accounts and the CLI:

* ``"implicit"``: TLS from the first octet (POP3S, RFC 8314): :class:`aiopop.POP3_SSL`;
* ``"starttls"``: TLS by STLS, required: the connection fails before any
  credential is sent if it cannot be had (:class:`~aiopop.TLSRequiredError`);
* ``"if-offered"``: STLS when the server offers it, else cleartext;
* ``"none"``: never TLS.
"""
TLS_POLICIES: frozenset[str] = frozenset({"implicit", "starttls", "if-offered", "none"})
"""Every :data:`TLSPolicy`."""


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


_E = TypeVar("_E", bound="tuple[int, int | str]")
_V = TypeVar("_V", int, str)
_LIMIT = 2**64
"""Message numbers and sizes in a listing are stored as unsigned 64-bit integers."""
_REPR_ENTRIES = 10
_UID_OCTETS = bytes(range(0x21, 0x7F))
"""The octets a unique-id may hold (RFC 1939 section 7)."""


class _Listing(Sequence[_E], Generic[_E, _V]):
    """A whole LIST or UIDL listing, stored compactly: no object per entry.

    Message numbers live in one ``array('Q')``; the entries are made as
    they are asked for. Each message number appears once: adding a number
    again raises ValueError. While the numbers increase (as every server
    sends them) a number is found by bisection; otherwise through an index
    built when the order first breaks.
    """

    __slots__ = ("_index", "_numbers")

    def __init__(self) -> None:
        self._numbers = array("Q")
        self._index: dict[int, int] | None = None

    # -- what a subclass provides -------------------------------------------------

    def _value(self, position: int) -> _V:
        raise NotImplementedError

    def _entry(self, number: int, value: _V) -> _E:
        raise NotImplementedError

    def _append(self, number: int, value: _V) -> None:
        raise NotImplementedError

    # -- building --------------------------------------------------------------------

    def _add_number(self, number: int) -> None:
        """Append ``number``; ValueError when it is out of range or already listed."""
        if not 0 < number < _LIMIT:
            raise ValueError(f"message number {number} out of range")
        numbers = self._numbers
        index = self._index
        if index is None:
            if not numbers or number > numbers[-1]:
                numbers.append(number)
                return
            index = self._index = {n: i for i, n in enumerate(numbers)}
        if number in index:
            raise ValueError(f"message {number} is listed twice")
        index[number] = len(numbers)
        numbers.append(number)

    # -- lookups -------------------------------------------------------------------------

    def _find(self, number: object) -> int | None:
        """The position of message ``number``, or None."""
        if not isinstance(number, int):
            return None
        if self._index is not None:
            return self._index.get(number)
        numbers = self._numbers
        position = bisect.bisect_left(numbers, number)
        if position < len(numbers) and numbers[position] == number:
            return position
        return None

    def numbers(self) -> array[int]:
        """The message numbers in the order listed, as a new ``array('Q')``."""
        return self._numbers[:]

    def by_number(self) -> Mapping[int, _V]:
        """A read-only mapping view from message number to its value, without a copy.

        Looking a number up takes O(log n) (O(1) when the server listed the
        numbers out of order).
        """
        return _ByNumber(self)

    # -- Sequence -----------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._numbers)

    @overload
    def __getitem__(self, index: SupportsIndex) -> _E: ...
    @overload
    def __getitem__(self, index: slice) -> Self: ...

    def __getitem__(self, index: SupportsIndex | slice) -> _E | Self:
        if isinstance(index, slice):
            part = type(self)()
            for position in range(*index.indices(len(self))):
                part._append(self._numbers[position], self._value(position))
            return part
        position = operator.index(index)
        size = len(self._numbers)
        if position < 0:
            position += size
        if not 0 <= position < size:
            raise IndexError(f"{type(self).__name__} index out of range")
        return self._entry(self._numbers[position], self._value(position))

    def __contains__(self, entry: object) -> bool:
        if not isinstance(entry, tuple) or len(entry) != 2:
            return False
        position = self._find(entry[0])
        return position is not None and entry == self[position]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, type(self)) and isinstance(self, type(other)):
            return len(self) == len(other) and all(map(operator.eq, self, other))
        if isinstance(other, list):
            return len(self) == len(other) and all(map(operator.eq, self, other))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # compared by content, like a list

    def __repr__(self) -> str:
        name = type(self).__name__
        if len(self) <= _REPR_ENTRIES:
            return f"{name}({list(self)!r})"
        head = ", ".join(repr(self[position]) for position in range(3))
        return f"{name}([{head}, ...], {len(self)} entries)"

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (list(self),))


class _ByNumber(Mapping[int, _V]):
    """A listing seen as a mapping from message number to uid or size."""

    __slots__ = ("_listing",)

    def __init__(self, listing: _Listing[Any, _V]) -> None:
        self._listing: _Listing[Any, _V] = listing

    def __getitem__(self, number: int) -> _V:
        position = self._listing._find(number)
        if position is None:
            raise KeyError(number)
        return self._listing._value(position)

    def __contains__(self, number: object) -> bool:
        return self._listing._find(number) is not None

    def __iter__(self) -> Iterator[int]:
        return iter(self._listing._numbers)

    def __len__(self) -> int:
        return len(self._listing)

    def __repr__(self) -> str:
        return f"<by_number view of {len(self)} messages>"


class SizeListing(_Listing[ListEntry, int]):
    """The answer to LIST: a read-only sequence of :class:`ListEntry`, stored compactly.

    It compares equal to a list of the same entries, and indexes, slices
    and iterates like one; the numbers and sizes are kept in two
    ``array('Q')`` (16 octets a message), and each entry is made when it is
    asked for. ``by_number()`` looks sizes up by message number. A message
    number appears at most once: a server that lists one twice sent a
    malformed reply.
    """

    __slots__ = ("_sizes",)

    def __init__(self, entries: Iterable[tuple[int, int]] = ()) -> None:
        super().__init__()
        self._sizes = array("Q")
        for number, size in entries:
            self._append(number, size)

    def _append(self, number: int, value: int) -> None:
        if not 0 <= value < _LIMIT:
            raise ValueError(f"size {value} out of range")
        self._add_number(number)
        self._sizes.append(value)

    def _value(self, position: int) -> int:
        return self._sizes[position]

    def _entry(self, number: int, value: int) -> ListEntry:
        return ListEntry(number, value)

    def __iter__(self) -> Iterator[ListEntry]:
        return map(ListEntry, self._numbers, self._sizes)

    def sizes(self) -> array[int]:
        """The sizes in octets, in the order listed, as a new ``array('Q')``."""
        return self._sizes[:]


class UidListing(_Listing[UidEntry, str]):
    """The answer to UIDL: a read-only sequence of :class:`UidEntry`, stored compactly.

    It compares equal to a list of the same entries, and indexes, slices
    and iterates like one; the numbers are kept in an ``array('Q')`` and the
    unique-ids in one block of octets (about 16 octets a message besides
    the unique-id itself), and each entry is made when it is asked for.
    ``by_number()`` looks unique-ids up by message number; ``by_uid()``
    finds the messages that carry a unique-id. A message number appears at
    most once: a server that lists one twice sent a malformed reply.
    """

    __slots__ = ("_blob", "_by_uid", "_ends")

    def __init__(self, entries: Iterable[tuple[int, str]] = ()) -> None:
        super().__init__()
        self._blob = bytearray()
        self._ends = array("Q")
        self._by_uid: _UidIndex | None = None
        for number, uid in entries:
            self._append(number, uid)

    def _append(self, number: int, value: str) -> None:
        uid = value.encode("ascii")
        if not uid or uid.translate(None, _UID_OCTETS):
            raise ValueError(f"invalid unique-id {value!r}")
        self._append_octets(number, uid)

    def _append_octets(self, number: int, uid: bytes) -> None:
        """Append an entry whose unique-id was checked already (by the parser)."""
        self._add_number(number)
        self._blob += uid
        self._ends.append(len(self._blob))
        self._by_uid = None

    def _value(self, position: int) -> str:
        start = self._ends[position - 1] if position else 0
        return self._blob[start : self._ends[position]].decode("ascii")

    def _entry(self, number: int, value: str) -> UidEntry:
        return UidEntry(number, value)

    def __iter__(self) -> Iterator[UidEntry]:
        blob = self._blob
        start = 0
        for number, end in zip(self._numbers, self._ends, strict=True):
            yield UidEntry(number, blob[start:end].decode("ascii"))
            start = end

    def by_uid(self) -> Mapping[str, tuple[int, ...]]:
        """A read-only mapping from each unique-id to the numbers of the messages that carry it.

        RFC 1939 says a unique-id names one message; a value with more than
        one number shows a server that breaks that (never delete on the
        strength of such a unique-id). The index behind it is built on the
        first call (about 100 octets a message, no entry objects) and kept.
        """
        if self._by_uid is None:
            self._by_uid = _UidIndex(self)
        return self._by_uid


class _UidIndex(Mapping[str, tuple[int, ...]]):
    """Unique-id -> message numbers, over a :class:`UidListing`."""

    __slots__ = ("_first", "_more", "_numbers")

    def __init__(self, listing: UidListing) -> None:
        blob = bytes(listing._blob)
        first: dict[bytes, int] = {}
        more: dict[bytes, list[int]] = {}
        numbers = listing._numbers
        start = 0
        for position, end in enumerate(listing._ends):
            uid = blob[start:end]
            start = end
            if first.setdefault(uid, position) != position:
                more.setdefault(uid, []).append(numbers[position])
        self._first = first
        self._more = more
        self._numbers = numbers

    def __getitem__(self, uid: str) -> tuple[int, ...]:
        try:
            key = uid.encode("ascii")
        except (AttributeError, UnicodeEncodeError):
            raise KeyError(uid) from None
        position = self._first.get(key)
        if position is None:
            raise KeyError(uid)
        return (self._numbers[position], *self._more.get(key, ()))

    def __iter__(self) -> Iterator[str]:
        return (uid.decode("ascii") for uid in self._first)

    def __len__(self) -> int:
        return len(self._first)

    def __repr__(self) -> str:
        return f"<by_uid view of {len(self)} unique-ids>"


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
