"""aiopop.testing's ScriptedServer: scripts of Send and Expect steps."""

from __future__ import annotations

import asyncio
import ssl
import time

from aiopop.testing import (
    Close,
    Expect,
    Mismatch,
    Respond,
    ScriptedServer,
    Send,
    Sleep,
    StartTLS,
    Step,
    Trickle,
    WaitForClose,
)
from tests.helpers.server import Wire

# -- ScriptedServer -------------------------------------------------------------------------


async def test_scripted_send_and_expect() -> None:
    script: list[Step] = [
        Send(b"+OK hi\r\n"),
        Expect(b"STAT"),
        Send(b"+OK 0 0\r\n"),
        Expect(),
        Send(b"+OK bye\r\n"),
    ]
    async with ScriptedServer(script) as srv:
        wire = await Wire.open(srv)
        assert await wire.line() == b"+OK hi\r\n"
        assert await wire.cmd(b"STAT") == b"+OK 0 0\r\n"
        assert await wire.cmd(b"anything") == b"+OK bye\r\n"
        await wire.send(b"after the script\r\nmore\r\n")
        await wire.close()
        await srv.wait_idle()
        assert srv.received == [b"STAT", b"anything", b"after the script", b"more"]
        assert srv.mismatches == []
        assert srv.errors == []


async def test_scripted_mismatch_closes_the_connection() -> None:
    script: list[Step] = [Send(b"+OK hi\r\n"), Expect(b"STAT"), Send(b"+OK never sent\r\n")]
    async with ScriptedServer(script) as srv:
        wire = await Wire.open(srv)
        assert await wire.line() == b"+OK hi\r\n"
        await wire.send(b"LIST\r\n")
        assert await wire.at_eof()
        await wire.close()
        wire = await Wire.open(srv)  # each connection runs the script from the start
        await wire.line()
        await wire.send(b"STAT\n")  # a bare LF is not a match
        assert await wire.at_eof()
        await wire.close()
        await srv.wait_idle()
        assert srv.connections == 2
        assert srv.mismatches == [
            Mismatch(connection=0, step=1, expected=b"STAT", received=b"LIST"),
            Mismatch(connection=1, step=1, expected=b"STAT", received=b"STAT\n"),
        ]


async def test_scripted_expect_sees_the_client_close() -> None:
    async with ScriptedServer([Expect()]) as srv:
        wire = await Wire.open(srv)
        await wire.close()
        await srv.wait_idle()
        assert srv.mismatches == [Mismatch(0, 0, None, None)]


async def test_scripted_overlong_line() -> None:
    async with ScriptedServer([Expect()]) as srv:
        wire = await Wire.open(srv)
        wire.writer.write(b"x" * 70000)
        assert await wire.at_eof()
        await wire.close()
        await srv.wait_idle()
        assert srv.mismatches == [Mismatch(0, 0, None, None)]


async def test_scripted_sleep_and_trickle() -> None:
    script: list[Step] = [Sleep(0.2), Trickle(b"+OK\r\n", 0.05), Close()]
    async with ScriptedServer(script) as srv:
        wire = await Wire.open(srv)
        start = time.monotonic()
        chunks = []
        async with asyncio.timeout(5):
            while data := await wire.reader.read(100):
                chunks.append(data)
        elapsed = time.monotonic() - start
        assert b"".join(chunks) == b"+OK\r\n"
        assert len(chunks) > 1  # it really came in pieces
        assert elapsed >= 0.2 + 4 * 0.05 * 0.9
        await wire.close()


async def test_scripted_close_ends_the_connection_at_once() -> None:
    script: list[Step] = [Send(b"+OK\r\n"), Close(), Send(b"never\r\n")]
    async with ScriptedServer(script) as srv:
        wire = await Wire.open(srv)
        assert await wire.line() == b"+OK\r\n"
        assert await wire.at_eof()
        await wire.close()


async def test_scripted_wait_for_close_records_everything() -> None:
    script: list[Step] = [Send(b"+OK\r\n"), WaitForClose(), Send(b"never\r\n")]
    async with ScriptedServer(script) as srv:
        wire = await Wire.open(srv)
        assert await wire.line() == b"+OK\r\n"
        await wire.send(b"QUIT\r\npartial")
        wire.writer.write_eof()
        assert await wire.at_eof()
        await wire.close()
        await srv.wait_idle()
        assert srv.received == [b"QUIT", b"partial"]


async def test_scripted_starttls(server_tls: ssl.SSLContext, client_tls: ssl.SSLContext) -> None:
    script: list[Step] = [
        Send(b"+OK\r\n"),
        Expect(b"STLS"),
        Send(b"+OK go ahead\r\n"),
        StartTLS(server_tls),
        Expect(b"CAPA"),
        Send(b"+OK secret\r\n"),
    ]
    async with ScriptedServer(script) as srv:
        wire = await Wire.open(srv)
        assert await wire.line() == b"+OK\r\n"
        assert await wire.cmd(b"STLS") == b"+OK go ahead\r\n"
        await wire.writer.start_tls(client_tls, server_hostname="localhost")
        assert await wire.cmd(b"CAPA") == b"+OK secret\r\n"
        await wire.close()
        await srv.wait_idle()
        assert srv.received == [b"STLS", b"CAPA"]


async def test_scripted_implicit_tls(
    server_tls: ssl.SSLContext, client_tls: ssl.SSLContext
) -> None:
    async with ScriptedServer([Send(b"+OK tls\r\n")], ssl_context=server_tls) as srv:
        wire = await Wire.open(srv, ssl=client_tls, server_hostname="localhost")
        assert await wire.line() == b"+OK tls\r\n"
        await wire.close()


async def test_scripted_errors_are_recorded() -> None:
    async with ScriptedServer([Send("not bytes")]) as srv:  # type: ignore[arg-type]
        wire = await Wire.open(srv)
        assert await wire.at_eof()
        await wire.close()
        await srv.wait_idle()
        assert len(srv.errors) == 1
        assert isinstance(srv.errors[0], TypeError)


async def test_scripted_respond_answers_what_the_client_sent() -> None:
    script: list[Step] = [
        Send(b"+OK\r\n"),
        Respond(lambda line: b"+OK you said " + line[::-1] + b"\r\n"),
        Respond(lambda line: b""),
        Respond(lambda line: b"+OK\r\n"),
    ]
    async with ScriptedServer(script) as srv:
        wire = await Wire.open(srv)
        assert await wire.line() == b"+OK\r\n"
        assert await wire.cmd(b"ABC") == b"+OK you said CBA\r\n"
        await wire.send(b"silent\r\n")  # b"": nothing is sent back
        assert await wire.cmd(b"NOOP") == b"+OK\r\n"
        await wire.close()
        await srv.wait_idle()
        assert srv.received == [b"ABC", b"silent", b"NOOP"]
        assert srv.mismatches == []


async def test_scripted_respond_sees_the_client_close() -> None:
    async with ScriptedServer([Respond(lambda line: b"never\r\n")]) as srv:
        wire = await Wire.open(srv)
        await wire.close()
        await srv.wait_idle()
        assert srv.mismatches == [Mismatch(0, 0, None, None)]


async def test_scripted_then_gives_later_connections_their_own_script() -> None:
    first: list[Step] = [Send(b"+OK first\r\n")]
    async with ScriptedServer(
        first, then=[[Send(b"+OK second\r\n")], [Send(b"+OK third\r\n")]]
    ) as srv:
        assert srv.then == ((Send(b"+OK second\r\n"),), (Send(b"+OK third\r\n"),))
        greetings = []
        for _ in range(4):
            wire = await Wire.open(srv)
            greetings.append(await wire.line())
            await wire.close()
        # The fourth connection, beyond ``then``, plays the first script again.
        assert greetings == [
            b"+OK first\r\n",
            b"+OK second\r\n",
            b"+OK third\r\n",
            b"+OK first\r\n",
        ]
        assert srv.connections == 4


async def test_scripted_close_aborts_sleeping_connections() -> None:
    srv = ScriptedServer([Send(b"+OK\r\n"), Sleep(60)])
    await srv.start()
    wire = await Wire.open(srv)
    assert await wire.line() == b"+OK\r\n"  # the server has taken the connection
    async with asyncio.timeout(5):
        await srv.close()
    assert await wire.at_eof()
    await wire.close()
