"""The engine (aiopop._engine): pipelining, batches, the queue, timeouts, bounds, malformed
replies, and the CAPA the engine asks itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import socket
import ssl
import threading
import time
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import pytest
import trustme

import aiopop
from aiopop.testing import (
    Close,
    Expect,
    Mailbox,
    POP3TestServer,
    ScriptedServer,
    Send,
    Sleep,
    Step,
    Trickle,
    WaitForClose,
)
from tests.helpers.engine import MESSAGES, PASSWORD, login, record_writes, reply, session
from tests.helpers.scripted import client_for, logged_in
from tests.helpers.tls import client_context, server_context


def keywords_after_login(server: POP3TestServer) -> list[str]:
    keywords = server.sessions[0].keywords
    return keywords[keywords.index("PASS") + 1 :]


# -- pipelining --------------------------------------------------------------------


async def test_retr_many_pipelines_when_offered_and_yields_in_order() -> None:
    async with session() as server:
        async with client_for(server) as client:
            await client.user("u")
            await client.pass_(PASSWORD)
            got = [item async for item in client.retr_many(range(1, 31))]
        assert got == list(enumerate(MESSAGES, 1))
        record = server.sessions[0]
        assert record.pipelined_any
        # CAPA was asked once, before the batch, to learn that it may pipeline.
        assert keywords_after_login(server) == ["CAPA", *["RETR"] * 30, "QUIT"]


async def test_gathered_commands_pipeline_and_each_caller_gets_its_reply() -> None:
    async with session() as server:
        client = client_for(server)
        await login(client)
        numbers = [3, 1, 2, 3, 30, 7] * 4
        results = await asyncio.gather(*(client.retr(n) for n in numbers))
        assert results == [MESSAGES[n - 1] for n in numbers]
        stat, listing, top = await asyncio.gather(client.stat(), client.list(), client.top(2, 0))
        assert stat.count == 30
        assert len(listing) == 30
        assert top == b"Subject: 2\r\n\r\n"
        await client.quit()
        assert server.sessions[0].pipelined_any
        # The first RETR went out alone; CAPA followed once, then the rest pipelined.
        keywords = keywords_after_login(server)
        assert keywords[:2] == ["RETR", "CAPA"]
        assert keywords.count("CAPA") == 1


@pytest.mark.parametrize("spelling", [(), ("PIPELINE",), ("X-PIPELINING",)])
async def test_never_pipelines_to_a_server_that_did_not_offer_it(
    spelling: tuple[str, ...],
) -> None:
    async with session(pipelining=False, extra_capabilities=spelling) as server:
        client = client_for(server)
        await login(client)
        got = [item async for item in client.retr_many(range(1, 31))]
        assert got == list(enumerate(MESSAGES, 1))
        results = await asyncio.gather(*(client.retr(n) for n in range(1, 11)))
        assert results == MESSAGES[:10]
        deleted = [n async for n in client.dele_many([1, 2, 3])]
        assert deleted == [1, 2, 3]
        await client.quit()
    # Proved on the wire: no command arrived before the reply to the one before it.
    assert server.sessions[0].pipelined == []
    assert server.sessions[0].quit


async def test_pipelining_can_be_forced_on_without_asking() -> None:
    async with session(pipelining=False) as server:
        client = client_for(server, pipelining=True)
        await login(client)
        assert [m async for _, m in client.retr_many([5, 6, 7])] == MESSAGES[4:7]
        await client.quit()
    assert server.sessions[0].pipelined_any
    assert "CAPA" not in server.sessions[0].keywords


async def test_pipelining_can_be_forced_off() -> None:
    async with session() as server:
        client = client_for(server, pipelining=False)
        await login(client)
        assert await asyncio.gather(*(client.retr(n) for n in (1, 2, 3))) == MESSAGES[:3]
        assert [m async for _, m in client.retr_many([4, 5])] == MESSAGES[3:5]
        await client.quit()
    assert server.sessions[0].pipelined == []
    assert "CAPA" not in server.sessions[0].keywords


async def test_capa_is_learned_per_session_state_and_cached() -> None:
    async with session() as server:
        client = client_for(server)
        await client.connect()
        # In AUTHORIZATION only CAPA itself could be pipelined: two at once ask first.
        first, second = await asyncio.gather(client.capa(), client.capa())
        assert first == second
        await client.user("u")
        await client.pass_(PASSWORD)
        for _ in range(3):
            await asyncio.gather(client.noop(), client.noop(), client.stat())
        [_ async for _ in client.retr_many([1, 2])]
        await client.quit()
    keywords = server.sessions[0].keywords
    after = keywords_after_login(server)
    # Learned again after login (capabilities may differ), then never asked again.
    assert after.count("CAPA") == 1
    assert keywords.count("CAPA") >= 3


async def test_an_explicit_capa_tells_the_engine_too() -> None:
    async with session() as server:
        client = client_for(server)
        await login(client)
        assert "PIPELINING" in await client.capa()
        await asyncio.gather(*(client.retr(n) for n in (1, 2, 3)))
        await client.quit()
    assert keywords_after_login(server) == ["CAPA", "RETR", "RETR", "RETR", "QUIT"]
    assert server.sessions[0].pipelined_any


async def test_session_changing_commands_are_never_pipelined() -> None:
    async with session() as server:
        client = client_for(server, pipelining=True)
        await client.connect()
        await asyncio.gather(client.capa(), client.capa(), client.user("u"))
        await client.pass_(PASSWORD)
        await asyncio.gather(client.stat(), client.noop(), client.quit())
    record = server.sessions[0]
    assert record.keywords == ["CAPA", "CAPA", "USER", "PASS", "STAT", "NOOP", "QUIT"]
    assert record.pipelined == [b"CAPA", b"NOOP"]
    assert record.quit


async def test_pipelined_commands_go_out_in_one_write() -> None:
    steps: list[Step] = [*[Expect(b"NOOP")] * 10, Send(b"+OK\r\n" * 10)]
    async with logged_in(steps, pipelining=True) as (server, client):
        writes = record_writes(client)
        assert await asyncio.gather(*(client.noop() for _ in range(10))) == [b"+OK"] * 10
    assert writes == [b"NOOP\r\n" * 10]
    assert server.mismatches == []


async def test_a_full_window_is_refilled_when_a_quarter_of_it_has_drained() -> None:
    """With max_in_flight=8: eight commands, then two more after every second reply."""
    ok = Send(b"+OK\r\n")
    pause = Sleep(0.05)  # each reply is read on its own
    steps: list[Step] = [Expect(b"NOOP")] * 8
    for _ in range(4):
        steps += [ok, pause, ok, Expect(b"NOOP"), Expect(b"NOOP")]
    steps += [ok, pause] * 8
    async with logged_in(steps, pipelining=True, max_in_flight=8) as (server, client):
        writes = record_writes(client)
        assert await asyncio.gather(*(client.noop() for _ in range(16))) == [b"+OK"] * 16
    assert writes == [b"NOOP\r\n" * 8] + [b"NOOP\r\n" * 2] * 4
    assert server.mismatches == []


async def test_max_in_flight_bounds_the_commands_on_the_wire() -> None:
    steps: list[Step] = [Expect(b"RETR %d" % n) for n in (1, 2, 3)]
    steps += [Sleep(0.3)]
    steps += [Send(reply(MESSAGES[n - 1])) for n in (1, 2, 3)]
    steps += [Expect(b"RETR 4"), Expect(b"RETR 5"), Send(reply(MESSAGES[3]) + reply(MESSAGES[4]))]
    async with logged_in(steps, pipelining=True, max_in_flight=3) as (server, client):
        tasks = [asyncio.create_task(client.retr(n)) for n in range(1, 6)]
        await asyncio.sleep(0.15)
        connection = client._connection
        assert connection is not None
        assert (connection.in_flight, connection.queued) == (3, 2)
        assert await asyncio.gather(*tasks) == MESSAGES[:5]
    assert server.mismatches == []


async def test_an_err_mid_batch_belongs_to_its_own_command() -> None:
    async with session() as server:
        client = client_for(server)
        await login(client)
        results = await asyncio.gather(
            client.retr(1), client.retr(99), client.retr(2), return_exceptions=True
        )
        assert results[0] == MESSAGES[0]
        assert isinstance(results[1], aiopop.ResponseError)
        assert results[1].command == "RETR"
        assert results[2] == MESSAGES[1]
        got = []

        async def collect() -> None:
            async for number, message in client.retr_many([3, 4, 99, 5]):
                got.append((number, message))

        with pytest.raises(aiopop.ResponseError, match="No such message"):
            await collect()
        assert got == [(3, MESSAGES[2]), (4, MESSAGES[3])]
        # The batch's remaining reply was read and dropped: the session is in step.
        assert await client.retr(6) == MESSAGES[5]
        await client.quit()


async def test_the_server_closing_mid_batch_fails_every_pending_command() -> None:
    steps: list[Step] = [Expect(b"RETR %d" % n) for n in (1, 2, 3)]
    steps += [Send(reply(MESSAGES[0]) + b"+OK\r\nhalf of the sec"), Close()]
    async with logged_in(steps, pipelining=True) as (_server, client):
        async with asyncio.timeout(5):
            results = await asyncio.gather(
                *(client.retr(n) for n in (1, 2, 3)), return_exceptions=True
            )
        assert results[0] == MESSAGES[0]
        assert all(isinstance(r, aiopop.ConnectionLostError) for r in results[1:])
        assert "RETR 2" in str(results[1]) or "RETR" in str(results[1])
        assert not client.is_connected


async def test_a_cancelled_task_inside_a_pipelined_group() -> None:
    steps: list[Step] = [Expect(b"RETR %d" % n) for n in (1, 2, 3)]
    steps += [Sleep(0.3), Send(b"".join(reply(MESSAGES[n - 1]) for n in (1, 2, 3)))]
    steps += [Expect(b"STAT"), Send(b"+OK 30 999\r\n")]
    async with logged_in(steps, pipelining=True) as (server, client):
        tasks = [asyncio.create_task(client.retr(n)) for n in (1, 2, 3)]
        await asyncio.sleep(0.1)
        tasks[1].cancel()
        assert await tasks[0] == MESSAGES[0]
        with pytest.raises(asyncio.CancelledError):
            await tasks[1]
        # RETR 2's reply was read and dropped, never handed to RETR 3.
        assert await tasks[2] == MESSAGES[2]
        assert (await client.stat()).count == 30
    assert server.mismatches == []


async def test_a_cancelled_queued_command_is_never_sent() -> None:
    async with session() as server:
        client = client_for(server, pipelining=False)
        await login(client)
        first = asyncio.create_task(client.retr(1))
        second = asyncio.create_task(client.retr(2))
        third = asyncio.create_task(client.retr(3))
        await asyncio.sleep(0)
        second.cancel()
        assert await first == MESSAGES[0]
        assert await third == MESSAGES[2]
        with pytest.raises(asyncio.CancelledError):
            await second
        await client.quit()
    assert [line for line in server.sessions[0].lines if line.startswith(b"RETR")] == [
        b"RETR 1",
        b"RETR 3",
    ]


async def test_leaving_a_batch_early_cancels_the_rest_and_keeps_the_session() -> None:
    async with session() as server:
        client = client_for(server)
        await login(client)
        async with contextlib.aclosing(client.retr_many(range(1, 31), window=10)) as batch:
            async for number, _ in batch:
                if number == 2:
                    break
        assert await client.retr(30) == MESSAGES[29]
        tops = [item async for item in client.top_many([1, 2], 0)]
        assert tops == [(1, b"Subject: 1\r\n\r\n"), (2, b"Subject: 2\r\n\r\n")]
        await client.quit()
    # At most the window went out; the rest was never sent.
    retrs = [line for line in server.sessions[0].lines if line.startswith(b"RETR")]
    assert len(retrs) <= 11


async def test_dele_many_marks_and_quit_commits() -> None:
    mailbox = Mailbox(PASSWORD, list(MESSAGES))
    async with POP3TestServer({"u": mailbox}, apop=False) as server:
        client = client_for(server)
        await login(client)
        assert [n async for n in client.dele_many(range(1, 11))] == list(range(1, 11))
        assert server.sessions[0].lines[-10:] == [b"DELE %d" % n for n in range(1, 11)]
        with pytest.raises(aiopop.ResponseError, match="already deleted"):
            [n async for n in client.dele_many([11, 1])]
        await client.quit()
    assert mailbox.messages == MESSAGES[11:]


async def test_batches_validate_numbers_before_sending() -> None:
    async with session() as server:
        client = client_for(server)
        await login(client)
        with pytest.raises(ValueError, match="message number"):
            [_ async for _ in client.retr_many([1, 0])]
        with pytest.raises(ValueError, match="line count"):
            [_ async for _ in client.top_many([1], -1)]
        assert await client.retr(2) == MESSAGES[1]
        await client.quit()


# -- timeouts ------------------------------------------------------------------------


async def test_a_slow_but_steady_message_outlives_the_timeout() -> None:
    piece = b"x" * 78 + b"\r\n"
    steps: list[Step] = [Expect(b"RETR 1"), Send(b"+OK\r\n")]
    for _ in range(12):  # 12 x 0.1 s = 1.2 s in all, with a 0.3 s timeout
        steps += [Send(piece * 100), Sleep(0.1)]
    steps += [Send(b".\r\n")]
    async with logged_in(steps, timeout=0.3) as (_server, client):
        assert await client.retr(1) == piece * 1200


async def test_a_stalled_message_times_out_at_the_timeout() -> None:
    steps: list[Step] = [Expect(b"RETR 1"), Send(b"+OK\r\nsome of it\r\n"), Sleep(5)]
    async with logged_in(steps, timeout=0.3) as (_server, client):
        started = time.monotonic()
        with pytest.raises(aiopop.POP3TimeoutError, match="no data") as info:
            await client.retr(1)
        assert time.monotonic() - started < 1.5
        assert isinstance(info.value, TimeoutError)
        assert not client.is_connected


async def test_a_stalled_listing_times_out_as_a_whole() -> None:
    # A listing that trickles a line now and then still has to finish in time.
    steps: list[Step] = [Expect(b"UIDL"), Send(b"+OK\r\n")]
    steps += [Trickle(b"%d uid%d\r\n" % (n, n), 0.01) for n in range(1, 40)]
    async with logged_in(steps, timeout=0.3) as (_server, client):
        with pytest.raises(aiopop.POP3TimeoutError, match="no complete reply"):
            await client.uidl()


async def test_a_cancelled_commands_leftovers_do_not_eat_the_next_commands_time() -> None:
    piece = b"y" * 78 + b"\r\n"
    steps: list[Step] = [Expect(b"RETR 1"), Send(b"+OK\r\n")]
    for _ in range(8):  # the rest of RETR 1 keeps coming for 0.8 s
        steps += [Send(piece * 50), Sleep(0.1)]
    steps += [Send(b".\r\n"), Expect(b"NOOP"), Send(b"+OK\r\n")]
    async with logged_in(steps, timeout=0.3) as (server, client):
        task = asyncio.create_task(client.retr(1))
        await asyncio.sleep(0.05)
        task.cancel()
        # NOOP waits behind RETR 1's leftovers (0.8 s, more than the timeout),
        # but its own clock only starts once they are read.
        assert await client.noop() == b"+OK"
    assert server.mismatches == []


@contextlib.contextmanager
def vanishing_tls_server(ca: trustme.CA, connections: int) -> Iterator[tuple[str, int, list[str]]]:
    """A TLS server that greets, accepts any USER and PASS, then never writes again.

    A blocking socket in a thread: unlike an asyncio server, nothing answers
    the client's TLS close_notify behind the test's back. It goes on reading
    and records how each connection ended: ``"close_notify"`` when the
    client closed TLS properly, ``"abrupt"`` when it just dropped TCP.
    """
    context = server_context(ca, "127.0.0.1")
    listener = socket.create_server(("127.0.0.1", 0))
    done = threading.Event()
    accepted: list[ssl.SSLSocket] = []
    endings: list[str] = []

    def serve() -> None:
        for _ in range(connections):
            raw, _ = listener.accept()
            conn = context.wrap_socket(raw, server_side=True, suppress_ragged_eofs=False)
            accepted.append(conn)
            conn.sendall(b"+OK ready\r\n")
            for _ in range(2):  # USER, PASS
                conn.recv(1024)
                conn.sendall(b"+OK\r\n")
            try:
                while conn.recv(1024):
                    pass  # read and never answer
                endings.append("close_notify")
            except OSError:
                endings.append("abrupt")
        done.wait(30)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield "127.0.0.1", listener.getsockname()[1], endings
    finally:
        done.set()
        thread.join(5)
        for conn in accepted:
            conn.close()
        listener.close()


async def test_timeout_error_is_prompt_and_close_does_not_wait_for_a_vanished_tls_peer(
    ca: trustme.CA,
) -> None:
    client_tls = client_context(ca)
    with vanishing_tls_server(ca, connections=2) as (host, port, endings):
        client = aiopop.POP3_SSL(host, port, ssl_context=client_tls, timeout=0.5)
        await client.connect()
        await client.user("u")
        await client.pass_("p")
        started = time.monotonic()
        with pytest.raises(aiopop.POP3TimeoutError):
            await client.stat()
        assert time.monotonic() - started < 1.4  # the timeout, not the timeout plus a close
        started = time.monotonic()
        await client.close()  # already aborted: returns at once
        assert time.monotonic() - started < 0.5

        # A peer that stops answering: close() sends close_notify and does not
        # wait for the peer's (RFC 8446 section 6.1).
        other = aiopop.POP3_SSL(host, port, ssl_context=client_tls)
        await other.connect()
        await other.user("u")
        await other.pass_("p")
        connection = other._connection
        assert connection is not None
        assert connection._transport is not None
        sock = connection._transport.get_extra_info("socket")
        started = time.monotonic()
        await other.close()
        assert time.monotonic() - started < 0.5
        assert sock.fileno() == -1  # really closed
        for _ in range(100):
            if len(endings) == 2:
                break
            await asyncio.sleep(0.02)
        # The timed-out session was aborted; the closed one said close_notify.
        assert endings == ["abrupt", "close_notify"]


# -- bounds --------------------------------------------------------------------------


@pytest.mark.slow
async def test_an_endless_listing_is_cut_off_with_memory_bounded() -> None:
    chunk = b"".join(b"%d %s\r\n" % (n, b"u" * 40) for n in range(1, 20001))  # ~1 MB
    steps: list[Step] = [Expect(b"UIDL"), Send(b"+OK\r\n")]
    steps += [Send(chunk)] * 20
    async with logged_in(steps, max_listing_size=1024 * 1024) as (_server, client):
        tracemalloc.start()
        try:
            with pytest.raises(aiopop.ProtocolError, match="listing larger than") as info:
                await client.uidl()
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert not isinstance(info.value, aiopop.MalformedReplyError)
        assert peak < 12 * 1024 * 1024
        assert not client.is_connected


async def test_a_listing_within_the_bound_is_fine() -> None:
    lines = b"".join(b"%d 100\r\n" % n for n in range(1, 1001))
    steps: list[Step] = [Expect(b"LIST"), Send(b"+OK\r\n" + lines + b".\r\n")]
    async with logged_in(steps, max_listing_size=len(lines)) as (_server, client):
        assert len(await client.list()) == 1000


@pytest.mark.slow
async def test_retr_holds_one_copy_of_a_message() -> None:
    size = 16 * 1024 * 1024
    message = (b"z" * 1022 + b"\r\n") * (size // 1024)
    steps: list[Step] = [Expect(b"RETR 1"), Send(b"+OK\r\n"), Send(message + b".\r\n")]
    async with logged_in(steps) as (_server, client):
        tracemalloc.start()
        try:
            got = await client.retr(1)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert got == message
        # The scripted server's copy is in there too; two client copies would reach 2x.
        assert peak < 1.6 * size


# -- malformed but well-framed replies keep the session ----------------------------


@pytest.mark.parametrize(
    ("verb", "answer", "call"),
    [
        (b"STAT", b"+OK abc\r\n", "stat"),
        (b"STAT", b"+OK\r\n", "stat"),
        (b"LIST 1", b"+OK 1\r\n", "list1"),
        (b"LIST 1", b"+OK 99 1024\r\n", "list1"),
        (b"UIDL 1", b"+OK 99 101\r\n", "uidl1"),
        (b"UIDL 1", b"+OK 1 bad\x7fuid\r\n", "uidl1"),
        (b"LIST", b"+OK\r\n1 120\r\ntwo 3\r\n.\r\n", "list"),
    ],
)
async def test_a_malformed_reply_raises_and_keeps_the_connection(
    verb: bytes, answer: bytes, call: str
) -> None:
    steps: list[Step] = [Expect(verb), Send(answer), Expect(b"NOOP"), Send(b"+OK\r\n")]
    async with logged_in(steps) as (server, client):
        calls: dict[str, Callable[[], Awaitable[object]]] = {
            "stat": client.stat,
            "list1": lambda: client.list(1),
            "uidl1": lambda: client.uidl(1),
            "list": client.list,
        }
        with pytest.raises(aiopop.MalformedReplyError):
            await calls[call]()
        assert client.is_connected
        assert await client.noop() == b"+OK"
    assert server.mismatches == []


async def test_list_n_and_uidl_n_must_answer_about_that_message() -> None:
    steps: list[Step] = [
        Expect(b"LIST 1"),
        Send(b"+OK 99 1024\r\n"),
        Expect(b"UIDL 1"),
        Send(b"+OK 99 101\r\n"),
        Expect(b"LIST 2"),
        Send(b"+OK 2 55\r\n"),
    ]
    async with logged_in(steps) as (_server, client):
        with pytest.raises(
            aiopop.MalformedReplyError, match="LIST 1 was answered about message 99"
        ):
            await client.list(1)
        with pytest.raises(
            aiopop.MalformedReplyError, match="UIDL 1 was answered about message 99"
        ):
            await client.uidl(1)
        assert await client.list(2) == aiopop.ListEntry(2, 55)


# -- odd corners -----------------------------------------------------------------------


async def test_a_server_refusing_capa_gets_one_command_at_a_time() -> None:
    # popa3d and other RFC 1939 servers answer CAPA with -ERR: no pipelining.
    steps: list[Step] = [Expect(b"RETR 1"), Send(reply(MESSAGES[0])), Expect(b"CAPA")]
    steps += [Send(b"-ERR unknown command\r\n")]
    for n in (2, 3):
        steps += [Expect(b"RETR %d" % n), Sleep(0.05), Send(reply(MESSAGES[n - 1]))]
    steps += [Expect(b"CAPA"), Send(b"-ERR unknown command\r\n")]
    async with logged_in(steps) as (server, client):
        assert await asyncio.gather(*(client.retr(n) for n in (1, 2, 3))) == MESSAGES[:3]
        # An RFC 1939 server's -ERR to CAPA is an answer, not an error.
        caps = await client.capa()
        assert not caps.announced
        assert caps == aiopop.Capabilities(announced=False)
        assert not caps.pipelining
    assert server.mismatches == []


async def test_a_queued_command_the_session_does_not_allow_fails_alone() -> None:
    async with session() as server:
        client = client_for(server)
        await client.connect()
        user, stat = await asyncio.gather(client.user("u"), client.stat(), return_exceptions=True)
        assert user == b"+OK Send the password with PASS"
        assert isinstance(stat, aiopop.CommandStateError)
        await client.pass_(PASSWORD)
        assert (await client.stat()).count == 30
        await client.quit()
    assert "STAT" not in server.sessions[0].keywords[:2]


async def test_a_stream_whose_connection_drops_before_its_status_line() -> None:
    steps: list[Step] = [Expect(b"RETR 1"), Close()]
    async with logged_in(steps) as (_server, client):
        with pytest.raises(aiopop.ConnectionLostError):
            async with client.retr_stream(1):
                pytest.fail("entered a stream without a status line")


async def test_batches_on_a_closed_client() -> None:
    async with session() as server:
        client = client_for(server)
        await login(client)
        await client.quit()
        with pytest.raises(aiopop.CommandStateError):
            [_ async for _ in client.retr_many([1])]
        with pytest.raises(aiopop.CommandStateError):
            [_ async for _ in client.dele_many([1])]


# -- batches: how far ahead they queue, what they leave behind ---------------------


class Counted:
    """Message numbers handed out one at a time, remembering how many were taken."""

    def __init__(self, numbers: range) -> None:
        self.numbers = numbers
        self.taken = 0

    def __iter__(self) -> Iterator[int]:
        for number in self.numbers:
            self.taken += 1
            yield number


async def test_batches_queue_a_window_of_commands_ahead_of_the_first_result() -> None:
    async with session() as server:
        client = client_for(server, max_in_flight=2)  # the default window is twice that
        await login(client)
        runs: list[tuple[str, int | None, Callable[[Counted, int | None], AsyncIterator[object]]]]
        runs = [
            ("retr", None, lambda n, w: client.retr_many(n, window=w)),
            ("retr", 3, lambda n, w: client.retr_many(n, window=w)),
            ("top", None, lambda n, w: client.top_many(n, 0, window=w)),
            ("top", 3, lambda n, w: client.top_many(n, 0, window=w)),
            ("dele", None, lambda n, w: client.dele_many(n, window=w)),
            ("dele", 2, lambda n, w: client.dele_many(n, window=w)),
        ]
        for name, window, batch in runs:
            numbers = Counted(range(1, 11))
            results: list[object] = []
            async for item in batch(numbers, window):
                if not results:
                    assert (name, numbers.taken) == (name, window or 4)
                results.append(item)
            assert numbers.taken == 10
            if name == "dele":
                assert results == list(range(1, 11))
                await client.rset()
            else:
                assert [item[0] for item in results] == list(range(1, 11))  # type: ignore[index]
        await client.quit()
    keywords = keywords_after_login(server)
    assert keywords.count("DELE") == 20
    assert keywords.count("TOP") == 20


async def test_leaving_a_failed_batch_leaves_no_exception_unretrieved() -> None:
    loop = asyncio.get_running_loop()
    reported: list[dict[str, object]] = []
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    steps: list[Step] = [Expect(b"RETR 1"), Expect(b"RETR 2"), Expect(b"RETR 3")]
    steps += [Send(reply(MESSAGES[0])), Close()]
    got: list[tuple[int, bytes]] = []

    async def collect(client: aiopop.POP3) -> None:
        async for item in client.retr_many([1, 2, 3]):
            got.append(item)

    try:
        async with logged_in(steps, pipelining=True) as (_server, client):
            with pytest.raises(aiopop.ConnectionLostError):
                await collect(client)
            assert got == [(1, MESSAGES[0])]
        gc.collect()
        await asyncio.sleep(0)
    finally:
        loop.set_exception_handler(None)
    assert reported == []


# -- the CAPA the engine asks itself ---------------------------------------------------


async def test_learn_pipelining_asks_once_and_says_what_it_learned() -> None:
    for offered in (True, False):
        async with session(pipelining=offered) as server:
            client = client_for(server)
            await login(client)
            connection = client._connection
            assert connection is not None
            # Two batches start at once: one CAPA answers both.
            first, second = await asyncio.gather(
                connection.learn_pipelining(), connection.learn_pipelining()
            )
            assert first is second is offered
            assert await connection.learn_pipelining() is offered  # cached: no CAPA
            await client.quit()
            assert await connection.learn_pipelining() is False  # closed: nothing to learn
        assert keywords_after_login(server) == ["CAPA", "QUIT"]
    # A CAPA that never gets its answer teaches nothing either.
    async with logged_in([Expect(b"CAPA"), Close()]) as (_server, client):
        connection = client._connection
        assert connection is not None
        assert await connection.learn_pipelining() is False
        assert not client.is_connected


async def test_concurrent_batches_share_one_capa() -> None:
    async with session() as server:
        client = client_for(server)
        await login(client)

        async def batch(numbers: list[int]) -> list[bytes]:
            return [message async for _, message in client.retr_many(numbers)]

        got = await asyncio.gather(batch([1, 2]), batch([3, 4]))
        assert list(got) == [MESSAGES[0:2], MESSAGES[2:4]]
        await client.quit()
    assert keywords_after_login(server) == ["CAPA", *["RETR"] * 4, "QUIT"]
    assert server.sessions[0].pipelined_any


async def test_a_blank_line_in_the_engines_capa_is_ignored() -> None:
    steps: list[Step] = [Expect(b"CAPA"), Send(b"+OK\r\nTOP\r\n \r\nPIPELINING\r\n.\r\n")]
    # Both RETRs are read before either is answered: they were pipelined.
    steps += [Expect(b"RETR 1"), Expect(b"RETR 2"), Send(reply(MESSAGES[0]) + reply(MESSAGES[1]))]
    async with logged_in(steps, timeout=2) as (server, client):
        got = [item async for item in client.retr_many([1, 2])]
        assert got == [(1, MESSAGES[0]), (2, MESSAGES[1])]
    assert server.mismatches == []


async def test_the_engines_capa_is_bounded_at_one_mebibyte() -> None:
    # 131 lines of 8,000 octets and one of 578, CRLFs counted: 2 octets too many.
    lines = (b"X-" + b"a" * 7996 + b"\r\n") * 131 + b"X-" + b"b" * 574 + b"\r\n"
    assert len(lines) == 1024 * 1024 + 2
    steps: list[Step] = [Expect(b"CAPA"), Send(b"+OK\r\n" + lines + b".\r\n"), WaitForClose()]
    async with logged_in(steps, timeout=5) as (_server, client):
        with pytest.raises(aiopop.ProtocolError, match="CAPA listing larger than 1048576 octets"):
            [_ async for _ in client.retr_many([1, 2])]
        assert not client.is_connected


async def test_a_listing_cancelled_mid_reply_is_read_and_dropped() -> None:
    steps: list[Step] = [Expect(b"UIDL"), Send(b"+OK\r\n1 one\r\n"), Sleep(0.3)]
    steps += [Send(b"2 two\r\n.\r\n"), Expect(b"STAT"), Send(b"+OK 2 300\r\n")]
    async with logged_in(steps, timeout=2) as (server, client):
        task = asyncio.create_task(client.uidl())
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await client.stat() == aiopop.Stat(2, 300)
        assert client.is_connected
    assert server.mismatches == []


# -- the queue: commands that drop out at their turn ---------------------------------


async def test_commands_cancelled_in_a_row_do_not_hold_up_the_next() -> None:
    steps: list[Step] = [Expect(b"NOOP"), Sleep(0.2), Send(b"+OK\r\n")]
    steps += [Expect(b"STAT"), Send(b"+OK 1 10\r\n")]
    async with logged_in(steps, pipelining=False) as (server, client):
        async with asyncio.timeout(2):
            tasks = [asyncio.create_task(client.noop()) for _ in range(3)]
            stat = asyncio.create_task(client.stat())
            await asyncio.sleep(0)
            tasks[1].cancel()
            tasks[2].cancel()
            assert await tasks[0] == b"+OK"
            assert await stat == aiopop.Stat(1, 10)
    assert server.received[-2:] == [b"NOOP", b"STAT"]
    assert server.mismatches == []


async def test_commands_refused_at_their_turn_in_a_row_do_not_hold_up_the_next() -> None:
    steps: list[Step] = [Send(b"+OK ready\r\n"), Expect(b"USER u"), Sleep(0.1), Send(b"+OK\r\n")]
    steps += [Expect(b"PASS p"), Send(b"+OK\r\n")]
    async with ScriptedServer(steps) as server:
        client = client_for(server, pipelining=False, timeout=2)
        await client.connect()
        async with asyncio.timeout(2):
            results = await asyncio.gather(
                client.user("u"),
                client.stat(),
                client.list(),
                client.pass_("p"),
                return_exceptions=True,
            )
        await client.close()
    assert results[0] == b"+OK"
    assert isinstance(results[1], aiopop.CommandStateError)
    assert isinstance(results[2], aiopop.CommandStateError)
    assert results[3] == b"+OK"
    assert server.received == [b"USER u", b"PASS p"]


# -- timeouts, more ----------------------------------------------------------------------


async def test_no_timeout_at_all() -> None:
    steps: list[Step] = [Expect(b"NOOP"), Sleep(0.1), Send(b"+OK\r\n")]
    steps += [Expect(b"RETR 1"), Send(reply(MESSAGES[0]))]
    async with logged_in(steps, timeout=None) as (server, client):
        assert await client.noop() == b"+OK"
        assert await client.retr(1) == MESSAGES[0]
    assert server.mismatches == []


async def test_an_idle_connection_outlives_its_timer_quietly() -> None:
    loop = asyncio.get_running_loop()
    reported: list[dict[str, object]] = []
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    steps: list[Step] = [Expect(b"NOOP"), Send(b"+OK\r\n"), Expect(b"NOOP"), Send(b"+OK\r\n")]
    try:
        async with logged_in(steps, timeout=0.2) as (_server, client):
            assert await client.noop() == b"+OK"
            await asyncio.sleep(0.4)  # the timer armed for that NOOP fires with nothing to do
            assert client.is_connected
            assert await client.noop() == b"+OK"
    finally:
        loop.set_exception_handler(None)
    assert reported == []


async def test_each_command_gets_the_whole_timeout_from_its_own_start() -> None:
    # The timer armed for the first NOOP fires while the second waits for its
    # reply: the second still has the rest of its own 0.6 s.
    steps: list[Step] = [Expect(b"NOOP"), Sleep(0.4), Send(b"+OK first\r\n")]
    steps += [Expect(b"NOOP"), Sleep(0.4), Send(b"+OK second\r\n")]
    async with logged_in(steps, timeout=0.6) as (server, client):
        assert await client.noop() == b"+OK first"
        await asyncio.sleep(0.1)
        assert await client.noop() == b"+OK second"
    assert server.mismatches == []


async def test_a_message_that_stalls_after_a_while_times_out() -> None:
    piece = b"s" * 78 + b"\r\n"
    steps: list[Step] = [Expect(b"RETR 1"), Send(b"+OK\r\n")]
    for _ in range(6):  # 0.6 s of steady data, twice the timeout, then silence
        steps += [Send(piece * 10), Sleep(0.1)]
    steps += [Sleep(5)]
    async with logged_in(steps, timeout=0.3) as (server, client):
        async with asyncio.timeout(3):
            with pytest.raises(aiopop.POP3TimeoutError) as info:
                await client.retr(1)
        assert str(info.value) == f"RETR: no data from {server.host}:{server.port} for 0.3 s"
        # The connection is gone, and says why.
        with pytest.raises(aiopop.POP3TimeoutError) as again:
            await client.noop()
        assert str(again.value) == f"the connection is closed: {info.value}"


@pytest.mark.parametrize("first", [b"NOOP", b"RETR 1"])
async def test_a_pipelined_command_times_out_counted_from_the_reply_before_it(
    first: bytes,
) -> None:
    answer = b"+OK\r\n" if first == b"NOOP" else reply(MESSAGES[0])
    steps: list[Step] = [Expect(first), Expect(b"RETR 2"), Send(answer), Sleep(5)]
    async with logged_in(steps, pipelining=True, timeout=0.3) as (server, client):
        call = client.noop() if first == b"NOOP" else client.retr(1)
        async with asyncio.timeout(3):
            results = await asyncio.gather(call, client.retr(2), return_exceptions=True)
        assert results[0] == (b"+OK" if first == b"NOOP" else MESSAGES[0])
        assert isinstance(results[1], aiopop.POP3TimeoutError)
        peer = f"{server.host}:{server.port}"
        assert str(results[1]) == f"RETR: no complete reply from {peer} within 0.3 s"


async def test_after_a_connect_timeout_the_client_says_so() -> None:
    async with ScriptedServer([Sleep(5)]) as server:
        client = client_for(server, timeout=0.2)
        with pytest.raises(aiopop.POP3TimeoutError) as info:
            await client.connect()
        assert str(info.value) == f"connecting to {server.host}:{server.port} timed out"
        with pytest.raises(aiopop.POP3TimeoutError, match=r"^the connection is closed: connecting"):
            await client.noop()
