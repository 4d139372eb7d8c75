"""The password prompt on a real terminal (a pty): Ctrl-C and Ctrl-D end the command cleanly."""

from __future__ import annotations

import fcntl
import os
import select
import subprocess
import sys
import termios
import time

import pytest

from aiopop import _cli

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="needs a pty")


def _controlling_terminal() -> None:  # pragma: no cover - runs in the child
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def _read_until(master: int, needle: bytes, seconds: float) -> bytes:
    seen = b""
    deadline = time.monotonic() + seconds
    while needle not in seen:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"{needle!r} never came: {seen!r}")
        ready, _, _ = select.select([master], [], [], left)
        if ready:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            seen += chunk
    return seen


def _prompted(key: bytes) -> tuple[int, str, float]:
    """Run ``aiopop stat`` on a pty, type ``key`` at the password prompt; the exit status,
    everything the terminal showed, and the seconds from the key to the exit."""
    master, slave = os.openpty()
    process = subprocess.Popen(
        # A port nothing listens on: the prompt comes before any connection.
        [sys.executable, "-m", "aiopop", "stat", "127.0.0.1", "u", "--port", "9", "--tls", "none"],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        start_new_session=True,
        preexec_fn=_controlling_terminal,
    )
    os.close(slave)
    try:
        shown = _read_until(master, b"Password for u@127.0.0.1:9: ", 30)
        typed = time.monotonic()
        os.write(master, key)
        status = process.wait(10)
        took = time.monotonic() - typed
        shown += _drain(master)
    finally:
        if process.poll() is None:  # pragma: no cover
            process.kill()
            process.wait()
        os.close(master)
    return status, shown.decode(errors="replace"), took


def _drain(master: int) -> bytes:
    data = b""
    while True:
        ready, _, _ = select.select([master], [], [], 0.5)
        if not ready:
            return data
        try:
            chunk = os.read(master, 4096)
        except OSError:
            return data
        if not chunk:
            return data
        data += chunk


def test_ctrl_c_at_the_password_prompt_exits_at_once() -> None:
    status, shown, took = _prompted(b"\x03")
    assert status == _cli.EXIT_INTERRUPTED, shown
    assert "aiopop: interrupted" in shown
    assert "Traceback" not in shown
    assert took < 3


def test_ctrl_d_at_the_password_prompt_is_a_usage_error() -> None:
    status, shown, _ = _prompted(b"\x04")
    assert status == _cli.EXIT_USAGE, shown
    assert "aiopop: error: no password: the prompt reached the end of input" in shown
    assert "Traceback" not in shown
