"""The Maildir writer: names, directories, line ends, durability steps, and finding files."""

from __future__ import annotations

import asyncio
import os
import re
import socket
import stat
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from aiopop import _files
from aiopop import _maildir as maildir
from aiopop._maildir import Maildir, to_unix_line_ends, unique_name


async def batches(*items: list[bytes]) -> AsyncIterator[list[bytes]]:
    for item in items:
        yield item


async def collect(source: AsyncIterator[list[bytes]]) -> list[bytes]:
    return [b"".join(chunks) async for chunks in source]


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(autouse=True)
def fresh_host_name() -> Iterator[None]:
    """The host name is read once per process; each test here may pretend another."""
    maildir._host.cache_clear()
    yield
    maildir._host.cache_clear()


# -- names -----------------------------------------------------------------------------


def test_a_unique_name_follows_the_modern_convention(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(time, "time_ns", lambda: 1_700_000_000_123_456_789)
    monkeypatch.setattr(socket, "gethostname", lambda: "mail.example")
    name = unique_name()
    match = re.fullmatch(r"1700000000\.M123456P(\d+)Q(\d+)R([0-9a-f]{16})\.mail\.example", name)
    assert match is not None
    assert int(match[1]) == os.getpid()


def test_unique_names_differ_within_one_microsecond(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(time, "time_ns", lambda: 1_000_000_000)
    names = {unique_name() for _ in range(1000)}
    assert len(names) == 1000


def test_the_host_name_is_asked_once_per_process(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[str] = []

    def gethostname() -> str:
        asked.append("mail.example")
        return "mail.example"

    monkeypatch.setattr(socket, "gethostname", gethostname)
    names = [unique_name() for _ in range(100)]
    assert all(name.endswith(".mail.example") for name in names)
    assert asked == ["mail.example"]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="POSIX fork")
def test_a_forked_child_draws_other_random_parts() -> None:
    """Without re-seeding, parent and child would draw the same R part next."""
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its next name, and leave at once
        try:
            os.write(writer, unique_name().encode())
        finally:
            os._exit(0)
    os.close(writer)
    child = b""
    while chunk := os.read(reader, 1024):
        child += chunk
    os.close(reader)
    os.waitpid(pid, 0)
    ours = unique_name()

    def random_part(name: str) -> str:
        match = re.search(r"R([0-9a-f]{16})\.", name)
        assert match is not None
        return match[1]

    assert random_part(child.decode()) != random_part(ours)


@pytest.mark.parametrize(
    ("host", "written"),
    [("a/b", "a\\057b"), ("a:b", "a\\072b"), ("x/:y", "x\\057\\072y"), ("", "localhost")],
)
def test_the_host_name_has_slash_and_colon_escaped(
    monkeypatch: pytest.MonkeyPatch, host: str, written: str
) -> None:
    monkeypatch.setattr(socket, "gethostname", lambda: host)
    name = unique_name()
    assert name.endswith("." + written)
    assert "/" not in name
    assert ":" not in name


# -- line ends -------------------------------------------------------------------------


async def test_crlf_becomes_lf_even_split_between_batches() -> None:
    source = batches([b"a\r\nb\r"], [b"\nc\r", b"d\r"], [b"\r\n"], [b"end\r"])
    assert b"".join(await collect(to_unix_line_ends(source))) == b"a\nb\nc\rd\r\nend\r"


@pytest.mark.parametrize("split", range(0, 12))
async def test_line_ends_do_not_depend_on_where_the_batches_split(split: int) -> None:
    data = b"x\r\n\r\r\ny\r\n\r"
    pieces = [data[:split], data[split:]] if split else [data]
    got = b"".join(await collect(to_unix_line_ends(batches(*([p] for p in pieces)))))
    assert got == data.replace(b"\r\n", b"\n")


async def test_empty_batches_yield_nothing() -> None:
    assert await collect(to_unix_line_ends(batches([b""], []))) == []


# -- directories -----------------------------------------------------------------------


async def test_create_makes_the_three_directories_private(tmp_path: Path) -> None:
    box = Maildir(tmp_path / "deep" / "inbox")
    await box.create()
    for sub in ("tmp", "new", "cur"):
        assert mode_of(box.path / sub) == 0o700
    assert mode_of(box.path) == 0o700
    await box.create()  # again: nothing to do
    assert sorted(os.listdir(box.path)) == ["cur", "new", "tmp"]


async def test_create_syncs_the_directories_only_when_it_made_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[Path] = []

    async def record(directory: str | os.PathLike[str]) -> None:
        synced.append(Path(directory))

    monkeypatch.setattr(_files, "sync_directory", record)
    box = Maildir(tmp_path / "inbox")
    await box.create()
    assert synced == [box.path, tmp_path]  # the new entries in both are durable
    synced.clear()
    await box.create()
    assert synced == []


async def test_create_completes_a_partial_maildir_and_leaves_modes_alone(tmp_path: Path) -> None:
    (tmp_path / "new").mkdir(mode=0o755)
    await Maildir(tmp_path).create()
    assert sorted(os.listdir(tmp_path)) == ["cur", "new", "tmp"]
    assert mode_of(tmp_path / "new") == 0o755


async def test_create_refuses_a_file_in_the_way(tmp_path: Path) -> None:
    (tmp_path / "cur").write_text("not a directory")
    with pytest.raises(NotADirectoryError, match="cur"):
        await Maildir(tmp_path).create()


def test_the_path_expands_the_home_directory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", "/home/someone")
    box = Maildir("~/Mail")
    assert box.path == Path("/home/someone/Mail")
    assert box.new == Path("/home/someone/Mail/new")
    assert repr(box) == "<Maildir '/home/someone/Mail'>"


# -- writing and publishing ------------------------------------------------------------


async def test_a_message_is_durable_in_tmp_then_published_into_new(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[str] = []

    async def fsync(fd: int) -> None:
        synced.append("directory" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file")

    monkeypatch.setattr(_files, "_fsync", fsync)
    box = Maildir(tmp_path)
    await box.create()
    synced.clear()
    name, size = await box.write(batches([b"Subject: a\r\n", b"\r\n"], [b"body\r\n"]))
    assert size == 20  # as received, CRLF included
    assert synced == ["file"]
    assert os.listdir(box.tmp) == [name]
    assert os.listdir(box.new) == []
    assert mode_of(box.tmp / name) == 0o600
    await box.publish([name])
    assert synced == ["file", "directory"]
    assert os.listdir(box.tmp) == []
    assert (box.new / name).read_bytes() == b"Subject: a\n\nbody\n"


async def test_write_bytes_syncs_before_closing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[int] = []
    real = os.fsync

    def fsync(fd: int) -> None:
        synced.append(fd)
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    box = Maildir(tmp_path)
    await box.create()
    name = await box.write_bytes(b"a\r\nb\r\n")
    assert len(synced) == 1
    assert (box.tmp / name).read_bytes() == b"a\nb\n"
    assert mode_of(box.tmp / name) == 0o600


async def test_a_write_without_sync_is_synced_later_by_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[str] = []
    real = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    async def async_fsync(fd: int) -> None:
        fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)  # Maildir.sync's
    monkeypatch.setattr(_files, "_fsync", async_fsync)  # Maildir.write's
    box = Maildir(tmp_path)
    await box.create()
    synced.clear()  # create() syncs the new directories
    name, _ = await box.write(batches([b"c\r\n"]))  # sync=True: before it returns
    assert synced == [str(box.tmp / name)]
    name, size = await box.write(batches([b"a\r\n"], [b"b\r\n"]), sync=False)
    assert (size, len(synced)) == (6, 1)
    assert await box.sync([name]) == [name]
    assert synced[1:] == [str(box.tmp / name)]
    assert (box.tmp / name).read_bytes() == b"a\nb\n"


async def test_keep_crlf_stores_the_message_as_received(tmp_path: Path) -> None:
    box = Maildir(tmp_path, keep_crlf=True)
    await box.create()
    first = await box.write_bytes(b"a\r\n")
    second, _ = await box.write(batches([b"b\r"], [b"\n"]))
    await box.publish([first, second])
    assert (box.new / first).read_bytes() == b"a\r\n"
    assert (box.new / second).read_bytes() == b"b\r\n"


async def test_deliver_writes_and_publishes_one_message(tmp_path: Path) -> None:
    box = Maildir(tmp_path)
    await box.create()
    name = await box.deliver(batches([b"x\r\n"]))
    assert (box.new / name).read_bytes() == b"x\n"
    assert os.listdir(box.tmp) == []


async def test_publishing_nothing_syncs_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def fail(fd: int) -> None:
        raise AssertionError("no sync expected")

    box = Maildir(tmp_path)
    await box.create()
    monkeypatch.setattr(_files, "_fsync", fail)
    await box.publish([])


async def test_a_failed_stream_leaves_no_file(tmp_path: Path) -> None:
    async def broken() -> AsyncIterator[list[bytes]]:
        yield [b"partial"]
        raise ConnectionError("gone")

    box = Maildir(tmp_path)
    await box.create()
    with pytest.raises(ConnectionError):
        await box.write(broken())
    assert os.listdir(box.tmp) == []


async def test_a_failed_write_bytes_leaves_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    box = Maildir(tmp_path)
    await box.create()
    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError, match="No space"):
        await box.write_bytes(b"data")
    assert os.listdir(box.tmp) == []


async def test_a_cancelled_write_bytes_removes_its_file_once_the_thread_is_done(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    started = asyncio.Event()
    loop = asyncio.get_running_loop()
    release = asyncio.Event()
    real = os.fsync

    def slow_fsync(fd: int) -> None:
        loop.call_soon_threadsafe(started.set)
        asyncio.run_coroutine_threadsafe(release.wait(), loop).result()
        real(fd)

    box = Maildir(tmp_path)
    await box.create()
    monkeypatch.setattr(os, "fsync", slow_fsync)
    task = asyncio.ensure_future(box.write_bytes(b"data"))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(os.listdir(box.tmp)) == 1  # the thread is still writing
    release.set()
    for _ in range(100):
        if not os.listdir(box.tmp):
            break
        await asyncio.sleep(0.01)
    assert os.listdir(box.tmp) == []


async def test_discard_removes_what_is_there(tmp_path: Path) -> None:
    box = Maildir(tmp_path)
    await box.create()
    name = await box.write_bytes(b"x")
    box.discard([name, "never-written"])
    assert os.listdir(box.tmp) == []


async def test_find_looks_in_tmp_new_and_cur_with_flags(tmp_path: Path) -> None:
    box = Maildir(tmp_path)
    await box.create()
    (box.tmp / "a").write_bytes(b"")
    (box.new / "b").write_bytes(b"")
    (box.cur / "c:2,S").write_bytes(b"")
    (box.cur / "d!2,").write_bytes(b"")
    (box.cur / "e").write_bytes(b"")
    (box.cur / "ab:2,").write_bytes(b"")  # not "a"
    found = box.find(["a", "b", "c", "d", "e", "f"])
    assert found == {"a": "tmp", "b": "new", "c": "cur", "d": "cur", "e": "cur"}
    assert box.find([]) == {}


async def test_abandoned_finds_only_our_files_whose_writer_is_dead(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(socket, "gethostname", lambda: "here")
    child = await asyncio.create_subprocess_exec("true")
    await child.wait()
    dead = child.pid
    box = Maildir(tmp_path)
    await box.create()
    names = {
        "dead": f"1.M1P{dead}Q1R0123456789abcdef.here",
        "mine": f"1.M1P{os.getpid()}Q1R0123456789abcdef.here",
        "alive": "1.M1P1Q1R0123456789abcdef.here",  # init
        "elsewhere": f"1.M1P{dead}Q1R0123456789abcdef.there",
        "foreign": f"1.{dead}_1.here",
    }
    for name in names.values():
        (box.tmp / name).write_bytes(b"")
    assert box.abandoned() == [names["dead"]]


def test_a_live_process_is_alive_and_not_signalled() -> None:
    assert maildir._alive(os.getpid())  # signal 0: a check, nothing delivered


def test_a_process_of_another_user_counts_as_alive(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(pid: int, signal: int) -> None:
        raise PermissionError

    monkeypatch.setattr(os, "kill", refuse)
    assert maildir._alive(12345)
