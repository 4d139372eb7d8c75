"""The commands in flight on one connection: queue, pipelining, replies, timeouts.

:class:`Engine` is the half of :class:`~aiopop._connection.Connection` that
knows nothing of sockets or TLS. Commands wait in a queue and go out,
coalesced into one write, as soon as the session allows: one at a time, or
several in flight when :class:`~aiopop._state.Pipelining` says so. Every
event the sans-I/O :class:`~aiopop._protocol.POP3Protocol` produces is handed
to the call it belongs to (:mod:`aiopop._replies`), inside ``data_received``.

Timeouts run on one lazily re-armed timer. A status line or a listing must
arrive whole within ``timeout`` of its command reaching the head of the
queue; a message may take as long as it likes while octets keep coming,
and fails after ``timeout`` seconds without any.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging

from ._auth import AuthExchange
from ._errors import (
    CommandStateError,
    ConnectionClosedError,
    ConnectionLostError,
    POP3Error,
    POP3TimeoutError,
    ProtocolError,
)
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
from ._state import LIVE_STATES, Pipelining
from ._stream import MessageStream
from .sasl import Mechanism

__all__ = ["ConnectionFailure", "Engine"]

logger = logging.getLogger("aiopop")

_CAPA_LIMIT = 1024 * 1024
"""Octets of the CAPA reply the connection asks for itself."""

ConnectionFailure = ProtocolError | ConnectionLostError | POP3TimeoutError | ConnectionClosedError


class Engine:
    """Commands from the queue to the last octet of their replies (see the module)."""

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
        self._pipelining = Pipelining(pipelining, max_in_flight)
        self._transport: asyncio.Transport | None = None
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
        self._probe: CapaProbe | None = None
        self._capa_pipelining = False
        self._upgrading = False
        """STLS was answered +OK and the handshake is not over: nothing may be sent."""

    # -- what the connection provides ----------------------------------------------

    def _write(self, data: bytes) -> None:
        """Send ``data`` (encrypted when TLS is on)."""
        raise NotImplementedError

    def _fail(self, error: ConnectionFailure) -> None:
        """The connection cannot go on: fail every command and abort the transport."""
        raise NotImplementedError

    def pause_reading(self) -> None:
        """Stop reading from the socket (a stream's consumer is behind)."""
        raise NotImplementedError

    def resume_reading(self) -> None:
        """Read from the socket again; the inactivity clock restarts now."""
        raise NotImplementedError

    @property
    def is_open(self) -> bool:
        """True until the connection is closed or has failed."""
        return self._error is None and not self._closing and not self._lost.done()

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

    async def learn_pipelining(self) -> bool:
        """Whether commands may be pipelined now, asking CAPA first if that is not known yet.

        The connection alone decides whether to pipeline: ``pipelining`` when
        it was given, else what the last CAPA reply in this session state said
        about PIPELINING, whoever asked for it.
        """
        state = self._protocol.state
        known = self._pipelining.known(state)
        if known is not None:
            return known
        if state not in LIVE_STATES or not self.is_open:
            return False
        probe = self._probe
        if probe is None:
            probe = self._new_probe()
            self._submit(probe)
        await asyncio.shield(probe.future)
        return bool(self._pipelining.known(self._protocol.state))

    def _noted_capa(self, can: bool) -> None:
        """Record what a CAPA reply said about PIPELINING, for the current session state."""
        self._pipelining.learned(self._protocol.state, can)
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
            logger.debug("C: %s", call.command.loggable(), extra={"peer": self.peer})
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
        protocol, pipelining = self._protocol, self._pipelining
        state = protocol.state
        # Pipelined commands go out in bursts: once the window is more than three
        # quarters full, wait for a quarter of it to drain. One write of 25 RETRs
        # rather than 25 writes of one, and the server keeps three quarters of a
        # window queued: at a distance, the window in flight is what sets the
        # pace (refilling at half took 1.22 s for 1,000 x 8 KB at 50 ms, 0.99 s
        # at three quarters; benchmarks/results/NOTES.md).
        window = self._pipelining.max_in_flight
        refill = len(in_flight) <= window - window // 4
        while unsent and refill:
            call = unsent[0]
            if call.abandoned and not isinstance(call, CapaProbe):
                unsent.popleft()
                continue
            if in_flight:
                last = in_flight[-1].command.verb
                if not pipelining.may_send(state, len(in_flight), last, call.command.verb):
                    break
            elif self._probe is None and pipelining.should_probe(
                state, len(unsent), call.command.verb
            ):
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
            logger.debug("S: %s", escape(status.raw), extra={"peer": self.peer})
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
            shown = "*" if response is None else "<SASL response>"
            logger.debug("C: %s", shown, extra={"peer": self.peer})
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
