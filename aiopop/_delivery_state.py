"""What a destination already holds of a mailbox: one SQLite file, versioned and locked.

Both :func:`aiopop.fetch_to_maildir` and :func:`aiopop.watch`
(through :class:`~aiopop.SQLiteStore`) keep their state in this
format. Per message it holds the mailbox, the unique-id (UIDL), the size
(from LIST), the time of first delivery and, for a Maildir, the file name and
whether the file is known to have reached ``new/``. Per mailbox it holds the
login method that worked last, so that a poll tries it first and makes no
failed login attempt.

A mailbox is named by :func:`aiopop.mailbox_key` (``user@host``,
plus ``:port`` off the standard ports), or by an account's ``state_key``.

Why SQLite (the standard library's :mod:`sqlite3`): a transaction commits a
batch of rows with a few fsyncs whatever the size of the mailbox, its
rollback journal makes every commit all-or-nothing across a crash or a power
loss, and it needs no dependency. Each change is one transaction with
``synchronous = FULL``.

**Versions.** ``PRAGMA user_version`` holds :data:`SCHEMA_VERSION`. Files of
earlier aiopop releases are migrated in place, in one transaction, when
opened: version 1 (``fetch``'s ``messages`` table keyed by ``user@host``,
never a port) and the ``seen`` table of ``SQLiteStore`` (keyed
``user@host:port``, always a port). Keys are rewritten to today's rule, so
an upgrade neither downloads everything again nor deletes anything; rows
of version 1 for a mailbox on a non-standard port are adopted by that
mailbox on first use (:meth:`DeliveryState.adopt`). A file of a newer
version is refused, never rewritten.

**Locks.** :class:`StateLock` holds an exclusive :func:`fcntl.flock` per
mailbox and state file, so two processes (a ``fetch`` from cron and a
running ``watch``, or two fetches) never work on one mailbox's state at
once: the second waits a little, then fails with :class:`StateLockedError`.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
import re
import sqlite3
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self, TypeVar

from ._errors import StateError, StateLockedError

__all__ = [
    "SCHEMA_VERSION",
    "STATE_FILE",
    "DeliveryState",
    "Record",
    "StateError",
    "StateLock",
    "StateLockedError",
]

STATE_FILE = "aiopop-uidl.sqlite3"
"""The name of the state file inside a Maildir (next to ``tmp``, ``new`` and ``cur``).

Its name does not start with a dot: in a Maildir++ tree such names are folders."""

SCHEMA_VERSION = 2
"""The format this aiopop writes (``PRAGMA user_version``)."""

LOCK_WAIT = 5.0
"""Seconds :class:`StateLock` waits for another process before giving up, by default."""

_SCHEMA = """
CREATE TABLE messages (
    mailbox TEXT NOT NULL,
    uid TEXT NOT NULL,
    size INTEGER,
    name TEXT UNIQUE,
    delivered INTEGER NOT NULL DEFAULT 0,
    first_delivered REAL NOT NULL,
    marked REAL,
    PRIMARY KEY (mailbox, uid)
);
CREATE INDEX pending ON messages (mailbox) WHERE delivered = 0;
CREATE TABLE mailboxes (
    mailbox TEXT PRIMARY KEY,
    login_method TEXT,
    adopted_from TEXT,
    updated REAL NOT NULL
);
"""
_STANDARD_PORT = re.compile(r":(?:110|995)\Z")
_JULIAN_UNIX_EPOCH = 2440587.5
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Record:
    """What the state holds of one message of a mailbox."""

    uid: str
    size: int | None
    """Its size from LIST when it was delivered (None: not known, from an old file)."""
    name: str | None
    """Its Maildir file name (None: delivered to a consumer, not to a Maildir)."""
    delivered: bool
    """False while the file may still be in ``tmp/`` (see :meth:`DeliveryState.pending`)."""
    first_delivered: float
    """When it was first recorded, in seconds since the epoch."""
    marked: float | None = None
    """When a DELE for it was last accepted (None: never). Its unique-id listed again
    after that is either this message (the session ended before QUIT committed the
    deletion) or another that reuses the unique-id."""

    def matches(self, size: int | None) -> bool:
        """Whether a message of ``size`` octets (by LIST) can be this one.

        Unknown sizes on either side match: the check is a guard against a
        unique-id reused for another message, not a proof of identity.
        """
        return self.size is None or size is None or self.size == size


class DeliveryState:
    """One state file; open it with :meth:`open`, close it with :meth:`close`.

    Every method runs its SQL in a worker thread, one at a time. Each call
    that changes anything is one transaction: it happens whole or, after a
    crash, not at all. ``commit`` is the one method that writes rows of
    messages.
    """

    def __init__(self, connection: sqlite3.Connection, path: Path) -> None:
        self._db = connection
        self.path = path
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"<DeliveryState {str(self.path)!r}>"

    @classmethod
    async def open(cls, path: str | os.PathLike[str], *, busy_wait: float = 30.0) -> DeliveryState:
        """Open the file at ``path``, creating it (mode 0600) or migrating it as needed.

        ``busy_wait``: seconds to wait for another connection's write to end.
        Raises :class:`StateError` for a file of a newer version or one that
        is not a state file.
        """
        file = Path(path)
        return cls(await asyncio.to_thread(_connect, file, busy_wait), file)

    @classmethod
    async def open_copy(cls, path: str | os.PathLike[str]) -> DeliveryState:
        """A copy in memory of the file at ``path``, read without writing anything to it.

        For a dry run: the copy is migrated to :data:`SCHEMA_VERSION` if
        needed and may be changed at will; the file stays as it was (it is
        opened read-only and takes no lock). Raises :class:`StateError` as
        :meth:`open` does.
        """
        file = Path(path)
        return cls(await asyncio.to_thread(_copy, file), file)

    async def close(self) -> None:
        """Close the file (after the operation in progress, if any)."""
        await self._run(lambda db: db.close())

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        async with self._lock:
            running = asyncio.ensure_future(asyncio.to_thread(work, self._db))
            try:
                return await asyncio.shield(running)
            except sqlite3.OperationalError as exc:
                raise _translated(exc, self.path) from exc
            except asyncio.CancelledError:
                # A thread cannot be stopped: let it finish before anything else
                # uses the connection, then give in to the cancellation.
                await asyncio.wait([running])
                if not running.cancelled():
                    running.exception()  # read: not to be reported as never retrieved
                raise

    async def records(self, mailbox: str) -> dict[str, Record]:
        """Every message recorded for ``mailbox``, by unique-id."""

        def query(db: sqlite3.Connection) -> dict[str, Record]:
            rows = db.execute(
                "SELECT uid, size, name, delivered, first_delivered, marked FROM messages"
                " WHERE mailbox = ?",
                (mailbox,),
            )
            return {
                uid: Record(uid, size, name, bool(delivered), first, marked)
                for uid, size, name, delivered, first, marked in rows
            }

        return await self._run(query)

    async def known(self, mailbox: str) -> dict[str, int | None]:
        """The unique-ids recorded for ``mailbox``, with their sizes."""
        return {uid: record.size for uid, record in (await self.records(mailbox)).items()}

    async def pending(self, mailbox: str) -> list[str]:
        """The file names of ``mailbox`` not yet known to have reached ``new/``."""

        def query(db: sqlite3.Connection) -> list[str]:
            rows = db.execute(
                "SELECT name FROM messages WHERE delivered = 0 AND mailbox = ?"
                " AND name IS NOT NULL ORDER BY name",
                (mailbox,),
            )
            return [name for (name,) in rows]

        return await self._run(query)

    async def commit(
        self,
        mailbox: str = "",
        saved: Sequence[tuple[str, str | None, int | None]] = (),
        *,
        delivered: Iterable[str] = (),
        forgotten: Iterable[str] = (),
        handed: Sequence[tuple[str, int | None]] = (),
    ) -> None:
        """Change the state in one transaction.

        * ``saved``: ``(uid, name, size)`` of ``mailbox`` written into a
          Maildir's ``tmp/``, recorded as *pending*;
        * ``delivered``: file names now durable in ``new/``;
        * ``forgotten``: file names whose rows are dropped (the file is gone);
        * ``handed``: ``(uid, size)`` of ``mailbox`` delivered to a consumer
          (no file), recorded as delivered.

        A unique-id recorded again replaces its row, keeping the time of
        its first delivery when the size is the same (the same message).
        """
        now = time.time()
        rows = [(mailbox, uid, size, name, 0, now) for uid, name, size in saved]
        rows += [(mailbox, uid, size, None, 1, now) for uid, size in handed]
        done = [(name,) for name in delivered]
        gone = [(name,) for name in forgotten]

        def update(db: sqlite3.Connection) -> None:
            with db:  # BEGIN ... COMMIT, or ROLLBACK on an error
                db.executemany(
                    "INSERT INTO messages"
                    " (mailbox, uid, size, name, delivered, first_delivered)"
                    " VALUES (?, ?, ?, ?, ?, ?)"
                    " ON CONFLICT (mailbox, uid) DO UPDATE SET"
                    " first_delivered = CASE WHEN size IS excluded.size"
                    " THEN first_delivered ELSE excluded.first_delivered END,"
                    " size = excluded.size, name = excluded.name,"
                    " delivered = excluded.delivered, marked = NULL",
                    rows,
                )
                db.executemany("UPDATE messages SET delivered = 1 WHERE name = ?", done)
                db.executemany("DELETE FROM messages WHERE name = ?", gone)

        if rows or done or gone:
            await self._run(update)

    async def mark(self, mailbox: str, uids: Iterable[str]) -> None:
        """Record that the server accepted a DELE for each of ``uids`` of ``mailbox``."""
        now = time.time()
        rows = [(now, mailbox, uid) for uid in uids]

        def update(db: sqlite3.Connection) -> None:
            with db:
                db.executemany("UPDATE messages SET marked = ? WHERE mailbox = ? AND uid = ?", rows)

        if rows:
            await self._run(update)

    async def learn_sizes(self, mailbox: str, sizes: dict[str, int]) -> None:
        """Record the LIST size of rows of ``mailbox`` recorded without one (``{uid: size}``).

        Rows that have a size keep it: a size is never replaced here.
        """
        rows = [(size, mailbox, uid) for uid, size in sizes.items()]

        def update(db: sqlite3.Connection) -> None:
            with db:
                db.executemany(
                    "UPDATE messages SET size = ? WHERE mailbox = ? AND uid = ? AND size IS NULL",
                    rows,
                )

        if rows:
            await self._run(update)

    async def forget_missing(self, mailbox: str, current: Collection[str]) -> None:
        """Drop the rows of ``mailbox`` whose unique-id is not in ``current`` (the listing).

        Only rows without a file in a Maildir or whose file is delivered: a
        pending row is an interrupted delivery that :func:`aiopop.recover`
        still has to finish.
        """
        keep = set(current)

        def update(db: sqlite3.Connection) -> None:
            with db:
                rows = db.execute(
                    "SELECT uid FROM messages WHERE mailbox = ? AND delivered = 1", (mailbox,)
                ).fetchall()
                gone = [(mailbox, uid) for (uid,) in rows if uid not in keep]
                db.executemany("DELETE FROM messages WHERE mailbox = ? AND uid = ?", gone)

        await self._run(update)

    async def login_method(self, mailbox: str) -> str | None:
        """The login method that worked last for ``mailbox`` (an AuthMethod value), if any."""

        def query(db: sqlite3.Connection) -> str | None:
            row = db.execute(
                "SELECT login_method FROM mailboxes WHERE mailbox = ?", (mailbox,)
            ).fetchone()
            return None if row is None else row[0]

        return await self._run(query)

    async def remember_login(self, mailbox: str, method: str) -> None:
        """Record that ``method`` logged in to ``mailbox``."""

        def update(db: sqlite3.Connection) -> None:
            with db:
                db.execute(
                    "INSERT INTO mailboxes (mailbox, login_method, updated) VALUES (?, ?, ?)"
                    " ON CONFLICT (mailbox) DO UPDATE SET"
                    " login_method = excluded.login_method, updated = excluded.updated",
                    (mailbox, method, time.time()),
                )

        if await self.login_method(mailbox) != method:
            await self._run(update)

    async def adopt(self, mailbox: str) -> int:
        """Give ``mailbox`` the rows that a version-1 file kept under its key without a port.

        Version 1 named a mailbox ``user@host`` whatever its port; today's
        rule adds ``:port`` off the standard ports. When ``mailbox`` has such
        a port, has no rows, and the file was migrated from version 1, the
        rows of ``user@host`` become its own (once). Returns the rows moved.
        """
        match = re.fullmatch(r"(.*):([0-9]+)", mailbox)
        if match is None or mailbox.endswith("]"):
            return 0
        legacy = match[1]

        def update(db: sqlite3.Connection) -> int:
            with db:
                migrated = db.execute(
                    "SELECT 1 FROM mailboxes WHERE mailbox = '' AND adopted_from = 'version 1'"
                ).fetchone()
                if migrated is None:
                    return 0
                if db.execute("SELECT 1 FROM messages WHERE mailbox = ?", (mailbox,)).fetchone():
                    return 0
                moved = db.execute(
                    "UPDATE messages SET mailbox = ? WHERE mailbox = ?", (mailbox, legacy)
                ).rowcount
                if moved:
                    db.execute(
                        "INSERT OR REPLACE INTO mailboxes (mailbox, adopted_from, updated)"
                        " VALUES (?, ?, ?)",
                        (mailbox, legacy, time.time()),
                    )
                return int(moved)

        return await self._run(update)


_DISK_ERRORS = (
    ("disk is full", errno.ENOSPC),
    ("disk I/O error", errno.EIO),
    ("readonly database", errno.EROFS),
)


def _translated(exc: sqlite3.OperationalError, path: Path) -> Exception:
    """SQLite's words for a disk that fails, as the OSError they stand for.

    So that a full disk under the state file is reported like a full disk
    under the Maildir, and never as a network failure. A busy file (another
    process's write outlasting the wait) stays as it is.
    """
    text = str(exc)
    for words, number in _DISK_ERRORS:
        if words in text:
            return OSError(number, f"{os.strerror(number)} ({text})", str(path))
    if "locked" in text or "busy" in text:
        return exc
    return StateError(f"{path}: {text}")


def _connect(path: Path, timeout: float) -> sqlite3.Connection:
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))  # SQLite would use 0644
    db = sqlite3.connect(path, timeout=timeout, check_same_thread=False)
    try:
        db.execute("PRAGMA synchronous = FULL")  # every commit reaches the disk
        # A file already in this format needs no write lock: SQLiteStore opens it for
        # every operation. Otherwise one process migrates while the others wait, and
        # _migrate reads the version again under the lock.
        if db.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:
            with db:
                db.execute("BEGIN IMMEDIATE")
                _migrate(db, path)
    except sqlite3.DatabaseError as exc:
        db.close()
        if isinstance(exc, sqlite3.OperationalError):
            translated = _translated(exc, path)
            if translated is exc:
                raise
            if isinstance(translated, OSError):
                raise translated from exc
        raise StateError(f"{path}: not an aiopop state file ({exc})") from exc
    except BaseException:
        db.close()
        raise
    return db


def _copy(path: Path) -> sqlite3.Connection:
    source = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    copy = sqlite3.connect(":memory:", check_same_thread=False)
    try:
        source.backup(copy)
        with copy:
            copy.execute("BEGIN IMMEDIATE")
            _migrate(copy, path)
    except sqlite3.DatabaseError as exc:
        copy.close()
        if isinstance(exc, sqlite3.OperationalError):
            translated = _translated(exc, path)
            if isinstance(translated, OSError):
                raise translated from exc
        raise StateError(f"{path}: not an aiopop state file ({exc})") from exc
    except BaseException:
        copy.close()
        raise
    finally:
        source.close()
    return copy


def _migrate(db: sqlite3.Connection, path: Path) -> None:
    """Bring the file to :data:`SCHEMA_VERSION`, inside the caller's transaction."""
    version = db.execute("PRAGMA user_version").fetchone()[0]
    if version == SCHEMA_VERSION:
        return
    if version > SCHEMA_VERSION:
        raise StateError(
            f"{path}: state format {version} is newer than this aiopop's ({SCHEMA_VERSION});"
            " upgrade aiopop"
        )
    tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if version not in (0, 1) or (version == 1 and "messages" not in tables):
        raise StateError(f"{path}: unknown state format {version}")
    if "messages" in tables:  # version 1: fetch's table, keyed user@host
        db.execute("ALTER TABLE messages RENAME TO messages_v1")
        db.execute("DROP INDEX IF EXISTS pending")
    for statement in _SCHEMA.split(";"):  # not executescript(), which would COMMIT first
        if statement.strip():
            db.execute(statement)
    if "messages" in tables:
        db.execute(
            "INSERT INTO messages (mailbox, uid, size, name, delivered, first_delivered)"
            " SELECT account, uid, size, name, delivered, recorded FROM messages_v1"
        )
        db.execute("DROP TABLE messages_v1")
        db.execute(
            "INSERT INTO mailboxes (mailbox, adopted_from, updated) VALUES ('', 'version 1', ?)",
            (time.time(),),
        )
    if "seen" in tables:  # SQLiteStore's table, keyed user@host:port
        rows = db.execute("SELECT key, uid, added FROM seen").fetchall()
        db.executemany(
            "INSERT OR IGNORE INTO messages"
            " (mailbox, uid, size, name, delivered, first_delivered)"
            " VALUES (?, ?, NULL, NULL, 1, ?)",
            [
                (_STANDARD_PORT.sub("", key), uid, (added - _JULIAN_UNIX_EPOCH) * 86400.0)
                for key, uid, added in rows
            ],
        )
        db.execute("DROP TABLE seen")
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


class StateLock:
    """An exclusive lock on one mailbox's state in one state file, across processes.

    ``async with StateLock(state_path, mailbox):`` takes it, waiting up to
    ``wait`` seconds for another holder, then raises
    :class:`StateLockedError`. The lock is a :func:`fcntl.flock` on a small
    file next to the state file (``<state file>.<hash of mailbox>.lock``),
    so the system releases it when a holder dies. Two locks of one
    mailbox and file exclude each other within one process too.
    """

    def __init__(
        self, state_path: str | os.PathLike[str], mailbox: str, *, wait: float = LOCK_WAIT
    ) -> None:
        digest = hashlib.sha256(mailbox.encode("utf-8")).hexdigest()[:16]
        state = Path(state_path)
        self.state_path = state
        self.path = state.with_name(f"{state.name}.{digest}.lock")
        self.mailbox = mailbox
        self.wait = wait
        self._descriptor: int | None = None

    def __repr__(self) -> str:
        held = "held" if self._descriptor is not None else "free"
        return f"<StateLock {self.mailbox!r} {str(self.path)!r} {held}>"

    async def acquire(self) -> None:
        """Take the lock; :class:`StateLockedError` after ``wait`` seconds of another's hold."""
        import fcntl

        descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600)
        deadline = time.monotonic() + self.wait
        try:
            while True:
                try:
                    fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise StateLockedError(
                            f"another aiopop process is working on {self.mailbox} with the"
                            f" state {self.state_path} (it holds {self.path}); nothing was done:"
                            " try again when it is finished"
                        ) from None
                    await asyncio.sleep(0.05)
        except BaseException:
            os.close(descriptor)
            raise
        self._descriptor = descriptor

    def release(self) -> None:
        """Let the lock go (closing the file releases the flock)."""
        descriptor, self._descriptor = self._descriptor, None
        if descriptor is not None:
            os.close(descriptor)

    async def __aenter__(self) -> Self:
        await self.acquire()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()
