"""One message as it arrives: :class:`MessageStream`.

Users get streams from :meth:`aiopop.POP3.retr_stream` and
:meth:`aiopop.POP3.retr_each`; they do not build them. A stream reads
from a :class:`MessageSource`, which the connection provides (tests may
provide their own).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

__all__ = ["MessageSource", "MessageStream"]


class MessageSource(Protocol):
    """Where a :class:`MessageStream` takes its chunks from: one message's reply as it arrives."""

    @property
    def received(self) -> int:
        """Octets of message content received so far."""

    @property
    def ended(self) -> bool:
        """True once the whole message has arrived."""

    @property
    def error(self) -> BaseException | None:
        """Why the message will never be complete, once that is known."""

    async def next_chunks(self, most: int | None) -> list[bytes]:
        """Up to ``most`` queued chunks (all with None), waiting for one; [] at the end.

        Raises :attr:`error` once the queued chunks are taken.
        """

    async def wait(self) -> None:
        """Until something happens: data, the end, or a failure."""

    def read_on(self) -> None:
        """Read from the server again, even past the memory budget."""

    def abandon(self) -> None:
        """Drop what is queued, and the rest of the message as it arrives."""


class MessageStream:
    """The octets of one message as they arrive: ``async for chunk in stream``.

    Chunks are dot-unstuffed message content with CRLF line ends, in order;
    together they are exactly what :meth:`aiopop.POP3.retr` returns. Memory
    stays bounded whatever the size: when about 4 MiB is waiting for the
    consumer, the connection stops reading from the socket until the
    consumer catches up (and the inactivity timeout is suspended meanwhile).

    Streams come from :meth:`aiopop.POP3.retr_stream` and
    :meth:`aiopop.POP3.retr_each`.
    """

    __slots__ = ("_source",)

    def __init__(self, source: MessageSource) -> None:
        self._source = source

    def __repr__(self) -> str:
        state = "complete" if self.complete else "receiving"
        return f"<MessageStream {state}, {self.received} octets received>"

    @property
    def received(self) -> int:
        """Octets of message content received so far."""
        return self._source.received

    @property
    def complete(self) -> bool:
        """True once the whole message has arrived (and was handed out or is queued)."""
        return self._source.ended

    def discard(self) -> None:
        """Drop the rest: what is queued and what is still to come (read, not kept).

        The session stays in step; the next command's reply follows once
        the rest of this message has gone by. Leaving :meth:`aiopop.POP3.retr_stream`'s
        block or moving on in :meth:`aiopop.POP3.retr_each` does this.
        """
        self._source.abandon()

    def __aiter__(self) -> MessageStream:
        return self

    async def __anext__(self) -> bytes:
        chunks = await self._source.next_chunks(1)
        if not chunks:
            raise StopAsyncIteration
        return chunks[0]

    async def batches(self) -> AsyncIterator[list[bytes]]:
        """The same content as lists of every chunk that arrived since the last step.

        For consumers that write in bulk (one system call for many chunks):
        fewer wake-ups, the same octets in the same order.
        """
        while chunks := await self._source.next_chunks(None):
            yield chunks

    async def collect(self, most: int) -> bytes | None:
        """The whole message, if it ends within ``most`` octets; else None.

        Waits until the message is complete, or until more than ``most``
        octets have arrived: then it returns None and takes nothing, and the
        message is read with :meth:`batches` or ``async for`` as usual. For
        a consumer that keeps small messages in memory and writes big ones
        as they arrive, whatever size the server announced. Reading goes on
        while it waits, so up to ``most`` octets are held even where a
        smaller budget (see :meth:`aiopop.POP3.retr_each`) applies.
        """
        source = self._source
        while not source.ended and source.received <= most and source.error is None:
            # Read on, even past the budget: this message is the oldest still coming
            # (every octet held is its own), and at most ``most`` of it is kept.
            source.read_on()
            await source.wait()
        if source.error is not None:
            raise source.error
        if source.received > most:
            return None
        return b"".join(await source.next_chunks(None))
