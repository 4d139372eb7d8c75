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

HOST = "pop.example.test"


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def server_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(HOST, "127.0.0.1").configure_cert(context)
    return context


@pytest.fixture(scope="module")
def client_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


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
    client_context: ssl.SSLContext, server_context: ssl.SSLContext
) -> None:
    client = TLSSession(client_context, HOST)
    server = Server(server_context)
    assert client.established is False
    handshake(client, server)
    assert client.established is True
    assert server.receive(client.send(b"STAT\r\n")) == b"STAT\r\n"
    assert client.receive(server.send(b"+OK 2 320\r\n")) == b"+OK 2 320\r\n"
    assert client.peer_closed is False


def test_data_that_comes_with_the_end_of_the_handshake_is_returned_at_once(
    ca: trustme.CA, client_context: ssl.SSLContext
) -> None:
    """TLS 1.2: the server's Finished and its greeting may share a TCP segment.

    Left in the memory BIO, the greeting would wait for the next segment,
    which never comes: the server waits for the client.
    """
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.maximum_version = ssl.TLSVersion.TLSv1_2
    ca.issue_cert(HOST).configure_cert(server_context)
    client = TLSSession(client_context, HOST)
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
    client_context: ssl.SSLContext, server_context: ssl.SSLContext
) -> None:
    client = TLSSession(client_context, HOST)
    server = Server(server_context)
    handshake(client, server)
    with pytest.raises(ssl.SSLWantReadError):  # the server's is sent; it waits for ours
        server.tls.unwrap()
    assert client.receive(server.outgoing.read()) == b""
    assert client.peer_closed is True


@settings(max_examples=40, deadline=None)
@given(step=st.integers(min_value=1, max_value=600), sizes=st.lists(st.integers(1, 9000)))
def test_any_split_of_the_stream_gives_the_same_plaintext(
    client_context: ssl.SSLContext,
    server_context: ssl.SSLContext,
    step: int,
    sizes: list[int],
) -> None:
    client = TLSSession(client_context, HOST)
    server = Server(server_context)
    handshake(client, server, step)
    # Records of every size up to the largest (16 KiB of plaintext each).
    message = bytes(range(256)) * 160  # 40 KiB: at least three records
    stream = b"".join(server.send(message[: n + 1]) for n in (0, 16383, 40959))
    plaintext = b"".join(client.receive(piece) for piece in pieces(stream, iter(sizes)))
    assert plaintext == message[:1] + message[:16384] + message
    assert client.to_send() == b""


def test_close_sends_close_notify_and_sees_the_servers(
    client_context: ssl.SSLContext, server_context: ssl.SSLContext
) -> None:
    client = TLSSession(client_context, HOST)
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


def test_close_before_the_handshake_sends_nothing(client_context: ssl.SSLContext) -> None:
    client = TLSSession(client_context, HOST)
    client.start()
    assert client.close() == b""


def test_a_certificate_for_another_name_is_refused(
    client_context: ssl.SSLContext, server_context: ssl.SSLContext
) -> None:
    client = TLSSession(client_context, "other.example.test")
    server = Server(server_context)
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(client, server)
    assert not client.established


def test_a_forged_record_is_an_ssl_error(
    client_context: ssl.SSLContext, server_context: ssl.SSLContext
) -> None:
    client = TLSSession(client_context, HOST)
    server = Server(server_context)
    handshake(client, server)
    record = bytearray(server.send(b"+OK 2 320\r\n"))
    record[-1] ^= 1  # the authentication tag no longer matches
    with pytest.raises(ssl.SSLError):
        client.receive(bytes(record))


# -- inside a connection ---------------------------------------------------------------


@pytest.fixture
def testing_server_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    return context


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
    client_context: ssl.SSLContext, testing_server_context: ssl.SSLContext
) -> None:
    """asyncio's TLS transport kept 256 KiB per connection; aiopop's own TLS keeps none."""
    count = 10
    listener, _threads = answering_server(testing_server_context, count + 1)
    with listener:
        port = listener.getsockname()[1]
        warm = aiopop.POP3_SSL("127.0.0.1", port, ssl_context=client_context, timeout=5)
        await warm.connect()
        await warm.quit()
        clients = [
            aiopop.POP3_SSL("127.0.0.1", port, ssl_context=client_context, timeout=5)
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
    client_context: ssl.SSLContext, testing_server_context: ssl.SSLContext
) -> None:
    listener, thread = bad_record_server(testing_server_context)
    with listener:
        port = listener.getsockname()[1]
        client = aiopop.POP3_SSL("127.0.0.1", port, ssl_context=client_context, timeout=5)
        await client.connect()
        with pytest.raises(aiopop.ConnectionLostError, match=r"^TLS error from 127\.0\.0\.1"):
            await client.user("alice")
        assert not client.is_connected
        await client.close()
        await asyncio.to_thread(thread.join, 5)


async def test_a_server_that_hangs_up_mid_handshake_is_a_connection_error(
    client_context: ssl.SSLContext,
) -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1)  # the ClientHello has begun
        writer.close()

    server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    async with server:
        port = server.sockets[0].getsockname()[1]
        client = aiopop.POP3_SSL("127.0.0.1", port, ssl_context=client_context, timeout=5)
        with pytest.raises(
            aiopop.ConnectionLostError, match=r"closed the connection in the TLS handshake$"
        ) as info:
            await client.connect()
        assert isinstance(info.value, OSError)  # as poplib's would be
        assert not client.is_connected
