"""One connection to POP3TestServer: the RFC 1939 state machine over a stream."""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import re
from collections.abc import Callable

from ._faults import Faults, matches
from ._generated import GeneratedMessage
from ._lines import LineReader, LineTooLong, strip_crlf
from ._mailbox import Mailbox, Message, headers_of, size_of, top_of
from ._maildrop import Maildrop
from ._record import Options, SessionRecord, State
from ._sasl import Challenge, Success, make_mechanism
from ._saslprep import saslprep
from ._wire import (
    AUTH_FAILED,
    IN_USE,
    TLS_FIRST,
    UNKNOWN,
    Authenticate,
    Reply,
    Streamed,
    apop_digest,
    dot_stuff,
    err,
    listing,
    multiline,
    ok,
    password_matches,
    prep,
    split_args,
)

__all__ = ["MAX_LINE", "Options", "SessionRecord", "State", "dot_stuff", "run_session"]

MAX_LINE = 8192
"""Longest command line accepted, CRLF included; a longer one ends the session."""

_TLS_HANDSHAKE_TIMEOUT = 10.0
_STREAM_CHUNK = 65536  # octets of a generated message written before each drain()
_DIGITS = re.compile(rb"[0-9]{1,18}")
# Keywords and arguments are printable ASCII (RFC 1939 section 3); UTF-8 is
# also allowed in credentials, as the "UTF8 USER" capability announces.
_BAD_ASCII = re.compile(rb"[^\x20-\x7e]")
_BAD_CREDENTIALS = re.compile(rb"[\x00-\x1f\x7f]")
_CREDENTIAL_COMMANDS = frozenset({b"USER", b"PASS", b"APOP", b"AUTH"})


class _Dropped(Exception):
    """Raised to end a session abruptly, as :attr:`Faults.drop_at` asks."""


Handler = Callable[["_Session", "bytes | None"], Reply]


class _Session:
    """The protocol state of one connection; command handlers return replies."""

    def __init__(
        self,
        options: Options,
        record: SessionRecord,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        faults: Faults,
    ) -> None:
        self.options = options
        self.faults = faults
        self.commands = 0
        """Command lines read so far, for the selectors of :class:`Faults`."""
        self.budget: int | None = None
        """Octets still to send before dropping the connection, once a drop is due."""
        self.record = record
        self.lines = LineReader(reader, MAX_LINE)
        self.writer = writer
        self.state = State.AUTHORIZATION
        self.pending_user: str | None = None
        self.after_user: str | None = None
        self.maildrop: Maildrop | None = None
        self.finished = False
        self.tls_requested = False
        self.login_failed = False
        self.sasl_name = ""

    async def run(self) -> None:
        parts = [b"+OK", self.options.greeting, self.record.apop_timestamp or b""]
        await self.delay()
        await self.send(b" ".join(part for part in parts if part) + b"\r\n")
        pipelined = False
        while not self.finished:
            try:
                raw = await self.lines.readline()
            except LineTooLong:
                await self.send(err("Line too long"))
                return
            if raw is None:
                return
            line = strip_crlf(raw)
            self.record.lines.append(line)
            if pipelined:
                self.record.pipelined.append(line)
            if not raw.endswith(b"\n"):
                return  # the connection closed in the middle of a line
            self.commands += 1
            if matches(self.faults.drop_at, self.commands, line):
                if self.faults.drop_after_octets is None:
                    raise _Dropped
                self.budget = self.faults.drop_after_octets
            if line.endswith(b"\n"):
                reply: Reply = err("Command must end with CRLF")
            else:
                reply = self.dispatch(line)
            pipelined = await self.answer(reply)
            if self.budget is not None:
                raise _Dropped  # the whole reply fitted in drop_after_octets

    async def answer(self, reply: Reply) -> bool:
        """Send the reply to a command; True if the next one began to arrive first."""
        await self.delay()
        if self.tls_requested:
            assert isinstance(reply, bytes)
            await self.start_tls(reply)
            return False
        if self.login_failed:
            self.login_failed = False
            await asyncio.sleep(self.options.failed_login_delay)
        # Probe just before writing: any octet already here was sent before
        # the client could have seen this reply.
        early = not self.finished and await self.lines.poll_buffered()
        if isinstance(reply, bytes):
            await self.send(reply)
        elif isinstance(reply, Authenticate):
            await self.authenticate(reply)
        else:
            await self.stream(reply)
        return early

    async def authenticate(self, exchange: Authenticate) -> None:
        """Run a SASL exchange (RFC 5034): challenges out, base64 responses in."""
        step = exchange.mechanism.start(exchange.initial)
        while isinstance(step, Challenge):
            await self.send(b"+ " + base64.b64encode(step.data) + b"\r\n")
            try:
                raw = await self.lines.readline()
            except LineTooLong:
                await self.send(err("Line too long"))
                self.finished = True
                return
            if raw is None or not raw.endswith(b"\n"):
                self.finished = True
                return
            line = strip_crlf(raw)
            self.record.lines.append(line)
            await self.delay()
            if line == b"*":
                await self.send(err("AUTH cancelled by the client"))
                return
            try:
                response = base64.b64decode(line, validate=True)
            except binascii.Error:
                await self.send(err("Malformed base64 in the AUTH response"))
                return
            step = exchange.mechanism.step(response)
        if isinstance(step, Success):
            reply = self.login(step.user, step.mailbox)
            if self.state is State.TRANSACTION:
                self.record.mechanism = self.sasl_name
        elif step.credentials:
            self.refuse_login()  # may end the session after this reply
            self.login_failed = False
            await asyncio.sleep(self.options.failed_login_delay)
            reply = err(f"[AUTH] {step.text}")
        else:
            reply = err(step.text)
        await self.send(reply)

    async def delay(self) -> None:
        """Wait as :attr:`Faults.latency` says, before a reply."""
        if self.faults.latency:
            await asyncio.sleep(self.faults.latency)

    def write(self, data: bytes) -> None:
        """Write ``data``, or as much of it as a due drop allows, then raise _Dropped."""
        budget = self.budget
        if budget is None:
            self.writer.write(data)
            return
        self.writer.write(data[:budget])
        if len(data) >= budget:
            raise _Dropped
        self.budget = budget - len(data)

    async def send(self, data: bytes) -> None:
        self.write(data)
        await self.writer.drain()

    async def stream(self, reply: Streamed) -> None:
        """Send a multi-line response piece by piece, draining after each piece.

        The next piece is generated only once the transport has taken the
        previous one, so memory stays bounded by a chunk whatever the size.
        """
        self.write(reply.first)
        for piece in dot_stuff(reply.content):
            self.write(piece)
            await self.writer.drain()
        await self.send(b".\r\n")

    async def start_tls(self, reply: bytes) -> None:
        """Answer STLS and run the handshake (RFC 2595 section 4)."""
        assert self.options.starttls_context is not None
        self.tls_requested = False
        # Reading was paused when STLS was read; whatever came after it was
        # sent in cleartext and must not be taken as sent under TLS.
        self.record.discarded_before_tls = await self.lines.take_buffered()
        await self.send(reply)
        await self.writer.start_tls(
            self.options.starttls_context, ssl_handshake_timeout=_TLS_HANDSHAKE_TIMEOUT
        )
        self.record.tls = True

    def release(self) -> None:
        """Give up the mailbox lock, if this session holds one."""
        if self.maildrop is not None:
            self.options.in_use.discard(self.maildrop.name)
            self.maildrop = None

    def dispatch(self, line: bytes) -> Reply:
        keyword, space, rest = line.partition(b" ")
        keyword = keyword.upper()
        arg = rest if space else None
        self.after_user, self.pending_user = self.pending_user, None
        if matches(self.faults.error_at, self.commands, line):
            return err(self.faults.error)
        bad = _BAD_CREDENTIALS if keyword in _CREDENTIAL_COMMANDS else _BAD_ASCII
        if not line:
            return err("Empty command")
        if bad.search(line):
            return err("Invalid characters in command")
        entry = _COMMANDS.get(keyword)
        if entry is None:
            return UNKNOWN
        states, handler = entry
        if self.state not in states:
            return err(f"{keyword.decode()} is not valid in the {self.state.value} state")
        return handler(self, arg)

    # AUTHORIZATION

    def login(self, name: str, mailbox: Mailbox) -> bytes:
        if mailbox.locked or name in self.options.in_use:
            return IN_USE
        self.maildrop = Maildrop(name, mailbox)
        self.options.in_use.add(name)
        self.state = State.TRANSACTION
        self.record.user = name
        count, octets = self.maildrop.totals()
        return ok(f"Mailbox locked and ready, {count} messages ({octets} octets)")

    def lookup(self, name: str) -> tuple[str, Mailbox] | None:
        """The mailbox whose name matches ``name`` after SASLprep, with its key."""
        mailboxes = self.options.mailboxes
        if name in mailboxes:
            return name, mailboxes[name]
        wanted = prep(name)
        if wanted is None:
            return None
        for key, mailbox in mailboxes.items():
            if prep(key) == wanted:
                return key, mailbox
        return None

    def cmd_user(self, arg: bytes | None) -> bytes:
        if self.needs_tls:
            return TLS_FIRST
        if not self.options.user_pass:
            return err("USER/PASS is not available on this server, use APOP")
        if self.after_user is not None:
            return err("Send PASS or QUIT after a successful USER")
        if not arg or b" " in arg:
            return err("Usage: USER name")
        try:
            self.pending_user = arg.decode()
        except UnicodeDecodeError:
            return err("User name is not valid UTF-8")
        return ok("Send the password with PASS")

    def cmd_pass(self, arg: bytes | None) -> bytes:
        raw_name = self.after_user
        if raw_name is None:
            return err("PASS must immediately follow a successful USER")
        if not arg:
            return err("Usage: PASS password")
        found = self.lookup(raw_name)
        if found is None or not password_matches(arg, found[1].password):
            return self.refuse_login()
        reply = self.login(*found)
        if self.state is State.TRANSACTION:
            self.record.mechanism = "USER"
        return reply

    @property
    def needs_tls(self) -> bool:
        """True while a login must wait for STLS (the server's ``require_tls``)."""
        return self.options.require_tls and not self.record.tls

    def refuse_login(self) -> bytes:
        """Refuse wrong credentials: after the delay, and maybe closing (RFC 1939 section 4)."""
        self.login_failed = True
        if self.options.close_after_failed_login:
            self.finished = True
        return AUTH_FAILED

    def cmd_apop(self, arg: bytes | None) -> bytes:
        timestamp = self.record.apop_timestamp
        if timestamp is None or not self.options.apop_accepted:
            return UNKNOWN
        if self.needs_tls:
            return TLS_FIRST
        if self.after_user is not None:
            return err("Send PASS or QUIT after a successful USER")
        args = split_args(arg)
        if args is None or len(args) != 2:
            return err("Usage: APOP name digest")
        try:
            found = self.lookup(args[0].decode())
        except UnicodeDecodeError:
            found = None
        if found is None:
            return self.refuse_login()
        secret = saslprep(found[1].password).encode()
        if not hmac.compare_digest(args[1], apop_digest(timestamp + secret)):
            return self.refuse_login()
        reply = self.login(*found)
        if self.state is State.TRANSACTION:
            self.record.mechanism = "APOP"
        return reply

    def cmd_auth(self, arg: bytes | None) -> Reply:
        if arg is None:
            # RFC 5034 leaves AUTH without arguments open; list the mechanisms.
            return listing("Mechanisms follow", list(self.options.sasl))
        if self.needs_tls:
            return TLS_FIRST
        if self.after_user is not None:
            return err("Send PASS or QUIT after a successful USER")
        name, _, initial = arg.partition(b" ")
        mechanism = name.decode("ascii", "replace").upper()
        if mechanism not in self.options.sasl:
            return err(f"Unsupported authentication mechanism {mechanism}")
        decoded: bytes | None = None
        if initial:
            try:
                decoded = b"" if initial == b"=" else base64.b64decode(initial, validate=True)
            except binascii.Error:
                return err("Malformed base64 in the initial response")
        self.sasl_name = mechanism
        peer = self.peer_name()
        exchange = make_mechanism(
            mechanism, self.lookup, hostname=self.options.hostname, peer_name=peer
        )
        return Authenticate(exchange, decoded)

    def peer_name(self) -> str | None:
        """The common name of the client's TLS certificate, if it presented one."""
        ssl_object = self.writer.get_extra_info("ssl_object")
        certificate = ssl_object.getpeercert() if ssl_object is not None else None
        for field_set in (certificate or {}).get("subject", ()):
            for key, value in field_set:
                if key == "commonName":
                    return str(value)
        return None

    def cmd_utf8(self, arg: bytes | None) -> bytes:
        if arg is not None:
            return err("UTF8 takes no arguments")
        self.record.utf8 = True
        return ok("UTF8 enabled")

    def cmd_stls(self, arg: bytes | None) -> bytes:
        if self.options.starttls_context is None:
            return UNKNOWN
        if arg is not None:
            return err("STLS takes no arguments")
        if self.record.tls:
            return err("Command not permitted when TLS active")
        if self.record.utf8:
            return err("STLS is not permitted after UTF8")
        # Pause now, before any await, so nothing the client sends from here
        # on is read as cleartext: it can only reach us through TLS.
        transport = self.writer.transport
        if isinstance(transport, asyncio.ReadTransport):
            transport.pause_reading()
        self.tls_requested = True
        return ok("Begin TLS negotiation")

    # Both states

    def cmd_capa(self, arg: bytes | None) -> bytes:
        if arg is not None:
            return err("CAPA takes no arguments")
        capabilities = ["TOP", "UIDL"] if self.options.uidl else ["TOP"]
        if self.options.user_pass:
            capabilities.append("USER")
        capabilities += ["RESP-CODES", "AUTH-RESP-CODE"]
        if self.options.sasl:
            capabilities.append(" ".join(("SASL", *self.options.sasl)))
        if self.options.pipelining:
            capabilities.append("PIPELINING")
        if (
            self.options.starttls_context is not None
            and not self.record.tls
            and self.state is State.AUTHORIZATION
        ):
            capabilities.append("STLS")
        capabilities += ["UTF8 USER", "IMPLEMENTATION aiopop-testing"]
        capabilities += self.options.extra_capabilities
        return listing("Capability list follows", capabilities)

    def cmd_quit(self, arg: bytes | None) -> bytes:
        if arg is not None:
            return err("QUIT takes no arguments")
        self.finished = True
        self.record.quit = True
        signoff = f"{self.options.hostname} POP3 server signing off"
        if self.maildrop is None:
            return ok(signoff)
        self.state = State.UPDATE
        self.maildrop.mailbox._expunge(self.maildrop.deleted)
        left = len(self.maildrop.entries) - len(self.maildrop.deleted)
        self.release()
        return ok(f"{signoff} ({left} messages left)")

    # TRANSACTION

    def drop(self) -> Maildrop:
        assert self.maildrop is not None
        return self.maildrop

    def cmd_stat(self, arg: bytes | None) -> bytes:
        if arg is not None:
            return err("STAT takes no arguments")
        count, octets = self.drop().totals()
        return ok(f"{count} {octets}")

    def cmd_list(self, arg: bytes | None) -> bytes:
        drop = self.drop()
        if arg is None:
            count, octets = drop.totals()
            lines: list[str] = []
            for i in drop.visible():
                lines.append(f"{i + 1} {self.listed_size(i)}")
                if i + 1 in self.faults.repeat_in_list:
                    lines.append(f"{i + 1} {self.faults.repeat_in_list[i + 1]}")
            return listing(f"{count} messages ({octets} octets)", lines)
        index = drop.find(arg)
        if isinstance(index, bytes):
            return index
        return ok(f"{index + 1} {self.listed_size(index)}")

    def listed_size(self, index: int) -> int:
        """The size LIST gives for the message at ``index``: untrue with ``Faults.size_error``."""
        return max(0, size_of(self.drop().entries[index][0]) + self.faults.size_error)

    def cmd_uidl(self, arg: bytes | None) -> bytes:
        if not self.options.uidl:
            return UNKNOWN
        drop = self.drop()
        if arg is None:
            lines: list[str] = []
            for i in drop.visible():
                lines.append(f"{i + 1} {drop.entries[i][1]}")
                if i + 1 in self.faults.repeat_in_uidl:
                    lines.append(f"{i + 1} {self.faults.repeat_in_uidl[i + 1]}")
            return listing("Unique-id listing follows", lines)
        index = drop.find(arg)
        if isinstance(index, bytes):
            return index
        return ok(f"{index + 1} {drop.entries[index][1]}")

    def message(self, arg: bytes) -> bytes | tuple[int, Message]:
        """The index and content of a message to send, or an -ERR reply."""
        index = self.drop().find(arg)
        if isinstance(index, bytes):
            return index
        data = self.drop().entries[index][0]
        if (
            self.options.require_utf8_mode
            and not self.record.utf8
            and not headers_of(data).isascii()
        ):
            return err("[UTF8] Message has UTF-8 headers, issue UTF8 first")
        return index, data

    def cmd_retr(self, arg: bytes | None) -> Reply:
        if arg is None or b" " in arg:
            return err("Usage: RETR msg")
        found = self.message(arg)
        if isinstance(found, bytes):
            return found
        data = found[1]
        first = f"{size_of(data)} octets"
        if isinstance(data, GeneratedMessage):
            return Streamed(ok(first), data.chunks(_STREAM_CHUNK))
        return multiline(first, data)

    def cmd_top(self, arg: bytes | None) -> Reply:
        args = split_args(arg)
        if args is None or len(args) != 2:
            return err("Usage: TOP msg n")
        found = self.message(args[0])
        if isinstance(found, bytes):
            return found
        if not args[1].isdigit():
            return err("Invalid line count")
        data = found[1]
        # More lines than the body has means all of it; cap huge numbers.
        lines = int(args[1]) if len(args[1]) < 10 else size_of(data)
        first = "Top of message follows"
        if isinstance(data, GeneratedMessage):
            return Streamed(ok(first), data._head_chunks(lines, _STREAM_CHUNK))
        return multiline(first, top_of(data, lines))

    def cmd_dele(self, arg: bytes | None) -> bytes:
        if arg is None or b" " in arg:
            return err("Usage: DELE msg")
        drop = self.drop()
        index = drop.find(arg)
        if isinstance(index, bytes):
            return index
        drop.deleted.add(index)
        return ok(f"Message {index + 1} deleted")

    def cmd_noop(self, arg: bytes | None) -> bytes:
        if arg is not None:
            return err("NOOP takes no arguments")
        return ok()

    def cmd_rset(self, arg: bytes | None) -> bytes:
        if arg is not None:
            return err("RSET takes no arguments")
        drop = self.drop()
        drop.deleted.clear()
        count, octets = drop.totals()
        return ok(f"Maildrop has {count} messages ({octets} octets)")


_AUTH = frozenset({State.AUTHORIZATION})
_TRANS = frozenset({State.TRANSACTION})
_BOTH = _AUTH | _TRANS
_COMMANDS: dict[bytes, tuple[frozenset[State], Handler]] = {
    b"USER": (_AUTH, _Session.cmd_user),
    b"PASS": (_AUTH, _Session.cmd_pass),
    b"APOP": (_AUTH, _Session.cmd_apop),
    b"AUTH": (_AUTH, _Session.cmd_auth),
    b"UTF8": (_AUTH, _Session.cmd_utf8),
    b"STLS": (_AUTH, _Session.cmd_stls),
    b"CAPA": (_BOTH, _Session.cmd_capa),
    b"QUIT": (_BOTH, _Session.cmd_quit),
    b"STAT": (_TRANS, _Session.cmd_stat),
    b"LIST": (_TRANS, _Session.cmd_list),
    b"UIDL": (_TRANS, _Session.cmd_uidl),
    b"RETR": (_TRANS, _Session.cmd_retr),
    b"TOP": (_TRANS, _Session.cmd_top),
    b"DELE": (_TRANS, _Session.cmd_dele),
    b"NOOP": (_TRANS, _Session.cmd_noop),
    b"RSET": (_TRANS, _Session.cmd_rset),
}


async def run_session(
    options: Options,
    record: SessionRecord,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    faults: Faults | None = None,
) -> None:
    """Serve one POP3 connection until QUIT, end of stream or a fatal error.

    Only a QUIT in the TRANSACTION state removes messages; a connection that
    ends any other way leaves the mailbox as it was (RFC 1939 section 6).
    ``faults`` are injected as :class:`Faults` describes.
    """
    session = _Session(options, record, reader, writer, faults or Faults())
    try:
        await session.run()
    except _Dropped:
        record.dropped = True
    finally:
        session.release()
