"""What the tests of fetch_to_maildir share: a served mailbox, the Maildir's files, waits."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiopop
from aiopop._fetch import (
    FetchResult,
    fetch_to_maildir,
)
from aiopop._maildir import Maildir
from aiopop.testing import (
    Expect,
    Mailbox,
    POP3TestServer,
    ScriptedServer,
    Send,
    Step,
)
from tests.helpers.scripted import LOGIN

USER = "alice"
PASSWORD = "secret"
ACCOUNT = "alice@test"
BIG = b"Subject: big\r\n\r\n" + b"".join(b"line %06d of a big one\r\n" % i for i in range(4000))
MESSAGES = [
    b"Subject: one\r\n\r\nHello\r\n",
    b"Subject: two\r\n\r\n.\r\n..\r\n.dot\r\nbare\rCR\r\n",
    BIG,  # over the stream threshold used below: streamed to disk
    b"Subject: four\r\n\r\nlast\r\n",
]
THRESHOLD = 10_000


def unix(message: bytes) -> bytes:
    return message.replace(b"\r\n", b"\n")


def saved(path: Path) -> list[bytes]:
    """The messages in ``new/`` and ``cur/``, sorted."""
    return sorted(
        file.read_bytes()
        for sub in ("new", "cur")
        if (path / sub).exists()
        for file in (path / sub).iterdir()
    )


async def fetch(port: int, path: Path | Maildir, **options: Any) -> FetchResult:
    """Log in on 127.0.0.1:``port``, fetch, QUIT; the options go to fetch_to_maildir."""
    options.setdefault("stream_threshold", THRESHOLD)
    async with aiopop.POP3("127.0.0.1", port, timeout=5) as client:
        await client.login(USER, PASSWORD)
        return await fetch_to_maildir(client, path, account=ACCOUNT, **options)


async def wait_until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(10):
        while not condition():  # noqa: ASYNC110 (polling the file system)
            await asyncio.sleep(0.001)


def serve(*messages: bytes, **options: Any) -> tuple[Mailbox, POP3TestServer]:
    mailbox = Mailbox(PASSWORD, list(messages))
    return mailbox, POP3TestServer({USER: mailbox}, **options)


# -- a server without UIDL ---------------------------------------------------------------


def script(*dialogue: tuple[bytes, bytes]) -> list[Step]:
    """A logged-in script: each command expected in turn, and its reply."""
    steps = list(LOGIN)
    for command, reply in dialogue:
        steps += [Expect(command), Send(reply)]
    return steps


NO_UIDL = (b"UIDL", b"-ERR unknown command\r\n")
LISTING = (b"LIST", b"+OK\r\n1 5\r\n2 5\r\n3 5\r\n.\r\n")


async def scripted_client(server: ScriptedServer) -> aiopop.POP3:
    """A client that sends one command at a time, in a fixed order."""
    client = aiopop.POP3(server.host, server.port, timeout=5, pipelining=False)
    await client.connect()
    await client.user("u")
    await client.pass_("p")
    return client
