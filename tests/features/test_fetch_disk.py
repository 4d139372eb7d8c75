"""fetch_to_maildir: disk errors, limits and locks."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

import aiopop
from aiopop._delivery_state import STATE_FILE, DeliveryState, StateLock, StateLockedError
from aiopop._fetch import (
    fetch_to_maildir,
)
from aiopop.testing import (
    Faults,
    GeneratedMessage,
    Mailbox,
    POP3TestServer,
    ScriptedServer,
)
from tests.helpers.fetch import (
    ACCOUNT,
    MESSAGES,
    PASSWORD,
    USER,
    fetch,
    saved,
    script,
    scripted_client,
    serve,
    unix,
)

# -- disk errors, limits and locks -----------------------------------------------------------


async def test_a_rename_that_fails_leaves_its_batch_pending_for_the_next_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ENOSPC on the second rename into new/: nothing of that batch counts as delivered.

    The next run (new_only, delete) finishes the renames before anything else, so
    no file is taken for abandoned, and only what reached new/ is deleted.
    """
    messages = [b"Subject: %d\r\n\r\nbody %d\r\n" % (i, i) for i in range(3)]
    mailbox, server = serve(*messages)
    renames = 0
    real_rename = os.rename

    def failing_rename(source: Any, target: Any) -> None:
        nonlocal renames
        renames += 1
        if renames == 2:
            raise OSError(errno.ENOSPC, "No space left on device", str(target))
        real_rename(source, target)

    async with server:
        with monkeypatch.context() as patch:
            patch.setattr(os, "rename", failing_rename)
            with pytest.raises(OSError, match="No space"):
                await fetch(server.port, tmp_path, delete=True, new_only=True)
        assert server.sessions[-1].quit is False  # the error left before QUIT: nothing deleted
        assert len(os.listdir(tmp_path / "new")) == 1
        assert len(os.listdir(tmp_path / "tmp")) == 2
        state = await DeliveryState.open(tmp_path / STATE_FILE)
        try:
            assert len(await state.pending(ACCOUNT)) == 3  # none taken for delivered
        finally:
            await state.close()
        again = await fetch(server.port, tmp_path, delete=True, new_only=True)
    assert again.recovered == 2
    assert (again.delivered, again.skipped, sorted(again.marked)) == ([], 3, [1, 2, 3])
    assert saved(tmp_path) == sorted(map(unix, messages))
    assert os.listdir(tmp_path / "tmp") == []
    assert mailbox.messages == []


async def test_a_message_listed_over_max_size_is_not_retrieved_nor_deleted(
    tmp_path: Path,
) -> None:
    small, big = b"Subject: s\r\n\r\nsmall\r\n", b"Subject: b\r\n\r\n" + b"x" * 300 + b"\r\n"
    mailbox, server = serve(small, big, small)
    big_uid = (mailbox.uids or [])[1]
    async with server:
        result = await fetch(server.port, tmp_path, delete=True, new_only=True, max_size=100)
        received = [line.split(b" ")[0] for line in server.sessions[-1].lines]
    assert [d.number for d in result.delivered] == [1, 3]
    assert [(o.number, o.uid, o.size) for o in result.oversized] == [(2, big_uid, len(big))]
    assert result.marked == [1, 3]
    assert received.count(b"RETR") == 2  # the big one was never asked for
    assert mailbox.messages == [big]
    assert saved(tmp_path) == [unix(small), unix(small)]


async def test_a_message_larger_than_listed_is_read_dropped_and_reported(
    tmp_path: Path,
) -> None:
    """LIST lies: the messages arrive bigger than max_size, on both paths; nothing is written."""
    huge = b"y" * 2000
    dialogue = [
        (b"UIDL", b"+OK\r\n1 a\r\n2 b\r\n3 c\r\n.\r\n"),
        (b"LIST", b"+OK\r\n1 10\r\n2 500\r\n3 10\r\n.\r\n"),
        (b"RETR 1", b"+OK\r\n" + huge + b"\r\n.\r\n"),  # the in-memory path
        (b"RETR 3", b"+OK\r\nthree\r\n.\r\n"),
        (b"RETR 2", b"+OK\r\n" + huge + b"\r\n.\r\n"),  # streamed (over stream_threshold)
        (b"DELE 3", b"+OK\r\n"),
        (b"QUIT", b"+OK\r\n"),
    ]
    async with ScriptedServer(script(*dialogue)) as server:
        client = await scripted_client(server)
        result = await fetch_to_maildir(
            client, tmp_path, account=ACCOUNT, delete=True, max_size=1000, stream_threshold=100
        )
        await client.quit()
    assert server.mismatches == []
    assert [(o.number, o.uid) for o in result.oversized] == [(1, "a"), (2, "b")]
    assert result.oversized[0].size == len(huge) + 2
    assert result.oversized[1].size > 1000
    assert [d.number for d in result.delivered] == [3]
    assert result.marked == [3]
    assert saved(tmp_path) == [b"three\n"]
    assert os.listdir(tmp_path / "tmp") == []


async def test_two_fetches_of_one_mailbox_into_one_maildir_never_overlap(tmp_path: Path) -> None:
    """The second waits for the lock, then says another is running; it sent nothing."""
    _, server = serve(*MESSAGES[:2])
    async with server:
        holder = StateLock(tmp_path / STATE_FILE, ACCOUNT)
        async with holder:
            with pytest.raises(StateLockedError, match="another aiopop process"):
                await fetch(server.port, tmp_path, new_only=True, lock_wait=0.2)
            # Logged in, then nothing: no listing, no RETR, and no QUIT.
            verbs = {line.split(b" ")[0] for line in server.sessions[-1].lines}
            assert verbs <= {b"CAPA", b"APOP"}, verbs
        # Another mailbox in the same Maildir is not held up by it...
        async with StateLock(tmp_path / STATE_FILE, "someone@else"):
            first = await fetch(server.port, tmp_path, new_only=True, lock_wait=0.2)
        # ...and two at once deliver each message once. (Two servers with the same
        # messages: one server would refuse the second login with [IN-USE].)
        _, twin = serve(*MESSAGES[:2])
        async with twin:
            runs = await asyncio.gather(
                fetch(server.port, tmp_path / "two", new_only=True),
                fetch(twin.port, tmp_path / "two", new_only=True),
            )
    assert len(first.delivered) == 2
    assert sorted(len(run.delivered) for run in runs) == [0, 2]
    assert len(saved(tmp_path / "two")) == 2


async def test_a_deletion_rolled_back_is_told_from_a_unique_id_reused_at_the_same_size(
    tmp_path: Path,
) -> None:
    """A unique-id marked deleted comes back with its size: the bytes decide."""
    first, same_size = b"Subject: a\r\n\r\nfirst\r\n", b"Subject: b\r\n\r\nother\r\n"
    mailbox = Mailbox(PASSWORD, [first], uids=["u"])
    async with POP3TestServer({USER: mailbox}) as server:
        # The connection ends before QUIT: the server rolls the deletion back.
        client = aiopop.POP3("127.0.0.1", server.port, timeout=5)
        await client.connect()
        await client.login(USER, PASSWORD)
        marked = await fetch_to_maildir(
            client, tmp_path, account=ACCOUNT, delete=True, new_only=True
        )
        await client.close()
        assert (marked.marked, mailbox.messages) == ([1], [first])
        # The same message: not fetched again, deleted now.
        again = await fetch(server.port, tmp_path, delete=True, new_only=True)
        assert (again.delivered, again.skipped, again.marked) == ([], 1, [1])
        assert mailbox.messages == []
        # Another message under the same unique-id, of the same size: fetched.
        mailbox.add(same_size, uid="u")
        third = await fetch(server.port, tmp_path, delete=True, new_only=True)
    assert [d.number for d in third.delivered] == [1]
    assert mailbox.messages == []
    assert saved(tmp_path) == [unix(first), unix(same_size)]


async def test_a_unique_id_gone_from_the_listing_is_forgotten(tmp_path: Path) -> None:
    """Deleted by another client, then reused at the same size: a new message."""
    mailbox = Mailbox(PASSWORD, [b"Subject: a\r\n\r\nfirst\r\n"], uids=["u"])
    async with POP3TestServer({USER: mailbox}) as server:
        await fetch(server.port, tmp_path, new_only=True)
        mailbox.messages.clear()
        mailbox.uids = []
        await fetch(server.port, tmp_path, new_only=True)  # sees it gone
        mailbox.add(b"Subject: b\r\n\r\nother\r\n", uid="u")
        later = await fetch(server.port, tmp_path, delete=True, new_only=True)
    assert [d.number for d in later.delivered] == [1]
    assert len(saved(tmp_path)) == 2


async def test_memory_is_held_to_the_budget_whatever_list_says(tmp_path: Path) -> None:
    """12 messages of 4 MiB that LIST calls 100 octets: the pipelined path holds what
    arrives to ``memory``; each message passing the threshold goes to disk as a stream."""
    size, memory = 4 * 1024 * 1024, 8 * 1024 * 1024
    messages = [GeneratedMessage(size, seed=i) for i in range(12)]
    mailbox = Mailbox(PASSWORD, list(messages))
    lie = Faults(size_error=100 - size)
    async with POP3TestServer({USER: mailbox}, faults=lie) as server:
        tracemalloc.start()
        try:
            result = await fetch(server.port, tmp_path, memory=memory, stream_threshold=1024 * 1024)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert len(result.delivered) == 12
    assert [d.size for d in result.delivered] == [size] * 12
    # The budget, plus a batch being written (joined, then its line ends converted: two
    # copies of at most the budget). Without the budget every RETR was queued (LIST
    # promised 1,200 octets in all) and the messages piled up: 80 MiB here.
    assert peak < 3 * memory, peak
    digests = sorted(
        hashlib.sha256(p.read_bytes()).hexdigest() for p in (tmp_path / "new").iterdir()
    )
    expected = sorted(
        hashlib.sha256(b"".join(m.chunks()).replace(b"\r\n", b"\n")).hexdigest() for m in messages
    )
    assert digests == expected
