"""The server's side of the wire: replies as octets, and the checks of what a client sends."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from ._sasl import ServerMechanism
from ._saslprep import saslprep

__all__ = [
    "AUTH_FAILED",
    "IN_USE",
    "TLS_FIRST",
    "UNKNOWN",
    "Authenticate",
    "Reply",
    "Streamed",
    "apop_digest",
    "dot_stuff",
    "err",
    "listing",
    "multiline",
    "ok",
    "password_matches",
    "prep",
    "split_args",
]


def ok(text: str = "") -> bytes:
    return b"+OK " + text.encode() + b"\r\n" if text else b"+OK\r\n"


def err(text: str) -> bytes:
    return b"-ERR " + text.encode() + b"\r\n"


def dot_stuff(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Dot-stuff content given in pieces cut anywhere (RFC 1939 section 3).

    A line that starts with ``.`` gets another one in front, whether or not
    it starts a piece: the piece before tells whether a line starts there.
    """
    at_line_start = True
    for chunk in chunks:
        stuffed = chunk.replace(b"\n.", b"\n..")
        if at_line_start and chunk.startswith(b"."):
            stuffed = b"." + stuffed
        if chunk:
            at_line_start = chunk.endswith(b"\n")
        yield stuffed


def multiline(first: str, body: bytes) -> bytes:
    """A positive multi-line response; ``body`` is CRLF lines, dot-stuffed here."""
    return ok(first) + b"".join(dot_stuff([body])) + b".\r\n"


@dataclass(frozen=True)
class Streamed:
    """A positive multi-line response sent piece by piece, for generated messages.

    ``content`` is CRLF lines ending with a CRLF, not yet dot-stuffed.
    """

    first: bytes
    content: Iterator[bytes]


@dataclass
class Authenticate:
    """An AUTH exchange to run: the mechanism and the decoded initial response."""

    mechanism: ServerMechanism
    initial: bytes | None


Reply = bytes | Streamed | Authenticate


def listing(first: str, lines: list[str]) -> bytes:
    return multiline(first, "".join(line + "\r\n" for line in lines).encode())


AUTH_FAILED = err("[AUTH] Authentication failed.")
# Dovecot's words when a login comes before TLS and plaintext logins are disabled.
TLS_FIRST = err("[AUTH] Plaintext authentication disallowed on non-secure (SSL/TLS) connections.")
IN_USE = err("[IN-USE] Mailbox is locked by another session.")
UNKNOWN = err("Unknown command")


def apop_digest(data: bytes) -> bytes:
    """MD5 of ``timestamp + secret`` in lower-case hex (RFC 1939 section 7).

    Computed here with :mod:`hashlib`, not with the client's code, so that a
    bug in the client's digest cannot pass against this server. On a build
    whose hashlib refuses MD5 (FIPS), APOP logins are refused.
    """
    try:
        return hashlib.md5(data, usedforsecurity=False).hexdigest().encode()
    except ValueError:  # pragma: no cover - FIPS builds only
        return b""


def split_args(arg: bytes | None) -> list[bytes] | None:
    """Arguments separated by single spaces, or None if any is empty."""
    if arg is None:
        return None
    args = arg.split(b" ")
    return None if b"" in args else args


def prep(text: str) -> str | None:
    try:
        return saslprep(text)
    except ValueError:
        return None


def password_matches(given: bytes, stored: str) -> bool:
    try:
        prepared = saslprep(given.decode()).encode()
    except ValueError:  # not UTF-8, or refused by SASLprep
        return False
    return hmac.compare_digest(prepared, saslprep(stored).encode())
