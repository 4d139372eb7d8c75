"""The framing of one SASL AUTH exchange (RFC 5034), sans I/O.

:class:`AuthExchange` turns a :class:`~aiopop.sasl.Mechanism` into the AUTH
command (with its base64 initial response when the line stays within 255
octets, RFC 5034 section 4, else after the server's empty challenge) and
answers each decoded challenge. :meth:`aiopop._protocol.POP3Protocol.send_response`
base64-encodes the answer, or sends ``*`` to cancel.
"""

from __future__ import annotations

import base64

from ._errors import SASLError
from ._events import Command, ReplyShape
from ._protocol import MAX_COMMAND_LENGTH
from .sasl import Mechanism

__all__ = ["MAX_SASL_CHALLENGES", "AuthExchange"]

MAX_SASL_CHALLENGES = 16
"""A SASL exchange with more challenges than this is cancelled (no mechanism needs more)."""


class AuthExchange:
    """One AUTH exchange: :attr:`command` to send, then :meth:`answer` for each challenge.

    Raises ValueError, before anything is sent, for a mechanism name that
    cannot go on the AUTH line.
    """

    __slots__ = ("_challenges", "_deferred", "command", "mechanism")

    def __init__(self, mechanism: Mechanism) -> None:
        name = mechanism.name
        if not name or not name.isascii() or " " in name:
            raise ValueError(f"invalid SASL mechanism name {name!r}")
        self.mechanism = mechanism
        initial = mechanism.initial_response()
        args = [name]
        self._deferred: bytes | None = None
        if initial is not None:
            encoded = base64.b64encode(initial).decode("ascii") or "="
            if len(f"AUTH {name} {encoded}\r\n") <= MAX_COMMAND_LENGTH:
                args.append(encoded)
            else:
                self._deferred = initial
        self._challenges = 0
        self.command = Command("AUTH", tuple(args), ReplyShape.SASL, secret=len(args) > 1)

    def answer(self, challenge: bytes | None) -> bytes:
        """The response to one challenge (None: it was not valid base64).

        Raises SASLError for a challenge to refuse: malformed, too long, one
        too many, or not the empty one a deferred initial response waits for.
        """
        mechanism = self.mechanism
        name = mechanism.name
        self._challenges += 1
        if self._challenges > MAX_SASL_CHALLENGES:
            raise SASLError(f"{name}: more than {MAX_SASL_CHALLENGES} challenges")
        if challenge is None:
            raise SASLError(f"{name}: the server's challenge is not valid base64")
        if len(challenge) > mechanism.max_challenge:
            raise SASLError(
                f"{name}: a challenge of {len(challenge)} octets "
                f"(at most {mechanism.max_challenge} accepted)"
            )
        if self._deferred is not None:
            if challenge:
                raise SASLError(f"{name}: expected an empty challenge first")
            response, self._deferred = self._deferred, None
            return response
        return mechanism.respond(challenge)
