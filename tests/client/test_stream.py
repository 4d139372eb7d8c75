"""Messages of any size: retr_stream and retr_to_file, memory bounded, nothing half-written."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import aiopop
from aiopop import _files
from aiopop._replies import STREAM_HIGH_WATER, StreamCall
from aiopop.testing import (
    Close,
    Expect,
    GeneratedMessage,
    Mailbox,
    POP3ServerFixture,
    POP3TestServer,
    ScriptedServer,
    Send,
    Sleep,
    Step,
    WaitForClose,
)
from tests.helpers.scripted import LOGIN, client_for, logged_in

PASSWORD = "secret"
SMALL = b"Subject: small\r\n\r\n.dot\r\n..two dots\r\nlast\r\n"


def stuffed(message: bytes) -> bytes:
    """``message`` as a RETR reply body on the wire: dot-stuffed, with the terminator."""
    lines = message.split(b"\r\n")[:-1]
    return (
        b"".join(
            b"." + line + b"\r\n" if line.startswith(b".") else line + b"\r\n" for line in lines
        )
        + b".\r\n"
    )


async def logged_in_client(server: POP3TestServer, **options: object) -> aiopop.POP3:
    client = client_for(server, **options)
    await client.connect()
    await client.user("u")
    await client.pass_(PASSWORD)
    return client


def leftovers(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.iterdir())


# -- retr_stream ---------------------------------------------------------------------


@pytest.mark.slow
async def test_a_100_mb_message_streams_with_bounded_memory(pop3_server: POP3ServerFixture) -> None:
    message = GeneratedMessage(100 * 1024 * 1024, seed=7)
    server = (
        await pop3_server.start(mailboxes={"u": Mailbox(PASSWORD, [message])}, apop=False)
    ).server
    client = await logged_in_client(server)
    digest = hashlib.sha256()
    tracemalloc.start()
    try:
        async with client.retr_stream(1) as stream:
            async for chunk in stream:
                digest.update(chunk)
            assert stream.complete
            assert stream.received == message.size
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # Server and client together, in one process: a few MiB, not 100.
    assert peak < 16 * 1024 * 1024
    assert digest.hexdigest() == message.sha256()
    assert (await client.stat()).size == message.size
    await client.quit()


async def test_stream_equals_retr_and_others_can_run_alongside(
    pop3_server: POP3ServerFixture,
) -> None:
    messages: list[bytes | GeneratedMessage] = [SMALL, GeneratedMessage(300_000).head(10_000)]
    server = (
        await pop3_server.start(mailboxes={"u": Mailbox(PASSWORD, messages)}, apop=False)
    ).server
    client = await logged_in_client(server)
    for number, message in enumerate(messages, 1):
        async with client.retr_stream(number) as stream:
            chunks = [chunk async for chunk in stream]
        assert b"".join(chunks) == message == await client.retr(number)

    async def streamed() -> bytes:
        async with client.retr_stream(2) as stream:
            return b"".join([chunk async for chunk in stream])

    got, stat, first = await asyncio.gather(streamed(), client.stat(), client.retr(1))
    assert (got, stat.count, first) == (messages[1], 2, SMALL)
    await client.quit()


async def test_batches_hand_out_the_same_octets_in_fewer_steps(
    pop3_server: POP3ServerFixture,
) -> None:
    big = GeneratedMessage(2 * 1024 * 1024, seed=2)
    server = (await pop3_server.start(mailboxes={"u": Mailbox(PASSWORD, [big])}, apop=False)).server
    client = await logged_in_client(server)
    digest = hashlib.sha256()
    steps = chunks = 0
    async with client.retr_stream(1) as stream:
        await asyncio.sleep(0.2)  # let several chunks queue up
        async for batch in stream.batches():
            assert batch
            steps += 1
            chunks += len(batch)
            for chunk in batch:
                digest.update(chunk)
        assert stream.complete
    assert digest.hexdigest() == big.sha256()
    assert steps < chunks
    await client.quit()


async def test_an_err_raises_on_entering_the_stream(pop3_server: POP3ServerFixture) -> None:
    server = (
        await pop3_server.start(mailboxes={"u": Mailbox(PASSWORD, [SMALL])}, apop=False)
    ).server
    client = await logged_in_client(server)
    with pytest.raises(aiopop.ResponseError, match="No such message"):
        async with client.retr_stream(5):
            pytest.fail("entered a stream of a message that does not exist")
    assert await client.retr(1) == SMALL
    await client.quit()


@pytest.mark.parametrize("how", ["break", "raise"])
async def test_leaving_a_stream_early_keeps_the_session_in_step(
    how: str, pop3_server: POP3ServerFixture
) -> None:
    big = GeneratedMessage(3 * 1024 * 1024, seed=3)
    server = (
        await pop3_server.start(mailboxes={"u": Mailbox(PASSWORD, [big, SMALL])}, apop=False)
    ).server
    client = await logged_in_client(server)

    async def read_one_chunk() -> None:
        async with client.retr_stream(1) as stream:
            async for _ in stream:
                if how == "raise":
                    raise KeyError("the consumer failed")
                break
            assert not stream.complete

    if how == "raise":
        with pytest.raises(KeyError):
            await read_one_chunk()
    else:
        await read_one_chunk()
    # The rest of message 1 is read and dropped; message 2 is message 2.
    assert await client.retr(2) == SMALL
    assert client.is_connected
    await client.quit()


async def test_a_slow_consumer_pauses_reading_and_never_times_out(
    pop3_server: POP3ServerFixture,
) -> None:
    big = GeneratedMessage(12 * 1024 * 1024, seed=4)  # three times the 4 MiB high water
    server = (await pop3_server.start(mailboxes={"u": Mailbox(PASSWORD, [big])}, apop=False)).server
    client = await logged_in_client(server, timeout=0.2)
    connection = client._connection
    assert connection is not None
    paused_seen = False
    digest = hashlib.sha256()
    async with client.retr_stream(1) as stream:
        async for index, chunk in _enumerate(stream):
            digest.update(chunk)
            paused_seen = paused_seen or connection._paused
            if index < 4:
                await asyncio.sleep(0.3)  # longer than the timeout, while paused
    assert paused_seen
    assert digest.hexdigest() == big.sha256()
    await client.quit()


async def _enumerate(stream: aiopop.MessageStream) -> AsyncIterator[tuple[int, bytes]]:
    index = 0
    async for chunk in stream:
        yield index, chunk
        index += 1


WIRE = b"+OK\r\n" + stuffed(SMALL)


@pytest.mark.parametrize("cut", [*range(1, 12), *range(len(WIRE) - 9, len(WIRE))])
async def test_the_terminator_split_at_every_offset_while_streaming(cut: int) -> None:
    steps: list[Step] = [Expect(b"RETR 1"), Send(WIRE[:cut]), Sleep(0.02), Send(WIRE[cut:])]
    steps += [Expect(b"RETR 1"), Send(WIRE[:cut]), Sleep(0.02), Send(WIRE[cut:])]
    steps += [Expect(b"NOOP"), Send(b"+OK\r\n")]
    async with logged_in(steps, timeout=2) as (server, client):
        async with client.retr_stream(1) as stream:
            assert b"".join([chunk async for chunk in stream]) == SMALL
        assert await client.retr(1) == SMALL
        assert await client.noop() == b"+OK"
    assert server.mismatches == []


async def test_a_stream_fails_when_the_connection_drops_or_is_closed() -> None:
    got: list[bytes] = []

    async def consume(client: aiopop.POP3, close: bool) -> None:
        async with client.retr_stream(1) as stream:
            async for chunk in stream:
                got.append(chunk)
                if close:
                    await client.close()

    steps: list[Step] = [Expect(b"RETR 1"), Send(b"+OK\r\nSubject: x\r\n\r\nhalf"), Close()]
    async with logged_in(steps) as (_server, client):
        with pytest.raises(aiopop.ConnectionLostError):
            await consume(client, close=False)
    steps = [Expect(b"RETR 1"), Send(b"+OK\r\nSubject: x\r\n\r\nhalf"), WaitForClose()]
    async with logged_in(steps) as (_server, client):
        got.clear()
        with pytest.raises(aiopop.ConnectionClosedError):
            await consume(client, close=True)
        assert got == [b"Subject: x\r\n\r\nhalf"]


# -- retr_to_file ----------------------------------------------------------------------


@pytest.mark.parametrize("fsync", [True, False])
async def test_retr_to_file_writes_the_whole_message(
    tmp_path: Path, fsync: bool, pop3_server: POP3ServerFixture
) -> None:
    big = GeneratedMessage(3 * 1024 * 1024, seed=5)
    server = (
        await pop3_server.start(mailboxes={"u": Mailbox(PASSWORD, [big, SMALL])}, apop=False)
    ).server
    client = await logged_in_client(server)
    target = tmp_path / "one.eml"
    assert await client.retr_to_file(1, target, fsync=fsync) == big.size
    assert hashlib.sha256(target.read_bytes()).hexdigest() == big.sha256()
    assert await client.retr_to_file(2, str(tmp_path / "two.eml")) == len(SMALL)
    assert (tmp_path / "two.eml").read_bytes() == SMALL
    assert leftovers(tmp_path) == ["one.eml", "two.eml"]
    await client.quit()


async def test_retr_to_file_replaces_a_file_only_when_complete(tmp_path: Path) -> None:
    target = tmp_path / "mail.eml"
    target.write_bytes(b"the old content")
    steps: list[Step] = [Expect(b"RETR 1"), Send(b"+OK\r\nnew but cut sh"), Close()]
    async with logged_in(steps) as (_server, client):
        with pytest.raises(aiopop.ConnectionLostError):
            await client.retr_to_file(1, target)
    assert target.read_bytes() == b"the old content"
    assert leftovers(tmp_path) == ["mail.eml"]
    async with POP3TestServer({"u": Mailbox(PASSWORD, [SMALL])}, apop=False) as server:
        client = await logged_in_client(server)
        await client.retr_to_file(1, target)
        await client.quit()
    assert target.read_bytes() == SMALL


async def test_retr_to_file_leaves_nothing_when_the_connection_drops(tmp_path: Path) -> None:
    steps: list[Step] = [Expect(b"RETR 1"), Send(b"+OK\r\n" + b"x" * 300_000), Close()]
    async with logged_in(steps) as (_server, client):
        with pytest.raises(aiopop.ConnectionLostError):
            await client.retr_to_file(1, tmp_path / "cut.eml")
    assert leftovers(tmp_path) == []


async def test_retr_to_file_leaves_nothing_when_cancelled(tmp_path: Path) -> None:
    script: list[Step] = [*LOGIN, Expect(b"RETR 1"), Send(b"+OK\r\n" + b"y" * 100_000)]
    script += [Sleep(0.5), Send(b"\r\n.\r\n"), Expect(b"NOOP"), Send(b"+OK\r\n")]
    async with ScriptedServer(script) as server:
        client = client_for(server)
        await client.connect()
        await client.user("u")
        await client.pass_("p")
        task = asyncio.create_task(client.retr_to_file(1, tmp_path / "cancelled.eml"))
        await asyncio.sleep(0.2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert leftovers(tmp_path) == []
        assert await client.noop() == b"+OK"  # the rest was read and dropped
        await client.close()
    assert server.mismatches == []


async def test_retr_to_file_with_err_creates_nothing(
    tmp_path: Path, pop3_server: POP3ServerFixture
) -> None:
    server = (
        await pop3_server.start(mailboxes={"u": Mailbox(PASSWORD, [SMALL])}, apop=False)
    ).server
    client = await logged_in_client(server)
    with pytest.raises(aiopop.ResponseError):
        await client.retr_to_file(2, tmp_path / "none.eml")
    with pytest.raises(FileNotFoundError):
        await client.retr_to_file(1, tmp_path / "no" / "such" / "dir.eml")
    assert leftovers(tmp_path) == []
    assert await client.retr(1) == SMALL
    await client.quit()


async def test_retr_to_file_starts_writeback_as_the_message_arrives(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    advised: list[tuple[int, int, int]] = []

    async def advise(fd: int, offset: int, length: int, advice: int) -> None:
        advised.append((offset, length, advice))

    step = 1024 * 1024
    monkeypatch.setattr(_files, "WRITEBACK_EVERY", step)
    monkeypatch.setattr(_files, "_advise", advise)
    big = GeneratedMessage(12 * 1024 * 1024, seed=6)
    async with POP3TestServer({"u": Mailbox(PASSWORD, [big])}, apop=False) as server:
        client = await logged_in_client(server)
        await client.retr_to_file(1, tmp_path / "a.eml")
        assert len(advised) >= 2
        # Consecutive ranges from 0, each at least a step; what is left for the
        # final fsync is less than a step and one batch (at most the stream's
        # high water plus one read).
        offset = 0
        for start, length, advice in advised:
            assert (start, advice) == (offset, _files._DONTNEED)
            assert length >= step
            offset += length
        assert big.size - step - STREAM_HIGH_WATER - 256 * 1024 < offset <= big.size
        advised.clear()
        await client.retr_to_file(1, tmp_path / "b.eml", fsync=False)
        assert advised == []  # without fsync the page cache is left alone
        await client.quit()
    assert hashlib.sha256((tmp_path / "a.eml").read_bytes()).hexdigest() == big.sha256()


# -- what a stream says about itself -------------------------------------------------


async def test_a_stream_counts_what_arrived_and_knows_when_it_is_complete() -> None:
    steps: list[Step] = [Expect(b"RETR 1"), Send(b"+OK\r\nSubject: one\r\n"), Sleep(0.05)]
    steps += [Send(b"\r\nbody\r\n"), Sleep(0.05), Send(b"..dot\r\n.\r\n")]
    async with logged_in(steps, timeout=2) as (server, client):
        async with client.retr_stream(1) as stream:
            assert stream.complete is False
            chunks = [chunk async for chunk in stream]
            assert stream.complete is True
        assert len(chunks) >= 2
        assert b"".join(chunks) == b"Subject: one\r\n\r\nbody\r\n.dot\r\n"
        assert stream.received == len(b"Subject: one\r\n\r\nbody\r\n.dot\r\n")
    assert server.mismatches == []


async def test_a_failed_stream_never_claims_to_be_complete() -> None:
    steps: list[Step] = [Expect(b"RETR 1"), Send(b"+OK\r\nSubject: x\r\n\r\nhalf"), Close()]
    async with logged_in(steps) as (_server, client):
        async with client.retr_stream(1) as stream:
            with pytest.raises(aiopop.ConnectionLostError) as info:
                await _drain(stream)
            assert stream.complete is False
            assert stream.received == len(b"Subject: x\r\n\r\nhalf")
        # Asked again, it fails again: it does not end as if the message were whole.
        with pytest.raises(aiopop.ConnectionLostError) as again:
            await stream.__anext__()
        assert again.value is info.value
        assert [batch async for batch in _batches_or_error(stream)] == ["error"]
        assert stream.complete is False


async def _drain(stream: aiopop.MessageStream) -> int:
    """Read ``stream`` to its end; return how many octets it had."""
    return sum([len(chunk) async for chunk in stream])


async def _batches_or_error(stream: aiopop.MessageStream) -> AsyncIterator[object]:
    try:
        async for batch in stream.batches():
            yield batch
    except aiopop.ConnectionLostError:
        yield "error"


async def test_leaving_a_big_stream_early_drops_the_rest_without_pausing(
    pop3_server: POP3ServerFixture,
) -> None:
    # More than the high water is still to come when the consumer leaves: it
    # must be dropped as it arrives, not queued until reading pauses for good.
    big = GeneratedMessage(3 * STREAM_HIGH_WATER // 2, seed=8)
    server = (
        await pop3_server.start(mailboxes={"u": Mailbox(PASSWORD, [big, SMALL])}, apop=False)
    ).server
    client = await logged_in_client(server, timeout=2)
    async with asyncio.timeout(5):
        async with client.retr_stream(1) as stream:
            async for _ in stream:
                break
        assert await client.retr(2) == SMALL
    assert stream.received == big.size
    await client.quit()


async def test_a_stream_stalled_after_a_pause_still_times_out() -> None:
    # 4 MiB + 1 octet: reading pauses only once all of it has arrived.
    content = (b"p" * 1022 + b"\r\n") * 4095 + b"q" * 1023 + b"\r\n"
    assert len(content) == STREAM_HIGH_WATER + 1
    steps: list[Step] = [Expect(b"RETR 1"), Send(b"+OK\r\n" + content), Sleep(5)]
    async with logged_in(steps, timeout=0.3) as (server, client):
        connection = client._connection
        assert connection is not None
        async with asyncio.timeout(3):
            async with client.retr_stream(1) as stream:
                await asyncio.sleep(0.6)  # twice the timeout, paused: the consumer is slow
                assert connection._paused
                assert client.is_connected
                with pytest.raises(aiopop.POP3TimeoutError) as info:
                    await _drain(stream)
                assert stream.received == len(content)
        assert str(info.value) == f"RETR: no data from {server.host}:{server.port} for 0.3 s"


# -- retr_each: pipelined streams under one memory budget ------------------------------------


async def test_retr_each_collects_small_messages_and_streams_the_rest() -> None:
    big = GeneratedMessage(300_000, seed=3)
    mailbox = Mailbox(PASSWORD, [SMALL, big, SMALL])
    async with POP3TestServer({"u": mailbox}, pipelining=True) as server:
        client = await logged_in_client(server)
        got: list[tuple[int, bytes | None, bytes]] = []
        async with contextlib.aclosing(client.retr_each([1, 2, 3], memory=100_000)) as items:
            async for number, stream in items:
                whole = await stream.collect(10_000)
                rest = b"" if whole is not None else b"".join([c async for c in stream])
                got.append((number, whole, rest))
        await client.quit()
    assert got[0] == (1, SMALL, b"")
    assert (got[1][0], got[1][1]) == (2, None)
    assert hashlib.sha256(got[1][2]).hexdigest() == big.sha256()
    assert got[2] == (3, SMALL, b"")
    assert len(server.sessions[0].pipelined) >= 2  # the RETRs went out together


async def test_retr_each_drops_what_is_left_unread_and_stays_in_step(
    pop3_server: POP3ServerFixture,
) -> None:
    big = GeneratedMessage(200_000, seed=4)
    mailbox = Mailbox(PASSWORD, [big, SMALL])
    server = (await pop3_server.start(mailboxes={"u": mailbox}, pipelining=True)).server
    client = await logged_in_client(server)
    seen = []
    async for number, stream in client.retr_each([1, 2], memory=50_000):
        seen.append((number, await stream.collect(1_000)))  # the big one: left unread
    assert seen == [(1, None), (2, SMALL)]
    assert await client.noop()  # the session is in step
    await client.quit()


async def test_retr_each_pauses_reading_past_its_budget() -> None:
    """Held octets stay near the budget while the consumer does not read."""
    messages = [GeneratedMessage(100_000, seed=i) for i in range(8)]
    async with POP3TestServer({"u": Mailbox(PASSWORD, list(messages))}) as server:
        client = await logged_in_client(server, pipelining=True)
        items = client.retr_each(range(1, 9), memory=150_000)
        _, stream = await anext(items)
        await asyncio.sleep(0.2)  # the consumer is busy; the server could send it all
        source = stream._source
        assert isinstance(source, StreamCall)
        budget = source.budget
        held = budget.held
        assert held <= budget.high + 300_000  # a socket read or two past the bound
        assert held < 800_000
        data = await stream.collect(200_000)
        assert data is not None
        assert hashlib.sha256(data).hexdigest() == messages[0].sha256()
        async with asyncio.timeout(10):  # a deadlock fails here, rather than hangs
            rest = [m async for m in _collected(items)]
        await client.quit()
    assert [hashlib.sha256(d).hexdigest() for d in rest] == [m.sha256() for m in messages[1:]]


async def _collected(
    items: AsyncIterator[tuple[int, aiopop.MessageStream]],
) -> AsyncIterator[bytes]:
    async for _, stream in items:
        data = await stream.collect(120_000)  # at most the budget: never a pause to wait on
        assert data is not None
        yield data


async def test_retr_each_raises_a_refusal_in_its_turn() -> None:
    steps: list[Step] = [
        Expect(b"RETR 1"),
        Send(b"+OK\r\n" + stuffed(SMALL)),
        Expect(b"RETR 2"),
        Send(b"-ERR no such message\r\n"),
    ]
    async with logged_in(steps, pipelining=False) as (server, client):
        items = client.retr_each([1, 2])
        number, stream = await anext(items)
        assert (number, await stream.collect(100)) == (1, SMALL)
        with pytest.raises(aiopop.ResponseError, match="no such message"):
            await anext(items)
    assert server.mismatches == []
    with pytest.raises(ValueError, match="memory"):
        await anext(client.retr_each([1], memory=0))


class _ListSource:
    """A MessageSource over a list of chunks: what a stream needs, and nothing of a connection."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = list(chunks)
        self.received = sum(map(len, chunks))
        self.ended = True
        self.error: BaseException | None = None
        self.abandoned = False

    async def next_chunks(self, most: int | None) -> list[bytes]:
        count = len(self.chunks) if most is None else most
        taken, self.chunks = self.chunks[:count], self.chunks[count:]
        return taken

    async def wait(self) -> None:
        await asyncio.sleep(0)

    def read_on(self) -> None:
        pass

    def abandon(self) -> None:
        self.abandoned = True
        self.chunks.clear()


def test_message_stream_is_public_under_the_root() -> None:
    from aiopop import _stream

    assert aiopop.MessageStream is _stream.MessageStream
    assert aiopop.MessageSource is _stream.MessageSource
    assert aiopop.MessageStream.__module__ == "aiopop"


async def test_a_message_stream_reads_any_message_source() -> None:
    chunks = [b"Subject: x\r\n", b"\r\n", b"body\r\n"]
    assert [c async for c in aiopop.MessageStream(_ListSource(chunks))] == chunks
    assert [b async for b in aiopop.MessageStream(_ListSource(chunks)).batches()] == [chunks]
    stream = aiopop.MessageStream(_ListSource(chunks))
    assert stream.complete
    assert stream.received == 20
    assert repr(stream) == "<MessageStream complete, 20 octets received>"
    assert await stream.collect(19) is None
    assert await stream.collect(20) == b"".join(chunks)
    source = _ListSource(chunks)
    aiopop.MessageStream(source).discard()
    assert source.abandoned
