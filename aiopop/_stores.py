"""Where :func:`aiopop.watch` remembers the messages it has delivered.

A store holds, per mailbox (``key``), the unique-ids (UIDL) of the messages
whose handling returned, each with its size (from LIST), so that a
unique-id the server reuses for another message is told apart.
:class:`SeenStore` is the interface, small enough to put over any database;
:class:`MemoryStore` forgets everything when the process ends;
:class:`SQLiteStore` keeps it in a state file of the format
:class:`~aiopop.DeliveryState` defines (the one ``fetch`` keeps in a Maildir), and
commits each :meth:`~SeenStore.add` to disk before it returns, so a crash
after that never causes a redelivery, and a crash before it causes one at
most.
"""

from __future__ import annotations

import os
from collections.abc import Collection
from pathlib import Path
from typing import Protocol, runtime_checkable

from ._delivery_state import LOCK_WAIT, DeliveryState, StateLock

__all__ = ["MemoryStore", "SQLiteStore", "SeenStore"]


@runtime_checkable
class SeenStore(Protocol):
    """The unique-ids already delivered, per mailbox, with their sizes.

    ``key`` names the mailbox (see :func:`aiopop.watch`); one store
    may serve many. Methods may be called from one task at a time per key.
    """

    async def known(self, key: str, uids: Collection[str]) -> dict[str, int | None]:
        """Those of ``uids`` that were added for ``key`` (and not forgotten since), with the
        size each was added with (None: not known)."""
        ...

    async def add(self, key: str, uid: str, size: int | None = None) -> None:
        """Remember ``uid`` of ``size`` octets for ``key``; once this returns, it must
        survive a crash.

        Adding a uid again replaces its size.
        """
        ...

    async def forget_missing(self, key: str, current: Collection[str]) -> None:
        """Forget every uid of ``key`` that is not in ``current``.

        Called with the server's whole UIDL listing, so that the store does
        not grow with messages that are no longer on the server.
        """
        ...


class MemoryStore:
    """A :class:`SeenStore` in memory: what it knows ends with the process."""

    def __init__(self) -> None:
        self._seen: dict[str, dict[str, int | None]] = {}

    def __repr__(self) -> str:
        return f"MemoryStore({sum(map(len, self._seen.values()))} uids)"

    async def known(self, key: str, uids: Collection[str]) -> dict[str, int | None]:
        seen = self._seen.get(key, {})
        return {uid: seen[uid] for uid in uids if uid in seen}

    async def add(self, key: str, uid: str, size: int | None = None) -> None:
        self._seen.setdefault(key, {})[uid] = size

    async def forget_missing(self, key: str, current: Collection[str]) -> None:
        seen = self._seen.get(key)
        if seen:
            keep = set(current)
            for uid in [uid for uid in seen if uid not in keep]:
                del seen[uid]

    def uids(self, key: str) -> set[str]:
        """A copy of the uids remembered for ``key``."""
        return set(self._seen.get(key, ()))


class SQLiteStore:
    """A crash-safe :class:`SeenStore` in a state file, made when first used.

    Every operation opens the file (migrating one written by an earlier
    aiopop), runs in a worker thread and commits with ``synchronous=FULL``
    before it returns; there is nothing to close. Several watchers, in one
    process or several, may share a file: SQLite locks it, and each waits up
    to ``timeout`` seconds for another's write to finish. :meth:`lock` keeps
    two pollers of one mailbox (a ``watch`` and a ``fetch`` sharing the
    file, or two watchers) from overlapping.
    """

    def __init__(self, path: str | os.PathLike[str], *, timeout: float = 30.0) -> None:
        self.path = Path(path)
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"SQLiteStore({str(self.path)!r})"

    async def _open(self) -> DeliveryState:
        return await DeliveryState.open(self.path, busy_wait=self.timeout)

    async def known(self, key: str, uids: Collection[str]) -> dict[str, int | None]:
        async with await self._open() as state:
            stored = await state.known(key)
        return {uid: stored[uid] for uid in uids if uid in stored}

    async def add(self, key: str, uid: str, size: int | None = None) -> None:
        async with await self._open() as state:
            await state.commit(key, handed=[(uid, size)])

    async def forget_missing(self, key: str, current: Collection[str]) -> None:
        async with await self._open() as state:
            await state.forget_missing(key, current)

    async def login_method(self, key: str) -> str | None:
        """The login method that worked last for ``key`` (an AuthMethod value), if any."""
        async with await self._open() as state:
            return await state.login_method(key)

    async def remember_login(self, key: str, method: str) -> None:
        """Record that ``method`` logged in to ``key``'s mailbox."""
        async with await self._open() as state:
            await state.remember_login(key, method)

    def lock(self, key: str, *, wait: float = LOCK_WAIT) -> StateLock:
        """The lock on ``key``'s state in this file (``async with store.lock(key):``)."""
        return StateLock(self.path, key, wait=wait)
