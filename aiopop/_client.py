"""POP3 and POP3_SSL: poplib's API, awaited, over one :class:`~aiopop._connection.Connection`.

This module maps calls to commands and replies to results and errors. It
never touches a socket and never parses bytes itself: the connection moves
the bytes, :mod:`aiopop._protocol` frames them and :mod:`aiopop._parse`
reads the values.
"""

from __future__ import annotations

import builtins
import contextlib
import logging
import socket
import ssl
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Self, TypeVar, Unpack, overload

from . import _login, _parse
from ._authorization import Authorization, KnownCapabilities
from ._bulk import ManyMessages
from ._commands import check_number, number, refusal
from ._connection import Connection
from ._errors import (
    CommandStateError,
    ConnectionLostError,
    LoginDelayError,
    ResponseError,
    response_error,
)
from ._events import Command, ReplyShape
from ._options import ClientOptions, OldTLSPolicy, check_options, pinned_policy, tls_policy
from ._parse import StatusLine, fingerprint_of, format_fingerprint, parse_fingerprint
from ._protocol import DEFAULT_MAX_LINE_LENGTH
from ._replies import LineSink
from ._state import LIVE_STATES, State
from ._tls import client_context
from ._types import (
    ListEntry,
    SizeListing,
    Stat,
    TLSPolicy,
    UidEntry,
    UidListing,
)

__all__ = [
    "DEFAULT_TIMEOUT",
    "POP3",
    "POP3_PORT",
    "POP3_SSL",
    "POP3_SSL_PORT",
    "ClientOptions",
    "Connector",
    "use_connector",
]

logger = logging.getLogger("aiopop")

POP3_PORT = 110
POP3_SSL_PORT = 995
DEFAULT_TIMEOUT = 60.0
"""Seconds one step may take (connecting, a reply, a pause inside a message), by default."""
DEFAULT_MAX_MESSAGE_SIZE = 128 * 1024 * 1024
DEFAULT_MAX_LISTING_SIZE = 16 * 1024 * 1024
DEFAULT_MAX_IN_FLIGHT = 100

Connector = Callable[[], Awaitable[socket.socket]]
"""An async callable that returns a new connected socket to the POP3 server (through a
proxy, a tunnel, another network namespace...), called once for every connection."""


class POP3(Authorization, ManyMessages):
    """An asyncio POP3 client over plain TCP (RFC 1939), named after :class:`poplib.POP3`.

    The constructor does no I/O: ``await connect()``, or use ``async with``,
    which connects on entry. Each command is a coroutine. Commands from
    several tasks may run at once; each task gets its own reply, and when the
    server offers PIPELINING they go out without waiting for each other.

    Options (all keyword-only):

    ``timeout`` (seconds, ``None`` for no bound): connecting (TCP, TLS and
    greeting) must finish within it; so must each status line and each
    listing, counted from when the server starts on that command; a message
    (RETR, TOP) may take as long as it needs while data keeps arriving, and
    fails after ``timeout`` seconds without a single octet. On expiry the
    connection is closed without QUIT and :class:`~aiopop.POP3TimeoutError`
    is raised.

    ``max_line_length`` bounds the greeting, status and listing lines;
    ``max_message_size`` one message returned by :meth:`retr` or :meth:`top`
    (not the streaming :meth:`retr_stream` and :meth:`retr_to_file`);
    ``max_listing_size`` one LIST, UIDL or CAPA reply, in octets (``None``:
    no bound). Exceeding any of them raises :class:`~aiopop.ProtocolError`
    and closes the connection.

    ``pipelining``: ``None`` (the default) pipelines when the server
    announces PIPELINING in CAPA, which is asked once per session state when
    several commands first wait at once; ``True`` pipelines without asking;
    ``False`` never does. ``max_in_flight`` bounds the commands sent and not
    yet answered.

    ``sock``: a socket already connected to the server (through a proxy,
    say), blocking or not, used in place of a TCP connection to
    ``host:port``. The client owns it from then on: it is closed with the
    connection, or by :meth:`close` if never used, and serves one
    connection only (an :class:`~aiopop.Account` with a ``connector`` or a
    ``proxy`` makes a new one for every session). ``host`` still names the
    server: TLS (implicit or STLS) verifies its certificate for ``host`` (or
    ``server_hostname``), never for a proxy's name.

    ``tls`` (a :data:`~aiopop.TLSPolicy`) says when to upgrade with
    STLS (RFC 2595): ``"if-offered"`` (the default) in :meth:`login`,
    whenever CAPA offers it; ``"starttls"`` in :meth:`connect`, which raises
    :class:`~aiopop.TLSRequiredError` (having sent only CAPA and STLS) when
    the server cannot; ``"none"``: never. ``"implicit"`` is
    :class:`POP3_SSL`'s (RFC 8314), which is better still: there is no
    cleartext phase to attack. ``ssl_context`` and ``server_hostname`` are
    used for STLS as :class:`POP3_SSL` uses them. The old keyword
    ``starttls`` (``"required"``, ``"if-offered"``, ``"never"``) still
    works for one minor version, with a DeprecationWarning.

    ``tls_fingerprint`` pins the server's certificate by its SHA-256
    fingerprint (``"SHA256:AB:CD:..."``; 64 hex digits with or without
    colons, in any case, the ``sha256:`` prefix optional; anything else
    raises ValueError): the certificate authority and the host name are
    then not checked (the case of a self-signed certificate), the
    fingerprint is, right after the handshake, and a mismatch raises
    :class:`~aiopop.FingerprintMismatchError` before anything else is sent.
    TLS is then required: ``tls`` defaults to ``"starttls"``, and
    ``"if-offered"`` and ``"none"`` are refused. An ``ssl_context`` given as
    well is used as it is: its own checks apply besides the fingerprint.

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
        max_listing_size: int | None = DEFAULT_MAX_LISTING_SIZE,
        pipelining: bool | None = None,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
        local_addr: tuple[str, int] | None = None,
        sock: socket.socket | None = None,
        tls: TLSPolicy | None = None,
        ssl_context: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
        starttls: OldTLSPolicy | None = None,
        tls_fingerprint: str | None = None,
    ) -> None:
        policy = tls_policy(tls, starttls)
        pin = parse_fingerprint(tls_fingerprint) if tls_fingerprint is not None else None
        if pin is not None:
            policy = pinned_policy(policy, given=tls is not None or starttls is not None)
        check_options(
            timeout=timeout,
            max_line_length=max_line_length,
            max_message_size=max_message_size,
            max_listing_size=max_listing_size,
            max_in_flight=max_in_flight,
        )
        if sock is not None:
            if not isinstance(sock, socket.socket):
                raise TypeError(f"sock must be a socket.socket, not {type(sock).__name__}")
            if sock.type != socket.SOCK_STREAM:
                raise ValueError("sock must be a stream (SOCK_STREAM) socket")
            if local_addr is not None:
                raise ValueError("give sock or local_addr, not both: sock is connected already")
        self.host = host
        self.port = self.default_port if port is None else port
        self.timeout = timeout
        self.max_line_length = max_line_length
        self.max_message_size = max_message_size
        self.max_listing_size = max_listing_size
        self.pipelining = pipelining
        self.max_in_flight = max_in_flight
        self.local_addr = local_addr
        self.tls: TLSPolicy = policy
        """When this client upgrades with STLS (``"implicit"`` on :class:`POP3_SSL`)."""
        self.ssl_context = ssl_context
        self.server_hostname = server_hostname
        self._tls_pin = pin
        self._sock = sock
        self._connector: Connector | None = None
        self._connection: Connection | None = None
        self._connecting = False
        self._caps: KnownCapabilities | None = None
        self.marked = 0
        """Messages whose DELE the server accepted in this session, since the last RSET:
        deleted only when the server answers QUIT ``+OK`` (then 0 again)."""

    def __repr__(self) -> str:
        state = self.state.value if self._connection else "not connected"
        return f"<{type(self).__name__} {self.host}:{self.port} {state}>"

    # -- connection --------------------------------------------------------------

    @property
    def tls_fingerprint(self) -> str | None:
        """The pinned certificate's SHA-256 fingerprint (``SHA256:AB:CD:...``), or None."""
        return format_fingerprint(self._tls_pin) if self._tls_pin is not None else None

    @property
    def certificate_fingerprint(self) -> str | None:
        """The SHA-256 fingerprint of the certificate the server presented on this
        connection (``SHA256:AB:CD:...``), once TLS is up; else None."""
        connection = self._connection
        certificate = connection.peer_certificate if connection is not None else None
        return format_fingerprint(fingerprint_of(certificate)) if certificate else None

    @property
    def is_tls(self) -> bool:
        """True when the connection is encrypted (after :meth:`stls`)."""
        return self._connection is not None and self._connection.is_tls

    @property
    def is_connected(self) -> bool:
        """True while the connection is open and the session usable."""
        connection = self._connection
        return connection is not None and connection.is_open and connection.state in LIVE_STATES

    @property
    def state(self) -> State:
        """The session state: ``AUTHORIZATION``, ``TRANSACTION``, ``CLOSED`` ..."""
        return self._connection.state if self._connection else State.CLOSED

    def _ssl_options(self) -> tuple[ssl.SSLContext | None, str | None]:
        return None, None

    async def connect(self) -> bytes:
        """Connect, read the greeting and return it (as ``getwelcome()`` does).

        Raises :class:`~aiopop.ResponseError` when the server greets with
        ``-ERR``, and :class:`~aiopop.CommandStateError` at once when this
        client is already connected or connecting.
        """
        if self._connecting:
            raise CommandStateError("connect() is already in progress")
        if self._connection is not None and self._connection.is_open:
            raise CommandStateError("already connected")
        given = self._sock
        opener = self._opener()
        self._connecting = True
        ssl_context, server_hostname = self._ssl_options()
        connection = Connection(
            peer=f"{self.host}:{self.port}",
            timeout=self.timeout,
            max_line_length=self.max_line_length,
            pipelining=self.pipelining,
            max_in_flight=self.max_in_flight,
            tls_fingerprint=self._tls_pin,
        )
        self._connection = connection  # from here on close() reaches it
        self.marked = 0
        try:
            greeting = await connection.open(
                self.host,
                self.port,
                ssl_context=ssl_context,
                server_hostname=server_hostname,
                local_addr=self.local_addr,
                opener=opener,
            )
        except BaseException:
            if given is not None:  # a transport that took it has closed it already
                given.close()
            raise
        finally:
            self._connecting = False
        status = greeting.status
        logger.debug("S: %s", _parse.escape(status.raw), extra={"peer": connection.peer})
        if not status.ok:
            await connection.close()
            raise response_error(_parse.escape(status.text), status.code, command="greeting")
        if self.tls == "starttls" and not self.is_tls:
            try:
                await _login.ensure_tls(self, "starttls")
            except BaseException:
                await connection.close()
                raise
        return status.raw

    def _opener(self) -> Connector | None:
        """What gives the next connection its socket: ``sock`` (once), the connector, or
        None for a TCP connection to ``host:port``."""
        if self._connector is not None:
            return self._connector
        if self._sock is None:
            if self._sock_used:
                raise CommandStateError(
                    "the socket given as sock= served one connection and is closed:"
                    " give a new one (or use an Account with a connector)"
                )
            return None
        sock, self._sock = self._sock, None
        self._sock_used = True

        async def given() -> socket.socket:
            return sock

        return given

    _sock_used = False

    async def close(self) -> None:
        """Close the connection without QUIT: the server keeps every message.

        Commands still queued or running fail with
        :class:`~aiopop.ConnectionClosedError`. Safe to call more than once
        and on a connection that failed. Waits at most 2 s for an orderly
        TLS shutdown, then aborts.
        """
        if self._sock is not None:  # never used: the client owns it all the same
            sock, self._sock = self._sock, None
            self._sock_used = True
            sock.close()
        if self._connection is not None:
            await self._connection.close()

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
            if self.state is State.TRANSACTION:
                await self.quit()  # a failure here matters: deletions were not committed
                return
            # Before login QUIT is a courtesy: the server may have hung up already.
            with contextlib.suppress(ConnectionLostError):
                await self.quit()
            return
        await self.close()
        if exc_type is None and self.marked:
            # No QUIT could be sent: the server rolled the deletions back. Saying
            # nothing would let the caller believe they were done.
            marked, self.marked = self.marked, 0
            raise ConnectionLostError(
                f"the connection to {self.host}:{self.port} ended before QUIT: the server"
                f" rolled back the {marked} deletions of this session (RFC 1939 section 6)"
            )

    def getwelcome(self) -> bytes:
        """The greeting line as received, like :meth:`poplib.POP3.getwelcome`."""
        greeting = self._connection.greeting if self._connection else None
        if greeting is None:
            raise CommandStateError("not connected")
        return greeting.status.raw

    @property
    def apop_timestamp(self) -> bytes | None:
        """The APOP challenge from the greeting, or None when the server offers no APOP."""
        greeting = self._connection.greeting if self._connection else None
        return greeting.timestamp if greeting is not None else None

    # -- sending ---------------------------------------------------------------------

    def _require(self) -> Connection:
        if self._connection is None:
            raise CommandStateError("not connected")
        return self._connection

    async def _ok(self, command: Command) -> StatusLine:
        """Run a single-line command; raise the matching error for ``-ERR``."""
        status = await self._require().command(command)
        if not status.ok:
            raise self._refusal(command, status)
        return status

    def _refusal(self, command: Command, status: StatusLine) -> ResponseError:
        error = refusal(command, status)
        if isinstance(error, LoginDelayError) and self._caps is not None:
            delay = self._caps.capabilities.login_delay
            error.delay = delay.seconds if delay is not None else None
        return error

    async def _simple(self, verb: str, *args: str, secret: bool = False) -> bytes:
        status = await self._ok(Command(verb, args, secret=secret))
        return status.raw

    async def _listing(self, verb: str, *args: str) -> builtins.list[bytes]:
        command = Command(verb, args, shape=ReplyShape.LINES, limit=self.max_listing_size)
        status, lines = await self._require().listing(command)
        if not status.ok:
            raise self._refusal(command, status)
        return lines

    async def _parsed_listing(self, verb: str, sink: _Sink) -> _Sink:
        """A LIST or UIDL listing parsed into ``sink`` as its lines arrive."""
        command = Command(verb, shape=ReplyShape.LINES, limit=self.max_listing_size)
        status, parsed = await self._require().parsed_listing(command, sink)
        if not status.ok:
            raise self._refusal(command, status)
        return parsed

    async def _message(self, command: Command) -> bytes:
        status, body = await self._require().message(command)
        if not status.ok:
            raise self._refusal(command, status)
        return body

    # -- transaction -------------------------------------------------------------------

    async def stat(self) -> Stat:
        """The number of messages and their total size in octets."""
        status = await self._ok(Command("STAT"))
        return _parse.parse_stat(status.text)

    @overload
    async def list(self) -> SizeListing: ...
    @overload
    async def list(self, which: int) -> ListEntry: ...

    async def list(self, which: int | None = None) -> SizeListing | ListEntry:
        """Sizes of all messages not marked deleted, or of message ``which``.

        The whole listing is a :class:`~aiopop.SizeListing`: a sequence of
        :class:`~aiopop.ListEntry` (equal to the list of them) stored in 16
        octets a message. A message number listed twice makes the reply
        malformed: :class:`~aiopop.MalformedReplyError`.
        """
        if which is None:
            parser = await self._parsed_listing("LIST", _parse.SizeListingParser())
            return parser.listing
        status = await self._ok(Command("LIST", (number(which),)))
        entry = _parse.parse_list_entry(status.text)
        check_number("LIST", which, entry.number)
        return entry

    @overload
    async def uidl(self) -> UidListing: ...
    @overload
    async def uidl(self, which: int) -> UidEntry: ...

    async def uidl(self, which: int | None = None) -> UidListing | UidEntry:
        """Unique ids of all messages not marked deleted, or of message ``which``.

        The whole listing is a :class:`~aiopop.UidListing`: a sequence of
        :class:`~aiopop.UidEntry` (equal to the list of them) stored with no
        object per message, with ``by_number()`` and ``by_uid()`` lookups. A
        message number listed twice (``1 NEW`` then ``1 OLD``) makes the
        reply malformed: :class:`~aiopop.MalformedReplyError`, so that no
        fetcher takes a message it never saw for one it already has.
        """
        if which is None:
            parser = await self._parsed_listing("UIDL", _parse.UidListingParser())
            return parser.listing
        status = await self._ok(Command("UIDL", (number(which),)))
        entry = _parse.parse_uid_entry(status.text)
        check_number("UIDL", which, entry.number)
        return entry

    async def retr(self, which: int) -> bytes:
        """Message ``which`` exactly as the server holds it: CRLF line ends, dots unstuffed.

        At most ``max_message_size`` octets are accepted; the message is held
        once in memory. Use :meth:`retr_stream` or :meth:`retr_to_file` for
        messages of any size.
        """
        return await self._message(self._retr_command(which))

    async def top(self, which: int, howmax: int) -> bytes:
        """The headers of message ``which`` and the first ``howmax`` lines of its body."""
        return await self._message(self._top_command(which, howmax))

    async def dele(self, which: int) -> bytes:
        """Mark message ``which`` deleted; the server removes it only after QUIT."""
        reply = await self._simple("DELE", number(which))
        self.marked += 1
        return reply

    async def rset(self) -> bytes:
        """Unmark every message marked deleted in this session."""
        reply = await self._simple("RSET")
        self.marked = 0
        return reply

    async def noop(self) -> bytes:
        """Do nothing; keeps the session alive."""
        return await self._simple("NOOP")

    async def quit(self) -> bytes:
        """End the session: the server commits deletions, then the connection closes.

        Raises :class:`~aiopop.ResponseError` when the server could not
        remove every marked message; the connection is closed either way.
        """
        try:
            reply = await self._simple("QUIT")
            self.marked = 0  # deleted now
            return reply
        finally:
            await self.close()


def use_connector(client: POP3, connector: Connector) -> POP3:
    """Make ``client`` (not yet connected, with no ``sock``) get the socket of each
    connection from ``connector``; returns it. How an :class:`~aiopop.Account` with a
    ``connector`` or a ``proxy`` makes its clients."""
    if client._sock is not None:
        raise ValueError("give sock or a connector, not both")
    if client.local_addr is not None:
        raise ValueError("give local_addr or a connector, not both")
    client._connector = connector
    return client


class POP3_SSL(POP3):
    """POP3 over implicit TLS (POP3S, port 995; RFC 8314 prefers it to STLS).

    The certificate and the host name are verified by default with
    :func:`ssl.create_default_context`. Pass ``ssl_context`` for another CA
    (a private one, say); ``server_hostname`` to verify a name other than
    ``host``; or ``tls_fingerprint`` to pin a certificate (a self-signed
    one) in place of both checks. The other options are :class:`POP3`'s.
    """

    default_port = POP3_SSL_PORT

    def __init__(
        self,
        host: str,
        port: int | None = None,
        *,
        ssl_context: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
        **options: Unpack[ClientOptions],
    ) -> None:
        for name in ("tls", "starttls"):
            if name in options:
                raise TypeError(f"POP3_SSL takes no {name!r}: its TLS is implicit (use POP3)")
        if ssl_context is None:
            ssl_context = client_context(pinned=options.get("tls_fingerprint") is not None)
        super().__init__(
            host,
            port,
            ssl_context=ssl_context,
            server_hostname=server_hostname,
            **options,
        )
        self.tls = "implicit"

    @property
    def is_tls(self) -> bool:
        """True: the whole session is encrypted."""
        return True

    def _ssl_options(self) -> tuple[ssl.SSLContext | None, str | None]:
        # ssl_context is public: a caller may have set it to None; verify by default then.
        context = self.ssl_context
        if context is None:
            context = client_context(pinned=self._tls_pin is not None)
        return context, self.server_hostname or self.host


_Sink = TypeVar("_Sink", bound=LineSink)
