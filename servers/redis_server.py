"""A private Redis server for the scale-out test (examples/scale_out/).

:class:`RedisServer` runs Debian's ``redis-server`` (installed by
``scripts/install-redis.sh``) as a child process with a configuration given
entirely on its command line: listening on 127.0.0.1 only, on a free high
port, with no Unix socket, in a temporary directory of its own, without
persistence (no RDB snapshots, no append-only file). No file under
``/etc/redis`` is read, and the system-wide service (if any) is neither used
nor disturbed. :meth:`RedisServer.stop` ends it and removes its directory.

Set ``AIOPOP_REDIS_KEEP=1`` to keep the directory (and its log) after the run.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from servers.ports import free_port, start_on_free_ports
from servers.programs import find_program

__all__ = ["HOST", "RedisError", "RedisServer", "RedisUnavailableError", "find_redis"]

HOST = "127.0.0.1"
"""The only address the private instance listens on."""

_KEEP_ENV = "AIOPOP_REDIS_KEEP"
_START_TIMEOUT = 10.0


class RedisError(Exception):
    """The private Redis instance failed; the message carries the tail of its log."""


class RedisUnavailableError(RedisError):
    """Redis cannot run here at all: ``redis-server`` is not installed."""


def find_redis() -> str | None:
    """Return the path of the ``redis-server`` binary, or ``None`` when it is not installed."""
    return find_program("redis-server", ("/usr/bin", "/usr/local/bin"))


class RedisServer:
    """A private ``redis-server`` on 127.0.0.1, for the length of a test.

    Use as a context manager, or call :meth:`start` and :meth:`stop`.
    """

    def __init__(self) -> None:
        self._root: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        """The TCP port on :data:`HOST`, once started."""

    @property
    def url(self) -> str:
        """The Redis URL of database 0 (``redis://127.0.0.1:PORT/0``)."""
        if not self.port:
            raise RedisError("the Redis server is not started")
        return f"redis://{HOST}:{self.port}/0"

    @property
    def log_path(self) -> Path:
        if self._root is None:
            raise RedisError("the Redis server is not started")
        return self._root / "redis.log"

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs."""
        return None if self._proc is None else self._proc.pid

    def start(self) -> None:
        """Start the server and wait until it answers PING; raise :class:`RedisError` if not."""
        binary = find_redis()
        if binary is None:
            raise RedisUnavailableError(
                "redis-server is not installed (run scripts/install-redis.sh as root)"
            )
        self._root = Path(tempfile.mkdtemp(prefix="aiopop-redis-"))

        def attempt() -> None:
            self.port = free_port(HOST)
            self._spawn(binary)
            self._wait_ready()

        try:
            start_on_free_ports(
                attempt, failure=RedisError, log_tail=self.log_tail, terminate=self._terminate
            )
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """End the server (SIGTERM, then SIGKILL) and remove its directory."""
        self._terminate()
        if self._root is not None and not os.environ.get(_KEEP_ENV):
            shutil.rmtree(self._root, ignore_errors=True)
        self._root = None
        self.port = 0

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of the server's log, for error messages."""
        try:
            text = self.log_path.read_text(errors="replace")
        except (OSError, RedisError):
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def _spawn(self, binary: str) -> None:
        assert self._root is not None
        command = [
            binary,
            "--bind", HOST,
            "--port", str(self.port),
            "--protected-mode", "yes",
            "--daemonize", "no",
            "--supervised", "no",
            "--dir", str(self._root),
            "--logfile", str(self.log_path),
            "--save", "",
            "--appendonly", "no",
            "--databases", "2",
        ]  # fmt: skip
        self._proc = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stopping it reaches nothing else
        )

    def _wait_ready(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + _START_TIMEOUT
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RedisError(
                    f"redis-server exited with status {self._proc.returncode}:\n{self.log_tail()}"
                )
            with (
                contextlib.suppress(OSError),
                socket.create_connection((HOST, self.port), timeout=1.0) as sock,
            ):
                sock.sendall(b"PING\r\n")
                if sock.recv(64).startswith(b"+PONG"):
                    return
            time.sleep(0.05)
        raise RedisError(
            f"redis-server did not answer on {HOST}:{self.port} within "
            f"{_START_TIMEOUT:.0f} s:\n{self.log_tail()}"
        )

    def _terminate(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
