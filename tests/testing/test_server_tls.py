"""The in-process POP3 server over TLS: implicit TLS and STLS."""

from __future__ import annotations

import asyncio
import poplib
import socket
import ssl
import struct

import pytest

from aiopop.testing import POP3TestServer
from tests.helpers.server import Wire, in_thread, mailboxes


async def test_implicit_tls(server_tls: ssl.SSLContext, client_tls: ssl.SSLContext) -> None:
    async with POP3TestServer(mailboxes(), ssl_context=server_tls) as srv:

        def session() -> int:
            pop = poplib.POP3_SSL(srv.host, srv.port, context=client_tls, timeout=5)
            pop.user("alice")
            pop.pass_("secret")
            count = pop.stat()[0]
            pop.quit()
            return count

        assert await in_thread(session) == 3
        wire = await Wire.pop(srv, ssl=client_tls, server_hostname="localhost")
        assert wire.greeting.startswith(b"+OK")
        _, capa = await wire.multi(b"CAPA")
        assert b"STLS" not in capa
        await wire.close()
        await srv.wait_idle()
        assert all(s.tls for s in srv.sessions)


async def test_failed_handshake_leaves_the_server_running(
    server_tls: ssl.SSLContext, client_tls: ssl.SSLContext
) -> None:
    async with POP3TestServer(mailboxes(), ssl_context=server_tls) as srv:
        untrusting = ssl.create_default_context()
        with pytest.raises(ssl.SSLCertVerificationError):
            await asyncio.open_connection(srv.host, srv.port, ssl=untrusting)
        wire = await Wire.open(srv)  # plaintext on the TLS port
        await wire.send(b"USER alice\r\n")
        assert await wire.at_eof()
        await wire.close()
        wire = await Wire.pop(srv, ssl=client_tls, server_hostname="localhost")
        assert (await wire.login()).startswith(b"+OK")
        await wire.close()


async def test_stls_on_the_wire(server_tls: ssl.SSLContext, client_tls: ssl.SSLContext) -> None:
    async with POP3TestServer(mailboxes(), starttls_context=server_tls) as srv:
        wire = await Wire.pop(srv)
        _, capa = await wire.multi(b"CAPA")
        assert b"\r\nSTLS\r\n" in capa
        assert await wire.cmd(b"STLS x") == b"-ERR STLS takes no arguments\r\n"
        assert await wire.cmd(b"STLS") == b"+OK Begin TLS negotiation\r\n"
        await wire.writer.start_tls(client_tls, server_hostname="localhost")
        _, capa = await wire.multi(b"CAPA")
        assert b"STLS" not in capa
        assert await wire.cmd(b"STLS") == b"-ERR Command not permitted when TLS active\r\n"
        assert (await wire.login()).startswith(b"+OK")
        assert await wire.cmd(b"STLS") == b"-ERR STLS is not valid in the TRANSACTION state\r\n"
        await wire.close()
        await srv.wait_idle()
        record = srv.sessions[0]
        assert record.tls
        assert record.discarded_before_tls == b""


async def test_stls_discards_pipelined_cleartext(
    server_tls: ssl.SSLContext, client_tls: ssl.SSLContext
) -> None:
    async with POP3TestServer(mailboxes(), starttls_context=server_tls) as srv:
        wire = await Wire.pop(srv)
        await wire.send(b"STLS\r\nUSER alice\r\n")
        assert await wire.line() == b"+OK Begin TLS negotiation\r\n"
        await wire.writer.start_tls(client_tls, server_hostname="localhost")
        assert await wire.cmd(b"PASS secret") == (
            b"-ERR PASS must immediately follow a successful USER\r\n"
        )
        await wire.close()
        await srv.wait_idle()
        record = srv.sessions[0]
        assert record.discarded_before_tls == b"USER alice\r\n"
        assert record.lines == [b"STLS", b"PASS secret"]


async def test_failed_stls_handshake_ends_the_session_quietly(
    server_tls: ssl.SSLContext,
) -> None:
    async with POP3TestServer(mailboxes(), starttls_context=server_tls) as srv:
        wire = await Wire.pop(srv)
        assert await wire.cmd(b"STLS") == b"+OK Begin TLS negotiation\r\n"
        await wire.send(b"USER alice\r\n")  # cleartext where a handshake belongs
        assert await wire.at_eof()
        await wire.close()
        await srv.wait_idle()
        record = srv.sessions[0]
        assert (record.tls, record.error, record.closed) == (False, None, True)


async def test_connection_reset_by_the_client(server: POP3TestServer) -> None:
    wire = await Wire.pop(server)
    await wire.login()
    sock = wire.writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    wire.writer.transport.abort()  # RST instead of FIN
    await server.wait_idle()
    record = server.sessions[0]
    assert (record.quit, record.error, record.closed) == (False, None, True)
    wire = await Wire.pop(server)
    assert (await wire.login()).startswith(b"+OK Mailbox locked")
    await wire.close()


async def test_stls_refused_after_utf8(server_tls: ssl.SSLContext) -> None:
    async with POP3TestServer(mailboxes(), starttls_context=server_tls) as srv:
        wire = await Wire.pop(srv)
        assert (await wire.cmd(b"UTF8")).startswith(b"+OK")
        assert await wire.cmd(b"STLS") == b"-ERR STLS is not permitted after UTF8\r\n"
        await wire.close()


async def test_poplib_stls(server_tls: ssl.SSLContext, client_tls: ssl.SSLContext) -> None:
    async with POP3TestServer(mailboxes(), starttls_context=server_tls) as srv:

        def session() -> int:
            pop = poplib.POP3(srv.host, srv.port, timeout=5)
            pop.stls(client_tls)
            assert "STLS" not in pop.capa()
            pop.user("alice")
            pop.pass_("secret")
            count = pop.stat()[0]
            pop.quit()
            return count

        assert await in_thread(session) == 3
        assert srv.sessions[0].tls
