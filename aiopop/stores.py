"""Deprecated: import from :mod:`aiopop` instead; this module goes in aiopop 0.3."""

from __future__ import annotations

from typing import Any

from ._deprecated import moved


def __getattr__(name: str) -> Any:
    return moved(__name__, "aiopop._stores", name)
