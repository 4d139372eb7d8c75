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

import base64
import collections
import enum
import re
from dataclasses import dataclass

from ._errors import CommandStateError, ConnectionLostError, ProtocolError
from ._events import (
    Challenge,
    Command,
    Data,
    End,
    Event,
    Greeting,
    Line,
    Reply,
    ReplyShape,
)
from ._parse import (
    StatusLine,
    escape,
    find_apop_timestamp,
    is_challenge,
    parse_challenge,
    parse_status_line,
)
from ._state import Session, State

__all__ = [
    "Challenge",
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


class _Phase(enum.Enum):
    GREETING = "greeting"
    STATUS = "status"
    LINES = "lines"
    DATA = "data"
    IDLE = "idle"
    CHALLENGED = "challenged"
    """A SASL challenge was handed out: the client speaks next."""


@dataclass(slots=True)
class _BodyScan:
    """Where the reader is inside a multi-line reply."""

    at_line_start: bool = True
    size: int = 0
    ended: bool = False
    bare_lf: bool = False
    """The reply's status line ended with a bare LF: so do its lines (a lax server)."""


# Where stuffed lines are this dense (at least _BULK_HITS of them less than
# _BULK_GAP octets apart on average), the rest of a piece is unstuffed in bulk:
# one search for the terminator and one replace, instead of a step per line.
_BULK_HITS = 16
_BULK_GAP = 256


class POP3Protocol:
    """State machine of one POP3 client session.

    ``max_line_length`` bounds the greeting, status lines and listing lines
    (not message lines); a command's :attr:`Command.limit` bounds its reply.
    Exceeding either is a :class:`ProtocolError`, with memory bounded.
    After any remote error the protocol is dead and re-raises that error.
    Which command may be sent when, and what a reply changes, is
    :mod:`aiopop._state`'s to say.

    Lines may end with CRLF or, from lax servers, a bare LF: status and
    listing lines either way; a message's lines as its status line did (a
    bare LF inside a CRLF message is content).
    """

    def __init__(self, max_line_length: int = DEFAULT_MAX_LINE_LENGTH) -> None:
        self.max_line_length = max_line_length
        self.greeting: Greeting | None = None
        """The server's greeting, once it arrived."""
        # Received bytes: _buf[_pos:] not yet parsed, then _incoming, joined lazily
        # so that a chunk that arrives on its own is parsed without being copied.
        self._buf = b""
        self._pos = 0
        self._incoming: list[bytes] = []
        self._pending: collections.deque[Command] = collections.deque()
        self._phase = _Phase.GREETING
        self._session = Session()
        self._eof = False
        self._error: ProtocolError | ConnectionLostError | None = None
        self._line_bare_lf = False
        self._sasl_cancelled = False
        """The client answered the current AUTH's challenge with ``*``: only -ERR may follow."""
        self._scan = _BodyScan()

    def __repr__(self) -> str:
        return f"<POP3Protocol {self._session.state.value} pending={len(self._pending)}>"

    # -- what the caller may ask -------------------------------------------------

    @property
    def state(self) -> State:
        """The session state as of the replies processed so far."""
        return self._session.state

    @property
    def pending(self) -> int:
        """How many sent commands still await (part of) their reply."""
        return len(self._pending)

    @property
    def buffered(self) -> int:
        """Bytes received but not yet turned into events (must be 0 before a TLS handshake)."""
        return len(self._buf) - self._pos + sum(map(len, self._incoming))

    @property
    def utf8(self) -> bool:
        """True once the server accepted UTF8 (RFC 6856): arguments may be UTF-8."""
        return self._session.utf8

    @property
    def tls(self) -> bool:
        """True once the connection runs over TLS (:meth:`tls_started` was called)."""
        return self._session.tls

    def tls_started(self) -> None:
        """Note that the connection now runs over TLS (implicit, or after STLS).

        Nothing received before may remain unread (RFC 2595 section 4):
        raises ProtocolError, and kills the session, if something does.
        A session that already failed raises its error and stays in the clear.
        """
        if self._error is not None:
            raise self._error
        if self.buffered:
            error = ProtocolError("the server sent data after STLS's +OK, before TLS began")
            self._fail(error)
            raise error
        self._session.tls = True

    def send_response(self, response: bytes | None) -> bytes:
        """The line answering the current SASL challenge: base64, or ``*`` to cancel (None).

        After ``*`` the server must refuse the exchange with ``-ERR`` (RFC 5034
        section 4): another challenge, or ``+OK``, is then a ProtocolError.
        Raises CommandStateError when no challenge is waiting for an answer.
        """
        if self._error is not None:
            raise self._error
        if self._phase is not _Phase.CHALLENGED:
            raise CommandStateError("no SASL challenge is waiting for a response")
        self._phase = _Phase.STATUS
        if response is None:
            self._sasl_cancelled = True
            return b"*\r\n"
        return base64.b64encode(response) + b"\r\n"

    # -- input ---------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Add bytes that arrived from the server."""
        if self._eof:
            raise RuntimeError("receive_data() after receive_eof()")
        if data:
            self._incoming.append(bytes(data))

    def receive_eof(self) -> None:
        """Note that the server closed its side."""
        self._eof = True

    def connection_closed(self) -> None:
        """Note that the connection was closed locally: the session is over."""
        self._session.closed()
        self._clear()

    def next_event(self) -> Event | None:
        """The next complete event, or None when more data is needed.

        Raises :class:`ProtocolError` for malformed, oversized or unrequested
        data and :class:`ConnectionLostError` when the stream ended inside a reply.
        """
        if self._error is not None:
            raise self._error
        if self._incoming:
            self._fill()
        try:
            event = self._next_event()
        except (ProtocolError, ConnectionLostError) as exc:
            self._fail(exc)
            raise
        if event is None and self._eof:
            self._at_eof()
        return event

    def _fill(self) -> None:
        incoming = self._incoming
        if self._pos < len(self._buf):
            incoming.insert(0, self._buf[self._pos :])
        self._buf = incoming[0] if len(incoming) == 1 else b"".join(incoming)
        self._pos = 0
        incoming.clear()

    def _clear(self) -> None:
        self._buf = b""
        self._pos = 0
        self._incoming.clear()

    def _next_event(self) -> Event | None:
        phase = self._phase
        if phase is _Phase.DATA:
            return self._next_data()
        if phase is _Phase.LINES:
            return self._next_listing_line()
        if phase is _Phase.IDLE or phase is _Phase.CHALLENGED:
            if self._pos < len(self._buf):
                raise self._unrequested()
            return None
        line = self._take_line()
        if line is None:
            return None
        if phase is _Phase.GREETING:
            return self._on_greeting(parse_status_line(line))
        command = self._pending[0]
        if command.shape is ReplyShape.SASL:
            return self._on_sasl_line(command, line)
        return self._on_status(parse_status_line(line))

    def _on_sasl_line(self, command: Command, line: bytes) -> Challenge | Reply:
        if is_challenge(line):
            if self._sasl_cancelled:
                raise ProtocolError("the server sent a SASL challenge after the client cancelled")
            self._phase = _Phase.CHALLENGED
            return Challenge(command, parse_challenge(line))
        status = parse_status_line(line)
        if status.ok and self._sasl_cancelled:
            raise ProtocolError("the server accepted an AUTH exchange the client cancelled")
        return self._on_status(status)

    def _unrequested(self) -> ProtocolError:
        data = self._buf[self._pos : self._pos + 80]
        return ProtocolError(f"server sent data nobody asked for: {escape(data)!r}")

    def _at_eof(self) -> None:
        if self._phase is _Phase.IDLE and self._pos >= len(self._buf):
            self._session.closed()
            return
        # Outside the greeting a command is always pending (only IDLE has none).
        what = f"the reply to {self._pending[0].verb}" if self._pending else "the greeting"
        exc = ConnectionLostError(f"server closed the connection in the middle of {what}")
        self._fail(exc)
        raise exc

    def _fail(self, exc: ProtocolError | ConnectionLostError) -> None:
        self._error = exc
        self._session.closed()
        self._clear()

    # -- lines -------------------------------------------------------------------

    def _take_line(self) -> bytes | None:
        """One status or listing line without its line end (CRLF, or a bare LF)."""
        buf, pos = self._buf, self._pos
        limit = self.max_line_length
        end = buf.find(b"\n", pos, pos + limit + 2)
        if end < 0:
            if len(buf) - pos > limit + 1:
                raise ProtocolError(f"line longer than {limit} octets")
            return None
        self._pos = end + 1
        if end > pos and buf[end - 1] == _CR:
            self._line_bare_lf = False
            end -= 1
        else:
            self._line_bare_lf = True
        if end - pos > limit:
            raise ProtocolError(f"line longer than {limit} octets")
        return buf[pos:end]

    def _on_greeting(self, status: StatusLine) -> Greeting:
        timestamp = find_apop_timestamp(status.text) if status.ok else None
        self.greeting = Greeting(status, timestamp)
        self._phase = _Phase.IDLE
        self._session.greeted(status.ok)
        return self.greeting

    def _on_status(self, status: StatusLine) -> Reply:
        command = self._pending[0]
        self._session.replied(command.verb, status.ok)
        if status.ok and command.shape in (ReplyShape.LINES, ReplyShape.DATA):
            self._phase = _Phase.LINES if command.shape is ReplyShape.LINES else _Phase.DATA
            self._scan = _BodyScan(bare_lf=self._line_bare_lf)
        else:
            self._complete()
        return Reply(command, status)

    def _complete(self) -> Command:
        command = self._pending.popleft()
        self._sasl_cancelled = False
        self._phase = _Phase.STATUS if self._pending else _Phase.IDLE
        return command

    def _next_listing_line(self) -> Event | None:
        line = self._take_line()
        if line is None:
            return None
        command = self._pending[0]
        if line == b".":
            return End(self._complete())
        scan = self._scan
        scan.size += len(line) + 2
        if command.limit is not None and scan.size > command.limit:
            raise ProtocolError(f"{command.verb} listing larger than {command.limit} octets")
        if line.startswith(b"."):
            line = line[1:]
        return Line(command, line)

    # -- message bodies --------------------------------------------------------

    def _next_data(self) -> Event | None:
        scan = self._scan
        if scan.ended:
            return End(self._complete())
        data = self._scan_lf_body() if scan.bare_lf else self._scan_body()
        if data:
            scan.size += len(data)
            command = self._pending[0]
            if command.limit is not None and scan.size > command.limit:
                raise ProtocolError(f"{command.verb} reply larger than {command.limit} octets")
            return Data(command, data)
        if scan.ended:
            return End(self._complete())
        return None

    def _scan_body(self) -> bytes:
        """Unstuff what is here of a CRLF message, up to its terminator; keep undecided octets.

        Sets ``ended`` once the terminating ``CRLF . CRLF`` has been consumed.
        Only a line that is exactly ``.`` ends the message; a leading dot on
        any other line is removed (RFC 1939 section 3). Octets that could
        still turn out to be part of the terminator (a final CR, or CRLF ``.``)
        stay in the buffer until the next octets decide.
        """
        buf, pos = self._buf, self._pos
        n = len(buf)
        scan = self._scan
        if scan.at_line_start:
            if pos >= n:
                return b""
            if buf[pos] == _DOT:
                rest = n - pos
                if rest == 1 or (rest == 2 and buf[pos + 1] == _CR):
                    return b""  # "." or ".\r": the terminator, or not
                if buf[pos + 1] == _CR and buf[pos + 2] == _LF:
                    self._pos = pos + 3
                    scan.ended = True
                    return b""
                pos += 1  # a stuffed dot
            scan.at_line_start = False
        pieces: list[memoryview] = []
        view = memoryview(buf)
        start = pos
        hits = 0
        while True:
            j = buf.find(b"\r\n.", start)
            if j < 0:
                break
            after = j + 3
            if after < n and buf[after] != _CR:
                pass  # a stuffed dot
            elif after + 1 < n:
                if buf[after + 1] == _LF:
                    pieces.append(view[start : j + 2])
                    self._pos = after + 2
                    scan.ended = True
                    return _join(pieces, buf)
            else:  # "CRLF ." or "CRLF . CR" at the very end: undecided
                pieces.append(view[start : j + 2])
                self._pos = j + 2
                scan.at_line_start = True
                return _join(pieces, buf)
            pieces.append(view[start : j + 2])
            start = after
            hits += 1
            if hits % _BULK_HITS == 0 and start - pos < hits * _BULK_GAP:
                pieces.append(memoryview(self._bulk(start, n)))
                return _join(pieces, buf)
        cut = self._tail_cut(start, n)
        pieces.append(view[start:cut])
        self._pos = cut
        return _join(pieces, buf)

    def _bulk(self, start: int, n: int) -> bytes:
        """Unstuff ``buf[start:]`` (densely stuffed) with one find and one replace."""
        buf = self._buf
        end = buf.find(b"\r\n.\r\n", start)
        if end >= 0:
            self._pos = end + 5
            self._scan.ended = True
            cut = end + 2
        else:
            if buf.endswith(b"\r\n.\r", start):
                cut = n - 2  # undecided: keep ". CR" for the next octets to decide
                self._scan.at_line_start = True
            elif buf.endswith(b"\r\n.", start):
                cut = n - 1
                self._scan.at_line_start = True
            else:
                cut = self._tail_cut(start, n)
            self._pos = cut
        return buf[start:cut].replace(b"\r\n.", b"\r\n")

    def _tail_cut(self, start: int, n: int) -> int:
        """Where to stop in ``buf[start:n]`` (no "CRLF ." in it) so a line end is never split."""
        buf = self._buf
        if buf.endswith(b"\r\n", start):
            self._scan.at_line_start = True
            return n
        if n > start and buf[n - 1] == _CR:
            return n - 1
        return n

    def _scan_lf_body(self) -> bytes:
        """The body of a reply whose status line ended with a bare LF: lines end at LF.

        The terminator is a line that is ``.`` (a CR before its LF is
        tolerated); a leading dot on any other line is removed.
        """
        buf, pos = self._buf, self._pos
        n = len(buf)
        scan = self._scan
        pieces: list[memoryview] = []
        view = memoryview(buf)
        while pos < n:
            if scan.at_line_start and buf[pos] == _DOT:
                if buf.startswith(b".\n", pos) or buf.startswith(b".\r\n", pos):
                    self._pos = buf.index(b"\n", pos) + 1
                    scan.ended = True
                    return _join(pieces, buf)
                if n - pos < 3 and b".\r\n".startswith(buf[pos:n]):
                    break  # "." or ".\r": the terminator, or not
                pos += 1
            end = buf.find(b"\n", pos)
            if end < 0:
                pieces.append(view[pos:n])
                pos = n
                scan.at_line_start = False
                break
            pieces.append(view[pos : end + 1])
            pos = end + 1
            scan.at_line_start = True
        self._pos = pos
        return _join(pieces, buf)

    # -- output ----------------------------------------------------------------

    def send(self, command: Command, *, encoded: bytes | None = None) -> bytes:
        """Check ``command`` against the session and return the bytes to write.

        Raises :class:`ValueError` for an argument that could inject a command
        or break the line limit, :class:`CommandStateError` for a command the
        session does not allow now, and the stored error of a dead session.
        Nothing is queued when it raises. ``encoded`` may pass what
        :meth:`encode` returned for this command earlier in the session (an
        encoding stays valid: UTF8 mode is never left).
        """
        if self._error is not None:
            raise self._error
        line = self._encode(command) if encoded is None else encoded
        self._check_state(command)
        if not self._pending:
            if self._incoming:
                self._fill()
            if self._pos < len(self._buf):
                error = self._unrequested()
                self._fail(error)
                raise error
        self._pending.append(command)
        if self._phase is _Phase.IDLE:
            self._phase = _Phase.STATUS
        return line

    def encode(self, command: Command) -> bytes:
        """The bytes ``command`` would be sent as; ValueError for an argument that could not be."""
        return self._encode(command)

    def _check_state(self, command: Command) -> None:
        last = self._pending[-1].verb if self._pending else None
        refusal = self._session.check(command.verb, last, at_eof=self._eof)
        if refusal is not None:
            raise CommandStateError(refusal)

    def _encode(self, command: Command) -> bytes:
        verb = command.verb
        if not verb.isascii() or not verb.isalnum():
            raise ValueError(f"invalid command verb {verb!r}")
        encoding = "utf-8" if self._session.utf8 else "ascii"
        parts = [verb.encode("ascii")]
        for index, arg in enumerate(command.args):
            if not arg:
                raise ValueError(f"{verb}: empty argument")
            if _CONTROL.search(arg):
                raise ValueError(f"{verb}: control character in {_shown(command, index)}")
            try:
                parts.append(arg.encode(encoding))
            except UnicodeEncodeError:
                raise ValueError(
                    f"{verb}: non-ASCII characters in {_shown(command, index)} need the "
                    "server's UTF8 support (call utf8() first)"
                ) from None
        line = b" ".join(parts) + b"\r\n"
        if len(line) > MAX_COMMAND_LENGTH:
            raise ValueError(f"{verb}: command longer than {MAX_COMMAND_LENGTH} octets")
        return line


def _shown(command: Command, index: int) -> str:
    """How argument ``index`` of ``command`` may appear in an error message."""
    if command.secret and index == len(command.args) - 1:
        return "a secret argument"
    return repr(command.args[index])


def _join(pieces: list[memoryview], buf: bytes) -> bytes:
    """Join pieces of ``buf`` (views into it, or of new bytes), copying only when needed."""
    if len(pieces) == 1:
        piece = pieces[0]
        if piece.obj is buf and len(piece) == len(buf):
            return buf
        return piece.tobytes()
    return b"".join(pieces)
