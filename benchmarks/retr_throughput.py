"""RETR throughput: aiopop against stdlib poplib and two raw-socket baselines, in one run.

A private Dovecot (``tests/dovecot.py``) serves one mailbox of ``--messages``
messages of ``--size`` octets on 127.0.0.1. Four clients each fetch every
message, in turn, ``--repeat`` times:

``poplib``          stdlib ``poplib.POP3``, USER/PASS, ``retr(n)`` for each message
``aiopop``          ``aiopop.POP3``, USER/PASS, ``await retr(n)`` for each message
``raw-sequential``  a blocking socket: one RETR, read to ``\\r\\n.\\r\\n``, the next RETR
``raw-pipelined``   a blocking socket sends every RETR at once and counts terminators

The last one is the ceiling: it is as fast as Dovecot serves on this machine.
The timed span starts just before the first RETR is sent and ends when the
last message has arrived; connecting, logging in and QUIT are outside it
(and reported separately as "session"). The contents returned by poplib
and aiopop are compared with the stored messages after the clock stops.

Run from the repository root::

    .venv/bin/python -m benchmarks.retr_throughput [--messages N] [--size S]
        [--repeat R] [--json PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import poplib
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiopop
from tests.dovecot import DovecotServer, MailUser, find_dovecot, make_message

USER = "bench"
PASSWORD = "bench-Secret-1"
TERMINATOR = b"\r\n.\r\n"
RECV_SIZE = 256 * 1024
TIMEOUT = 60.0
"""Seconds any one socket operation may take, so that a stuck run ends by itself."""
LINE_OCTETS = 80
"""Filler lines are 78 characters and CRLF: well within poplib's 2048-octet line cap."""


@dataclass(frozen=True)
class Target:
    """Where the mailbox is, and how many messages it holds."""

    host: str
    port: int
    count: int


@dataclass(frozen=True)
class Timing:
    """One run: ``retrieve`` from the first RETR to the last octet, ``session`` connect to QUIT."""

    retrieve: float
    session: float


RunResult = tuple[Timing, list[bytes] | None]
"""A run's timing, and the messages it got (None for the raw clients, which do not parse)."""


@dataclass(frozen=True)
class Method:
    """One client under measurement."""

    name: str
    description: str
    run: Callable[[Target], RunResult]


# -- the mailbox ---------------------------------------------------------------


def build_message(index: int, size: int) -> bytes:
    """Message ``index`` in wire form, exactly ``size`` octets, with lines that need dot-stuffing.

    Raises ValueError when ``size`` is too small for the headers.
    """
    subject = f"benchmark message {index}"
    dotted = [f".this line starts with a dot (message {index})", "..and this one with two"]
    remaining = size - len(make_message(subject, dotted))
    if remaining < 2 and remaining != 0:
        raise ValueError(f"--size {size} is too small: at least {size - remaining} octets")
    filler: list[str] = []
    pattern = f"{index:06d} " + "abcdefghijklmnopqrstuvwxyz0123456789" * 3
    while remaining > 0:
        # Never leave a single octet, which no line (at least CRLF) can fill.
        take = min(LINE_OCTETS - 1 if remaining == LINE_OCTETS + 1 else LINE_OCTETS, remaining)
        filler.append(pattern[: take - 2])
        remaining -= take
    # The dotted lines come last: the final one sits right before the terminator.
    message = make_message(subject, [*filler, *dotted])
    assert len(message) == size
    return message


# -- stdlib poplib ----------------------------------------------------------------


def run_poplib(target: Target) -> RunResult:
    """Fetch every message with ``poplib.POP3.retr``."""
    got: list[list[bytes]] = []
    start = time.perf_counter()
    client = poplib.POP3(target.host, target.port, timeout=TIMEOUT)
    try:
        client.user(USER)
        client.pass_(PASSWORD)
        begin = time.perf_counter()
        for number in range(1, target.count + 1):
            _status, lines, _octets = client.retr(number)
            got.append(lines)
        end = time.perf_counter()
        client.quit()
    finally:
        client.close()
    stop = time.perf_counter()
    # poplib hands back lines without their line ends; rebuild the wire form untimed.
    messages = [b"".join(line + b"\r\n" for line in lines) for lines in got]
    return Timing(end - begin, stop - start), messages


# -- aiopop --------------------------------------------------------------------


async def _aiopop_session(target: Target) -> RunResult:
    got: list[bytes] = []
    start = time.perf_counter()
    async with aiopop.POP3(target.host, target.port, timeout=TIMEOUT) as client:
        await client.user(USER)
        await client.pass_(PASSWORD)
        begin = time.perf_counter()
        for number in range(1, target.count + 1):
            got.append(await client.retr(number))
        end = time.perf_counter()
    stop = time.perf_counter()
    return Timing(end - begin, stop - start), got


def run_aiopop(target: Target) -> RunResult:
    """Fetch every message with ``await aiopop.POP3.retr``, one at a time, in order."""
    # The event loop is created and closed outside the timed spans.
    return asyncio.run(_aiopop_session(target))


# -- raw sockets -------------------------------------------------------------------


def _read_status(sock: socket.socket) -> bytes:
    """One status line. Only used where the server sends nothing after it until asked."""
    data = b""
    while not data.endswith(b"\r\n"):
        chunk = sock.recv(1024)
        if not chunk:
            raise ConnectionError("server closed the connection")
        data += chunk
    if not data.startswith(b"+OK"):
        raise ConnectionError(f"unexpected reply {data[:200]!r}")
    return data


def _raw_login(target: Target) -> socket.socket:
    sock = socket.create_connection((target.host, target.port), timeout=TIMEOUT)
    try:
        # As asyncio does for its TCP transports; harmless, and the ceiling should be a ceiling.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        _read_status(sock)
        for command in (f"USER {USER}\r\n", f"PASS {PASSWORD}\r\n"):
            sock.sendall(command.encode("ascii"))
            _read_status(sock)
    except BaseException:
        sock.close()
        raise
    return sock


def _raw_quit(sock: socket.socket) -> None:
    sock.sendall(b"QUIT\r\n")
    _read_status(sock)


def _count_terminators(sock: socket.socket, count: int) -> int:
    """Read until ``count`` terminators have passed; return the octets read."""
    found = 0
    total = 0
    tail = b""  # the last 4 octets so far, for a terminator split across reads
    while found < count:
        chunk = sock.recv(RECV_SIZE)
        if not chunk:
            raise ConnectionError("server closed the connection")
        total += len(chunk)
        found += (tail + chunk[:4]).count(TERMINATOR) + chunk.count(TERMINATOR)
        tail = chunk[-4:] if len(chunk) >= 4 else (tail + chunk)[-4:]
    return total


def _check_octets(total: int, target: Target, payload: int) -> None:
    if total < payload:
        raise AssertionError(f"raw client read {total} octets, the mailbox holds {payload}")


def run_raw_sequential(target: Target, payload: int) -> RunResult:
    """One RETR at a time on a blocking socket; only the terminator is looked for."""
    total = 0
    start = time.perf_counter()
    sock = _raw_login(target)
    try:
        begin = time.perf_counter()
        for number in range(1, target.count + 1):
            sock.sendall(b"RETR %d\r\n" % number)
            total += _count_terminators(sock, 1)
        end = time.perf_counter()
        _raw_quit(sock)
    finally:
        sock.close()
    stop = time.perf_counter()
    _check_octets(total, target, payload)
    return Timing(end - begin, stop - start), None


def run_raw_pipelined(target: Target, payload: int) -> RunResult:
    """Every RETR sent at once, then read until as many terminators have passed."""
    commands = b"".join(b"RETR %d\r\n" % n for n in range(1, target.count + 1))
    start = time.perf_counter()
    sock = _raw_login(target)
    try:
        # A thread sends, so that a command stream larger than the socket buffers
        # cannot deadlock against a server blocked on writing replies nobody reads.
        sender = threading.Thread(target=sock.sendall, args=(commands,), daemon=True)
        begin = time.perf_counter()
        sender.start()
        total = _count_terminators(sock, target.count)
        end = time.perf_counter()
        sender.join()
        _raw_quit(sock)
    finally:
        sock.close()
    stop = time.perf_counter()
    _check_octets(total, target, payload)
    return Timing(end - begin, stop - start), None


# -- measuring -------------------------------------------------------------------


def methods(payload: int) -> list[Method]:
    """The clients, in the order they run in each round."""
    return [
        Method("poplib", "stdlib poplib.POP3, retr(n) one at a time", run_poplib),
        Method("aiopop", "aiopop.POP3, await retr(n) one at a time", run_aiopop),
        Method(
            "raw-sequential",
            "blocking socket, one RETR at a time, read to CRLF.CRLF",
            lambda target: run_raw_sequential(target, payload),
        ),
        Method(
            "raw-pipelined",
            "blocking socket, all RETRs sent at once, count CRLF.CRLF",
            lambda target: run_raw_pipelined(target, payload),
        ),
    ]


def verify(name: str, got: Sequence[bytes], expected: Sequence[bytes]) -> None:
    """Raise AssertionError unless ``got`` is exactly the stored mailbox."""
    if len(got) != len(expected):
        raise AssertionError(f"{name}: {len(got)} messages, expected {len(expected)}")
    for number, (message, stored) in enumerate(zip(got, expected, strict=True), start=1):
        if message != stored:
            at = next(
                (i for i, (a, b) in enumerate(zip(message, stored, strict=False)) if a != b),
                min(len(message), len(stored)),
            )
            raise AssertionError(
                f"{name}: message {number} differs from octet {at} on: {len(message)} "
                f"octets, expected {len(stored)}; got {message[at : at + 40]!r}"
            )


def measure(
    target: Target, expected: Sequence[bytes], repeat: int, warmup: int
) -> dict[str, list[Timing]]:
    """Run every method ``warmup`` + ``repeat`` times, round-robin; keep the last ``repeat``."""
    payload = sum(len(m) for m in expected)
    clients = methods(payload)
    timings: dict[str, list[Timing]] = {m.name: [] for m in clients}
    for round_number in range(warmup + repeat):
        for method in clients:
            gc.collect()  # garbage of the previous run is not charged to this one
            timing, got = method.run(target)
            if got is not None:
                verify(method.name, got, expected)
            del got
            if round_number >= warmup:
                timings[method.name].append(timing)
        label = "warm-up" if round_number < warmup else f"round {round_number - warmup + 1}"
        print(f"  {label}: done", file=sys.stderr, flush=True)
    return timings


# -- reporting ---------------------------------------------------------------------


def _nproc() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _dovecot_version() -> str:
    binary = find_dovecot()
    if binary is None:
        return "unknown"
    done = subprocess.run(
        [binary, "--version"], capture_output=True, text=True, timeout=10, check=False
    )
    return done.stdout.strip() or "unknown"


def summarize(
    timings: dict[str, list[Timing]], *, messages: int, size: int, repeat: int
) -> dict[str, Any]:
    """Everything the table and ``--json`` show."""
    payload = messages * size
    results: dict[str, dict[str, Any]] = {}
    for name, runs in timings.items():
        retrieve = [t.retrieve for t in runs]
        best, median = min(retrieve), statistics.median(retrieve)
        results[name] = {
            "retrieve_seconds": retrieve,
            "session_seconds": [t.session for t in runs],
            "best": best,
            "median": median,
            "session_best": min(t.session for t in runs),
            "mb_per_s_best": payload / best / 1e6,
            "messages_per_s_best": messages / best,
        }

    def ratio(numerator: str, denominator: str, key: str) -> float:
        return float(results[numerator][key] / results[denominator][key])

    ratios = {
        f"{label}_{key}": ratio(num, den, key)
        for label, num, den in (
            ("aiopop_speedup_over_poplib", "poplib", "aiopop"),
            ("aiopop_fraction_of_pipelined_ceiling", "raw-pipelined", "aiopop"),
            ("aiopop_fraction_of_sequential_raw", "raw-sequential", "aiopop"),
            ("poplib_fraction_of_sequential_raw", "raw-sequential", "poplib"),
        )
        for key in ("best", "median")
    }
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "platform": platform.platform(),
        "nproc": _nproc(),
        "dovecot": _dovecot_version(),
        "aiopop": aiopop.__version__,
        "messages": messages,
        "size": size,
        "payload_octets": payload,
        "repeat": repeat,
        "results": results,
        "ratios": ratios,
    }


def print_report(report: dict[str, Any], descriptions: dict[str, str]) -> None:
    """The human-readable table."""
    print(
        f"RETR throughput: {report['messages']} messages x {report['size']} octets "
        f"= {report['payload_octets'] / 1e6:.1f} MB, {report['repeat']} runs each"
    )
    print(
        f"{report['python']}, nproc {report['nproc']}, Dovecot {report['dovecot']}, "
        f"{report['platform']}, {report['date']}"
    )
    print()
    header = f"{'method':<16}{'best s':>9}{'median s':>10}{'MB/s':>8}{'msg/s':>9}{'session s':>11}"
    print(header)
    print("-" * len(header))
    for name, r in report["results"].items():
        print(
            f"{name:<16}{r['best']:>9.3f}{r['median']:>10.3f}{r['mb_per_s_best']:>8.1f}"
            f"{r['messages_per_s_best']:>9.0f}{r['session_best']:>11.3f}"
        )
    print()
    ratios = report["ratios"]
    print(f"{'ratio (time of the other / time of the client)':<48}{'best':>7}{'median':>8}")
    for key, label in (
        ("aiopop_speedup_over_poplib", "aiopop speedup over poplib"),
        ("aiopop_fraction_of_pipelined_ceiling", "aiopop as a fraction of raw-pipelined"),
        ("aiopop_fraction_of_sequential_raw", "aiopop as a fraction of raw-sequential"),
        ("poplib_fraction_of_sequential_raw", "poplib as a fraction of raw-sequential"),
    ):
        print(f"{label:<48}{ratios[key + '_best']:>7.2f}{ratios[key + '_median']:>8.2f}")
    print()
    for name, description in descriptions.items():
        print(f"{name:<16}{description}")
    print("Seconds: first RETR sent to last octet received; session s: connect to QUIT.")
    print("MB/s and msg/s from the best run; MB = 10**6 octets of message content.")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.retr_throughput",
        description="Measure RETR throughput of aiopop, stdlib poplib and raw sockets "
        "against a private Dovecot on 127.0.0.1.",
    )
    parser.add_argument("--messages", type=int, default=2000, help="messages in the mailbox")
    parser.add_argument("--size", type=int, default=8192, help="octets per message")
    parser.add_argument("--repeat", type=int, default=5, help="measured runs per client")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the numbers here")
    args = parser.parse_args(argv)
    if args.messages < 1 or args.repeat < 1 or args.warmup < 0:
        parser.error("--messages and --repeat must be at least 1, --warmup at least 0")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; return the exit status."""
    args = parse_args(argv)
    try:
        mailbox = tuple(build_message(i, args.size) for i in range(1, args.messages + 1))
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    print(
        f"starting Dovecot with {args.messages} messages of {args.size} octets ...",
        file=sys.stderr,
        flush=True,
    )
    # Maildir and index set-up happen here and in the warm-up round, off the clock.
    with DovecotServer(users=[MailUser(USER, PASSWORD, mailbox)]) as server:
        target = Target(server.host, server.pop3_port, len(mailbox))
        timings = measure(target, mailbox, args.repeat, args.warmup)
    report = summarize(timings, messages=args.messages, size=args.size, repeat=args.repeat)
    print_report(report, {m.name: m.description for m in methods(report["payload_octets"])})
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
