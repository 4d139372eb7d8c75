"""Many messages at once, pipelined, and messages of any size as streams.

:class:`ManyMessages` holds the methods of :class:`aiopop.POP3` that queue
one command per message (``retr_many``, ``top_many``, ``dele_many``,
``retr_each``) and those that hand a message out as it arrives
(``retr_stream``, ``retr_to_file``). One runner, :meth:`ManyMessages._pipelined`,
keeps a window of commands queued ahead of the one being yielded; whether
they go out pipelined is the connection's decision.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable
from typing import TypeVar

from . import _files
from ._commands import number, refusal, retr_command, top_command
from ._connection import Connection
from ._errors import ResponseError
from ._events import Command, ReplyShape
from ._parse import StatusLine
from ._stream import MessageStream

__all__ = ["DEFAULT_STREAM_MEMORY", "ManyMessages"]

DEFAULT_STREAM_MEMORY = 32 * 1024 * 1024
"""Octets :meth:`aiopop.POP3.retr_each` holds received and not yet read, by default."""

T = TypeVar("T")
R = TypeVar("R")
_Sent = tuple[int, Command, "asyncio.Future[R]"]


class ManyMessages:
    """The methods of :class:`aiopop.POP3` for many messages and for streams (a mixin)."""

    max_in_flight: int
    max_message_size: int | None
    marked: int

    def _require(self) -> Connection:
        raise NotImplementedError

    def _refusal(self, command: Command, status: StatusLine) -> ResponseError:
        raise NotImplementedError

    def _retr_command(self, which: int) -> Command:
        return retr_command(which, self.max_message_size)

    def _top_command(self, which: int, howmax: int) -> Command:
        return top_command(which, howmax, self.max_message_size)

    def retr_many(
        self, numbers: Iterable[int], *, window: int | None = None
    ) -> AsyncGenerator[tuple[int, bytes], None]:
        """Retrieve several messages, yielding ``(number, message)`` in the order given.

        Up to ``window`` RETRs (default: twice ``max_in_flight``) are queued
        ahead of the one being yielded, so with PIPELINING the server never
        waits for a round trip; without it they go one at a time, with the
        same results. Memory holds at most ``window`` messages. A ``-ERR``
        raises :class:`~aiopop.ResponseError` when its turn comes; leaving
        the loop early cancels the rest (their replies are read and dropped).
        Wrap the iterator in :func:`contextlib.aclosing` to have that happen
        at once rather than when the iterator is garbage collected.
        """
        return self._pipelined(
            numbers,
            self._retr_command,
            Connection.message,
            window,
            status_of=_status,
            value_of=_body,
        )

    def top_many(
        self, numbers: Iterable[int], lines: int, *, window: int | None = None
    ) -> AsyncGenerator[tuple[int, bytes], None]:
        """Like :meth:`retr_many` with TOP: the headers and first ``lines`` body lines of each."""
        return self._pipelined(
            numbers,
            lambda which: self._top_command(which, lines),
            Connection.message,
            window,
            status_of=_status,
            value_of=_body,
        )

    async def dele_many(
        self, numbers: Iterable[int], *, window: int | None = None
    ) -> AsyncGenerator[int, None]:
        """Mark several messages deleted, yielding each number once the server confirmed it.

        Pipelined like :meth:`retr_many`. Deletions take effect only at a
        successful QUIT. A ``-ERR`` raises :class:`~aiopop.ResponseError`
        when its turn comes; numbers yielded before it were marked.
        """
        sent = self._pipelined(
            numbers,
            lambda which: Command("DELE", (number(which),)),
            Connection.command,
            window,
            status_of=_itself,
            value_of=_itself,
        )
        async with contextlib.aclosing(sent):
            async for which, _ in sent:
                self.marked += 1
                yield which

    async def _pipelined(
        self,
        numbers: Iterable[int],
        make: Callable[[int], Command],
        submit: Callable[[Connection, Command], asyncio.Future[R]],
        window: int | None,
        *,
        status_of: Callable[[R], StatusLine],
        value_of: Callable[[R], T],
        moved_on: Callable[[T], None] | None = None,
        unread: Callable[[T], None] | None = None,
    ) -> AsyncGenerator[tuple[int, T], None]:
        """Queue ``make(number)`` for each number, up to ``window`` ahead; yield in order.

        Yields ``(number, value_of(result))``. Whether the commands go out
        pipelined is the connection's decision. Each reply's status
        (``status_of``) is checked when its turn comes: ``-ERR`` raises its
        :class:`~aiopop.ResponseError`. ``moved_on`` is applied to the value
        last yielded when the loop moves on or ends; ``unread`` to the values
        that arrived and were never yielded; the rest are cancelled.
        """
        connection = self._require()
        await connection.learn_pipelining()
        queue: collections.deque[_Sent[R]] = collections.deque()
        limit = window or 2 * self.max_in_flight
        last: list[T] = []
        try:
            for which in numbers:
                command = make(which)
                queue.append((which, command, submit(connection, command)))
                while len(queue) >= limit:
                    yield await _oldest(queue, status_of, value_of, last, moved_on)
            while queue:
                yield await _oldest(queue, status_of, value_of, last, moved_on)
        finally:
            if last and moved_on is not None:
                moved_on(last[0])
            _cancel_all(queue, value_of, unread)

    def retr_each(
        self,
        numbers: Iterable[int],
        *,
        window: int | None = None,
        memory: int = DEFAULT_STREAM_MEMORY,
    ) -> AsyncGenerator[tuple[int, MessageStream], None]:
        """Retrieve several messages, pipelined like :meth:`retr_many`, each as a stream.

        Yields ``(number, stream)`` in the order given. Each
        :class:`~aiopop.MessageStream` is read before the next is asked for:
        :meth:`MessageStream.collect` for the whole message when it is small
        enough, else its chunks; whatever is left unread of it is dropped
        when the loop moves on. The data received and not yet read is held
        to ``memory`` octets whatever the sizes LIST announced: past that
        the connection stops reading until the consumer catches up. Pass a
        threshold of at most ``memory`` to :meth:`~MessageStream.collect`.
        A ``-ERR`` raises :class:`~aiopop.ResponseError` when its turn comes;
        leaving the loop early drops the rest.
        """
        if memory < 1:
            raise ValueError("memory must be at least 1")
        budget = self._require().budget(memory)
        return self._pipelined(
            numbers,
            lambda which: Command("RETR", (number(which),), ReplyShape.DATA),
            lambda connection, command: connection.stream(command, budget),
            window,
            status_of=_status,
            value_of=_stream,
            moved_on=_drop_rest,
            unread=MessageStream.discard,
        )

    # -- messages of any size -----------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def retr_stream(self, which: int) -> AsyncIterator[MessageStream]:
        """Message ``which`` as an async iterator of chunks, with memory bounded::

            async with client.retr_stream(1) as stream:
                async for chunk in stream:
                    ...

        The chunks are dot-unstuffed content; joined, they equal what
        :meth:`retr` returns, with no size limit. A ``-ERR`` raises
        :class:`~aiopop.ResponseError` on entry. Leaving the block before
        the end keeps the session in step: the rest of the message is read
        and dropped as it arrives, and the next command waits for that (call
        :meth:`close` instead to abandon a huge message at once).
        """
        command = Command("RETR", (number(which),), ReplyShape.DATA)
        status, stream = await self._require().stream(command)
        if not status.ok:
            raise self._refusal(command, status)
        try:
            yield stream
        finally:
            _drop_rest(stream)

    async def retr_to_file(
        self, which: int, path: str | os.PathLike[str], *, fsync: bool = True
    ) -> int:
        """Write message ``which`` to ``path`` and return its size in octets.

        The message goes to a temporary file in the same directory (named
        ``.<name>.<random>.part``) with :mod:`aiofiles`, is flushed and, with
        ``fsync``, synced to disk, and only then renamed to ``path``
        (replacing a file there), after which the directory is synced too.
        With ``fsync``, the kernel is also asked to start writing back every
        8 MiB as the message arrives, so the final sync is short.
        If anything fails (the connection drops, the disk fills, the task is
        cancelled) the temporary file is removed and ``path`` is untouched:
        a partial message never appears under the final name.
        """
        async with self.retr_stream(which) as stream:
            return await _files.write_atomically(path, stream.batches(), fsync=fsync)


async def _oldest(
    queue: collections.deque[_Sent[R]],
    status_of: Callable[[R], StatusLine],
    value_of: Callable[[R], T],
    last: list[T],
    moved_on: Callable[[T], None] | None,
) -> tuple[int, T]:
    """Wait for the oldest queued command: its number and value, or its ``-ERR`` raised.

    ``last`` holds the value yielded before, handed to ``moved_on`` first.
    """
    if last:
        previous = last.pop()
        if moved_on is not None:
            moved_on(previous)
    which, command, future = queue[0]
    result = await future
    queue.popleft()
    status = status_of(result)
    if not status.ok:
        raise refusal(command, status)
    value = value_of(result)
    if moved_on is not None:
        last.append(value)
    return which, value


def _cancel_all(
    queue: collections.deque[_Sent[R]],
    value_of: Callable[[R], T],
    unread: Callable[[T], None] | None,
) -> None:
    """Cancel what is still queued; read the errors of what failed, so none goes unnoticed."""
    for _, _, future in queue:
        if not future.done():
            future.cancel()
        elif not future.cancelled() and future.exception() is None and unread is not None:
            unread(value_of(future.result()))
    queue.clear()


def _status(reply: tuple[StatusLine, T]) -> StatusLine:
    return reply[0]


def _stream(reply: tuple[StatusLine, MessageStream]) -> MessageStream:
    return reply[1]


def _body(reply: tuple[StatusLine, bytes]) -> bytes:
    return reply[1]


def _itself(status: StatusLine) -> StatusLine:
    return status


def _drop_rest(stream: MessageStream) -> None:
    """Drop what is left of a stream the caller has done with."""
    if not stream.complete:
        stream.discard()
