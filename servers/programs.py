"""Finding the servers' programs, on PATH or where Debian puts them."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Sequence

__all__ = ["find_program", "stop_child"]


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


def stop_child(process: subprocess.Popen[str], *, wait: float = 10) -> None:
    """End a helper child that stops when its standard input closes: close it, wait up to
    ``wait`` seconds, then kill; close its standard output."""
    if process.stdin is not None:
        with contextlib.suppress(OSError):
            process.stdin.close()
    try:
        process.wait(timeout=wait)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    if process.stdout is not None:
        process.stdout.close()
