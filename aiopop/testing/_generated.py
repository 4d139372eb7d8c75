"""GeneratedMessage: a deterministic synthetic message of any size, made on the fly."""

from __future__ import annotations

import hashlib
import string
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import ClassVar

__all__ = ["GeneratedMessage", "rechunk", "take_lines"]

_DEFAULT_CHUNK = 65536
_MAX_SEED = 1 << 64
_LONGEST = 80  # the longest line the generator writes, CRLF included
_TEMPLATE_LINES = 96
_ALPHABET = (string.ascii_letters + string.digits + " ,;:-'!?()/+=").encode()
_TO_TEXT = bytes(_ALPHABET[octet % len(_ALPHABET)] for octet in range(256))


def rechunk(pieces: Iterable[bytes], chunk_size: int) -> Iterator[bytes]:
    """Cut a stream of pieces into chunks of exactly ``chunk_size`` octets.

    Only the last chunk may be shorter; no empty chunk is yielded. At most
    one chunk plus one piece is held at a time.
    """
    buffer = bytearray()
    for piece in pieces:
        buffer += piece
        while len(buffer) >= chunk_size:
            yield bytes(buffer[:chunk_size])
            del buffer[:chunk_size]
    if buffer:
        yield bytes(buffer)


def take_lines(pieces: Iterable[bytes], lines: int) -> Iterator[bytes]:
    """Yield ``pieces`` up to and including the ``lines``-th line feed, then stop."""
    if lines <= 0:
        return
    for piece in pieces:
        count = piece.count(b"\n")
        if count < lines:
            yield piece
            lines -= count
            continue
        end = -1
        for _ in range(lines):
            end = piece.index(b"\n", end + 1)
        yield piece[: end + 1]
        return


def _template(seed: int) -> bytes:
    """The body lines that every block repeats after its counter line.

    It starts with the lines a server most easily gets wrong: one that is
    exactly ``.`` (it would end the response unstuffed), one that is ``..``,
    and an empty one. Other lines are mostly 50 to 77 characters, some
    shorter, and some start with ``.`` or ``..``.
    """
    stream = hashlib.shake_256(b"aiopop.testing.GeneratedMessage %d" % seed)
    raw = stream.digest(_TEMPLATE_LINES * _LONGEST)
    lines = [b".", b"..", b""]
    for index in range(_TEMPLATE_LINES):
        source = raw[index * _LONGEST : (index + 1) * _LONGEST]
        length = source[0] % 20 if source[0] < 32 else 50 + source[0] % 28
        text = source[1 : 1 + length].translate(_TO_TEXT)
        if index % 13 == 6:
            text = b".." + text[2:]
        elif index % 5 == 2:
            text = b"." + text[1:]
        lines.append(text)
    return b"".join(line + b"\r\n" for line in lines)


def _counter(block: int, width: int) -> bytes:
    return b"Block %0*d\r\n" % (width, block)


def _tail(block: bytes, length: int) -> bytes:
    """The first lines of ``block``, then one filler line: exactly ``length`` octets.

    ``length`` is at least 2 and at most the block's length plus one; every
    line of the block is at most 79 octets, so the filler has room for its CRLF.
    """
    end = 0
    while length - end > _LONGEST:
        end = block.index(b"\n", end) + 1
    return block[:end] + b"~" * (length - end - 2) + b"\r\n"


@dataclass(frozen=True)
class GeneratedMessage:
    """A synthetic message of exactly ``size`` octets, generated when it is read.

    The content depends only on ``size`` and ``seed``: three header lines
    (From, Subject, Message-ID) and the blank line, then body lines of at
    most 78 characters. Some body lines start with ``.`` or ``..`` (one is
    exactly ``.``), so a server must dot-stuff them and a client must undo
    it; every line ends with CRLF, the last one included. The body repeats a
    block of about 6 KiB whose first line counts the blocks, so a reordered
    or repeated chunk changes the digest.

    A :class:`Mailbox` accepts it wherever it accepts message bytes, and the
    server streams it chunk by chunk, so even a message of gigabytes never
    sits in memory::

        big = GeneratedMessage(100 * 1024 * 1024, seed=7)
        box = Mailbox("secret", [big])
        ...  # RETR 1, then compare the digest of what arrived with big.sha256()

    Raises ValueError if ``size`` is below :attr:`MIN_SIZE` or ``seed`` is
    not in ``range(2**64)``.
    """

    size: int
    """The exact length in octets, as STAT and LIST report it."""
    seed: int = field(default=0, kw_only=True)
    """Selects the content; messages with different seeds differ."""

    MIN_SIZE: ClassVar[int] = 100
    """The smallest size accepted: room for the headers and one body line."""

    def __post_init__(self) -> None:
        if not 0 <= self.seed < _MAX_SEED:
            raise ValueError(f"seed must be in range(2**64), not {self.seed}")
        if self.size < self.MIN_SIZE:
            raise ValueError(f"size must be at least {self.MIN_SIZE} octets, not {self.size}")

    def _header(self) -> bytes:
        """The header section, blank line included: under 100 octets at MIN_SIZE."""
        return (
            b"From: gen@aiopop.test\r\n"
            b"Subject: generated\r\n"
            b"Message-ID: <%d.%x@aiopop.test>\r\n"
            b"\r\n" % (self.size, self.seed)
        )

    def chunks(self, chunk_size: int = _DEFAULT_CHUNK) -> Iterator[bytes]:
        """Yield the content (not dot-stuffed) in chunks of ``chunk_size`` octets.

        Each chunk is generated when it is asked for; only the last one may be
        shorter. Chunks are cut at octet offsets, not at line starts.
        """
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be positive, not {chunk_size}")
        return rechunk(self._pieces(), chunk_size)

    def sha256(self) -> str:
        """The hex SHA-256 digest of the content, generated again chunk by chunk."""
        digest = hashlib.sha256()
        for chunk in self.chunks():
            digest.update(chunk)
        return digest.hexdigest()

    def head(self, lines: int) -> bytes:
        """The header section and the first ``lines`` body lines, as TOP sends them.

        Only that much is generated: the result is at most about
        ``100 + 80 * lines`` octets, and the whole message if it
        has fewer body lines.
        """
        return b"".join(self._head_pieces(lines))

    def _head_pieces(self, lines: int) -> Iterator[bytes]:
        if lines < 0:
            raise ValueError(f"lines must not be negative, not {lines}")
        return take_lines(self._pieces(), self._header().count(b"\n") + lines)

    def _head_chunks(self, lines: int, chunk_size: int = _DEFAULT_CHUNK) -> Iterator[bytes]:
        """:meth:`head` in chunks, for a server that streams TOP."""
        return rechunk(self._head_pieces(lines), chunk_size)

    def _pieces(self) -> Iterator[bytes]:
        """The content in natural pieces: the header, whole blocks, a tail."""
        header = self._header()
        yield header
        template = _template(self.seed)
        body = self.size - len(header)  # at least 2, given MIN_SIZE and the seed range
        width = len(str(body // len(template) + 1))
        block_length = len(_counter(0, width)) + len(template)
        blocks, rest = divmod(body, block_length)
        if rest == 1:  # no line is one octet long: shorten the last block instead
            blocks, rest = blocks - 1, rest + block_length
        for block in range(blocks):
            yield _counter(block, width) + template
        if rest:
            yield _tail(_counter(blocks, width) + template, rest)
