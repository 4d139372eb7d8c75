"""ScriptedServer: a server that plays a fixed script of raw bytes, for hostile-server tests."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ._base import LoopbackServer
from ._lines import LineReader, LineTooLong, strip_crlf

__all__ = [
    "Close",
    "Expect",
    "Mismatch",
    "Respond",
    "ScriptedServer",
    "Send",
    "Sleep",
    "StartTLS",
    "Step",
    "Trickle",
    "WaitForClose",
]

_MAX_LINE = 65536
_TLS_HANDSHAKE_TIMEOUT = 10.0


@dataclass(frozen=True)
class Send:
    """Write ``data`` to the client exactly as given (add the CRLF yourself)."""

    data: bytes


@dataclass(frozen=True)
class Expect:
    """Read one line from the client and record it in ``received``.

    With ``line`` set, the line (CRLF removed) must equal it exactly;
    otherwise, or if the client closes instead of sending a line, a
    :class:`Mismatch` is recorded and the connection is closed. With
    ``line=None`` any line is accepted.
    """

    line: bytes | None = None


@dataclass(frozen=True)
class Respond:
    """Read one line from the client, record it, and write ``answer(line)``.

    ``answer`` gets the line with its CRLF removed and returns the bytes to
    send (add the CRLF yourself; ``b""`` sends nothing). For servers whose
    reply depends on what the client sent, such as a SASL exchange with the
    client's nonce in it. If the client closes instead of sending a line, a
    :class:`Mismatch` (expected None) is recorded and the connection is closed;
    an exception from ``answer`` ends the connection and lands in
    :attr:`ScriptedServer.errors`.
    """

    answer: Callable[[bytes], bytes]


@dataclass(frozen=True)
class Sleep:
    """Pause for ``seconds`` without reading or writing."""

    seconds: float


@dataclass(frozen=True)
class Trickle:
    """Write ``data`` one octet at a time, pausing ``delay`` seconds between octets."""

    data: bytes
    delay: float


@dataclass(frozen=True)
class Close:
    """Close the connection now, ending the script."""


@dataclass(frozen=True)
class WaitForClose:
    """Read and record lines until the client closes the connection."""


@dataclass(frozen=True)
class StartTLS:
    """Run a server-side TLS handshake with ``context``, as after STLS.

    Send the ``+OK`` yourself first; a failed handshake ends the connection.
    """

    context: ssl.SSLContext


Step = Send | Expect | Respond | Sleep | Trickle | Close | WaitForClose | StartTLS
"""One step of a :class:`ScriptedServer` script."""


@dataclass(frozen=True)
class Mismatch:
    """An :class:`Expect` (or :class:`Respond`) step that did not get the line it wanted."""

    connection: int
    """The connection, counted from 0 in the order they were accepted."""
    step: int
    """The index of the step in the connection's script."""
    expected: bytes | None
    """The line the step wanted (None: any line)."""
    received: bytes | None
    """The line that came instead (CRLF removed); None if the client closed
    the connection or sent an over-long line (more than 64 KiB)."""


class ScriptedServer(LoopbackServer):
    """A server that plays ``script`` to every connection, from the first step.

    With ``then``, the second connection plays ``then[0]`` instead, the third
    ``then[1]`` and so on; connections beyond those play ``script`` again.
    For a client that reconnects, such as after a server closed on a refusal.

    Made for tests of how a client copes with a broken or hostile server::

        script = [Send(b"+OK ready\\r\\n"), Expect(b"STAT"), Send(b"+OK\\r\\n")]
        async with ScriptedServer(script) as server:
            ...  # the client connects to server.host, server.port
        assert server.mismatches == []

    When the script runs out, the server keeps reading and recording lines,
    without replying, until the client closes the connection. Lines are
    recorded with their CRLF removed; a line ended by a bare LF keeps the LF,
    so ``Expect(b"STAT")`` does not match ``b"STAT\\n"``.
    """

    def __init__(
        self,
        script: Sequence[Step],
        *,
        then: Sequence[Sequence[Step]] = (),
        host: str = "127.0.0.1",
        port: int = 0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__(host=host, port=port, ssl_context=ssl_context)
        self.script: tuple[Step, ...] = tuple(script)
        """The steps each connection runs (except those that ``then`` gives their own)."""
        self.then: tuple[tuple[Step, ...], ...] = tuple(tuple(steps) for steps in then)
        """The scripts of the second, third... connections."""
        self.received: list[bytes] = []
        """Every line the clients sent, across connections, CRLF removed."""
        self.mismatches: list[Mismatch] = []
        """Expect steps that failed, across connections."""
        self.errors: list[Exception] = []
        """Unexpected errors that ended a connection (not network errors)."""
        self.connections = 0
        """How many connections have been accepted."""

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connection = self.connections
        self.connections += 1
        lines = LineReader(reader, _MAX_LINE)
        script = self.then[connection - 1] if 0 < connection <= len(self.then) else self.script
        for index, step in enumerate(script):
            match step:
                case Send(data=data):
                    writer.write(data)
                    await writer.drain()
                case Expect(line=expected):
                    got = await self._read(lines)
                    if got is None or (expected is not None and got != expected):
                        self.mismatches.append(Mismatch(connection, index, expected, got))
                        return
                case Respond(answer=answer):
                    got = await self._read(lines)
                    if got is None:
                        self.mismatches.append(Mismatch(connection, index, None, got))
                        return
                    writer.write(answer(got))
                    await writer.drain()
                case Sleep(seconds=seconds):
                    await asyncio.sleep(seconds)
                case Trickle(data=data, delay=delay):
                    await _trickle(writer, data, delay)
                case Close():
                    return
                case WaitForClose():
                    break
                case StartTLS(context=context):
                    await writer.start_tls(context, ssl_handshake_timeout=_TLS_HANDSHAKE_TIMEOUT)
        while await self._read(lines) is not None:
            pass

    async def _read(self, lines: LineReader) -> bytes | None:
        try:
            raw = await lines.readline()
        except LineTooLong:
            return None
        if raw is None:
            return None
        line = strip_crlf(raw)
        self.received.append(line)
        return line

    def _failed(self, exc: Exception) -> None:
        self.errors.append(exc)


async def _trickle(writer: asyncio.StreamWriter, data: bytes, delay: float) -> None:
    for offset in range(len(data)):
        if offset:
            await asyncio.sleep(delay)
        writer.write(data[offset : offset + 1])
        await writer.drain()
