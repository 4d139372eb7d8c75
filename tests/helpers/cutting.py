"""A loopback proxy that cuts a POP3 connection at a chosen reply: for fault tests.

It forwards one POP3 session reply by reply (it knows which replies are
multi-line), so a cut lands at an exact point of the dialogue whatever the
pipelining. Commands after the one whose reply is cut never reach the server.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Literal

from aiopop.testing._base import LoopbackServer

HOW = ("executed", "half", "whole")


@dataclass(frozen=True)
class Cut:
    """Where to cut: at ``reply`` (0 the greeting, ``i`` the reply to the ``i``-th command).

    ``how``: ``"executed"`` the command reached the server and was carried
    out, but its reply is dropped (after QUIT: the server committed the
    deletions, the client never heard); ``"half"`` the first half of the
    reply's octets reach the client (mid-message for a RETR); ``"whole"``
    the reply reaches the client, and nothing after it does.
    """

    reply: int
    how: Literal["executed", "half", "whole"]

    def __str__(self) -> str:
        return f"{self.how}-{self.reply}"


def multiline(command: bytes) -> bool:
    """True when a ``+OK`` to ``command`` starts a multi-line reply (RFC 1939, RFC 2449)."""
    verb, _, argument = command.rstrip(b"\r\n").partition(b" ")
    verb = verb.upper()
    return verb in (b"RETR", b"TOP", b"CAPA") or (
        verb in (b"LIST", b"UIDL", b"LANG") and not argument
    )


async def read_reply(
    reader: asyncio.StreamReader, command: bytes | None, status: bytes
) -> bytes | None:
    """The whole reply to ``command`` (None: the greeting) that starts with ``status``.

    None when the server closes before its end.
    """
    if command is None or not status.startswith(b"+OK") or not multiline(command):
        return status
    parts = [status]
    while True:
        line = await reader.readline()
        if not line.endswith(b"\n"):
            return None
        parts.append(line)
        if line == b".\r\n":
            return b"".join(parts)


class CuttingProxy(LoopbackServer):
    """Forwards each connection from a 127.0.0.1 port to ``127.0.0.1:target``; cuts at ``cut``.

    ``commands`` records every command forwarded, across connections;
    ``cuts`` counts the cuts made.
    """

    def __init__(self, target: int, cut: Cut | None = None) -> None:
        super().__init__(host="127.0.0.1", port=0, ssl_context=None)
        self.target = target
        self.cut = cut
        self.commands: list[bytes] = []
        self.cuts = 0

    async def _serve(
        self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter
    ) -> None:
        server_reader, server_writer = await asyncio.open_connection(
            "127.0.0.1", self.target, limit=1 << 22
        )
        forwarded: asyncio.Queue[bytes] = asyncio.Queue()
        upstream = asyncio.ensure_future(self._upstream(client_reader, server_writer, forwarded))
        try:
            await self._downstream(server_reader, client_writer, forwarded)
        except OSError:
            pass
        finally:
            upstream.cancel()
            with contextlib.suppress(asyncio.CancelledError, OSError):
                await upstream
            server_writer.close()  # the client's side is closed by LoopbackServer
            with contextlib.suppress(OSError):
                await server_writer.wait_closed()

    async def _upstream(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        forwarded: asyncio.Queue[bytes],
    ) -> None:
        limit = self.cut.reply if self.cut is not None else None
        count = 0
        while line := await reader.readline():
            count += 1
            if limit is not None and count > limit:
                continue  # held back: the server never sees it
            self.commands.append(line.rstrip(b"\r\n"))
            forwarded.put_nowait(line)
            writer.write(line)
            await writer.drain()
        with contextlib.suppress(OSError):
            writer.write_eof()

    async def _downstream(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        forwarded: asyncio.Queue[bytes],
    ) -> None:
        index = 0
        while True:
            status = await reader.readline()
            if not status.endswith(b"\n"):
                return
            # The server answers only what it was sent, and that was queued first.
            command = None if index == 0 else forwarded.get_nowait()
            reply = await read_reply(reader, command, status)
            if reply is None:
                return
            if self.cut is not None and index == self.cut.reply:
                self.cuts += 1
                if self.cut.how == "half":
                    writer.write(reply[: len(reply) // 2])
                elif self.cut.how == "whole":
                    writer.write(reply)
                await writer.drain()
                return
            writer.write(reply)
            await writer.drain()
            index += 1
