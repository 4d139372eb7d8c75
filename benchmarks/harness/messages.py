"""What the mailboxes hold: messages of an exact size, and the digests a run is checked against.

Messages are in wire form (CRLF line ends, not dot-stuffed): exactly what
RETR must give back. Lines are 80 octets; one line in ``dot_every`` starts
with a ``.``, and every message ends with a line starting with ``.`` and one
starting with ``..``, so the server must dot-stuff and the client unstuff.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from pathlib import Path

__all__ = [
    "REALISTIC_DOT_EVERY",
    "build_message",
    "check_digests",
    "digest",
    "load_manifest",
    "stuffed_reply",
    "write_manifest",
]

REALISTIC_DOT_EVERY = 1000
"""One line in a thousand starts with a dot: about what real mail looks like."""
LINE = b"abcdefghijklmnopqrstuvwxyz0123456789" * 2 + b"ABCDEF\r\n"
"""A filler line: 78 characters and CRLF."""
DOTTED = b"." + LINE[1:]
TAIL = b".this line starts with a dot\r\n..and this one with two\r\n"


def _head(index: int) -> bytes:
    return (
        b"From: Bench Sender <sender@example.test>\r\n"
        b"To: bench@example.test\r\n"
        b"Subject: benchmark message %d\r\n"
        b"Message-ID: <bench-%d@example.test>\r\n"
        b"Date: Tue, 01 Apr 2025 12:00:00 +0000\r\n"
        b"\r\n" % (index, index)
    )


def _filler(octets: int, dot_every: int) -> bytes:
    """Exactly ``octets`` of CRLF lines; line ``k * dot_every`` starts with a dot."""
    full, rest = divmod(octets, len(LINE))
    if rest == 1:
        if full == 0:
            raise ValueError("1 octet cannot be a line")
        full -= 1
        rest += len(LINE)  # one longer last line instead of a lone octet
    if dot_every > 0:
        block = DOTTED + LINE * (dot_every - 1)
        blocks, left = divmod(full, dot_every)
        body = block * blocks + block[: left * len(LINE)]
    else:
        body = LINE * full
    if rest:
        body += (b"x" * rest)[: rest - 2] + b"\r\n"
    return body


def build_message(index: int, size: int, dot_every: int = REALISTIC_DOT_EVERY) -> bytes:
    """Message ``index`` in wire form, exactly ``size`` octets (ValueError when too small)."""
    head = _head(index)
    room = size - len(head) - len(TAIL)
    if room < 0 or room == 1:
        raise ValueError(f"a message of {size} octets is too small: at least {size - room + 2}")
    message = head + _filler(room, dot_every) + TAIL
    assert len(message) == size
    return message


def stuffed_reply(message: bytes) -> bytes:
    """The whole RETR reply a server sends for ``message``: status, stuffed lines, ``.``."""
    stuffed = message.replace(b"\r\n.", b"\r\n..")
    if stuffed.startswith(b"."):
        stuffed = b"." + stuffed
    return b"+OK message follows\r\n" + stuffed + b".\r\n"


def digest(data: bytes) -> str:
    """The hex SHA-256 of ``data``: what a run's messages are compared with."""
    return hashlib.sha256(data).hexdigest()


def write_manifest(path: Path, messages: Iterable[bytes]) -> int:
    """Write the size and digest of every message to ``path`` (JSON); return the total octets."""
    entries = [(len(m), digest(m)) for m in messages]
    path.write_text(json.dumps(entries))
    return sum(size for size, _ in entries)


def load_manifest(path: str) -> list[tuple[int, str]]:
    """The (size, digest) of each stored message, in order."""
    return [(int(size), str(hexdigest)) for size, hexdigest in json.loads(Path(path).read_text())]


def check_digests(client: str, got: Sequence[tuple[int, str]], path: str) -> None:
    """Raise AssertionError unless ``got`` (size, digest per message) is the stored mailbox."""
    expected = load_manifest(path)
    if len(got) != len(expected):
        raise AssertionError(f"{client}: {len(got)} messages, the mailbox holds {len(expected)}")
    for number, (mine, stored) in enumerate(zip(got, expected, strict=True), start=1):
        if mine != stored:
            raise AssertionError(
                f"{client}: message {number} differs from the stored one: {mine[0]} octets, "
                f"expected {stored[0]} (sha256 {mine[1][:16]}... against {stored[1][:16]}...)"
            )
