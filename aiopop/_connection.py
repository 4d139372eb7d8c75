"""One live POP3 connection: transport, sans-I/O core, commands in flight, timeouts, close.

:class:`Connection` is the asyncio protocol of a plain TCP transport; over
TLS (implicit, or after STLS) a :class:`~aiopop._tls.TLSSession` turns what
arrives into plaintext and what goes out into records. Whatever arrives is
fed to :class:`~aiopop._protocol.POP3Protocol` at once and every
event is handed to the command it belongs to, inside ``data_received``: no
reader task, no per-command wake-ups except the one that completes a
command. Commands wait in a queue and go out, coalesced into one write, as
soon as the session allows: one at a time, or several in flight when the
server offers PIPELINING (RFC 2449 section 6.6).

Timeouts run on one lazily re-armed timer. A status line or a listing must
arrive whole within ``timeout`` of its command reaching the head of the
queue; a message may take as long as it likes while octets keep coming,
and fails after ``timeout`` seconds without any.

Everything that can end the connection (``close()``, a timeout, a protocol
error, the server closing or resetting) goes through :meth:`Connection._fail`
or :meth:`Connection.close`, which fail every queued or running command with
an error that says what happened.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import socket
import ssl
from typing import cast

from ._auth import AuthExchange
from ._events import Challenge, Command, Data, End, Greeting, Line, Reply, ReplyShape
from ._parse import StatusLine, escape, parse_capa_line
from ._protocol import POP3Protocol
from ._replies import (
    STREAM_HIGH_WATER,
    STREAM_LOW_WATER,
    Budget,
    Call,
    CapaProbe,
    Lines,
    ListingCall,
    MessageCall,
    SaslCall,
    SingleCall,
    Sink,
    StreamCall,
)
from ._state import LIVE_STATES, State, may_follow
from ._tls import TLSSession
from .errors import (
    CommandStateError,
    ConnectionClosedError,
    ConnectionLostError,
    POP3Error,
    POP3TimeoutError,
    ProtocolError,
)
from .sasl import Mechanism
from .stream import MessageStream

__all__ = ["CLOSE_TIMEOUT", "Connection"]

logger = logging.getLogger("aiopop")

CLOSE_TIMEOUT = 2.0
"""Seconds ``close()`` waits for what is buffered (TLS close_notify too) to go out."""
_QUICKACK: int = getattr(socket, "TCP_QUICKACK", 0)  # Linux only
_CAPA_LIMIT = 1024 * 1024
"""Octets of the CAPA reply the connection asks for itself."""

ConnectionFailure = ProtocolError | ConnectionLostError | POP3TimeoutError | ConnectionClosedError


class Connection(asyncio.Protocol):
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
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.peer = peer
        self._protocol = POP3Protocol(max_line_length=max_line_length)
        self._timeout = timeout
        self._pipelining = pipelining
        self._max_in_flight = max_in_flight
        self._transport: asyncio.Transport | None = None
        self._quickack_socket: socket.socket | None = None
        self._greeting: asyncio.Future[Greeting] = self.loop.create_future()
        self._lost: asyncio.Future[None] = self.loop.create_future()
        self._in_flight: collections.deque[Call] = collections.deque()
        self._unsent: collections.deque[Call] = collections.deque()
        self._out: list[bytes] = []
        self._flush_scheduled = False
        self._error: ConnectionFailure | None = None
        self._closing = False
        self._timer: asyncio.TimerHandle | None = None
        self._head_since = 0.0
        self._last_activity = 0.0
        self._paused = False
        self._pipelining_state: State | None = None
        self._can_pipeline = False
        self._probe: CapaProbe | None = None
        self._capa_pipelining = False
        self._connect_task: asyncio.Task[tuple[asyncio.Transport, Connection]] | None = None
        self._tls: TLSSession | None = None
        self._handshake: asyncio.Future[None] | None = None
        self._upgrading = False
        self._tls_ended = False

    # -- opening ---------------------------------------------------------------

    async def open(
        self,
        host: str,
        port: int,
        *,
        ssl_context: ssl.SSLContext | None,
        server_hostname: str | None,
        local_addr: tuple[str, int] | None,
    ) -> Greeting:
        """Connect, read the greeting and return it.

        ``timeout`` bounds the whole of it (TCP, TLS handshake, greeting).
        Socket and certificate errors propagate as the ``OSError`` they are;
        a :meth:`close` meanwhile makes it raise ConnectionClosedError.
        """
        loop = self.loop
        try:
            async with asyncio.timeout(self._timeout):
                if ssl_context is not None:
                    # TLS from the first octet: connection_made sends the ClientHello.
                    self._start_tls(ssl_context, server_hostname or host)
                connecting = loop.create_connection(lambda: self, host, port, local_addr=local_addr)
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

    # -- what the client may ask ---------------------------------------------------

    @property
    def is_open(self) -> bool:
        """True until the connection is closed or has failed."""
        return self._error is None and not self._closing and not self._lost.done()

    @property
    def is_tls(self) -> bool:
        """True once the connection is encrypted (implicit TLS, or after STLS).

        False during the STLS handshake, and for good if it failed.
        """
        return self._protocol.tls and not self._upgrading

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

    # -- commands ------------------------------------------------------------------

    def command(self, command: Command) -> asyncio.Future[StatusLine]:
        """Queue a single-line command; the future gets its status line (``+OK`` or ``-ERR``)."""
        future: asyncio.Future[StatusLine] = self.loop.create_future()
        self._submit(SingleCall(command, future))
        return future

    def listing(self, command: Command) -> asyncio.Future[tuple[StatusLine, Lines]]:
        """Queue a listing command; the future gets its status line and its lines."""
        return self.parsed_listing(command, Lines())

    def parsed_listing(
        self, command: Command, sink: Sink
    ) -> asyncio.Future[tuple[StatusLine, Sink]]:
        """Queue a listing command whose lines go to ``sink`` as they arrive.

        The future gets the status line and ``sink``; or the
        MalformedReplyError the sink raised, once the whole reply has been read.
        """
        future: asyncio.Future[tuple[StatusLine, Sink]] = self.loop.create_future()
        self._submit(ListingCall(command, future, sink))
        return future

    def message(self, command: Command) -> asyncio.Future[tuple[StatusLine, bytes]]:
        """Queue a RETR or TOP; the future gets its status line and the whole message."""
        future: asyncio.Future[tuple[StatusLine, bytes]] = self.loop.create_future()
        self._submit(MessageCall(command, future))
        return future

    def budget(self, high: int) -> Budget:
        """A :class:`Budget` of ``high`` octets (reading resumes at half of it)."""
        return Budget(self, high, high // 2)

    def stream(
        self, command: Command, budget: Budget | None = None
    ) -> asyncio.Future[tuple[StatusLine, MessageStream]]:
        """Queue a RETR whose message is handed out in chunks by a :class:`MessageStream`.

        The future gets the status line and the stream (its chunks follow).
        Its queued data counts against ``budget`` (by default one of its own,
        of :data:`~aiopop._replies.STREAM_HIGH_WATER` octets). Cancelling the
        future before the status line drops the message as it arrives.
        """
        if budget is None:
            budget = Budget(self, STREAM_HIGH_WATER, STREAM_LOW_WATER)
        future: asyncio.Future[tuple[StatusLine, MessageStream]] = self.loop.create_future()
        self._submit(StreamCall(command, self, future, budget))
        return future

    def authenticate(self, mechanism: Mechanism) -> asyncio.Future[StatusLine]:
        """Queue an AUTH with ``mechanism`` (RFC 5034); the future gets the outcome.

        The mechanism answers each challenge synchronously as it arrives
        (:class:`~aiopop._auth.AuthExchange` frames it); a challenge it refuses,
        or an exception it raises, cancels the exchange (``*``) and fails the
        future with that error, after the server's ``-ERR``. Raises ValueError
        at once for a mechanism name that cannot be sent.
        """
        exchange = AuthExchange(mechanism)
        future: asyncio.Future[StatusLine] = self.loop.create_future()
        self._submit(SaslCall(exchange, future))
        return future

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
        self._tls = TLSSession(context, server_hostname)
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
            self._pipelining_state = None
            self._can_pipeline = False
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

    async def learn_pipelining(self) -> bool:
        """Whether commands may be pipelined now, asking CAPA first if that is not known yet.

        The connection alone decides whether to pipeline: ``pipelining`` when
        it was given, else what the last CAPA reply in this session state said
        about PIPELINING, whoever asked for it.
        """
        if self._pipelining is not None:
            return self._pipelining
        state = self._protocol.state
        if self._pipelining_state is state:
            return self._can_pipeline
        if state not in LIVE_STATES or not self.is_open:
            return False
        probe = self._probe
        if probe is None:
            probe = self._new_probe()
            self._submit(probe)
        await asyncio.shield(probe.future)
        return self._pipelining_state is self._protocol.state and self._can_pipeline

    def _noted_capa(self, can: bool) -> None:
        """Record what a CAPA reply said about PIPELINING, for the current session state."""
        self._pipelining_state = self._protocol.state
        self._can_pipeline = can
        self._probe = None

    def _new_probe(self) -> CapaProbe:
        command = Command("CAPA", shape=ReplyShape.LINES, limit=_CAPA_LIMIT)
        probe = CapaProbe(command, self.loop.create_future())
        self._probe = probe
        return probe

    def _submit(self, call: Call) -> None:
        if not self.is_open:
            raise self._unusable()
        if not self._in_flight and not self._unsent:
            # The common case of one command at a time: checked and sent at once,
            # so a command the session does not allow raises here.
            data = self._protocol.send(call.command)
            self._start(call, data)
            self._schedule_flush()
            return
        # A bad argument is the caller's bug: refuse it now, before anything is sent.
        call.encoded = self._protocol.encode(call.command)
        self._unsent.append(call)
        self._schedule_flush()

    def _unusable(self) -> POP3Error:
        error = self._error
        if error is not None and not isinstance(error, ConnectionClosedError):
            return type(error)(f"the connection is closed: {error}")
        if self._closing or error is not None:
            return CommandStateError("not connected")
        return ConnectionLostError(f"{self.peer} closed the connection")

    def _start(self, call: Call, data: bytes) -> None:
        if not self._in_flight:
            self._head_since = self.loop.time()
        self._in_flight.append(call)
        self._out.append(data)
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("C: %s", call.command.loggable())
        if self._timeout is not None and self._timer is None:
            self._timer = self.loop.call_at(self._head_since + self._timeout, self._on_timer)

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        """Send what the session allows now, in one write."""
        self._flush_scheduled = False
        if self._error is not None or self._closing or self._transport is None or self._upgrading:
            return
        unsent, in_flight = self._unsent, self._in_flight
        protocol = self._protocol
        # Pipelined commands go out in bursts: once the window is more than half
        # full, wait for it to drain to half. One write of fifty RETRs rather than
        # fifty writes of one; the server still has half a window of work queued.
        refill = len(in_flight) <= self._max_in_flight // 2
        while unsent and refill:
            call = unsent[0]
            if call.abandoned and not isinstance(call, CapaProbe):
                unsent.popleft()
                continue
            if in_flight:
                if not self._may_pipeline(call):
                    break
            elif self._should_probe(call):
                probe = self._new_probe()
                self._start(probe, protocol.send(probe.command))
                break
            unsent.popleft()
            try:
                data = protocol.send(call.command, encoded=call.encoded)
            except (ValueError, CommandStateError) as exc:
                call.fail(exc)
                continue
            self._start(call, data)
        out = self._out
        if out:
            self._out = []
            self._write(out[0] if len(out) == 1 else b"".join(out))

    def _may_pipeline(self, call: Call) -> bool:
        in_flight = self._in_flight
        if len(in_flight) >= self._max_in_flight:
            return False
        if not may_follow(in_flight[-1].command.verb, call.command.verb):
            return False
        if self._pipelining is not None:
            return self._pipelining
        return self._pipelining_state is self._protocol.state and self._can_pipeline

    def _should_probe(self, call: Call) -> bool:
        """Whether to ask CAPA before sending ``call``: only when several commands wait."""
        return (
            self._pipelining is None
            and self._probe is None
            and len(self._unsent) > 1
            and self._pipelining_state is not self._protocol.state
            and self._protocol.state in LIVE_STATES
            and may_follow("CAPA", call.command.verb)
        )

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

    # -- events ------------------------------------------------------------------------

    def _process(self) -> None:
        protocol = self._protocol
        in_flight = self._in_flight
        try:
            while (event := protocol.next_event()) is not None:
                if isinstance(event, Data):
                    in_flight[0].on_data(event.data)
                elif isinstance(event, Reply):
                    self._on_reply(event)
                elif isinstance(event, End):
                    call = in_flight.popleft()
                    if call.command.verb == "CAPA":
                        self._noted_capa(self._capa_pipelining)
                    call.on_end()
                    self._head_since = self.loop.time()
                elif isinstance(event, Line):
                    in_flight[0].on_line(event.data)
                    if event.command.verb == "CAPA":
                        self._capa_line(event.data)
                elif isinstance(event, Challenge):
                    self._on_challenge(event)
                elif not self._greeting.done():
                    self._greeting.set_result(event)
        except (ProtocolError, ConnectionLostError) as exc:
            self._fail(exc)
            return
        if self._unsent:
            self._flush()

    def _on_reply(self, reply: Reply) -> None:
        status = reply.status
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("S: %s", escape(status.raw))
        call = self._in_flight[0]
        shape = call.command.shape
        if status.ok and shape in (ReplyShape.LINES, ReplyShape.DATA):
            # A message is bounded by inactivity from here on; a listing stays
            # bounded as a whole reply.
            call.in_body = shape is ReplyShape.DATA
            if call.command.verb == "CAPA":
                self._capa_pipelining = False
            call.on_status(status, False)
        else:
            self._in_flight.popleft()
            self._head_since = self.loop.time()
            if call.command.verb == "CAPA":  # -ERR: an RFC 1939 server, no PIPELINING
                self._noted_capa(False)
            if status.ok and call.command.verb == "STLS" and self._transport is not None:
                # Not one more octet in the clear: whatever follows is TLS, or an attack.
                self._upgrading = True
                self._transport.pause_reading()
            call.on_status(status, True)

    def _capa_line(self, data: bytes) -> None:
        # A blank or odd CAPA line says nothing about PIPELINING.
        with contextlib.suppress(ProtocolError):
            if parse_capa_line(data)[0] == "PIPELINING":
                self._capa_pipelining = True

    def _on_challenge(self, event: Challenge) -> None:
        call = self._in_flight[0]
        response: bytes | None
        try:
            response = call.on_challenge(event.data) if isinstance(call, SaslCall) else None
        except Exception as exc:  # a mechanism's error cancels the exchange; the call sees it
            if isinstance(call, SaslCall):
                call.fail(exc)
            response = None
        data = self._protocol.send_response(response)
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("C: %s", "*" if response is None else "<SASL response>")
        self._head_since = self.loop.time()  # the server waited for us
        self._write(data)

    # -- timeouts ----------------------------------------------------------------------

    def _on_timer(self) -> None:
        self._timer = None
        timeout = self._timeout
        # Nothing in flight: the replies came in time (a failure empties the queue too).
        if not self._in_flight or timeout is None:
            return
        now = self.loop.time()
        head = self._in_flight[0]
        if self._paused:
            deadline = now + timeout  # the consumer, not the server, is slow
        elif head.in_body:
            deadline = self._last_activity + timeout
        else:
            deadline = self._head_since + timeout
        if now < deadline:
            self._timer = self.loop.call_at(deadline, self._on_timer)
            return
        verb = head.command.verb
        if head.in_body:
            what = f"{verb}: no data from {self.peer} for {timeout:g} s"
        else:
            what = f"{verb}: no complete reply from {self.peer} within {timeout:g} s"
        self._fail(POP3TimeoutError(what))

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

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

    def _fail_calls(self, error: ConnectionFailure) -> None:
        calls = [*self._in_flight, *self._unsent]
        self._in_flight.clear()
        self._unsent.clear()
        for index, call in enumerate(calls):
            if index == 0:
                call.fail(error)
            else:
                # Each waiting task gets an exception of its own, naming its command.
                other = type(error)(f"{call.command.verb} not completed: {error}")
                other.__cause__ = error
                call.fail(other)

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
