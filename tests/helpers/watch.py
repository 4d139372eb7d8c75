"""What the tests of watch() share: a fake clock, accounts for test servers, messages."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from aiopop._accounts import Account
from aiopop._message import NewMessage
from aiopop._watch import Watcher, watch
from aiopop.testing import (
    Expect,
    Mailbox,
    POP3TestServer,
    ScriptedServer,
    Send,
    Step,
    WaitForClose,
)

PASSWORD = "s3cret"
MESSAGES = [
    b"Subject: one\r\nFrom: a@example.org\r\n\r\nfirst\r\n",
    b"Subject: two\r\n\r\nsecond\r\n",
    b"Subject: =?utf-8?q?caf=C3=A9?=\r\n\r\nthird\r\n",
]


class Stop(Exception):
    """Raised by FakeTime.sleep to end a watcher that would retry forever."""


class FakeTime:
    """A clock that moves only when the watcher sleeps; records every sleep."""

    def __init__(
        self, *, stop_after: int | None = None, on_sleep: Callable[[int], object] | None = None
    ) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []
        self.stop_after = stop_after
        self.on_sleep = on_sleep

    def clock(self) -> float:
        return self.now

    async def sleep(self, delay: float) -> None:
        self.sleeps.append(delay)
        self.now += delay
        if self.on_sleep is not None:
            self.on_sleep(len(self.sleeps))
        if self.stop_after is not None and len(self.sleeps) >= self.stop_after:
            raise Stop
        await asyncio.sleep(0)

    def watch(self, account: Account, **options: Any) -> Watcher:
        """:func:`watch` on this clock."""
        return watch(account, sleep=self.sleep, clock=self.clock, **options)


def account_for(server: POP3TestServer | ScriptedServer, user: str = "alice") -> Account:
    return Account(
        server.host,
        user,
        port=server.port,
        tls="none",
        password=PASSWORD,
        allow_cleartext=True,
        timeout=10,
    )


def uids_of(mailbox: Mailbox) -> list[str]:
    """A copy of the mailbox's unique-ids, in order."""
    assert mailbox.uids is not None
    return list(mailbox.uids)


def exact(ceiling: float) -> float:
    """No jitter: the backoff ceiling itself, to check the exponential growth."""
    return ceiling


async def collect(watcher: Watcher) -> list[NewMessage]:
    async with watcher:
        return [message async for message in watcher]


def sent(server: POP3TestServer, keyword: str) -> list[list[bytes]]:
    """Per session, the command lines starting with ``keyword``."""
    return [
        [line for line in session.lines if line.upper().startswith(keyword.encode())]
        for session in server.sessions
    ]


# -- retries ------------------------------------------------------------------------


GREETING = Send(b"+OK ready\r\n")


def login_refused(reply: bytes, capa: bytes = b"USER") -> list[Step]:
    """A server whose PASS gets ``reply``."""
    return [
        GREETING,
        Expect(b"CAPA"),
        Send(b"+OK\r\n" + capa + b"\r\n.\r\n"),
        Expect(b"USER alice"),
        Send(b"+OK\r\n"),
        Expect(b"PASS " + PASSWORD.encode()),
        Send(reply),
        WaitForClose(),
    ]


def until_uidl(capa: bytes = b"") -> list[Step]:
    """A session up to its UIDL: USER and PASS accepted, ``capa`` in CAPA after login."""
    return [
        GREETING,
        Expect(b"CAPA"),
        Send(b"+OK\r\nUSER\r\n.\r\n"),
        Expect(b"USER alice"),
        Send(b"+OK\r\n"),
        Expect(b"PASS " + PASSWORD.encode()),
        Send(b"+OK\r\n"),
        Expect(b"CAPA"),
        Send(b"+OK\r\n" + capa + b".\r\n"),
        Expect(b"UIDL"),
    ]
