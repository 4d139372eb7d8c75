"""Fixtures shared by the client's tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import trustme

from aiopop.testing import Mailbox, POP3TestServer
from tests.helpers.login import MESSAGE, PASSWORD, PASSWORD_MECHANISMS, TOKEN
from tests.helpers.tls import server_context


@pytest.fixture
def mailbox() -> Mailbox:
    return Mailbox(PASSWORD, [MESSAGE], tokens=(TOKEN,))


@pytest.fixture
async def stls_server(ca: trustme.CA, mailbox: Mailbox) -> AsyncIterator[POP3TestServer]:
    """A plain server offering STLS and every password mechanism, plus APOP."""
    server = POP3TestServer(
        {"mrose": mailbox}, starttls_context=server_context(ca), sasl=PASSWORD_MECHANISMS
    )
    async with server:
        yield server
