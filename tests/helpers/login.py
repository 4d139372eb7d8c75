"""What the tests of login() and the AUTHORIZATION commands share: the mailbox, servers."""

from __future__ import annotations

import base64
import contextlib

import trustme

import aiopop
from aiopop.testing import POP3TestServer
from tests.helpers.tls import client_context

PASSWORD = "tanstaaf"
TOKEN = "ya29.a0-access-token"
MESSAGE = b"Subject: hi\r\n\r\nHello\r\n"
PASSWORD_MECHANISMS = ["PLAIN", "LOGIN", "CRAM-MD5", "SCRAM-SHA-1", "SCRAM-SHA-256"]


def verbs(server: POP3TestServer, index: int = 0) -> list[bytes]:
    """The first word of each line the client sent in session ``index``."""
    return [line.split(b" ")[0] for line in server.sessions[index].lines]


def attempts(server: POP3TestServer) -> list[str]:
    """Every login attempt that reached the server, over all its connections, in order.

    An attempt is AUTH naming a mechanism (its name), APOP, or PASS (as "USER").
    """
    found: list[str] = []
    for record in server.sessions:
        for line in record.lines:
            verb, _, arg = line.partition(b" ")
            if verb.upper() == b"AUTH" and arg:
                found.append(arg.split(b" ")[0].decode().upper())
            elif verb.upper() == b"APOP":
                found.append("APOP")
            elif verb.upper() == b"PASS":
                found.append("USER")
    return found


def on_the_wire(server: POP3TestServer, secret: str) -> bool:
    """True if ``secret`` reached the server as it is or inside a base64 line."""
    for record in server.sessions:
        for line in record.lines:
            words = [line, *line.split(b" ")]
            decoded = []
            for word in words:
                with contextlib.suppress(ValueError):
                    decoded.append(base64.b64decode(word, validate=True))
            if any(secret.encode() in text for text in words + decoded):
                return True
    return False


WRONG = "not-the-Secret-42"


def tls_client_for(server: POP3TestServer, ca: trustme.CA) -> aiopop.POP3_SSL:
    return aiopop.POP3_SSL(server.host, server.port, ssl_context=client_context(ca), timeout=10)
