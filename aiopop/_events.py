"""The events of a POP3 client session, and the commands that cause them.

Small frozen values (as h11's ``_events.py``): a :class:`Command` goes out;
a :class:`Greeting`, a :class:`Reply` and, for a multi-line reply, its
:class:`Line` or :class:`Data` pieces and an :class:`End` come back; during
AUTH, :class:`Challenge` lines. No I/O, no state.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from ._parse import StatusLine

__all__ = [
    "Challenge",
    "Command",
    "Data",
    "End",
    "Event",
    "Greeting",
    "Line",
    "Reply",
    "ReplyShape",
]


class ReplyShape(enum.Enum):
    """What follows a command's ``+OK``."""

    SINGLE = "single"
    """Nothing: the status line is the whole reply."""
    LINES = "lines"
    """A multi-line listing (LIST, UIDL, CAPA): bounded lines, one :class:`Line` each."""
    DATA = "data"
    """A multi-line message (RETR, TOP): :class:`Data` chunks, no per-line bound."""
    SASL = "sasl"
    """AUTH (RFC 5034): :class:`Challenge` lines until ``+OK`` or ``-ERR``.

    Each challenge is answered with :meth:`POP3Protocol.send_response`."""


@dataclass(frozen=True, eq=False, slots=True)
class Command:
    """One command to send.

    ``secret`` marks its last argument as one never to be logged. ``limit``
    bounds the reply's content: the octets of a message (``DATA``) or of all
    lines of a listing (``LINES``); ``None`` means no bound.
    """

    verb: str
    args: tuple[str, ...] = ()
    shape: ReplyShape = ReplyShape.SINGLE
    secret: bool = False
    limit: int | None = None

    def __repr__(self) -> str:
        return f"Command({self.loggable()!r})"

    def loggable(self) -> str:
        """The command line as it may appear in a log: secret arguments redacted."""
        if self.secret and self.args:
            return " ".join((self.verb, *self.args[:-1], "<redacted>"))
        return " ".join((self.verb, *self.args))


@dataclass(frozen=True, slots=True)
class Greeting:
    """The server's greeting. ``timestamp`` is the APOP challenge, when it offers one."""

    status: StatusLine
    timestamp: bytes | None


@dataclass(frozen=True, slots=True)
class Reply:
    """The status line answering ``command``; for a multi-line ``+OK`` the body follows."""

    command: Command
    status: StatusLine


@dataclass(frozen=True, slots=True)
class Line:
    """One line of a listing, dot-unstuffed, without its CRLF."""

    command: Command
    data: bytes


@dataclass(frozen=True, slots=True)
class Data:
    """A piece of a multi-line message: dot-unstuffed, CRLF line ends kept."""

    command: Command
    data: bytes


@dataclass(frozen=True, slots=True)
class End:
    """The terminating ``.`` of a multi-line reply: ``command`` is complete."""

    command: Command


@dataclass(frozen=True, slots=True)
class Challenge:
    """A SASL challenge during AUTH: the ``+ base64`` line, decoded.

    ``data`` is None when the line is not valid base64 (RFC 5034 section 4):
    the client must then cancel with :meth:`POP3Protocol.send_response`
    (None). Nothing more may come from the server until the client answers.
    """

    command: Command
    data: bytes | None


Event = Greeting | Reply | Line | Data | End | Challenge
