"""One live POP3 connection: the transport, TLS, opening and closing.

:class:`Connection` is the asyncio protocol of a plain TCP transport; over
TLS (implicit, or after STLS) a :class:`~aiopop._tls.TLSSession` turns what
arrives into plaintext and what goes out into records. Whatever arrives is
fed to :class:`~aiopop._protocol.POP3Protocol` at once, and the
:class:`~aiopop._engine.Engine` it extends hands every event to the command
it belongs to, inside ``data_received``: no reader task, no per-command
wake-ups except the one that completes a command.

Everything that can end the connection (``close()``, a timeout, a protocol
error, the server closing or resetting) goes through :meth:`Connection._fail`
or :meth:`Connection.close`, which fail every queued or running command with
an error that says what happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import Awaitable, Callable
from typing import cast

from ._engine import ConnectionFailure, Engine
from ._errors import (
    ConnectionClosedError,
    ConnectionLostError,
    POP3TimeoutError,
    ProtocolError,
)
from ._events import Command, Greeting
from ._parse import StatusLine
from ._state import State
from ._tls import TLSSession

__all__ = ["CLOSE_TIMEOUT", "Connection"]

logger = logging.getLogger("aiopop")

CLOSE_TIMEOUT = 2.0
"""Seconds ``close()`` waits for what is buffered (TLS close_notify too) to go out."""
_QUICKACK: int = getattr(socket, "TCP_QUICKACK", 0)  # Linux only


class Connection(Engine, asyncio.Protocol):
    """One connection to a POP3 server, from TCP connect to close.

    The client creates it, awaits :meth:`open`, then talks to it through
    :meth:`command`, :meth:`listing`, :meth:`message`, :meth:`stream` and
    :meth:`close`.
    """

    def __init__(
        self,
        *,
        peer: str,
        timeout: float | None,
        max_line_length: int,
        pipelining: bool | None,
        max_in_flight: int,
        tls_fingerprint: bytes | None = None,
    ) -> None:
        super().__init__(
            peer=peer,
            timeout=timeout,
            max_line_length=max_line_length,
            pipelining=pipelining,
            max_in_flight=max_in_flight,
        )
        self._quickack_socket: socket.socket | None = None
        self._connect_task: asyncio.Task[tuple[asyncio.Transport, Connection]] | None = None
        self._tls: TLSSession | None = None
        self._handshake: asyncio.Future[None] | None = None
        self._tls_ended = False
        self._tls_fingerprint = tls_fingerprint

    # -- opening ---------------------------------------------------------------

    async def open(
        self,
        host: str,
        port: int,
        *,
        ssl_context: ssl.SSLContext | None,
        server_hostname: str | None,
        local_addr: tuple[str, int] | None,
        opener: Callable[[], Awaitable[socket.socket]] | None = None,
    ) -> Greeting:
        """Connect, read the greeting and return it.

        ``opener``, when given, returns a connected socket (one given as
        ``sock=``, or a connector's, through a proxy say) that is used in
        place of a TCP connection to ``host:port``; TLS still runs over it
        with ``server_hostname`` (the POP3 server's name, never a proxy's).
        ``timeout`` bounds the whole of it (the opener or TCP, TLS
        handshake, greeting).
        Socket and certificate errors propagate as the ``OSError`` they are;
        a :meth:`close` meanwhile makes it raise ConnectionClosedError.
        """
        loop = self.loop
        try:
            async with asyncio.timeout(self._timeout):
                if ssl_context is not None:
                    # TLS from the first octet: connection_made sends the ClientHello.
                    self._start_tls(ssl_context, server_hostname or host)
                connecting = (
                    self._open_socket(opener)
                    if opener is not None
                    else loop.create_connection(lambda: self, host, port, local_addr=local_addr)
                )
                # A task of its own, so that close() can stop a TCP connect or a
                # TLS handshake under way (there is no transport to close yet).
                self._connect_task = loop.create_task(connecting)
                try:
                    await self._connect_task
                except asyncio.CancelledError:
                    task = asyncio.current_task()
                    if not self._closing or task is None or task.cancelling():
                        raise  # cancelled from outside, or by the timeout
                    # close() stopped it: the greeting holds the error that says so.
                finally:
                    self._connect_task = None
                if self._handshake is not None:
                    await self._handshake
                return await self._greeting
        except TimeoutError as exc:
            error = POP3TimeoutError(f"connecting to {self.peer} timed out")
            self._fail(error)
            raise error from exc
        except BaseException:
            self._fail(ConnectionClosedError("connecting failed"))
            raise

    async def _open_socket(
        self, opener: Callable[[], Awaitable[socket.socket]]
    ) -> tuple[asyncio.Transport, Connection]:
        """The transport over the socket ``opener`` returns; the socket is closed if that fails."""
        sock = await opener()
        try:
            if not isinstance(sock, socket.socket):
                raise TypeError(f"a connector must return a socket.socket, not {sock!r}")
            return await self.loop.create_connection(lambda: self, sock=sock)
        except BaseException:
            if isinstance(sock, socket.socket):
                sock.close()
            raise

    # -- what the client may ask ---------------------------------------------------

    @property
    def is_tls(self) -> bool:
        """True once the connection is encrypted (implicit TLS, or after STLS).

        False during the STLS handshake, and for good if it failed.
        """
        return self._protocol.tls and not self._upgrading

    @property
    def peer_certificate(self) -> bytes | None:
        """The server's TLS certificate (DER), once a handshake has completed."""
        return self._tls.peer_certificate() if self._tls is not None else None

    @property
    def state(self) -> State:
        """The session state as of the replies read so far (CLOSED once the session ended)."""
        return self._protocol.state

    @property
    def greeting(self) -> Greeting | None:
        """The server's greeting, once it arrived."""
        return self._protocol.greeting

    @property
    def in_flight(self) -> int:
        """Commands sent whose reply has not fully arrived."""
        return len(self._in_flight)

    @property
    def queued(self) -> int:
        """Commands waiting to be sent."""
        return len(self._unsent)

    async def starttls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None
    ) -> StatusLine:
        """Send STLS and, on ``+OK``, run the TLS handshake on this connection (RFC 2595).

        Returns the status line; on ``-ERR`` nothing else happens. Reading
        stops the moment ``+OK`` arrives: an octet that came with it or
        before the handshake is an injection, and fails the connection with
        ProtocolError. A failed handshake raises its ``OSError`` (an
        ``ssl.SSLError`` for a bad certificate) and closes the connection.
        Commands queued meanwhile wait and go out encrypted.
        """
        future = self.command(Command("STLS"))
        try:
            status = await future
        except asyncio.CancelledError:
            # The server may be about to start TLS: the session cannot go on in the clear.
            self._fail(ConnectionClosedError("STLS was cancelled: the connection was closed"))
            raise
        if not status.ok:
            return status
        try:
            self._protocol.tls_started()  # raises if anything came after +OK
            transport = self._transport
            if transport is None or self._closing or self._error is not None:
                raise self._unusable()
            handshake = self._start_tls(ssl_context, server_hostname)
            transport.resume_reading()
            assert self._tls is not None
            transport.write(self._tls.start())
            async with asyncio.timeout(self._timeout):
                await handshake
        except ProtocolError as exc:
            self._fail(exc)
            raise
        except TimeoutError as exc:
            error = POP3TimeoutError(f"the TLS handshake with {self.peer} timed out")
            self._fail(error)
            raise error from exc
        except BaseException as exc:
            if self._closing:
                raise ConnectionClosedError("the connection was closed by this client") from exc
            self._fail(ConnectionLostError(f"the TLS handshake with {self.peer} failed: {exc}"))
            raise
        if self._closing or self._error is not None:
            raise self._unusable()
        return status

    def _start_tls(
        self, context: ssl.SSLContext, server_hostname: str | None
    ) -> asyncio.Future[None]:
        """From now on the stream is TLS; the future completes with the handshake."""
        self._tls = TLSSession(context, server_hostname, self._tls_fingerprint)
        self._handshake = handshake = self.loop.create_future()
        self._upgrading = True
        return handshake

    def _tls_received(self, tls: TLSSession, data: bytes) -> bytes:
        """Ciphertext in, plaintext out; the handshake's own messages are answered here."""
        handshake = self._handshake
        try:
            data = tls.receive(data)
        except ssl.SSLError as exc:
            if handshake is not None and not handshake.done():
                handshake.set_exception(exc)  # open() or starttls() raises it as it is
                handshake.exception()  # ...unless it was cancelled meanwhile: do not warn
                self._fail(ConnectionLostError(f"the TLS handshake with {self.peer} failed: {exc}"))
            else:
                self._fail(ConnectionLostError(f"TLS error from {self.peer}: {exc}"))
            return b""
        reply = tls.to_send()
        if reply and self._transport is not None:
            self._transport.write(reply)
        if tls.established and handshake is not None and not handshake.done():
            self._upgrading = False
            # What CAPA said in the clear says nothing now (RFC 2595 section 4).
            self._pipelining.forget()
            self._probe = None
            handshake.set_result(None)
            if self._unsent or self._out:
                self._schedule_flush()
        return data

    def _write(self, data: bytes) -> None:
        transport = self._transport
        if transport is None:
            return
        if self._tls is not None:
            try:
                data = self._tls.send(data)
            except ssl.SSLError as exc:  # a renegotiation that wants the server first, say
                self._fail(ConnectionLostError(f"TLS error from {self.peer}: {exc}"))
                return
        transport.write(data)

    # -- asyncio.Protocol --------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = stream = cast(asyncio.Transport, transport)
        if self._closing or self._error is not None:
            stream.abort()  # close() or a timeout came first
            return
        if self._tls is not None:
            self._protocol.tls_started()  # implicit TLS: nothing has been read yet
            stream.write(self._tls.start())
        sock = stream.get_extra_info("socket")
        if _QUICKACK and sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            self._quickack_socket = sock
        self._last_activity = self.loop.time()

    def data_received(self, data: bytes) -> None:
        self._last_activity = self.loop.time()
        tls = self._tls
        if tls is not None:
            data = self._tls_received(tls, data)
            if tls.peer_closed:
                self._tls_closed(tls, data)
                return
            if not data:
                return
        self._protocol.receive_data(data)
        self._process()
        if self._in_flight and self._quickack_socket is not None:
            # Acknowledge at once: a server that does not cork its replies holds
            # back the end of each one (Nagle) until our delayed ACK, ~40 ms.
            try:
                self._quickack_socket.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)
            except OSError:
                self._quickack_socket = None

    def _tls_closed(self, tls: TLSSession, data: bytes) -> None:
        """The server sent close_notify: the end of the stream, as a TCP FIN would be.

        No more plaintext can come, so a reply it cuts short fails at once
        (ConnectionLostError) however long the TCP connection stays open;
        then this side answers with its own close_notify and closes.
        """
        if self._tls_ended:
            return
        self._tls_ended = True
        if data:
            self._protocol.receive_data(data)
        self._protocol.receive_eof()
        self._process()
        transport = self._transport
        if transport is None or transport.is_closing():
            return  # _process failed the connection, and aborted it
        with contextlib.suppress(ssl.SSLError):
            transport.write(tls.close())
        transport.close()

    def eof_received(self) -> bool:
        if self._handshake is not None and not self._handshake.done():
            self._fail(
                ConnectionLostError(f"{self.peer} closed the connection in the TLS handshake")
            )
            return False
        self._protocol.receive_eof()
        self._process()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._lost.done():
            self._lost.set_result(None)
        self._cancel_timer()
        self._protocol.connection_closed()
        if self._in_flight or self._unsent or not self._greeting.done():
            reason = f": {exc}" if exc is not None else ""
            self._fail(ConnectionLostError(f"connection to {self.peer} lost{reason}"))

    def pause_reading(self) -> None:
        """Stop reading from the socket (a stream's consumer is behind)."""
        if not self._paused and self._transport is not None and not self._lost.done():
            self._paused = True
            self._transport.pause_reading()

    def resume_reading(self) -> None:
        """Read from the socket again; the inactivity clock restarts now."""
        if self._paused:
            self._paused = False
            self._last_activity = self.loop.time()
            if self._transport is not None and not self._transport.is_closing():
                self._transport.resume_reading()

    # -- the end -----------------------------------------------------------------------

    def _fail(self, error: ConnectionFailure) -> None:
        """The connection cannot go on: fail every command and abort the transport."""
        if self._error is None:
            self._error = error
        self._cancel_timer()
        self._fail_calls(error)
        for future in (self._handshake, self._greeting):
            if future is not None and not future.done():
                future.set_exception(error)
                future.exception()  # connect() may be gone already: do not warn
        self._protocol.connection_closed()
        if self._transport is not None:
            self._transport.abort()

    async def close(self) -> None:
        """Close without QUIT; commands still queued or running fail with ConnectionClosedError.

        Over TLS, sends close_notify first. Waits at most :data:`CLOSE_TIMEOUT`
        seconds for what is still buffered to go out, then aborts the connection.
        """
        transport = self._transport
        if not self._closing:
            self._closing = True
            self._cancel_timer()
            closed = ConnectionClosedError("the connection was closed by this client")
            self._fail_calls(closed)
            for future in (self._handshake, self._greeting):
                if future is not None and not future.done():
                    future.set_exception(
                        ConnectionClosedError("close() was called while connecting")
                    )
                    future.exception()
            self._protocol.connection_closed()
            if transport is not None:
                if self._tls is not None and self._error is None and not transport.is_closing():
                    with contextlib.suppress(ssl.SSLError):
                        transport.write(self._tls.close())
                transport.close()
            elif self._connect_task is not None:
                self._connect_task.cancel()  # still connecting: stop that
        if transport is None or self._lost.done():
            return
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await asyncio.shield(self._lost)
        except TimeoutError:
            transport.abort()
