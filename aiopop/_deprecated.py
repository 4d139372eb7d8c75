"""Old names kept for one minor version, each warning when used."""

from __future__ import annotations

import importlib
import warnings
from typing import Any

__all__ = ["moved"]

_RENAMED = {"TLSMode": "TLSPolicy"}
"""Names that changed as well as moved."""
_ADVICE = {"failure_reason": "use aiopop.diagnose(error).reason"}
"""What to use instead of a name that has no public successor of its own."""


def moved(old: str, new: str, name: str) -> Any:
    """Return ``name`` from module ``new`` for the deprecated module ``old``, warning.

    The module ``old`` was public before 0.2 and goes in 0.3: its public
    names are in :mod:`aiopop` now, its private ones in ``new``.
    """
    if name.startswith("__"):
        raise AttributeError(f"module {old!r} has no attribute {name!r}")
    root = importlib.import_module("aiopop")
    name = _RENAMED.get(name, name)
    public = name in root.__all__
    try:
        value = getattr(root if public else importlib.import_module(new), name)
    except AttributeError:
        raise AttributeError(f"module {old!r} has no attribute {name!r}") from None
    if public:
        advice = f"import {name} from aiopop"
    else:
        advice = _ADVICE.get(name, f"{name} is private ({new}) and may change without notice")
    warnings.warn(
        f"{old} is deprecated and goes in aiopop 0.3: {advice}",
        DeprecationWarning,
        stacklevel=3,
    )
    return value
