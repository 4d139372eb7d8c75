"""The stores of aiopop._stores: the SeenStore protocol, MemoryStore and SQLiteStore.

Each behaviour of the protocol is checked on both stores (the ``store``
fixture of tests/features/conftest.py); then what only SQLiteStore does:
it persists across instances (a restart), and its state file is the one
:class:`~aiopop.DeliveryState` defines, shared with ``fetch``.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from aiopop._delivery_state import DeliveryState, StateLockedError
from aiopop._stores import MemoryStore, SeenStore, SQLiteStore

# -- the protocol, on both stores ----------------------------------------------------------


async def test_stores_keep_uids_and_sizes_per_key(store: SeenStore) -> None:
    assert isinstance(store, SeenStore)
    assert await store.known("a", ["1", "2"]) == {}
    await store.add("a", "1", 10)
    await store.add("a", "1", 10)  # twice is fine
    await store.add("b", "2")
    assert await store.known("a", ["1", "2", "3"]) == {"1": 10}
    assert await store.known("b", ["1", "2"]) == {"2": None}
    await store.add("a", "1", 11)  # the unique-id now names another message
    await store.add("a", "3", 30)
    assert await store.known("a", ["1"]) == {"1": 11}
    await store.forget_missing("a", ["3", "4"])
    assert await store.known("a", ["1", "2", "3"]) == {"3": 30}
    assert await store.known("b", ["2"]) == {"2": None}  # another key is untouched
    await store.forget_missing("c", [])


async def test_sqlite_store_commits_each_add_before_returning(tmp_path: Path) -> None:
    path = tmp_path / "seen.db"
    await SQLiteStore(path).add("k", "uid-1", 5)
    # Another connection (another process, after a crash) sees it at once.
    with sqlite3.connect(path) as connection:
        rows = connection.execute("SELECT mailbox, uid, size, delivered FROM messages")
        assert rows.fetchall() == [("k", "uid-1", 5, 1)]
        assert connection.execute("PRAGMA journal_mode").fetchone() == ("delete",)
    connection.close()
    assert await SQLiteStore(path).known("k", ["uid-1", "uid-2"]) == {"uid-1": 5}
    assert "seen.db" in repr(SQLiteStore(path))


async def test_known_answers_only_for_the_uids_asked(store: SeenStore) -> None:
    await store.add("k", "1", 1)
    await store.add("k", "2", 2)
    await store.add("k", "3")
    assert await store.known("k", ["2", "3", "unknown"]) == {"2": 2, "3": None}
    assert await store.known("k", []) == {}
    assert await store.known("other", ["1", "2", "3"]) == {}


async def test_adding_again_replaces_the_size(store: SeenStore) -> None:
    await store.add("k", "1", 10)
    await store.add("k", "1")
    assert await store.known("k", ["1"]) == {"1": None}
    await store.add("k", "1", 12)
    assert await store.known("k", ["1"]) == {"1": 12}


async def test_forget_missing_keeps_exactly_the_listed_uids(store: SeenStore) -> None:
    for uid in ("1", "2", "3"):
        await store.add("k", uid, 1)
    await store.forget_missing("k", ["2", "new"])  # "new": on the server, never added
    assert await store.known("k", ["1", "2", "3", "new"]) == {"2": 1}
    await store.forget_missing("k", [])  # an empty mailbox: everything goes
    assert await store.known("k", ["1", "2", "3"]) == {}


async def test_a_forgotten_uid_can_be_added_again(store: SeenStore) -> None:
    await store.add("k", "1", 5)
    await store.forget_missing("k", [])
    await store.add("k", "1", 6)
    assert await store.known("k", ["1"]) == {"1": 6}


def test_both_stores_are_seen_stores_and_other_objects_are_not(tmp_path: Path) -> None:
    assert isinstance(MemoryStore(), SeenStore)
    assert isinstance(SQLiteStore(tmp_path / "seen.db"), SeenStore)
    assert not isinstance(object(), SeenStore)
    assert not isinstance({}, SeenStore)


# -- MemoryStore -----------------------------------------------------------------------------


async def test_memory_store_uids_are_a_copy_and_its_repr_counts_them() -> None:
    store = MemoryStore()
    assert repr(store) == "MemoryStore(0 uids)"
    assert store.uids("k") == set()
    await store.add("k", "1")
    await store.add("k", "2", 2)
    await store.add("j", "1")
    assert repr(store) == "MemoryStore(3 uids)"
    uids = store.uids("k")
    assert uids == {"1", "2"}
    uids.add("3")
    assert store.uids("k") == {"1", "2"}
    await store.forget_missing("k", ["2"])
    assert store.uids("k") == {"2"}
    assert repr(store) == "MemoryStore(2 uids)"


async def test_memory_stores_share_nothing() -> None:
    first = MemoryStore()
    await first.add("k", "1", 1)
    assert await MemoryStore().known("k", ["1"]) == {}


# -- SQLiteStore: a state file ---------------------------------------------------------------


async def test_sqlite_store_makes_its_file_when_first_used(tmp_path: Path) -> None:
    path = tmp_path / "seen.db"
    store = SQLiteStore(path)
    assert store.path == path
    assert store.timeout == 30.0
    assert SQLiteStore(str(path), timeout=2).timeout == 2
    assert not path.exists()
    assert await store.known("k", ["1"]) == {}
    assert path.exists()
    assert repr(store) == f"SQLiteStore({str(path)!r})"


async def test_sqlite_store_persists_across_instances(tmp_path: Path) -> None:
    path = tmp_path / "seen.db"
    await SQLiteStore(path).add("k", "1", 10)
    await SQLiteStore(path).add("k", "2")
    assert await SQLiteStore(path).known("k", ["1", "2", "3"]) == {"1": 10, "2": None}
    await SQLiteStore(path).forget_missing("k", ["2"])
    assert await SQLiteStore(path).known("k", ["1", "2"]) == {"2": None}
    assert await SQLiteStore(tmp_path / "other.db").known("k", ["2"]) == {}


async def test_sqlite_store_remembers_the_login_method_per_key(tmp_path: Path) -> None:
    path = tmp_path / "seen.db"
    assert await SQLiteStore(path).login_method("k") is None
    await SQLiteStore(path).remember_login("k", "scram-sha-256")
    assert await SQLiteStore(path).login_method("k") == "scram-sha-256"
    await SQLiteStore(path).remember_login("k", "apop")
    assert await SQLiteStore(path).login_method("k") == "apop"
    assert await SQLiteStore(path).login_method("other") is None


async def test_an_add_is_a_delivered_row_of_the_delivery_state(tmp_path: Path) -> None:
    path = tmp_path / "seen.db"
    await SQLiteStore(path).add("k", "1", 10)
    async with await DeliveryState.open(path) as state:
        records = await state.records("k")
        assert await state.known("k") == {"1": 10}
        assert await state.pending("k") == []
    assert list(records) == ["1"]
    assert records["1"].delivered
    assert records["1"].name is None  # handed to a consumer: no file


async def test_sqlite_store_knows_what_fetch_recorded_in_the_same_file(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    async with await DeliveryState.open(path) as state:
        await state.commit("k", [("done", "1.name", 3), ("pending", "2.name", 4)])
        await state.commit(delivered=["1.name"])
    store = SQLiteStore(path)
    assert await store.known("k", ["done", "pending", "other"]) == {"done": 3, "pending": 4}
    await store.forget_missing("k", [])
    # A pending row is an interrupted delivery that recover() still has to finish: kept.
    assert await store.known("k", ["done", "pending"]) == {"pending": 4}
    async with await DeliveryState.open(path) as state:
        assert await state.pending("k") == ["2.name"]


async def test_sqlite_store_writes_one_row_per_uid(tmp_path: Path) -> None:
    path = tmp_path / "seen.db"
    store = SQLiteStore(path)
    await store.add("k", "1", 1)
    await store.add("k", "1", 2)
    await store.add("j", "1", 3)
    with sqlite3.connect(path) as connection:
        rows = connection.execute("SELECT mailbox, uid, size FROM messages ORDER BY mailbox")
        assert rows.fetchall() == [("j", "1", 3), ("k", "1", 2)]
    connection.close()


async def test_sqlite_store_lock_excludes_another_on_the_same_key(tmp_path: Path) -> None:
    path = tmp_path / "seen.db"
    async with SQLiteStore(path).lock("k") as held:
        assert "held" in repr(held)
        with pytest.raises(StateLockedError, match="another aiopop process"):
            async with SQLiteStore(path).lock("k", wait=0.1):
                pass
        async with SQLiteStore(path).lock("other", wait=0.1):
            pass  # another key: another lock
    assert "free" in repr(held)
    async with SQLiteStore(path).lock("k", wait=0.1):
        pass  # released
