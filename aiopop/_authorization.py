"""The AUTHORIZATION-state commands of :class:`aiopop.POP3`, and what the server can do.

:class:`Authorization` holds USER, PASS, APOP, AUTH, STLS, UTF8 and LANG,
:meth:`~Authorization.login` (whose choices are :mod:`aiopop._login`'s),
and CAPA with its per-session-state memory. It is mixed into
:class:`aiopop.POP3`; its methods say what they need of the client with
the :class:`_Client` protocol.
"""

from __future__ import annotations

import builtins
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, overload

from . import _login, _parse
from ._apop import apop_digest
from ._connection import Connection
from ._errors import APOPNotOfferedError, CommandStateError, ResponseError, SASLError
from ._events import Command, ReplyShape
from ._login import LoginClient, OAuth2Token
from ._parse import StatusLine
from ._state import State
from ._tls import client_context
from ._types import AuthMethod, Capabilities, TLSPolicy
from .sasl import Mechanism

__all__ = ["Authorization", "KnownCapabilities"]


@dataclass(frozen=True, slots=True)
class KnownCapabilities:
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


class _Client(LoginClient, Protocol):
    """What the AUTHORIZATION commands need of the client they are mixed into."""

    tls: TLSPolicy
    ssl_context: ssl.SSLContext | None
    server_hostname: str | None
    _tls_pin: bytes | None
    max_listing_size: int | None
    _caps: KnownCapabilities | None

    def _require(self) -> Connection: ...
    def _refusal(self, command: Command, status: StatusLine) -> ResponseError: ...
    async def _simple(self, verb: str, *args: str, secret: bool = False) -> bytes: ...
    async def _listing(self, verb: str, *args: str) -> builtins.list[bytes]: ...
    async def capa(self) -> Capabilities: ...
    async def stls(
        self, ssl_context: ssl.SSLContext | None = None, *, server_hostname: str | None = None
    ) -> bytes: ...


class Authorization:
    """USER, PASS, APOP, AUTH, STLS, UTF8, LANG, CAPA and login(), for :class:`aiopop.POP3`."""

    _caps: KnownCapabilities | None
    """What CAPA said last, and where (set by :meth:`capa`)."""

    async def user(self: _Client, user: str) -> bytes:
        """Send USER; returns the ``+OK`` line. Raises AuthenticationError on ``-ERR``."""
        return await self._simple("USER", user)

    async def pass_(self: _Client, pswd: str) -> bytes:
        """Send PASS (after a successful :meth:`user`); the password is never logged."""
        return await self._simple("PASS", pswd, secret=True)

    async def apop(self: _Client, user: str, password: str) -> bytes:
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
        self: _Client,
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
        never a password. Gmail and Microsoft 365 want this. When the server
        refuses a token from a callable with ``[AUTH]`` or with no response
        code (it has expired), the callable is called once more, with
        ``refused=`` the refused token if it takes that keyword
        (:class:`~aiopop.TokenSource`), and the fresh token is tried once.

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

    async def auth(self: _Client, mechanism: Mechanism) -> bytes:
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
        self: _Client,
        ssl_context: ssl.SSLContext | None = None,
        *,
        server_hostname: str | None = None,
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
        With the client's ``tls_fingerprint``, the certificate must have that
        fingerprint (:class:`~aiopop.FingerprintMismatchError`, nothing sent
        after the handshake), and the CA and host name checks are left out
        unless ``ssl_context`` asks for them.
        """
        if self.is_tls:
            raise CommandStateError("the connection is already encrypted: STLS again is refused")
        connection = self._require()
        pinned = self._tls_pin is not None
        context = ssl_context or self.ssl_context or client_context(pinned=pinned)
        hostname = server_hostname or self.server_hostname or self.host
        status = await connection.starttls(context, hostname)
        if not status.ok:
            raise self._refusal(Command("STLS"), status)
        self._caps = None
        await self.capabilities()
        return status.raw

    async def utf8(self: _Client) -> bytes:
        """Send UTF8 (RFC 6856): afterwards user names and passwords may be non-ASCII."""
        return await self._simple("UTF8")

    @overload
    async def lang(self: _Client) -> builtins.list[tuple[str, str]]: ...
    @overload
    async def lang(self: _Client, language: str) -> bytes: ...

    async def lang(
        self: _Client, language: str | None = None
    ) -> builtins.list[tuple[str, str]] | bytes:
        """LANG (RFC 6856): the languages on offer as ``(tag, description)``, or choose one.

        ``lang("de")`` asks for German replies and returns the ``+OK`` line;
        ``lang("*")`` the server's default.
        """
        if language is None:
            return [_parse.parse_lang_line(line) for line in await self._listing("LANG")]
        return await self._simple("LANG", language)

    async def capa(self: _Client) -> Capabilities:
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
        self._caps = KnownCapabilities(connection, connection.state, connection.is_tls, caps)
        return caps

    async def capabilities(self: _Client) -> Capabilities:
        """The capabilities, asked once per connection and session state, then remembered.

        What CAPA said is dropped after STLS and after login, as RFC 2449
        and RFC 2595 require; then the server is asked again.
        """
        known = self._caps
        if known is not None and known.still_valid(self._require()):
            return known.capabilities
        return await self.capa()
