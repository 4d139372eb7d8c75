"""The scale suite's clients, each run in a fresh process.

``python -m benchmarks.suites.scale.clients '<json>'`` runs the client the
request names (check_many, poplib in threads, the bare asyncio loop, or the
memory runs) against :mod:`servers.latency` and prints one line of JSON.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import poplib
import ssl
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from benchmarks.harness.measure import resident as _rss
from servers.latency import expected_stat, host_of, mailbox_password, mailbox_user, raise_file_limit

__all__ = ["WORKERS"]

SOCKET_TIMEOUT = 60.0


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


if __name__ == "__main__":
    _worker(sys.argv[1])
