"""aiopop's own TLS layer: TLSSession without I/O, then over real sockets.

The session is driven here against a server-side ``ssl.SSLObject`` on
memory BIOs, so that every split of the byte stream can be tried without
a network; the tests at the end run it inside a connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import os
import socket
import ssl
import threading
import tracemalloc
from collections.abc import Iterator

import pytest
import trustme
from hypothesis import given, settings
from hypothesis import strategies as st

import aiopop
from aiopop._tls import TLSSession
from tests.helpers import tls

HOST = "pop.example.test"


@pytest.fixture(scope="module")
def server_context(ca: trustme.CA) -> ssl.SSLContext:
    """A server context whose certificate names HOST (and 127.0.0.1)."""
    return tls.server_context(ca, HOST, "127.0.0.1")


class Server:
    """The server end of a TLS session, on memory BIOs."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.tls = context.wrap_bio(self.incoming, self.outgoing, server_side=True)
        self.established = False

    def receive(self, data: bytes) -> bytes:
        """Take the client's ciphertext; return the plaintext it completes."""
        self.incoming.write(data)
        if not self.established:
            try:
                self.tls.do_handshake()
            except ssl.SSLWantReadError:
                return b""
            self.established = True
        out = b""
        try:
            while chunk := self.tls.read(65536):
                out += chunk
        except (ssl.SSLWantReadError, ssl.SSLZeroReturnError):
            pass
        return out

    def send(self, plaintext: bytes) -> bytes:
        self.tls.write(plaintext)
        return self.outgoing.read()


def pieces(data: bytes, sizes: Iterator[int]) -> Iterator[bytes]:
    """``data`` cut into pieces of the given sizes, the last one taking what is left."""
    while data:
        size = max(1, next(sizes, len(data)))
        yield data[:size]
        data = data[size:]


def handshake(client: TLSSession, server: Server, step: int | None = None) -> None:
    """Run the handshake to its end, handing the bytes over ``step`` at a time."""
    to_server = client.start()
    for _ in range(20):
        for piece in pieces(to_server, itertools.repeat(step or len(to_server))):
            assert server.receive(piece) == b""
        to_client = server.outgoing.read()
        to_server = b""
        for piece in pieces(to_client, itertools.repeat(step or len(to_client))):
            assert client.receive(piece) == b""
            to_server += client.to_send()
        if client.established and server.established:
            return
    raise AssertionError("the handshake did not complete")


def test_a_session_exchanges_data_both_ways(
    client_tls: ssl.SSLContext, server_context: ssl.SSLContext
) -> None:
    client = TLSSession(client_tls, HOST)
    server = Server(server_context)
    assert client.established is False
    handshake(client, server)
    assert client.established is True
    assert server.receive(client.send(b"STAT\r\n")) == b"STAT\r\n"
    assert client.receive(server.send(b"+OK 2 320\r\n")) == b"+OK 2 320\r\n"
    assert client.peer_closed is False


def test_data_that_comes_with_the_end_of_the_handshake_is_returned_at_once(
    ca: trustme.CA, client_tls: ssl.SSLContext
) -> None:
    """TLS 1.2: the server's Finished and its greeting may share a TCP segment.

    Left in the memory BIO, the greeting would wait for the next segment,
    which never comes: the server waits for the client.
    """
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.maximum_version = ssl.TLSVersion.TLSv1_2
    ca.issue_cert(HOST).configure_cert(server_context)
    client = TLSSession(client_tls, HOST)
    server = Server(server_context)
    server.receive(client.start())  # ClientHello
    assert client.receive(server.outgoing.read()) == b""  # ServerHello ... ServerHelloDone
    assert not client.established
    server.receive(client.to_send())  # ClientKeyExchange, ChangeCipherSpec, Finished
    assert server.established
    last_flight = server.outgoing.read()  # ChangeCipherSpec, Finished
    assert client.receive(last_flight + server.send(b"+OK ready\r\n")) == b"+OK ready\r\n"
    assert client.established


def test_the_servers_close_notify_ends_the_plaintext(
    client_tls: ssl.SSLContext, server_context: ssl.SSLContext
) -> None:
    client = TLSSession(client_tls, HOST)
    server = Server(server_context)
    handshake(client, server)
    with pytest.raises(ssl.SSLWantReadError):  # the server's is sent; it waits for ours
        server.tls.unwrap()
    assert client.receive(server.outgoing.read()) == b""
    assert client.peer_closed is True


@settings(max_examples=40, deadline=None)
@given(step=st.integers(min_value=1, max_value=600), sizes=st.lists(st.integers(1, 9000)))
def test_any_split_of_the_stream_gives_the_same_plaintext(
    client_tls: ssl.SSLContext,
    server_context: ssl.SSLContext,
    step: int,
    sizes: list[int],
) -> None:
    client = TLSSession(client_tls, HOST)
    server = Server(server_context)
    handshake(client, server, step)
    # Records of every size up to the largest (16 KiB of plaintext each).
    message = bytes(range(256)) * 160  # 40 KiB: at least three records
    stream = b"".join(server.send(message[: n + 1]) for n in (0, 16383, 40959))
    plaintext = b"".join(client.receive(piece) for piece in pieces(stream, iter(sizes)))
    assert plaintext == message[:1] + message[:16384] + message
    assert client.to_send() == b""


def test_close_sends_close_notify_and_sees_the_servers(
    client_tls: ssl.SSLContext, server_context: ssl.SSLContext
) -> None:
    client = TLSSession(client_tls, HOST)
    server = Server(server_context)
    handshake(client, server)
    alert = client.close()
    assert alert  # close_notify
    server.incoming.write(alert)
    assert server.tls.read(1024) == b""  # a clean end, not an error
    assert not client.peer_closed
    server.tls.unwrap()  # the server's close_notify in answer
    assert client.receive(server.outgoing.read()) == b""
    assert client.peer_closed


def test_close_before_the_handshake_sends_nothing(client_tls: ssl.SSLContext) -> None:
    client = TLSSession(client_tls, HOST)
    client.start()
    assert client.close() == b""


def test_a_certificate_for_another_name_is_refused(
    client_tls: ssl.SSLContext, server_context: ssl.SSLContext
) -> None:
    client = TLSSession(client_tls, "other.example.test")
    server = Server(server_context)
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(client, server)
    assert not client.established


def test_a_forged_record_is_an_ssl_error(
    client_tls: ssl.SSLContext, server_context: ssl.SSLContext
) -> None:
    client = TLSSession(client_tls, HOST)
    server = Server(server_context)
    handshake(client, server)
    record = bytearray(server.send(b"+OK 2 320\r\n"))
    record[-1] ^= 1  # the authentication tag no longer matches
    with pytest.raises(ssl.SSLError):
        client.receive(bytes(record))


# -- inside a connection ---------------------------------------------------------------


def answering_server(
    context: ssl.SSLContext, connections: int
) -> tuple[socket.socket, list[threading.Thread]]:
    """A blocking TLS server, a thread per connection, that says +OK to everything.

    Not an asyncio server: its own TLS buffers would count in the
    measurement, since it runs in the test's process.
    """
    listener = socket.create_server(("127.0.0.1", 0))

    def serve(raw: socket.socket) -> None:
        with context.wrap_socket(raw, server_side=True) as conn:
            conn.sendall(b"+OK ready\r\n")
            while line := conn.recv(1024):
                conn.sendall(b"+OK 1 10\r\n")
                if line.startswith(b"QUIT"):
                    break

    def accept() -> None:
        for _ in range(connections):
            raw, _ = listener.accept()
            threading.Thread(target=serve, args=(raw,), daemon=True).start()

    threads = [threading.Thread(target=accept, daemon=True)]
    threads[0].start()
    return listener, threads


async def test_an_idle_tls_session_holds_no_large_buffer(
    client_tls: ssl.SSLContext, server_tls: ssl.SSLContext
) -> None:
    """asyncio's TLS transport kept 256 KiB per connection; aiopop's own TLS keeps none."""
    count = 10
    listener, _threads = answering_server(server_tls, count + 1)
    with listener:
        port = listener.getsockname()[1]
        warm = aiopop.POP3_SSL("127.0.0.1", port, ssl_context=client_tls, timeout=5)
        await warm.connect()
        await warm.quit()
        clients = [
            aiopop.POP3_SSL("127.0.0.1", port, ssl_context=client_tls, timeout=5)
            for _ in range(count)
        ]
        gc.collect()
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            for client in clients:
                await client.connect()
                await client.user("u")
                await client.pass_("p")
                assert (await client.stat()).count == 1
            gc.collect()
            held = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
            for client in clients:
                await client.quit()
    # About 10 KiB each (the server's threads included), against more than
    # 256 KiB with asyncio's TLS transport.
    assert held / count < 48 * 1024


def bad_record_server(
    context: ssl.SSLContext,
) -> tuple[socket.socket, threading.Thread]:
    """Greets over TLS, then answers USER with a forged record."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        raw, _ = listener.accept()
        with context.wrap_socket(raw, server_side=True) as conn:
            conn.sendall(b"+OK ready\r\n")
            conn.recv(1024)
            # Straight onto the socket, under TLS: an application-data record
            # whose authentication tag cannot match.
            os.write(conn.fileno(), b"\x17\x03\x03\x00\x20" + b"\x00" * 32)
            conn.settimeout(5)
            with contextlib.suppress(OSError):
                conn.recv(1024)  # until the client hangs up

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return listener, thread


async def test_a_forged_record_fails_the_command_and_the_connection(
    client_tls: ssl.SSLContext, server_tls: ssl.SSLContext
) -> None:
    listener, thread = bad_record_server(server_tls)
    with listener:
        port = listener.getsockname()[1]
        client = aiopop.POP3_SSL("127.0.0.1", port, ssl_context=client_tls, timeout=5)
        await client.connect()
        with pytest.raises(aiopop.ConnectionLostError, match=r"^TLS error from 127\.0\.0\.1"):
            await client.user("alice")
        assert not client.is_connected
        await client.close()
        await asyncio.to_thread(thread.join, 5)


async def test_a_server_that_hangs_up_mid_handshake_is_a_connection_error(
    client_tls: ssl.SSLContext,
) -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1)  # the ClientHello has begun
        writer.close()

    server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    async with server:
        port = server.sockets[0].getsockname()[1]
        client = aiopop.POP3_SSL("127.0.0.1", port, ssl_context=client_tls, timeout=5)
        with pytest.raises(
            aiopop.ConnectionLostError, match=r"closed the connection in the TLS handshake$"
        ) as info:
            await client.connect()
        assert isinstance(info.value, OSError)  # as poplib's would be
        assert not client.is_connected


# -- close_notify in the middle of a reply -------------------------------------------------


class CloseNotifyServer:
    """A TLS server on loopback (an SSLObject on memory BIOs) that ends with close_notify.

    It greets, answers each line the client sends with the next of
    ``replies``; then (with ``cut``) reads one more line and sends
    ``partial``, the start of its reply (or nothing); then its close_notify.
    It keeps TCP open until the client closes it: only the client can end
    the wait.
    """

    def __init__(
        self,
        context: ssl.SSLContext,
        replies: list[bytes],
        partial: bytes,
        *,
        together: bool,
        cut: bool = True,
    ) -> None:
        self.context = context
        self.replies = replies
        self.partial = partial
        self.together = together
        self.cut = cut
        self.received: list[bytes] = []
        self.notified = asyncio.Event()
        """Set once close_notify has gone out."""
        self.hung_up = asyncio.Event()
        """Set when the client closed the TCP connection."""
        self.port = 0
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> CloseNotifyServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        tls = Server(self.context)
        try:
            buffer = b""
            while not tls.established:
                data = await reader.read(65536)
                if not data:
                    return
                buffer += tls.receive(data)
                writer.write(tls.outgoing.read())
            writer.write(tls.send(b"+OK ready\r\n"))
            for index in range(len(self.replies) + self.cut):
                while b"\r\n" not in buffer:
                    data = await reader.read(65536)
                    if not data:
                        return
                    buffer += tls.receive(data)
                line, _, buffer = buffer.partition(b"\r\n")
                self.received.append(line)
                if index < len(self.replies):
                    writer.write(tls.send(self.replies[index]))
            partial = tls.send(self.partial) if self.partial else b""
            with contextlib.suppress(ssl.SSLWantReadError):
                tls.tls.unwrap()  # writes close_notify; the client's has not come yet
            alert = tls.outgoing.read()
            if self.together:
                writer.write(partial + alert)
            else:
                writer.write(partial)
                await writer.drain()
                await asyncio.sleep(0.05)
                writer.write(alert)
            await writer.drain()
            self.notified.set()
            with contextlib.suppress(ConnectionError):
                while await reader.read(65536):
                    pass  # the client's close_notify, maybe: TCP stays open until it hangs up
            self.hung_up.set()
        finally:
            writer.close()


LOGGED_IN = [b"+OK\r\n", b"+OK logged in\r\n"]
MIDDLE = "server closed the connection in the middle of the reply to"


async def logged_in_over_tls(
    server: CloseNotifyServer, client_tls: ssl.SSLContext, **options: object
) -> aiopop.POP3_SSL:
    client = aiopop.POP3_SSL(
        "127.0.0.1",
        server.port,
        ssl_context=client_tls,
        server_hostname=HOST,
        timeout=None,
        **options,  # type: ignore[arg-type]
    )
    await client.connect()
    await client.user("u")
    await client.pass_("p")
    return client


together_or_apart = pytest.mark.parametrize("together", [True, False], ids=["together", "apart"])


@together_or_apart
@pytest.mark.parametrize("partial", [b"", b"+OK still", b"+OK still here\r"])
async def test_close_notify_cuts_a_status_line_short(
    client_tls: ssl.SSLContext, server_context: ssl.SSLContext, partial: bytes, together: bool
) -> None:
    """With timeout=None, the wait for the rest would never end: it must fail at once."""
    async with CloseNotifyServer(server_context, LOGGED_IN, partial, together=together) as server:
        client = await logged_in_over_tls(server, client_tls)
        try:
            with pytest.raises(aiopop.ConnectionLostError, match=f"{MIDDLE} NOOP$"):
                await asyncio.wait_for(client.noop(), 5)
            assert not client.is_connected
            await asyncio.wait_for(server.hung_up.wait(), 5)  # the client closed TCP
        finally:
            await client.close()
        assert server.received == [b"USER u", b"PASS p", b"NOOP"]


@together_or_apart
@pytest.mark.parametrize("partial", [b"+OK 2 messages\r\n", b"+OK 2 messages\r\n1 10\r\n2 2"])
async def test_close_notify_cuts_a_listing_short(
    client_tls: ssl.SSLContext, server_context: ssl.SSLContext, partial: bytes, together: bool
) -> None:
    async with CloseNotifyServer(server_context, LOGGED_IN, partial, together=together) as server:
        client = await logged_in_over_tls(server, client_tls)
        try:
            with pytest.raises(aiopop.ConnectionLostError, match=f"{MIDDLE} LIST$"):
                await asyncio.wait_for(client.list(), 5)
            await asyncio.wait_for(server.hung_up.wait(), 5)
        finally:
            await client.close()
        assert server.received[-1] == b"LIST"


@together_or_apart
async def test_close_notify_cuts_a_streamed_message_short(
    client_tls: ssl.SSLContext, server_context: ssl.SSLContext, together: bool
) -> None:
    partial = b"+OK 100 octets\r\nSubject: cut\r\n\r\nthe first line\r\n"
    async with CloseNotifyServer(server_context, LOGGED_IN, partial, together=together) as server:
        client = await logged_in_over_tls(server, client_tls)
        chunks: list[bytes] = []

        async def read_all() -> None:
            async with client.retr_stream(1) as stream:
                async for chunk in stream:
                    chunks.append(chunk)
                raise AssertionError("a truncated message was returned as complete")

        try:
            with pytest.raises(aiopop.ConnectionLostError, match=f"{MIDDLE} RETR$"):
                await asyncio.wait_for(read_all(), 5)
            await asyncio.wait_for(server.hung_up.wait(), 5)
        finally:
            await client.close()
        received = b"".join(chunks)
        assert received == b"Subject: cut\r\n\r\nthe first line\r\n"[: len(received)]
        assert server.received[-1] == b"RETR 1"


@together_or_apart
async def test_close_notify_fails_every_pipelined_command_it_cuts_short(
    client_tls: ssl.SSLContext, server_context: ssl.SSLContext, together: bool
) -> None:
    replies = [*LOGGED_IN, b"+OK\r\n"]
    partial = b"+OK 1 message\r\n1 10\r\n"
    async with CloseNotifyServer(server_context, replies, partial, together=together) as server:
        client = await logged_in_over_tls(server, client_tls, pipelining=True)
        try:
            results = await asyncio.wait_for(
                asyncio.gather(
                    client.noop(), client.list(), client.retr(1), return_exceptions=True
                ),
                5,
            )
            await asyncio.wait_for(server.hung_up.wait(), 5)
        finally:
            await client.close()
    assert results[0] == b"+OK"
    assert isinstance(results[1], aiopop.ConnectionLostError)
    assert "in the middle of the reply to LIST" in str(results[1])
    assert isinstance(results[2], aiopop.ConnectionLostError)
    assert str(results[2]).startswith("RETR not completed")
    assert server.received[2] == b"NOOP"


async def test_close_notify_between_replies_ends_the_session(
    client_tls: ssl.SSLContext, server_context: ssl.SSLContext
) -> None:
    """Nothing is cut short, but nothing more can come: the client closes, as after a FIN."""
    async with CloseNotifyServer(
        server_context, LOGGED_IN, b"", together=True, cut=False
    ) as server:
        client = await logged_in_over_tls(server, client_tls)
        try:
            await asyncio.wait_for(server.notified.wait(), 5)
            await asyncio.wait_for(server.hung_up.wait(), 5)
            assert not client.is_connected
            with pytest.raises(aiopop.POP3Error):
                await asyncio.wait_for(client.noop(), 5)
        finally:
            await client.close()
        assert server.received == [b"USER u", b"PASS p"]
