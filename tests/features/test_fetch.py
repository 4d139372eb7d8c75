"""fetch_to_maildir: what it saves, skips and deletes, with or without UIDL."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

import aiopop
from aiopop import _fetch_choose as fetch_module
from aiopop import _fetch_run as fetch_run
from aiopop._delivery_state import STATE_FILE, DeliveryState, StateLock
from aiopop._fetch import (
    UIDLUnavailableError,
    fetch_to_maildir,
)
from aiopop._maildir import Maildir
from aiopop.testing import (
    Mailbox,
    POP3TestServer,
    ScriptedServer,
)
from tests.helpers.fetch import (
    ACCOUNT,
    BIG,
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
)

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
        assert delivery.name is not None  # a Maildir's deliveries have files
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
