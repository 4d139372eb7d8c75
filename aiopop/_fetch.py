"""Download a POP3 mailbox into a Maildir, losing no message whatever fails and whenever.

:func:`fetch_to_maildir` works on a client that is logged in, and never
sends QUIT: the caller does, last (``async with`` does it on a normal
exit). Deletions commit only at QUIT (RFC 1939 section 6), and every message
marked deleted is durable in the Maildir before :func:`fetch_to_maildir`
returns, so any QUIT after it is safe, and a session that ends any other
way deletes nothing.

The order of operations, per batch of messages (see ``docs/fetch.md``):

1. RETR, pipelined; each message is written into ``tmp/`` under a new
   unique name and fsynced before its file is closed (several such writes
   run at once in worker threads, so their fsyncs overlap).
2. Record ``(account, uid, name, size)`` for the batch in the state
   database, in one transaction, as *pending*.
3. Rename the files into ``new/``; fsync ``new/`` once. The next
   transaction marks the batch *delivered*.
4. After the last batch: DELE, pipelined, for the messages saved now or by
   an earlier run, and only those. The caller's QUIT commits them: until
   the server answers it ``+OK``, they are only *marked*
   (:attr:`FetchResult.marked`).

A batch whose rename or sync of ``new/`` fails stays *pending* in the state
(step 3 did not complete), whatever the error: the next run finishes it
(:func:`recover`) before anything else, and never takes its files in
``tmp/`` for abandoned ones.

Why nothing is lost: a message is marked deleted (4) only after its data
(1) and its directory entry in ``new/`` (3) are durable, and the server
deletes nothing before QUIT. A crash leaves each message on the server,
and either nowhere in the Maildir, or complete in ``tmp/``, or complete in
``new/``.

Why a rerun makes no duplicate with ``new_only``: the unique-id is recorded
(2) *before* the file reaches ``new/`` (3), and only once its data is
durable (1). So a message in ``new/`` always has its row. A crash between 2
and 3 leaves a row whose file is still in ``tmp/``; the next run starts by
finishing that rename (:func:`recover`), so the message appears exactly
once and is not fetched again. A crash before 2 leaves at most an
unrecorded file in ``tmp/``, which no reader sees and which the next run
removes, so the message is fetched again, once. Had the order been rename
first, record second, a crash between them would leave a message in
``new/`` with no row, fetched again and delivered twice.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import os
from asyncio import FIRST_COMPLETED
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from ._delivery_state import LOCK_WAIT, STATE_FILE, DeliveryState, Record, StateLock
from ._errors import ResponseError, UIDLUnavailableError
from ._maildir import Maildir, to_unix_line_ends

if TYPE_CHECKING:
    from ._client import POP3
    from ._stream import MessageStream

__all__ = [
    "Delivery",
    "FetchResult",
    "Oversized",
    "Refusal",
    "UIDLUnavailableError",
    "fetch_to_maildir",
    "recover",
]

DEFAULT_BATCH_MESSAGES = 250
DEFAULT_BATCH_OCTETS = 32 * 1024 * 1024
DEFAULT_STREAM_THRESHOLD = 1024 * 1024
DEFAULT_MEMORY = 32 * 1024 * 1024
DEFAULT_MAX_SIZE = 256 * 1024 * 1024
"""Messages larger than this many octets are not written to disk: 256 MiB, above what the
big providers accept (Exchange Online takes up to 150 MB, Gmail 25 MB)."""
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
    """A message saved into ``new/`` by this run."""

    number: int
    """Its message number in this session."""
    uid: str | None
    """Its unique-id, or None when the server has no UIDL."""
    name: str
    """Its file name in ``new/``."""
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


async def fetch_to_maildir(
    client: POP3,
    maildir: str | os.PathLike[str] | Maildir,
    *,
    account: str,
    delete: bool = False,
    new_only: bool = False,
    batch_messages: int = DEFAULT_BATCH_MESSAGES,
    batch_octets: int = DEFAULT_BATCH_OCTETS,
    stream_threshold: int = DEFAULT_STREAM_THRESHOLD,
    memory: int = DEFAULT_MEMORY,
    max_size: int | None = DEFAULT_MAX_SIZE,
    lock_wait: float = LOCK_WAIT,
) -> FetchResult:
    """Download the mailbox of the logged-in ``client`` into ``maildir``.

    ``account`` names the mailbox in the Maildir's state: use
    :attr:`Account.mailbox_key <aiopop.Account.mailbox_key>` (or
    :func:`aiopop.mailbox_key`). One Maildir may serve several
    accounts. The run holds a lock on ``account``'s state in this Maildir
    (:class:`~aiopop.StateLock`): a second run for the same mailbox
    and Maildir, in this process or another, waits up to ``lock_wait``
    seconds, then fails with :class:`~aiopop.StateLockedError` having
    done nothing.

    ``new_only`` skips the messages whose unique-id the Maildir's state
    holds for ``account``; against a server without UIDL it raises
    :class:`UIDLUnavailableError` before fetching anything. Without it every
    message is fetched (and, when the server has UIDL, recorded).

    ``delete`` marks deleted every message that is durably in the Maildir:
    those saved now and those an earlier run saved (known by unique-id and
    LIST size, and only when no other message of the listing has that
    unique-id). The deletions commit only when the server answers ``+OK``
    to the caller's QUIT, which must come after this function returned:
    :attr:`FetchResult.marked` lists what that QUIT will delete, and a
    session that ends any other way deletes nothing.

    ``max_size`` (octets; None: no limit) bounds what is written to disk: a
    message listed larger is not retrieved; one that turns out larger as it
    arrives is read to its end and dropped. Either way it is reported in
    :attr:`FetchResult.oversized`, stays on the server, and the run goes on.

    Each message is fsynced as it is written into ``tmp/`` (up to
    :data:`MAX_WRITES` writes at once, so that the fsyncs overlap); then
    batches of ``batch_messages`` messages or ``batch_octets`` octets get one
    state transaction and one fsync of ``new/`` each. Messages up to
    ``stream_threshold`` octets (by LIST) are retrieved with pipelined RETRs
    (:meth:`~aiopop.POP3.retr_each`), queued as deep as ``memory`` divided
    by the largest of them allows; what arrives of them is held to
    ``memory`` octets whatever LIST said, and one that passes
    ``stream_threshold`` octets as it arrives is streamed to disk. Bigger
    ones are streamed to disk one by one, in bounded memory.

    A ``-ERR`` to a RETR or DELE is noted in :attr:`FetchResult.refused`
    and the others go on. Any other error (the connection lost, the disk
    full) propagates, after the messages already received complete were
    made durable and recorded; a rerun finishes the job.
    """
    for name, value in (
        ("batch_messages", batch_messages),
        ("batch_octets", batch_octets),
        ("memory", memory),
    ):
        if value < 1:
            raise ValueError(f"{name} must be at least 1")
    if max_size is not None and max_size < 0:
        raise ValueError("max_size must be at least 0, or None for no limit")
    box = maildir if isinstance(maildir, Maildir) else Maildir(maildir)
    await box.create()
    async with StateLock(box.path / STATE_FILE, account, wait=lock_wait):
        state = await DeliveryState.open(box.path / STATE_FILE)
        try:
            await state.adopt(account)
            return await _fetch(
                client, box, state, account, delete, new_only, batch_messages, batch_octets,
                stream_threshold, memory, max_size,
            )  # fmt: skip
        finally:
            await state.close()


async def _fetch(
    client: POP3,
    box: Maildir,
    state: DeliveryState,
    account: str,
    delete: bool,
    new_only: bool,
    batch_messages: int,
    batch_octets: int,
    stream_threshold: int,
    memory: int,
    max_size: int | None,
) -> FetchResult:
    run = _Run(client, box, state, account, batch_messages, batch_octets, max_size)
    run.result.recovered = await recover(box, state, account)
    uids, sizes = await _listings(client, new_only)
    known: dict[str, int | None] = {}
    if uids is not None:
        # A unique-id no longer listed names no message now: if it comes back, it
        # is another message. (Pending rows stay: recover() finished them above.)
        await state.forget_missing(account, set(uids.values()))
        records = await state.records(account)
        known = {uid: record.size for uid, record in records.items()}
        for uid in await _reused(client, box, records, uids, sizes):
            del known[uid]
    wanted = _choose(uids, sizes, known, new_only, run.result)
    run.uids, run.sizes = uids or {}, sizes
    if max_size is not None:
        wanted = [n for n in wanted if not run.too_big(n, sizes.get(n, 0))]
    threshold = stream_threshold
    if client.max_message_size is not None:
        threshold = min(threshold, client.max_message_size)
    small = [number for number in wanted if sizes.get(number, threshold + 1) <= threshold]
    big = sorted(set(wanted).difference(small))
    window = _window(client, [sizes[n] for n in small], memory)
    await run.retrieve(small, big, window, memory, min(threshold, memory))
    if delete:
        await run.delete(_deletable(uids, sizes, known, run.result))
    return run.result


async def recover(maildir: Maildir, state: DeliveryState, account: str) -> int:
    """Finish what an interrupted run for ``account`` left pending; return the files moved.

    Only ``account``'s rows are looked at: another account's may belong to
    a fetch running now in another process.

    A pending row's file was durable in ``tmp/`` when the row was written.
    If it is still there, it is renamed into ``new/`` (then ``new/`` is
    synced); if it reached ``new/`` or ``cur/`` it is left alone; if it is
    nowhere (a tmp cleaner removed it, or a reader deleted it), the row is
    dropped, so that the message is fetched again rather than lost. Then the
    rows are marked delivered, in one transaction. Last, the files that a
    killed process left unfinished in ``tmp/`` are removed
    (:meth:`Maildir.abandoned <aiopop.Maildir.abandoned>`): no row
    names them, so they are fetched again.
    """
    names = await state.pending(account)
    moved: list[str] = []
    if names:
        found = maildir.find(names)
        moved = [name for name in names if found.get(name) == "tmp"]
        await maildir.publish(moved)
        await state.commit(
            delivered=[name for name in names if name in found],
            forgotten=[name for name in names if name not in found],
        )
    maildir.discard(maildir.abandoned())
    return len(moved)


async def _reused(
    client: POP3,
    box: Maildir,
    records: dict[str, Record],
    uids: dict[int, str],
    sizes: dict[int, int],
) -> list[str]:
    """The unique-ids marked deleted by an earlier run that now name another message.

    A unique-id that a run marked deleted and that is listed again, with the
    size recorded, is either the same message (that session ended before its
    QUIT committed the deletion) or another one that reuses the unique-id
    and happens to have the same size. The sizes cannot tell; the bytes can:
    each such message is retrieved and compared with its file in the
    Maildir. A different message, or one whose file is gone, is taken for
    new (a duplicate is possible, a loss is not).
    """
    counts = collections.Counter(uids.values())
    reused: list[str] = []
    for number, uid in sorted(uids.items()):
        record = records.get(uid)
        if record is None or record.marked is None or counts[uid] > 1:
            continue
        if not record.matches(sizes.get(number)):
            continue  # another size: taken for another message anyway
        path = box.locate(record.name) if record.name is not None else None
        if path is None or not await _same_content(client, box, number, path):
            reused.append(uid)
    return reused


async def _same_content(client: POP3, box: Maildir, number: int, path: Path) -> bool:
    """Whether message ``number`` on the server is what the file at ``path`` holds."""
    async with client.retr_stream(number) as stream:
        batches = stream.batches() if box.keep_crlf else to_unix_line_ends(stream.batches())
        server = hashlib.sha256()
        async for chunks in batches:
            for chunk in chunks:
                server.update(chunk)
    return server.digest() == await asyncio.to_thread(_file_digest, path)


def _file_digest(path: Path) -> bytes:
    with open(path, "rb") as file:
        return hashlib.file_digest(file, "sha256").digest()


async def _listings(client: POP3, new_only: bool) -> tuple[dict[int, str] | None, dict[int, int]]:
    """UIDL and LIST, pipelined: the unique-ids (None without UIDL) and sizes by number."""
    uidl, listing = await asyncio.gather(client.uidl(), client.list(), return_exceptions=True)
    if isinstance(listing, BaseException):
        raise listing
    sizes = {entry.number: entry.size for entry in listing}
    if isinstance(uidl, ResponseError):
        if new_only:
            raise UIDLUnavailableError(uidl)
        return None, sizes
    if isinstance(uidl, BaseException):
        raise uidl
    return {entry.number: entry.uid for entry in uidl}, sizes


def _choose(
    uids: dict[int, str] | None,
    sizes: dict[int, int],
    known: dict[str, int | None],
    new_only: bool,
    result: FetchResult,
) -> list[int]:
    """The message numbers to fetch, in order."""
    if uids is None:
        return sorted(sizes)
    wanted: list[int] = []
    seen: set[str] = set()
    for number in sorted(uids):
        uid = uids[number]
        # A known unique-id with another size is another message (a reused unique-id).
        again = uid in known and known[uid] in (None, sizes.get(number))
        if new_only and (again or uid in seen):
            result.skipped += 1
        else:
            wanted.append(number)
        seen.add(uid)
    return wanted


def _window(client: POP3, sizes: Sequence[int], memory: int) -> int:
    """How many RETRs to keep queued so that the messages waiting fit in ``memory``."""
    largest = max(sizes, default=1) or 1
    return max(1, min(2 * client.max_in_flight, memory // largest))


def _deletable(
    uids: dict[int, str] | None,
    sizes: dict[int, int],
    known: dict[str, int | None],
    result: FetchResult,
) -> list[int]:
    """The messages durably in the Maildir: saved by this run, or by an earlier one.

    An earlier run's message is recognised by its unique-id and its size
    (as LIST gave it then and now), and only when no other message in this
    listing has the same unique-id. RFC 1939 makes unique-ids unique and
    permanent; against a server that breaks that, the size check and the
    uniqueness check keep a message that was never saved from being deleted.
    """
    numbers = {delivery.number for delivery in result.delivered}
    if uids is not None:
        counts = collections.Counter(uids.values())
        numbers.update(
            number
            for number, uid in uids.items()
            if counts[uid] == 1 and uid in known and known[uid] == sizes.get(number, -1)
        )
    return sorted(numbers)


@dataclass(frozen=True)
class _Saving:
    """A message being written into ``tmp/``; its file name is ``job``'s ``index``-th."""

    number: int
    uid: str | None
    size: int
    job: asyncio.Future[list[str]]
    index: int = 0


class _Run:
    """One download: the batch being saved, and what has been done."""

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
        self.client = client
        self.box = box
        self.state = state
        self.account = account
        self.batch_messages = batch_messages
        self.batch_octets = batch_octets
        self.max_size = max_size
        self.result = FetchResult()
        self.uids: dict[int, str] = {}
        self.sizes: dict[int, int] = {}
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

    def too_big(self, number: int, size: int) -> bool:
        """Whether message ``number`` of ``size`` octets is over ``max_size``; if so, note it."""
        if self.max_size is None or size <= self.max_size:
            return False
        self.result.oversized.append(Oversized(number, self.uids.get(number), size))
        return True

    async def retrieve(
        self, small: list[int], big: list[int], window: int, memory: int, threshold: int
    ) -> None:
        """Save the messages ``small`` (pipelined, in memory) and ``big`` (streamed).

        The pipelined messages are held to ``memory`` octets as they arrive,
        whatever LIST said: one that passes ``threshold`` octets (a server
        that lied about its size) is streamed to disk like a big one.
        """
        try:

            def pipelined(rest: list[int]) -> AsyncGenerator[tuple[int, MessageStream], None]:
                return self.client.retr_each(rest, window=window, memory=memory)

            items = _each(small, pipelined, self)
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

    async def delete(self, numbers: list[int]) -> None:
        """DELE ``numbers``, each durably in the Maildir; pipelined, each with its own reply.

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

    def refuse(self, number: int, error: ResponseError) -> None:
        self.result.refused.append(Refusal(number, self.uids.get(number), error))

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
    many: Callable[[list[int]], AsyncGenerator[T, None]],
    run: _Run,
) -> AsyncGenerator[T, None]:
    """What ``many(numbers)`` yields; a ``-ERR`` is noted and the rest asked again."""
    rest = numbers
    while rest:
        done = 0
        try:
            async with contextlib.aclosing(many(rest)) as items:
                async for item in items:
                    done += 1
                    yield item
            return
        except ResponseError as exc:
            run.refuse(rest[done], exc)
            rest = rest[done + 1 :]
