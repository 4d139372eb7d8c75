"""The parser alone: aiopop's sans-I/O core against one find and one replace, no sockets.

The same dot-stuffed RETR reply (status line, stuffed message, ``.``) goes
to both. ``aiopop-parser`` feeds it to :class:`aiopop._protocol.POP3Protocol`
in 64 KiB chunks and collects the Data events until End; ``find+replace``
finds the terminator with one ``bytes.find`` and unstuffs with one
``bytes.replace`` over the whole reply, in one buffer: the least any
unstuffing reader can do in Python. The session is brought to TRANSACTION
through the protocol's own USER and PASS replies, outside the span.
"""

from __future__ import annotations

from aiopop._protocol import Command, Data, End, POP3Protocol, ReplyShape
from benchmarks.harness.measure import Span
from benchmarks.harness.messages import build_message, stuffed_reply

from .outcome import Outcome

__all__ = ["CHUNK", "logged_in", "parse_aiopop", "parse_find_replace"]

CHUNK = 64 * 1024
TERMINATOR = b"\r\n.\r\n"
RETR = Command("RETR", ("1",), ReplyShape.DATA)


def logged_in() -> POP3Protocol:
    """A POP3Protocol in TRANSACTION, through its own greeting and USER/PASS replies."""
    protocol = POP3Protocol()
    protocol.receive_data(b"+OK ready\r\n")
    protocol.next_event()
    for command in (Command("USER", ("bench",)), Command("PASS", ("secret",), secret=True)):
        protocol.send(command)
        protocol.receive_data(b"+OK\r\n")
        protocol.next_event()
    return protocol


def _check(client: str, got: bytes, message: bytes) -> Outcome:
    if got != message:
        raise AssertionError(
            f"{client}: {len(got)} octets that differ from the {len(message)} sent"
        )
    return Outcome(len(got), 1, None)


def parse_aiopop(size: int, dot_every: int, repeat: int, span: Span) -> Outcome:
    """Feed the reply to ``POP3Protocol`` in 64 KiB chunks, ``repeat`` times; the fastest counts."""
    message = build_message(1, size, dot_every)
    reply = stuffed_reply(message)
    chunks = [reply[i : i + CHUNK] for i in range(0, len(reply), CHUNK)]
    pieces: list[bytes] = []
    for _ in range(repeat):
        protocol = logged_in()
        protocol.send(RETR)
        pieces = []
        ended = False
        span.start()
        for chunk in chunks:
            protocol.receive_data(chunk)
            while (event := protocol.next_event()) is not None:
                if type(event) is Data:
                    pieces.append(event.data)
                elif type(event) is End:
                    ended = True
        span.stop()
        if not ended:
            raise AssertionError("aiopop-parser: no End event")
    return _check("aiopop-parser", b"".join(pieces), message)


def parse_find_replace(size: int, dot_every: int, repeat: int, span: Span) -> Outcome:
    """One ``find`` of the terminator, one ``replace`` to unstuff, ``repeat`` times."""
    message = build_message(1, size, dot_every)
    reply = stuffed_reply(message)
    start = reply.index(b"\r\n") + 2
    body = b""
    for _ in range(repeat):
        span.start()
        end = reply.find(TERMINATOR, start - 2)
        body = reply[start : end + 2].replace(b"\r\n..", b"\r\n.")
        span.stop()
    return _check("find+replace", body, message)
