"""The state file: rows per mailbox, pending until delivered, all-or-nothing commits,
migrations from earlier formats, the lock."""

from __future__ import annotations

import asyncio
import errno
import sqlite3
import stat
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from aiopop._delivery_state import (
    SCHEMA_VERSION,
    DeliveryState,
    Record,
    StateError,
    StateLock,
    StateLockedError,
)


async def test_a_new_database_is_private_and_empty(tmp_path: Path) -> None:
    state = await DeliveryState.open(tmp_path / "state.sqlite3")
    try:
        assert stat.S_IMODE((tmp_path / "state.sqlite3").stat().st_mode) == 0o600
        assert await state.known("a") == {}
        assert await state.pending("a") == []
    finally:
        await state.close()


async def test_rows_are_pending_until_delivered_and_kept_per_account(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"
    state = await DeliveryState.open(path)
    await state.commit("alice@x", [("u1", "n1", 10), ("u2", "n2", None)])
    await state.commit("bob@x", [("u1", "n3", 30)])
    assert await state.known("alice@x") == {"u1": 10, "u2": None}
    assert await state.known("bob@x") == {"u1": 30}
    assert await state.pending("alice@x") == ["n1", "n2"]
    assert await state.pending("bob@x") == ["n3"]
    await state.commit(delivered=["n1", "n3"], forgotten=["n2"])
    await state.close()

    again = await DeliveryState.open(path)  # what was committed is on disk
    try:
        assert await again.pending("alice@x") == []
        assert await again.pending("bob@x") == []
        assert await again.known("alice@x") == {"u1": 10}
        assert await again.known("bob@x") == {"u1": 30}
    finally:
        await again.close()


async def test_a_unique_id_recorded_again_replaces_its_row(tmp_path: Path) -> None:
    state = await DeliveryState.open(tmp_path / "s")
    try:
        await state.commit("a", [("u1", "old", 1)], delivered=[])
        await state.commit(delivered=["old"])
        await state.commit("a", [("u1", "new", 2)])
        assert await state.pending("a") == ["new"]
        assert await state.known("a") == {"u1": 2}
    finally:
        await state.close()


async def test_a_commit_is_all_or_nothing(tmp_path: Path) -> None:
    state = await DeliveryState.open(tmp_path / "s")
    try:
        await state.commit("a", [("u1", "n1", 1)])
        # The last statement fails (a value SQLite cannot store): nothing of it stays.
        unstorable: list[str] = [object()]  # type: ignore[list-item]
        with pytest.raises(sqlite3.Error):
            await state.commit("a", [("u2", "n2", 2)], delivered=["n1"], forgotten=unstorable)
        assert await state.known("a") == {"u1": 1}
        assert await state.pending("a") == ["n1"]
    finally:
        await state.close()


async def test_a_database_from_a_newer_aiopop_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s"
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA user_version = 99")
    db.close()
    with pytest.raises(StateError, match="format 99 is newer"):
        await DeliveryState.open(path)


async def test_a_cancelled_call_lets_its_thread_finish_before_the_next(tmp_path: Path) -> None:
    state = await DeliveryState.open(tmp_path / "s")
    try:
        task = asyncio.ensure_future(state.commit("a", [(f"u{i}", f"n{i}", i) for i in range(500)]))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # The transaction ran to its end in its thread: all of it, or (cancelled
        # before it started) none of it.
        assert len(await state.known("a")) in (0, 500)
    finally:
        await state.close()


async def test_an_empty_commit_does_nothing(tmp_path: Path) -> None:
    state = await DeliveryState.open(tmp_path / "s")
    try:
        await state.commit()
        assert await state.pending("a") == []
    finally:
        await state.close()


async def test_the_size_and_the_first_delivery_survive_a_redelivery_of_the_same_message(
    tmp_path: Path,
) -> None:
    state = await DeliveryState.open(tmp_path / "s")
    try:
        await state.commit("a", [("u1", "n1", 10)])
        first = (await state.records("a"))["u1"].first_delivered
        await asyncio.sleep(0.01)
        await state.commit("a", [("u1", "n2", 10)])  # fetched again (no new_only)
        same = (await state.records("a"))["u1"]
        await state.commit("a", handed=[("u1", 11)])  # the unique-id now names another message
        other = (await state.records("a"))["u1"]
    finally:
        await state.close()
    assert (same.name, same.size, same.first_delivered) == ("n2", 10, first)
    assert (other.name, other.size, other.delivered) == (None, 11, True)
    assert other.first_delivered > first


async def test_forget_missing_keeps_pending_rows_and_other_mailboxes(tmp_path: Path) -> None:
    state = await DeliveryState.open(tmp_path / "s")
    try:
        await state.commit("a", [("pending", "p", 1)], handed=[("gone", 1), ("kept", 2)])
        await state.commit("b", handed=[("gone", 3)])
        await state.forget_missing("a", ["kept"])
        assert sorted(await state.known("a")) == ["kept", "pending"]
        assert await state.known("b") == {"gone": 3}
    finally:
        await state.close()


async def test_the_login_method_that_worked_is_remembered_per_mailbox(tmp_path: Path) -> None:
    path = tmp_path / "s"
    async with await DeliveryState.open(path) as state:
        assert await state.login_method("a") is None
        await state.remember_login("a", "SCRAM-SHA-256")
        await state.remember_login("a", "PLAIN")
        await state.remember_login("b", "APOP")
    async with await DeliveryState.open(path) as state:
        assert await state.login_method("a") == "PLAIN"
        assert await state.login_method("b") == "APOP"


# -- migrations -------------------------------------------------------------------------------

VERSION_1 = """
CREATE TABLE messages (
    account TEXT NOT NULL, uid TEXT NOT NULL, name TEXT NOT NULL UNIQUE, size INTEGER,
    delivered INTEGER NOT NULL DEFAULT 0, recorded REAL NOT NULL,
    PRIMARY KEY (account, uid)
);
CREATE INDEX pending ON messages (delivered) WHERE delivered = 0;
PRAGMA user_version = 1;
"""
SEEN = """
CREATE TABLE seen (
    key TEXT NOT NULL, uid TEXT NOT NULL,
    added REAL NOT NULL DEFAULT (julianday('now')),
    PRIMARY KEY (key, uid)
) WITHOUT ROWID;
"""


def make(path: Path, schema: str, rows: str = "") -> None:
    db = sqlite3.connect(path)
    db.executescript(schema + rows)
    db.commit()
    db.close()


async def test_a_fetch_state_of_version_1_is_migrated_keeping_every_row(tmp_path: Path) -> None:
    path = tmp_path / "s"
    make(
        path,
        VERSION_1,
        "INSERT INTO messages VALUES ('alice@pop.example', 'u1', 'n1', 10, 1, 1000.0);"
        "INSERT INTO messages VALUES ('alice@pop.example', 'u2', 'n2', 20, 0, 1001.0);"
        "INSERT INTO messages VALUES ('bob@test.local', 'u3', 'n3', 30, 1, 1002.0);",
    )
    async with await DeliveryState.open(path) as state:
        records = await state.records("alice@pop.example")
        assert await state.pending("alice@pop.example") == ["n2"]
        # A mailbox on a non-standard port takes the rows kept without the port, once.
        assert await state.adopt("bob@test.local:1100") == 1
        assert await state.adopt("bob@test.local:1100") == 0
        assert await state.known("bob@test.local:1100") == {"u3": 30}
        assert await state.known("bob@test.local") == {}
    assert records["u1"] == Record("u1", 10, "n1", True, 1000.0)
    assert records["u2"] == Record("u2", 20, "n2", False, 1001.0)
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    db.close()


async def test_a_new_file_adopts_nothing(tmp_path: Path) -> None:
    async with await DeliveryState.open(tmp_path / "s") as state:
        await state.commit("bob@x", handed=[("u", 1)])
        assert await state.adopt("bob@x:1100") == 0
        assert await state.known("bob@x:1100") == {}


async def test_a_watch_store_is_migrated_to_todays_keys(tmp_path: Path) -> None:
    path = tmp_path / "seen.db"
    make(
        path,
        SEEN,
        "INSERT INTO seen VALUES ('alice@pop.example:995', 'u1', 2461000.5);"
        "INSERT INTO seen VALUES ('alice@pop.example:110', 'u2', 2461000.5);"
        "INSERT INTO seen VALUES ('bob@[::1]:1100', 'u3', 2461000.5);"
        "INSERT INTO seen VALUES ('my own key', 'u4', 2461000.5);",
    )
    async with await DeliveryState.open(path) as state:
        assert await state.known("alice@pop.example") == {"u1": None, "u2": None}
        assert await state.known("bob@[::1]:1100") == {"u3": None}
        assert await state.known("my own key") == {"u4": None}
        record = (await state.records("my own key"))["u4"]
    assert (record.name, record.delivered) == (None, True)
    assert record.first_delivered == (2461000.5 - 2440587.5) * 86400


async def test_a_file_that_is_no_state_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "s"
    path.write_bytes(b"not a database at all" * 100)
    with pytest.raises(StateError, match="not an aiopop state file"):
        await DeliveryState.open(path)
    assert path.read_bytes() == b"not a database at all" * 100


# -- the lock ---------------------------------------------------------------------------------


async def test_a_lock_excludes_a_second_holder_until_released(tmp_path: Path) -> None:
    first = StateLock(tmp_path / "s", "alice@x", wait=0.1)
    second = StateLock(tmp_path / "s", "alice@x", wait=0.1)
    other = StateLock(tmp_path / "s", "bob@x", wait=0.1)
    async with first:
        with pytest.raises(StateLockedError, match=r"another aiopop process is working on alice@x"):
            await second.acquire()
        async with other:  # another mailbox: another lock
            assert "held" in repr(other)
    async with second:
        assert stat.S_IMODE(second.path.stat().st_mode) == 0o600
    assert "free" in repr(second)


async def test_a_lock_held_by_another_process_is_waited_for(tmp_path: Path) -> None:
    """The second waits while the holder works, and gets the lock when it lets go."""
    lock = StateLock(tmp_path / "s", "alice@x")
    holder = textwrap.dedent(f"""
        import fcntl, os, time
        fd = os.open({str(lock.path)!r}, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        print("held", flush=True)
        time.sleep(0.3)
        print("letting go", flush=True)
        fcntl.flock(fd, fcntl.LOCK_UN)
        time.sleep(5)
    """)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", holder, stdout=asyncio.subprocess.PIPE
    )
    assert process.stdout is not None
    try:
        assert await process.stdout.readline() == b"held\n"
        async with lock:
            # Written before the holder let go: there already when the lock is ours.
            said = await asyncio.wait_for(process.stdout.readline(), 1)
            assert said == b"letting go\n"
    finally:
        process.kill()
        await process.wait()


@pytest.mark.parametrize(
    ("message", "number"),
    [
        ("database or disk is full", errno.ENOSPC),
        ("disk I/O error", errno.EIO),
        ("attempt to write a readonly database", errno.EROFS),
    ],
)
async def test_a_failing_disk_under_the_state_is_an_oserror_naming_the_file(
    tmp_path: Path, message: str, number: int
) -> None:
    state = await DeliveryState.open(tmp_path / "s")

    def raising(error: Exception) -> Callable[[sqlite3.Connection], None]:
        def run(db: sqlite3.Connection) -> None:
            raise error

        return run

    try:
        with pytest.raises(OSError, match=message) as caught:
            await state._run(raising(sqlite3.OperationalError(message)))
        with pytest.raises(StateError, match="no such table"):
            await state._run(raising(sqlite3.OperationalError("no such table: x")))
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            await state._run(raising(sqlite3.OperationalError("database is locked")))
    finally:
        await state.close()
    assert caught.value.errno == number
    assert caught.value.filename == str(tmp_path / "s")
    assert message in str(caught.value)


# -- pinned by mutation testing ---------------------------------------------------------------


async def test_remembering_the_same_login_method_again_writes_nothing(tmp_path: Path) -> None:
    """No transaction (and no fsync) at each poll when the method did not change."""
    path = tmp_path / "s"

    def updated() -> list[tuple[str, str, float]]:
        with sqlite3.connect(path) as db:
            rows = db.execute("SELECT mailbox, login_method, updated FROM mailboxes").fetchall()
        db.close()
        return rows

    async with await DeliveryState.open(path) as state:
        await state.remember_login("a", "APOP")
        before = updated()
        await asyncio.sleep(0.01)
        await state.remember_login("a", "APOP")
        assert updated() == before
        await state.remember_login("a", "USER")
    [(mailbox, method, when)] = updated()
    assert (mailbox, method) == ("a", "USER")
    assert when > before[0][2]


async def test_a_busy_file_is_reported_as_sqlites_own_error(tmp_path: Path) -> None:
    """ "busy", like "locked", is another process's write outlasting the wait: not a
    broken state file, so it stays an OperationalError that the caller may retry."""
    state = await DeliveryState.open(tmp_path / "s")

    def busy(db: sqlite3.Connection) -> None:
        raise sqlite3.OperationalError("database is busy")

    try:
        with pytest.raises(sqlite3.OperationalError, match="busy") as caught:
            await state._run(busy)
    finally:
        await state.close()
    assert not isinstance(caught.value, StateError)


async def test_a_locks_repr_names_its_mailbox_its_file_and_whether_it_is_held(
    tmp_path: Path,
) -> None:
    lock = StateLock(tmp_path / "s", "alice@x", wait=0.1)
    free = f"<StateLock 'alice@x' {str(lock.path)!r} free>"
    assert repr(lock) == free
    async with lock:
        assert repr(lock) == f"<StateLock 'alice@x' {str(lock.path)!r} held>"
    assert repr(lock) == free


def test_a_record_matches_a_size_unless_both_are_known_and_differ() -> None:
    def record(size: int | None) -> Record:
        return Record("u", size, "n", True, 0.0)

    assert record(10).matches(10)
    assert not record(10).matches(11)
    assert not record(11).matches(10)
    assert record(None).matches(5)  # unknown sizes (an older file) match anything
    assert record(10).matches(None)
    assert record(None).matches(None)


async def test_a_commit_without_a_mailbox_records_under_the_empty_name(tmp_path: Path) -> None:
    async with await DeliveryState.open(tmp_path / "s") as state:
        await state.commit(handed=[("u", 1)])
        assert await state.known("") == {"u": 1}


async def test_the_error_of_a_call_cancelled_midway_is_retrieved_not_reported_lost(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The caller gave up, the thread's work failed after that: the failure is read, so
    asyncio never logs "exception was never retrieved" about it."""
    import gc
    import threading

    state = await DeliveryState.open(tmp_path / "s")
    release = threading.Event()

    def failing(db: sqlite3.Connection) -> None:
        release.wait(5)
        raise sqlite3.OperationalError("disk I/O error")

    try:
        task = asyncio.ensure_future(state._run(failing))
        await asyncio.sleep(0.05)
        task.cancel()
        await asyncio.sleep(0.01)
        release.set()
        with pytest.raises(asyncio.CancelledError):
            await task
    finally:
        await state.close()
    del task
    gc.collect()
    await asyncio.sleep(0)
    assert "never retrieved" not in caplog.text


async def test_a_newer_format_says_to_upgrade_aiopop(tmp_path: Path) -> None:
    path = tmp_path / "s"
    make(path, "PRAGMA user_version = 3;")
    with pytest.raises(StateError) as caught:
        await DeliveryState.open(path)
    assert str(caught.value) == (
        f"{path}: state format 3 is newer than this aiopop's ({SCHEMA_VERSION}); upgrade aiopop"
    )


@pytest.mark.parametrize("version", [1, -1])
async def test_an_unknown_older_format_is_refused_naming_it(tmp_path: Path, version: int) -> None:
    """Version 1 without its messages table, or a version no aiopop wrote."""
    path = tmp_path / "s"
    make(path, f"CREATE TABLE other (x); PRAGMA user_version = {version};")
    with pytest.raises(StateError) as caught:
        await DeliveryState.open(path)
    assert str(caught.value) == f"{path}: unknown state format {version}"


async def test_a_lock_held_elsewhere_names_the_mailbox_the_state_and_the_lock_file(
    tmp_path: Path,
) -> None:
    state = tmp_path / "s"
    async with StateLock(state, "alice@x", wait=0.05) as held:
        with pytest.raises(StateLockedError) as caught:
            await StateLock(state, "alice@x", wait=0.05).acquire()
    assert str(caught.value) == (
        f"another aiopop process is working on alice@x with the state {state} (it holds"
        f" {held.path}); nothing was done: try again when it is finished"
    )
