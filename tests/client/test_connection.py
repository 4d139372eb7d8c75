"""The connection (aiopop._connection): close and connect, bare LF servers, the connection
ending, and TCP_QUICKACK.
"""

from __future__ import annotations

import asyncio
import socket
import time

import pytest
import trustme

import aiopop
from aiopop import _connection
from aiopop.testing import (
    Close,
    Expect,
    ScriptedServer,
    Send,
    Sleep,
    Step,
    WaitForClose,
)
from tests.helpers.engine import MESSAGES, PASSWORD, login, record_writes, reply, session
from tests.helpers.scripted import client_for, logged_in
from tests.helpers.tls import client_context

# -- close and connect -----------------------------------------------------------------


async def test_close_while_another_task_runs_a_command() -> None:
    async with session() as server:
        client = client_for(server)

        async def fails() -> None:
            await asyncio.sleep(0)
            raise KeyError("the program failed")

        tasks: list[asyncio.Task[bytes]] = []

        async def program() -> None:
            async with client:
                await client.user("u")
                await client.pass_(PASSWORD)
                tasks.append(asyncio.create_task(client.retr(1)))
                await asyncio.gather(tasks[0], fails())

        with pytest.raises(KeyError):
            await program()
        [retr] = tasks
        with pytest.raises(aiopop.ConnectionClosedError, match="closed by this client"):
            await retr
        assert not server.sessions[0].quit


async def test_close_fails_every_pipelined_command_with_a_local_error() -> None:
    steps: list[Step] = [Expect(None), Expect(None), Expect(None), Sleep(5)]
    async with logged_in(steps, pipelining=True) as (_server, client):
        tasks = [asyncio.create_task(client.retr(n)) for n in (1, 2, 3, 4)]
        await asyncio.sleep(0.1)
        started = time.monotonic()
        await client.close()
        assert time.monotonic() - started < 1.5
        for task in tasks:
            with pytest.raises(aiopop.ConnectionClosedError):
                await task
        with pytest.raises(aiopop.CommandStateError, match="not connected"):
            await client.noop()


async def test_a_second_connect_while_connecting_is_refused_at_once() -> None:
    async with ScriptedServer([Sleep(0.2), Send(b"+OK hello\r\n"), WaitForClose()]) as server:
        client = client_for(server)
        first = asyncio.create_task(client.connect())
        await asyncio.sleep(0.05)
        with pytest.raises(aiopop.CommandStateError, match=r"^connect\(\) is already in progress$"):
            await client.connect()
        assert await first == b"+OK hello"
        assert client.is_connected
        assert client.state is aiopop.State.AUTHORIZATION
        with pytest.raises(aiopop.CommandStateError, match=r"^already connected$"):
            await client.connect()
        await client.close()
    assert server.connections == 1


async def test_close_while_connecting() -> None:
    async with ScriptedServer([Sleep(5), Send(b"+OK late\r\n")]) as server:
        client = client_for(server)
        connecting = asyncio.create_task(client.connect())
        await asyncio.sleep(0.1)
        await client.close()
        with pytest.raises(aiopop.ConnectionClosedError, match="while connecting"):
            await connecting
        assert not client.is_connected


async def test_reconnect_after_close() -> None:
    async with session() as server:
        client = client_for(server)
        await login(client)
        await client.close()
        await login(client)
        assert (await client.stat()).count == 30
        await client.quit()
    assert len(server.sessions) == 2


async def test_the_server_closing_between_commands_is_noticed() -> None:
    async with logged_in([Close()]) as (_server, client):
        await asyncio.sleep(0.05)
        assert not client.is_connected
        with pytest.raises(aiopop.ConnectionLostError, match="closed the connection"):
            await client.noop()


# -- bare LF servers -----------------------------------------------------------------


async def test_a_server_that_ends_lines_with_a_bare_lf_works_throughout() -> None:
    script: list[Step] = [
        Send(b"+OK lax server\n"),
        Expect(b"USER u"),
        Send(b"+OK\n"),
        Expect(b"PASS p"),
        Send(b"+OK\n"),
        Expect(b"LIST"),
        Send(b"+OK 2 messages\n1 20\n2 30\n.\n"),
        Expect(b"UIDL"),
        Send(b"+OK\n1 a\n2 b\n.\n"),
        Expect(b"RETR 1"),
        Send(b"+OK\nSubject: x\n\n..dotted\nplain\n.\n"),
        Expect(b"TOP 2 0"),
        Send(b"+OK\nSubject: y\n\n.\n"),
        Expect(b"QUIT"),
        Send(b"+OK bye\n"),
    ]
    async with ScriptedServer(script) as server:
        client = client_for(server, timeout=2)
        await client.connect()
        await client.user("u")
        await client.pass_("p")
        assert await client.list() == [aiopop.ListEntry(1, 20), aiopop.ListEntry(2, 30)]
        assert [u.uid for u in await client.uidl()] == ["a", "b"]
        assert await client.retr(1) == b"Subject: x\n\n.dotted\nplain\n"
        assert await client.top(2, 0) == b"Subject: y\n\n"
        assert await client.quit() == b"+OK bye"
    assert server.mismatches == []


async def test_a_bare_lf_inside_a_crlf_message_is_content() -> None:
    body = b"Subject: x\r\n\r\nline\nwith\n.\nbare LFs\r\n"
    steps: list[Step] = [Expect(b"RETR 1"), Send(b"+OK\r\n" + body + b".\r\n")]
    async with logged_in(steps, timeout=2) as (_server, client):
        assert await client.retr(1) == body


# -- the connection ending -------------------------------------------------------------


async def test_every_command_cut_off_gets_an_error_naming_it() -> None:
    steps: list[Step] = [Expect(b"RETR 1"), Expect(b"STAT"), Expect(b"RETR 3")]
    steps += [Send(b"+OK\r\nhalf of it"), Close()]
    async with logged_in(steps, pipelining=True) as (server, client):
        async with asyncio.timeout(5):
            results = await asyncio.gather(
                client.retr(1), client.stat(), client.retr(3), return_exceptions=True
            )
    first, second, third = results
    assert isinstance(first, aiopop.ConnectionLostError)
    assert isinstance(second, aiopop.ConnectionLostError)
    assert isinstance(third, aiopop.ConnectionLostError)
    assert str(first) == "server closed the connection in the middle of the reply to RETR"
    assert str(second) == f"STAT not completed: {first}"
    assert str(third) == f"RETR not completed: {first}"
    assert second.__cause__ is first
    assert third.__cause__ is first
    assert server.mismatches == []


# -- closing, more ------------------------------------------------------------------------


async def test_close_during_the_tls_handshake_stops_connect_at_once(ca: trustme.CA) -> None:
    accepted: list[asyncio.StreamWriter] = []

    async def silent(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)  # TCP only: the TLS handshake never gets an answer

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    async with server:
        port = server.sockets[0].getsockname()[1]
        context = client_context(ca)
        client = aiopop.POP3_SSL("127.0.0.1", port, ssl_context=context, timeout=5)
        connecting = asyncio.create_task(client.connect())
        await asyncio.sleep(0.2)
        started = time.monotonic()
        await client.close()
        with pytest.raises(
            aiopop.ConnectionClosedError, match=r"^close\(\) was called while connecting$"
        ):
            await connecting
        assert time.monotonic() - started < 1  # not the 5 s timeout
        assert not client.is_connected
        with pytest.raises(aiopop.CommandStateError, match=r"^not connected$"):
            await client.noop()

        # The timeout and a cancelled connect() still work as before.
        slow = aiopop.POP3_SSL("127.0.0.1", port, ssl_context=context, timeout=0.3)
        with pytest.raises(aiopop.POP3TimeoutError, match=r"^connecting to .* timed out$"):
            await slow.connect()
        cancelled = aiopop.POP3_SSL("127.0.0.1", port, ssl_context=context, timeout=5)
        connecting = asyncio.create_task(cancelled.connect())
        await asyncio.sleep(0.2)
        connecting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await connecting
        assert not cancelled.is_connected
        for writer in accepted:
            writer.close()


async def test_a_command_cut_off_by_close_says_so() -> None:
    steps: list[Step] = [Expect(b"RETR 1"), WaitForClose()]
    async with logged_in(steps) as (_server, client):
        task = asyncio.create_task(client.retr(1))
        await asyncio.sleep(0.1)
        await client.close()
        with pytest.raises(aiopop.ConnectionClosedError) as info:
            await task
        assert str(info.value) == "the connection was closed by this client"
        with pytest.raises(aiopop.CommandStateError, match=r"^not connected$"):
            await client.retr(1)


# -- TCP_QUICKACK is an optimisation: a system without it, or refusing it, works the same --


@pytest.mark.parametrize("option", [0, 0x7FFF], ids=["absent", "refused"])
async def test_a_system_without_tcp_quickack_works_the_same(
    monkeypatch: pytest.MonkeyPatch, option: int
) -> None:
    # 0: the socket module has no TCP_QUICKACK (not Linux); 0x7fff: an option
    # number the kernel refuses with an OSError, when the first reply comes in
    # pieces (QUICKACK is re-armed only while a reply is still expected).
    monkeypatch.setattr(_connection, "_QUICKACK", option)
    steps: list[Step] = []
    for n in (1, 2, 3):
        wire = reply(MESSAGES[n - 1])
        steps += [Expect(b"RETR %d" % n), Send(wire[:20]), Sleep(0.05), Send(wire[20:])]
    async with logged_in(steps, timeout=2) as (server, client):
        assert [await client.retr(n) for n in (1, 2, 3)] == MESSAGES[:3]
        assert client.is_connected
    assert server.mismatches == []


async def test_close_aborts_a_plain_peer_that_stopped_reading(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Without TLS there is no shutdown timeout of asyncio's to fall back on:
    # close() itself must give up on the unsent octets and abort.
    monkeypatch.setattr(_connection, "CLOSE_TIMEOUT", 0.3)
    transports: list[asyncio.Transport] = []

    class Mute(asyncio.Protocol):
        """Greets, then never reads again."""

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            assert isinstance(transport, asyncio.Transport)
            transports.append(transport)
            transport.write(b"+OK ready\r\n")
            transport.pause_reading()

    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    server = await asyncio.get_running_loop().create_server(Mute, sock=listener)
    async with server:
        port = listener.getsockname()[1]
        client = aiopop.POP3("127.0.0.1", port, pipelining=True, max_in_flight=10_000)
        await client.connect()
        connection = client._connection
        assert connection is not None
        assert connection._transport is not None
        sock = connection._transport.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        tasks = [asyncio.create_task(client.capa()) for _ in range(5000)]
        await asyncio.sleep(0.1)
        assert connection._transport.get_write_buffer_size() > 0  # stuck: the peer reads nothing
        started = time.monotonic()
        async with asyncio.timeout(3):
            await client.close()
        assert 0.2 < time.monotonic() - started < 1.5
        await asyncio.sleep(0.05)
        assert sock.fileno() == -1  # aborted, the unsent octets dropped
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert all(isinstance(r, aiopop.ConnectionClosedError) for r in results)
        for transport in transports:
            transport.abort()


async def test_nothing_is_written_after_close() -> None:
    async with logged_in([WaitForClose()]) as (server, client):
        writes = record_writes(client)
        task = asyncio.create_task(client.noop())
        await asyncio.sleep(0)  # NOOP is queued for the next write...
        await client.close()  # ...which close() comes before
        with pytest.raises(aiopop.ConnectionClosedError):
            await task
    assert writes == []
    assert b"NOOP" not in server.received
