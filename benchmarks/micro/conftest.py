"""The ``benchmark`` fixture's type, and a skip when pytest-benchmark is not installed."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, TypeVar

import pytest

pytest.importorskip("pytest_benchmark", reason="the micro-benchmarks need pytest-benchmark")

T = TypeVar("T")


class Benchmark(Protocol):
    """What the tests use of pytest-benchmark's fixture: call a function, many times, timed."""

    def __call__(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T: ...
