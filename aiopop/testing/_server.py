"""POP3TestServer: a real RFC 1939 server on a loopback port, for tests and demos."""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import ssl
import time
from collections.abc import Mapping, Sequence

from ._base import LoopbackServer
from ._faults import Faults
from ._mailbox import Mailbox
from ._sasl import MECHANISMS
from ._saslprep import saslprep
from ._session import Options, SessionRecord, run_session

__all__ = ["POP3TestServer"]

_HOSTNAME = re.compile(r"[!-;=?-~]+")  # printable ASCII without "<" and ">"


class POP3TestServer(LoopbackServer):
    """An in-process POP3 server (RFC 1939, with CAPA, UTF8 and STLS).

    Each entry of ``mailboxes`` is a user name and its :class:`Mailbox`; the
    server works on those objects, so a test can inspect them afterwards::

        box = Mailbox("secret", [b"Subject: hi\\r\\n\\r\\nHello\\r\\n"])
        async with POP3TestServer({"alice": box}) as server:
            ...  # connect to server.host, server.port
        assert server.sessions[0].quit

    Options:

    * ``ssl_context``: serve implicit TLS (POP3S) with this server context.
    * ``starttls_context``: offer STLS (RFC 2595) and upgrade with this context.
    * ``require_tls``: with ``starttls_context``, refuse USER, APOP and AUTH
      until STLS succeeded, with Dovecot's ``-ERR [AUTH] Plaintext
      authentication disallowed on non-secure (SSL/TLS) connections.``
    * ``apop``: put an APOP timestamp ``<pid.counter.clock@hostname>`` in the
      greeting. ``apop_accepted=False`` keeps the timestamp but answers APOP
      with ``-ERR Unknown command``, as some servers do.
    * ``user_pass=False``: refuse USER, leaving APOP as the only login.
    * ``hostname``: the name in the timestamp and the sign-off.
    * ``greeting``: the greeting text after ``+OK `` (the timestamp is appended).
    * ``pipelining``: announce PIPELINING in CAPA. Commands are always read
      and answered in order, so pipelined commands work either way, and
      either way :attr:`SessionRecord.pipelined` notes each command that
      arrived before the reply to the previous one was written.
    * ``extra_capabilities``: more lines for CAPA, as given (say ``"PIPELINE"``,
      the spelling Twisted's server uses, or ``"SASL PLAIN"``), after the
      usual ones. Announcing does not implement: the server still supports
      only what the other options say.
    * ``sasl``: the SASL mechanisms to offer for AUTH (RFC 5034), announced in
      CAPA in this order: any of PLAIN, LOGIN, CRAM-MD5, SCRAM-SHA-1,
      SCRAM-SHA-256 (passwords), XOAUTH2, OAUTHBEARER (a token from the
      mailbox's ``tokens``; a bad or expired one gets the error challenge of
      RFC 7628 and Gmail, then ``-ERR [AUTH]``: see :class:`Mailbox` for
      expiring tokens), and
      EXTERNAL (the common name of the TLS client certificate names the
      mailbox; give the server an ``ssl_context`` that asks for one).
      :attr:`SessionRecord.mechanism` says which one logged in.
    * ``require_utf8_mode``: refuse RETR and TOP of a message with non-ASCII
      octets in its header section with ``-ERR [UTF8]`` until the client has
      sent UTF8 (RFC 6856 section 2.1). Body octets are never checked.
    * ``failed_login_delay``: seconds to wait before answering a PASS or
      APOP refused for wrong credentials (``-ERR [AUTH]``), as servers do
      to slow down password guessing.
    * ``close_after_failed_login``: after that ``-ERR [AUTH]`` line, close
      the connection without reading another command, as RFC 1939 section 4
      allows (solid-pop3d does so after 1 to 3 seconds).
    * ``uidl=False``: no UIDL, as some servers have none: it is left out
      of CAPA and answered ``-ERR Unknown command``.
    * ``faults``: failures and latency to inject (see :class:`Faults`):
      drop the connection at a chosen command, or part way through its
      reply; answer chosen commands, or every login, with ``-ERR
      [SYS/TEMP]``; wait before each reply; lie about sizes in LIST
      (``size_error``); name a message number twice in LIST or UIDL
      (``repeat_in_list``, ``repeat_in_uidl``).

    Unique-ids that break RFC 1939 come from the :class:`Mailbox`: two
    messages given one unique-id in ``uids``, or a message added with
    :meth:`Mailbox.add` under the unique-id of one deleted before.

    Login failures answer ``-ERR [AUTH] Authentication failed.``; a mailbox
    that is ``locked``, or held by another session in the TRANSACTION state,
    answers ``-ERR [IN-USE] ...`` after correct credentials. User names and
    passwords may be UTF-8 and are compared after SASLprep.

    :attr:`sessions` gets one :class:`SessionRecord` per connection.
    """

    def __init__(
        self,
        mailboxes: Mapping[str, Mailbox],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        ssl_context: ssl.SSLContext | None = None,
        starttls_context: ssl.SSLContext | None = None,
        require_tls: bool = False,
        apop: bool = True,
        apop_accepted: bool = True,
        user_pass: bool = True,
        hostname: str = "aiopop.test",
        greeting: bytes | None = None,
        pipelining: bool = True,
        require_utf8_mode: bool = True,
        close_after_failed_login: bool = False,
        failed_login_delay: float = 0.0,
        extra_capabilities: Sequence[str] = (),
        sasl: Sequence[str] = (),
        faults: Faults | None = None,
        uidl: bool = True,
    ) -> None:
        super().__init__(host=host, port=port, ssl_context=ssl_context)
        if not _HOSTNAME.fullmatch(hostname):
            raise ValueError(f"hostname must be printable ASCII without spaces or <>: {hostname!r}")
        if greeting is not None and re.search(rb"[\r\n\0]", greeting):
            raise ValueError("greeting must not contain CR, LF or NUL")
        if ssl_context is not None and starttls_context is not None:
            raise ValueError("STLS makes no sense on an implicit TLS port")
        if require_tls and starttls_context is None:
            raise ValueError("require_tls needs a starttls_context to offer STLS with")
        if any(re.search(r"[\x00-\x1f\x7f]", line) or not line for line in extra_capabilities):
            raise ValueError("each extra capability must be a non-empty line without controls")
        unknown = [name for name in sasl if name.upper() not in MECHANISMS]
        if unknown:
            raise ValueError(f"unknown SASL mechanisms {unknown}; known: {sorted(MECHANISMS)}")
        if not failed_login_delay >= 0:  # also refuses NaN
            raise ValueError(f"failed_login_delay must be >= 0, not {failed_login_delay}")
        self.mailboxes: dict[str, Mailbox] = dict(mailboxes)
        """The mailboxes by user name; entries may be added while running."""
        self.sessions: list[SessionRecord] = []
        """One record per connection, in the order they were accepted."""
        self.faults: Faults = Faults() if faults is None else faults
        """The faults to inject; each connection uses the value current when it
        is accepted, so assigning a new one changes only later connections."""
        for name in self.mailboxes:
            saslprep(name)
        self._apop = apop
        self._hostname = hostname
        self._timestamps = itertools.count(1)
        self._options = Options(
            mailboxes=self.mailboxes,
            in_use=set(),
            apop_accepted=apop_accepted,
            user_pass=user_pass,
            hostname=hostname,
            greeting=b"aiopop test POP3 server ready" if greeting is None else greeting,
            pipelining=pipelining,
            require_utf8_mode=require_utf8_mode,
            starttls_context=starttls_context,
            require_tls=require_tls,
            close_after_failed_login=close_after_failed_login,
            failed_login_delay=failed_login_delay,
            extra_capabilities=tuple(extra_capabilities),
            sasl=tuple(name.upper() for name in sasl),
            uidl=uidl,
        )

    def _timestamp(self) -> bytes:
        # RFC 1939 section 7: a msg-id that differs on every greeting.
        serial = next(self._timestamps)
        return f"<{os.getpid()}.{serial}.{time.time_ns()}@{self._hostname}>".encode()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        record = SessionRecord(
            apop_timestamp=self._timestamp() if self._apop else None,
            tls=self.ssl_context is not None,
        )
        self.sessions.append(record)
        try:
            await run_session(self._options, record, reader, writer, self.faults)
        except (OSError, EOFError):
            raise
        except Exception as exc:
            record.error = exc
        finally:
            record.closed = True
