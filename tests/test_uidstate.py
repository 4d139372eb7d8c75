"""The UIDL state: rows per account, pending until delivered, all-or-nothing commits."""

from __future__ import annotations

import asyncio
import sqlite3
import stat
from pathlib import Path

import pytest

from aiopop.uidstate import UIDState


async def test_a_new_database_is_private_and_empty(tmp_path: Path) -> None:
    state = await UIDState.open(tmp_path / "state.sqlite3")
    try:
        assert stat.S_IMODE((tmp_path / "state.sqlite3").stat().st_mode) == 0o600
        assert await state.known("a") == {}
        assert await state.pending("a") == []
    finally:
        await state.close()


async def test_rows_are_pending_until_delivered_and_kept_per_account(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"
    state = await UIDState.open(path)
    await state.commit("alice@x", [("u1", "n1", 10), ("u2", "n2", None)])
    await state.commit("bob@x", [("u1", "n3", 30)])
    assert await state.known("alice@x") == {"u1": 10, "u2": None}
    assert await state.known("bob@x") == {"u1": 30}
    assert await state.pending("alice@x") == ["n1", "n2"]
    assert await state.pending("bob@x") == ["n3"]
    await state.commit(delivered=["n1", "n3"], forgotten=["n2"])
    await state.close()

    again = await UIDState.open(path)  # what was committed is on disk
    try:
        assert await again.pending("alice@x") == []
        assert await again.pending("bob@x") == []
        assert await again.known("alice@x") == {"u1": 10}
        assert await again.known("bob@x") == {"u1": 30}
    finally:
        await again.close()


async def test_a_unique_id_recorded_again_replaces_its_row(tmp_path: Path) -> None:
    state = await UIDState.open(tmp_path / "s")
    try:
        await state.commit("a", [("u1", "old", 1)], delivered=[])
        await state.commit(delivered=["old"])
        await state.commit("a", [("u1", "new", 2)])
        assert await state.pending("a") == ["new"]
        assert await state.known("a") == {"u1": 2}
    finally:
        await state.close()


async def test_a_commit_is_all_or_nothing(tmp_path: Path) -> None:
    state = await UIDState.open(tmp_path / "s")
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
    with pytest.raises(sqlite3.DatabaseError, match="format 99"):
        await UIDState.open(path)


async def test_a_cancelled_call_lets_its_thread_finish_before_the_next(tmp_path: Path) -> None:
    state = await UIDState.open(tmp_path / "s")
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
    state = await UIDState.open(tmp_path / "s")
    try:
        await state.commit()
        assert await state.pending("a") == []
    finally:
        await state.close()
