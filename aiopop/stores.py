"""Where :func:`aiopop.watch.watch` remembers the messages it has delivered.

A store holds, per mailbox (``key``), the unique-ids (UIDL) of the messages
whose handling returned. :class:`SeenStore` is the interface, small enough
to put over any database; :class:`MemoryStore` forgets everything when the
process ends; :class:`SQLiteStore` keeps it in an SQLite file (the standard
library's :mod:`sqlite3`, run in a worker thread) and commits each
:meth:`~SeenStore.add` to disk before it returns, so a crash after that
never causes a redelivery, and a crash before it causes one at most.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
from collections.abc import Collection
from pathlib import Path
from typing import Protocol, runtime_checkable

__all__ = ["MemoryStore", "SQLiteStore", "SeenStore"]


@runtime_checkable
class SeenStore(Protocol):
    """The unique-ids already delivered, per mailbox.

    ``key`` names the mailbox (see :func:`aiopop.watch.watch`); one store
    may serve many. Methods may be called from one task at a time per key.
    """

    async def known(self, key: str, uids: Collection[str]) -> set[str]:
        """Those of ``uids`` that were added for ``key`` (and not forgotten since)."""
        ...

    async def add(self, key: str, uid: str) -> None:
        """Remember ``uid`` for ``key``; once this returns, it must survive a crash.

        Adding a uid twice is not an error.
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
        self._seen: dict[str, set[str]] = {}

    def __repr__(self) -> str:
        return f"MemoryStore({sum(map(len, self._seen.values()))} uids)"

    async def known(self, key: str, uids: Collection[str]) -> set[str]:
        seen = self._seen.get(key, set())
        return {uid for uid in uids if uid in seen}

    async def add(self, key: str, uid: str) -> None:
        self._seen.setdefault(key, set()).add(uid)

    async def forget_missing(self, key: str, current: Collection[str]) -> None:
        seen = self._seen.get(key)
        if seen:
            seen.intersection_update(current)

    def uids(self, key: str) -> set[str]:
        """A copy of the uids remembered for ``key``."""
        return set(self._seen.get(key, ()))


_SCHEMA = """
CREATE TABLE IF NOT EXISTS seen (
    key TEXT NOT NULL,
    uid TEXT NOT NULL,
    added REAL NOT NULL DEFAULT (julianday('now')),
    PRIMARY KEY (key, uid)
) WITHOUT ROWID
"""


class SQLiteStore:
    """A crash-safe :class:`SeenStore` in an SQLite file, created when first used.

    Every operation opens its own connection in a worker thread
    (:func:`asyncio.to_thread`), so there is nothing to close and the event
    loop never waits for the disk. :meth:`add` commits with
    ``synchronous=FULL`` (the journal and the database are flushed to disk)
    before it returns. Several watchers, in one process or several, may
    share a file: SQLite locks it, and each waits up to ``timeout`` seconds
    for another's write to finish.
    """

    def __init__(self, path: str | os.PathLike[str], *, timeout: float = 30.0) -> None:
        self.path = Path(path)
        self.timeout = timeout
        self._ready = False
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"SQLiteStore({str(self.path)!r})"

    def _connect(self) -> sqlite3.Connection:
        # Autocommit mode: the only transactions are the explicit BEGIN IMMEDIATE ones.
        connection = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None)
        connection.execute("PRAGMA synchronous = FULL")
        if not self._ready:
            with self._lock:
                connection.execute(_SCHEMA)
                self._ready = True
        return connection

    def _known(self, key: str, uids: Collection[str]) -> set[str]:
        connection = self._connect()
        try:
            rows = connection.execute("SELECT uid FROM seen WHERE key = ?", (key,)).fetchall()
        finally:
            connection.close()
        stored = {row[0] for row in rows}
        return {uid for uid in uids if uid in stored}

    def _add(self, key: str, uid: str) -> None:
        connection = self._connect()
        try:
            with connection:  # COMMIT, or ROLLBACK on an error
                connection.execute("BEGIN IMMEDIATE")
                connection.execute(
                    "INSERT OR IGNORE INTO seen (key, uid) VALUES (?, ?)", (key, uid)
                )
        finally:
            connection.close()

    def _forget_missing(self, key: str, current: Collection[str]) -> None:
        keep = set(current)
        connection = self._connect()
        try:
            with connection:
                connection.execute("BEGIN IMMEDIATE")
                rows = connection.execute("SELECT uid FROM seen WHERE key = ?", (key,)).fetchall()
                gone = [(key, row[0]) for row in rows if row[0] not in keep]
                connection.executemany("DELETE FROM seen WHERE key = ? AND uid = ?", gone)
        finally:
            connection.close()

    async def known(self, key: str, uids: Collection[str]) -> set[str]:
        return await asyncio.to_thread(self._known, key, list(uids))

    async def add(self, key: str, uid: str) -> None:
        await asyncio.to_thread(self._add, key, uid)

    async def forget_missing(self, key: str, current: Collection[str]) -> None:
        await asyncio.to_thread(self._forget_missing, key, list(current))
