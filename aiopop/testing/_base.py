"""Listening, connection tracking and shutdown shared by the test servers."""

from __future__ import annotations

import asyncio
import ssl
from types import TracebackType
from typing import Self

__all__ = ["LoopbackServer"]

_TLS_TIMEOUT = 10.0
_CLOSE_TIMEOUT = 5.0


class LoopbackServer:
    """A TCP (optionally implicit-TLS) server that runs one task per connection.

    Subclasses implement :meth:`_serve`. Network errors end a connection
    quietly; the server never logs and never stops because of a client.
    """

    def __init__(self, *, host: str, port: int, ssl_context: ssl.SSLContext | None) -> None:
        self.host = host
        """The address the server listens on. Give an IP address: a name that
        resolves to several addresses would listen on several ports."""
        self.port = port
        """The port; once started, the one actually bound (useful with port 0)."""
        self.ssl_context = ssl_context
        self._server: asyncio.Server | None = None
        self._connections: dict[asyncio.Task[None], asyncio.StreamWriter] = {}

    async def start(self) -> None:
        """Start listening; afterwards :attr:`port` is the bound port."""
        if self._server is not None:
            raise RuntimeError("the server is already started")
        if self.ssl_context is None:
            self._server = await asyncio.start_server(self._accept, self.host, self.port)
        else:
            self._server = await asyncio.start_server(
                self._accept,
                self.host,
                self.port,
                ssl=self.ssl_context,
                ssl_handshake_timeout=_TLS_TIMEOUT,
                ssl_shutdown_timeout=_TLS_TIMEOUT,
            )
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        """Stop listening and abort every open connection. Safe to call twice."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        tasks = list(self._connections)
        for task, writer in self._connections.items():
            writer.transport.abort()
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        await server.wait_closed()

    async def wait_idle(self) -> None:
        """Wait until every connection accepted so far has been handled to its end."""
        while self._connections:
            await asyncio.wait(list(self._connections))

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # A plain callback that starts our own task: asyncio's wrapper task
        # for a coroutine callback reports a cancelled task as an error on 3.11.
        task = asyncio.get_running_loop().create_task(self._run(reader, writer))
        self._connections[task] = writer
        task.add_done_callback(self._forget)

    def _forget(self, task: asyncio.Task[None]) -> None:
        self._connections.pop(task, None)

    async def _run(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await self._serve(reader, writer)
        except (OSError, EOFError):
            pass  # the client went away or the TLS handshake failed
        except Exception as exc:
            self._failed(exc)
        finally:
            await _close(writer)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError

    def _failed(self, exc: Exception) -> None:
        """Note an unexpected error that ended a connection."""


async def _close(writer: asyncio.StreamWriter) -> None:
    if not writer.is_closing():
        writer.close()
    try:
        await asyncio.wait_for(writer.wait_closed(), _CLOSE_TIMEOUT)
    except Exception:  # reset, TLS shutdown error or timeout: close regardless
        writer.transport.abort()
