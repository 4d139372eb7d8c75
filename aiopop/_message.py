"""What the delivery engine hands to a destination and to a filter, and their types.

A *delivery* is an async callable given a :class:`NewMessage`; the message
counts as delivered only when it returns (:func:`aiopop.fetch_into`
records it then, and only then may delete it on the server). A Maildir is
the other destination, with its own two-step write (``tmp/``, then
``new/``); :class:`aiopop.CommandDelivery` is a delivery that runs a
program per message. :func:`aiopop.watch` yields the same
:class:`NewMessage` to the loop that consumes it.

A *filter* is an async callable given a message's :class:`MessageHeaders`
(from TOP, before anything is retrieved) that answers a :data:`Verdict`.

Python code gets messages in network form (CRLF line ends, dots unstuffed);
programs (:class:`aiopop.CommandDelivery`, :class:`aiopop.FilterCommand`)
get them with LF line ends, as a Maildir file holds them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import TYPE_CHECKING, Literal, TypeAlias

if TYPE_CHECKING:
    from ._accounts import Account

__all__ = ["Deliver", "Filter", "MessageHeaders", "NewMessage", "Verdict"]

Verdict: TypeAlias = Literal["fetch", "skip", "delete"]
"""A filter's answer: fetch the message, skip it (leave it on the server, untouched), or
delete it on the server without retrieving it (at the QUIT that ends the session)."""


def _parse(data: bytes) -> EmailMessage:
    # Imported here: the email package costs ~15 ms at start-up, and many users never parse.
    import email.policy
    from email.parser import BytesParser

    parser = BytesParser(policy=email.policy.default)
    parsed = parser.parsebytes(data.replace(b"\r\n", b"\n"))
    assert isinstance(parsed, EmailMessage)  # the policy's message factory
    return parsed


@dataclass(frozen=True, eq=False)
class NewMessage:
    """One new message: its unique-id, its number in this session, and its bytes.

    ``data`` is the message exactly as the server holds it (CRLF line ends,
    dots unstuffed). :meth:`message` parses it on first use. ``account`` is
    the account it was read from, when the caller named one.
    """

    uid: str
    number: int
    data: bytes = field(repr=False)
    account: Account | None = field(default=None, repr=False)
    _parsed: list[EmailMessage] = field(default_factory=list, init=False, repr=False)

    @property
    def size(self) -> int:
        """The size of ``data`` in octets."""
        return len(self.data)

    def message(self) -> EmailMessage:
        """The message parsed with :data:`email.policy.default`, parsed once and then kept.

        Line ends become ``\n`` first, as that policy expects: text parts read
        ``"line\n"``, and ``as_bytes()`` gives them back consistently.
        """
        if not self._parsed:
            self._parsed.append(_parse(self.data))
        return self._parsed[0]


@dataclass(frozen=True, eq=False)
class MessageHeaders:
    """A message's header section (from ``TOP n 0``), for a filter to judge before RETR.

    ``data`` is the header section in network form (CRLF line ends), up to
    and including the empty line that ends it; ``size`` is the message's
    size by LIST; ``uid`` its unique-id (None without UIDL).
    """

    number: int
    uid: str | None
    size: int
    data: bytes = field(repr=False)
    account: Account | None = field(default=None, repr=False)
    _parsed: list[EmailMessage] = field(default_factory=list, init=False, repr=False)

    def message(self) -> EmailMessage:
        """The headers parsed with :data:`email.policy.default` (a message without a body)."""
        if not self._parsed:
            self._parsed.append(_parse(self.data))
        return self._parsed[0]


Deliver: TypeAlias = Callable[[NewMessage], Awaitable[object]]
"""A destination: an async callable; the message is delivered when it returns. Raising
:class:`aiopop.DeliveryError` leaves that one message on the server, reported, and the run
goes on; any other exception stops the run (what was delivered before stays recorded)."""

Filter: TypeAlias = Callable[[MessageHeaders], Awaitable[Verdict]]
"""A filter: given a message's headers, answers ``"fetch"``, ``"skip"`` or ``"delete"``."""
