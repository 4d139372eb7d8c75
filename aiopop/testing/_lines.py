"""Bounded line reading from an asyncio stream, for the test servers."""

from __future__ import annotations

import asyncio

__all__ = ["LineReader", "LineTooLong", "strip_crlf"]

# Larger than anything a StreamReader buffers (twice its 64 KiB limit plus one
# transport read of at most 256 KiB), so every read() empties its buffer and
# this class alone knows which bytes have arrived but are not yet consumed.
_CHUNK = 1 << 20


class LineTooLong(Exception):
    """The peer sent more octets than the limit without ending the line."""


def strip_crlf(raw: bytes) -> bytes:
    """Remove a final CRLF; a bare LF, or no terminator at all, is kept."""
    return raw[:-2] if raw.endswith(b"\r\n") else raw


class LineReader:
    """Split a stream into LF-terminated lines of at most ``limit`` octets."""

    def __init__(self, reader: asyncio.StreamReader, limit: int) -> None:
        self._reader = reader
        self._limit = limit
        self._buffer = bytearray()
        self._eof = False

    async def readline(self) -> bytes | None:
        """Return the next line with its terminator, or None at end of stream.

        Octets left without a line feed when the stream ends come back as a
        last line without a terminator. Raises :class:`LineTooLong` once a
        line exceeds the limit, without waiting for the rest of it.
        """
        searched = 0
        while True:
            end = self._buffer.find(b"\n", searched)
            if end >= 0:
                if end + 1 > self._limit:
                    raise LineTooLong
                line = bytes(self._buffer[: end + 1])
                del self._buffer[: end + 1]
                return line
            if len(self._buffer) >= self._limit:
                raise LineTooLong
            if self._eof:
                if not self._buffer:
                    return None
                line = bytes(self._buffer)
                self._buffer.clear()
                return line
            searched = len(self._buffer)
            data = await self._reader.read(_CHUNK)
            if data:
                self._buffer += data
            else:
                self._eof = True

    async def poll_buffered(self) -> bool:
        """Return True if any octet has arrived that no :meth:`readline` returned yet.

        Whatever the underlying StreamReader holds is moved into this reader,
        without waiting for more and without changing the order of the octets,
        so a later :meth:`readline` still sees everything.
        """
        if not self._buffer:
            self._buffer += await self._probe()
        return bool(self._buffer)

    async def take_buffered(self) -> bytes:
        """Remove and return every octet received but not yet read as a line.

        This includes what the underlying StreamReader holds, without waiting
        for more: call it with the transport's reading paused to learn exactly
        what the peer sent so far.
        """
        self._buffer += await self._probe()
        pending = bytes(self._buffer)
        self._buffer.clear()
        return pending

    async def _probe(self) -> bytes:
        """Take what the StreamReader holds right now, without waiting for more."""
        probe = asyncio.ensure_future(self._reader.read(_CHUNK))
        # The probe's first step runs before this task resumes (the ready queue
        # is FIFO), and read() completes in that step iff data is buffered.
        # A read cancelled while waiting has consumed nothing.
        await asyncio.sleep(0)
        if not probe.done():
            probe.cancel()
            await asyncio.wait([probe])
        if probe.cancelled():
            return b""
        data = probe.result()
        if not data:
            self._eof = True
        return data
