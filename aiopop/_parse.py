"""Pure parsers for POP3 server lines: no state, no I/O.

Every function takes the bytes of one line (without its CRLF) or the text of
one status line and either returns a value or raises :class:`ProtocolError`:
a status line that is neither ``+OK`` nor ``-ERR`` breaks the framing, while
bad content in a well-framed reply raises its subclass
:class:`MalformedReplyError`.
All of them run in time linear in their input.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass

from ._errors import MalformedReplyError, ProtocolError
from ._types import ListEntry, SizeListing, Stat, UidEntry, UidListing

__all__ = [
    "SizeListingParser",
    "StatusLine",
    "UidListingParser",
    "escape",
    "find_apop_timestamp",
    "fingerprint_of",
    "format_fingerprint",
    "is_challenge",
    "parse_capa_line",
    "parse_capabilities",
    "parse_challenge",
    "parse_fingerprint",
    "parse_lang_line",
    "parse_list_entry",
    "parse_list_listing",
    "parse_stat",
    "parse_status_line",
    "parse_uid_entry",
    "parse_uid_listing",
]

# Sizes and message numbers beyond 20 digits are not real; this also keeps
# int() away from its quadratic (and capped) path for huge digit strings.
_MAX_DIGITS = 20
_ESCAPE_LIMIT = 512
# The octets of a unique-id, 0x21 to 0x7E (RFC 1939 section 7): deleted, they leave nothing.
_UID_OCTETS = bytes(range(0x21, 0x7F))


@dataclass(frozen=True, slots=True)
class StatusLine:
    """One parsed status line.

    ``raw`` is the line as received (without CRLF), ``text`` what follows the
    indicator and its space, ``code`` an RFC 2449 response code in upper case.
    """

    ok: bool
    text: bytes
    code: str | None
    raw: bytes


def escape(data: bytes | str, limit: int = _ESCAPE_LIMIT) -> str:
    """Make untrusted server text safe to show: decode leniently, escape controls, cap length.

    The result never contains a control character (ANSI escape sequences
    included) and can be read back without ambiguity, as in a Python literal:
    a backslash becomes ``\\\\``; an octet that is not UTF-8 becomes ``\\xNN``
    (always 80 to ff); a control or other unprintable character becomes
    ``\\xNN`` below U+0080, ``\\uNNNN`` or ``\\UNNNNNNNN`` above. Text longer than
    ``limit`` characters is cut and ends in ``...``.
    """
    raw = isinstance(data, bytes)
    text = data.decode("utf-8", "surrogateescape") if isinstance(data, bytes) else data
    if len(text) > limit:
        text = text[:limit] + "..."
    if text.isprintable() and "\\" not in text:
        return text
    return "".join(_escape_char(c, raw) for c in text)


def _escape_char(char: str, raw: bool) -> str:
    if char == "\\":
        return "\\\\"
    if char.isprintable():
        return char
    point = ord(char)
    if raw and 0xDC80 <= point <= 0xDCFF:  # an undecodable octet, from surrogateescape
        return f"\\x{point - 0xDC00:02x}"
    if point < 0x80:
        return f"\\x{point:02x}"
    if point <= 0xFFFF:
        return f"\\u{point:04x}"
    return f"\\U{point:08x}"


def parse_status_line(line: bytes) -> StatusLine:
    """Parse ``+OK text`` / ``-ERR text``; the indicator is matched case-insensitively.

    A NUL anywhere is a :class:`ProtocolError`: RFC 2449 section 4 allows
    no NUL in a status line (its text is at most CHAR, %x01-7F), and one
    would cut the line short for anything that treats it as a C string.
    """
    if b"\0" in line:
        raise ProtocolError(f"NUL in a status line: {escape(line, 80)!r}")
    head, _, text = line.partition(b" ")
    indicator = head.upper()
    if indicator == b"+OK":
        ok = True
    elif indicator == b"-ERR":
        ok = False
    else:
        raise ProtocolError(f"expected +OK or -ERR, got {escape(line, 80)!r}")
    return StatusLine(ok=ok, text=text, code=_response_code(text), raw=line)


def is_challenge(line: bytes) -> bool:
    """True for a SASL continuation line (``+`` then a space or nothing), not ``+OK``."""
    return line == b"+" or line.startswith(b"+ ")


def parse_challenge(line: bytes) -> bytes | None:
    """The decoded challenge of a ``+ base64`` line (RFC 5034 section 4), or None if malformed.

    ``+`` and ``+ `` alone are the empty challenge. Base64 is decoded
    strictly: a character outside the alphabet, or padding anywhere but at
    the end, makes the challenge malformed (the client must cancel).
    """
    payload = line[2:]
    if not payload:
        return b""
    try:
        return base64.b64decode(payload, validate=True)
    except binascii.Error:
        return None


def _response_code(text: bytes) -> str | None:
    """The RFC 2449 section 8 response code at the start of ``text``, if any."""
    if not text.startswith(b"["):
        return None
    end = text.find(b"]", 1)
    if end <= 1:
        return None
    code = text[1:end]
    if not all(0x21 <= b <= 0x7E for b in code):
        return None
    return code.decode("ascii").upper()


def find_apop_timestamp(text: bytes) -> bytes | None:
    """The APOP timestamp of a greeting (RFC 1939 section 7), or None.

    A timestamp is an RFC 822 msg-id: ``<`` local ``@`` domain ``>`` in
    printable ASCII with no space. The first valid one counts. Each byte is
    looked at a bounded number of times, so hostile input (a megabyte of
    ``<``) costs linear time.
    """
    start = text.find(b"<")
    while start >= 0:
        end = text.find(b">", start + 1)
        if end < 0:
            return None
        # The last "<" before end (at worst start itself): the bytes before it
        # cannot hold a valid id.
        start = text.rfind(b"<", start, end)
        candidate = text[start : end + 1]
        if _is_msg_id(candidate):
            return candidate
        start = text.find(b"<", end + 1)
    return None


def _is_msg_id(candidate: bytes) -> bool:
    inner = candidate[1:-1]
    local, at, domain = inner.rpartition(b"@")
    return bool(at and local and domain) and all(0x21 <= b <= 0x7E for b in inner)


def _parse_number(field: bytes, what: str, line: bytes) -> int:
    if not field.isdigit() or len(field) > _MAX_DIGITS:
        raise MalformedReplyError(f"bad {what} in {escape(line, 80)!r}")
    return int(field)


def _two_numbers(line: bytes, what: str) -> tuple[int, int]:
    fields = line.split()
    if len(fields) < 2:
        raise MalformedReplyError(f"malformed {what} line {escape(line, 80)!r}")
    return _parse_number(fields[0], what, line), _parse_number(fields[1], what, line)


def parse_stat(text: bytes) -> Stat:
    """Parse the text of STAT's ``+OK`` (RFC 1939 section 5: count and size, maybe more)."""
    return Stat(*_two_numbers(text, "STAT"))


def parse_list_entry(line: bytes) -> ListEntry:
    """Parse ``number size`` from a LIST line or from LIST n's ``+OK`` text."""
    number, size = _two_numbers(line, "LIST")
    if number == 0:
        raise MalformedReplyError(f"message number 0 in {escape(line, 80)!r}")
    return ListEntry(number, size)


def parse_uid_entry(line: bytes) -> UidEntry:
    """Parse ``number uid`` from a UIDL line or from UIDL n's ``+OK`` text.

    RFC 1939 limits a uid to 70 characters in 0x21-0x7E; the characters are
    checked, the length is left to the line limit because real servers exceed it.
    """
    number, uid = _uid_fields(line)
    return UidEntry(number, uid.decode("ascii"))


def _uid_fields(line: bytes) -> tuple[int, bytes]:
    fields = line.split()
    if len(fields) < 2:
        raise MalformedReplyError(f"malformed UIDL line {escape(line, 80)!r}")
    number = _parse_number(fields[0], "UIDL", line)
    uid = fields[1]
    if number == 0 or uid.translate(None, _UID_OCTETS):
        raise MalformedReplyError(f"bad UIDL line {escape(line, 80)!r}")
    return number, uid


class SizeListingParser:
    """Reads LIST's listing line by line into a :class:`SizeListing`, with no list of lines.

    :meth:`add` raises :class:`MalformedReplyError` for a bad line, and for
    a message number listed twice (RFC 1939 section 5 lists each message
    once; a fetcher misled by a repeat could delete the wrong message).
    """

    __slots__ = ("listing",)

    def __init__(self) -> None:
        self.listing = SizeListing()

    def add(self, line: bytes) -> None:
        """Add one line of the listing (dot-unstuffed, without its line end)."""
        number, size = _two_numbers(line, "LIST")
        if number == 0:
            raise MalformedReplyError(f"message number 0 in {escape(line, 80)!r}")
        try:
            self.listing._append(number, size)
        except ValueError as exc:
            raise MalformedReplyError(f"LIST: {exc}, in {escape(line, 80)!r}") from None


class UidListingParser:
    """Reads UIDL's listing line by line into a :class:`UidListing`, with no list of lines.

    :meth:`add` raises :class:`MalformedReplyError` for a bad line, and for
    a message number listed twice (RFC 1939 section 7: one unique-id a
    message; ``1 NEW`` then ``1 OLD`` would make a fetcher take a message
    it never saw for one it saved, and delete it).
    """

    __slots__ = ("listing",)

    def __init__(self) -> None:
        self.listing = UidListing()

    def add(self, line: bytes) -> None:
        """Add one line of the listing (dot-unstuffed, without its line end)."""
        number, uid = _uid_fields(line)
        try:
            self.listing._append_octets(number, uid)
        except ValueError as exc:
            raise MalformedReplyError(f"UIDL: {exc}, in {escape(line, 80)!r}") from None


def parse_list_listing(lines: Iterable[bytes]) -> SizeListing:
    """A whole LIST listing; MalformedReplyError for a bad line or a repeated message number."""
    parser = SizeListingParser()
    for line in lines:
        parser.add(line)
    return parser.listing


def parse_uid_listing(lines: Iterable[bytes]) -> UidListing:
    """A whole UIDL listing; MalformedReplyError for a bad line or a repeated message number."""
    parser = UidListingParser()
    for line in lines:
        parser.add(line)
    return parser.listing


def parse_capa_line(line: bytes) -> tuple[str, list[str]]:
    """Parse one CAPA line into its upper-cased tag and its arguments (RFC 2449 section 5)."""
    fields = line.decode("utf-8", "replace").split()
    if not fields:
        raise MalformedReplyError("empty CAPA line")
    return fields[0].upper(), fields[1:]


def parse_capabilities(lines: list[bytes]) -> dict[str, list[str]]:
    """A CAPA listing as tag -> arguments; a repeated tag gathers every line's arguments.

    Real servers send odd lines (extra spaces, lower case, vendor tags):
    tags are upper-cased, blank lines skipped, unknown tags kept.
    """
    capabilities: dict[str, list[str]] = {}
    for line in lines:
        if not line.strip():
            continue
        tag, args = parse_capa_line(line)
        capabilities.setdefault(tag, []).extend(args)
    return capabilities


def parse_lang_line(line: bytes) -> tuple[str, str]:
    """One line of LANG's listing (RFC 6856 section 3): the language tag and its description."""
    tag, _, description = line.decode("utf-8", "replace").strip().partition(" ")
    if not tag:
        raise MalformedReplyError("empty LANG line")
    return tag, description.strip()


# -- certificate fingerprints (tls_fingerprint) -------------------------------------------

_FINGERPRINT_HEX = re.compile(r"[0-9a-fA-F]{64}")
_FINGERPRINT_PAIRS = re.compile(r"[0-9a-fA-F]{2}(?::[0-9a-fA-F]{2}){31}")
_ALGORITHM = re.compile(r"([A-Za-z][A-Za-z0-9-]*)[:=]")
_HEX_NAME = re.compile(r"[0-9a-fA-F]+")


def parse_fingerprint(text: object) -> bytes:
    """A SHA-256 certificate fingerprint as its 32 octets.

    Accepted: 64 hex digits, or 32 pairs of them joined by colons, in either
    case, with an optional ``sha256:`` (or ``SHA256:``, ``SHA-256:``)
    prefix. Anything else, and any other algorithm (a SHA-1 fingerprint,
    say), raises ValueError; a value that is not a string, TypeError.
    """
    if not isinstance(text, str):
        raise TypeError(f"a certificate fingerprint is a string, not {type(text).__name__}")
    value = text.strip()
    algorithm = _ALGORITHM.match(value)
    # "AB:" opens a fingerprint; a name with a letter beyond F ("sha256:", "md5:") an algorithm.
    if algorithm is not None and not _HEX_NAME.fullmatch(algorithm[1]):
        name = algorithm[1].upper().replace("-", "")
        if name != "SHA256":
            raise ValueError(
                f"only SHA-256 certificate fingerprints are accepted, not {algorithm[1]}"
            )
        value = value[algorithm.end() :].strip()
    if _FINGERPRINT_HEX.fullmatch(value) or _FINGERPRINT_PAIRS.fullmatch(value):
        return bytes.fromhex(value.replace(":", ""))
    digits = sum(c in "0123456789abcdefABCDEF" for c in value)
    if digits == 40:
        raise ValueError(
            "this looks like a SHA-1 fingerprint: give the certificate's SHA-256 fingerprint"
            " (openssl x509 -noout -fingerprint -sha256)"
        )
    raise ValueError(
        "a SHA-256 certificate fingerprint is 64 hex digits, or 32 pairs joined by colons"
        f" (AB:CD:...), with an optional sha256: prefix; not {escape(text, 120)!r}"
    )


def format_fingerprint(digest: bytes) -> str:
    """``SHA256:AB:CD:...``: how fingerprints are shown (and accepted back)."""
    return "SHA256:" + ":".join(f"{octet:02X}" for octet in digest)


def fingerprint_of(certificate: bytes) -> bytes:
    """The SHA-256 fingerprint of a certificate in DER form."""
    return hashlib.sha256(certificate).digest()
