"""Fixtures shared by every test: the certificate authority and the TLS contexts it signs.

The Dovecot fixtures are in tests/integration/conftest.py; the helper
modules (scripted servers, cutting proxies, fault-injecting file systems,
the sans-I/O feeders) are in tests/helpers/.
"""

from __future__ import annotations

import pytest
import trustme


@pytest.fixture(scope="session")
def ca() -> trustme.CA:
    """A throw-away certificate authority for the TLS tests."""
    return trustme.CA()
