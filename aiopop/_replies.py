"""What the connection does with each reply as it arrives: one collector per command.

Each call object takes the events of its own reply (status line, listing
lines, message data, the end) and completes the future its caller awaits:
a status line, a parsed listing, a whole message, or a
:class:`~aiopop.MessageStream` fed chunk by chunk under a
:class:`Budget`. No I/O here: the connection (anything :class:`Reading`)
pauses and resumes the socket, and makes the futures.
"""

from __future__ import annotations

import collections
import io
from typing import TYPE_CHECKING, Generic, Protocol, TypeVar

from ._auth import AuthExchange
from ._errors import MalformedReplyError
from ._events import Command
from ._parse import StatusLine
from ._stream import MessageStream

if TYPE_CHECKING:
    import asyncio

__all__ = [
    "STREAM_HIGH_WATER",
    "STREAM_LOW_WATER",
    "Budget",
    "Call",
    "CapaProbe",
    "LineSink",
    "Lines",
    "ListingCall",
    "MessageCall",
    "Reading",
    "SaslCall",
    "SingleCall",
    "Sink",
    "StreamCall",
]

STREAM_HIGH_WATER = 4 * 1024 * 1024
"""A stream pauses reading from the socket when this much is waiting for its consumer..."""
STREAM_LOW_WATER = 1024 * 1024
"""...and resumes when the consumer has taken it below this."""


class Reading(Protocol):
    """What a collector needs from its connection."""

    loop: asyncio.AbstractEventLoop

    def pause_reading(self) -> None:
        """Stop reading from the socket."""

    def resume_reading(self) -> None:
        """Read from the socket again."""


class Call:
    """One command from the queue to the last octet of its reply."""

    __slots__ = ("command", "encoded", "in_body")

    def __init__(self, command: Command) -> None:
        self.command = command
        self.encoded: bytes | None = None
        self.in_body = False

    @property
    def abandoned(self) -> bool:
        """True when nobody waits for the result any more (the caller was cancelled)."""
        raise NotImplementedError

    def on_status(self, status: StatusLine, complete: bool) -> None:
        raise NotImplementedError

    def on_line(self, data: bytes) -> None:
        raise NotImplementedError

    def on_data(self, data: bytes) -> None:
        raise NotImplementedError

    def on_end(self) -> None:
        raise NotImplementedError

    def fail(self, exc: BaseException) -> None:
        raise NotImplementedError


class SingleCall(Call):
    """A command whose reply is its status line."""

    __slots__ = ("future",)

    def __init__(self, command: Command, future: asyncio.Future[StatusLine]) -> None:
        super().__init__(command)
        self.future = future

    @property
    def abandoned(self) -> bool:
        return self.future.done()

    def on_status(self, status: StatusLine, complete: bool) -> None:
        if not self.future.done():
            self.future.set_result(status)

    def fail(self, exc: BaseException) -> None:
        if not self.future.done():
            self.future.set_exception(exc)


class SaslCall(SingleCall):
    """AUTH: each challenge is answered at once, inside ``data_received``, by ``exchange``."""

    __slots__ = ("exchange",)

    def __init__(self, exchange: AuthExchange, future: asyncio.Future[StatusLine]) -> None:
        super().__init__(exchange.command, future)
        self.exchange = exchange

    def on_challenge(self, challenge: bytes | None) -> bytes | None:
        """The response; None cancels. SASLError (or a mechanism's error) means cancel too."""
        if self.future.done():
            return None  # the caller went away, or the mechanism failed: cancel the exchange
        return self.exchange.answer(challenge)


class LineSink(Protocol):
    """Where the lines of a listing go as they arrive: a list, or a parser."""

    def add(self, line: bytes, /) -> None:
        """Take one line; MalformedReplyError rejects the reply (the rest is read and dropped)."""


class Lines(list[bytes]):
    """The lines of a listing, kept as they came."""

    add = list.append


Sink = TypeVar("Sink", bound=LineSink)


class ListingCall(Call, Generic[Sink]):
    """A LIST, UIDL or CAPA: the status line, and every line of the listing into ``sink``.

    A line the sink rejects fails the command once the whole reply is in:
    the stream stays in step and the connection open.
    """

    __slots__ = ("error", "future", "sink", "status")

    def __init__(
        self, command: Command, future: asyncio.Future[tuple[StatusLine, Sink]], sink: Sink
    ) -> None:
        super().__init__(command)
        self.future = future
        self.sink: Sink | None = sink
        self.status: StatusLine | None = None
        self.error: MalformedReplyError | None = None

    @property
    def abandoned(self) -> bool:
        return self.future.done()

    def on_status(self, status: StatusLine, complete: bool) -> None:
        self.status = status
        if complete:
            self.on_end()

    def on_line(self, data: bytes) -> None:
        sink = self.sink
        if sink is not None and not self.future.done():
            try:
                sink.add(data)
            except MalformedReplyError as exc:
                self.error = exc
                self.sink = None  # drop what was parsed: nothing of a bad reply is returned

    def on_end(self) -> None:
        sink, self.sink = self.sink, None
        if self.future.done() or self.status is None:
            return
        if self.error is not None:
            self.future.set_exception(self.error)
        elif sink is not None:
            self.future.set_result((self.status, sink))

    def fail(self, exc: BaseException) -> None:
        self.sink = None
        if not self.future.done():
            self.future.set_exception(exc)


class MessageCall(Call):
    """A RETR or TOP read into memory: one growing buffer, handed out without a copy."""

    __slots__ = ("body", "future", "status")

    def __init__(self, command: Command, future: asyncio.Future[tuple[StatusLine, bytes]]) -> None:
        super().__init__(command)
        self.future = future
        self.body: io.BytesIO | None = None
        self.status: StatusLine | None = None

    @property
    def abandoned(self) -> bool:
        return self.future.done()

    def on_status(self, status: StatusLine, complete: bool) -> None:
        self.status = status
        if complete:
            self.on_end()
        else:
            self.body = io.BytesIO()

    def on_data(self, data: bytes) -> None:
        if self.body is not None:
            if self.future.done():
                self.body = None  # the caller is gone: drop the rest
            else:
                self.body.write(data)

    def on_end(self) -> None:
        body, self.body = self.body, None
        if not self.future.done() and self.status is not None:
            # getvalue() hands over BytesIO's own buffer: no second copy of the message.
            self.future.set_result((self.status, b"" if body is None else body.getvalue()))

    def fail(self, exc: BaseException) -> None:
        self.body = None
        if not self.future.done():
            self.future.set_exception(exc)


class CapaProbe(Call):
    """The CAPA the connection sends itself to learn whether it may pipeline.

    The connection reads PIPELINING from every CAPA reply itself; the probe
    only says when its own reply is over (or the connection failed).
    """

    __slots__ = ("future",)

    def __init__(self, command: Command, future: asyncio.Future[None]) -> None:
        super().__init__(command)
        self.future = future

    @property
    def abandoned(self) -> bool:
        return False

    def on_status(self, status: StatusLine, complete: bool) -> None:
        if complete:  # -ERR: an RFC 1939 server without CAPA
            self.on_end()

    def on_line(self, data: bytes) -> None:
        pass

    def on_end(self) -> None:
        if not self.future.done():
            self.future.set_result(None)

    def fail(self, exc: BaseException) -> None:
        self.on_end()


class Budget:
    """Octets of message data received and not yet taken by their consumer.

    Past ``high`` the connection stops reading from the socket, and it reads
    again once consumers took it down to ``low``: what arrives is held to
    the bound, whatever sizes the server announced. One budget may serve
    several pipelined streams (:meth:`aiopop._connection.Connection.stream`): data arrives in
    order, so while a consumer waits on the oldest message everything held
    is that message's, and a consumer that streams a message past its own
    threshold (at most ``high``) never waits on a paused socket.
    """

    __slots__ = ("connection", "held", "high", "low")

    def __init__(self, connection: Reading, high: int, low: int) -> None:
        self.connection = connection
        self.high = high
        self.low = low
        self.held = 0

    def hold(self, octets: int) -> None:
        self.held += octets
        if self.held > self.high:
            self.connection.pause_reading()

    def release(self, octets: int) -> None:
        self.held -= octets
        if self.held <= self.low:
            self.connection.resume_reading()


class StreamCall(Call):
    """A RETR handed to its consumer chunk by chunk, with backpressure."""

    __slots__ = (
        "abandon_requested",
        "budget",
        "chunks",
        "connection",
        "ended",
        "error",
        "future",
        "queued",
        "received",
        "waiter",
    )

    def __init__(
        self,
        command: Command,
        connection: Reading,
        future: asyncio.Future[tuple[StatusLine, MessageStream]],
        budget: Budget,
    ) -> None:
        super().__init__(command)
        self.connection = connection
        self.budget = budget
        self.future = future
        self.chunks: collections.deque[bytes] = collections.deque()
        self.queued = 0
        self.received = 0
        self.ended = False
        self.error: BaseException | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.abandon_requested = False
        future.add_done_callback(self._on_done)

    def _on_done(self, future: asyncio.Future[tuple[StatusLine, MessageStream]]) -> None:
        if future.cancelled():  # nobody will read this message: drop it as it arrives
            self.abandon()

    @property
    def abandoned(self) -> bool:
        return self.abandon_requested or self.future.cancelled()

    def on_status(self, status: StatusLine, complete: bool) -> None:
        self.ended = complete
        if not self.future.done():
            self.future.set_result((status, MessageStream(self)))

    def on_data(self, data: bytes) -> None:
        self.received += len(data)
        if self.abandoned:
            return
        self.chunks.append(data)
        self.queued += len(data)
        self.budget.hold(len(data))
        self._wake()

    def on_end(self) -> None:
        self.ended = True
        self._wake()

    def fail(self, exc: BaseException) -> None:
        if not self.future.done():
            self.future.set_exception(exc)
        elif self.error is None:
            self.error = exc
        self._drop()
        self._wake()

    def abandon(self) -> None:
        """The consumer left early: drop what is queued and the rest as it arrives."""
        self.abandon_requested = True
        self._drop()
        self.connection.resume_reading()

    def read_on(self) -> None:
        """Read from the socket again, even past the budget (see MessageStream.collect)."""
        self.connection.resume_reading()

    def _drop(self) -> None:
        self.chunks.clear()
        self.budget.release(self.queued)
        self.queued = 0

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def next_chunks(self, most: int | None) -> list[bytes]:
        """Up to ``most`` queued chunks (all with None), waiting for one; [] at the end."""
        while True:
            if self.chunks:
                queue = self.chunks
                if most is None or most >= len(queue):
                    taken = list(queue)
                    queue.clear()
                else:
                    taken = [queue.popleft() for _ in range(most)]
                octets = sum(map(len, taken))
                self.queued -= octets
                self.budget.release(octets)
                return taken
            if self.error is not None:
                # Raised again on every later step: the stream never becomes complete.
                raise self.error
            if self.ended:
                return []
            await self.wait()

    async def wait(self) -> None:
        """Until something happens: data, the end, or a failure."""
        self.waiter = self.connection.loop.create_future()
        try:
            await self.waiter
        finally:
            self.waiter = None
