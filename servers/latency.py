"""A POP3 server that answers every command after a fixed delay, on many loopback addresses.

The scale benchmark (``python -m benchmarks scale``) checks 1,000 mailboxes
on 25 "providers" (127.0.0.1, 127.0.0.2, ...) and holds 5,000 idle sessions
at once. It uses this server rather than :class:`aiopop.testing.POP3TestServer`
with ``Faults(latency=...)``, for reasons aiopop.testing does not cover:

* **what is delayed**: here the greeting comes at once and each command's
  reply ``delay`` seconds after the command arrived, every pipelined command
  counting from its own arrival; ``Faults.latency`` also delays the greeting
  and waits once per reply in turn. check_many's session (USER, PASS, STAT,
  QUIT) would take five delays instead of four, and the published numbers
  (benchmarks/results/scale.json) would no longer compare;
* **cost per connection**: one small :class:`asyncio.Protocol` per session,
  no stream reader, no task and no :class:`~aiopop.testing.SessionRecord`,
  so that 5,000 idle sessions cost the server little and 1,000 short ones
  per round leave no records behind;
* **counters**: open sessions, the peak since last asked, overall and per
  address (check_many's ``per_host`` limit is checked with them), read from
  another process through ``stats`` on stdin.

Mailboxes are ``user0``, ``user1``... with passwords ``pw0``, ``pw1``... and
the STAT of :func:`expected_stat`; it speaks USER, PASS, STAT, UIDL, CAPA,
NOOP and QUIT. It runs in a process of its own (:class:`ServerProcess`:
``python -m servers.latency '<json>'``) so that the client's process is
measured alone. Only 127.0.0.0/8 is ever used.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import resource
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any

from servers.programs import stop_child

__all__ = [
    "LatencyServer",
    "ServerProcess",
    "expected_stat",
    "host_of",
    "mailbox_password",
    "mailbox_user",
    "raise_file_limit",
]

_REPOSITORY = Path(__file__).resolve().parent.parent


def raise_file_limit() -> int:
    """Raise this process's soft RLIMIT_NOFILE to the hard limit; return the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def expected_stat(number: int) -> tuple[int, int]:
    """The (count, size) STAT reports for mailbox ``number``: known to server and clients."""
    count = number % 7
    return count, count * 1000 + number


def mailbox_user(number: int) -> str:
    return f"user{number}"


def mailbox_password(number: int) -> str:
    return f"pw{number}"


def host_of(number: int, hosts: int) -> str:
    """Mailboxes are dealt round-robin over 127.0.0.1, 127.0.0.2, ..."""
    return f"127.0.0.{1 + number % hosts}"


class _Session(asyncio.Protocol):
    """One connection: greets at once, then answers each command ``delay`` seconds after it."""

    def __init__(self, server: LatencyServer, host: str) -> None:
        self.server = server
        self.host = host
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.user: int | None = None
        self.logged_in: int | None = None
        self.replies: collections.deque[tuple[float, bytes, bool]] = collections.deque()
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        server = self.server
        server.open += 1
        server.peak = max(server.peak, server.open)
        server.open_by_host[self.host] += 1
        server.peak_by_host[self.host] = max(
            server.peak_by_host[self.host], server.open_by_host[self.host]
        )
        transport.write(b"+OK latency server ready\r\n")

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.open -= 1
        self.server.open_by_host[self.host] -= 1
        if self.timer is not None:
            self.timer.cancel()

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while b"\n" in self.buffer:
            line, self.buffer = self.buffer.split(b"\n", 1)
            reply, close = self.answer(line.rstrip(b"\r"))
            self.replies.append((self.loop.time() + self.server.delay, reply, close))
        if len(self.buffer) > 8192 and self.transport is not None:
            self.transport.abort()
        self._arm()

    def _arm(self) -> None:
        if self.timer is None and self.replies:
            self.timer = self.loop.call_at(self.replies[0][0], self._send)

    def _send(self) -> None:
        self.timer = None
        now = self.loop.time()
        transport = self.transport
        while self.replies and self.replies[0][0] <= now:
            _, reply, close = self.replies.popleft()
            if transport is not None and not transport.is_closing():
                transport.write(reply)
                if close:
                    transport.close()
        self._arm()

    def answer(self, line: bytes) -> tuple[bytes, bool]:
        verb, _, arg = line.partition(b" ")
        verb = verb.upper()
        self.server.commands += 1
        if verb == b"QUIT":
            return b"+OK bye\r\n", True
        if verb == b"CAPA":
            return b"+OK\r\nUSER\r\nUIDL\r\n.\r\n", False
        if verb == b"NOOP":
            return b"+OK\r\n", False
        if self.logged_in is None:
            return self._authorization(verb, arg), False
        count, size = expected_stat(self.logged_in)
        if verb == b"STAT":
            return b"+OK %d %d\r\n" % (count, size), False
        if verb == b"UIDL":
            uids = b"".join(b"%d u%d-%d\r\n" % (n, self.logged_in, n) for n in range(1, count + 1))
            return b"+OK\r\n" + uids + b".\r\n", False
        return b"-ERR unknown command\r\n", False

    def _authorization(self, verb: bytes, arg: bytes) -> bytes:
        if verb == b"USER" and arg.startswith(b"user") and arg[4:].isdigit():
            self.user = int(arg[4:])
            return b"+OK\r\n"
        if verb == b"PASS" and self.user is not None:
            if arg.decode("ascii", "replace") == mailbox_password(self.user):
                self.logged_in = self.user
                return b"+OK logged in\r\n"
            self.user = None
            return b"-ERR [AUTH] wrong password\r\n"
        return b"-ERR not now\r\n"


class LatencyServer:
    """A tiny POP3 server that delays every reply, on several loopback addresses.

    It knows mailboxes ``user0``, ``user1``... with passwords ``pw0``,
    ``pw1``... and the STAT of :func:`expected_stat`; it speaks USER, PASS,
    STAT, UIDL, CAPA, NOOP and QUIT. Each host gets its own port.
    """

    def __init__(self, hosts: int, delay: float, tls: ssl.SSLContext | None = None) -> None:
        self.hosts = hosts
        self.delay = delay
        self.tls = tls
        self.open = 0
        self.peak = 0
        self.commands = 0
        self.open_by_host: collections.Counter[str] = collections.Counter()
        self.peak_by_host: collections.Counter[str] = collections.Counter()
        self.servers: list[asyncio.Server] = []

    async def start(self) -> list[tuple[str, int]]:
        loop = asyncio.get_running_loop()
        addresses = []
        for index in range(self.hosts):
            host = host_of(index, self.hosts)
            server = await loop.create_server(
                lambda host=host: _Session(self, host),
                host,
                0,
                backlog=4096,
                ssl=self.tls,
            )
            self.servers.append(server)
            addresses.append((host, int(server.sockets[0].getsockname()[1])))
        return addresses


async def _serve(options: dict[str, Any]) -> None:
    raise_file_limit()
    tls = None
    if options.get("certfile"):
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.load_cert_chain(options["certfile"])
    server = LatencyServer(int(options["hosts"]), float(options["delay"]), tls)
    addresses = await server.start()
    print("READY " + json.dumps({"addresses": addresses}), flush=True)
    loop = asyncio.get_running_loop()
    # Commands on stdin, one per line: "stats" prints the counters; end of input stops.
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        if line.strip() == b"stats":
            stats = {
                "open": server.open,
                "peak": server.peak,
                "peak_per_host": max(server.peak_by_host.values(), default=0),
                "commands": server.commands,
            }
            print("STATS " + json.dumps(stats), flush=True)
            server.peak = server.open
            server.peak_by_host = collections.Counter(server.open_by_host)
    for listener in server.servers:
        listener.close()


class ServerProcess:
    """The latency server in a child process; stops when this process closes its stdin.

    With ``certfile`` (certificate and key, PEM) it serves implicit TLS.
    """

    def __init__(self, hosts: int, delay: float, certfile: str | None = None) -> None:
        request = json.dumps({"hosts": hosts, "delay": delay, "certfile": certfile})
        self.process = subprocess.Popen(
            [sys.executable, "-m", "servers.latency", request],
            cwd=_REPOSITORY,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.addresses: list[tuple[str, int]] = [
            (str(host), int(port)) for host, port in self._read("READY")["addresses"]
        ]

    def _read(self, tag: str) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line.startswith(tag + " "):
            self.close()
            raise RuntimeError(f"the latency server said {line!r} instead of {tag}")
        value: dict[str, Any] = json.loads(line[len(tag) + 1 :])
        return value

    def stats(self) -> dict[str, Any]:
        """The server's counters (open connections, peak since last asked, commands)."""
        assert self.process.stdin is not None
        self.process.stdin.write("stats\n")
        self.process.stdin.flush()
        return self._read("STATS")

    def close(self) -> None:
        stop_child(self.process)

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit('usage: python -m servers.latency \'{"hosts": 25, "delay": 0.02}\'')
    asyncio.run(_serve(json.loads(sys.argv[1])))
