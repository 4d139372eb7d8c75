"""Writing a stream of chunks to a file so that it appears whole or not at all."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
from collections.abc import AsyncIterable, Callable, Iterator, Sequence
from pathlib import Path

import aiofiles
import aiofiles.os

__all__ = [
    "remove_if_present",
    "rename_all",
    "sync_directory",
    "sync_files",
    "write_atomically",
    "write_new",
    "write_new_files",
]

WRITEBACK_EVERY = 8 * 1024 * 1024
"""With fsync, ask the kernel to start writing back every this many octets,
so that the final fsync has little left to wait for."""

_fsync = aiofiles.os.wrap(os.fsync)
_advise = aiofiles.os.wrap(getattr(os, "posix_fadvise", lambda *_: None))
_DONTNEED: int = getattr(os, "POSIX_FADV_DONTNEED", 0)
_CLOEXEC: int = getattr(os, "O_CLOEXEC", 0)


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
    try:
        size = await write_new(temporary, batches, fsync=fsync)
        await aiofiles.os.replace(temporary, target)
    except BaseException:
        remove_if_present(temporary)
        raise
    if fsync:
        await sync_directory(target.parent)
    return size


async def write_new(
    path: str | os.PathLike[str],
    batches: AsyncIterable[list[bytes]],
    *,
    fsync: bool,
    mode: int = 0o666,
    write_back: bool | None = None,
) -> int:
    """Create ``path`` (which must not exist), write the chunks and return the octets.

    The file is created with ``mode`` (less the umask), flushed and, with
    ``fsync``, synced before it is closed. With ``write_back`` (by default
    ``fsync``) the kernel is asked to start writing the data back every
    :data:`WRITEBACK_EVERY` octets as it arrives, so that an fsync, now or
    later through :func:`sync_files`, has little left to wait for. On any
    error or cancellation the file is removed and the error propagates.
    """
    if write_back is None:
        write_back = fsync
    size = 0
    try:
        with _naming(path):
            size = await _write_chunks(path, batches, fsync, mode, write_back)
    except BaseException:
        remove_if_present(path)
        raise
    return size


async def _write_chunks(
    path: str | os.PathLike[str],
    batches: AsyncIterable[list[bytes]],
    fsync: bool,
    mode: int,
    write_back: bool,
) -> int:
    size = 0
    async with aiofiles.open(path, "xb", opener=_opener(mode)) as file:
        written_back = 0
        async for chunks in batches:
            await file.writelines(chunks)  # one thread hop for the whole batch
            size += sum(map(len, chunks))
            if write_back and size - written_back >= WRITEBACK_EVERY:
                # POSIX_FADV_DONTNEED makes Linux start writing the range back
                # without waiting, and drop it from the page cache once clean:
                # the disk works while the rest arrives.
                await file.flush()
                await _advise(file.fileno(), written_back, size - written_back, _DONTNEED)
                written_back = size
        await file.flush()
        if fsync:
            await _fsync(file.fileno())
    return size


@contextlib.contextmanager
def _naming(path: str | os.PathLike[str]) -> Iterator[None]:
    """Give an OSError raised for ``path`` its name (``write`` and ``fsync`` give none),
    so that it reads as the local failure it is."""
    try:
        yield
    except OSError as exc:
        # A connection lost or timed out while the chunks arrive is the network's.
        if exc.filename is None and not isinstance(exc, ConnectionError | TimeoutError):
            exc.filename = os.fspath(path)
        raise


def _opener(mode: int) -> Callable[[str, int], int]:
    def opener(path: str, flags: int) -> int:
        return os.open(path, flags, mode)

    return opener


async def write_new_files(
    files: Sequence[tuple[str | os.PathLike[str], bytes]], *, fsync: bool, mode: int
) -> None:
    """Create each path of ``files`` (none may exist) holding its data, in one worker thread.

    One trip to the thread for all of them, where each step of
    :func:`write_new` (open, write, flush, sync, close) would cost a hop of
    its own; with ``fsync`` each file is synced before it is closed.

    All or none: on an error or a cancellation every file of ``files`` that
    was created is removed (after a cancellation, once the thread is done,
    as a thread cannot be stopped) and the error propagates.
    """
    job = asyncio.ensure_future(_write_all(files, fsync, mode))
    try:
        await asyncio.shield(job)
    except asyncio.CancelledError:
        job.add_done_callback(lambda _: _forget(job, [path for path, _ in files]))
        raise


def _forget(job: asyncio.Future[None], paths: Sequence[str | os.PathLike[str]]) -> None:
    if not job.cancelled():
        job.exception()  # read, so that it is not reported as never retrieved
    for path in paths:
        remove_if_present(path)


@aiofiles.os.wrap
def _write_all(
    files: Sequence[tuple[str | os.PathLike[str], bytes]], fsync: bool, mode: int
) -> None:
    created: list[str | os.PathLike[str]] = []
    try:
        for path, data in files:
            with _naming(path):
                descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _CLOEXEC, mode)
                created.append(path)
                try:
                    view = memoryview(data)
                    while view:
                        view = view[os.write(descriptor, view) :]
                    if fsync:
                        os.fsync(descriptor)
                finally:
                    os.close(descriptor)
    except BaseException:
        for path in created:
            remove_if_present(path)
        raise


async def sync_files(paths: Sequence[str | os.PathLike[str]]) -> None:
    """fsync files written and closed earlier, one after the other in one worker thread.

    An fsync through any descriptor of a file makes all of its data durable,
    so a file may be written, closed and synced later, when waiting for
    the disk costs nothing. All or none: on an error or a cancellation
    every file of ``paths`` is removed (after a cancellation, once the
    thread is done) and the error propagates.
    """
    job = asyncio.ensure_future(_sync_all(paths))
    try:
        await asyncio.shield(job)
    except asyncio.CancelledError:
        job.add_done_callback(lambda _: _forget(job, paths))
        raise
    except BaseException:
        for path in paths:
            remove_if_present(path)
        raise


@aiofiles.os.wrap
def _sync_all(paths: Sequence[str | os.PathLike[str]]) -> None:
    for path in paths:
        with _naming(path):
            descriptor = os.open(path, os.O_RDONLY | _CLOEXEC)
            try:
                os.fsync(descriptor)
            finally:
                os.close(descriptor)


@aiofiles.os.wrap
def rename_all(pairs: Sequence[tuple[str, str]]) -> None:
    """Rename each ``(source, target)`` in turn, all in one trip to a worker thread.

    Stops at the first error, which propagates; the renames before it stay done.
    """
    for source, target in pairs:
        os.rename(source, target)  # its errors name both files


def remove_if_present(path: str | os.PathLike[str]) -> None:
    """Remove the file at ``path`` unless it is already gone."""
    # Synchronous on purpose: a second cancellation must not skip the clean-up.
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


async def sync_directory(directory: str | os.PathLike[str]) -> None:
    """Make a rename in ``directory`` durable (POSIX: fsync the directory itself)."""
    if os.name != "posix":
        return
    with _naming(directory):
        descriptor = os.open(directory, os.O_RDONLY)
        try:
            await _fsync(descriptor)
        finally:
            os.close(descriptor)
