"""The clients that fetch a whole mailbox: aiopop, stdlib poplib, and the raw-socket ceiling.

Each logs in with USER/PASS, fetches messages 1..count in order, and quits;
the span runs from just before the first RETR is sent to the arrival of the
last octet. Connecting, logging in and QUIT are outside it.
"""

from __future__ import annotations

import asyncio
import poplib
import socket
import ssl

import aiopop
from benchmarks.harness.measure import Span

from .outcome import Outcome, from_messages
from .spec import ServerSpec

__all__ = ["fetch_aiopop", "fetch_ceiling", "fetch_poplib", "ssl_context"]

TIMEOUT = 60.0
"""Seconds any one socket operation may take, so that a stuck run ends by itself."""
TERMINATOR = b"\r\n.\r\n"
RECV_SIZE = 256 * 1024


def ssl_context(server: ServerSpec) -> ssl.SSLContext:
    """A client context that trusts only the server's test CA and checks its name."""
    return ssl.create_default_context(cafile=server.cafile)


# -- aiopop -------------------------------------------------------------------------


async def _aiopop_session(server: ServerSpec, count: int, span: Span, got: list[bytes]) -> None:
    client: aiopop.POP3
    if server.cafile is None:
        client = aiopop.POP3(server.host, server.port, timeout=TIMEOUT)
    else:
        client = aiopop.POP3_SSL(
            server.host, server.port, ssl_context=ssl_context(server), timeout=TIMEOUT
        )
    async with client:
        await client.user(server.user)
        await client.pass_(server.password)
        span.start()
        # retr_many asks CAPA first (one round trip, inside the span) and then
        # pipelines when the server offers PIPELINING; otherwise one at a time.
        async for _number, message in client.retr_many(range(1, count + 1)):
            got.append(message)
        span.stop()


def fetch_aiopop(server: ServerSpec, count: int, span: Span) -> Outcome:
    """``aiopop.POP3`` (or ``POP3_SSL``): ``retr_many`` over every message number."""
    # The event loop is made and closed outside the span. The messages are not
    # the coroutine's result: asyncio.run would repr() its task, and so the
    # messages, when it puts the SIGINT handler back (CPython 3.11).
    got: list[bytes] = []
    asyncio.run(_aiopop_session(server, count, span, got))
    return from_messages(got)


# -- poplib -------------------------------------------------------------------------


def fetch_poplib(server: ServerSpec, count: int, span: Span) -> Outcome:
    """Stdlib ``poplib.POP3`` (or ``POP3_SSL``): ``retr(n)`` for each message, in order."""
    client: poplib.POP3
    if server.cafile is None:
        client = poplib.POP3(server.host, server.port, timeout=TIMEOUT)
    else:
        client = poplib.POP3_SSL(
            server.host, server.port, context=ssl_context(server), timeout=TIMEOUT
        )
    got: list[list[bytes]] = []
    try:
        client.user(server.user)
        client.pass_(server.password)
        span.start()
        for number in range(1, count + 1):
            _status, lines, _octets = client.retr(number)
            got.append(lines)
        span.stop()
        client.quit()
    finally:
        client.close()
    # poplib hands back lines without their line ends: rebuild the wire form, untimed.
    return from_messages(b"".join(line + b"\r\n" for line in reply) for reply in got)


# -- the ceiling: a blocking socket that pipelines every RETR and parses nothing -----------


def _read_status(sock: socket.socket) -> bytes:
    """One status line; only used where the server sends nothing after it until asked."""
    data = b""
    while not data.endswith(b"\r\n"):
        chunk = sock.recv(1024)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        data += chunk
    if not data.startswith(b"+OK"):
        raise ConnectionError(f"unexpected reply {data[:200]!r}")
    return data


def _login(server: ServerSpec) -> socket.socket:
    sock = socket.create_connection((server.host, server.port), timeout=TIMEOUT)
    try:
        # As asyncio does for its TCP transports: the ceiling should be a ceiling.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if server.cafile is not None:
            sock = ssl_context(server).wrap_socket(sock, server_hostname=server.host)
        _read_status(sock)
        for command in (f"USER {server.user}\r\n", f"PASS {server.password}\r\n"):
            sock.sendall(command.encode("ascii"))
            _read_status(sock)
    except BaseException:
        sock.close()
        raise
    return sock


def _count_terminators(sock: socket.socket, count: int) -> int:
    """Read until ``count`` terminators have passed; return the octets read.

    Reads into one buffer, allocated once: ``recv(n)`` would allocate ``n``
    octets per call, which costs more than the rest of this loop when a TLS
    socket hands out one record (a few KB) per call.
    """
    buffer = bytearray(RECV_SIZE)
    found = 0
    total = 0
    tail = b""  # the last 4 octets so far, for a terminator split across reads
    while found < count:
        n = sock.recv_into(buffer)
        if not n:
            raise ConnectionError("the server closed the connection")
        total += n
        found += (tail + buffer[: min(n, 4)]).count(TERMINATOR) + buffer.count(TERMINATOR, 0, n)
        tail = bytes(buffer[n - 4 : n]) if n >= 4 else (tail + buffer[:n])[-4:]
    return total


def fetch_ceiling(server: ServerSpec, count: int, span: Span) -> Outcome:
    """Every RETR in one ``sendall``, then read until ``count`` ``CRLF.CRLF`` have passed.

    No parsing and no unstuffing: as fast as the server serves on this
    machine. Plain TCP or, with a CA file, a blocking ``ssl``-wrapped socket.
    Only the octets are counted (status lines and stuffing included).
    """
    commands = b"".join(b"RETR %d\r\n" % n for n in range(1, count + 1))
    sock = _login(server)
    try:
        span.start()
        # The commands (about 10 octets each) fit in the socket buffers, so the
        # server can never block on replies that nobody reads yet.
        sock.sendall(commands)
        total = _count_terminators(sock, count)
        span.stop()
        sock.sendall(b"QUIT\r\n")
        _read_status(sock)
    finally:
        sock.close()
    return Outcome(total, count, None)
