"""What the tests of fetch_to_maildir and fetch_into share: a served mailbox, the Maildir's
files, the state file's rows, what reached the wire, a delivery callable, waits."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, NamedTuple

import aiopop
from aiopop._fetch import (
    FetchResult,
    fetch_into,
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


# -- fetch_into: a delivery callable, the state file, the wire -------------------------------


class Row(NamedTuple):
    """One row of the state file's ``messages`` table, as sqlite3 reads it."""

    size: int | None
    name: str | None
    delivered: int
    first_delivered: float
    marked: float | None


def rows(state: Path, account: str = ACCOUNT) -> dict[str, Row]:
    """The rows of ``account`` in the state file ``state``, by unique-id (read with sqlite3)."""
    db = sqlite3.connect(state)
    try:
        found = db.execute(
            "SELECT uid, size, name, delivered, first_delivered, marked FROM messages"
            " WHERE mailbox = ?",
            (account,),
        ).fetchall()
    finally:
        db.close()
    return {uid: Row(*rest) for uid, *rest in found}


def age(state: Path, uids: Iterable[str], days: float) -> None:
    """Make the rows of ``uids`` first delivered ``days`` days earlier than they were."""
    db = sqlite3.connect(state)
    try:
        with db:
            db.executemany(
                "UPDATE messages SET first_delivered = first_delivered - ? WHERE uid = ?",
                [(days * 86400, uid) for uid in uids],
            )
    finally:
        db.close()


def wire(server: POP3TestServer, *keywords: str, session: int = -1) -> list[bytes]:
    """The command lines of a session (the last by default) whose keyword is in ``keywords``
    (by default TOP, RETR, DELE and QUIT: what a fetch did with the messages)."""
    wanted = keywords or ("TOP", "RETR", "DELE", "QUIT")
    record = server.sessions[session]
    return [line for line, keyword in zip(record.lines, record.keywords, strict=True)
            if keyword in wanted]  # fmt: skip


class Hand:
    """A delivery callable that keeps each message it is given, in order.

    It raises :class:`aiopop.DeliveryError` for the message numbers in
    ``refuse``, and ``fail[number]`` (any exception) for those in ``fail``.
    """

    def __init__(
        self, refuse: Iterable[int] = (), fail: dict[int, BaseException] | None = None
    ) -> None:
        self.got: list[aiopop.NewMessage] = []
        self.refuse = set(refuse)
        self.fail = dict(fail or {})

    async def __call__(self, message: aiopop.NewMessage) -> None:
        if message.number in self.fail:
            raise self.fail[message.number]
        if message.number in self.refuse:
            raise aiopop.DeliveryError(f"message {message.number} refused")
        self.got.append(message)

    @property
    def numbers(self) -> list[int]:
        return [message.number for message in self.got]


async def run_into(
    server: POP3TestServer,
    destination: Any,
    *,
    user: str = USER,
    quit: bool = True,
    **options: Any,
) -> FetchResult:
    """Log in to ``server`` as ``user``, run fetch_into, then QUIT (or, with ``quit=False``,
    close without QUIT); returns once the server has finished with the session.

    ``options`` go to fetch_into; ``account`` defaults to :data:`ACCOUNT`.
    """
    options.setdefault("account", ACCOUNT)
    client = aiopop.POP3(server.host, server.port, timeout=5)
    try:
        await client.connect()
        await client.login(user, PASSWORD)
        result = await fetch_into(client, destination, **options)
        if quit:
            await client.quit()
        return result
    finally:
        await client.close()
        await server.wait_idle()
