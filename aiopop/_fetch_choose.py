"""What one run of :func:`aiopop.fetch_into` fetches and deletes, from the listings and the state.

The engine (:mod:`aiopop._fetch`) asks these: the listings (UIDL and LIST,
pipelined), which messages are new (:func:`_choose`), which unique-ids an
earlier run marked deleted now name another message (:func:`_reused`),
which earlier deliveries the policy deletes now (:func:`_due`), the sizes
of imported rows (:func:`_learn_sizes`), and how deep to pipeline
(:func:`_window`).
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from ._delivery_state import DeliveryState, Record
from ._errors import ResponseError, UIDLUnavailableError
from ._fetch_run import FetchResult
from ._maildir import Maildir, to_unix_line_ends

if TYPE_CHECKING:
    from ._client import POP3

__all__: list[str] = []


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


def _due(
    uids: dict[int, str] | None,
    sizes: dict[int, int],
    records: dict[str, Record],
    after: float | None,
    now: float,
) -> list[int]:
    """The messages delivered by an earlier run that the policy deletes now.

    Those first delivered at least ``after`` seconds before ``now`` (None:
    none). An earlier delivery is recognised by its unique-id and its size
    (as LIST gave it then and now), and only when no other message in this
    listing has the same unique-id. RFC 1939 makes unique-ids unique and
    permanent; against a server that breaks that, the size check and the
    uniqueness check keep a message that was never delivered from being
    deleted. A row still pending (its file not known to be in ``new/``) is
    never due.
    """
    if uids is None or after is None:
        return []
    counts = collections.Counter(uids.values())
    due: list[int] = []
    for number, uid in uids.items():
        record = records.get(uid)
        if record is None or counts[uid] != 1 or not record.delivered:
            continue
        same = record.size is not None and record.size == sizes.get(number, -1)
        if same and record.first_delivered <= now - after:
            due.append(number)
    return sorted(due)


async def _learn_sizes(
    state: DeliveryState,
    key: str,
    records: dict[str, Record],
    uids: dict[int, str],
    sizes: dict[int, int],
) -> dict[str, Record]:
    """Record the LIST size of the messages recorded without one (imported from another tool).

    Only for a unique-id that names one message of the listing. From then
    on the message is known by unique-id and size like any other, so a
    policy may delete it, and a unique-id reused later at another size is
    told apart.
    """
    counts = collections.Counter(uids.values())
    learnt = {
        uid: sizes[number]
        for number, uid in uids.items()
        if counts[uid] == 1 and number in sizes
        and uid in records and records[uid].size is None
    }  # fmt: skip
    if not learnt:
        return records
    await state.learn_sizes(key, learnt)
    return {
        uid: replace(record, size=learnt.get(uid, record.size)) for uid, record in records.items()
    }
