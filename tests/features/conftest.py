"""Fixtures shared by the tests of the features."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from aiopop._delivery_state import DeliveryState
from aiopop._stores import MemoryStore, SeenStore, SQLiteStore


@pytest.fixture
def batch_sizes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many messages each state transaction recorded, in order."""
    sizes: list[int] = []
    real = DeliveryState.commit

    async def counting(self: DeliveryState, *args: Any, **kwargs: Any) -> None:
        if len(args) > 1:
            sizes.append(len(args[1]))
        await real(self, *args, **kwargs)

    monkeypatch.setattr(DeliveryState, "commit", counting)
    return sizes


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> SeenStore:
    """Each SeenStore of aiopop._stores in turn: MemoryStore, then SQLiteStore in a fresh file."""
    if request.param == "memory":
        return MemoryStore()
    return SQLiteStore(tmp_path / "seen.db")
