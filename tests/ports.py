"""Free loopback ports for the test servers: asked of the kernel, not guessed."""

from __future__ import annotations

import contextlib
import socket

__all__ = ["free_port", "free_ports"]


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
