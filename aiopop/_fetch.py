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
import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ._delivery_state import LOCK_WAIT, STATE_FILE, DeliveryState, Record, StateLock
from ._errors import ResponseError, UIDLUnavailableError
from ._fetch_run import Delivery, FetchResult, Oversized, Refusal, _Run
from ._maildir import Maildir, to_unix_line_ends

if TYPE_CHECKING:
    from ._client import POP3

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
