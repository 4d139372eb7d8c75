"""Fixtures shared by the tests of aiopop.testing."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from aiopop.testing import POP3TestServer
from tests.helpers.server import mailboxes


@pytest.fixture
async def server() -> AsyncIterator[POP3TestServer]:
    async with POP3TestServer(mailboxes()) as srv:
        yield srv
