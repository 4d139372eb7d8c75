"""Finding the servers' programs, on PATH or where Debian puts them."""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence

__all__ = ["find_program"]


def find_program(name: str, directories: Sequence[str]) -> str | None:
    """The path of ``name`` on PATH, else in the first of ``directories`` that has it.

    The directories matter for ``sbin`` programs, which a non-root PATH often
    lacks. None when the program is nowhere.
    """
    found = shutil.which(name)
    if found:
        return found
    for directory in directories:
        candidate = os.path.join(directory, name)
        if os.access(candidate, os.X_OK):
            return candidate
    return None
