"""fetch_to_maildir: what it saves, skips and deletes, and that no cut loses a message."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import errno
import hashlib
import os
import tracemalloc
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

import aiopop
from aiopop import _fetch as fetch_module
from aiopop import _fetch_run as fetch_run
from aiopop._delivery_state import STATE_FILE, DeliveryState, StateLock, StateLockedError
from aiopop._fetch import (
    FetchResult,
    UIDLUnavailableError,
    fetch_to_maildir,
)
from aiopop._maildir import Maildir
from aiopop.testing import (
    Close,
    Expect,
    Faults,
    GeneratedMessage,
    Mailbox,
    POP3TestServer,
    ScriptedServer,
    Send,
    Sleep,
    Step,
)
from tests.helpers.cutting import HOW, Cut, CuttingProxy
from tests.helpers.scripted import LOGIN

USER = "alice"
PASSWORD = "secret"
ACCOUNT = "alice@test"
BIG = b"Subject: big\r\n\r\n" + b"".join(b"line %06d of a big one\r\n" % i for i in range(4000))
MESSAGES = [
    b"Subject: one\r\n\r\nHello\r\n",
    b"Subject: two\r\n\r\n.\r\n..\r\n.dot\r\nbare\rCR\r\n",
    BIG,  # over the stream threshold used below: streamed to disk
    b"Subject: four\r\n\r\nlast\r\n",
]
THRESHOLD = 10_000


def unix(message: bytes) -> bytes:
    return message.replace(b"\r\n", b"\n")


def saved(path: Path) -> list[bytes]:
    """The messages in ``new/`` and ``cur/``, sorted."""
    return sorted(
        file.read_bytes()
        for sub in ("new", "cur")
        if (path / sub).exists()
        for file in (path / sub).iterdir()
    )


async def fetch(port: int, path: Path | Maildir, **options: Any) -> FetchResult:
    """Log in on 127.0.0.1:``port``, fetch, QUIT; the options go to fetch_to_maildir."""
    options.setdefault("stream_threshold", THRESHOLD)
    async with aiopop.POP3("127.0.0.1", port, timeout=5) as client:
        await client.login(USER, PASSWORD)
        return await fetch_to_maildir(client, path, account=ACCOUNT, **options)


async def wait_until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(10):
        while not condition():  # noqa: ASYNC110 (polling the file system)
            await asyncio.sleep(0.001)


def serve(*messages: bytes, **options: Any) -> tuple[Mailbox, POP3TestServer]:
    mailbox = Mailbox(PASSWORD, list(messages))
    return mailbox, POP3TestServer({USER: mailbox}, **options)


@pytest.fixture
def batch_sizes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many messages each state transaction recorded, in order."""
    sizes: list[int] = []
    real = DeliveryState.commit

    async def counting(self: DeliveryState, *args: Any, **kwargs: Any) -> None:
        if len(args) > 1:
            sizes.append(len(args[1]))
        await real(self, *args, **kwargs)

    monkeypatch.setattr(DeliveryState, "commit", counting)
    return sizes


# -- what is saved --------------------------------------------------------------------


async def test_every_message_is_saved_once_and_the_server_keeps_them(tmp_path: Path) -> None:
    mailbox, server = serve(*MESSAGES)
    uids = list(mailbox.uids or ())
    async with server:
        result = await fetch(server.port, tmp_path)
    assert saved(tmp_path) == sorted(map(unix, MESSAGES))
    assert [d.number for d in result.delivered] == [1, 2, 4, 3]  # the big one last
    assert [d.size for d in result.delivered] == [len(MESSAGES[i]) for i in (0, 1, 3, 2)]
    assert [d.uid for d in result.delivered] == [uids[i] for i in (0, 1, 3, 2)]
    for delivery in result.delivered:
        assert (tmp_path / "new" / delivery.name).read_bytes() == unix(
            MESSAGES[delivery.number - 1]
        )
    assert (result.skipped, result.marked, result.refused, result.recovered) == (0, [], [], 0)
    assert len(mailbox.messages) == 4
    assert os.listdir(tmp_path / "tmp") == []
    lock = StateLock(tmp_path / STATE_FILE, ACCOUNT).path.name  # left for the next run
    assert sorted(os.listdir(tmp_path)) == sorted(["tmp", "new", "cur", STATE_FILE, lock])
    state = await DeliveryState.open(tmp_path / STATE_FILE)
    try:
        assert await state.known(ACCOUNT) == dict(zip(uids, map(len, MESSAGES), strict=True))
        assert await state.pending(ACCOUNT) == []
    finally:
        await state.close()


async def test_new_only_fetches_only_what_the_maildir_lacks(tmp_path: Path) -> None:
    mailbox, server = serve(*MESSAGES[:2])
    async with server:
        await fetch(server.port, tmp_path, new_only=True)
        again = await fetch(server.port, tmp_path, new_only=True)
        assert (again.delivered, again.skipped) == ([], 2)
        mailbox.add(b"Subject: later\r\n\r\nnew\r\n")
        third = await fetch(server.port, tmp_path, new_only=True)
    assert [d.number for d in third.delivered] == [3]
    assert third.skipped == 2
    assert saved(tmp_path) == sorted(map(unix, [*MESSAGES[:2], b"Subject: later\r\n\r\nnew\r\n"]))


async def test_without_new_only_everything_is_fetched_again(tmp_path: Path) -> None:
    _, server = serve(*MESSAGES[:2])
    async with server:
        await fetch(server.port, tmp_path)
        again = await fetch(server.port, tmp_path)
    assert len(again.delivered) == 2
    assert len(saved(tmp_path)) == 4


async def test_accounts_sharing_a_maildir_are_kept_apart(tmp_path: Path) -> None:
    # Equal unique-ids in two mailboxes are two different messages.
    alice = Mailbox(PASSWORD, [b"for alice\r\n"], uids=["1"])
    bob = Mailbox(PASSWORD, [b"for bob\r\n"], uids=["1"])
    async with POP3TestServer({"alice": alice, "bob": bob}) as server:
        for user in ("alice", "bob", "alice", "bob"):
            async with aiopop.POP3("127.0.0.1", server.port) as client:
                await client.login(user, PASSWORD)
                key = f"{user}@mail.example"
                await fetch_to_maildir(client, tmp_path, account=key, new_only=True)
    assert saved(tmp_path) == [b"for alice\n", b"for bob\n"]


async def test_a_maildir_object_may_keep_crlf(tmp_path: Path) -> None:
    _, server = serve(MESSAGES[0], BIG)
    async with server:
        await fetch(server.port, Maildir(tmp_path, keep_crlf=True))
    assert saved(tmp_path) == sorted([MESSAGES[0], BIG])


async def test_small_batches_give_the_same_result(tmp_path: Path) -> None:
    messages = [b"Subject: %d\r\n\r\nbody\r\n" % i for i in range(25)]
    mailbox, server = serve(*messages)
    async with server:
        result = await fetch(server.port, tmp_path, batch_messages=3, delete=True, new_only=True)
    assert len(result.delivered) == 25
    assert saved(tmp_path) == sorted(map(unix, messages))
    assert mailbox.messages == []


async def test_a_batch_also_ends_at_its_octet_limit(tmp_path: Path, batch_sizes: list[int]) -> None:
    _, server = serve(*(b"x" * 1000 + b"\r\n" for _ in range(6)))
    async with server:
        await fetch(server.port, tmp_path, batch_octets=2500)
    assert batch_sizes == [3, 3, 0]  # 3 x 1002 octets pass 2,500; then the final commit


@pytest.mark.parametrize(
    ("options", "commits"),
    [
        ({"batch_messages": 2}, [2, 2, 1]),  # a batch ends at exactly 2 messages
        ({"batch_octets": 2004}, [2, 2, 1]),  # ...or at exactly 2 x 1,002 octets
        ({"batch_messages": 1, "batch_octets": 1, "memory": 1}, [1, 1, 1, 1, 1, 0]),  # smallest
    ],
)
async def test_a_batch_ends_exactly_at_its_limit(
    tmp_path: Path, batch_sizes: list[int], options: dict[str, int], commits: list[int]
) -> None:
    messages = [b"%d" % i + b"x" * 999 + b"\r\n" for i in range(5)]
    _, server = serve(*messages)
    async with server:
        await fetch(server.port, tmp_path, **options)
    assert batch_sizes == commits
    assert saved(tmp_path) == sorted(map(unix, messages))


async def test_big_messages_count_toward_the_octet_limit_and_the_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, batch_sizes: list[int]
) -> None:
    """Streamed messages: a batch per 2 of them; one sync at a time (MAX_WRITES=1)."""
    monkeypatch.setattr(fetch_run, "MAX_WRITES", 1)
    messages = [b"%d" % i + b"y" * 19_999 + b"\r\n" for i in range(5)]  # over THRESHOLD
    _, server = serve(*messages)
    async with server:
        await fetch(server.port, tmp_path, batch_octets=40_004)
    assert batch_sizes == [2, 2, 1]
    assert saved(tmp_path) == sorted(map(unix, messages))


async def test_after_a_fetch_nothing_is_left_pending(tmp_path: Path) -> None:
    """Each batch is marked delivered by the next transaction, the last by a final one."""
    messages = [b"Subject: %d\r\n\r\nbody\r\n" % i for i in range(5)] + [BIG]
    _, server = serve(*messages)
    async with server:
        result = await fetch(server.port, tmp_path, batch_messages=2)
    assert len(result.delivered) == 6
    state = await DeliveryState.open(tmp_path / STATE_FILE)
    try:
        assert await state.pending(ACCOUNT) == []
        assert len(await state.known(ACCOUNT)) == 6
    finally:
        await state.close()


async def test_messages_are_written_in_groups_few_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fetch_run, "MAX_WRITES", 2)
    monkeypatch.setattr(fetch_run, "WRITE_GROUP", 3)
    real = Maildir.write_all_bytes
    groups: list[int] = []
    running = most = 0

    async def write_all_bytes(self: Maildir, messages: Sequence[bytes]) -> list[str]:
        nonlocal running, most
        groups.append(len(messages))
        running += 1
        most = max(most, running)
        try:
            await asyncio.sleep(0.02)  # slow enough for the next group to wait
            return await real(self, messages)
        finally:
            running -= 1

    monkeypatch.setattr(Maildir, "write_all_bytes", write_all_bytes)
    messages = [b"m%d\r\n" % i for i in range(10)]
    _, server = serve(*messages)
    async with server:
        await fetch(server.port, tmp_path)
    assert saved(tmp_path) == sorted(map(unix, messages))
    assert groups == [3, 3, 3, 1]
    assert most == 2


@pytest.mark.parametrize(
    ("name", "value"), [("batch_messages", 0), ("batch_octets", 0), ("memory", 0)]
)
async def test_nonsense_sizes_are_refused_before_anything_happens(
    tmp_path: Path, name: str, value: int
) -> None:
    client = aiopop.POP3("127.0.0.1", 1)
    options: dict[str, Any] = {name: value}
    with pytest.raises(ValueError, match=f"^{name} must be at least 1$"):
        await fetch_to_maildir(client, tmp_path, account=ACCOUNT, **options)
    assert not (tmp_path / "new").exists()


def test_the_window_keeps_the_queued_messages_within_memory() -> None:
    client = aiopop.POP3("h", max_in_flight=100)
    assert fetch_module._window(client, [8000] * 5, 32 * 1024 * 1024) == 200
    assert fetch_module._window(client, [1_000_000, 10], 8_000_000) == 8
    assert fetch_module._window(client, [50_000_000], 8_000_000) == 1
    assert fetch_module._window(client, [], 100) == 100
    assert fetch_module._window(client, [0], 10) == 10


async def test_messages_over_max_message_size_are_streamed(tmp_path: Path) -> None:
    _, server = serve(BIG, MESSAGES[0])
    async with server, aiopop.POP3("127.0.0.1", server.port, max_message_size=1000) as client:
        await client.login(USER, PASSWORD)
        result = await fetch_to_maildir(client, tmp_path, account=ACCOUNT)
    assert [d.number for d in result.delivered] == [2, 1]
    assert saved(tmp_path) == sorted(map(unix, [BIG, MESSAGES[0]]))


# -- deleting ---------------------------------------------------------------------------


async def test_delete_empties_the_server_at_quit(tmp_path: Path) -> None:
    mailbox, server = serve(*MESSAGES)
    async with server:
        result = await fetch(server.port, tmp_path, delete=True)
    assert sorted(result.marked) == [1, 2, 3, 4]
    assert mailbox.messages == []
    assert saved(tmp_path) == sorted(map(unix, MESSAGES))


async def test_delete_also_removes_what_an_earlier_run_kept(tmp_path: Path) -> None:
    mailbox, server = serve(*MESSAGES[:2])
    async with server:
        await fetch(server.port, tmp_path)  # kept on the server
        mailbox.add(b"Subject: third\r\n\r\n3\r\n")
        result = await fetch(server.port, tmp_path, delete=True, new_only=True)
    assert [d.number for d in result.delivered] == [3]
    assert result.marked == [1, 2, 3]
    assert mailbox.messages == []
    assert len(saved(tmp_path)) == 3


async def test_the_deletions_wait_for_quit(tmp_path: Path) -> None:
    mailbox, server = serve(*MESSAGES[:2])
    async with server:
        client = aiopop.POP3("127.0.0.1", server.port)
        await client.connect()
        await client.login(USER, PASSWORD)
        result = await fetch_to_maildir(client, tmp_path, account=ACCOUNT, delete=True)
        assert result.marked == [1, 2]
        await client.close()  # no QUIT: the server rolls back
        await server.wait_idle()
    assert len(mailbox.messages) == 2


async def test_a_refused_retr_is_noted_and_the_message_is_kept(tmp_path: Path) -> None:
    # The test server refuses RETR of a message with a non-ASCII header before UTF8.
    refused = "Subject: caf\u00e9\r\n\r\nbody\r\n".encode()
    messages = [MESSAGES[0], refused, MESSAGES[1], MESSAGES[3]]
    mailbox, server = serve(*messages)
    uids = list(mailbox.uids or ())
    async with server:
        result = await fetch(server.port, tmp_path, delete=True, new_only=True)
    assert [(r.number, r.uid) for r in result.refused] == [(2, uids[1])]
    assert result.refused[0].error.has_code("UTF8")
    assert result.marked == [1, 3, 4]
    assert mailbox.messages == [refused]
    assert saved(tmp_path) == sorted(map(unix, [MESSAGES[0], MESSAGES[1], MESSAGES[3]]))


async def test_a_refused_streamed_retr_is_noted_too(tmp_path: Path) -> None:
    refused = "Subject: \u00e9\r\n\r\n".encode() + b"x" * 20_000 + b"\r\n"
    mailbox, server = serve(refused, MESSAGES[0], BIG)
    async with server:
        result = await fetch(server.port, tmp_path, delete=True)
    assert [r.number for r in result.refused] == [1]
    assert result.refused[0].error.has_code("UTF8")
    assert result.marked == [2, 3]  # the big message after the refused one too
    assert mailbox.messages == [refused]


async def test_a_refusal_mid_pipeline_names_its_own_message(tmp_path: Path) -> None:
    refused = "Subject: caf\u00e9\r\n\r\nbody\r\n".encode()
    messages = [MESSAGES[0], MESSAGES[1], MESSAGES[3], refused, MESSAGES[0]]
    mailbox, server = serve(*messages)
    async with server:
        result = await fetch(server.port, tmp_path, delete=True)
    assert [r.number for r in result.refused] == [4]
    assert result.marked == [1, 2, 3, 5]
    assert mailbox.messages == [refused]


async def test_a_unique_id_the_server_repeats_is_never_deleted_unfetched(tmp_path: Path) -> None:
    mailbox = Mailbox(PASSWORD, [b"first\r\n", b"second\r\n"], uids=["same", "same"])
    async with POP3TestServer({USER: mailbox}) as server:
        result = await fetch(server.port, tmp_path, delete=True, new_only=True)
        assert ([d.number for d in result.delivered], result.skipped) == ([1], 1)
        assert result.marked == [1]
        # Alone in the listing now, "second" has the unique-id of "first" but another
        # size: another message, fetched (new_only notwithstanding), then deleted.
        again = await fetch(server.port, tmp_path, delete=True, new_only=True)
    assert ([d.number for d in again.delivered], again.skipped, again.marked) == ([1], 0, [1])
    assert mailbox.messages == []
    assert saved(tmp_path) == [b"first\n", b"second\n"]


async def test_a_reused_unique_id_of_the_same_size_is_taken_for_the_same_message(
    tmp_path: Path,
) -> None:
    """Sizes are the only evidence: equal sizes under one unique-id count as one message."""
    mailbox = Mailbox(PASSWORD, [b"first\r\n"], uids=["same"])
    async with POP3TestServer({USER: mailbox}) as server:
        await fetch(server.port, tmp_path, new_only=True)
        mailbox.messages[:] = [b"other\r\n"]  # as long as "first"
        again = await fetch(server.port, tmp_path, new_only=True)
    assert (again.delivered, again.skipped) == ([], 1)


# -- a server without UIDL ---------------------------------------------------------------


def script(*dialogue: tuple[bytes, bytes]) -> list[Step]:
    """A logged-in script: each command expected in turn, and its reply."""
    steps = list(LOGIN)
    for command, reply in dialogue:
        steps += [Expect(command), Send(reply)]
    return steps


NO_UIDL = (b"UIDL", b"-ERR unknown command\r\n")
LISTING = (b"LIST", b"+OK\r\n1 5\r\n2 5\r\n3 5\r\n.\r\n")


async def scripted_client(server: ScriptedServer) -> aiopop.POP3:
    """A client that sends one command at a time, in a fixed order."""
    client = aiopop.POP3(server.host, server.port, timeout=5, pipelining=False)
    await client.connect()
    await client.user("u")
    await client.pass_("p")
    return client


async def test_without_uidl_new_only_refuses_before_fetching(tmp_path: Path) -> None:
    async with ScriptedServer(script(NO_UIDL, LISTING)) as server:
        client = await scripted_client(server)
        with pytest.raises(UIDLUnavailableError, match="refuses UIDL") as caught:
            await fetch_to_maildir(client, tmp_path, account=ACCOUNT, new_only=True)
        await client.close()
    assert caught.value.refusal.command == "UIDL"
    assert isinstance(caught.value, aiopop.POP3Error)
    assert server.received[-2:] == [b"UIDL", b"LIST"]  # and no RETR
    assert server.mismatches == []
    assert saved(tmp_path) == []


async def test_without_uidl_everything_is_fetched_and_only_that_deleted(tmp_path: Path) -> None:
    dialogue = [NO_UIDL, LISTING]
    dialogue += [(b"RETR %d" % n, b"+OK\r\n%s\r\n.\r\n" % word) for n, word in NUMBERED]
    dialogue += [(b"DELE 1", b"+OK\r\n"), (b"DELE 2", b"-ERR [SYS/TEMP] cannot\r\n")]
    dialogue += [(b"DELE 3", b"+OK\r\n"), (b"QUIT", b"+OK\r\n")]
    async with ScriptedServer(script(*dialogue)) as server:
        client = await scripted_client(server)
        result = await fetch_to_maildir(client, tmp_path, account=ACCOUNT, delete=True)
        await client.quit()
    assert server.mismatches == []
    assert saved(tmp_path) == [b"one\n", b"three\n", b"two\n"]
    assert [d.uid for d in result.delivered] == [None, None, None]
    assert result.marked == [1, 3]
    assert [(r.number, r.uid, r.error.code) for r in result.refused] == [(2, None, "SYS/TEMP")]
    state = await DeliveryState.open(tmp_path / STATE_FILE)
    try:
        assert await state.known(ACCOUNT) == {}
    finally:
        await state.close()


NUMBERED = [(1, b"one"), (2, b"two"), (3, b"three")]


async def test_a_failing_list_is_raised(tmp_path: Path) -> None:
    async with ScriptedServer(script(NO_UIDL, (b"LIST", b"-ERR no\r\n"))) as server:
        client = await scripted_client(server)
        with pytest.raises(aiopop.ResponseError, match="no"):
            await fetch_to_maildir(client, tmp_path, account=ACCOUNT)
        await client.close()


async def test_a_broken_uidl_is_raised(tmp_path: Path) -> None:
    broken = (b"UIDL", b"+OK\r\nnonsense\r\n.\r\n")
    async with ScriptedServer(script(broken, LISTING)) as server:
        client = await scripted_client(server)
        with pytest.raises(aiopop.MalformedReplyError):
            await fetch_to_maildir(client, tmp_path, account=ACCOUNT)
        await client.close()


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
    assert os.listdir(tmp_path / "tmp") == []
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
