"""write_atomically: the temporary file, the syncs, and the writeback as the data arrives."""

from __future__ import annotations

import asyncio
import errno
import os
import re
import stat
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from aiopop import _files
from aiopop._errors import ConnectionLostError


def names(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.iterdir())


async def batches(
    path: Path, *items: list[bytes], seen: list[list[str]]
) -> AsyncIterator[list[bytes]]:
    """Yield ``items``, noting the directory's contents before each."""
    for item in items:
        seen.append(names(path.parent))
        yield item


async def test_the_data_goes_through_a_hidden_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "a.eml"
    seen: list[list[str]] = []
    size = await _files.write_atomically(
        target, batches(target, [b"one\r\n", b"two\r\n"], [b"three\r\n"], seen=seen), fsync=False
    )
    assert size == 17
    assert target.read_bytes() == b"one\r\ntwo\r\nthree\r\n"
    assert names(tmp_path) == ["a.eml"]
    # While the data arrives only ".<name>.<12 hex digits>.part" exists, the same one throughout.
    [temporary] = seen[0]
    assert re.fullmatch(r"\.a\.eml\.[0-9a-f]{12}\.part", temporary)
    assert seen == [[temporary], [temporary]]


async def test_the_longest_name_the_file_system_allows_still_works(tmp_path: Path) -> None:
    # NAME_MAX is 255 on Linux file systems; the temporary name adds 19 characters.
    name = "m" * (255 - 19)
    assert await _files.write_atomically(tmp_path / name, _single(b"x"), fsync=False) == 1
    assert (tmp_path / name).read_bytes() == b"x"


async def _single(data: bytes) -> AsyncIterator[list[bytes]]:
    yield [data]


@pytest.mark.parametrize("fsync", [True, False])
async def test_fsync_syncs_the_file_then_the_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fsync: bool
) -> None:
    synced: list[str] = []

    async def record(fd: int) -> None:
        mode = os.fstat(fd).st_mode
        synced.append("directory" if stat.S_ISDIR(mode) else "file")
        os.fsync(fd)

    monkeypatch.setattr(_files, "_fsync", record)
    await _files.write_atomically(tmp_path / "b.eml", _single(b"data\r\n"), fsync=fsync)
    assert synced == (["file", "directory"] if fsync else [])
    assert (tmp_path / "b.eml").read_bytes() == b"data\r\n"


async def test_writeback_is_asked_for_every_step_exactly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    advised: list[tuple[int, int, int]] = []
    descriptors: list[int] = []

    async def advise(fd: int, offset: int, length: int, advice: int) -> None:
        descriptors.append(fd)
        advised.append((offset, length, advice))

    monkeypatch.setattr(_files, "WRITEBACK_EVERY", 4)
    monkeypatch.setattr(_files, "_advise", advise)

    async def chunks() -> AsyncIterator[list[bytes]]:
        yield [b"ab", b"cd"]  # 4: exactly a step
        yield [b"e"]  # 5
        yield [b"fgh"]  # 8: a step since the last
        yield [b"ijklmn"]  # 14: more than a step
        yield [b"o"]  # 15: left to the final fsync

    target = tmp_path / "c.eml"
    assert await _files.write_atomically(target, chunks(), fsync=True) == 15
    dontneed = _files._DONTNEED
    assert advised == [(0, 4, dontneed), (4, 4, dontneed), (8, 6, dontneed)]
    assert all(isinstance(fd, int) and fd >= 0 for fd in descriptors)
    assert target.read_bytes() == b"abcdefghijklmno"


async def test_writeback_with_the_real_system_call(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_files, "WRITEBACK_EVERY", 4096)
    data = [b"z" * 1000] * 20
    target = tmp_path / "d.eml"

    async def chunks() -> AsyncIterator[list[bytes]]:
        for piece in data:
            yield [piece]

    assert await _files.write_atomically(target, chunks(), fsync=True) == 20_000
    assert target.read_bytes() == b"".join(data)


async def test_rename_all_renames_in_order_and_stops_at_the_first_error(tmp_path: Path) -> None:
    for name in ("a", "b", "d"):
        (tmp_path / name).write_bytes(name.encode())
    target = tmp_path / "new"
    target.mkdir()
    pairs = [(str(tmp_path / n), str(target / n)) for n in ("a", "b", "c", "d")]
    with pytest.raises(FileNotFoundError):
        await _files.rename_all(pairs)  # "c" does not exist
    assert sorted(p.name for p in target.iterdir()) == ["a", "b"]
    assert (target / "b").read_bytes() == b"b"
    assert (tmp_path / "d").exists()  # after the error: left where it was


async def test_sync_files_syncs_each_file_through_a_descriptor_of_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = [tmp_path / name for name in ("a", "b")]
    for path in paths:
        path.write_bytes(b"data")
    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(descriptor: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{descriptor}"))
        real_fsync(descriptor)

    monkeypatch.setattr(os, "fsync", fsync)
    await _files.sync_files(paths)
    assert synced == [str(path) for path in paths]
    assert all(path.read_bytes() == b"data" for path in paths)


async def test_sync_files_removes_every_file_when_one_fails(tmp_path: Path) -> None:
    present = tmp_path / "present"
    present.write_bytes(b"data")
    with pytest.raises(FileNotFoundError):
        await _files.sync_files([present, tmp_path / "missing"])
    assert not present.exists()  # not known to be durable: gone, to be fetched again


async def test_a_cancelled_sync_removes_the_files_once_its_thread_is_done(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = [tmp_path / name for name in ("a", "b")]
    for path in paths:
        path.write_bytes(b"data")
    entered = threading.Event()
    release = threading.Event()
    real_fsync = os.fsync

    def slow_fsync(descriptor: int) -> None:
        entered.set()
        release.wait(5)
        real_fsync(descriptor)

    monkeypatch.setattr(os, "fsync", slow_fsync)
    task = asyncio.ensure_future(_files.sync_files(paths))
    await asyncio.to_thread(entered.wait, 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert all(path.exists() for path in paths)  # the thread still runs
    release.set()
    async with asyncio.timeout(5):
        while any(path.exists() for path in paths):  # noqa: ASYNC110 (polling the file system)
            await asyncio.sleep(0.01)


async def test_write_atomically_creates_files_as_open_would(tmp_path: Path) -> None:
    umask = os.umask(0o022)
    try:
        await _files.write_atomically(tmp_path / "a.eml", _single(b"data"), fsync=False)
    finally:
        os.umask(umask)
    assert stat.S_IMODE((tmp_path / "a.eml").stat().st_mode) == 0o644  # 0o666 less the umask


async def test_a_disk_error_names_its_file_a_lost_connection_does_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """write(2) and fsync(2) errors carry no file name: the writers add it."""

    def full(descriptor: int, data: object) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(os, "write", full)
        with pytest.raises(OSError, match="No space") as caught:
            await _files.write_new_files([(tmp_path / "a", b"data")], fsync=True, mode=0o666)
    assert caught.value.filename == str(tmp_path / "a")

    async def cut() -> AsyncIterator[list[bytes]]:
        yield [b"part"]
        raise ConnectionLostError("the server closed the connection")

    with pytest.raises(ConnectionLostError) as lost:
        await _files.write_new(tmp_path / "b", cut(), fsync=True)
    assert lost.value.filename is None
    assert not (tmp_path / "b").exists()
