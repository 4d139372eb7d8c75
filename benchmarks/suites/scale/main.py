"""``python -m benchmarks scale``: check_many over many mailboxes, and memory per connection.

Two measurements, one run, one report (see benchmarks/README.md, "check_many
at scale"):

1. **Throughput.** 1,000 mailboxes on a server that answers each command
   after 20 ms, checked (connect, USER, PASS, STAT, QUIT) by three clients
   in turn, round after round, each in a fresh process: aiopop's
   ``check_many``; stdlib ``poplib`` in a ``ThreadPoolExecutor`` of 32
   threads; and a bare asyncio loop of raw stream calls under a semaphore
   (the same number of sessions at once as ``check_many``). Medians, and
   per-round ratios.
2. **Memory.** 5,000 aiopop sessions logged in and left idle at once in one
   process: the growth of its resident set, divided by 5,000.

The server (:class:`LatencyServer`) runs in a process of its own
(``python -m benchmarks.suites.scale.main serve``), so that the client's process is
measured alone; it listens on several loopback addresses (127.0.0.1,
127.0.0.2, ...), one per "provider". Only 127.0.0.0/8 is ever contacted.

Internal entry points: ``python -m benchmarks.suites.scale.main serve '<json>'`` (the
server) and ``python -m benchmarks.suites.scale.main worker '<json>'`` (one client run).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import gc
import json
import poplib
import resource
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any

REPOSITORY = Path(__file__).resolve().parents[3]
RESULTS = REPOSITORY / "benchmarks" / "results"
WORKER_TIMEOUT = 300.0
"""Seconds one worker may take before the benchmark gives up."""
SOCKET_TIMEOUT = 60.0
NOISY = 0.10
"""Other programs using more than this share of one CPU during a round make it noisy."""

POPLIB_THREADS = 32
TARGET_VS_POPLIB = 5.0
TARGET_VS_BARE = 0.8
TARGET_KIB_PER_CONNECTION = 64.0

CLIENTS = ("check_many", "poplib-32-threads", "bare-asyncio")


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def raise_file_limit() -> int:
    """Raise this process's soft RLIMIT_NOFILE to the hard limit; return the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def _rss() -> int:
    """The resident set size of this process now, in octets (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status: Linux is needed for memory figures")


# -- the mailboxes -----------------------------------------------------------------------------


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


# -- the server ----------------------------------------------------------------------------------


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
            [sys.executable, "-m", "benchmarks.suites.scale.main", "serve", request],
            cwd=REPOSITORY,
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
        if self.process.stdin is not None:
            with contextlib.suppress(OSError):
                self.process.stdin.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- the clients (each run in a fresh worker process) --------------------------------------------


def _mailboxes(spec: dict[str, Any]) -> list[tuple[int, str, int]]:
    """(number, host, port) of every mailbox of a run."""
    ports = {str(host): int(port) for host, port in spec["addresses"]}
    hosts = len(ports)
    return [(n, host_of(n, hosts), ports[host_of(n, hosts)]) for n in range(int(spec["mailboxes"]))]


def _check_stats(found: Sequence[tuple[int, tuple[int, int]]], mailboxes: int) -> None:
    """Every mailbox answered, with its own STAT."""
    seen = dict(found)
    if len(seen) != mailboxes or len(found) != mailboxes:
        raise RuntimeError(f"{len(seen)} distinct mailboxes answered, not {mailboxes}")
    wrong = [n for n, stat in seen.items() if tuple(stat) != expected_stat(n)]
    if wrong:
        raise RuntimeError(f"wrong STAT for mailboxes {wrong[:10]}")


class _Clock:
    """Wall and CPU seconds of a span."""

    def __enter__(self) -> _Clock:
        self.wall0 = time.perf_counter()
        self.cpu0 = time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self.wall0
        self.cpu = time.process_time() - self.cpu0


async def _run_check_many(spec: dict[str, Any]) -> dict[str, Any]:
    from aiopop._accounts import Account
    from aiopop._many import check_many

    mailboxes = _mailboxes(spec)
    accounts = [
        Account(
            host,
            mailbox_user(n),
            port=port,
            tls="none",
            auth="+USER",
            password=mailbox_password(n),
            allow_cleartext=True,
            timeout=SOCKET_TIMEOUT,
        )
        for n, host, port in mailboxes
    ]
    gc.collect()
    found: list[tuple[int, tuple[int, int]]] = []
    failures: list[str] = []
    with _Clock() as clock:
        async with contextlib.aclosing(
            check_many(
                accounts,
                concurrency=int(spec["concurrency"]),
                per_host=int(spec["per_host"]),
                deadline=SOCKET_TIMEOUT,
            )
        ) as results:
            async for result in results:
                if result.stat is None or result.error is not None:
                    failures.append(f"{result.account.name}: {result.reason}: {result.error!r}")
                else:
                    found.append((int(result.account.user[4:]), tuple(result.stat)))  # type: ignore[arg-type]
    if failures:
        raise RuntimeError(f"{len(failures)} checks failed, first: {failures[0]}")
    _check_stats(found, len(mailboxes))
    return {"seconds": clock.wall, "cpu_seconds": clock.cpu}


async def _bare_session(
    number: int, host: str, port: int, slots: asyncio.Semaphore
) -> tuple[int, tuple[int, int]]:
    async def ok(reader: asyncio.StreamReader) -> bytes:
        line = await reader.readline()
        if not line.startswith(b"+OK"):
            raise RuntimeError(f"mailbox {number}: {line!r}")
        return line

    async with slots:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            await ok(reader)
            writer.write(b"USER %s\r\n" % mailbox_user(number).encode())
            await ok(reader)
            writer.write(b"PASS %s\r\n" % mailbox_password(number).encode())
            await ok(reader)
            writer.write(b"STAT\r\n")
            _, count, size = (await ok(reader)).split()[:3]
            writer.write(b"QUIT\r\n")
            await ok(reader)
        finally:
            writer.close()
            await writer.wait_closed()
    return number, (int(count), int(size))


async def _run_bare(spec: dict[str, Any]) -> dict[str, Any]:
    mailboxes = _mailboxes(spec)
    gc.collect()
    with _Clock() as clock:
        slots = asyncio.Semaphore(int(spec["concurrency"]))
        found = await asyncio.gather(
            *(_bare_session(n, host, port, slots) for n, host, port in mailboxes)
        )
    _check_stats(found, len(mailboxes))
    return {"seconds": clock.wall, "cpu_seconds": clock.cpu}


def _poplib_session(number: int, host: str, port: int) -> tuple[int, tuple[int, int]]:
    client = poplib.POP3(host, port, timeout=SOCKET_TIMEOUT)
    try:
        client.user(mailbox_user(number))
        client.pass_(mailbox_password(number))
        stat = client.stat()
        client.quit()
    finally:
        client.close()
    return number, stat


def _run_poplib(spec: dict[str, Any]) -> dict[str, Any]:
    mailboxes = _mailboxes(spec)
    gc.collect()
    with _Clock() as clock, ThreadPoolExecutor(int(spec["threads"])) as pool:
        found = list(pool.map(lambda m: _poplib_session(*m), mailboxes))
    _check_stats(found, len(mailboxes))
    return {"seconds": clock.wall, "cpu_seconds": clock.cpu}


async def _open_idle(
    spec: dict[str, Any],
    *,
    baseline: Callable[[], object] = lambda: None,
    settle: Callable[[], object] = lambda: None,
) -> tuple[int, int, int]:
    """Open ``mailboxes`` aiopop sessions at once and leave them idle.

    ``baseline()`` is called just before the first one opens (after a
    warm-up), ``settle()`` once all are open and idle. Returns the RSS at
    those two moments, and how many sessions were open and logged in at the
    second. Every session ends with QUIT afterwards.
    """
    from aiopop._accounts import Account
    from aiopop._client import POP3

    mailboxes = _mailboxes(spec)
    cafile = spec.get("cafile")
    context = ssl.create_default_context(cafile=cafile) if cafile else None
    accounts = [
        Account(
            host,
            mailbox_user(n),
            port=port,
            tls="implicit" if context else "none",
            auth="+USER",
            password=mailbox_password(n),
            allow_cleartext=True,
            timeout=SOCKET_TIMEOUT,
            ssl_context=context,
        )
        for n, host, port in mailboxes
    ]
    total = len(accounts)
    opening = asyncio.Semaphore(int(spec["opening"]))
    all_open = asyncio.Event()
    stop = asyncio.Event()
    clients: list[POP3] = []

    async def hold(account: Account) -> None:
        async with contextlib.AsyncExitStack() as stack:
            async with opening:
                client = await stack.enter_async_context(account.session())
            clients.append(client)
            if len(clients) == total:
                all_open.set()
            await stop.wait()

    # Warm up: every code path once, so that lazily built things are not counted.
    for account in accounts[:20]:
        async with account.session() as client:
            await client.noop()
    gc.collect()
    baseline()
    before = _rss()
    tasks = [asyncio.create_task(hold(account)) for account in accounts]
    waiting = asyncio.create_task(all_open.wait())
    await asyncio.wait([waiting, *tasks], return_when=asyncio.FIRST_COMPLETED)
    if not all_open.is_set():
        waiting.cancel()
        stop.set()
        failed = [t for t in tasks if t.done() and t.exception() is not None]
        raise RuntimeError(f"a session failed to open: {failed[0].exception()!r}")
    gc.collect()
    after = _rss()
    connected = sum(client.is_connected for client in clients)
    settle()
    stop.set()
    await asyncio.gather(*tasks)
    return before, after, connected


async def _run_memory(spec: dict[str, Any]) -> dict[str, Any]:
    limit = raise_file_limit()
    before, after, connected = await _open_idle(spec)
    return {
        "rss_before": before,
        "rss_after": after,
        "connections": connected,
        "file_limit": limit,
    }


async def _run_memory_breakdown(spec: dict[str, Any]) -> dict[str, Any]:
    """Where the memory of idle sessions goes, by allocation site (tracemalloc)."""
    import tracemalloc

    raise_file_limit()
    snapshots: list[tracemalloc.Snapshot] = []

    def snap() -> None:
        snapshots.append(tracemalloc.take_snapshot())

    tracemalloc.start(1)
    try:
        await _open_idle(spec, baseline=snap, settle=snap)
    finally:
        tracemalloc.stop()
    first, second = snapshots[0], snapshots[-1]
    count = int(spec["mailboxes"])
    sites = []
    for stat in second.compare_to(first, "lineno")[:15]:
        frame = stat.traceback[0]
        where = f"{_short(frame.filename)}:{frame.lineno}"
        sites.append({"where": where, "bytes_per_connection": stat.size_diff / count})
    by_file = second.compare_to(first, "filename")
    files = [
        {"file": _short(stat.traceback[0].filename), "bytes_per_connection": stat.size_diff / count}
        for stat in by_file[:8]
    ]
    total = sum(stat.size_diff for stat in by_file) / count
    return {"python_bytes_per_connection": total, "files": files, "sites": sites}


def _short(filename: str) -> str:
    for marker in ("/aiopop/", "/benchmarks/", "/asyncio/", "/lib/python3"):
        index = filename.rfind(marker)
        if index >= 0:
            return filename[index + 1 :]
    return filename


WORKERS: dict[str, Callable[[dict[str, Any]], Any]] = {
    "check_many": _run_check_many,
    "poplib-32-threads": _run_poplib,
    "bare-asyncio": _run_bare,
    "memory": _run_memory,
    "memory-breakdown": _run_memory_breakdown,
}


def _worker(request: str) -> None:
    spec: dict[str, Any] = json.loads(request)
    run = WORKERS[spec["client"]]
    outcome = run(spec)
    if asyncio.iscoroutine(outcome):
        outcome = asyncio.run(outcome)
    print(json.dumps(outcome), flush=True)


def run_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one client in a fresh ``python -m benchmarks.suites.scale.main worker`` process."""
    try:
        done = subprocess.run(
            [sys.executable, "-m", "benchmarks.suites.scale.main", "worker", json.dumps(spec)],
            cwd=REPOSITORY,
            capture_output=True,
            text=True,
            timeout=WORKER_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"{spec['client']}: no result within {WORKER_TIMEOUT:g} s") from None
    if done.returncode != 0:
        raise RuntimeError(f"{spec['client']} failed:\n{done.stderr.strip()}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


# -- the run ---------------------------------------------------------------------------------------


def _options(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks scale",
        description="check_many over many mailboxes against poplib in threads and a bare "
        "asyncio loop, and aiopop's memory per idle connection; 127.0.0.0/8 only.",
    )
    parser.add_argument("--rounds", type=int, default=None, help="measured rounds (7; --quick 2)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first (1)")
    parser.add_argument("--mailboxes", type=int, default=1000, help="mailboxes checked (1000)")
    parser.add_argument("--delay", type=float, default=0.020, help="seconds per reply (0.020)")
    parser.add_argument("--hosts", type=int, default=25, help="loopback addresses (25)")
    parser.add_argument(
        "--concurrency", type=int, default=250, help="check_many's and the bare loop's (250)"
    )
    parser.add_argument("--per-host", type=int, default=10, help="check_many's per_host (10)")
    parser.add_argument("--threads", type=int, default=POPLIB_THREADS, help="poplib's (32)")
    parser.add_argument(
        "--connections", type=int, default=5000, help="idle sessions held at once (5000)"
    )
    parser.add_argument(
        "--memory-rounds", type=int, default=None, help="memory runs (3; --quick 1)"
    )
    parser.add_argument("--no-memory", action="store_true", help="skip the memory measurement")
    parser.add_argument(
        "--no-tls-memory",
        dest="tls_memory",
        action="store_false",
        help="memory over plain TCP only",
    )
    parser.add_argument("--no-throughput", action="store_true", help="skip the throughput runs")
    parser.add_argument("--retries", type=int, default=None, help="noisy rounds run again")
    parser.add_argument("--quick", action="store_true", help="a smoke run: fewer rounds")
    parser.add_argument("--json", type=Path, default=None, help="where the JSON result goes")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target fails")
    options = parser.parse_args(argv)
    if options.rounds is None:
        options.rounds = 2 if options.quick else 7
    if options.memory_rounds is None:
        options.memory_rounds = 1 if options.quick else 3
    if options.retries is None:
        options.retries = options.rounds
    partial = options.quick or options.no_memory or options.no_throughput
    options.json = options.json or RESULTS / ("partial-scale.json" if partial else "scale.json")
    if not 1 <= options.hosts <= 254:
        parser.error("--hosts must be between 1 and 254 (127.0.0.1 to 127.0.0.254)")
    if options.rounds < 1 or options.warmup < 0 or options.memory_rounds < 1:
        parser.error("--rounds and --memory-rounds must be at least 1, --warmup at least 0")
    return options


def _throughput(options: argparse.Namespace) -> dict[str, Any]:
    from benchmarks.harness.noise import Meter

    _progress(
        f"throughput: {options.mailboxes} mailboxes on {options.hosts} loopback addresses, "
        f"{options.delay * 1000:g} ms per reply; {options.rounds} rounds of {', '.join(CLIENTS)}"
    )
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in CLIENTS}
    repeated = noisy_kept = 0
    others_total = 0.0
    with ServerProcess(options.hosts, options.delay) as server:
        base = {
            "addresses": server.addresses,
            "mailboxes": options.mailboxes,
            "concurrency": options.concurrency,
            "per_host": options.per_host,
            "threads": options.threads,
        }
        number = -options.warmup
        while number < options.rounds:
            shift = number % len(CLIENTS)
            order = CLIENTS[shift:] + CLIENTS[:shift]
            meter = Meter()
            meter.start()
            began = time.perf_counter()
            seen: dict[str, dict[str, Any]] = {}
            for name in order:
                server.stats()  # resets the peaks
                seen[name] = run_worker({**base, "client": name})
                stats = server.stats()
                seen[name]["peak_sessions"] = stats["peak"]
                seen[name]["peak_sessions_per_host"] = stats["peak_per_host"]
                if stats["open"]:
                    raise RuntimeError(f"{name} left {stats['open']} connections open")
            others = meter.others() or 0.0
            share = others / (time.perf_counter() - began)
            what = "warm-up" if number < 0 else f"round {number + 1}/{options.rounds}"
            timings = ", ".join(f"{name} {seen[name]['seconds']:.3f} s" for name in CLIENTS)
            busy = f" (others used {share:.0%} of a CPU)" if share > NOISY else ""
            if number >= 0 and share > NOISY and repeated < options.retries:
                repeated += 1
                _progress(f"  {what}: {timings}{busy}: noisy, running it again")
                continue
            _progress(f"  {what}: {timings}{busy}")
            if number >= 0:
                for name in CLIENTS:
                    runs[name].append(seen[name])
                noisy_kept += share > NOISY
                others_total += others
            number += 1
    return {"runs": runs, "repeated": repeated, "noisy_kept": noisy_kept, "others": others_total}


def _memory(options: argparse.Namespace) -> dict[str, Any]:
    count = options.connections
    found: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="scale-tls-") as directory:
        certfile = cafile = None
        if options.tls_memory:
            certfile, cafile = _certificates(Path(directory), options.hosts)
        variants: list[tuple[str, str | None, str | None]] = [("plain", None, None)]
        if options.tls_memory:
            variants.append(("TLS", certfile, cafile))
        for name, cert, ca in variants:
            _progress(
                f"memory, {name}: {count} idle aiopop sessions at once, "
                f"{options.memory_rounds} runs"
            )
            runs = []
            with ServerProcess(options.hosts, 0.0, cert) as server:
                base = {
                    "addresses": server.addresses,
                    "mailboxes": count,
                    "opening": 200,
                    "cafile": ca,
                }
                for number in range(options.memory_rounds):
                    runs.append(_memory_run(server, base, count))
                    _progress(
                        f"  run {number + 1}/{options.memory_rounds}: RSS "
                        f"{runs[-1]['rss_before'] / 2**20:.1f} -> "
                        f"{runs[-1]['rss_after'] / 2**20:.1f} MiB, "
                        f"{runs[-1]['kib_per_connection']:.1f} KiB per connection"
                    )
                sample = min(count, 1000)
                _progress(f"  where the memory goes: tracemalloc over {sample} sessions")
                breakdown = run_worker({**base, "mailboxes": sample, "client": "memory-breakdown"})
            found[name] = {"runs": runs, "breakdown": breakdown}
    return found


def _memory_run(server: ServerProcess, base: dict[str, Any], count: int) -> dict[str, Any]:
    run = run_worker({**base, "client": "memory"})
    stats = server.stats()
    if run["connections"] != count or stats["peak"] < count:
        raise RuntimeError(
            f"only {run['connections']} sessions were open at once (the server saw {stats['peak']})"
        )
    run["kib_per_connection"] = (run["rss_after"] - run["rss_before"]) / count / 1024
    return run


def _certificates(directory: Path, hosts: int) -> tuple[str, str]:
    """A throw-away CA and a certificate for every loopback address used: (certfile, cafile)."""
    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert(*(host_of(n, hosts) for n in range(hosts)))
    certfile, cafile = directory / "server.pem", directory / "ca.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(certfile))
    ca.cert_pem.write_to_path(str(cafile))
    return str(certfile), str(cafile)


def _ratios(runs: dict[str, list[dict[str, Any]]], client: str, reference: str) -> list[float]:
    """Per round: the reference's time / the client's time (above 1: the client is faster)."""
    return [
        ref["seconds"] / mine["seconds"]
        for mine, ref in zip(runs[client], runs[reference], strict=True)
    ]


def _report(
    out: IO[str],
    options: argparse.Namespace,
    machine: str,
    throughput: dict[str, Any] | None,
    memory: dict[str, Any] | None,
) -> list[dict[str, Any]]:
    verdicts: list[dict[str, Any]] = []
    print(f"machine: {machine}", file=out)
    if throughput is not None:
        runs = throughput["runs"]
        print(
            f"\n{options.mailboxes} mailboxes on {options.hosts} loopback addresses, "
            f"{options.delay * 1000:g} ms per reply (USER, PASS, STAT, QUIT); "
            f"check_many concurrency={options.concurrency}, per_host={options.per_host}; "
            f"bare asyncio: the same concurrency; poplib: {options.threads} threads; "
            f"{options.rounds} rounds after {options.warmup} warm-up, clients alternating\n",
            file=out,
        )
        header = (
            f"{'client':<18} {'median s':>9} {'mailboxes/s':>12} {'CPU s':>7} "
            f"{'CPU ms/mailbox':>15} {'peak sessions':>14} {'per host':>9}"
        )
        print(header, file=out)
        print("-" * len(header), file=out)
        for name in CLIENTS:
            client_runs = runs[name]
            seconds = statistics.median(r["seconds"] for r in client_runs)
            cpu = statistics.median(r["cpu_seconds"] for r in client_runs)
            peak = max(r["peak_sessions"] for r in client_runs)
            per_host = max(r["peak_sessions_per_host"] for r in client_runs)
            print(
                f"{name:<18} {seconds:>9.3f} {options.mailboxes / seconds:>12.0f} "
                f"{cpu:>7.3f} {cpu / options.mailboxes * 1000:>15.3f} {peak:>14} {per_host:>9}",
                file=out,
            )
        print(
            "\nratios, median over rounds of (the reference's time / check_many's time)",
            file=out,
        )
        for reference, target, label in (
            ("poplib-32-threads", TARGET_VS_POPLIB, "check_many speedup over poplib in threads"),
            ("bare-asyncio", TARGET_VS_BARE, "check_many as a fraction of the bare loop"),
        ):
            ratios = _ratios(runs, "check_many", reference)
            median = statistics.median(ratios)
            print(
                f"  {label:<45} {median:6.2f}x   (rounds {min(ratios):.2f} to {max(ratios):.2f})",
                file=out,
            )
            verdicts.append(
                {
                    "status": "PASS" if median >= target else "FAIL",
                    "what": f"{options.mailboxes} mailboxes at {options.delay * 1000:g} ms "
                    f"per reply: {label}",
                    "value": median,
                    "target": f">= {target:g}x",
                }
            )
        noise = (
            f"{throughput['repeated']} rounds run again, {throughput['noisy_kept']} noisy "
            f"rounds kept; other programs used {throughput['others']:.1f} CPU s in the kept rounds"
        )
        print(f"\nnoise: {noise}", file=out)
    if memory is not None:
        for name, variant in memory.items():
            per = [run["kib_per_connection"] for run in variant["runs"]]
            worst = max(per)
            first = variant["runs"][0]
            print(
                f"\nmemory, {name}: {options.connections} aiopop sessions (USER/PASS, each "
                f"held by a task) logged in and idle at once in one process; RSS growth / "
                f"{options.connections}: median {statistics.median(per):.1f} KiB, worst "
                f"{worst:.1f} KiB over {len(per)} runs (RSS before "
                f"{first['rss_before'] / 2**20:.1f} MiB, file limit {first['file_limit']})",
                file=out,
            )
            breakdown = variant["breakdown"]
            print(
                f"  tracemalloc: {breakdown['python_bytes_per_connection'] / 1024:.1f} KiB of "
                "Python allocations per session (OpenSSL's own memory is not seen); "
                "octets per session by file:",
                file=out,
            )
            files = breakdown["files"][:6]
            print(
                "    " + ", ".join(f"{f['file']} {f['bytes_per_connection']:.0f}" for f in files),
                file=out,
            )
            print("  the largest allocation sites (octets per session):", file=out)
            for site in breakdown["sites"][:6]:
                print(f"    {site['bytes_per_connection']:8.0f}  {site['where']}", file=out)
            verdicts.append(
                {
                    "status": "PASS" if worst <= TARGET_KIB_PER_CONNECTION else "FAIL",
                    "what": f"memory per open, idle connection, {name} "
                    f"({options.connections} at once), worst run",
                    "value": worst,
                    "target": f"<= {TARGET_KIB_PER_CONNECTION:g} KiB",
                }
            )
    print("", file=out)
    for verdict in verdicts:
        unit = " KiB" if "KiB" in verdict["target"] else "x"
        print(
            f"{verdict['status']}  {verdict['what']}: {verdict['value']:.2f}{unit} "
            f"(target {verdict['target']})",
            file=out,
        )
    return verdicts


def main(argv: Sequence[str] | None = None) -> int:
    """Run the throughput rounds and the memory runs, print the report, write the JSON."""
    from benchmarks.harness.machine import machine_info, one_line

    options = _options(argv)
    raise_file_limit()
    began = time.perf_counter()
    machine = machine_info(REPOSITORY)
    try:
        throughput = None if options.no_throughput else _throughput(options)
        memory = None if options.no_memory else _memory(options)
    except RuntimeError as exc:
        print(f"benchmark aborted: {exc}", file=sys.stderr)
        return 2
    verdicts = _report(sys.stdout, options, one_line(machine), throughput, memory)
    elapsed = time.perf_counter() - began
    print(f"\ntotal run time {elapsed:.0f} s", file=sys.stdout)
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(options).items()}
    options.json.parent.mkdir(parents=True, exist_ok=True)
    options.json.write_text(
        json.dumps(
            {
                "machine": machine,
                "settings": settings,
                "throughput": throughput,
                "memory": memory,
                "verdicts": verdicts,
                "elapsed": elapsed,
            },
            indent=1,
        )
        + "\n"
    )
    print(f"JSON: {options.json}")
    return 1 if options.strict and any(v["status"] == "FAIL" for v in verdicts) else 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "serve":
        asyncio.run(_serve(json.loads(sys.argv[2])))
    elif len(sys.argv) == 3 and sys.argv[1] == "worker":
        _worker(sys.argv[2])
    else:
        sys.exit(main())
