"""What a test reads of a session (:class:`SessionRecord`) and the settings it runs with."""

from __future__ import annotations

import enum
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field

from ._mailbox import Mailbox

__all__ = ["Options", "SessionRecord", "State"]


class State(enum.Enum):
    """The session states of RFC 1939."""

    AUTHORIZATION = "AUTHORIZATION"
    TRANSACTION = "TRANSACTION"
    UPDATE = "UPDATE"


@dataclass
class SessionRecord:
    """What happened on one connection to a :class:`POP3TestServer`.

    ``lines`` holds every command line the client sent, in order, as raw bytes
    with the CRLF removed (a line ended by a bare LF keeps it), so a test can
    check what reached the wire, for instance that no ``PASS`` line did.
    """

    lines: list[bytes] = field(default_factory=list)
    """Command lines received, without their CRLF."""
    pipelined: list[bytes] = field(default_factory=list)
    """The lines of :attr:`lines` that had begun to arrive before the server
    wrote its reply to the previous command: the client did not wait for
    that reply (it pipelined, RFC 2449 section 6.6). Recorded whether or not
    the server announces PIPELINING. Octets sent before the greeting, or
    after STLS (see :attr:`discarded_before_tls`), do not count."""
    apop_timestamp: bytes | None = None
    """The ``<...>`` timestamp of the greeting, or None when APOP is off."""
    user: str | None = None
    """The mailbox name once a login succeeded."""
    mechanism: str | None = None
    """How that login succeeded: ``"USER"``, ``"APOP"`` or the SASL mechanism's name."""
    utf8: bool = False
    """True once the client enabled UTF-8 mode (RFC 6856)."""
    tls: bool = False
    """True while the connection runs over TLS (implicit, or after STLS)."""
    discarded_before_tls: bytes = b""
    """Octets the client sent after STLS but before the handshake: dropped."""
    quit: bool = False
    """True if the session ended with a QUIT the server answered."""
    dropped: bool = False
    """True if the server dropped the connection because :class:`Faults` said so
    (a QUIT whose reply was cut still set :attr:`quit`: it was carried out)."""
    closed: bool = False
    """True once the server has finished with the connection."""
    error: Exception | None = None
    """An unexpected server-side error that ended the session (a bug)."""

    @property
    def pipelined_any(self) -> bool:
        """True if the client sent any command before the previous reply."""
        return bool(self.pipelined)

    @property
    def keywords(self) -> list[str]:
        """The command keyword of each line, upper-cased (``"PASS"``, ``"RETR"``)."""
        return [
            line.split(b" ", 1)[0].upper().decode("ascii", "backslashreplace")
            for line in self.lines
        ]


@dataclass(frozen=True)
class Options:
    """The server settings a session needs (see POP3TestServer for each)."""

    mailboxes: Mapping[str, Mailbox]
    """The server's mailboxes by user name (a live view)."""
    in_use: set[str]
    """Names of the mailboxes held by a session in the TRANSACTION state."""
    apop_accepted: bool
    user_pass: bool
    hostname: str
    greeting: bytes
    pipelining: bool
    require_utf8_mode: bool
    starttls_context: ssl.SSLContext | None
    require_tls: bool = False
    close_after_failed_login: bool = False
    failed_login_delay: float = 0.0
    extra_capabilities: tuple[str, ...] = ()
    sasl: tuple[str, ...] = ()
    uidl: bool = True
