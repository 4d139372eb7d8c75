"""What the ``pop3_server`` pytest fixture hands a test: running servers, clients, a CA.

Nothing here imports pytest: the fixtures themselves live in the plugin
module ``_aiopop_pytest``, which imports this one only when a test asks for
them. These classes also work without pytest::

    ca = LocalCA()
    servers = await POP3ServerFixture.open(ca)
    async with servers.client() as client:
        await client.login(servers.user, servers.password)
    await servers.close()
"""

from __future__ import annotations

import dataclasses
import ipaddress
import ssl
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from aiopop._client import POP3, POP3_SSL
from aiopop._types import TLS_POLICIES, TLSPolicy

from ._faults import Faults
from ._mailbox import Mailbox, Message
from ._server import POP3TestServer
from ._session import SessionRecord

if TYPE_CHECKING:
    import trustme

__all__ = [
    "DEFAULT_MESSAGES",
    "DEFAULT_PASSWORD",
    "DEFAULT_USER",
    "LocalCA",
    "POP3ServerFixture",
    "ServerHandle",
]


DEFAULT_USER = "user"
"""The user name of the mailbox a server gets when no ``mailboxes`` are given."""
DEFAULT_PASSWORD = "password"  # noqa: S105 - a test server's well-known password
"""Its password."""
DEFAULT_MESSAGES: tuple[bytes, ...] = tuple(
    (
        f"From: Alice <alice@example.com>\r\n"
        f"To: User <user@example.com>\r\n"
        f"Subject: {subject}\r\n"
        f"Date: Mon, 01 Jan 2024 0{n}:00:00 +0000\r\n"
        f"Message-ID: <{n}@example.com>\r\n"
        f"\r\n"
        f"{body}\r\n"
    ).encode()
    for n, (subject, body) in enumerate(
        [
            ("Hello", "Hello, world!"),
            ("Lunch?", "Shall we meet at noon?\r\n.\r\nA lone dot above, stuffed on the wire."),
            ("Report", "The numbers are in.\r\n\r\n-- \r\nAlice"),
        ],
        start=1,
    )
)
"""The three messages of that mailbox (CRLF line ends; the second has a lone ``.`` line)."""

_CERT_NAMES = ("127.0.0.1", "::1", "localhost")
_TRUSTME_MISSING = (
    "pop3_server's TLS modes need the trustme package to make certificates: pip install trustme"
)


class LocalCA:
    """A throw-away certificate authority, made with trustme on first use.

    One per pytest session (the ``pop3_ca`` fixture). Its server certificate
    names 127.0.0.1, ::1 and localhost. trustme is imported only when a
    certificate is needed, so tests without TLS run without it.
    """

    def __init__(self) -> None:
        self._ca: trustme.CA | None = None
        self._server_context: ssl.SSLContext | None = None

    @property
    def ca(self) -> trustme.CA:
        """The :class:`trustme.CA`; raises ModuleNotFoundError when trustme is missing."""
        if self._ca is None:
            try:
                import trustme
            except ModuleNotFoundError as exc:
                raise ModuleNotFoundError(_TRUSTME_MISSING, name="trustme") from exc
            self._ca = trustme.CA()
        return self._ca

    def server_context(self) -> ssl.SSLContext:
        """The servers' TLS context, with a certificate for the loopback names."""
        if self._server_context is None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            self.ca.issue_cert(*_CERT_NAMES).configure_cert(context)
            self._server_context = context
        return self._server_context

    def client_context(self) -> ssl.SSLContext:
        """A new client context that verifies as usual and trusts this CA (and no other)."""
        context = ssl.create_default_context(cadata=self.ca.cert_pem.bytes().decode("ascii"))
        return context


class ServerHandle:
    """A running :class:`POP3TestServer` and what a test needs to reach it.

    :attr:`user` and :attr:`password` are those of the server's first
    mailbox (``"user"`` and ``"password"`` unless the test gave mailboxes);
    :meth:`client` makes an unconnected client that trusts the server.
    """

    def __init__(self, server: POP3TestServer, tls: TLSPolicy | None, ca: LocalCA) -> None:
        self.server = server
        """The :class:`POP3TestServer` itself."""
        self.tls: TLSPolicy | None = tls
        """``"implicit"``, ``"starttls"``, ``"if-offered"`` or None (plain TCP, no STLS)."""
        self._ca = ca

    @property
    def host(self) -> str:
        """The address the server listens on (``"127.0.0.1"`` unless asked otherwise)."""
        return self.server.host

    @property
    def port(self) -> int:
        """The port it listens on."""
        return self.server.port

    @property
    def mailboxes(self) -> dict[str, Mailbox]:
        """The server's mailboxes by user name: live objects, see :class:`Mailbox`."""
        return self.server.mailboxes

    @property
    def sessions(self) -> list[SessionRecord]:
        """One :class:`SessionRecord` per connection so far, in order."""
        return self.server.sessions

    @property
    def faults(self) -> Faults:
        """The :class:`Faults` injected; assign to change them for later connections."""
        return self.server.faults

    @faults.setter
    def faults(self, faults: Faults) -> None:
        self.server.faults = faults

    @property
    def user(self) -> str:
        """The user name of the first mailbox."""
        for name in self.server.mailboxes:
            return name
        raise LookupError("this server has no mailboxes")

    @property
    def password(self) -> str:
        """The password of the first mailbox."""
        return self.mailbox.password

    @property
    def mailbox(self) -> Mailbox:
        """The first mailbox: ``mailbox.add(message)`` delivers mail to it."""
        return self.server.mailboxes[self.user]

    @property
    def ca(self) -> trustme.CA:
        """The session's :class:`trustme.CA`, to configure other clients to trust the servers."""
        return self._ca.ca

    def client_ssl_context(self) -> ssl.SSLContext | None:
        """A client TLS context that trusts this server, or None for a plain server."""
        return None if self.tls is None else self._ca.client_context()

    def client(self, **options: Any) -> POP3:
        """An unconnected client for this server: :class:`aiopop.POP3_SSL` for
        implicit TLS, :class:`aiopop.POP3` otherwise, trusting the server's
        certificate. ``options`` go to the constructor (``timeout=5``, or an
        ``ssl_context`` of your own)."""
        context = self.client_ssl_context()
        if context is not None:
            options = {"ssl_context": context, **options}
        if self.tls == "implicit":
            return POP3_SSL(self.host, self.port, **options)
        return POP3(self.host, self.port, **options)

    async def close(self) -> None:
        """Stop the server and drop its connections; the fixture does it at teardown."""
        await self.server.close()

    def __repr__(self) -> str:
        tls = f" tls={self.tls}" if self.tls else ""
        return f"<{type(self).__name__} {self.host}:{self.port}{tls}>"


class POP3ServerFixture(ServerHandle):
    """The value of the ``pop3_server`` fixture.

    It is the handle of a server started for the test with the defaults (one
    mailbox ``"user"``/``"password"`` holding :data:`DEFAULT_MESSAGES`, plain
    TCP, APOP and USER/PASS, PIPELINING), and :meth:`start` starts more,
    with options. Every server is closed when the test ends.
    """

    def __init__(self, server: POP3TestServer, tls: TLSPolicy | None, ca: LocalCA) -> None:
        super().__init__(server, tls, ca)
        self._started: list[ServerHandle] = []

    @classmethod
    async def open(cls, ca: LocalCA) -> POP3ServerFixture:
        """Start the default server and return its handle."""
        server = POP3TestServer({DEFAULT_USER: Mailbox(DEFAULT_PASSWORD, list(DEFAULT_MESSAGES))})
        await server.start()
        return cls(server, None, ca)

    async def start(
        self,
        *,
        mailboxes: Mapping[str, Mailbox] | None = None,
        messages: Sequence[Message] | None = None,
        tls: TLSPolicy | None = None,
        sasl: Sequence[str] = (),
        pipelining: bool = True,
        apop: bool = True,
        user_pass: bool = True,
        faults: Faults | None = None,
        latency: float | None = None,
        close_after_failed_login: bool = False,
        failed_login_delay: float = 0.0,
        host: str = "127.0.0.1",
        **options: Any,
    ) -> ServerHandle:
        """Start another server and return its handle.

        * ``mailboxes``: user names and their :class:`Mailbox`; by default one
          mailbox ``"user"``/``"password"`` with ``messages`` (by default
          :data:`DEFAULT_MESSAGES`). Give one or the other, not both.
        * ``tls``: the words of :data:`aiopop.TLSPolicy`, with one meaning on
          both sides of the connection: ``"implicit"`` (POP3S, TLS from the
          first octet); ``"starttls"`` (STLS offered, and required: a login
          before it is refused); ``"if-offered"`` (STLS offered, cleartext
          logins allowed too); ``"none"`` or None (plain TCP, no STLS). The
          certificate comes from the session's :class:`LocalCA` (needs trustme).
        * ``sasl``: SASL mechanisms to offer (``["SCRAM-SHA-256", "PLAIN"]``).
        * ``pipelining``, ``apop``, ``user_pass``, ``close_after_failed_login``,
          ``failed_login_delay``: as :class:`POP3TestServer` has them.
        * ``faults``: a :class:`Faults`; ``latency``: seconds before each reply
          (shorthand for ``Faults(latency=...)``, overriding that field).
        * ``host``: ``"127.0.0.1"`` or ``"::1"`` (loopback only).
        * any other keyword goes to :class:`POP3TestServer` (``hostname``,
          ``greeting``, ``extra_capabilities``, ``require_utf8_mode``, ...).
        """
        if not _is_loopback(host):
            raise ValueError(
                f"host must be a loopback address such as 127.0.0.1 or ::1, not {host!r}"
            )
        if mailboxes is not None and messages is not None:
            raise ValueError("give mailboxes or messages, not both")
        if tls is not None and tls not in TLS_POLICIES:
            raise ValueError(f"tls must be one of {sorted(TLS_POLICIES)} or None, not {tls!r}")
        if tls == "none":
            tls = None
        for name in ("ssl_context", "starttls_context", "require_tls"):
            if name in options:
                raise TypeError(
                    f"pass tls='implicit', 'starttls' or 'if-offered' rather than {name}"
                )
        if mailboxes is None:
            content = DEFAULT_MESSAGES if messages is None else messages
            mailboxes = {DEFAULT_USER: Mailbox(DEFAULT_PASSWORD, list(content))}
        if latency is not None:
            faults = dataclasses.replace(faults or Faults(), latency=latency)
        if tls == "implicit":
            options["ssl_context"] = self._ca.server_context()
        elif tls is not None:
            options["starttls_context"] = self._ca.server_context()
            options["require_tls"] = tls == "starttls"
        server = POP3TestServer(
            mailboxes,
            host=host,
            sasl=sasl,
            pipelining=pipelining,
            apop=apop,
            user_pass=user_pass,
            faults=faults,
            close_after_failed_login=close_after_failed_login,
            failed_login_delay=failed_login_delay,
            **options,
        )
        await server.start()
        handle = ServerHandle(server, tls, self._ca)
        self._started.append(handle)
        return handle

    async def close(self) -> None:
        """Stop every server the fixture started, the default one last."""
        started, self._started = self._started, []
        for handle in reversed(started):
            await handle.close()
        await super().close()


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
