"""Where a client connects: the server's address, or a proxy's in front of it.

Suites hand their clients an :class:`Endpoint`, never a server's own host and
port, so that a suite can run through something in between (the delay
proxy of :mod:`.delay`, a fixed one-way delay per direction between client
and Dovecot: :class:`~.delay.DelayRoute`) by choosing another
:class:`Route`. Only loopback addresses are ever allowed.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Protocol

__all__ = ["DIRECT", "Direct", "Endpoint", "Route", "check_loopback"]


def check_loopback(host: str) -> str:
    """``host`` itself when it is a loopback address (127.0.0.0/8, ::1); else ValueError."""
    if not ipaddress.ip_address(host).is_loopback:
        raise ValueError(f"{host} is not a loopback address: benchmarks contact no other")
    return host


@dataclass(frozen=True)
class Endpoint:
    """A host and port a client connects to (a loopback address)."""

    host: str
    port: int

    def __post_init__(self) -> None:
        check_loopback(self.host)


class Route(Protocol):
    """How a client reaches a server: the server's endpoint in, the one to dial out."""

    name: str

    def endpoint(self, server: Endpoint) -> Endpoint: ...


class Direct:
    """Straight to the server."""

    name = "direct"

    def endpoint(self, server: Endpoint) -> Endpoint:
        return server


DIRECT: Route = Direct()
