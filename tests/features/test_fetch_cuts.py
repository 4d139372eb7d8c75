"""fetch_to_maildir: an interrupted run finished by the next, the connection cut at every
step, and the order of operations; no cut loses a message.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

import aiopop
from aiopop import _fetch as fetch_module
from aiopop import _fetch_run as fetch_run
from aiopop._delivery_state import STATE_FILE, DeliveryState
from aiopop._fetch import (
    fetch_to_maildir,
)
from aiopop._maildir import Maildir
from aiopop.testing import (
    Mailbox,
)
from tests.helpers.cutting import HOW, Cut, CuttingProxy
from tests.helpers.fetch import (
    ACCOUNT,
    MESSAGES,
    PASSWORD,
    USER,
    fetch,
    saved,
    serve,
    unix,
    wait_until,
)

# -- an interrupted run, finished by the next ----------------------------------------------


class Crash(BaseException):
    """Stands for the process dying at this point."""


async def test_a_crash_between_recording_and_publishing_is_finished_by_the_next_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def crash(self: Maildir, names: Sequence[str]) -> None:
        raise Crash

    mailbox, server = serve(*MESSAGES)
    async with server:
        with monkeypatch.context() as patch:
            patch.setattr(Maildir, "publish", crash)
            with pytest.raises(Crash):
                await fetch(server.port, tmp_path, delete=True, new_only=True)
        # Recorded, durable in tmp/, not yet in new/: invisible, and still on the server.
        assert saved(tmp_path) == []
        assert len(os.listdir(tmp_path / "tmp")) == 4
        assert len(mailbox.messages) == 4
        result = await fetch(server.port, tmp_path, delete=True, new_only=True)
    assert result.recovered == 4
    assert result.delivered == []
    assert result.skipped == 4
    assert result.marked == [1, 2, 3, 4]
    assert saved(tmp_path) == sorted(map(unix, MESSAGES))
    assert mailbox.messages == []


async def test_a_crash_before_recording_leaves_nothing_counted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def crash(self: DeliveryState, *args: Any, **kwargs: Any) -> None:
        raise Crash

    mailbox, server = serve(*MESSAGES)
    async with server:
        with monkeypatch.context() as patch:
            patch.setattr(DeliveryState, "commit", crash)
            with pytest.raises(Crash):
                await fetch(server.port, tmp_path, delete=True, new_only=True)
        assert os.listdir(tmp_path / "tmp") == []  # removed: nothing refers to them
        result = await fetch(server.port, tmp_path, delete=True, new_only=True)
    assert (len(result.delivered), result.recovered) == (4, 0)
    assert saved(tmp_path) == sorted(map(unix, MESSAGES))
    assert mailbox.messages == []


async def test_recovery_reads_where_each_pending_file_went(tmp_path: Path) -> None:
    box = Maildir(tmp_path)
    await box.create()
    state = await DeliveryState.open(tmp_path / STATE_FILE)
    (box.tmp / "in-tmp").write_bytes(b"a\n")
    (box.new / "in-new").write_bytes(b"b\n")
    (box.cur / "in-cur:2,S").write_bytes(b"c\n")
    names = ["in-tmp", "in-new", "in-cur", "vanished"]
    await state.commit(ACCOUNT, [(f"uid-{name}", name, 1) for name in names])
    (box.tmp / "other").write_bytes(b"d\n")
    await state.commit("someone else", [("uid", "other", 1)])
    try:
        assert await fetch_module.recover(box, state, ACCOUNT) == 1
        assert await fetch_module.recover(box, state, ACCOUNT) == 0
        assert await state.pending(ACCOUNT) == []
        # The vanished one is forgotten, to be fetched again rather than lost.
        assert set(await state.known(ACCOUNT)) == {"uid-in-tmp", "uid-in-new", "uid-in-cur"}
        # Another account's pending file may be another process's fetch in progress.
        assert await state.pending("someone else") == ["other"]
    finally:
        await state.close()
    assert sorted(os.listdir(box.new)) == ["in-new", "in-tmp"]
    assert os.listdir(box.tmp) == ["other"]


async def test_a_cancelled_fetch_leaves_no_stray_file(tmp_path: Path) -> None:
    messages = [b"Subject: %d\r\n\r\n" % i + b"x" * 5000 + b"\r\n" for i in range(300)]
    mailbox, server = serve(*messages)
    async with server:
        client = aiopop.POP3("127.0.0.1", server.port)
        await client.connect()
        await client.login(USER, PASSWORD)
        task = asyncio.ensure_future(
            fetch_to_maildir(client, tmp_path, account=ACCOUNT, batch_messages=50, delete=True)
        )
        await wait_until(lambda: len(saved(tmp_path)) >= 50)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await client.close()
        await server.wait_idle()
        # Writes cancelled in their threads remove their files when done.
        await wait_until(lambda: not os.listdir(tmp_path / "tmp"))
        assert len(mailbox.messages) == 300
        done = len(saved(tmp_path))
        result = await fetch(server.port, tmp_path, new_only=True, delete=True)
    assert result.skipped == done
    assert saved(tmp_path) == sorted(map(unix, messages))
    assert mailbox.messages == []


async def test_cancelling_removes_written_files_and_stops_pending_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cancelled with one group of the batch written and the next one still writing."""
    monkeypatch.setattr(fetch_run, "WRITE_GROUP", 2)
    real = Maildir.write_all_bytes
    started = asyncio.Event()
    calls = 0

    async def write_all_bytes(self: Maildir, messages: Sequence[bytes]) -> list[str]:
        nonlocal calls
        calls += 1
        if calls == 1:
            return await real(self, messages)
        started.set()
        await asyncio.Event().wait()  # the second group never finishes
        raise AssertionError("not reached")

    monkeypatch.setattr(Maildir, "write_all_bytes", write_all_bytes)
    messages = [b"m%d\r\n" % i for i in range(4)]
    mailbox, server = serve(*messages)
    async with server, aiopop.POP3("127.0.0.1", server.port, timeout=5) as client:
        await client.login(USER, PASSWORD)
        task = asyncio.ensure_future(
            fetch_to_maildir(client, tmp_path, account=ACCOUNT, delete=True)
        )
        async with asyncio.timeout(5):
            await started.wait()
        await wait_until(lambda: len(os.listdir(tmp_path / "tmp")) == 2)  # the first group
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    # The first group's thread may still be syncing when the task is cancelled:
    # a thread cannot be stopped, so its files go when it ends (a cancellation
    # does not wait for the disk), within moments.
    await wait_until(lambda: os.listdir(tmp_path / "tmp") == [])
    assert os.listdir(tmp_path / "new") == []
    assert len(mailbox.messages) == 4


async def test_a_full_disk_fails_the_fetch_after_saving_what_it_can(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = Maildir.write_all_bytes
    calls = 0

    async def write_all_bytes(self: Maildir, messages: Sequence[bytes]) -> list[str]:
        nonlocal calls
        calls += 1
        if calls == 2:  # messages 3 and 4
            raise OSError(28, "No space left on device")
        return await real(self, messages)

    monkeypatch.setattr(fetch_run, "WRITE_GROUP", 2)
    monkeypatch.setattr(Maildir, "write_all_bytes", write_all_bytes)
    messages = [b"m%d\r\n" % i for i in range(5)]
    mailbox, server = serve(*messages)
    async with server:
        with pytest.raises(OSError, match="No space"):
            await fetch(server.port, tmp_path, new_only=True, delete=True)
        assert len(mailbox.messages) == 5
        assert os.listdir(tmp_path / "tmp") == []
        monkeypatch.setattr(Maildir, "write_all_bytes", real)
        await fetch(server.port, tmp_path, new_only=True, delete=True)
    assert saved(tmp_path) == sorted(map(unix, messages))
    assert mailbox.messages == []


# -- cut the connection at every step ------------------------------------------------------


async def dialogue_length(tmp_path: Path, **options: Any) -> int:
    """How many commands one whole run sends."""
    _, server = serve(*MESSAGES)
    async with server, CuttingProxy(server.port) as proxy:
        await fetch(proxy.port, tmp_path, **options)
    assert proxy.commands[-1] == b"QUIT"
    return len(proxy.commands)


def cut_points(commands: int) -> list[Cut]:
    points = [Cut(0, "half"), Cut(0, "whole")]
    for reply in range(1, commands + 1):
        points += [Cut(reply, how) for how in HOW]  # type: ignore[arg-type]
    return points


def check_nothing_lost(
    path: Path, mailbox: Mailbox, originals: Sequence[bytes], *, duplicates: bool
) -> None:
    """Each message is on the server or complete in the Maildir; nothing else is in new/."""
    in_maildir = collections.Counter(saved(path))
    expected = {unix(message) for message in originals}
    assert set(in_maildir) <= expected, "a partial or foreign file reached the Maildir"
    if not duplicates:
        assert max(in_maildir.values(), default=1) == 1, "a message was saved twice"
    on_server = {unix(message) for message in mailbox.messages}  # type: ignore[arg-type]
    assert expected <= set(in_maildir) | on_server, "a message was lost"


async def cut_and_rerun(
    tmp_path: Path, cut: Cut, *, new_only: bool, check: Callable[[Path], None] | None = None
) -> list[bytes]:
    mailbox, server = serve(*MESSAGES)
    async with server:
        async with CuttingProxy(server.port, cut) as proxy:
            with contextlib.suppress(aiopop.POP3Error, OSError):
                await fetch(proxy.port, tmp_path, delete=True, new_only=new_only)
            await server.wait_idle()
        assert proxy.cuts == 1, f"{cut} was never reached"
        check_nothing_lost(tmp_path, mailbox, MESSAGES, duplicates=not new_only)
        await fetch(server.port, tmp_path, delete=True, new_only=new_only)
        await server.wait_idle()
    assert mailbox.messages == [], "the rerun did not finish the job"
    assert os.listdir(tmp_path / "tmp") == []
    return saved(tmp_path)


async def test_cutting_the_connection_at_every_step_loses_nothing(tmp_path: Path) -> None:
    commands = await dialogue_length(tmp_path / "probe", delete=True, new_only=True)
    points = cut_points(commands)
    assert len(points) >= 30
    for index, cut in enumerate(points):
        outcome = await cut_and_rerun(tmp_path / f"{index}-{cut}", cut, new_only=True)
        assert outcome == sorted(map(unix, MESSAGES)), f"after {cut}: not each message once"


async def test_without_new_only_a_cut_loses_nothing_either(tmp_path: Path) -> None:
    commands = await dialogue_length(tmp_path / "probe", delete=True)
    for index, cut in enumerate(cut_points(commands)):
        outcome = await cut_and_rerun(tmp_path / f"{index}-{cut}", cut, new_only=False)
        assert set(outcome) == set(map(unix, MESSAGES)), f"after {cut}"


async def test_the_cuts_cover_the_dialogue(tmp_path: Path) -> None:
    # The enumeration above cuts at each of these commands, mid-message included.
    _, server = serve(*MESSAGES)
    async with server, CuttingProxy(server.port) as proxy:
        await fetch(proxy.port, tmp_path, delete=True, new_only=True)
    verbs = [line.split(b" ")[0] for line in proxy.commands]
    assert verbs.count(b"RETR") == 4
    assert verbs.count(b"DELE") == 4
    assert {b"UIDL", b"LIST", b"QUIT"} <= set(verbs)
    assert verbs.index(b"DELE") > max(i for i, verb in enumerate(verbs) if verb == b"RETR")


async def test_a_cut_after_quit_was_carried_out_deletes_only_saved_mail(tmp_path: Path) -> None:
    commands = await dialogue_length(tmp_path / "probe", delete=True, new_only=True)
    mailbox, server = serve(*MESSAGES)
    async with server, CuttingProxy(server.port, Cut(commands, "executed")) as proxy:
        with pytest.raises(aiopop.ConnectionLostError):
            await fetch(proxy.port, tmp_path, delete=True, new_only=True)
        await server.wait_idle()
    assert proxy.cuts == 1
    assert mailbox.messages == []  # QUIT reached the server: it committed
    assert saved(tmp_path) == sorted(map(unix, MESSAGES))


# -- the order of operations ----------------------------------------------------------------


async def test_each_message_is_durable_recorded_and_published_before_its_dele(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log: list[tuple[str, object]] = []
    write_all_bytes, write, sync, commit, publish = (
        Maildir.write_all_bytes,
        Maildir.write,
        Maildir.sync,
        DeliveryState.commit,
        Maildir.publish,
    )
    dele = aiopop.POP3.dele

    async def logged_write_all_bytes(self: Maildir, messages: Sequence[bytes]) -> list[str]:
        names = await write_all_bytes(self, messages)
        log.extend(("durable in tmp", name) for name in names)
        return names

    async def logged_write(self: Maildir, batches: Any, *, sync: bool = True) -> tuple[str, int]:
        name, size = await write(self, batches, sync=sync)
        if sync:
            log.append(("durable in tmp", name))
        return name, size

    async def logged_sync(self: Maildir, names: Sequence[str]) -> list[str]:
        await sync(self, names)
        log.extend(("durable in tmp", name) for name in names)
        return list(names)

    async def logged_commit(self: DeliveryState, *args: Any, **kwargs: Any) -> None:
        await commit(self, *args, **kwargs)
        for _, name, _ in args[1] if len(args) > 1 else ():
            log.append(("recorded", name))

    async def logged_publish(self: Maildir, names: Sequence[str]) -> None:
        await publish(self, names)  # renames, then syncs new/
        log.extend(("in new/, synced", name) for name in names)

    async def logged_dele(self: aiopop.POP3, number: int) -> bytes:
        log.append(("DELE", number))
        return await dele(self, number)

    monkeypatch.setattr(Maildir, "write_all_bytes", logged_write_all_bytes)
    monkeypatch.setattr(Maildir, "write", logged_write)
    monkeypatch.setattr(Maildir, "sync", logged_sync)
    monkeypatch.setattr(DeliveryState, "commit", logged_commit)
    monkeypatch.setattr(Maildir, "publish", logged_publish)
    monkeypatch.setattr(aiopop.POP3, "dele", logged_dele)
    mailbox, server = serve(*MESSAGES)
    async with server:
        result = await fetch(server.port, tmp_path, delete=True, new_only=True, batch_messages=2)
    assert mailbox.messages == []
    for delivery in result.delivered:
        steps = [log.index((step, delivery.name)) for step in ("durable in tmp", "recorded")]
        steps.append(log.index(("in new/, synced", delivery.name)))
        steps.append(log.index(("DELE", delivery.number)))
        assert steps == sorted(steps), f"message {delivery.number}: {steps}"
