"""Free loopback ports for the test servers: asked of the kernel, not guessed."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Callable

__all__ = ["PORT_ATTEMPTS", "free_port", "free_ports", "start_on_free_ports"]

PORT_ATTEMPTS = 3
"""Starts tried when another process takes a probed port before the server binds it."""


def free_ports(*hosts: str) -> list[int]:
    """A port nothing listens on right now for each of ``hosts`` (loopback), all distinct."""
    with contextlib.ExitStack() as stack:
        ports: list[int] = []
        while len(ports) < len(hosts):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind((hosts[len(ports)], 0))
            port = sock.getsockname()[1]
            if port not in ports:
                ports.append(port)
        return ports


def free_port(host: str = "127.0.0.1") -> int:
    """One port nothing listens on right now on ``host``."""
    return free_ports(host)[0]


def start_on_free_ports(
    attempt: Callable[[], None],
    *,
    failure: type[Exception],
    log_tail: Callable[[], str],
    terminate: Callable[[], None],
) -> None:
    """Run ``attempt()`` (pick free ports, spawn, wait until ready) until it succeeds.

    A ``failure`` is tried again, after ``terminate()``, only when the
    server's log says a port was taken between the probe and the bind, and
    at most :data:`PORT_ATTEMPTS` times in all; any other failure propagates.
    """
    for number in range(1, PORT_ATTEMPTS + 1):
        try:
            attempt()
            return
        except failure:
            port_taken = "Address already in use" in log_tail()
            terminate()
            if not port_taken or number == PORT_ATTEMPTS:
                raise
