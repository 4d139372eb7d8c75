"""Proxies: a URL (``socks5://``, ``socks5h://``, ``http://``) read and checked, and a
:data:`~aiopop.Connector` that opens each connection through it.

The proxy protocols themselves are python-socks' (the optional extra ``proxy``),
imported only when a connection is made. A proxy URL may carry a user name and a
password: neither ever appears in a message or a ``repr()``; :func:`shown_proxy`
is the URL to show.
"""

from __future__ import annotations

import importlib
import importlib.util
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ._errors import MissingExtraError

if TYPE_CHECKING:
    import socket

__all__ = [
    "PROXY_SCHEMES",
    "ProxyURL",
    "parse_proxy",
    "proxy_connector",
    "require_proxy_support",
    "shown_proxy",
]

PROXY_SCHEMES = ("socks5", "socks5h", "http")
"""socks5: names resolved here; socks5h: by the proxy; http: HTTP CONNECT (RFC 9110)."""

_DEFAULT_PORTS = {"socks5": 1080, "socks5h": 1080, "http": 8080}


@dataclass(frozen=True)
class ProxyURL:
    """A proxy URL, taken apart; the password is kept out of ``repr()``."""

    scheme: str
    host: str
    port: int
    username: str | None = None
    password: str | None = field(default=None, repr=False)


def parse_proxy(url: object) -> ProxyURL:
    """The parts of a proxy URL; ValueError (never quoting a password) if it is not one."""
    if not isinstance(url, str) or not url.strip():
        raise ValueError("a proxy URL is a non-empty string")
    try:
        parts = urllib.parse.urlsplit(url.strip())
        port = parts.port
    except ValueError:
        raise ValueError(f"not a proxy URL: {shown_proxy(url)}") from None
    scheme = parts.scheme.lower()
    if scheme not in PROXY_SCHEMES:
        raise ValueError(
            f"a proxy URL starts with socks5://, socks5h:// or http://, not {scheme or '?'}://"
        )
    host = parts.hostname
    if not host:
        raise ValueError(f"no host in the proxy URL {shown_proxy(url)}")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"a proxy URL has no path or query: {shown_proxy(url)}")
    username = urllib.parse.unquote(parts.username) if parts.username else None
    password = urllib.parse.unquote(parts.password) if parts.password is not None else None
    if password is not None and not username:
        raise ValueError(f"a proxy password needs a user name: {shown_proxy(url)}")
    return ProxyURL(scheme, host, port or _DEFAULT_PORTS[scheme], username, password)


def shown_proxy(url: str) -> str:
    """The proxy URL without its password (``socks5://alice:***@host:1080``)."""
    try:
        parts = urllib.parse.urlsplit(url)
        password = parts.password
    except ValueError:
        return "(a proxy URL that cannot be read)"
    if password is None:
        return url
    user, _, rest = parts.netloc.rpartition("@")
    name = user.partition(":")[0]
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{name}:***@{rest}"))


def require_proxy_support() -> None:
    """MissingExtraError unless python-socks is installed (looked for, not imported)."""
    if importlib.util.find_spec("python_socks") is None:
        raise MissingExtraError(
            "a proxy needs python-socks, which is not installed: pip install 'aiopop[proxy]'",
            extra="proxy",
        )


def proxy_connector(
    url: str, host: str, port: int, *, timeout: float | None
) -> Callable[[], Awaitable[socket.socket]]:
    """A connector that opens a connection to ``host:port`` through the proxy at ``url``.

    ``timeout`` bounds the proxy's part (TCP to the proxy, its handshake and
    the connection it opens), as it bounds one step everywhere in aiopop.
    """
    proxy = parse_proxy(url)
    require_proxy_support()

    async def connect() -> socket.socket:
        try:
            python_socks = importlib.import_module("python_socks")
            proxies = importlib.import_module("python_socks.async_.asyncio")
        except ImportError:  # pragma: no cover - found by require_proxy_support above
            require_proxy_support()
            raise
        kind = (
            python_socks.ProxyType.HTTP if proxy.scheme == "http" else python_socks.ProxyType.SOCKS5
        )
        client = proxies.Proxy(
            kind,
            proxy.host,
            proxy.port,
            username=proxy.username,
            password=proxy.password,
            rdns=proxy.scheme == "socks5h",
        )
        # python-socks bounds its part with 60 s when given None: no bound means none here.
        try:
            sock: socket.socket = await client.connect(
                host, port, timeout=timeout if timeout is not None else 10.0**9
            )
        except python_socks.ProxyError as exc:
            # Its own words ("Connection refused by destination host") do not say who spoke.
            raise python_socks.ProxyError(
                f"the proxy at {proxy.host}:{proxy.port} answered: {exc}", exc.error_code
            ) from exc
        return sock

    return connect
