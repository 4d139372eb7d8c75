"""A delay proxy: a fixed one-way delay per direction between a client and a server.

``python -m benchmarks.harness.delay --delay-ms 25 --target 127.0.0.1:PORT``
listens on the target's loopback address (port 0: a free one), prints one
line ``READY {"addresses": [[HOST, PORT], ...]}`` (one listener per
``--target``, in order), and forwards every connection to its target until
its standard input closes (or SIGTERM/SIGINT). Run it as a process of its
own, so that the clients under test never share its event loop (``--forever``: stop on
SIGTERM or SIGINT only, not when stdin closes); suites use
:class:`DelayRoute` (a :class:`~benchmarks.harness.endpoint.Route`), which
does that.

How it delays, per connection and direction:

* every chunk read is stamped on arrival and written out at arrival +
  ``delay``: a timer per direction, never a sleep per chunk, so a stream of
  chunks keeps its rate and order, only shifted by the delay;
* the upstream connection is opened ``delay`` after the client's, so the
  server's greeting reaches the client one whole round trip after it
  connected, as over a real path (SYN out, greeting back);
* buffering is bounded: once ``limit`` octets wait in one direction, the
  proxy stops reading that side (TCP backpressure) until half of them are
  out; the sink's own write buffer pauses releases the same way. The limit
  bounds one direction's rate to ``limit / delay`` (16 MiB at 25 ms: 640
  MiB/s), far above what a POP3 fetch on loopback moves;
* end of stream is forwarded as a half-close, delayed like data; both
  sockets close once both directions ended.

:func:`self_check` measures what the proxy does (the round-trip time of a
one-octet echo against the one asked, ±10 %, and 10 MB through it against
10 MB direct); the distance suite runs it before measuring. Only loopback
addresses are ever used.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from servers.programs import stop_child

from .endpoint import Endpoint, check_loopback
from .paths import REPOSITORY

__all__ = ["DEFAULT_LIMIT", "DelayProxy", "DelayRoute", "ProxyProcess", "self_check"]

DEFAULT_LIMIT = 16 * 1024 * 1024
"""Octets one direction of one connection may hold before the proxy stops reading it."""
READ_SIZE = 256 * 1024


class _Side(asyncio.Protocol):
    """One socket of a proxied connection (the client's or the server's)."""

    def __init__(self, link: _Link) -> None:
        self.link = link
        self.transport: asyncio.Transport | None = None
        self.write_paused = False
        self.lost = False
        self.outgoing: _Direction | None = None
        """The direction this side reads into."""
        self.incoming: _Direction | None = None
        """The direction that writes to this side."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.set_write_buffer_limits(high=1024 * 1024)
        if self.incoming is not None:
            self.incoming.arm()

    def data_received(self, data: bytes) -> None:
        if self.outgoing is not None:
            self.outgoing.push(data)

    def eof_received(self) -> bool:
        if self.outgoing is not None:
            self.outgoing.end()
        return True  # half-open: the other direction may still carry data

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self.outgoing is not None:
            self.outgoing.end()
        if self.incoming is not None:
            self.incoming.drop()
        self.link.check_done()

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.incoming is not None:
            self.incoming.arm()


class _Direction:
    """Chunks from ``source`` to ``sink``, each released at its arrival + the delay."""

    def __init__(self, proxy: DelayProxy, source: _Side, sink: _Side) -> None:
        self.loop = proxy.loop
        self.delay = proxy.delay
        self.limit = proxy.limit
        self.source = source
        self.sink = sink
        self.queue: collections.deque[tuple[float, bytes | None]] = collections.deque()
        self.buffered = 0
        self.reading_paused = False
        self.ended = False
        """End of stream seen from the source."""
        self.done = False
        """End of stream passed on to the sink (or the sink is gone)."""
        self.timer: asyncio.TimerHandle | None = None
        source.outgoing = self
        sink.incoming = self

    def push(self, data: bytes) -> None:
        self.queue.append((self.loop.time() + self.delay, data))
        self.buffered += len(data)
        if self.buffered >= self.limit and not self.reading_paused:
            transport = self.source.transport
            if transport is not None and not transport.is_closing():
                transport.pause_reading()
                self.reading_paused = True
        self.arm()

    def end(self) -> None:
        if not self.ended:
            self.ended = True
            self.queue.append((self.loop.time() + self.delay, None))
            self.arm()

    def drop(self) -> None:
        """The sink is gone: nothing more can be delivered."""
        self.queue.clear()
        self.buffered = 0
        self.done = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def arm(self) -> None:
        sink = self.sink
        if self.timer is not None or not self.queue or self.done:
            return
        if sink.transport is None or sink.write_paused:
            return  # armed again when the sink connects or drains
        self.timer = self.loop.call_at(self.queue[0][0], self.release)

    def release(self) -> None:
        self.timer = None
        transport = self.sink.transport
        if transport is None or self.done:
            return
        now = self.loop.time()
        queue = self.queue
        out: list[bytes] = []
        while queue and queue[0][0] <= now:
            _, data = queue.popleft()
            if data is None:
                self.done = True
                break
            out.append(data)
            self.buffered -= len(data)
        if out and not transport.is_closing():
            transport.write(out[0] if len(out) == 1 else b"".join(out))
        if self.done:
            if not transport.is_closing():
                if self.source.lost or not transport.can_write_eof():
                    transport.close()
                else:
                    try:
                        transport.write_eof()
                    except OSError:  # the peer is gone already (ENOTCONN): just close
                        transport.close()
            self.sink.link.check_done()
            return
        if self.reading_paused and self.buffered <= self.limit // 2:
            source = self.source.transport
            if source is not None and not source.is_closing():
                source.resume_reading()
            self.reading_paused = False
        self.arm()


class _Link:
    """One proxied connection: the client's side, the server's side, both directions."""

    def __init__(self, proxy: DelayProxy, target: Endpoint) -> None:
        self.proxy = proxy
        self.target = target
        self.client = _Side(self)
        self.server = _Side(self)
        self.up = _Direction(proxy, self.client, self.server)
        self.down = _Direction(proxy, self.server, self.client)
        self.closed = False

    def start(self) -> None:
        """Open the upstream connection one delay after the client's (see the module)."""
        self.proxy.loop.call_later(self.proxy.delay, self._connect)

    def _connect(self) -> None:
        task = self.proxy.loop.create_task(self._open())
        self.proxy.tasks.add(task)
        task.add_done_callback(self.proxy.tasks.discard)

    async def _open(self) -> None:
        try:
            await self.proxy.loop.create_connection(
                lambda: self.server, self.target.host, self.target.port
            )
        except OSError:
            if self.client.transport is not None:
                self.client.transport.abort()
            return
        if self.closed and self.server.transport is not None:
            self.server.transport.close()  # the client left before the upstream connect
            return
        if self.server.transport is not None:
            sock = self.server.transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def check_done(self) -> None:
        if self.closed:
            return
        if (self.up.done or self.client.lost) and (self.down.done or self.server.lost):
            self.closed = True
            for side in (self.client, self.server):
                if side.transport is not None and not side.transport.is_closing():
                    side.transport.close()
            self.proxy.links.discard(self)


class DelayProxy:
    """Listeners in front of ``targets``, each on its target's own loopback address."""

    def __init__(self, delay: float, targets: Sequence[Endpoint], limit: int = DEFAULT_LIMIT):
        if delay < 0:
            raise ValueError("the delay cannot be negative")
        self.delay = delay
        self.targets = list(targets)
        self.limit = limit
        self.loop = asyncio.get_running_loop()
        self.links: set[_Link] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        self.servers: list[asyncio.Server] = []

    async def start(self) -> list[Endpoint]:
        """Listen; the address to dial for each target, in order."""
        found = []
        for target in self.targets:
            check_loopback(target.host)

            def accept(target: Endpoint = target) -> _Side:
                link = _Link(self, target)
                self.links.add(link)
                link.start()
                return link.client

            server = await self.loop.create_server(accept, target.host, 0, backlog=4096)
            self.servers.append(server)
            found.append(Endpoint(target.host, int(server.sockets[0].getsockname()[1])))
        return found

    def close(self) -> None:
        for server in self.servers:
            server.close()


# -- the proxy as a process --------------------------------------------------------------------


def _endpoint(text: str) -> Endpoint:
    host, _, port = text.rpartition(":")
    return Endpoint(host, int(port))


async def _serve(delay: float, targets: Sequence[Endpoint], limit: int, forever: bool) -> None:
    from servers.latency import raise_file_limit

    raise_file_limit()
    proxy = DelayProxy(delay, targets, limit)
    listening = await proxy.start()
    addresses = [[e.host, e.port] for e in listening]
    print("READY " + json.dumps({"addresses": addresses}), flush=True)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    reader = asyncio.StreamReader()
    if not forever:
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    async def until_stdin_closes() -> None:
        while await reader.read(4096):
            pass
        stop.set()

    watcher = None if forever else loop.create_task(until_stdin_closes())
    await stop.wait()
    if watcher is not None:
        watcher.cancel()
    proxy.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.harness.delay",
        description="Forward loopback connections with a fixed one-way delay per direction.",
    )
    parser.add_argument("--delay-ms", type=float, required=True, help="one-way delay (RTT / 2)")
    parser.add_argument(
        "--target", action="append", required=True, metavar="HOST:PORT", help="repeatable"
    )
    parser.add_argument(
        "--limit", type=int, default=DEFAULT_LIMIT, help="octets buffered per direction"
    )
    parser.add_argument(
        "--forever", action="store_true", help="ignore stdin; stop on SIGTERM or SIGINT only"
    )
    options = parser.parse_args(argv)
    targets = [_endpoint(text) for text in options.target]
    asyncio.run(_serve(options.delay_ms / 1000, targets, options.limit, options.forever))
    return 0


class ProxyProcess:
    """The proxy in a child process; it stops when :meth:`close` closes its stdin."""

    def __init__(self, rtt_ms: float, targets: Sequence[Endpoint]) -> None:
        self.rtt_ms = rtt_ms
        argv = [sys.executable, "-m", "benchmarks.harness.delay", "--delay-ms", str(rtt_ms / 2)]
        for target in targets:
            argv += ["--target", f"{target.host}:{target.port}"]
        self.process = subprocess.Popen(
            argv, cwd=REPOSITORY, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line.startswith("READY "):
            self.close()
            raise RuntimeError(f"the delay proxy said {line!r} instead of READY")
        self.addresses = [Endpoint(str(h), int(p)) for h, p in json.loads(line[6:])["addresses"]]
        self.by_target = dict(zip(targets, self.addresses, strict=True))

    def close(self) -> None:
        stop_child(self.process)

    def __enter__(self) -> ProxyProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class DelayRoute:
    """A :class:`~benchmarks.harness.endpoint.Route` through delay proxies of ``rtt_ms``.

    At 0 ms it is the direct route (no proxy), unless ``always``. Each server gets a proxy
    process of its own on first use; :meth:`endpoints` puts several
    servers behind one process. :meth:`close` stops them all.
    """

    def __init__(self, rtt_ms: float, *, always: bool = False) -> None:
        self.rtt_ms = rtt_ms
        self.proxied = always or rtt_ms > 0
        self.name = f"delay {rtt_ms:g} ms RTT"
        self.processes: list[ProxyProcess] = []
        self.known: dict[Endpoint, Endpoint] = {}

    def endpoints(self, servers: Iterable[Endpoint]) -> list[Endpoint]:
        wanted = [s for s in servers if s not in self.known]
        if self.proxied and wanted:
            process = ProxyProcess(self.rtt_ms, wanted)
            self.processes.append(process)
            self.known.update(process.by_target)
        return [self.known.get(s, s) if self.proxied else s for s in servers]

    def endpoint(self, server: Endpoint) -> Endpoint:
        return self.endpoints([server])[0]

    def close(self) -> None:
        for process in self.processes:
            process.close()
        self.processes.clear()
        self.known.clear()

    def __enter__(self) -> DelayRoute:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- the self-check ----------------------------------------------------------------------------


@dataclass
class CheckResult:
    rtt_asked_ms: float
    rtt_measured_ms: float
    rtt_ok: bool
    direct_seconds: float
    proxied_seconds: float
    """10 MB through the proxy, its one round trip (data out, count back) taken off."""
    throughput_ok: bool

    def to_json(self) -> dict[str, Any]:
        return dict(vars(self))

    def line(self) -> str:
        mb = CHECK_OCTETS / 1e6
        return (
            f"delay proxy at {self.rtt_asked_ms:g} ms: echo RTT {self.rtt_measured_ms:.1f} ms "
            f"({'ok' if self.rtt_ok else 'OFF'}); {mb:g} MB in {self.proxied_seconds:.3f} s "
            f"beyond the RTT, direct {self.direct_seconds:.3f} s "
            f"({'ok' if self.throughput_ok else 'SLOW'})"
        )

    @property
    def ok(self) -> bool:
        return self.rtt_ok and self.throughput_ok


CHECK_OCTETS = 10_000_000
RTT_TOLERANCE = 0.10
RTT_SLACK_MS = 2.0
"""Absolute slack on the echo RTT (the loops' own wake-ups), so that 0 ms can pass too."""
THROUGHPUT_FACTOR = 2.0
THROUGHPUT_SLACK = 0.05


class _Echo(asyncio.Protocol):
    """Echoes each chunk; after a leading ``S``, counts octets to EOF and answers the count."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.mode: bytes | None = None
        self.count = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        if self.mode is None:
            self.mode = data[:1]
        if self.mode == b"S":
            self.count += len(data)
        else:
            self.transport.write(data)

    def eof_received(self) -> bool:
        assert self.transport is not None
        if self.mode == b"S":
            self.transport.write(b"%d\n" % self.count)
        self.transport.close()
        return True


async def _echo_rtt(endpoint: Endpoint, times: int = 15) -> float:
    reader, writer = await asyncio.open_connection(endpoint.host, endpoint.port)
    writer.transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    seen = []
    for _ in range(times):
        began = time.perf_counter()
        writer.write(b"x")
        await reader.readexactly(1)
        seen.append(time.perf_counter() - began)
    writer.close()
    await writer.wait_closed()
    return statistics.median(seen[1:])  # the first waits for the delayed upstream connect


async def _stream(endpoint: Endpoint, octets: int) -> float:
    reader, writer = await asyncio.open_connection(endpoint.host, endpoint.port)
    chunk = b"S" * 65536
    began = time.perf_counter()
    left = octets
    while left > 0:
        writer.write(chunk[: min(left, len(chunk))])
        left -= len(chunk)
        await writer.drain()
    writer.write_eof()
    count = int(await reader.readline())
    took = time.perf_counter() - began
    writer.close()
    await writer.wait_closed()
    if count != octets:
        raise RuntimeError(f"{count} octets arrived, not {octets}")
    return took


async def _check(rtt_ms: float) -> CheckResult:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_Echo, "127.0.0.1", 0)
    target = Endpoint("127.0.0.1", int(server.sockets[0].getsockname()[1]))
    try:
        direct = min([await _stream(target, CHECK_OCTETS) for _ in range(2)])
        with DelayRoute(rtt_ms, always=True) as route:
            through = route.endpoint(target)
            measured = await _echo_rtt(through)
            # The octets go one way (the delayed upstream connect overlaps their delay) and
            # the count comes back the other: one RTT in all, taken off.
            streamed = min([await _stream(through, CHECK_OCTETS) for _ in range(2)])
    finally:
        server.close()
    beyond = max(0.0, streamed - rtt_ms / 1000)
    return CheckResult(
        rtt_asked_ms=rtt_ms,
        rtt_measured_ms=measured * 1000,
        rtt_ok=abs(measured * 1000 - rtt_ms) <= max(RTT_TOLERANCE * rtt_ms, RTT_SLACK_MS),
        direct_seconds=direct,
        proxied_seconds=beyond,
        throughput_ok=beyond <= THROUGHPUT_FACTOR * direct + THROUGHPUT_SLACK,
    )


def self_check(rtt_ms: float) -> CheckResult:
    """Measure a proxy of ``rtt_ms`` (a process of its own) from this process; see the module."""
    return asyncio.run(_check(rtt_ms))


if __name__ == "__main__":
    sys.exit(main())
