"""``python -m benchmarks fetch``: ``aiopop fetch`` against the POP3 downloaders people use.

One run, one report (see benchmarks/README.md, "aiopop fetch against mpop,
fetchmail and getmail6"). A private Dovecot (``servers/dovecot.py``) on
127.0.0.1 serves two mailboxes, 2,000 x 8 KB and 5 x 5 MB, over plain POP3
with USER/PASS. Round after round, clients alternating, each client run
downloads a whole mailbox into a fresh Maildir of its own, keeping the mail
on the server, with no UID state from an earlier run:

* ``aiopop fetch``: the command as a user runs it, ``aiopop fetch ...
  --maildir DIR`` (process start-up included), from a venv of its own
  where this checkout is installed with ``pip install .``;
* ``aiopop in-process``: the same download in a Python process that times
  its parts (imports, login, :func:`aiopop.fetch_to_maildir`, QUIT),
  so that the command's start-up cost is visible; its *seconds* are the
  ``fetch_to_maildir`` call alone;
* ``mpop`` (C, pipelining), ``fetchmail`` (with a small MDA that writes into
  ``tmp/``, fsyncs and renames into ``new/``) and ``getmail6`` (as the
  unprivileged user ``nobody``: it refuses to write a Maildir as root),
  configured as /work/shared/peers.md says;
* ``raw socket``: the ceiling, a Python process with one blocking socket that
  sends every RETR at once, cuts the replies apart, unstuffs them, and writes
  each message into ``tmp/``, fsyncs it and renames it into ``new/`` (one
  fsync of ``new/`` before QUIT).

Every client fsyncs every message. Every process is started by a small
launcher (C when a compiler is there) that measures it from ``fork`` to
``wait4``: wall seconds, CPU seconds (user + system, with the children it
reaped: fetchmail's MDAs) and peak RSS (``ru_maxrss``, the largest of the
process and its reaped children; a launcher of its own keeps the
benchmark's own memory out of it). After each run, outside the timing, the
Maildir is checked: every stored message exactly once (line ends made LF;
the headers a peer puts in front are counted, not compared) and nothing
else. Every run's Maildir is kept until the end of the benchmark: on this
machine's ext4, deleting a large Maildir slows file creation for about a
minute.

Internal entry points: ``python -m benchmarks.suites.fetch.main ceiling '<json>'`` and
``python -m benchmarks.suites.fetch.main inproc '<json>'`` (one client run each).
Only 127.0.0.1 is ever contacted.
"""

from __future__ import annotations

# Only what a client run needs is imported up here: the raw socket's start-up is
# part of its time. The benchmark's own imports follow the client runs below.
import json
import os
import socket
import sys
import time
from typing import TYPE_CHECKING, Any

__all__ = ["main"]

PASSWORD_ENV = "AIOPOP_BENCH_PASSWORD"
SOCKET_TIMEOUT = 60.0
NOISY = 0.10
"""Other programs using more than this share of one CPU during a round make it noisy."""
KIB = 1024
MIB = 1024 * 1024

AIOPOP = "aiopop fetch"
INPROC = "aiopop in-process"
MPOP = "mpop"
FETCHMAIL = "fetchmail"
GETMAIL = "getmail6"
CEILING = "raw socket"
CLIENTS = (AIOPOP, INPROC, MPOP, FETCHMAIL, GETMAIL, CEILING)
FLAKY = frozenset({GETMAIL})
"""Clients whose failed runs are recorded as aborts instead of stopping the benchmark."""

TARGETS = (
    (GETMAIL, 1.0, "faster than getmail6", ">"),
    (FETCHMAIL, 1.0, "faster than fetchmail", ">"),
    (MPOP, 1.0, "at least 1.0x mpop", ">="),
    (CEILING, 0.8, "at least 0.8x the raw socket ceiling", ">="),
)
"""aiopop fetch's targets: (reference, minimum of reference time / aiopop time, words, test)."""


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


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


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


ENTRIES = {"ceiling": run_ceiling, "inproc": run_inproc, "profile": run_profile}


def _entry(argv: list[str]) -> int | None:
    """The internal entry points; None when ``argv`` is not one of them."""
    if len(argv) == 2 and argv[0] in ENTRIES:
        ENTRIES[argv[0]](json.loads(argv[1]))
        return 0
    return None


if __name__ == "__main__" and len(sys.argv) > 1 and sys.argv[1] in ENTRIES:
    # A client run: nothing else of the benchmark is imported.
    sys.exit(_entry(sys.argv[1:]))

# -- the benchmark -----------------------------------------------------------------------------

import argparse  # noqa: E402
import contextlib  # noqa: E402
import hashlib  # noqa: E402
import pwd  # noqa: E402
import re  # noqa: E402
import shlex  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
from collections import Counter  # noqa: E402
from collections.abc import Sequence  # noqa: E402
from dataclasses import asdict, dataclass, field, replace  # noqa: E402
from pathlib import Path  # noqa: E402

REPOSITORY = Path(__file__).resolve().parents[3]
RESULTS = REPOSITORY / "benchmarks" / "results"
ENTRY = "benchmarks.suites.fetch.main"
"""The module whose internal entry points run one client (see the docstring)."""
CACHE = REPOSITORY / ".cache"
RUN_TIMEOUT = 120.0
"""Seconds one client run may take before it is killed (and, for getmail6, counted aborted)."""
PROFILES = CACHE / "bench-profiles"
STARTUP_MODULES = (
    "site",
    "aiopop",
    "aiopop.sasl",
    "scramp",
    "importlib.metadata",
    "aiopop._connection",
    "asyncio",
    "ssl",
    "aiopop._cli",
    "aiopop._fetch",
    "aiopop._maildir",
    "aiofiles",
    "sqlite3",
    "aiopop._demo",
    "aiopop.testing",
)
"""Modules whose import time the start-up analysis shows (cumulative, first import)."""
PROBE_FILES = 50
"""Files created (and kept) before each round, to see how fast this file system creates them."""
PEER_PACKAGES = {MPOP: "mpop", FETCHMAIL: "fetchmail", GETMAIL: "getmail6"}
PEER_PROGRAMS = {MPOP: "mpop", FETCHMAIL: "fetchmail", GETMAIL: "getmail"}

FULL = (("2000x8KB", "fetch8k", 2000, 8 * KIB), ("5x5MB", "fetch5m", 5, 5 * MIB))
QUICK = (("200x8KB", "fetch8k", 200, 8 * KIB), ("2x5MB", "fetch5m", 2, 5 * MIB))

LAUNCHER_C = r"""
/* bench-run OUT UID GID PROGRAM [ARG...]: run PROGRAM (as UID and GID unless -1) and write to
   OUT its wall seconds (fork to wait4), exit status, and CPU seconds and peak RSS (itself and
   the children it reaped). A small process of its own, so that no parent's memory is charged
   to PROGRAM's peak (after vfork or fork, exec carries the old peak over). */
#define _GNU_SOURCE
#include <errno.h>
#include <grp.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc < 5) {
        fprintf(stderr, "usage: bench-run OUT UID GID PROGRAM [ARG...]\n");
        return 2;
    }
    long uid = strtol(argv[2], NULL, 10), gid = strtol(argv[3], NULL, 10);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    pid_t pid = fork();
    if (pid < 0) {
        perror("fork");
        return 2;
    }
    if (pid == 0) {
        if (gid >= 0 && (setgroups(0, NULL) != 0 || setgid((gid_t)gid) != 0)) {
            perror("setgid");
            _exit(127);
        }
        if (uid >= 0 && setuid((uid_t)uid) != 0) {
            perror("setuid");
            _exit(127);
        }
        execvp(argv[4], argv + 4);
        perror(argv[4]);
        _exit(127);
    }
    int status;
    struct rusage usage;
    while (wait4(pid, &status, 0, &usage) < 0) {
        if (errno != EINTR) {
            perror("wait4");
            return 2;
        }
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    FILE *out = fopen(argv[1], "w");
    if (out == NULL) {
        perror(argv[1]);
        return 2;
    }
    fprintf(out,
            "{\"wall\": %.6f, \"exit\": %d, \"signal\": %d, \"user\": %.6f, \"system\": %.6f, "
            "\"maxrss_kib\": %ld}\n",
            (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9,
            WIFEXITED(status) ? WEXITSTATUS(status) : -1,
            WIFSIGNALED(status) ? WTERMSIG(status) : 0,
            (double)usage.ru_utime.tv_sec + (double)usage.ru_utime.tv_usec / 1e6,
            (double)usage.ru_stime.tv_sec + (double)usage.ru_stime.tv_usec / 1e6, usage.ru_maxrss);
    return fclose(out) == 0 ? 0 : 2;
}
"""

MDA_C = r"""
/* bench-mda MAILDIR: one message from stdin into MAILDIR/tmp/NAME, fsync, rename into new/. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/time.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: bench-mda MAILDIR\n");
        return 64;
    }
    size_t size = 0, room = 1 << 16;
    char *data = malloc(room);
    for (;;) {
        if (data == NULL) {
            perror("malloc");
            return 75;
        }
        if (size == room) {
            room *= 2;
            data = realloc(data, room);
            continue;
        }
        ssize_t got = read(0, data + size, room - size);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0) {
            perror("read");
            return 75;
        }
        if (got == 0)
            break;
        size += (size_t)got;
    }
    struct timeval now;
    gettimeofday(&now, NULL);
    char host[256] = "localhost";
    gethostname(host, sizeof host - 1);
    char name[512], temporary[4096], final[4096];
    snprintf(name, sizeof name, "%ld.M%ldP%d.%s", (long)now.tv_sec, (long)now.tv_usec,
             (int)getpid(), host);
    snprintf(temporary, sizeof temporary, "%s/tmp/%s", argv[1], name);
    snprintf(final, sizeof final, "%s/new/%s", argv[1], name);
    int fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        perror(temporary);
        return 75;
    }
    for (size_t done = 0; done < size;) {
        ssize_t put = write(fd, data + done, size - done);
        if (put < 0 && errno == EINTR)
            continue;
        if (put < 0) {
            perror("write");
            unlink(temporary);
            return 75;
        }
        done += (size_t)put;
    }
    if (fsync(fd) != 0 || close(fd) != 0 || rename(temporary, final) != 0) {
        perror(temporary);
        unlink(temporary);
        return 75;
    }
    return 0;
}
"""

# The same two in Python, for a machine without a C compiler (slower: a Python start per
# message for the MDA). No "%" in the MDA: fetchmail expands %-escapes in its mda string.
LAUNCHER_PY = """
import json, os, sys, time
out, uid, gid = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
began = time.monotonic()
pid = os.fork()
if pid == 0:
    try:
        if gid >= 0:
            os.setgroups([])
            os.setgid(gid)
        if uid >= 0:
            os.setuid(uid)
        os.execvp(sys.argv[4], sys.argv[4:])
    finally:
        os._exit(127)
_, status, usage = os.wait4(pid, 0)
wall = time.monotonic() - began
with open(out, "w") as file:
    json.dump({"wall": wall, "exit": os.WEXITSTATUS(status) if os.WIFEXITED(status) else -1,
               "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else 0,
               "user": usage.ru_utime, "system": usage.ru_stime,
               "maxrss_kib": usage.ru_maxrss}, file)
"""
MDA_PY = """
import os, socket, sys, time
data = sys.stdin.buffer.read()
name = "{}.P{}.{}".format(time.time_ns(), os.getpid(), socket.gethostname())
tmp = os.path.join(sys.argv[1], "tmp", name)
fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
view = memoryview(data)
while view:
    view = view[os.write(fd, view):]
os.fsync(fd)
os.close(fd)
os.rename(tmp, os.path.join(sys.argv[1], "new", name))
"""


class BenchmarkAbortedError(Exception):
    """A client (other than getmail6) failed or delivered wrong: the numbers cannot be trusted."""


class CheckError(Exception):
    """A Maildir does not hold exactly the mailbox."""


@dataclass(frozen=True)
class Mailbox:
    """A mailbox on the private Dovecot, and what a Maildir must hold after a download."""

    key: str
    user: str
    count: int
    size: int
    host: str
    port: int
    password: str
    octets: int
    """Its messages' octets as stored (CRLF line ends), as LIST counts them."""
    expected: dict[str, int] = field(repr=False)
    """SHA-256 of each message with LF line ends (as Maildir files hold mail) -> how many."""
    lengths: tuple[int, ...] = ()
    """The distinct lengths of those LF forms."""


@dataclass(frozen=True)
class Tools:
    """How client processes are started and measured, and fetchmail's MDA."""

    launcher: list[str]
    mda: list[str]
    compiled: bool
    """True: the launcher and the MDA are C programs built here; False: Python fallbacks."""
    programs: dict[str, str]
    versions: dict[str, str]
    aiopop: str = ""
    """The ``aiopop`` console script of a venv with this checkout installed as users install it."""


@dataclass
class Run:
    """One client run: its measurements and what it delivered."""

    client: str
    workload: str
    round: int
    """1, 2, ... (warm-up rounds are not kept)."""
    seconds: float = 0.0
    """What is compared: the process, start to exit (for aiopop in-process: fetch_to_maildir)."""
    process_seconds: float = 0.0
    cpu_seconds: float = 0.0
    peak_rss_mib: float = 0.0
    ok: bool = True
    problem: str | None = None
    delivered: int = 0
    octets_on_disk: int = 0
    header_octets: int = 0
    """Octets of the headers the client put in front of the messages."""
    parts: dict[str, float] = field(default_factory=dict)
    """aiopop in-process: seconds of import, connect_login, fetch_to_maildir, quit."""
    directory: str = ""


@dataclass
class Workload:
    """A mailbox's kept runs by client, in round order, and how the rounds went."""

    mailbox: Mailbox
    runs: dict[str, list[Run]]
    rounds: list[dict[str, Any]] = field(default_factory=list)
    repeated: int = 0
    noisy_kept: int = 0
    aborted: list[Run] = field(default_factory=list)
    """Runs of a flaky client (getmail6) that failed, warm-up and repeated rounds included."""
    profile: dict[str, Any] | None = None
    """aiopop's steps in one more in-process run, when a target failed."""


# -- helpers -----------------------------------------------------------------------------------


def _load() -> float:
    """The 1-minute load average."""
    return float(Path("/proc/loadavg").read_text().split()[0])


def _wait_for_quiet(maximum: float, patience: float) -> dict[str, Any]:
    """Poll until the 1-minute load is below ``maximum`` or ``patience`` seconds passed."""
    began = time.monotonic()
    load = _load()
    while load >= maximum and time.monotonic() - began < patience:
        _progress(f"load {load:.2f} >= {maximum:g}: waiting ({time.monotonic() - began:.0f} s)")
        time.sleep(15)
        load = _load()
    waited = time.monotonic() - began
    reached = load < maximum
    if not reached:
        _progress(f"load still {load:.2f} after {waited:.0f} s: measuring anyway")
    return {"load_at_start": load, "waited_seconds": round(waited), "below_maximum": reached}


def _package_version(package: str) -> str:
    try:
        done = subprocess.run(
            ["dpkg-query", "-W", "-f", "${Version}", package],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return done.stdout.strip() if done.returncode == 0 and done.stdout.strip() else "unknown"


def _tools(directory: Path) -> Tools:
    """Find the peers; build the launcher and the MDA in C, or fall back to Python."""
    programs = {}
    for client, program in PEER_PROGRAMS.items():
        found = shutil.which(program)
        if found is None:
            raise SystemExit(
                f"{program} is not installed: run scripts/install-peers.sh (as root) first"
            )
        programs[client] = found
    versions = {client: _package_version(package) for client, package in PEER_PACKAGES.items()}
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is not None:
        built = []
        for name, source in (("bench-run", LAUNCHER_C), ("bench-mda", MDA_C)):
            (directory / f"{name}.c").write_text(source)
            binary = directory / name
            subprocess.run(
                [compiler, "-O2", "-Wall", "-o", str(binary), str(directory / f"{name}.c")],
                check=True,
                timeout=120,
            )
            binary.chmod(0o755)
            built.append(str(binary))
        return Tools([built[0]], [built[1]], True, programs, versions)
    _progress("no C compiler: the launcher and fetchmail's MDA are Python (the MDA is slower)")
    python = [sys.executable, "-I", "-S", "-c"]
    return Tools([*python, LAUNCHER_PY, "bench-run"], [*python, MDA_PY], False, programs, versions)


def _install_aiopop(directory: Path) -> str:
    """Install this checkout into a venv of its own, as users install it; returns ``aiopop``.

    A regular install (``pip install .``), not the editable one of the
    development venv: that one runs a path finder from a ``.pth`` file at
    every interpreter start (10 to 20 ms here), which no user pays.
    """
    venv = directory / "venv"
    _progress("installing this checkout into a venv of its own (pip install .)")
    for argv in (
        [sys.executable, "-m", "venv", str(venv)],
        [str(venv / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check", "."],
    ):
        done = subprocess.run(argv, cwd=REPOSITORY, capture_output=True, text=True, timeout=900)
        if done.returncode != 0:
            raise SystemExit(f"{shlex.join(argv)} failed:\n{done.stdout}{done.stderr}")
    return str(venv / "bin" / "aiopop")


def _mailboxes(
    plans: Sequence[tuple[str, str, int, int]],
    host: str,
    ports: dict[str, int],
    passwords: dict[str, str],
) -> list[Mailbox]:
    from benchmarks.harness.messages import build_message

    found = []
    for key, user, count, size in plans:
        expected: Counter[str] = Counter()
        lengths = set()
        octets = 0
        for index in range(1, count + 1):
            message = build_message(index, size)
            octets += len(message)
            stored = message.replace(b"\r\n", b"\n")
            expected[hashlib.sha256(stored).hexdigest()] += 1
            lengths.add(len(stored))
        found.append(
            Mailbox(
                key,
                user,
                count,
                size,
                host,
                ports[user],
                passwords[user],
                octets,
                dict(expected),
                tuple(sorted(lengths, reverse=True)),
            )
        )
    return found


_HEADER_LINE = re.compile(rb"[\x21-\x39\x3b-\x7e]+:.*|[ \t].*")


def _headers_only(prefix: bytes) -> bool:
    """True when ``prefix`` (LF line ends) is nothing, or whole header lines."""
    if not prefix:
        return True
    if not prefix.endswith(b"\n"):
        return False
    return all(_HEADER_LINE.fullmatch(line) for line in prefix[:-1].split(b"\n"))


def check_maildir(maildir: Path, mailbox: Mailbox) -> tuple[int, int, int]:
    """Raise CheckError unless ``maildir`` holds every message of ``mailbox`` exactly once.

    Each file (in ``new/`` or ``cur/``), its line ends made LF, must end with
    one of the stored messages, and what comes before must be header lines
    (the ones a peer adds: getmail6's Return-Path, say). Returns the files,
    their octets and the octets of the added headers.
    """
    remaining = Counter(mailbox.expected)
    files = octets = added = 0
    for sub in ("new", "cur"):
        with os.scandir(maildir / sub) as entries:
            for entry in entries:
                data = Path(entry.path).read_bytes().replace(b"\r\n", b"\n")
                for length in mailbox.lengths:
                    if len(data) < length:
                        continue
                    digest = hashlib.sha256(data[len(data) - length :]).hexdigest()
                    if remaining[digest] > 0 and _headers_only(data[: len(data) - length]):
                        remaining[digest] -= 1
                        added += len(data) - length
                        break
                else:
                    raise CheckError(
                        f"{sub}/{entry.name} ({len(data)} octets) is no stored message, "
                        "or one delivered twice"
                    )
                files += 1
                octets += len(data)
    missing = sum(remaining.values())
    if missing:
        raise CheckError(f"{missing} of {mailbox.count} messages missing ({files} delivered)")
    left = os.listdir(maildir / "tmp")
    if left:
        raise CheckError(f"{len(left)} files left in tmp/")
    return files, octets, added


def _median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


# -- running clients ---------------------------------------------------------------------------


class Bench:
    """One benchmark run: the work directory, the tools, and every run so far."""

    def __init__(self, options: argparse.Namespace, workdir: Path, tools: Tools) -> None:
        self.options = options
        self.workdir = workdir
        self.tools = tools
        self.sequence = 0
        nobody = pwd.getpwnam("nobody")
        self.nobody = (nobody.pw_uid, nobody.pw_gid)
        self.me = pwd.getpwuid(os.geteuid()).pw_name

    def _fresh(self, client: str, mailbox: Mailbox, number: int) -> tuple[Path, Path]:
        self.sequence += 1
        slug = re.sub(r"[^a-z0-9]+", "-", client.lower())
        label = f"r{number + 1}" if number >= 0 else f"w{-number}"
        directory = self.workdir / "runs" / f"{self.sequence:04d}-{mailbox.key}-{label}-{slug}"
        maildir = directory / "Maildir"
        for sub in ("tmp", "new", "cur"):
            (maildir / sub).mkdir(mode=0o700, parents=True)
        return directory, maildir

    def _command(
        self, client: str, mailbox: Mailbox, directory: Path, maildir: Path
    ) -> tuple[list[str], tuple[int, int], dict[str, str]]:
        """The client's command line, the (uid, gid) it runs as (-1: unchanged) and its env."""
        env = dict(os.environ)
        same = (-1, -1)
        login = {
            "host": mailbox.host,
            "port": mailbox.port,
            "user": mailbox.user,
            "password": mailbox.password,
            "maildir": str(maildir),
        }
        if client == AIOPOP:
            env[PASSWORD_ENV] = mailbox.password
            argv = [
                self.tools.aiopop, "fetch", mailbox.host, mailbox.user,
                "--port", str(mailbox.port), "--tls", "none", "--allow-cleartext",
                "--auth", "+USER", "--password-env", PASSWORD_ENV, "--maildir", str(maildir),
            ]  # fmt: skip
            return argv, same, env
        if client == INPROC:
            request = {**login, "report": str(directory / "parts.json")}
            return (
                [
                    sys.executable,
                    "-m",
                    "benchmarks.suites.fetch.main",
                    "inproc",
                    json.dumps(request),
                ],
                same,
                env,
            )
        if client == CEILING:
            return (
                [
                    sys.executable,
                    "-m",
                    "benchmarks.suites.fetch.main",
                    "ceiling",
                    json.dumps(login),
                ],
                same,
                env,
            )
        if client == MPOP:
            rc = directory / "mpoprc"
            rc.write_text(
                "account bench\n"
                f"host {mailbox.host}\nport {mailbox.port}\ntls off\nauth user\n"
                f"user {mailbox.user}\npassword {mailbox.password}\n"
                "keep on\nonly_new off\nreceived_header off\npipelining auto\n"
                f"uidls_file {directory / 'mpop-uidls'}\ndelivery maildir {maildir}\n"
            )
            rc.chmod(0o600)
            return [self.tools.programs[MPOP], "--file", str(rc), "--quiet", "bench"], same, env
        if client == FETCHMAIL:
            rc = directory / "fetchmailrc"
            mda = shlex.join([*self.tools.mda, str(maildir)])
            rc.write_text(
                "set no bouncemail\nset no syslog\n"
                f"poll {mailbox.host} protocol pop3 port {mailbox.port} auth password\n"
                f'  user "{mailbox.user}" there with password "{mailbox.password}"'
                f' is "{self.me}" here\n'
                "  keep fetchall no rewrite\n  fetchsizelimit 0\n  sslproto ''\n"
                f'  mda "{mda}"\n'
            )
            rc.chmod(0o600)
            env["FETCHMAILHOME"] = str(directory)  # its lock and pid files, not ~/.fetchmail*
            argv = [
                self.tools.programs[FETCHMAIL], "--fetchmailrc", str(rc), "--silent",
                "--invisible", "--idfile", str(directory / "fetchids"), "--nosyslog",
            ]  # fmt: skip
            return argv, same, env
        if client == GETMAIL:
            rc = directory / "getmailrc"
            state = directory / "getmail"
            state.mkdir()
            rc.write_text(
                "[retriever]\ntype = SimplePOP3Retriever\n"
                f"server = {mailbox.host}\nport = {mailbox.port}\n"
                f"username = {mailbox.user}\npassword = {mailbox.password}\n\n"
                f"[destination]\ntype = Maildir\npath = {maildir}/\n\n"
                "[options]\nverbose = 0\nread_all = true\ndelete = false\n"
                "delivered_to = false\nreceived = false\nmessage_log_syslog = false\n"
            )
            rc.chmod(0o600)
            uid, gid = self.nobody
            for path in [directory, *directory.rglob("*")]:
                os.chown(path, uid, gid)
            env["HOME"] = str(directory)
            argv = [
                self.tools.programs[GETMAIL], "--rcfile", str(rc), "--getmaildir", str(state),
                "--quiet",
            ]  # fmt: skip
            return argv, (uid, gid), env
        raise ValueError(f"unknown client {client!r}")

    def run_client(self, client: str, mailbox: Mailbox, number: int) -> Run:
        """One run of ``client`` into a fresh Maildir, measured and checked."""
        directory, maildir = self._fresh(client, mailbox, number)
        argv, (uid, gid), env = self._command(client, mailbox, directory, maildir)
        measured = directory / "measure.json"
        run = Run(client, mailbox.key, number + 1, directory=str(directory))
        log = directory / "log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [*self.tools.launcher, str(measured), str(uid), str(gid), *argv],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=REPOSITORY,
                env=env,
                start_new_session=True,  # a process group of its own: a timeout kills it whole
            )
            try:
                process.wait(timeout=self.options.timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
                run.problem = f"no end within {self.options.timeout:g} s: killed"
        if run.problem is None:
            try:
                figures = json.loads(measured.read_text())
            except (OSError, ValueError):
                run.problem = f"the launcher failed (exit status {process.returncode})"
            else:
                run.process_seconds = run.seconds = figures["wall"]
                run.cpu_seconds = figures["user"] + figures["system"]
                run.peak_rss_mib = figures["maxrss_kib"] / KIB
                if figures["signal"]:
                    run.problem = f"killed by signal {figures['signal']}"
                elif figures["exit"] != 0:
                    run.problem = f"exit status {figures['exit']}"
        if run.problem is None and client == INPROC:
            parts = json.loads((directory / "parts.json").read_text())
            run.parts = parts["times"]
            run.seconds = parts["times"]["fetch_to_maildir"]
        try:
            run.delivered, run.octets_on_disk, run.header_octets = check_maildir(maildir, mailbox)
        except CheckError as exc:
            run.problem = f"{run.problem}; {exc}" if run.problem else str(exc)
        except OSError as exc:
            run.problem = f"{run.problem}; {exc}" if run.problem else str(exc)
        run.ok = run.problem is None
        if not run.ok and client not in FLAKY:
            tail = log.read_text(errors="replace")[-2000:]
            raise BenchmarkAbortedError(f"{client}, {mailbox.key}: {run.problem}\n{tail}")
        return run

    def profile(self, mailbox: Mailbox) -> dict[str, Any]:
        """One more in-process run with aiopop's steps timed (and pyinstrument, if installed)."""
        directory, maildir = self._fresh("profile", mailbox, -99)
        request = {
            "host": mailbox.host,
            "port": mailbox.port,
            "user": mailbox.user,
            "password": mailbox.password,
            "maildir": str(maildir),
            "report": str(directory / "profile.json"),
        }
        subprocess.run(
            [sys.executable, "-m", ENTRY, "profile", json.dumps(request)],
            cwd=REPOSITORY,
            check=True,
            timeout=self.options.timeout,
        )
        check_maildir(maildir, mailbox)
        found: dict[str, Any] = json.loads((directory / "profile.json").read_text())
        text = found.pop("pyinstrument")
        if text:
            PROFILES.mkdir(parents=True, exist_ok=True)
            path = PROFILES / f"fetch-{mailbox.key}.txt"
            path.write_text(text)
            found["pyinstrument_file"] = str(path.relative_to(REPOSITORY))
        return found

    def startup(self) -> dict[str, Any]:
        """What the ``aiopop`` command costs before it connects: the interpreter, then imports."""
        python = str(Path(self.tools.aiopop).with_name("python"))
        bare = []
        for _ in range(5):
            measured = self.workdir / "bare.json"
            subprocess.run(
                [*self.tools.launcher, str(measured), "-1", "-1", python, "-c", "pass"],
                check=True,
                timeout=60,
            )
            bare.append(json.loads(measured.read_text())["wall"])
        done = subprocess.run(
            [python, "-X", "importtime", "-c", "import aiopop._cli"],
            cwd=self.workdir,
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        cumulative: dict[str, float] = {}
        total = 0.0
        for line in done.stderr.splitlines():
            match = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)", line)
            if match is None:
                continue
            seconds = int(match[2]) / 1e6
            cumulative.setdefault(match[4], seconds)
            if len(match[3]) == 1:  # a top-level import: nested ones are in its cumulative time
                total += seconds
        return {
            "interpreter_start_and_exit": statistics.median(bare),
            "imports_of_the_command": total,
            "import_of": {name: cumulative[name] for name in STARTUP_MODULES if name in cumulative},
        }

    def probe(self) -> float:
        """Milliseconds to create (and close) an empty file here, median of PROBE_FILES."""
        self.sequence += 1
        directory = self.workdir / "probes" / str(self.sequence)
        directory.mkdir(parents=True)
        times = []
        for index in range(PROBE_FILES):
            began = time.perf_counter()
            os.close(os.open(directory / str(index), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            times.append(time.perf_counter() - began)
        return statistics.median(times) * 1000

    def measure(self, mailbox: Mailbox, clients: Sequence[str]) -> Workload:
        """Every client once per round, each round starting with the next client."""
        from benchmarks.harness.noise import Meter

        rounds = self.options.rounds
        retries = self.options.retries if self.options.retries is not None else rounds
        result = Workload(mailbox, {client: [] for client in clients})
        number = -self.options.warmup
        while number < rounds:
            shift = number % len(clients)
            order = [*clients[shift:], *clients[:shift]]
            load = _load()
            probe = self.probe()
            meter = Meter()
            meter.start()
            began = time.perf_counter()
            seen = {client: self.run_client(client, mailbox, number) for client in order}
            others = meter.others()
            took = time.perf_counter() - began
            share = 0.0 if others is None else others / took
            what = "warm-up" if number < 0 else f"round {number + 1}/{rounds}"
            timings = ", ".join(
                f"{c} {seen[c].seconds:.3f} s" if seen[c].ok else f"{c} ABORTED ({seen[c].problem})"
                for c in clients
            )
            busy = f" (others used {share:.0%} of a CPU)" if share > NOISY else ""
            _progress(f"  {mailbox.key} {what}: {timings}{busy}; load {load:.2f}")
            result.aborted += [run for run in seen.values() if not run.ok]
            if number >= 0 and share > NOISY and result.repeated < retries:
                result.repeated += 1
                _progress("    noisy: running this round again")
                continue
            if number >= 0:
                for client in clients:
                    result.runs[client].append(seen[client])
                result.noisy_kept += share > NOISY
                result.rounds.append(
                    {
                        "round": number + 1,
                        "order": order,
                        "load_1min_at_start": load,
                        "load_1min_at_end": _load(),
                        "create_probe_ms": round(probe, 4),
                        "others_cpu_share": None if others is None else round(share, 4),
                        "seconds": round(took, 2),
                    }
                )
            number += 1
        return result


# -- numbers -----------------------------------------------------------------------------------


def summary(workload: Workload, client: str) -> dict[str, Any]:
    """Medians over ``client``'s successful runs."""
    runs = [run for run in workload.runs[client] if run.ok]
    seconds = _median([run.seconds for run in runs])
    box = workload.mailbox
    return {
        "runs_ok": len(runs),
        "runs": len(workload.runs[client]),
        "seconds": seconds,
        "process_seconds": _median([run.process_seconds for run in runs]),
        "messages_per_s": box.count / seconds,
        "mb_per_s": box.octets / 1e6 / seconds,
        "cpu_seconds": _median([run.cpu_seconds for run in runs]),
        "peak_rss_mib": _median([run.peak_rss_mib for run in runs]),
        "header_octets_per_message": _median([run.header_octets / box.count for run in runs]),
    }


def round_ratios(workload: Workload, reference: str, client: str = AIOPOP) -> list[float]:
    """reference's time / client's time in each round where both succeeded."""
    pairs = zip(workload.runs[reference], workload.runs[client], strict=True)
    return [ref.seconds / mine.seconds for ref, mine in pairs if ref.ok and mine.ok]


def verdicts(workload: Workload) -> list[dict[str, Any]]:
    """PASS, FAIL or SKIP for each of aiopop fetch's targets on this workload."""
    found: list[dict[str, Any]] = []
    for reference, minimum, words, test in TARGETS:
        title = f"{workload.mailbox.key}: aiopop fetch {words}"
        if reference not in workload.runs or AIOPOP not in workload.runs:
            found.append({"status": "SKIP", "text": f"{title}: not measured", "median": None})
            continue
        ratios = round_ratios(workload, reference)
        if not ratios:
            found.append({"status": "SKIP", "text": f"{title}: no round", "median": None})
            continue
        value = statistics.median(ratios)
        passed = value > minimum if test == ">" else value >= minimum
        text = (
            f"{title}: {reference} time / aiopop fetch time {value:.2f}x "
            f"(target {test} {minimum:g}x; rounds {min(ratios):.2f} to {max(ratios):.2f})"
        )
        found.append(
            {
                "status": "PASS" if passed else "FAIL",
                "workload": workload.mailbox.key,
                "reference": reference,
                "target": f"{test} {minimum:g}",
                "median": value,
                "rounds": ratios,
                "text": text,
            }
        )
    return found


def parts(workload: Workload) -> dict[str, float]:
    """Where aiopop's time goes: medians of the in-process parts, and the command's overhead."""
    if INPROC not in workload.runs:
        return {}
    runs = [run for run in workload.runs[INPROC] if run.ok]
    found = {name: _median([run.parts[name] for run in runs]) for name in runs[0].parts}
    found["process"] = _median([run.process_seconds for run in runs])
    found["interpreter_and_exit"] = _median(
        [run.process_seconds - sum(run.parts.values()) for run in runs]
    )
    if AIOPOP in workload.runs:
        pairs = zip(workload.runs[AIOPOP], workload.runs[INPROC], strict=True)
        outside = [cli.seconds - inner.seconds for cli, inner in pairs if cli.ok and inner.ok]
        found["command_outside_fetch_to_maildir"] = _median(outside)
    return found


# -- the report --------------------------------------------------------------------------------

_HEADER = (
    f"{'client':<19}{'workload':<10}{'median s':>10}{'messages/s':>12}{'MB/s':>8}"
    f"{'CPU s':>8}{'peak RSS MB':>13}{'runs ok':>9}"
)


def print_report(
    workloads: Sequence[Workload],
    info: dict[str, Any],
    found: Sequence[dict[str, Any]],
    startup: dict[str, Any] | None,
) -> None:
    """The table, the ratios, aiopop's parts, the load and the verdicts, on stdout."""
    print(f"aiopop fetch benchmark: {info['settings_line']}")
    print(info["machine_line"])
    print(info["tools_line"])
    print()
    print(_HEADER)
    print("-" * len(_HEADER))
    for number, workload in enumerate(workloads):
        if number:
            print()
        for client in workload.runs:
            s = summary(workload, client)
            if not s["runs_ok"]:
                print(f"{client:<19}{workload.mailbox.key:<10}  no successful run")
                continue
            print(
                f"{client:<19}{workload.mailbox.key:<10}{s['seconds']:>10.3f}"
                f"{s['messages_per_s']:>12.0f}{s['mb_per_s']:>8.1f}{s['cpu_seconds']:>8.3f}"
                f"{s['peak_rss_mib']:>13.1f}{s['runs_ok']:>5}/{s['runs']}"
            )
    print()
    print("aiopop's time against each other client's, median over rounds of (the other's")
    print("time / aiopop's time); above 1: aiopop is faster. `aiopop in-process` counts only")
    print("fetch_to_maildir (no start-up, login or QUIT): what the library does, not the command")
    for workload in workloads:
        for client in (AIOPOP, INPROC):
            for reference in workload.runs:
                if client not in workload.runs or reference in (AIOPOP, INPROC):
                    continue
                ratios = round_ratios(workload, reference, client)
                if ratios:
                    print(
                        f"  {workload.mailbox.key:<10}{client:<19}against {reference:<12}"
                        f"{statistics.median(ratios):>7.2f}x   "
                        f"(rounds {min(ratios):.2f} to {max(ratios):.2f})"
                    )
    print()
    print("where aiopop's time goes (medians; the in-process run's parts, in seconds)")
    for workload in workloads:
        found_parts = parts(workload)
        if found_parts:
            print(
                f"  {workload.mailbox.key:<10} "
                + ", ".join(f"{name} {value:.3f}" for name, value in found_parts.items())
            )
    print()
    for workload in workloads:
        loads = [r["load_1min_at_start"] for r in workload.rounds]
        probes = [r["create_probe_ms"] for r in workload.rounds]
        shares = [r["others_cpu_share"] or 0.0 for r in workload.rounds]
        print(
            f"{workload.mailbox.key}: load (1 min) {min(loads):.2f} to {max(loads):.2f}; "
            f"other programs' CPU {statistics.median(shares):.0%} of a CPU (median round); "
            f"{workload.repeated} noisy rounds run again, {workload.noisy_kept} kept; "
            f"file creation {statistics.median(probes):.3f} ms (median round)"
        )
        for run in workload.aborted:
            print(f"  aborted: {run.client} round {run.round}: {run.problem}")
    print()
    if startup is not None:
        print(
            "start-up of the `aiopop` command: interpreter start and exit "
            f"{startup['interpreter_start_and_exit']:.3f} s (python -c pass); imports "
            f"{startup['imports_of_the_command']:.3f} s (-X importtime, cumulative):"
        )
        print("  " + ", ".join(f"{k} {v:.3f}" for k, v in startup["import_of"].items()))
    for workload in workloads:
        if workload.profile is None:
            continue
        profile = workload.profile
        print(
            f"{workload.mailbox.key}: aiopop's steps in one more in-process run "
            f"(fetch_to_maildir {profile['fetch_to_maildir']:.3f} s; seconds, calls):"
        )
        for label, (seconds, count) in profile["steps"].items():
            print(f"  {label:<50}{seconds:>8.3f}{count:>7}")
        if "pyinstrument_file" in profile:
            print(f"  pyinstrument's profile: {profile['pyinstrument_file']}")
    if startup is not None or any(w.profile for w in workloads):
        print()
    for verdict in found:
        print(f"{verdict['status']:<4}  {verdict['text']}")
    failed = sum(v["status"] == "FAIL" for v in found)
    skipped = sum(v["status"] == "SKIP" for v in found)
    print()
    print(
        f"targets: {len(found) - failed - skipped} passed, {failed} failed, {skipped} skipped; "
        f"total run time {info['elapsed']:.0f} s"
    )


def to_json(workload: Workload) -> dict[str, Any]:
    """A workload's mailbox, summaries, ratios, parts, rounds and every run."""
    box = workload.mailbox
    return {
        "mailbox": {"count": box.count, "size": box.size, "octets": box.octets},
        "summaries": {client: summary(workload, client) for client in workload.runs},
        "ratios": {
            reference: round_ratios(workload, reference)
            for reference in workload.runs
            if reference != AIOPOP
        },
        "in_process_ratios": {
            reference: round_ratios(workload, reference, INPROC)
            for reference in workload.runs
            if reference not in (AIOPOP, INPROC) and INPROC in workload.runs
        },
        "aiopop_parts": parts(workload),
        "rounds": workload.rounds,
        "repeated_rounds": workload.repeated,
        "noisy_rounds_kept": workload.noisy_kept,
        "aborted": [asdict(run) for run in workload.aborted],
        "aiopop_steps": workload.profile,
        "runs": {client: [asdict(run) for run in runs] for client, runs in workload.runs.items()},
    }


# -- main --------------------------------------------------------------------------------------


def _options(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks fetch",
        description="aiopop fetch against mpop, fetchmail, getmail6 and a raw Python socket, "
        "each downloading a Dovecot mailbox on 127.0.0.1 into a fresh Maildir with an fsync "
        "per message; prints one report.",
    )
    parser.add_argument("--rounds", type=int, default=None, help="measured rounds (5; --quick 1)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed rounds first (1)")
    parser.add_argument(
        "--quick", action="store_true", help="a smoke run: 200 x 8 KB and 2 x 5 MB, one round"
    )
    parser.add_argument(
        "--only", action="append", metavar="TEXT", help="only workloads whose name has TEXT"
    )
    parser.add_argument(
        "--clients",
        help=f"comma-separated clients to run (default all: {', '.join(CLIENTS)})",
    )
    parser.add_argument("--timeout", type=float, default=RUN_TIMEOUT, help="seconds per run (120)")
    parser.add_argument(
        "--retries", type=int, default=None, help="noisy rounds run again (as many as --rounds)"
    )
    parser.add_argument(
        "--max-load",
        type=float,
        default=0.7,
        help="wait until the 1-minute load is below this before measuring (0.7)",
    )
    parser.add_argument(
        "--wait", type=float, default=1200, help="wait at most this many seconds for it (1200)"
    )
    parser.add_argument("--json", type=Path, default=None, help="where the JSON result goes")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument(
        "--no-profile", action="store_true", help="do not time aiopop's steps when a target fails"
    )
    options = parser.parse_args(argv)
    if options.rounds is None:
        options.rounds = 1 if options.quick else 5
    if options.warmup is None:
        options.warmup = 0 if options.quick else 1
    clients = CLIENTS
    if options.clients:
        clients = tuple(name.strip() for name in options.clients.split(","))
        unknown = set(clients) - set(CLIENTS)
        if unknown:
            parser.error(f"unknown clients {sorted(unknown)}: choose among {', '.join(CLIENTS)}")
    options.client_list = clients
    partial = options.quick or options.only is not None or options.clients is not None
    options.json = options.json or RESULTS / ("partial-fetch.json" if partial else "fetch.json")
    if options.rounds < 1 or options.warmup < 0:
        parser.error("--rounds must be at least 1, --warmup at least 0")
    return options


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark, print the report, write the JSON."""
    from benchmarks.harness.machine import machine_info, one_line
    from benchmarks.harness.messages import build_message
    from servers.dovecot import DovecotServer, MailUser

    options = _options(argv)
    began = time.perf_counter()
    plans = [
        plan
        for plan in (QUICK if options.quick else FULL)
        if options.only is None or any(text.lower() in plan[0].lower() for text in options.only)
    ]
    CACHE.mkdir(exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="bench-fetch-", dir=CACHE))  # the repository's disk
    workdir.chmod(0o755)  # getmail6 runs as nobody
    workloads: list[Workload] = []
    startup: dict[str, Any] | None = None
    try:
        tools = _tools(workdir)
        if AIOPOP in options.client_list:
            tools = replace(tools, aiopop=_install_aiopop(workdir))
        machine = machine_info(REPOSITORY)
        quiet = _wait_for_quiet(options.max_load, options.wait if not options.quick else 0)
        _progress(f"writing {sum(p[2] for p in plans)} messages and starting Dovecot")
        users = [
            MailUser(
                user,
                f"{user}-Secret-1",
                tuple(build_message(index, size) for index in range(1, count + 1)),
            )
            for _key, user, count, size in plans
        ]
        with DovecotServer(users) as server:
            ports = {user.name: server.pop3_port for user in users}
            passwords = {user.name: user.password for user in users}
            bench = Bench(options, workdir, tools)
            for mailbox in _mailboxes(plans, server.host, ports, passwords):
                _progress(
                    f"{mailbox.key}: {options.rounds} rounds after {options.warmup} warm-up "
                    f"of {', '.join(options.client_list)}"
                )
                workload = bench.measure(mailbox, options.client_list)
                workloads.append(workload)
                failed = any(v["status"] == "FAIL" for v in verdicts(workload))
                if failed and not options.no_profile:
                    _progress(f"  a target failed: timing aiopop's steps once ({mailbox.key})")
                    workload.profile = bench.profile(mailbox)
                    if startup is None:
                        startup = bench.startup()
    except BenchmarkAbortedError as exc:
        print(f"benchmark aborted: {exc}", file=sys.stderr)
        return 2
    finally:
        if options.keep:
            _progress(f"work directory kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    elapsed = time.perf_counter() - began
    found = [verdict for workload in workloads for verdict in verdicts(workload)]
    helpers = "C launcher and MDA" if tools.compiled else "Python launcher and MDA (no compiler)"
    versions = ", ".join(f"{client} {version}" for client, version in tools.versions.items())
    info = {
        "settings_line": (
            f"{options.rounds} rounds after {options.warmup} warm-up, clients alternating, "
            f"medians; plain POP3 with USER/PASS on 127.0.0.1"
            + (", --quick" if options.quick else "")
        ),
        "machine_line": one_line(machine),
        "tools_line": f"{versions}; {helpers}",
        "elapsed": elapsed,
    }
    print_report(workloads, info, found, startup)
    settings = {
        key: (str(value) if isinstance(value, Path) else value)
        for key, value in vars(options).items()
    }
    data = {
        "machine": machine,
        "settings": settings,
        "load": quiet,
        "tools": {"versions": tools.versions, "compiled_helpers": tools.compiled},
        "elapsed_seconds": elapsed,
        "workloads": {workload.mailbox.key: to_json(workload) for workload in workloads},
        "targets": found,
        "startup": startup,
    }
    options.json.parent.mkdir(parents=True, exist_ok=True)
    options.json.write_text(json.dumps(data, indent=1) + "\n")
    print(f"\nJSON: {options.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
