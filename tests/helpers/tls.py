"""TLS contexts signed by a test certificate authority (the ``ca`` fixture of tests/conftest.py)."""

from __future__ import annotations

import ssl

import trustme

NAMES = ("localhost", "127.0.0.1")
"""The names a server certificate carries unless a test asks for others."""


def server_context(ca: trustme.CA, *names: str) -> ssl.SSLContext:
    """A server context with a certificate from ``ca`` for ``names`` (default: NAMES)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(*(names or NAMES)).configure_cert(context)
    return context


def client_context(ca: trustme.CA) -> ssl.SSLContext:
    """A client context that trusts ``ca`` (and verifies host names, as by default)."""
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context
