"""POP3 and POP3_SSL: asyncio streams around the sans-I/O core.

This module only moves bytes and maps replies to results and errors; every
byte is parsed in :mod:`aiopop._protocol` and :mod:`aiopop._parse`.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
import ssl
from types import TracebackType
from typing import Self, overload

from . import _parse
from ._apop import apop_digest
from ._protocol import (
    DEFAULT_MAX_LINE_LENGTH,
    Command,
    Data,
    End,
    Event,
    Greeting,
    Line,
    POP3Protocol,
    Reply,
    ReplyShape,
)
from ._state import State
from .errors import (
    APOPNotOfferedError,
    AuthenticationError,
    CommandStateError,
    ConnectionLostError,
    InsecureLoginError,
    POP3TimeoutError,
    ProtocolError,
    ResponseError,
)
from .types import AuthMethod, ListEntry, Stat, UidEntry

__all__ = ["POP3", "POP3_PORT", "POP3_SSL", "POP3_SSL_PORT"]

logger = logging.getLogger("aiopop")

POP3_PORT = 110
POP3_SSL_PORT = 995
DEFAULT_TIMEOUT = 60.0
DEFAULT_MAX_MESSAGE_SIZE = 128 * 1024 * 1024
_READ_SIZE = 256 * 1024
_CLOSE_TIMEOUT = 2.0
_AUTH_VERBS = frozenset({"USER", "PASS", "APOP"})


class _Reply:
    """A whole reply: its status line and, for multi-line replies, the body."""

    __slots__ = ("body", "lines", "status")

    def __init__(self, status: _parse.StatusLine) -> None:
        self.status = status
        self.lines: builtins.list[bytes] = []
        self.body: builtins.list[bytes] = []


class POP3:
    """An asyncio POP3 client over plain TCP (RFC 1939), named after :class:`poplib.POP3`.

    The constructor does no I/O: ``await connect()``, or use ``async with``,
    which connects on entry. Each command is a coroutine; commands from
    several tasks are sent one after another, each task getting its own reply.

    ``timeout`` bounds connecting (TCP, TLS and greeting) and each command
    from sending it to the end of its reply, in seconds (``None``: no bound).
    When it expires the connection is closed without QUIT and
    :class:`~aiopop.POP3TimeoutError` is raised. ``max_line_length`` bounds
    the greeting, status and listing lines; ``max_message_size`` bounds one
    message returned by :meth:`retr` or :meth:`top` (``None``: no bound).

    Leaving ``async with`` normally sends QUIT, which commits deletions.
    Leaving it by an exception closes the connection *without* QUIT, so the
    server rolls back this session's deletions (RFC 1939 section 6): a
    failure can lead to a message being read twice, never to one being lost.
    """

    default_port = POP3_PORT

    def __init__(
        self,
        host: str,
        port: int | None = None,
        *,
        timeout: float | None = DEFAULT_TIMEOUT,
        max_line_length: int = DEFAULT_MAX_LINE_LENGTH,
        max_message_size: int | None = DEFAULT_MAX_MESSAGE_SIZE,
        local_addr: tuple[str, int] | None = None,
    ) -> None:
        if timeout is not None and timeout <= 0:
            raise ValueError("timeout must be positive or None")
        if max_line_length < 512:
            raise ValueError("max_line_length must be at least 512 (RFC 2449 section 4)")
        self.host = host
        self.port = self.default_port if port is None else port
        self.timeout = timeout
        self.max_line_length = max_line_length
        self.max_message_size = max_message_size
        self.local_addr = local_addr
        self._protocol: POP3Protocol | None = None
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        state = self._protocol.state.value if self._protocol else "not connected"
        return f"<{type(self).__name__} {self.host}:{self.port} {state}>"

    # -- connection --------------------------------------------------------------

    @property
    def is_tls(self) -> bool:
        """True when the connection is encrypted."""
        return False

    @property
    def is_connected(self) -> bool:
        """True while the connection is open and the session usable."""
        return (
            self._writer is not None
            and self._protocol is not None
            and self._protocol.state in (State.AUTHORIZATION, State.TRANSACTION)
        )

    @property
    def state(self) -> State:
        """The session state: ``AUTHORIZATION``, ``TRANSACTION``, ``CLOSED`` ..."""
        return self._protocol.state if self._protocol else State.CLOSED

    async def _open_stream(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection(
            self.host, self.port, local_addr=self.local_addr, limit=_READ_SIZE
        )

    async def connect(self) -> bytes:
        """Connect, read the greeting and return it (as ``getwelcome()`` does).

        Raises :class:`~aiopop.ResponseError` when the server greets with ``-ERR``.
        """
        if self._writer is not None:
            raise CommandStateError("already connected")
        protocol = POP3Protocol(
            max_line_length=self.max_line_length, max_body_size=self.max_message_size
        )
        try:
            async with asyncio.timeout(self.timeout):
                self._reader, self._writer = await self._open_stream()
                self._protocol = protocol
                event = await self._next_event()
        except TimeoutError as exc:
            await self.close()
            raise POP3TimeoutError(f"connecting to {self.host}:{self.port} timed out") from exc
        except BaseException:
            await self.close()
            raise
        assert isinstance(event, Greeting)
        logger.debug("S: %s", _parse.escape(event.status.raw))
        if not event.status.ok:
            await self.close()
            raise ResponseError(
                _parse.escape(event.status.text), event.status.code, command="greeting"
            )
        return event.status.raw

    async def close(self) -> None:
        """Close the connection without QUIT: the server keeps every message.

        Safe to call more than once and on a connection that failed.
        """
        writer = self._writer
        self._writer = None
        self._reader = None
        if self._protocol is not None:
            self._protocol.connection_closed()
        if writer is None:
            return
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError, TimeoutError):
            # A vanished TLS peer must not make close() hang.
            async with asyncio.timeout(_CLOSE_TIMEOUT):
                await writer.wait_closed()

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None and self.is_connected:
            await self.quit()
        else:
            await self.close()

    def getwelcome(self) -> bytes:
        """The greeting line as received, like :meth:`poplib.POP3.getwelcome`."""
        if self._protocol is None or self._protocol.greeting is None:
            raise CommandStateError("not connected")
        return self._protocol.greeting.status.raw

    @property
    def apop_timestamp(self) -> bytes | None:
        """The APOP challenge from the greeting, or None when the server offers no APOP."""
        if self._protocol is None or self._protocol.greeting is None:
            return None
        return self._protocol.greeting.timestamp

    # -- the engine ------------------------------------------------------------------

    async def _next_event(self) -> Event:
        protocol, reader = self._protocol, self._reader
        assert protocol is not None
        assert reader is not None
        while True:
            event = protocol.next_event()
            if event is not None:
                return event
            try:
                data = await reader.read(_READ_SIZE)
            except (ConnectionError, ssl.SSLError) as exc:
                raise ConnectionLostError(f"connection lost: {exc}") from exc
            if data:
                protocol.receive_data(data)
            else:
                protocol.receive_eof()

    async def _execute(self, command: Command) -> _Reply:
        async with self._lock:
            if self._protocol is None or self._writer is None:
                raise CommandStateError("not connected")
            try:
                async with asyncio.timeout(self.timeout):
                    return await self._exchange(command)
            except TimeoutError as exc:
                await self.close()
                raise POP3TimeoutError(f"{command.verb} timed out after {self.timeout} s") from exc
            except (ProtocolError, ConnectionLostError):
                await self.close()
                raise

    async def _exchange(self, command: Command) -> _Reply:
        protocol, writer = self._protocol, self._writer
        assert protocol is not None
        assert writer is not None
        # Replies to commands whose callers were cancelled are still on their way:
        # read them first so they are never taken for this command's reply.
        while protocol.pending:
            await self._next_event()
        data = protocol.send(command)
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("C: %s", command.loggable())
        writer.write(data)
        try:
            await writer.drain()
        except (ConnectionError, ssl.SSLError) as exc:
            raise ConnectionLostError(f"connection lost: {exc}") from exc
        event = await self._next_event()
        assert isinstance(event, Reply)
        assert event.command is command
        status = event.status
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("S: %s", _parse.escape(status.raw))
        reply = _Reply(status)
        if not status.ok or command.shape is ReplyShape.SINGLE:
            return reply
        while True:
            event = await self._next_event()
            if isinstance(event, Data):
                reply.body.append(event.data)
            elif isinstance(event, Line):
                reply.lines.append(event.data)
            else:
                assert isinstance(event, End)
                return reply

    async def _ok(self, command: Command) -> _Reply:
        """Execute ``command`` and raise the matching error for ``-ERR``."""
        reply = await self._execute(command)
        status = reply.status
        if not status.ok:
            error = AuthenticationError if command.verb in _AUTH_VERBS else ResponseError
            raise error(_parse.escape(status.text), status.code, command=command.verb)
        return reply

    async def _simple(self, verb: str, *args: str, secret: bool = False) -> bytes:
        reply = await self._ok(Command(verb, args, secret=secret))
        return reply.status.raw

    # -- authorization ---------------------------------------------------------------

    async def user(self, user: str) -> bytes:
        """Send USER; returns the ``+OK`` line. Raises AuthenticationError on ``-ERR``."""
        return await self._simple("USER", user)

    async def pass_(self, pswd: str) -> bytes:
        """Send PASS (after a successful :meth:`user`); the password is never logged."""
        return await self._simple("PASS", pswd, secret=True)

    async def apop(self, user: str, password: str) -> bytes:
        """Authenticate with APOP: only ``md5(timestamp + password)`` is sent.

        Raises :class:`~aiopop.APOPNotOfferedError`, sending nothing, when the
        greeting had no valid timestamp. APOP resists only a passive
        eavesdropper (MD5, RFC 1939 section 7); prefer TLS.
        """
        timestamp = self.apop_timestamp
        if timestamp is None:
            raise APOPNotOfferedError("the server's greeting offers no APOP timestamp")
        if " " in user:
            raise ValueError("APOP: the user name cannot contain a space")
        digest = apop_digest(timestamp, password.encode("utf-8"))
        return await self._simple("APOP", user, digest, secret=True)

    async def login(self, user: str, password: str, *, allow_cleartext: bool = False) -> AuthMethod:
        """Log in with the best method the server offers, and say which one was used.

        APOP first when the greeting offers it; USER/PASS when it does not,
        or when the server refused APOP other than for a temporary reason
        (``[IN-USE]``, ``[LOGIN-DELAY]``, ``[SYS/TEMP]`` are raised at once).
        USER/PASS sends the password as it is, so on a connection without TLS
        it is refused with :class:`~aiopop.InsecureLoginError` before anything
        is sent, unless ``allow_cleartext`` is true.
        """
        if self.apop_timestamp is not None:
            try:
                await self.apop(user, password)
            except AuthenticationError as exc:
                if exc.is_temporary:
                    raise
                logger.debug("APOP refused (%s); trying USER/PASS", exc)
            else:
                return AuthMethod.APOP
        if not self.is_tls and not allow_cleartext:
            raise InsecureLoginError(
                "USER/PASS would send the password in cleartext; use POP3_SSL, "
                "or pass allow_cleartext=True on a trusted network path"
            )
        await self.user(user)
        await self.pass_(password)
        return AuthMethod.USER

    async def utf8(self) -> bytes:
        """Send UTF8 (RFC 6856): afterwards user names and passwords may be non-ASCII."""
        return await self._simple("UTF8")

    async def capa(self) -> dict[str, builtins.list[str]]:
        """The server's capabilities (RFC 2449): tag in upper case -> its arguments."""
        reply = await self._ok(Command("CAPA", shape=ReplyShape.LINES))
        return dict(_parse.parse_capa_line(line) for line in reply.lines)

    # -- transaction -------------------------------------------------------------------

    async def stat(self) -> Stat:
        """The number of messages and their total size in octets."""
        reply = await self._ok(Command("STAT"))
        return _parse.parse_stat(reply.status.text)

    @overload
    async def list(self) -> builtins.list[ListEntry]: ...
    @overload
    async def list(self, which: int) -> ListEntry: ...

    async def list(self, which: int | None = None) -> builtins.list[ListEntry] | ListEntry:
        """Sizes of all messages not marked deleted, or of message ``which``."""
        if which is not None:
            reply = await self._ok(Command("LIST", (_number(which),)))
            return _parse.parse_list_entry(reply.status.text)
        reply = await self._ok(Command("LIST", shape=ReplyShape.LINES))
        return [_parse.parse_list_entry(line) for line in reply.lines]

    @overload
    async def uidl(self) -> builtins.list[UidEntry]: ...
    @overload
    async def uidl(self, which: int) -> UidEntry: ...

    async def uidl(self, which: int | None = None) -> builtins.list[UidEntry] | UidEntry:
        """Unique ids of all messages not marked deleted, or of message ``which``."""
        if which is not None:
            reply = await self._ok(Command("UIDL", (_number(which),)))
            return _parse.parse_uid_entry(reply.status.text)
        reply = await self._ok(Command("UIDL", shape=ReplyShape.LINES))
        return [_parse.parse_uid_entry(line) for line in reply.lines]

    async def retr(self, which: int) -> bytes:
        """Message ``which`` exactly as the server holds it: CRLF line ends, dots unstuffed."""
        reply = await self._ok(Command("RETR", (_number(which),), ReplyShape.DATA))
        return b"".join(reply.body)

    async def top(self, which: int, howmax: int) -> bytes:
        """The headers of message ``which`` and the first ``howmax`` lines of its body."""
        if isinstance(howmax, bool) or not isinstance(howmax, int) or howmax < 0:
            raise ValueError(f"line count must be a non-negative int, not {howmax!r}")
        command = Command("TOP", (_number(which), str(howmax)), ReplyShape.DATA)
        reply = await self._ok(command)
        return b"".join(reply.body)

    async def dele(self, which: int) -> bytes:
        """Mark message ``which`` deleted; the server removes it only after QUIT."""
        return await self._simple("DELE", _number(which))

    async def rset(self) -> bytes:
        """Unmark every message marked deleted in this session."""
        return await self._simple("RSET")

    async def noop(self) -> bytes:
        """Do nothing; keeps the session alive."""
        return await self._simple("NOOP")

    async def quit(self) -> bytes:
        """End the session: the server commits deletions, then the connection closes.

        Raises :class:`~aiopop.ResponseError` when the server could not
        remove every marked message; the connection is closed either way.
        """
        try:
            return await self._simple("QUIT")
        finally:
            await self.close()


class POP3_SSL(POP3):
    """POP3 over implicit TLS (POP3S, port 995; RFC 8314 prefers it to STLS).

    The certificate and the host name are verified by default with
    :func:`ssl.create_default_context`. Pass ``ssl_context`` for another CA
    (a private one, say); ``server_hostname`` to verify a name other than
    ``host``.
    """

    default_port = POP3_SSL_PORT

    def __init__(
        self,
        host: str,
        port: int | None = None,
        *,
        ssl_context: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
        max_line_length: int = DEFAULT_MAX_LINE_LENGTH,
        max_message_size: int | None = DEFAULT_MAX_MESSAGE_SIZE,
        local_addr: tuple[str, int] | None = None,
    ) -> None:
        super().__init__(
            host,
            port,
            timeout=timeout,
            max_line_length=max_line_length,
            max_message_size=max_message_size,
            local_addr=local_addr,
        )
        self.ssl_context = ssl_context if ssl_context is not None else ssl.create_default_context()
        self.server_hostname = server_hostname

    @property
    def is_tls(self) -> bool:
        """True: the whole session is encrypted."""
        return True

    async def _open_stream(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection(
            self.host,
            self.port,
            ssl=self.ssl_context,
            server_hostname=self.server_hostname or self.host,
            local_addr=self.local_addr,
            limit=_READ_SIZE,
        )


def _number(which: int) -> str:
    """A message number as an argument; numbers start at 1 (RFC 1939 section 5)."""
    if isinstance(which, bool) or not isinstance(which, int) or which < 1:
        raise ValueError(f"message number must be a positive int, not {which!r}")
    return str(which)
