"""One run of :func:`aiopop.fetch_to_maildir`: retrieving, writing, committing; what it reports.

:mod:`aiopop._fetch` decides what to fetch and holds the lock and the
state; this module does the work of one run on them (its module docstring
gives the order of operations and why nothing is lost) and builds the
:class:`FetchResult`.
"""

from __future__ import annotations

import asyncio
import contextlib
from asyncio import FIRST_COMPLETED
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

from ._delivery_state import DeliveryState
from ._errors import ResponseError
from ._maildir import Maildir
from ._message import Verdict

if TYPE_CHECKING:
    from ._client import POP3
    from ._stream import MessageStream

__all__ = [
    "Delivery",
    "FetchResult",
    "Filtered",
    "Oversized",
    "Plan",
    "Planned",
    "Refusal",
    "Undelivered",
]

WRITE_GROUP = 16
"""Messages written one after the other in one worker-thread trip (open, write, fsync, close
each): one trip per message costs the event loop a wake-up and a GIL hand-off per message."""
MAX_WRITES = 6
"""Such trips at once, at most, so that their fsyncs overlap."""
DELE_CHUNK = 1000
"""DELEs issued at once; the client keeps at most ``max_in_flight`` of them on the wire."""
T = TypeVar("T")


@dataclass(frozen=True)
class Delivery:
    """A message delivered by this run: saved into ``new/``, or handed to a delivery callable."""

    number: int
    """Its message number in this session."""
    uid: str | None
    """Its unique-id, or None when the server has no UIDL."""
    name: str | None
    """Its file name in ``new/`` (None: handed to a delivery callable, not a Maildir)."""
    size: int
    """Its size as received, in octets (CRLF line ends)."""


@dataclass(frozen=True)
class Refusal:
    """A command the server answered with ``-ERR``; the message stays on the server."""

    number: int
    uid: str | None
    error: ResponseError


@dataclass(frozen=True)
class Oversized:
    """A message larger than ``max_size``: not written to disk, left on the server."""

    number: int
    uid: str | None
    size: int
    """Its size: from LIST when it was not retrieved, else the octets received before
    the limit was passed (the rest was read and dropped)."""


@dataclass(frozen=True)
class Undelivered:
    """A message its destination did not take (a :class:`~aiopop.DeliveryError`, a
    delivery command that failed or hung, a filter that broke): left on the server, not
    recorded, tried again on the next run."""

    number: int
    uid: str | None
    error: Exception


@dataclass(frozen=True)
class Filtered:
    """A message judged before retrieval, by the filter or ``delete_larger_than``.

    ``"skip"``: left on the server, untouched (a filter may judge it again next
    run). ``"delete"``: marked deleted without being retrieved; like every
    deletion it takes effect only at a QUIT the server answers ``+OK``.
    """

    number: int
    uid: str | None
    size: int
    """Its size by LIST."""
    verdict: Verdict
    by: str
    """``"filter"`` or ``"size"`` (over ``delete_larger_than``)."""


@dataclass(frozen=True)
class Planned:
    """One message of a :class:`Plan`: its number, unique-id and size by LIST."""

    number: int
    uid: str | None
    size: int


@dataclass(frozen=True)
class Plan:
    """What a ``dry_run`` would have done: nothing was retrieved, deleted or recorded."""

    fetch: list[Planned]
    """The messages it would retrieve and deliver."""
    delete: list[Planned]
    """The messages it would mark deleted: delivered before and due by the policy, or
    judged ``"delete"`` (those also appear in :attr:`FetchResult.filtered`). Messages
    retrieved by this run that ``delete`` would delete once delivered are not listed."""


@dataclass
class FetchResult:
    """What :func:`fetch_to_maildir` did."""

    delivered: list[Delivery] = field(default_factory=list)
    """The messages saved by this run, durable in ``new/``, in the order saved."""
    skipped: int = 0
    """Messages left alone with ``new_only``: the Maildir had them already."""
    marked: list[int] = field(default_factory=list)
    """The message numbers marked deleted (with ``delete``). Nothing is deleted yet: the
    server removes them only when it answers ``+OK`` to the caller's QUIT, and keeps them
    if the session ends any other way."""
    refused: list[Refusal] = field(default_factory=list)
    """RETRs and DELEs the server refused; the other messages went on."""
    oversized: list[Oversized] = field(default_factory=list)
    """Messages over ``max_size``, not written and not marked deleted; the others went on."""
    recovered: int = 0
    """Messages of an interrupted earlier run that were moved from ``tmp/`` into ``new/``."""
    undelivered: list[Undelivered] = field(default_factory=list)
    """Messages the destination did not take; left on the server, the others went on."""
    filtered: list[Filtered] = field(default_factory=list)
    """Messages the filter or ``delete_larger_than`` judged before retrieval."""
    plan: Plan | None = None
    """With ``dry_run``: what would have been done (and nothing was). None otherwise."""


@dataclass(frozen=True)
class _Saving:
    """A message being written into ``tmp/``; its file name is ``job``'s ``index``-th."""

    number: int
    uid: str | None
    size: int
    job: asyncio.Future[list[str]]
    index: int = 0


class _Work:
    """One run's session, state and result: what every destination's run shares."""

    def __init__(
        self,
        client: POP3,
        state: DeliveryState,
        account: str,
        max_size: int | None = None,
    ) -> None:
        self.client = client
        self.state = state
        self.account = account
        self.max_size = max_size
        self.result = FetchResult()
        self.uids: dict[int, str] = {}
        self.sizes: dict[int, int] = {}

    def too_big(self, number: int, size: int) -> bool:
        """Whether message ``number`` of ``size`` octets is over ``max_size``; if so, note it."""
        if self.max_size is None or size <= self.max_size:
            return False
        self.result.oversized.append(Oversized(number, self.uids.get(number), size))
        return True

    def refuse(self, number: int, error: ResponseError) -> None:
        self.result.refused.append(Refusal(number, self.uids.get(number), error))

    async def delete(self, numbers: list[int]) -> None:
        """DELE ``numbers``, each delivered or judged; pipelined, each with its own reply.

        Separate commands rather than :meth:`~aiopop.POP3.dele_many`: a
        ``-ERR`` to one must not cancel the others, as a DELE already sent
        and then cancelled would be carried out with its reply unread.
        """
        for start in range(0, len(numbers), DELE_CHUNK):
            chunk = numbers[start : start + DELE_CHUNK]
            replies = await asyncio.gather(
                *(self.client.dele(number) for number in chunk), return_exceptions=True
            )
            accepted: list[str] = []
            for number, reply in zip(chunk, replies, strict=True):
                if isinstance(reply, ResponseError):
                    self.refuse(number, reply)
                elif isinstance(reply, BaseException):
                    raise reply
                else:
                    self.result.marked.append(number)
                    if number in self.uids:
                        accepted.append(self.uids[number])
            # Before QUIT: were the deletion rolled back, the next run must know that
            # a unique-id listed again may be this message (see _reused).
            await self.state.mark(self.account, accepted)


class _Run(_Work):
    """One download into a Maildir: the batch being saved, and what has been done."""

    def __init__(
        self,
        client: POP3,
        box: Maildir,
        state: DeliveryState,
        account: str,
        batch_messages: int,
        batch_octets: int,
        max_size: int | None = None,
    ) -> None:
        super().__init__(client, state, account, max_size)
        self.box = box
        self.batch_messages = batch_messages
        self.batch_octets = batch_octets
        self.batch: list[_Saving] = []
        self.octets = 0
        self.writing: set[asyncio.Future[list[str]]] = set()
        self.max_writing = MAX_WRITES
        self.group = WRITE_GROUP
        self.received: list[tuple[int, bytes]] = []
        """Messages received whole and not yet handed to a write..."""
        self.received_octets = 0
        """...and their octets."""
        self.published: list[str] = []
        """Files renamed into ``new/`` (and ``new/`` synced) whose rows the next transaction
        marks delivered."""

    async def retrieve(
        self, small: list[int], big: list[int], window: int, memory: int, threshold: int
    ) -> None:
        """Save the messages ``small`` (pipelined, in memory) and ``big`` (streamed).

        The pipelined messages are held to ``memory`` octets as they arrive,
        whatever LIST said: one that passes ``threshold`` octets (a server
        that lied about its size) is streamed to disk like a big one.
        """
        try:

            def pipelined(
                rest: list[int], most: int | None
            ) -> AsyncGenerator[tuple[int, MessageStream], None]:
                return self.client.retr_each(rest, window=most or window, memory=memory)

            items = _each(small, pipelined, self.refuse)
            async with contextlib.aclosing(items):
                async for number, stream in items:
                    message = await stream.collect(threshold)
                    if message is None:
                        self._write_received()
                        await self._save_stream(number, stream)
                    elif self.too_big(number, len(message)):
                        continue
                    elif self._receive(number, message):
                        self._write_received()
                        await self._pace()
            self._write_received()
            for number in big:
                try:
                    async with self.client.retr_stream(number) as stream:
                        await self._save_stream(number, stream)
                except ResponseError as exc:
                    self.refuse(number, exc)
            await self._commit(final=True)
        except Exception:
            # What arrived complete is made durable and recorded: a rerun skips it.
            await self._commit(final=True)
            raise
        except BaseException:
            self._abandon()
            raise

    async def _save_stream(self, number: int, stream: MessageStream) -> None:
        """Write a message into ``tmp/`` as it arrives; its fsync runs while the next arrives."""
        try:
            name, size = await self.box.write(_limited(stream.batches(), self.max_size), sync=False)
        except _TooBig as exc:
            # The file was removed; the rest of the message is read and dropped.
            self.too_big(number, exc.size)
            return
        job = asyncio.ensure_future(self.box.sync([name]))
        self.writing.add(job)
        self.batch.append(_Saving(number, self.uids.get(number), size, job))
        self.octets += size
        await self._pace()

    def _receive(self, number: int, message: bytes) -> bool:
        """Hold a message received whole; True when it is time to write what is held."""
        self.received.append((number, message))
        self.received_octets += len(message)
        return (
            len(self.received) >= self.group
            or len(self.batch) + len(self.received) >= self.batch_messages
            or self.octets + self.received_octets >= self.batch_octets
        )

    def _write_received(self) -> None:
        """Start writing the messages received so far, in one worker-thread trip."""
        received, self.received, self.received_octets = self.received, [], 0
        if not received:
            return
        messages = [message for _, message in received]
        job = asyncio.ensure_future(self.box.write_all_bytes(messages))
        self.writing.add(job)
        for index, (number, message) in enumerate(received):
            self.batch.append(_Saving(number, self.uids.get(number), len(message), job, index))
            self.octets += len(message)

    async def _pace(self) -> None:
        """Commit a full batch; otherwise wait while too many writes are running."""
        if len(self.batch) >= self.batch_messages or self.octets >= self.batch_octets:
            await self._commit()
            return
        while len(self.writing) >= self.max_writing:
            _, self.writing = await asyncio.wait(self.writing, return_when=FIRST_COMPLETED)

    async def _commit(self, *, final: bool = False) -> None:
        """Make the batch visible: wait for its files, record it, publish it into ``new/``."""
        self._write_received()
        batch, self.batch, self.octets, self.writing = self.batch, [], 0, set()
        jobs = list(dict.fromkeys(saving.job for saving in batch))
        try:
            results = await asyncio.gather(*jobs, return_exceptions=True)
        except BaseException:  # cancelled while the batch's writes run
            self._drop(jobs)
            raise
        written = [names for names in results if not isinstance(names, BaseException)]
        try:
            for outcome in results:
                if isinstance(outcome, BaseException):
                    raise outcome
            names = [saving.job.result()[saving.index] for saving in batch]
            saved = [
                (s.uid, name, self.sizes.get(s.number))
                for s, name in zip(batch, names, strict=True)
                if s.uid is not None
            ]
            await self.state.commit(self.account, saved, delivered=self.published)
        except BaseException:
            for group in written:
                self.box.discard(group)  # not recorded: fetched again next time
            raise
        # The earlier batch is marked delivered now; this one's rows are pending until
        # its renames and the sync of new/ have all succeeded. If any of them fails,
        # they stay pending, whatever the error, and the next run finishes the job.
        self.published = []
        try:
            await self.box.publish(names)
        except BaseException:
            # A file no row names (a server without UIDL) would never be finished:
            # removed from tmp/ (if it is still there), it is fetched again next time.
            self.box.discard(n for s, n in zip(batch, names, strict=True) if s.uid is None)
            raise
        self.published = [name for _, name, _ in saved]
        self.result.delivered.extend(
            Delivery(s.number, s.uid, name, s.size) for s, name in zip(batch, names, strict=True)
        )
        if final:
            published, self.published = self.published, []
            await self.state.commit(delivered=published)

    def _abandon(self) -> None:
        """On cancellation: stop the writes of the batch and remove its files."""
        self.received, self.received_octets = [], 0
        self._drop(dict.fromkeys(saving.job for saving in self.batch))
        self.batch = []

    def _drop(self, jobs: Iterable[asyncio.Future[list[str]]]) -> None:
        """Stop the writes still running and remove the files of those done."""
        for job in jobs:
            if not job.done():
                job.cancel()  # the write removes its own files
            elif not job.cancelled() and job.exception() is None:
                self.box.discard(job.result())


class _TooBig(Exception):
    def __init__(self, size: int) -> None:
        super().__init__(f"message larger than the limit ({size} octets received)")
        self.size = size


async def _limited(
    batches: AsyncIterator[list[bytes]], limit: int | None
) -> AsyncIterator[list[bytes]]:
    """``batches``, until more than ``limit`` octets have come: then :class:`_TooBig`."""
    received = 0
    async for chunks in batches:
        received += sum(map(len, chunks))
        if limit is not None and received > limit:
            raise _TooBig(received)
        yield chunks


async def _each(
    numbers: list[int],
    many: Callable[[list[int], int | None], AsyncGenerator[T, None]],
    refuse: Callable[[int, ResponseError], None],
) -> AsyncGenerator[T, None]:
    """What ``many(numbers, window)`` yields; a ``-ERR`` is noted and the rest asked again.

    A ``-ERR`` ends the pipelined generator and drops the replies queued
    behind it, so their commands are sent again. After the first, the rest
    go with a window of 1: a server that refuses every command costs one
    command more per refusal at most, not the whole window again each time.
    """
    rest = numbers
    window: int | None = None  # the caller's
    while rest:
        done = 0
        try:
            async with contextlib.aclosing(many(rest, window)) as items:
                async for item in items:
                    done += 1
                    yield item
            return
        except ResponseError as exc:
            refuse(rest[done], exc)
            rest = rest[done + 1 :]
            window = 1
