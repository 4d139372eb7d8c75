"""Fixtures shared by every test: the certificate authority and the TLS contexts it signs.

The Dovecot fixtures are in tests/integration/conftest.py; the helper
modules (scripted servers, cutting proxies, fault-injecting file systems,
the sans-I/O feeders, TLS contexts) are in tests/helpers/.
"""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
import trustme

from tests.helpers.tls import client_context, server_context


@pytest.fixture(scope="session")
def ca() -> trustme.CA:
    """A throw-away certificate authority for the TLS tests."""
    return trustme.CA()


@pytest.fixture(scope="session")
def server_tls(ca: trustme.CA) -> ssl.SSLContext:
    """A server context whose certificate, from ``ca``, names localhost and 127.0.0.1."""
    return server_context(ca)


@pytest.fixture(scope="session")
def client_tls(ca: trustme.CA) -> ssl.SSLContext:
    """A client context that trusts ``ca``."""
    return client_context(ca)


@pytest.fixture
def cafile(ca: trustme.CA, tmp_path: Path) -> Path:
    """``ca``'s certificate in a PEM file, for --cafile and the like."""
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return path
