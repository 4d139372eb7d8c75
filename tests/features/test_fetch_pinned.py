"""fetch_to_maildir: behaviour pinned by mutation testing."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest

import aiopop
from aiopop import _fetch_run as fetch_run
from aiopop._delivery_state import STATE_FILE, DeliveryState
from aiopop._fetch import (
    FetchResult,
    UIDLUnavailableError,
    fetch_to_maildir,
)
from aiopop._maildir import Maildir
from aiopop.testing import (
    Close,
    Expect,
    Mailbox,
    POP3TestServer,
    ScriptedServer,
    Send,
    Sleep,
)
from tests.helpers.fetch import (
    ACCOUNT,
    LISTING,
    MESSAGES,
    NO_UIDL,
    PASSWORD,
    USER,
    fetch,
    saved,
    script,
    scripted_client,
    serve,
    unix,
    wait_until,
)

# -- pinned by mutation testing ---------------------------------------------------------------


async def test_without_uidl_new_only_says_why_and_what_to_do(tmp_path: Path) -> None:
    async with ScriptedServer(script(NO_UIDL, LISTING)) as server:
        client = await scripted_client(server)
        with pytest.raises(UIDLUnavailableError) as caught:
            await fetch_to_maildir(client, tmp_path, account=ACCOUNT, new_only=True)
        await client.close()
    assert str(caught.value) == (
        f"the server refuses UIDL ({caught.value.refusal}), so the messages fetched before"
        " cannot be told apart: fetch without new_only, or use another server"
    )


async def mark_without_quit(port: int, path: Path) -> FetchResult:
    """Fetch everything with ``delete`` and end the session without QUIT: each message
    is saved and marked in the state, and the server rolls the deletions back."""
    client = aiopop.POP3("127.0.0.1", port, timeout=5)
    await client.connect()
    await client.login(USER, PASSWORD)
    try:
        return await fetch_to_maildir(client, path, account=ACCOUNT, delete=True, new_only=True)
    finally:
        await client.close()


def retrs(server: POP3TestServer) -> list[bytes]:
    """The RETR commands of the last session, in order."""
    return [line for line in server.sessions[-1].lines if line.startswith(b"RETR")]


async def test_every_marked_unique_id_listed_again_is_checked_and_only_at_its_size(
    tmp_path: Path,
) -> None:
    """Two unique-ids marked deleted come back: "x" at another size (another message, taken
    for new without a look), "y" at its size but with other bytes (read to tell). Both are
    fetched and saved before their DELE: the first must not stop the check of the second."""
    x_first, y_first = b"Subject: x\r\n\r\nfirst\r\n", b"Subject: y\r\n\r\nfirst\r\n"
    x_other, y_other = b"Subject: x\r\n\r\nmuch longer\r\n", b"Subject: y\r\n\r\nOTHER\r\n"
    assert len(y_other) == len(y_first)
    mailbox = Mailbox(PASSWORD, [x_first, y_first], uids=["x", "y"])
    async with POP3TestServer({USER: mailbox}) as server:
        assert (await mark_without_quit(server.port, tmp_path)).marked == [1, 2]
        mailbox.messages[:] = [x_other, y_other]
        result = await fetch(server.port, tmp_path, delete=True, new_only=True)
        sent = retrs(server)
    assert [(d.number, d.uid) for d in result.delivered] == [(1, "x"), (2, "y")]
    assert result.skipped == 0
    assert result.marked == [1, 2]
    # One RETR to compare "y" with its file (none for "x": its size tells), then the fetch.
    assert sent == [b"RETR 2", b"RETR 1", b"RETR 2"]
    assert mailbox.messages == []
    assert saved(tmp_path) == sorted(map(unix, [x_first, y_first, x_other, y_other]))


async def test_a_marked_unique_id_that_two_messages_now_share_is_left_alone(
    tmp_path: Path,
) -> None:
    """Neither is read to compare, fetched again or deleted: a shared unique-id proves nothing."""
    first, same_size = b"Subject: a\r\n\r\nfirst\r\n", b"Subject: b\r\n\r\nother\r\n"
    mailbox = Mailbox(PASSWORD, [first], uids=["u"])
    async with POP3TestServer({USER: mailbox}) as server:
        assert (await mark_without_quit(server.port, tmp_path)).marked == [1]
        mailbox.add(same_size, uid="u")
        result = await fetch(server.port, tmp_path, delete=True, new_only=True)
        sent = retrs(server)
    assert (result.delivered, result.skipped, result.marked) == ([], 2, [])
    assert sent == []
    assert mailbox.messages == [first, same_size]
    assert saved(tmp_path) == [unix(first)]


async def test_a_message_saved_at_an_unknown_size_is_not_deleted_when_list_omits_it(
    tmp_path: Path,
) -> None:
    """A row of unknown size (an older state) and no LIST size now: nothing ties the two,
    so the message is skipped as saved but never marked deleted."""
    async with await DeliveryState.open(tmp_path / STATE_FILE) as state:
        await state.commit(ACCOUNT, handed=[("u1", None)])
    dialogue = [
        (b"UIDL", b"+OK\r\n1 u1\r\n.\r\n"),
        (b"LIST", b"+OK\r\n.\r\n"),
        (b"QUIT", b"+OK\r\n"),
    ]
    async with ScriptedServer(script(*dialogue)) as server:
        client = await scripted_client(server)
        result = await fetch_to_maildir(
            client, tmp_path, account=ACCOUNT, delete=True, new_only=True
        )
        await client.quit()
    assert server.mismatches == []
    assert (result.skipped, result.marked, result.delivered) == (1, [], [])


TWO_OF_THREE = [
    (b"UIDL", b"+OK\r\n1 a\r\n2 b\r\n3 c\r\n.\r\n"),
    (b"LIST", b"+OK\r\n1 5\r\n2 5\r\n3 5\r\n.\r\n"),
    (b"RETR 1", b"+OK\r\none\r\n.\r\n"),
    (b"RETR 2", b"+OK\r\ntwo\r\n.\r\n"),
]
"""Three messages listed, the first two sent: the third RETR gets no reply."""


@contextlib.asynccontextmanager
async def stalled_at_the_third(path: Path, ready: asyncio.Event) -> AsyncIterator[None]:
    """A fetch of :data:`TWO_OF_THREE` into ``path``, entered once ``ready`` is set and the
    third RETR has gone out; leaving cancels it, and the cancellation is its outcome."""
    steps = [*script(*TWO_OF_THREE), Expect(b"RETR 3")]  # and no reply
    async with ScriptedServer(steps) as server:
        client = await scripted_client(server)
        task = asyncio.ensure_future(fetch_to_maildir(client, path, account=ACCOUNT))
        try:
            async with asyncio.timeout(5):
                await ready.wait()
            await wait_until(lambda: server.received[-1:] == [b"RETR 3"])
            yield
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await client.close()


async def test_the_size_limit_counts_every_octet_of_a_streamed_message(tmp_path: Path) -> None:
    """Arriving in pieces each under ``max_size``, the whole is over it: dropped. A message
    of exactly ``max_size`` octets is written."""
    piece = b"z" * 398 + b"\r\n"
    exact = b"e" * 998 + b"\r\n"
    dialogue = [
        (b"UIDL", b"+OK\r\n1 a\r\n2 b\r\n.\r\n"),
        (b"LIST", b"+OK\r\n1 500\r\n2 1000\r\n.\r\n"),  # 1 lies: it is 1200 octets
    ]
    steps = script(*dialogue)
    steps += [Expect(b"RETR 1"), Send(b"+OK\r\n" + piece)]
    steps += [Sleep(0.05), Send(piece), Sleep(0.05), Send(piece + b".\r\n")]
    steps += [Expect(b"RETR 2"), Send(b"+OK\r\n" + exact + b".\r\n")]
    steps += [Expect(b"QUIT"), Send(b"+OK\r\n")]
    async with ScriptedServer(steps) as server:
        client = await scripted_client(server)
        result = await fetch_to_maildir(
            client, tmp_path, account=ACCOUNT, max_size=1000, stream_threshold=100
        )
        await client.quit()
    assert server.mismatches == []
    assert [(o.number, o.uid, o.size) for o in result.oversized] == [(1, "a", 1200)]
    assert [(d.number, d.size) for d in result.delivered] == [(2, 1000)]
    assert saved(tmp_path) == [unix(exact)]
    assert os.listdir(tmp_path / "tmp") == []


async def test_cancelling_while_waiting_for_the_server_removes_the_files_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two messages written (not yet recorded), the third awaited: cancelled, the fetch
    removes the two files from tmp/; nothing reaches new/ and nothing is recorded."""
    monkeypatch.setattr(fetch_run, "WRITE_GROUP", 2)
    real = Maildir.write_all_bytes
    written = asyncio.Event()

    async def write_all_bytes(self: Maildir, messages: Sequence[bytes]) -> list[str]:
        names = await real(self, messages)
        written.set()
        return names

    monkeypatch.setattr(Maildir, "write_all_bytes", write_all_bytes)
    async with stalled_at_the_third(tmp_path, written):
        assert len(os.listdir(tmp_path / "tmp")) == 2
    assert os.listdir(tmp_path / "tmp") == []
    assert os.listdir(tmp_path / "new") == []
    async with await DeliveryState.open(tmp_path / STATE_FILE) as state:
        assert await state.known(ACCOUNT) == {}


async def test_a_failed_write_does_not_turn_a_cancellation_into_its_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write failed (the disk), and the fetch is cancelled before that surfaced: the
    caller gets the cancellation it asked for, and no file is left behind."""
    monkeypatch.setattr(fetch_run, "WRITE_GROUP", 2)
    failed = asyncio.Event()

    async def write_all_bytes(self: Maildir, messages: Sequence[bytes]) -> list[str]:
        failed.set()
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Maildir, "write_all_bytes", write_all_bytes)
    async with stalled_at_the_third(tmp_path, failed):
        pass
    assert os.listdir(tmp_path / "tmp") == []
    assert os.listdir(tmp_path / "new") == []


async def test_max_size_may_be_none_or_zero_but_not_negative(tmp_path: Path) -> None:
    client = aiopop.POP3("127.0.0.1", 1)
    with pytest.raises(ValueError, match=r"^max_size must be at least 0, or None for no limit$"):
        await fetch_to_maildir(client, tmp_path / "refused", account=ACCOUNT, max_size=-1)
    assert not (tmp_path / "refused").exists()
    _, server = serve(*MESSAGES[:2])
    async with server:
        unlimited = await fetch(server.port, tmp_path / "none", max_size=None)
        nothing = await fetch(server.port, tmp_path / "zero", max_size=0)
    assert [d.number for d in unlimited.delivered] == [1, 2]
    assert unlimited.oversized == []
    assert saved(tmp_path / "none") == sorted(map(unix, MESSAGES[:2]))
    sizes = [(1, len(MESSAGES[0])), (2, len(MESSAGES[1]))]
    assert [(o.number, o.size) for o in nothing.oversized] == sizes
    assert saved(tmp_path / "zero") == []


async def test_a_message_list_leaves_out_is_streamed_to_disk(tmp_path: Path) -> None:
    """UIDL names it, LIST does not: its size is unknown, so it is streamed (bounded by
    max_size as it arrives), never queued in memory on a guess."""
    dialogue = [
        (b"UIDL", b"+OK\r\n1 a\r\n2 b\r\n.\r\n"),
        (b"LIST", b"+OK\r\n1 7\r\n.\r\n"),
        (b"RETR 1", b"+OK\r\nsmall\r\n.\r\n"),
        (b"RETR 2", b"+OK\r\nunlisted\r\n.\r\n"),
        (b"QUIT", b"+OK\r\n"),
    ]
    async with ScriptedServer(script(*dialogue)) as server:
        client = await scripted_client(server)
        result = await fetch_to_maildir(client, tmp_path, account=ACCOUNT)
        await client.quit()
    assert server.mismatches == []
    assert [(d.number, d.uid, d.size) for d in result.delivered] == [(1, "a", 7), (2, "b", 10)]
    assert saved(tmp_path) == [b"small\n", b"unlisted\n"]


async def test_a_message_over_max_size_in_memory_is_reported_and_the_rest_saved(
    tmp_path: Path,
) -> None:
    """LIST says 10; 200 octets come, under the stream threshold but over max_size."""
    big = b"b" * 198 + b"\r\n"
    dialogue = [
        (b"UIDL", b"+OK\r\n1 a\r\n2 b\r\n3 c\r\n.\r\n"),
        (b"LIST", b"+OK\r\n1 10\r\n2 10\r\n3 5\r\n.\r\n"),
        (b"RETR 1", b"+OK\r\none\r\n.\r\n"),
        (b"RETR 2", b"+OK\r\n" + big + b".\r\n"),
        (b"RETR 3", b"+OK\r\nthree\r\n.\r\n"),
        (b"QUIT", b"+OK\r\n"),
    ]
    async with ScriptedServer(script(*dialogue)) as server:
        client = await scripted_client(server)
        result = await fetch_to_maildir(client, tmp_path, account=ACCOUNT, max_size=50)
        await client.quit()
    assert server.mismatches == []
    assert [(o.number, o.uid, o.size) for o in result.oversized] == [(2, "b", 200)]
    assert [d.number for d in result.delivered] == [1, 3]
    assert saved(tmp_path) == [b"one\n", b"three\n"]


async def test_what_arrived_before_a_lost_connection_is_recorded_delivered(
    tmp_path: Path,
) -> None:
    """The fetch fails, but the message received whole is in new/ and its row is
    delivered, not pending: nothing is left for the next run to finish."""
    dialogue = [
        (b"UIDL", b"+OK\r\n1 a\r\n2 b\r\n.\r\n"),
        (b"LIST", b"+OK\r\n1 5\r\n2 5\r\n.\r\n"),
        (b"RETR 1", b"+OK\r\none\r\n.\r\n"),
    ]
    steps = [*script(*dialogue), Expect(b"RETR 2"), Close()]
    async with ScriptedServer(steps) as server:
        client = await scripted_client(server)
        with pytest.raises(aiopop.ConnectionLostError):
            await fetch_to_maildir(client, tmp_path, account=ACCOUNT)
        await client.close()
    assert saved(tmp_path) == [b"one\n"]
    async with await DeliveryState.open(tmp_path / STATE_FILE) as state:
        assert await state.pending(ACCOUNT) == []
        assert await state.known(ACCOUNT) == {"a": 5}


async def test_a_marked_message_known_without_a_file_is_fetched_again(tmp_path: Path) -> None:
    """A watch sharing the state file recorded it (no file); a fetch deleted it but the
    session ended before QUIT. Listed again, there is no file to compare with: it is
    taken for new and fetched (a duplicate is possible, a loss is not)."""
    message = b"Subject: a\r\n\r\nfirst\r\n"
    mailbox = Mailbox(PASSWORD, [message], uids=["u"])
    async with await DeliveryState.open(tmp_path / STATE_FILE) as state:
        await state.commit(ACCOUNT, handed=[("u", len(message))])
    async with POP3TestServer({USER: mailbox}) as server:
        marked = await mark_without_quit(server.port, tmp_path)
        assert (marked.delivered, marked.marked) == ([], [1])
        result = await fetch(server.port, tmp_path, new_only=True)
    assert [(d.number, d.uid) for d in result.delivered] == [(1, "u")]
    assert saved(tmp_path) == [unix(message)]


async def test_the_octets_of_a_batch_count_from_zero_in_every_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, batch_sizes: list[int]
) -> None:
    """Six messages of 10 octets, batch_octets=21: each batch and each write takes three."""
    real = Maildir.write_all_bytes
    groups: list[int] = []

    async def write_all_bytes(self: Maildir, messages: Sequence[bytes]) -> list[str]:
        groups.append(len(messages))
        return await real(self, messages)

    monkeypatch.setattr(Maildir, "write_all_bytes", write_all_bytes)
    messages = [b"%d" % i + b"x" * 7 + b"\r\n" for i in range(6)]
    _, server = serve(*messages)
    async with server:
        await fetch(server.port, tmp_path, batch_octets=21)
    assert batch_sizes == [3, 3, 0]
    assert groups == [3, 3]
    assert saved(tmp_path) == sorted(map(unix, messages))


async def test_the_pipeline_is_only_as_deep_as_memory_allows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Five messages of 1,002 octets and 2,500 octets of memory: two RETRs queued at most."""
    real = aiopop.POP3.retr_each
    windows: list[int | None] = []

    def retr_each(self: aiopop.POP3, numbers: Any, **options: Any) -> Any:
        windows.append(options.get("window"))
        return real(self, numbers, **options)

    monkeypatch.setattr(aiopop.POP3, "retr_each", retr_each)
    messages = [b"%d" % i + b"x" * 999 + b"\r\n" for i in range(5)]
    _, server = serve(*messages)
    async with server:
        await fetch(server.port, tmp_path, memory=2500)
    assert windows == [2]
    assert saved(tmp_path) == sorted(map(unix, messages))
