"""aiopop's pytest plugin: the ``pop3_server`` fixture (entry point ``aiopop`` in ``pytest11``).

pytest imports this module at the start of every run in any environment
where aiopop is installed, so it defines fixtures only and imports nothing of
aiopop until a test asks for one: merely having aiopop installed costs
pytest nothing. ``-p no:aiopop`` turns it off; with plugin autoloading
disabled, ``-p aiopop`` turns it on. See docs/testing.md.

* ``pop3_server`` (function scope, async): an
  :class:`aiopop.testing.POP3ServerFixture`, the handle of a running
  :class:`aiopop.testing.POP3TestServer` with one mailbox, ``"user"`` /
  ``"password"``, holding three messages; ``await pop3_server.start(...)``
  starts more servers with options (TLS, SASL, faults, latency, ...).
* ``pop3_ca`` (session scope): the :class:`aiopop.testing.LocalCA` that
  signs the TLS servers' certificates (made with trustme when first needed).

``pop3_server`` is an async fixture: it needs pytest-asyncio (either
``asyncio_mode``; it is declared with ``pytest_asyncio.fixture`` so strict
mode runs it too), or another plugin that runs async fixtures.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import pytest

if TYPE_CHECKING:
    from aiopop.testing import LocalCA, POP3ServerFixture

_F = TypeVar("_F", bound=Callable[..., Any])


def _async_fixture(function: _F) -> _F:
    try:
        import pytest_asyncio  # already imported by pytest when installed and enabled
    except ImportError:  # another plugin may run async fixtures (anyio's does)
        return pytest.fixture(function)  # type: ignore[return-value]
    return pytest_asyncio.fixture(function)  # type: ignore[return-value]


@pytest.fixture(scope="session")
def pop3_ca() -> LocalCA:
    """The throw-away certificate authority of ``pop3_server``'s TLS servers."""
    from aiopop.testing import LocalCA

    return LocalCA()


@_async_fixture
async def pop3_server(pop3_ca: LocalCA) -> AsyncIterator[POP3ServerFixture]:
    """A running aiopop POP3 test server with one mailbox; ``start()`` makes more.

    ``pop3_server.client()`` is an unconnected aiopop client for it, and
    ``pop3_server.user`` / ``pop3_server.password`` log in. Every server is
    stopped when the test ends.
    """
    from aiopop.testing import POP3ServerFixture

    servers = await POP3ServerFixture.open(pop3_ca)
    try:
        yield servers
    finally:
        await servers.close()
