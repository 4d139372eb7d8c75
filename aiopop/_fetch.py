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
import contextlib
import math
import os
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ._delivery_state import LOCK_WAIT, STATE_FILE, DeliveryState, Record, StateLock
from ._errors import DeliveryError, ResponseError, UIDLUnavailableError
from ._fetch_callable import _Hand
from ._fetch_choose import _choose, _due, _learn_sizes, _listings, _reused, _window
from ._fetch_run import (
    Delivery,
    FetchResult,
    Filtered,
    Oversized,
    Plan,
    Planned,
    Refusal,
    Undelivered,
    _each,
    _Run,
    _Work,
)
from ._maildir import Maildir
from ._message import Deliver, Filter, MessageHeaders

if TYPE_CHECKING:
    from ._accounts import Account
    from ._client import POP3

__all__ = [
    "Delivery",
    "FetchResult",
    "Filtered",
    "Oversized",
    "Plan",
    "Planned",
    "Refusal",
    "UIDLUnavailableError",
    "Undelivered",
    "fetch_into",
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
DAY = 86400.0


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

    :func:`fetch_into` with a Maildir for destination, and ``new_only``
    off by default (every message is fetched); see there for the policies
    and filters. ``account`` names the mailbox in the Maildir's state: use
    :attr:`Account.mailbox_key <aiopop.Account.mailbox_key>` (or
    :func:`aiopop.mailbox_key`). One Maildir may serve several accounts.

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
    return await fetch_into(
        client, maildir, account=account, delete=delete, new_only=new_only,
        batch_messages=batch_messages, batch_octets=batch_octets,
        stream_threshold=stream_threshold, memory=memory, max_size=max_size, lock_wait=lock_wait,
    )  # fmt: skip


async def fetch_into(
    client: POP3,
    destination: str | os.PathLike[str] | Maildir | Deliver,
    *,
    account: str | Account,
    state: str | os.PathLike[str] | None = None,
    new_only: bool = True,
    delete: bool = False,
    delete_after_days: float | None = None,
    max_size: int | None = DEFAULT_MAX_SIZE,
    delete_larger_than: int | None = None,
    filter: Filter | None = None,
    dry_run: bool = False,
    batch_messages: int = DEFAULT_BATCH_MESSAGES,
    batch_octets: int = DEFAULT_BATCH_OCTETS,
    stream_threshold: int = DEFAULT_STREAM_THRESHOLD,
    memory: int = DEFAULT_MEMORY,
    lock_wait: float = LOCK_WAIT,
) -> FetchResult:
    """Deliver the mailbox of the logged-in ``client`` to ``destination``: the delivery engine.

    ``destination`` is a Maildir (a :class:`~aiopop.Maildir` or its path:
    its state is the file :data:`~aiopop.STATE_FILE` inside it; see
    :func:`fetch_to_maildir` for how it writes), or a *delivery*: an async
    callable given each message as a :class:`~aiopop.NewMessage`, such as
    :class:`~aiopop.CommandDelivery`. A message counts as delivered only
    when the callable returns: it is then recorded in the state file
    ``state`` (required for a callable; the format of
    :class:`~aiopop.SQLiteStore`), and only a recorded message may be
    deleted. A :class:`~aiopop.DeliveryError` from the callable leaves that
    message on the server (:attr:`FetchResult.undelivered`) and the run
    goes on; any other exception stops the run.

    ``account`` names the mailbox in the state: an
    :class:`~aiopop.Account` (its :attr:`~aiopop.Account.mailbox_key`; the
    messages handed over carry it) or the key itself. The run holds the
    state's lock on it (:class:`~aiopop.StateLock`), waiting up to
    ``lock_wait`` seconds for another run, then raising
    :class:`~aiopop.StateLockedError` having done nothing.

    What is fetched: with ``new_only`` (the default here) the messages whose
    unique-id and size the state does not hold; else every message.
    Before retrieval, in this order: a message listed larger than
    ``delete_larger_than`` octets is marked deleted unread; one larger than
    ``max_size`` is left on the server (:attr:`FetchResult.oversized`);
    then ``filter`` (an async callable given the :class:`~aiopop.MessageHeaders`
    from ``TOP n 0``) answers ``"fetch"``, ``"skip"`` (left on the server)
    or ``"delete"`` (marked deleted unread); a filter that raises
    :class:`~aiopop.DeliveryError` leaves the message on the server. What
    was judged is in :attr:`FetchResult.filtered`.

    What is deleted (the *policy*; by default nothing): with ``delete``,
    every message delivered, now or by an earlier run; with
    ``delete_after_days``, those first delivered at least that many days
    ago (the state keeps the time of first delivery; 0 is ``delete``). A
    message delivered earlier is known by its unique-id and LIST size, and
    only when no other message of the listing shares the unique-id; one
    recorded without a size (imported from another tool) gets its LIST
    size recorded the first time it is listed. All deletions are DELEs sent
    after the deliveries, and commit only at the caller's QUIT.

    ``dry_run`` does everything up to the decisions (the listings, the
    state's reading, TOP and the filter) and nothing after: no RETR, no
    DELE, nothing written; :attr:`FetchResult.plan` says what would have
    been fetched and deleted.
    """
    for name, value in (
        ("batch_messages", batch_messages),
        ("batch_octets", batch_octets),
        ("memory", memory),
    ):
        if value < 1:
            raise ValueError(f"{name} must be at least 1")
    for name, limit in (("max_size", max_size), ("delete_larger_than", delete_larger_than)):
        if limit is not None and limit < 0:
            raise ValueError(f"{name} must be at least 0, or None for no limit")
    if delete_after_days is not None and not (
        delete_after_days >= 0 and math.isfinite(delete_after_days)
    ):
        raise ValueError(f"delete_after_days must be a number >= 0, not {delete_after_days!r}")
    after = 0.0 if delete else None if delete_after_days is None else delete_after_days * DAY
    options = _Options(
        new_only, after, max_size, delete_larger_than, filter, dry_run, batch_messages,
        batch_octets, stream_threshold, memory,
    )  # fmt: skip
    key = account if isinstance(account, str) else account.mailbox_key
    source = None if isinstance(account, str) else account
    box: Maildir | None = None
    if isinstance(destination, Maildir | str | os.PathLike):
        if state is not None:
            raise ValueError("a Maildir keeps its own state: leave state out")
        box = destination if isinstance(destination, Maildir) else Maildir(destination)
        state_path = box.path / STATE_FILE
        if not dry_run:
            await box.create()
    elif state is None:
        raise ValueError("a delivery callable needs state=: the file recording what it took")
    else:
        state_path = Path(os.path.expanduser(state))  # noqa: ASYNC240 - no I/O
        if not dry_run:  # its folder, as for a Maildir: 0700, it says what was delivered
            await asyncio.to_thread(state_path.parent.mkdir, 0o700, parents=True, exist_ok=True)
    if dry_run:
        # A dry run takes no lock and writes nothing: it works on a copy of the state in
        # memory (migrated, adopted, recovered as the real run would), or on none.
        exists = os.path.exists(state_path)  # noqa: ASYNC240 - one stat, before any I/O
        copy = await DeliveryState.open_copy(state_path) if exists else None
        try:
            if copy is not None:
                await copy.adopt(key)
            return await _Engine(client, box, destination, copy, key, source, options).run()
        finally:
            if copy is not None:
                await copy.close()
    async with StateLock(state_path, key, wait=lock_wait):
        opened = await DeliveryState.open(state_path)
        try:
            await opened.adopt(key)
            return await _Engine(client, box, destination, opened, key, source, options).run()
        finally:
            await opened.close()


@dataclass(frozen=True)
class _Options:
    new_only: bool
    after: float | None
    """Seconds after first delivery that a message is deleted (None: never)."""
    max_size: int | None
    delete_larger_than: int | None
    filter: Filter | None
    dry_run: bool
    batch_messages: int
    batch_octets: int
    stream_threshold: int
    memory: int


class _Engine:
    """One run of :func:`fetch_into`: list, decide, deliver, delete."""

    def __init__(
        self,
        client: POP3,
        box: Maildir | None,
        destination: object,
        state: DeliveryState | None,
        key: str,
        source: Account | None,
        options: _Options,
    ) -> None:
        self.client = client
        self.box = box
        self.destination = destination
        self.state = state
        self.key = key
        self.source = source
        self.options = options
        self.result = FetchResult()
        self.uids: dict[int, str] = {}

    async def run(self) -> FetchResult:
        client, box, state, options, result = (
            self.client, self.box, self.state, self.options, self.result,
        )  # fmt: skip
        dry = options.dry_run
        if box is not None and state is not None:
            # In a dry run, on the copy of the state only: no file is moved.
            result.recovered = await _recover(box, state, self.key, move=not dry)
        uids, sizes = await _listings(client, options.new_only)
        self.uids = uids or {}
        records: dict[str, Record] = {}
        if uids is not None and state is not None:
            # A unique-id no longer listed names no message now: if it comes back, it
            # is another message. (Pending rows stay: recover() finished them above.)
            await state.forget_missing(self.key, set(uids.values()))
            records = await state.records(self.key)
            records = await _learn_sizes(state, self.key, records, uids, sizes)
            if box is not None and not dry:
                # A dry run sends no RETR: it trusts unique-id and size here.
                for uid in await _reused(client, box, records, uids, sizes):
                    del records[uid]
        known = {uid: record.size for uid, record in records.items()}
        wanted = _choose(uids, sizes, known, options.new_only, result)
        wanted, judged = self._by_size(wanted, sizes)
        if options.filter is not None and wanted:
            wanted, refused = await self._judge(options.filter, wanted, sizes)
            judged += refused
        due = _due(uids, sizes, records, options.after, time.time())
        if dry:
            result.plan = Plan(
                fetch=[self._planned(number, sizes) for number in wanted],
                delete=[self._planned(number, sizes) for number in sorted({*due, *judged})],
            )
            return result
        assert state is not None  # a real run has opened (or created) the state
        work = self._work(state)
        work.result, work.uids, work.sizes = result, self.uids, sizes
        await self._retrieve(work, wanted, sizes)
        if options.after is not None or judged:
            numbers = {*due, *judged}
            if options.after == 0:
                numbers.update(delivery.number for delivery in result.delivered)
            await work.delete(sorted(numbers))
        return result

    def _planned(self, number: int, sizes: dict[int, int]) -> Planned:
        return Planned(number, self.uids.get(number), sizes.get(number, 0))

    def _work(self, state: DeliveryState) -> _Work:
        options = self.options
        if self.box is not None:
            return _Run(
                self.client, self.box, state, self.key, options.batch_messages,
                options.batch_octets, options.max_size,
            )  # fmt: skip
        deliver = self.destination
        assert callable(deliver)
        return _Hand(self.client, deliver, state, self.key, self.source, options.max_size)

    async def _retrieve(self, work: _Work, wanted: list[int], sizes: dict[int, int]) -> None:
        client, options = self.client, self.options
        threshold = options.stream_threshold
        if client.max_message_size is not None:
            threshold = min(threshold, client.max_message_size)
        if isinstance(work, _Run):
            small = [number for number in wanted if sizes.get(number, threshold + 1) <= threshold]
            big = sorted(set(wanted).difference(small))
            window = _window(client, [sizes[n] for n in small], options.memory)
            await work.retrieve(small, big, window, options.memory, min(threshold, options.memory))
        else:
            assert isinstance(work, _Hand)
            window = _window(client, [sizes.get(n, 0) for n in wanted], options.memory)
            await work.retrieve(wanted, window, options.memory)

    def _by_size(self, wanted: list[int], sizes: dict[int, int]) -> tuple[list[int], list[int]]:
        """``wanted`` without those over the size limits; and those to delete unread."""
        options, result = self.options, self.result
        kept: list[int] = []
        judged: list[int] = []
        for number in wanted:
            size, uid = sizes.get(number, 0), self.uids.get(number)
            if options.delete_larger_than is not None and size > options.delete_larger_than:
                result.filtered.append(Filtered(number, uid, size, "delete", "size"))
                judged.append(number)
            elif options.max_size is not None and size > options.max_size:
                result.oversized.append(Oversized(number, uid, size))
            else:
                kept.append(number)
        return kept, judged

    async def _judge(
        self,
        filter: Filter,
        wanted: list[int],
        sizes: dict[int, int],
    ) -> tuple[list[int], list[int]]:
        """Ask ``filter`` about each of ``wanted`` (headers by pipelined TOP): what to fetch,
        and what to delete unread. A ``-ERR`` to TOP or a broken filter leaves it alone."""
        result = self.result
        fetch: list[int] = []
        delete: list[int] = []

        def refuse(number: int, error: ResponseError) -> None:
            result.refused.append(Refusal(number, self.uids.get(number), error))

        def pipelined(rest: list[int], most: int | None) -> AsyncGenerator[tuple[int, bytes], None]:
            return self.client.top_many(rest, 0, window=most)

        items = _each(wanted, pipelined, refuse)
        async with contextlib.aclosing(items):
            async for number, headers in items:
                uid, size = self.uids.get(number), sizes.get(number, 0)
                try:
                    verdict = await filter(MessageHeaders(number, uid, size, headers, self.source))
                except DeliveryError as exc:
                    if exc.uid is None:
                        exc.uid = uid
                    result.undelivered.append(Undelivered(number, uid, exc))
                    continue
                if verdict == "fetch":
                    fetch.append(number)
                elif verdict in ("skip", "delete"):
                    result.filtered.append(Filtered(number, uid, size, verdict, "filter"))
                    if verdict == "delete":
                        delete.append(number)
                else:
                    raise ValueError(
                        f"a filter must answer 'fetch', 'skip' or 'delete', not {verdict!r}"
                    )
        return fetch, delete


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
    return await _recover(maildir, state, account, move=True)


async def _recover(maildir: Maildir, state: DeliveryState, account: str, *, move: bool) -> int:
    """:func:`recover`; without ``move`` (a dry run, on a copy of the state) no file is
    renamed or removed, and the state says what the renames would have made it say."""
    names = await state.pending(account)
    moved: list[str] = []
    if names:
        found = maildir.find(names)
        moved = [name for name in names if found.get(name) == "tmp"]
        if move:
            await maildir.publish(moved)
        await state.commit(
            delivered=[name for name in names if name in found],
            forgotten=[name for name in names if name not in found],
        )
    if move:
        maildir.discard(maildir.abandoned())
    return len(moved)
