"""The sans-I/O POP3 client protocol: bytes in, events out; commands in, bytes out.

Nothing here awaits or touches a socket. The caller feeds whatever arrived
with :meth:`POP3Protocol.receive_data` (or :meth:`~POP3Protocol.receive_eof`)
and pulls :data:`Event` objects with :meth:`POP3Protocol.next_event`, which
returns ``None`` when it needs more data. :meth:`POP3Protocol.send` checks a
command against the session state and returns the bytes to write.

Replies are matched to commands first in, first out through a queue of
pending commands, so more than one command may be in flight (PIPELINING)
without changing this layer. How TCP split the stream never changes the
events: every reader here works on an unbounded buffer and only decides once
it has seen enough bytes.
"""

from __future__ import annotations

import collections
import enum
import re
from dataclasses import dataclass, field

from ._parse import StatusLine, escape, find_apop_timestamp, parse_status_line
from ._state import SESSION_CHANGING, State, allowed_states
from .errors import CommandStateError, ConnectionLostError, ProtocolError

__all__ = [
    "Command",
    "Data",
    "End",
    "Event",
    "Greeting",
    "Line",
    "POP3Protocol",
    "Reply",
    "ReplyShape",
]

DEFAULT_MAX_LINE_LENGTH = 8192
MAX_COMMAND_LENGTH = 255  # octets including CRLF, RFC 2449 section 4

_CR, _LF, _DOT = 0x0D, 0x0A, 0x2E
# C0 controls, DEL and C1 controls: never in an argument (command injection).
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


class ReplyShape(enum.Enum):
    """What follows a command's ``+OK``."""

    SINGLE = "single"
    """Nothing: the status line is the whole reply."""
    LINES = "lines"
    """A multi-line listing (LIST, UIDL, CAPA): bounded lines, one :class:`Line` each."""
    DATA = "data"
    """A multi-line message (RETR, TOP): :class:`Data` chunks, no per-line bound."""


@dataclass(frozen=True, eq=False, slots=True)
class Command:
    """One command to send. ``secret`` marks its last argument as one never to be logged."""

    verb: str
    args: tuple[str, ...] = ()
    shape: ReplyShape = ReplyShape.SINGLE
    secret: bool = False

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


Event = Greeting | Reply | Line | Data | End


class _Phase(enum.Enum):
    GREETING = "greeting"
    STATUS = "status"
    LINES = "lines"
    DATA = "data"
    IDLE = "idle"


@dataclass(slots=True)
class _BodyScan:
    """Where the reader is inside a multi-line message."""

    at_line_start: bool = True
    size: int = 0
    ended: bool = False


@dataclass
class POP3Protocol:
    """State machine of one POP3 client session.

    ``max_line_length`` bounds the greeting, status lines and listing lines
    (not message lines); ``max_body_size`` bounds one multi-line message when
    set. Exceeding either is a :class:`ProtocolError`, with memory bounded.
    After any remote error the protocol is dead and re-raises that error.
    """

    max_line_length: int = DEFAULT_MAX_LINE_LENGTH
    max_body_size: int | None = None
    _buffer: bytearray = field(default_factory=bytearray, repr=False)
    _pending: collections.deque[Command] = field(default_factory=collections.deque, repr=False)
    _phase: _Phase = _Phase.GREETING
    _state: State = State.GREETING
    _eof: bool = False
    _error: ProtocolError | ConnectionLostError | None = None
    _user_accepted: bool = False
    _utf8: bool = False
    _scan: _BodyScan = field(default_factory=_BodyScan, repr=False)
    greeting: Greeting | None = None

    # -- what the caller may ask -------------------------------------------------

    @property
    def state(self) -> State:
        """The session state as of the replies processed so far."""
        return self._state

    @property
    def pending(self) -> int:
        """How many sent commands still await (part of) their reply."""
        return len(self._pending)

    @property
    def buffered(self) -> int:
        """Bytes received but not yet turned into events (must be 0 before a TLS handshake)."""
        return len(self._buffer)

    @property
    def utf8(self) -> bool:
        """True once the server accepted UTF8 (RFC 6856): arguments may be UTF-8."""
        return self._utf8

    # -- input ---------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Add bytes that arrived from the server."""
        if self._eof:
            raise RuntimeError("receive_data() after receive_eof()")
        self._buffer += data

    def receive_eof(self) -> None:
        """Note that the server closed its side."""
        self._eof = True

    def connection_closed(self) -> None:
        """Note that the connection was closed locally: the session is over."""
        self._state = State.CLOSED
        self._buffer.clear()

    def next_event(self) -> Event | None:
        """The next complete event, or None when more data is needed.

        Raises :class:`ProtocolError` for malformed, oversized or unrequested
        data and :class:`ConnectionLostError` when the stream ended inside a reply.
        """
        if self._error is not None:
            raise self._error
        try:
            event = self._next_event()
        except (ProtocolError, ConnectionLostError) as exc:
            self._fail(exc)
            raise
        if event is None and self._eof:
            self._at_eof()
        return event

    def _next_event(self) -> Event | None:
        phase = self._phase
        if phase is _Phase.DATA:
            return self._next_data()
        if phase is _Phase.LINES:
            return self._next_listing_line()
        if phase is _Phase.IDLE:
            if self._buffer:
                raise ProtocolError(
                    f"server sent data nobody asked for: {escape(bytes(self._buffer[:80]))!r}"
                )
            return None
        line = self._take_line()
        if line is None:
            return None
        status = parse_status_line(line)
        if phase is _Phase.GREETING:
            return self._on_greeting(status)
        return self._on_status(status)

    def _at_eof(self) -> None:
        if self._phase is _Phase.IDLE and not self._buffer:
            self._state = State.CLOSED
            return
        what = "the greeting" if self._phase is _Phase.GREETING else "a reply"
        if self._pending:
            what = f"the reply to {self._pending[0].verb}"
        exc = ConnectionLostError(f"server closed the connection in the middle of {what}")
        self._fail(exc)
        raise exc

    def _fail(self, exc: ProtocolError | ConnectionLostError) -> None:
        self._error = exc
        self._state = State.CLOSED
        self._buffer.clear()

    # -- lines -------------------------------------------------------------------

    def _take_line(self) -> bytes | None:
        """One status line without its line end (CRLF, or a bare LF from lax servers)."""
        buf = self._buffer
        limit = self.max_line_length
        end = buf.find(b"\n", 0, limit + 2)
        if end < 0:
            if len(buf) > limit + 1:
                raise ProtocolError(f"line longer than {limit} octets")
            return None
        line = bytes(buf[:end])
        del buf[: end + 1]
        if line.endswith(b"\r"):
            line = line[:-1]
        if len(line) > limit:
            raise ProtocolError(f"line longer than {limit} octets")
        return line

    def _take_crlf_line(self) -> bytes | None:
        """One listing line: only CRLF ends it."""
        buf = self._buffer
        end = buf.find(b"\r\n", 0, self.max_line_length + 2)
        if end < 0:
            if len(buf) > self.max_line_length + 1:
                raise ProtocolError(f"line longer than {self.max_line_length} octets")
            return None
        line = bytes(buf[:end])
        del buf[: end + 2]
        return line

    def _on_greeting(self, status: StatusLine) -> Greeting:
        timestamp = find_apop_timestamp(status.text) if status.ok else None
        self.greeting = Greeting(status, timestamp)
        self._phase = _Phase.IDLE
        self._state = State.AUTHORIZATION if status.ok else State.CLOSED
        return self.greeting

    def _on_status(self, status: StatusLine) -> Reply:
        command = self._pending[0]
        self._apply(command, status)
        if status.ok and command.shape is not ReplyShape.SINGLE:
            if command.shape is ReplyShape.LINES:
                self._phase = _Phase.LINES
            else:
                self._phase = _Phase.DATA
                self._scan = _BodyScan()
        else:
            self._complete()
        return Reply(command, status)

    def _complete(self) -> Command:
        command = self._pending.popleft()
        self._phase = _Phase.STATUS if self._pending else _Phase.IDLE
        return command

    def _apply(self, command: Command, status: StatusLine) -> None:
        """The state transition a reply causes (RFC 1939 sections 4-6)."""
        verb = command.verb
        if verb == "USER":
            self._user_accepted = status.ok
        elif verb in ("PASS", "APOP"):
            self._user_accepted = False
            if status.ok:
                self._state = State.TRANSACTION
        elif verb == "UTF8" and status.ok:
            self._utf8 = True
        elif verb == "QUIT" and status.ok:
            self._state = State.UPDATE if self._state is State.TRANSACTION else State.CLOSED

    def _next_listing_line(self) -> Event | None:
        line = self._take_crlf_line()
        if line is None:
            return None
        if line == b".":
            return End(self._complete())
        if line.startswith(b"."):
            line = line[1:]
        return Line(self._pending[0], line)

    # -- message bodies --------------------------------------------------------

    def _next_data(self) -> Event | None:
        scan = self._scan
        if scan.ended:
            return End(self._complete())
        buf = self._buffer
        pieces: list[bytes | bytearray] = []
        i, n = 0, len(buf)
        at_line_start = scan.at_line_start
        while i < n:
            if at_line_start:
                at_line_start = False
                if buf[i] == _DOT:
                    if n - i < 3 and (n - i == 1 or buf[i + 1] == _CR):
                        at_line_start = True
                        break  # ".", ".\r": the terminator or not, more bytes decide
                    if buf[i + 1] == _CR and buf[i + 2] == _LF:
                        i += 3
                        scan.ended = True
                        break
                    i += 1  # a stuffed dot
                    continue
            j = buf.find(b"\r\n.", i)
            if j >= 0:
                pieces.append(buf[i : j + 2])
                i = j + 2
                at_line_start = True
                continue
            if buf[n - 1] == _CR:
                # The CR may begin "\r\n.": keep it until its next byte arrives.
                if n - 1 > i:
                    pieces.append(buf[i : n - 1])
                i = n - 1
                break
            pieces.append(buf[i:n])
            at_line_start = n - i >= 2 and buf[n - 2] == _CR and buf[n - 1] == _LF
            i = n
        scan.at_line_start = at_line_start
        del buf[:i]
        if pieces:
            data = b"".join(pieces)
            scan.size += len(data)
            if self.max_body_size is not None and scan.size > self.max_body_size:
                raise ProtocolError(f"reply larger than {self.max_body_size} octets")
            return Data(self._pending[0], data)
        if scan.ended:
            return End(self._complete())
        return None

    # -- output ----------------------------------------------------------------

    def send(self, command: Command) -> bytes:
        """Check ``command`` against the session and return the bytes to write.

        Raises :class:`ValueError` for an argument that could inject a command
        or break the line limit, :class:`CommandStateError` for a command the
        session does not allow now, and the stored error of a dead session.
        Nothing is queued when it raises.
        """
        if self._error is not None:
            raise self._error
        line = self._encode(command)
        self._check_state(command)
        if not self._pending and self._buffer:
            self._fail(
                ProtocolError(
                    f"server sent data nobody asked for: {escape(bytes(self._buffer[:80]))!r}"
                )
            )
            assert self._error is not None
            raise self._error
        self._pending.append(command)
        if self._phase is _Phase.IDLE:
            self._phase = _Phase.STATUS
        return line

    def _check_state(self, command: Command) -> None:
        state = self._state
        if state is State.GREETING:
            raise CommandStateError("the greeting has not been read yet")
        if state in (State.CLOSED, State.UPDATE) or self._eof:
            raise CommandStateError("the session is closed")
        verb = command.verb
        if self._pending and (
            verb in SESSION_CHANGING or any(p.verb in SESSION_CHANGING for p in self._pending)
        ):
            raise CommandStateError(f"{verb} cannot be queued behind another command")
        if state not in allowed_states(verb):
            where = "before logging in" if state is State.AUTHORIZATION else "after logging in"
            raise CommandStateError(f"{verb} is not allowed {where}")
        if verb == "PASS" and not self._user_accepted:
            raise CommandStateError("PASS must follow a USER the server accepted")

    def _encode(self, command: Command) -> bytes:
        verb = command.verb
        if not verb.isascii() or not verb.isalnum():
            raise ValueError(f"invalid command verb {verb!r}")
        encoding = "utf-8" if self._utf8 else "ascii"
        parts = [verb.encode("ascii")]
        for index, arg in enumerate(command.args):
            what = (
                "a secret argument"
                if command.secret and index == len(command.args) - 1
                else repr(arg)
            )
            if not arg:
                raise ValueError(f"{verb}: empty argument")
            if _CONTROL.search(arg):
                raise ValueError(f"{verb}: control character in {what}")
            try:
                parts.append(arg.encode(encoding))
            except UnicodeEncodeError:
                raise ValueError(
                    f"{verb}: non-ASCII characters in {what} need the server's UTF8 support "
                    "(call utf8() first)"
                ) from None
        line = b" ".join(parts) + b"\r\n"
        if len(line) > MAX_COMMAND_LENGTH:
            raise ValueError(f"{verb}: command longer than {MAX_COMMAND_LENGTH} octets")
        return line
