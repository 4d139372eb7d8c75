"""Fixtures shared by the tests of the features."""

from __future__ import annotations

from typing import Any

import pytest

from aiopop._delivery_state import DeliveryState


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
