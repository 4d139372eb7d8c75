"""Messages, mailboxes and raw-socket sessions shared by the tests of aiopop.testing's servers."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import re
from collections.abc import Callable
from typing import Any, TypeVar

from aiopop import sasl
from aiopop.testing import (
    GeneratedMessage,
    Mailbox,
    POP3TestServer,
    ScriptedServer,
)

T = TypeVar("T")

# LF line ends on purpose (stored as CRLF); lines starting with "." to stuff.
FIRST = b"From: a@example.com\nSubject: one\n\nline 1\n.dot line\n.\nline 4\n"
SECOND = b"Subject: two\r\n\r\nbody\r\n"
THIRD = b"Subject: three\r\n\r\n" + b"x\r\n" * 5
FIRST_CRLF = FIRST.replace(b"\n", b"\r\n")


def md5_hex(data: bytes) -> bytes:
    """The APOP digest computed here, independently of the client's code."""
    return hashlib.md5(data, usedforsecurity=False).hexdigest().encode()


def mailboxes() -> dict[str, Mailbox]:
    return {
        "alice": Mailbox("secret", [FIRST, SECOND, THIRD]),
        "bob": Mailbox("hunter2"),
    }


class Wire:
    """A raw POP3 client over asyncio streams, reading one line at a time."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.greeting = b""

    @classmethod
    async def open(cls, server: POP3TestServer | ScriptedServer, **kwargs: Any) -> Wire:
        reader, writer = await asyncio.open_connection(server.host, server.port, **kwargs)
        return cls(reader, writer)

    @classmethod
    async def pop(cls, server: POP3TestServer, **kwargs: Any) -> Wire:
        wire = await cls.open(server, **kwargs)
        wire.greeting = await wire.line()
        return wire

    async def line(self) -> bytes:
        async with asyncio.timeout(5):
            return await self.reader.readline()

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def cmd(self, command: bytes) -> bytes:
        await self.send(command + b"\r\n")
        return await self.line()

    async def body(self) -> bytes:
        """The rest of a multi-line response as sent: dot-stuffed, without the end line."""
        lines = []
        while (line := await self.line()) != b".\r\n":
            assert line, "connection closed inside a multi-line response"
            lines.append(line)
        return b"".join(lines)

    async def multi(self, command: bytes) -> tuple[bytes, bytes]:
        first = await self.cmd(command)
        assert first.startswith(b"+OK"), first
        return first, await self.body()

    async def login(self, user: bytes = b"alice", password: bytes = b"secret") -> bytes:
        assert (await self.cmd(b"USER " + user)).startswith(b"+OK")
        return await self.cmd(b"PASS " + password)

    async def at_eof(self) -> bool:
        async with asyncio.timeout(5):
            return await self.reader.read() == b""

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):  # ssl.SSLError is an OSError
            await self.writer.wait_closed()


async def in_thread(fn: Callable[[], T]) -> T:
    return await asyncio.to_thread(fn)


# -- GeneratedMessage and streaming helpers ---------------------------------------


def content(message: GeneratedMessage, chunk_size: int = 65536) -> bytes:
    return b"".join(message.chunks(chunk_size))


def unstuff(body: bytes) -> bytes:
    return re.sub(rb"(?m)^\.", b"", body)


def sasl_mailboxes() -> dict[str, Mailbox]:
    return {"alice": Mailbox("secret", [SECOND], tokens=("good-token",))}


async def sasl_exchange(
    wire: Wire, mechanism: sasl.Mechanism, *, initial_on_line: bool = True
) -> bytes:
    """Run one AUTH exchange with ``mechanism`` as a raw client; return the final line."""
    initial = mechanism.initial_response() if initial_on_line else None
    line = b"AUTH " + mechanism.name.encode()
    if initial is not None:
        line += b" " + (base64.b64encode(initial) or b"=")
    reply = await wire.cmd(line)
    pending = mechanism.initial_response() if not initial_on_line else None
    while reply.startswith(b"+ "):
        challenge = base64.b64decode(reply[2:].rstrip(b"\r\n"))
        if pending is not None and not challenge:
            # RFC 5034: the initial response follows an empty challenge.
            response, pending = pending, None
        else:
            response = mechanism.respond(challenge)
        reply = await wire.cmd(base64.b64encode(response))
    return reply
