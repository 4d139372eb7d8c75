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
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Self, TypeVar, Unpack, overload

from . import _login, _parse
from ._apop import apop_digest
from ._bulk import ManyMessages
from ._commands import check_number, number, refusal
from ._connection import Connection
from ._events import Command, ReplyShape
from ._login import OAuth2Token
from ._options import ClientOptions, OldTLSPolicy, check_options, tls_policy
from ._parse import StatusLine
from ._protocol import DEFAULT_MAX_LINE_LENGTH
from ._replies import LineSink
from ._state import LIVE_STATES, State
from .errors import (
    APOPNotOfferedError,
    CommandStateError,
    ConnectionLostError,
    LoginDelayError,
    ResponseError,
    SASLError,
    response_error,
)
from .sasl import Mechanism
from .types import (
    AuthMethod,
    Capabilities,
    ListEntry,
    SizeListing,
    Stat,
    TLSPolicy,
    UidEntry,
    UidListing,
)

__all__ = ["DEFAULT_TIMEOUT", "POP3", "POP3_PORT", "POP3_SSL", "POP3_SSL_PORT", "ClientOptions"]

logger = logging.getLogger("aiopop")

POP3_PORT = 110
POP3_SSL_PORT = 995
DEFAULT_TIMEOUT = 60.0
"""Seconds one step may take (connecting, a reply, a pause inside a message), by default."""
DEFAULT_MAX_MESSAGE_SIZE = 128 * 1024 * 1024
DEFAULT_MAX_LISTING_SIZE = 16 * 1024 * 1024
DEFAULT_MAX_IN_FLIGHT = 100


@dataclass(frozen=True, slots=True)
class _KnownCapabilities:
    """What CAPA said, and where: valid only on that connection, in that state, over that TLS."""

    connection: Connection
    state: State
    tls: bool
    capabilities: Capabilities

    def still_valid(self, connection: Connection) -> bool:
        return (
            self.connection is connection
            and self.state is connection.state
            and self.tls == connection.is_tls
        )


class POP3(ManyMessages):
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

    ``tls`` (a :data:`~aiopop.types.TLSPolicy`) says when to upgrade with
    STLS (RFC 2595): ``"if-offered"`` (the default) in :meth:`login`,
    whenever CAPA offers it; ``"starttls"`` in :meth:`connect`, which raises
    :class:`~aiopop.TLSRequiredError` (having sent only CAPA and STLS) when
    the server cannot; ``"none"``: never. ``"implicit"`` is
    :class:`POP3_SSL`'s (RFC 8314), which is better still: there is no
    cleartext phase to attack. ``ssl_context`` and ``server_hostname`` are
    used for STLS as :class:`POP3_SSL` uses them. The old keyword
    ``starttls`` (``"required"``, ``"if-offered"``, ``"never"``) still
    works for one minor version, with a DeprecationWarning.

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
        tls: TLSPolicy | None = None,
        ssl_context: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
        starttls: OldTLSPolicy | None = None,
    ) -> None:
        policy = tls_policy(tls, starttls)
        check_options(
            timeout=timeout,
            max_line_length=max_line_length,
            max_message_size=max_message_size,
            max_listing_size=max_listing_size,
            max_in_flight=max_in_flight,
        )
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
        self._connection: Connection | None = None
        self._connecting = False
        self._caps: _KnownCapabilities | None = None
        self.marked = 0
        """Messages whose DELE the server accepted in this session, since the last RSET:
        deleted only when the server answers QUIT ``+OK`` (then 0 again)."""

    def __repr__(self) -> str:
        state = self.state.value if self._connection else "not connected"
        return f"<{type(self).__name__} {self.host}:{self.port} {state}>"

    # -- connection --------------------------------------------------------------

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
        self._connecting = True
        ssl_context, server_hostname = self._ssl_options()
        connection = Connection(
            peer=f"{self.host}:{self.port}",
            timeout=self.timeout,
            max_line_length=self.max_line_length,
            pipelining=self.pipelining,
            max_in_flight=self.max_in_flight,
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
            )
        finally:
            self._connecting = False
        status = greeting.status
        logger.debug("S: %s", _parse.escape(status.raw))
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

    async def close(self) -> None:
        """Close the connection without QUIT: the server keeps every message.

        Commands still queued or running fail with
        :class:`~aiopop.ConnectionClosedError`. Safe to call more than once
        and on a connection that failed. Waits at most 2 s for an orderly
        TLS shutdown, then aborts.
        """
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

    async def login(
        self,
        user: str,
        password: str | None = None,
        *,
        oauth2_token: OAuth2Token | None = None,
        allow_cleartext: bool = False,
        methods: Sequence[AuthMethod | str] | None = None,
        prefer: AuthMethod | None = None,
    ) -> AuthMethod:
        """Log in, making at most two attempts, and say which method was used.

        With a password: STLS first when CAPA offers it (see ``tls``);
        then, over TLS (or with ``allow_cleartext``), the strongest
        challenge-response method offered (SCRAM-SHA-256, SCRAM-SHA-1,
        CRAM-MD5, APOP: the password stays off the wire) and, if it is
        refused, ONE method that sends the password (PLAIN, else LOGIN, else
        USER/PASS), which the server can check against any stored hash; in
        cleartext, the two strongest challenge-response methods. Every
        refused attempt counts against the account on the server, so the
        other methods are held back. ``[IN-USE]``, ``[LOGIN-DELAY]``,
        ``[SYS/TEMP]`` and ``[SYS/PERM]`` are raised at once; when every
        attempt was refused, the last refusal is raised (an
        :class:`~aiopop.AuthenticationError` with the server's text; its
        notes say what was tried, what was held back, and how to pin a
        method). When the server closes the connection after a refusal (RFC
        1939 section 4), the next attempt is made on a new connection.

        ``methods`` (names or :class:`~aiopop.AuthMethod` values) limits the
        choice to those methods, still strongest first and at most two; an
        unknown name raises ValueError, and none of them offered
        :class:`~aiopop.MethodNotOfferedError`, before any credential is sent.
        ``prefer`` is a method that worked before (the value this method
        returned, remembered by the caller): when offered and allowed it is
        tried first, so a steady login makes no failed attempt; a refusal of
        it counts as one of the two.

        With ``oauth2_token`` (a string, or an async callable that returns a
        fresh token; called once per login): OAUTHBEARER, else XOAUTH2, and
        never a password. Gmail and Microsoft 365 want this.

        :class:`~aiopop.InsecureLoginError` means nothing secret was sent:
        the only methods left would have sent it in cleartext.
        """
        if password is not None and oauth2_token is None:
            return await _login.password_login(
                self,
                user,
                password,
                allow_cleartext=allow_cleartext,
                policy=self.tls,
                methods=methods,
                prefer=prefer,
            )
        if oauth2_token is not None and password is None:
            return await _login.oauth2_login(
                self,
                user,
                oauth2_token,
                allow_cleartext=allow_cleartext,
                policy=self.tls,
                methods=methods,
                prefer=prefer,
            )
        raise ValueError("login() takes a password or an oauth2_token (one of them)")

    async def auth(self, mechanism: Mechanism) -> bytes:
        """Authenticate with SASL AUTH (RFC 5034); returns the ``+OK`` line.

        ``mechanism`` is one of :mod:`aiopop.sasl`'s (``ScramSHA256(user,
        password)``, ``XOAuth2(user, token)``...) or your own subclass of
        :class:`aiopop.sasl.Mechanism`. The initial response goes on the AUTH
        line when the line stays within 255 octets, else after the server's
        empty challenge. A challenge that cannot be decoded, longer than the
        mechanism's ``max_challenge``, or one too many is answered ``*``
        (cancel) and raises :class:`~aiopop.SASLError`; so does a server that
        says ``+OK`` without proving itself where the mechanism requires it
        (SCRAM), after which the connection is closed. ``-ERR`` raises
        :class:`~aiopop.AuthenticationError` (or a subclass, by its code).
        """
        connection = self._require()
        status = await connection.authenticate(mechanism)
        if not status.ok:
            raise self._refusal(Command("AUTH"), status)
        try:
            mechanism.verify()
        except SASLError:
            await connection.close()  # logged in to a server that did not prove itself
            raise
        return status.raw

    async def stls(
        self, ssl_context: ssl.SSLContext | None = None, *, server_hostname: str | None = None
    ) -> bytes:
        """Upgrade this connection to TLS with STLS (RFC 2595); returns the ``+OK`` line.

        The certificate and the host name (``server_hostname``, default
        the client's, else ``host``) are verified by
        :func:`ssl.create_default_context` unless ``ssl_context`` (default the
        client's) says otherwise. Octets received after ``+OK`` and
        before the handshake are an injection: :class:`~aiopop.ProtocolError`,
        connection closed. A failed handshake raises its ``ssl.SSLError``
        (an ``OSError``, as in poplib) and closes the connection. A second
        STLS is refused before anything is sent. The capabilities are asked
        again afterwards, as what the server said in the clear proves nothing.
        """
        if self.is_tls:
            raise CommandStateError("the connection is already encrypted: STLS again is refused")
        connection = self._require()
        context = ssl_context or self.ssl_context or ssl.create_default_context()
        hostname = server_hostname or self.server_hostname or self.host
        status = await connection.starttls(context, hostname)
        if not status.ok:
            raise self._refusal(Command("STLS"), status)
        self._caps = None
        await self.capabilities()
        return status.raw

    async def utf8(self) -> bytes:
        """Send UTF8 (RFC 6856): afterwards user names and passwords may be non-ASCII."""
        return await self._simple("UTF8")

    @overload
    async def lang(self) -> builtins.list[tuple[str, str]]: ...
    @overload
    async def lang(self, language: str) -> bytes: ...

    async def lang(self, language: str | None = None) -> builtins.list[tuple[str, str]] | bytes:
        """LANG (RFC 6856): the languages on offer as ``(tag, description)``, or choose one.

        ``lang("de")`` asks for German replies and returns the ``+OK`` line;
        ``lang("*")`` the server's default.
        """
        if language is None:
            return [_parse.parse_lang_line(line) for line in await self._listing("LANG")]
        return await self._simple("LANG", language)

    async def capa(self) -> Capabilities:
        """The server's capabilities (RFC 2449), asked now.

        A server that refuses CAPA (an RFC 1939 server) gives
        ``Capabilities(announced=False)``, not an error.
        """
        command = Command("CAPA", shape=ReplyShape.LINES, limit=self.max_listing_size)
        connection = self._require()
        status, lines = await connection.listing(command)
        if status.ok:
            caps = Capabilities(_parse.parse_capabilities(lines))
        else:
            caps = Capabilities(announced=False)
        # Whether to pipeline is the connection's to decide: it read this reply too.
        self._caps = _KnownCapabilities(connection, connection.state, connection.is_tls, caps)
        return caps

    async def capabilities(self) -> Capabilities:
        """The capabilities, asked once per connection and session state, then remembered.

        What CAPA said is dropped after STLS and after login, as RFC 2449
        and RFC 2595 require; then the server is asked again.
        """
        known = self._caps
        if known is not None and known.still_valid(self._require()):
            return known.capabilities
        return await self.capa()

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


class POP3_SSL(POP3):
    """POP3 over implicit TLS (POP3S, port 995; RFC 8314 prefers it to STLS).

    The certificate and the host name are verified by default with
    :func:`ssl.create_default_context`. Pass ``ssl_context`` for another CA
    (a private one, say); ``server_hostname`` to verify a name other than
    ``host``. The other options are :class:`POP3`'s.
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
        super().__init__(
            host,
            port,
            ssl_context=ssl_context if ssl_context is not None else ssl.create_default_context(),
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
        context = self.ssl_context if self.ssl_context is not None else ssl.create_default_context()
        return context, self.server_hostname or self.host


_Sink = TypeVar("_Sink", bound=LineSink)
