"""Writing a stream of chunks to a file so that it appears whole or not at all."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import AsyncIterable
from pathlib import Path

import aiofiles
import aiofiles.os

__all__ = ["write_atomically"]

WRITEBACK_EVERY = 8 * 1024 * 1024
"""With fsync, ask the kernel to start writing back every this many octets,
so that the final fsync has little left to wait for."""

_fsync = aiofiles.os.wrap(os.fsync)
_advise = aiofiles.os.wrap(getattr(os, "posix_fadvise", lambda *_: None))
_DONTNEED: int = getattr(os, "POSIX_FADV_DONTNEED", 0)


async def write_atomically(
    path: str | os.PathLike[str], batches: AsyncIterable[list[bytes]], *, fsync: bool
) -> int:
    """Write the chunks of ``batches`` to ``path`` through a temporary file; return the octets.

    The data goes to ``.<name>.<random>.part`` in the same directory (same
    file system, so the rename is atomic), is flushed and optionally synced,
    then renamed over ``path``; with ``fsync`` the directory is synced too,
    so the new name survives a crash. On any error or cancellation the
    temporary file is removed and the error propagates.
    """
    target = Path(path)
    temporary = target.with_name(f".{target.name}.{secrets.token_hex(6)}.part")
    size = 0
    try:
        async with aiofiles.open(temporary, "xb") as file:
            written_back = 0
            async for chunks in batches:
                await file.writelines(chunks)  # one thread hop for the whole batch
                size += sum(map(len, chunks))
                if fsync and size - written_back >= WRITEBACK_EVERY:
                    # POSIX_FADV_DONTNEED makes Linux start writing the range back
                    # without waiting, and drop it from the page cache once clean:
                    # the disk works while the rest arrives.
                    await file.flush()
                    await _advise(file.fileno(), written_back, size - written_back, _DONTNEED)
                    written_back = size
            await file.flush()
            if fsync:
                await _fsync(file.fileno())
        await aiofiles.os.replace(temporary, target)
    except BaseException:
        # Synchronous on purpose: a second cancellation must not skip the clean-up.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    if fsync:
        await _sync_directory(target.parent)
    return size


async def _sync_directory(directory: Path) -> None:
    """Make a rename in ``directory`` durable (POSIX: fsync the directory itself)."""
    if os.name != "posix":
        return
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        await _fsync(descriptor)
    finally:
        os.close(descriptor)
