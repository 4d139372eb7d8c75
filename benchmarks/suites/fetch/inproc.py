"""The fetch suite's own client runs, each in a process of its own.

``python -m benchmarks.suites.fetch.inproc ceiling '<json>'``: the raw-socket
ceiling; ``... ceiling-many '<json>'``: the same for several accounts at once
(see :func:`run_ceiling_many`); ``... inproc '<json>'``: ``aiopop.fetch_to_maildir`` in one Python
process with its parts timed; ``... profile '<json>'``: aiopop's steps timed
(see :func:`run_profile`). Only what a client run needs is imported: the raw
socket's start-up is part of its time, so this module imports nothing of
the benchmark itself.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from typing import TYPE_CHECKING, Any

__all__ = ["ENTRIES", "run_ceiling", "run_ceiling_many", "run_inproc", "run_profile"]

SOCKET_TIMEOUT = 60.0
KIB = 1024

if TYPE_CHECKING:
    import aiopop._accounts


def _benchmark_account(request: dict[str, Any]) -> aiopop.Account:
    """The Dovecot account every client uses: USER/PASS in the clear, on loopback."""
    # Imported here: the workers time aiopop's imports themselves.
    from aiopop._accounts import Account

    return Account(
        request["host"],
        request["user"],
        port=request["port"],
        tls="none",
        auth="+USER",
        allow_cleartext=True,
    ).with_secret(password=request["password"])


# -- the raw-socket ceiling (a client run of its own) -----------------------------------------


class _Replies:
    """The server's replies, read from a blocking socket into one growing buffer."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = bytearray()
        self.start = 0

    def fill(self) -> None:
        data = self.sock.recv(1024 * 1024)
        if not data:
            raise ConnectionError("the server closed the connection")
        self.buffer += data

    def line(self) -> bytes:
        """One status line, without CRLF; ``-ERR`` raises."""
        while (end := self.buffer.find(b"\r\n", self.start)) < 0:
            self.fill()
        line = bytes(self.buffer[self.start : end])
        self.start = end + 2
        if not line.startswith(b"+OK"):
            raise ConnectionError(f"the server said {line!r}")
        return line

    def message(self) -> bytes:
        """One multi-line reply's content, still dot-stuffed, with its last CRLF."""
        self.line()
        body = self.start
        scan = body - 2  # an empty message: the terminator follows the status line at once
        while (end := self.buffer.find(b"\r\n.\r\n", scan)) < 0:
            scan = max(body - 2, len(self.buffer) - 4)
            self.fill()
        content = bytes(self.buffer[body : end + 2])
        self.start = end + 5
        if self.start >= 256 * KIB:
            del self.buffer[: self.start]
            self.start = 0
        return content


def _write_durably(directory: str, name: str, data: bytes) -> None:
    """Create ``directory/tmp/name`` holding ``data``, fsync it, rename it into ``new/``."""
    temporary = f"{directory}/tmp/{name}"
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(descriptor, view) :]
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
    os.rename(temporary, f"{directory}/new/{name}")


def run_ceiling(request: dict[str, Any]) -> None:
    """Log in, pipeline every RETR, write each message durably into the Maildir, QUIT."""
    maildir = request["maildir"]
    sock = socket.create_connection((request["host"], request["port"]), timeout=SOCKET_TIMEOUT)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    replies = _Replies(sock)
    replies.line()
    sock.sendall(b"USER %s\r\n" % request["user"].encode())
    replies.line()
    sock.sendall(b"PASS %s\r\n" % request["password"].encode())
    replies.line()
    sock.sendall(b"STAT\r\n")
    count = int(replies.line().split()[1])
    sock.sendall(b"".join(b"RETR %d\r\n" % number for number in range(1, count + 1)))
    prefix = f"{int(time.time())}.P{os.getpid()}Q"
    host = socket.gethostname()
    for number in range(1, count + 1):
        stuffed = replies.message()
        content = stuffed.replace(b"\r\n..", b"\r\n.")
        if content.startswith(b".."):
            content = content[1:]
        _write_durably(maildir, f"{prefix}{number}.{host}", content.replace(b"\r\n", b"\n"))
    directory = os.open(f"{maildir}/new", os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
    sock.sendall(b"QUIT\r\n")
    replies.line()
    sock.close()


def run_ceiling_many(request: dict[str, Any]) -> None:
    """:func:`run_ceiling` for each of ``request["accounts"]`` at once, a thread each.

    At once rather than one after the other: ``aiopop fetch ACCOUNTS.toml``
    fetches its accounts at once, and a ceiling has to be the fastest way
    a Python process can do the same work. The threads overlap what one
    account's socket cannot: fsyncs, Dovecot's work for another user, the
    round trips of login and QUIT (all of them release the GIL).
    """
    import threading

    failures: list[BaseException] = []

    def one(account: dict[str, Any]) -> None:
        try:
            run_ceiling(account)
        except BaseException as exc:  # reported by the main thread
            failures.append(exc)

    threads = [threading.Thread(target=one, args=(a,)) for a in request["accounts"]]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise failures[0]


# -- aiopop in-process, its parts timed (a client run of its own) -----------------------------


def run_inproc(request: dict[str, Any]) -> None:
    """Import aiopop's command, log in, ``fetch_to_maildir``, QUIT; write the times as JSON."""
    began = time.perf_counter()
    import asyncio

    import aiopop._cli  # noqa: F401  # what the `aiopop` command imports
    from aiopop._fetch import fetch_to_maildir
    from benchmarks.harness.measure import Span

    imported = time.perf_counter()
    span = Span()
    times: dict[str, float] = {"import": imported - began}

    async def download() -> int:
        account = _benchmark_account(request)
        connecting = time.perf_counter()
        async with account.session() as client:
            times["connect_login"] = time.perf_counter() - connecting
            span.start()
            result = await fetch_to_maildir(client, request["maildir"], account=account.mailbox_key)
            span.stop()
            quitting = time.perf_counter()
        times["quit"] = time.perf_counter() - quitting
        return len(result.delivered)

    delivered = asyncio.run(download())
    times["fetch_to_maildir"] = span.wall
    report = {
        "times": times,
        "fetch_cpu": span.cpu,
        "fetch_peak_rss": span.peak,
        "delivered": delivered,
    }
    with open(request["report"], "w") as out:
        json.dump(report, out)


# -- where fetch_to_maildir's time goes (a profiling run of its own) --------------------------


def run_profile(request: dict[str, Any]) -> None:
    """``run_inproc`` with aiopop's steps timed, and pyinstrument's profile when installed.

    The steps are timed by wrapping aiopop's internals (private names, so a
    step that is not found is left out): waiting for the next pipelined
    message (RETR), waiting for a free write slot (the writes and their
    fsyncs, in worker threads), big messages streamed to disk, the batch
    commits (all of it; the SQLite transactions; the renames into ``new/``
    and the fsync of ``new/``), and the start (state database, recovery,
    UIDL and LIST).
    """
    import asyncio
    import collections
    import contextlib
    import functools
    import inspect
    from collections.abc import AsyncIterator, Awaitable, Callable

    import aiopop._cli
    import aiopop._delivery_state
    import aiopop._fetch
    import aiopop._fetch_run
    import aiopop._maildir

    spent: collections.defaultdict[str, float] = collections.defaultdict(float)
    calls: collections.Counter[str] = collections.Counter()

    def timed(label: str, function: Callable[..., Awaitable[Any]]) -> Callable[..., Any]:
        @functools.wraps(function)
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            began = time.perf_counter()
            try:
                return await function(*args, **kwargs)
            finally:
                spent[label] += time.perf_counter() - began
                calls[label] += 1

        return wrapper

    def timed_generator(label: str, function: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(function)
        async def wrapper(*args: Any, **kwargs: Any) -> AsyncIterator[Any]:
            items = function(*args, **kwargs)
            async with contextlib.aclosing(items):
                while True:
                    began = time.perf_counter()
                    try:
                        item = await items.__anext__()
                    except StopAsyncIteration:
                        return
                    finally:
                        spent[label] += time.perf_counter() - began
                        calls[label] += 1
                    yield item

        return wrapper

    probes = [
        (aiopop._fetch_run, "_each", "RETR: waiting for the next pipelined message", True),
        (aiopop._fetch, "_listings", "start: UIDL and LIST", False),
        (aiopop._fetch, "recover", "start: recovery check", False),
        (aiopop.DeliveryState, "open", "start: opening the state database", False),
        (aiopop.Maildir, "write", "big messages: RETR streamed to tmp/, fsync", False),
        (aiopop._fetch_run._Run, "_commit", "batch commits, all of it", False),
        (aiopop.DeliveryState, "commit", "  of which SQLite transactions", False),
        (aiopop.Maildir, "publish", "  of which renames into new/ + fsync new/", False),
    ]
    for owner, name, label, generator in probes:
        original = getattr(owner, name, None)
        if original is not None:
            wrapped = (timed_generator if generator else timed)(label, original)
            # A classmethod comes out bound: put it back as a static method.
            setattr(owner, name, staticmethod(wrapped) if inspect.ismethod(original) else wrapped)
    fetch_asyncio = getattr(aiopop._fetch_run, "asyncio", None)
    if fetch_asyncio is asyncio:
        # _fetch_run.py waits with asyncio.wait only for a free write slot.
        class _Asyncio:
            def __getattr__(self, name: str) -> Any:
                return getattr(asyncio, name)

            wait = staticmethod(
                timed("small messages: waiting for a free write slot", asyncio.wait)
            )

        setattr(aiopop._fetch_run, "asyncio", _Asyncio())  # noqa: B010

    async def download() -> float:
        account = _benchmark_account(request)
        async with account.session() as client:
            began = time.perf_counter()
            await aiopop.fetch_to_maildir(
                client,
                request["maildir"],
                account=account.mailbox_key,
            )
            return time.perf_counter() - began

    profiler: Any = None
    with contextlib.suppress(ImportError):
        from pyinstrument import Profiler

        profiler = Profiler(interval=0.0005)
    if profiler is not None:
        profiler.start()
    total = asyncio.run(download())
    text = None
    if profiler is not None:
        profiler.stop()
        text = profiler.output_text(unicode=False, color=False)
    report = {
        "fetch_to_maildir": total,
        "steps": {label: [spent[label], calls[label]] for label in spent},
        "pyinstrument": text,
    }
    with open(request["report"], "w") as out:
        json.dump(report, out)


ENTRIES = {
    "ceiling": run_ceiling,
    "ceiling-many": run_ceiling_many,
    "inproc": run_inproc,
    "profile": run_profile,
}


def _entry(argv: list[str]) -> int | None:
    """The internal entry points; None when ``argv`` is not one of them."""
    if len(argv) == 2 and argv[0] in ENTRIES:
        ENTRIES[argv[0]](json.loads(argv[1]))
        return 0
    return None


if __name__ == "__main__":
    code = _entry(sys.argv[1:])
    if code is None:
        print(
            "usage: python -m benchmarks.suites.fetch.inproc "
            "ceiling|ceiling-many|inproc|profile '<json>'"
        )
    sys.exit(2 if code is None else code)
