"""Private proxy servers for the proxy tests (tests/integration/test_proxy.py).

Three real programs from Debian (installed by ``scripts/install-proxy.sh``),
each run as a child process with a configuration of its own, listening on
127.0.0.1 only, on a free high port, with its log in a temporary directory
of its own; nothing under ``/etc`` is read and no system-wide service is
used or disturbed:

* :class:`Dante`: ``danted``, SOCKS5 without authentication, logging each
  connection it passes (``socks pass { ... log: connect }``); only
  destinations on 127.0.0.0/8 are allowed.
* :class:`Microsocks`: ``microsocks``, SOCKS5 with a user name and password
  of its own (RFC 1929), logging each connection on its standard error.
* :class:`Tinyproxy`: ``tinyproxy``, HTTP CONNECT, logging each request.

:meth:`ProxyServer.stop` ends it and removes its directory; set
``AIOPOP_PROXY_KEEP=1`` to keep the directory (and its log).
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
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

__all__ = [
    "HOST",
    "Dante",
    "Microsocks",
    "ProxyError",
    "ProxyServer",
    "ProxyUnavailableError",
    "Tinyproxy",
]

HOST = "127.0.0.1"
"""The only address the proxies listen on."""

_KEEP_ENV = "AIOPOP_PROXY_KEEP"
_START_TIMEOUT = 10.0
_SBIN = ("/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin")


class ProxyError(Exception):
    """A private proxy failed; the message carries the tail of its log."""


class ProxyUnavailableError(ProxyError):
    """The proxy cannot run here at all: its program is not installed."""


def _unprivileged() -> tuple[str, str] | None:
    """The user and group a proxy started as root drops to: nobody's."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam("nobody")
    except KeyError:
        return None
    return entry.pw_name, grp.getgrgid(entry.pw_gid).gr_name


class ProxyServer:
    """One private proxy on 127.0.0.1, for the length of a test session."""

    program = ""
    """The program's name (found on PATH or in the sbin directories)."""
    scheme = ""
    """The proxy URL's scheme: socks5 or http."""

    def __init__(self) -> None:
        self._root: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        """The TCP port on :data:`HOST`, once started."""

    @property
    def url(self) -> str:
        """The proxy's URL, without credentials (``socks5://127.0.0.1:PORT``)."""
        if not self.port:
            raise ProxyError(f"{self.program} is not started")
        return f"{self.scheme}://{HOST}:{self.port}"

    @property
    def log_path(self) -> Path:
        if self._root is None:
            raise ProxyError(f"{self.program} is not started")
        return self._root / f"{self.program}.log"

    def log(self) -> str:
        """The whole log so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except (OSError, ProxyError):
            return ""

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def start(self) -> None:
        """Start the proxy and wait until it takes connections; raise :class:`ProxyError` if not."""
        binary = find_program(self.program, _SBIN)
        if binary is None:
            raise ProxyUnavailableError(
                f"{self.program} is not installed (run scripts/install-proxy.sh as root)"
            )
        self._root = Path(tempfile.mkdtemp(prefix=f"aiopop-{self.program}-"))
        # A proxy that drops to nobody still writes its log here.
        self._root.chmod(0o755)

        def attempt() -> None:
            self.port = free_port(HOST)
            assert self._root is not None
            self.log_path.touch()
            self.log_path.chmod(0o666)
            self._spawn(self._command(binary, self._root))
            self._wait_ready()

        try:
            start_on_free_ports(
                attempt, failure=ProxyError, log_tail=self.log_tail, terminate=self._terminate
            )
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """End the proxy (SIGTERM, then SIGKILL) and remove its directory."""
        self._terminate()
        if self._root is not None and not os.environ.get(_KEEP_ENV):
            shutil.rmtree(self._root, ignore_errors=True)
        self._root = None
        self.port = 0

    def __enter__(self) -> ProxyServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _command(self, binary: str, root: Path) -> list[str]:
        raise NotImplementedError

    def _spawn(self, command: list[str]) -> None:
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: stopping it reaches nothing else
            )

    def _wait_ready(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + _START_TIMEOUT
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise ProxyError(
                    f"{self.program} exited with status {self._proc.returncode}:\n{self.log_tail()}"
                )
            with contextlib.suppress(OSError):
                socket.create_connection((HOST, self.port), timeout=1.0).close()
                return
            time.sleep(0.05)
        raise ProxyError(
            f"{self.program} did not take connections on {HOST}:{self.port} within"
            f" {_START_TIMEOUT:.0f} s:\n{self.log_tail()}"
        )

    def _terminate(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)  # danted forks children of its own
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


class Dante(ProxyServer):
    """Dante's ``danted``: SOCKS5, no authentication, to 127.0.0.0/8 only."""

    program = "danted"
    scheme = "socks5"

    def _command(self, binary: str, root: Path) -> list[str]:
        users = ""
        dropped = _unprivileged()
        if dropped is not None:
            users = f"user.privileged: root\nuser.unprivileged: {dropped[0]}\n"
        config = root / "danted.conf"
        config.write_text(
            f"logoutput: {self.log_path}\n"
            f"internal: {HOST} port = {self.port}\n"
            f"external: {HOST}\n"
            "clientmethod: none\n"
            "socksmethod: none\n"
            f"{users}"
            "client pass {\n  from: 127.0.0.0/8 to: 0.0.0.0/0\n  log: error\n}\n"
            "socks pass {\n  from: 127.0.0.0/8 to: 127.0.0.0/8\n  command: connect\n"
            "  protocol: tcp\n  log: connect disconnect error\n}\n"
            "socks block {\n  from: 0.0.0.0/0 to: 0.0.0.0/0\n  log: connect error\n}\n"
        )
        return [binary, "-f", str(config), "-p", str(root / "danted.pid"), "-N", "1"]


class Microsocks(ProxyServer):
    """``microsocks``: SOCKS5 with the user name and password it is given (RFC 1929)."""

    program = "microsocks"
    scheme = "socks5"

    def __init__(self, username: str, password: str) -> None:
        super().__init__()
        self.username = username
        self.password = password

    def _command(self, binary: str, root: Path) -> list[str]:
        return [
            binary,
            "-i", HOST,
            "-p", str(self.port),
            "-u", self.username,
            "-P", self.password,
        ]  # fmt: skip


class Tinyproxy(ProxyServer):
    """``tinyproxy``: HTTP CONNECT to any port, for clients on 127.0.0.1."""

    program = "tinyproxy"
    scheme = "http"

    def _command(self, binary: str, root: Path) -> list[str]:
        dropped = _unprivileged()
        users = f"User {dropped[0]}\nGroup {dropped[1]}\n" if dropped is not None else ""
        config = root / "tinyproxy.conf"
        config.write_text(
            f"Port {self.port}\n"
            f"Listen {HOST}\n"
            "Timeout 60\n"
            f'LogFile "{self.log_path}"\n'
            "LogLevel Connect\n"
            "MaxClients 20\n"
            "Allow 127.0.0.1\n"
            f"{users}"
        )
        return [binary, "-d", "-c", str(config)]
