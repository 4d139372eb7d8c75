"""Clients for the in-process servers, and a scripted server with a login already played."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Any

import aiopop
from aiopop.testing import Expect, POP3TestServer, ScriptedServer, Send, Step

LOGIN: list[Step] = [
    Send(b"+OK ready\r\n"),
    Expect(b"USER u"),
    Send(b"+OK\r\n"),
    Expect(b"PASS p"),
    Send(b"+OK logged in\r\n"),
]
"""The start of a script: greet, then accept USER u and PASS p."""


def client_for(server: POP3TestServer | ScriptedServer, **options: Any) -> aiopop.POP3:
    """A plain POP3 client for ``server``, with the given options."""
    return aiopop.POP3(server.host, server.port, **options)


@contextlib.asynccontextmanager
async def logged_in(
    steps: Sequence[Step], **options: Any
) -> AsyncIterator[tuple[ScriptedServer, aiopop.POP3]]:
    """A scripted server that lets user "u" in with password "p", then plays ``steps``."""
    async with ScriptedServer([*LOGIN, *steps]) as server:
        client = client_for(server, **options)
        try:
            await client.connect()
            await client.user("u")
            await client.pass_("p")
            yield server, client
        finally:
            await client.close()
