"""How the client's calls become commands, and a ``-ERR`` reply an error. No I/O."""

from __future__ import annotations

from ._errors import MalformedReplyError, ResponseError, response_error
from ._events import Command, ReplyShape
from ._parse import StatusLine, escape

__all__ = ["check_number", "number", "refusal", "retr_command", "top_command"]

AUTH_VERBS = frozenset({"USER", "PASS", "APOP", "AUTH"})
"""Commands whose refusal is always an :class:`~aiopop.AuthenticationError`."""


def number(which: int) -> str:
    """A message number as an argument; numbers start at 1 (RFC 1939 section 5)."""
    if isinstance(which, bool) or not isinstance(which, int) or which < 1:
        raise ValueError(f"message number must be a positive int, not {which!r}")
    return str(which)


def check_number(verb: str, asked: int, answered: int) -> None:
    """MalformedReplyError unless the reply is about the message asked for."""
    if answered != asked:
        raise MalformedReplyError(f"{verb} {asked} was answered about message {answered}")


def retr_command(which: int, limit: int | None = None) -> Command:
    """RETR ``which``; ``limit`` bounds the message held in memory (None: streamed)."""
    return Command("RETR", (number(which),), ReplyShape.DATA, limit=limit)


def top_command(which: int, howmax: int, limit: int | None) -> Command:
    """TOP ``which`` ``howmax``: the headers and the first ``howmax`` lines of the body."""
    if isinstance(howmax, bool) or not isinstance(howmax, int) or howmax < 0:
        raise ValueError(f"line count must be a non-negative int, not {howmax!r}")
    return Command("TOP", (number(which), str(howmax)), ReplyShape.DATA, limit=limit)


def refusal(command: Command, status: StatusLine) -> ResponseError:
    """The error for a ``-ERR``: typed by its response code; a refused login is always
    an :class:`~aiopop.AuthenticationError`."""
    return response_error(
        escape(status.text),
        status.code,
        command=command.verb,
        login=command.verb in AUTH_VERBS,
    )
