"""What the tests of the connection and its engine share."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import aiopop
from aiopop.testing import (
    Mailbox,
    POP3TestServer,
)

PASSWORD = "secret"
MESSAGES = [b"Subject: %d\r\n\r\n%s\r\n" % (n, b"body %d " % n * (n % 7 + 1)) for n in range(1, 31)]


def reply(message: bytes) -> bytes:
    """A RETR reply carrying ``message`` (which has no line starting with a dot)."""
    return b"+OK %d octets\r\n" % len(message) + message + b".\r\n"


@contextlib.asynccontextmanager
async def session(**server_options: object) -> AsyncIterator[POP3TestServer]:
    mailbox = Mailbox(PASSWORD, list(MESSAGES))
    async with POP3TestServer({"u": mailbox}, apop=False, **server_options) as server:  # type: ignore[arg-type]
        yield server


async def login(client: aiopop.POP3) -> None:
    await client.connect()
    await client.user("u")
    await client.pass_(PASSWORD)


def record_writes(client: aiopop.POP3) -> list[bytes]:
    """Every write the client's connection makes to its transport from now on, in order."""
    connection = client._connection
    assert connection is not None
    transport = connection._transport
    assert transport is not None
    writes: list[bytes] = []
    real_write = transport.write

    def spy(data: bytes | bytearray | memoryview) -> None:
        writes.append(bytes(data))
        real_write(data)

    transport.write = spy  # type: ignore[method-assign]
    return writes
