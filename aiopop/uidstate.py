"""Which POP3 messages a Maildir already holds: a small SQLite database inside it.

Each row says: the message with unique-id ``uid`` (from UIDL) and size
``size`` (from LIST) of mailbox ``account`` was saved as the Maildir file
``name``; ``delivered`` says
whether that file is known to have reached ``new/``. A row is written only
after the file's data is on disk, and is *pending* (``delivered = 0``)
until the rename into ``new/`` is durable too. One Maildir may serve
several accounts: rows are keyed by account and unique-id.

Why SQLite (the standard library's :mod:`sqlite3`) rather than a text file
replaced atomically: a transaction commits a batch of rows with a few
fsyncs whatever the size of the mailbox, where a text file would be
rewritten whole for every batch (quadratic over a large first download);
SQLite's rollback journal makes every commit all-or-nothing across a crash
or power loss; and it needs no dependency.

The file is ``aiopop-uidl.sqlite3`` in the Maildir's own directory, next to
``tmp``, ``new`` and ``cur`` (as Dovecot keeps ``dovecot-uidlist`` there).
Its name does not start with a dot: in a Maildir++ tree, names starting
with a dot are folders. It is created with mode 0600.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TypeVar

__all__ = ["STATE_FILE", "UIDState"]

STATE_FILE = "aiopop-uidl.sqlite3"
"""The name of the state database inside a Maildir."""

_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    account TEXT NOT NULL,
    uid TEXT NOT NULL,
    name TEXT NOT NULL UNIQUE,
    size INTEGER,
    delivered INTEGER NOT NULL DEFAULT 0,
    recorded REAL NOT NULL,
    PRIMARY KEY (account, uid)
);
CREATE INDEX IF NOT EXISTS pending ON messages (delivered) WHERE delivered = 0;
"""
T = TypeVar("T")


class UIDState:
    """The unique-ids saved in one Maildir, per account; open with :meth:`open`.

    Every method runs its SQL in a worker thread (a commit waits for the
    disk), one at a time. Each call that changes anything is one
    transaction: it happens whole or, after a crash, not at all.
    """

    def __init__(self, connection: sqlite3.Connection, path: Path) -> None:
        self._db = connection
        self.path = path
        self._lock = asyncio.Lock()

    @classmethod
    async def open(cls, path: str | os.PathLike[str]) -> UIDState:
        """Open the database at ``path``, creating it (mode 0600) when missing."""
        file = Path(path)
        return cls(await asyncio.to_thread(_connect, file), file)

    async def close(self) -> None:
        """Close the database (after the operation in progress, if any)."""
        await self._run(lambda db: db.close())

    async def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        async with self._lock:
            running = asyncio.ensure_future(asyncio.to_thread(work, self._db))
            try:
                return await asyncio.shield(running)
            except asyncio.CancelledError:
                # A thread cannot be stopped: let it finish before anything else
                # uses the connection, then give in to the cancellation.
                await asyncio.wait([running])
                if not running.cancelled():
                    running.exception()  # read: not to be reported as never retrieved
                raise

    async def known(self, account: str) -> dict[str, int | None]:
        """The unique-ids of ``account`` that this Maildir holds, with their recorded sizes."""

        def query(db: sqlite3.Connection) -> dict[str, int | None]:
            rows = db.execute("SELECT uid, size FROM messages WHERE account = ?", (account,))
            return dict(rows.fetchall())

        return await self._run(query)

    async def pending(self, account: str) -> list[str]:
        """The file names of ``account`` not yet known to have reached ``new/``."""

        def query(db: sqlite3.Connection) -> list[str]:
            rows = db.execute(
                "SELECT name FROM messages WHERE delivered = 0 AND account = ? ORDER BY name",
                (account,),
            )
            return [name for (name,) in rows]

        return await self._run(query)

    async def commit(
        self,
        account: str = "",
        saved: Sequence[tuple[str, str, int | None]] = (),
        *,
        delivered: Iterable[str] = (),
        forgotten: Iterable[str] = (),
    ) -> None:
        """In one transaction: record ``saved`` ``(uid, name, size)`` of ``account`` as
        pending, mark the files ``delivered`` as in ``new/``, and drop the rows of the
        files ``forgotten``.

        A unique-id recorded again replaces its earlier row.
        """
        now = time.time()
        rows = [(account, uid, name, size, now) for uid, name, size in saved]
        done = [(name,) for name in delivered]
        gone = [(name,) for name in forgotten]

        def update(db: sqlite3.Connection) -> None:
            with db:  # BEGIN ... COMMIT, or ROLLBACK on an error
                db.executemany(
                    "INSERT OR REPLACE INTO messages"
                    " (account, uid, name, size, delivered, recorded) VALUES (?, ?, ?, ?, 0, ?)",
                    rows,
                )
                db.executemany("UPDATE messages SET delivered = 1 WHERE name = ?", done)
                db.executemany("DELETE FROM messages WHERE name = ?", gone)

        if rows or done or gone:
            await self._run(update)


def _connect(path: Path) -> sqlite3.Connection:
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))  # SQLite would use 0644
    db = sqlite3.connect(path, check_same_thread=False)
    try:
        db.execute("PRAGMA synchronous = FULL")  # every commit reaches the disk
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version not in (0, _VERSION):
            raise sqlite3.DatabaseError(
                f"{path}: state format {version}, this aiopop knows only {_VERSION}"
            )
        with db:
            db.executescript(_SCHEMA)
            db.execute(f"PRAGMA user_version = {_VERSION}")
    except BaseException:
        db.close()
        raise
    return db
