"""The distance suite's own client runs, each a process of its own (started by the launcher).

``python -m benchmarks.suites.distance.clients poplib '<json>'``: stdlib
``poplib`` downloads a mailbox into a Maildir, one RETR after the other
(``tmp/``, fsync, rename into ``new/``; one fsync of ``new/`` before QUIT),
as a program written with poplib would. ``... lists '<json>'``: the
new-only workload's reference, a bare socket that logs in, sends UIDL and
LIST at once, reads both replies and QUITs; it writes the seconds of the
two replies alone (from sending them to their last octet) to
``request["report"]``. Only loopback addresses are contacted; nothing of
the benchmark is imported, so that start-up is the client's own.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from typing import Any

SOCKET_TIMEOUT = 120.0


def _write_durably(maildir: str, name: str, data: bytes) -> None:
    temporary = f"{maildir}/tmp/{name}"
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(descriptor, view) :]
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
    os.rename(temporary, f"{maildir}/new/{name}")


def run_poplib(request: dict[str, Any]) -> None:
    import poplib

    maildir = request["maildir"]
    client = poplib.POP3(request["host"], request["port"], timeout=SOCKET_TIMEOUT)
    client.user(request["user"])
    client.pass_(request["password"])
    count, _size = client.stat()
    prefix = f"{int(time.time())}.P{os.getpid()}Q"
    host = socket.gethostname()
    for number in range(1, count + 1):
        _reply, lines, _octets = client.retr(number)
        _write_durably(maildir, f"{prefix}{number}.{host}", b"\n".join(lines) + b"\n")
    directory = os.open(f"{maildir}/new", os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
    client.quit()


def _read_until(sock: socket.socket, buffer: bytearray, end: bytes, start: int = 0) -> int:
    """Read into ``buffer`` until ``end`` occurs at or after ``start``; where it ends."""
    while True:
        found = buffer.find(end, start)
        if found >= 0:
            return found + len(end)
        start = max(start, len(buffer) - len(end))
        chunk = sock.recv(1 << 20)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        buffer += chunk


def run_lists(request: dict[str, Any]) -> None:
    sock = socket.create_connection((request["host"], request["port"]), timeout=SOCKET_TIMEOUT)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    buffer = bytearray()
    for command in (None, b"USER %s\r\n", b"PASS %s\r\n"):
        if command is not None:
            value = request["user"] if b"USER" in command else request["password"]
            sock.sendall(command % value.encode())
        end = _read_until(sock, buffer, b"\r\n")
        if not buffer.startswith(b"+OK"):
            raise RuntimeError(f"the server said {bytes(buffer[:end])!r}")
        del buffer[:end]
    began = time.perf_counter()
    sock.sendall(b"UIDL\r\nLIST\r\n")
    end = _read_until(sock, buffer, b"\r\n.\r\n")
    uidl = buffer[:end].count(b"\r\n") - 2
    end = _read_until(sock, buffer, b"\r\n.\r\n", end)
    seconds = time.perf_counter() - began
    listed = buffer.count(b"\r\n") - uidl - 4
    sock.sendall(b"QUIT\r\n")
    sock.close()
    if uidl != request["count"] or listed != request["count"]:
        raise RuntimeError(f"UIDL listed {uidl} and LIST {listed}, not {request['count']}")
    with open(request["report"], "w") as out:
        json.dump({"lists_seconds": seconds, "octets": len(buffer)}, out)


ENTRIES = {"poplib": run_poplib, "lists": run_lists}

if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ENTRIES:
        sys.exit("usage: python -m benchmarks.suites.distance.clients poplib|lists '<json>'")
    ENTRIES[sys.argv[1]](json.loads(sys.argv[2]))
