"""The exception hierarchy.

Everything aiopop raises on purpose is a :class:`POP3Error`, which is also
exported as ``aiopop.error_proto`` so that ``except poplib.error_proto`` ports
unchanged. Errors that resemble a builtin also inherit it:
:class:`ConnectionLostError` is a :class:`ConnectionError` and
:class:`POP3TimeoutError` is a :class:`TimeoutError`.

Server text in messages is passed through :func:`aiopop._parse.escape` first,
so a hostile server cannot put terminal escapes into a log line.
"""

from __future__ import annotations

__all__ = [
    "APOPNotOfferedError",
    "AuthenticationError",
    "CommandStateError",
    "ConnectionClosedError",
    "ConnectionLostError",
    "InsecureLoginError",
    "MalformedReplyError",
    "POP3Error",
    "POP3TimeoutError",
    "ProtocolError",
    "ResponseError",
    "error_proto",
]

# RFC 2449 section 8 and RFC 3206: codes after which trying again later may work.
_TEMPORARY_CODES = frozenset({"IN-USE", "LOGIN-DELAY", "SYS/TEMP"})


class POP3Error(Exception):
    """Base class of every error aiopop raises on purpose."""


error_proto = POP3Error
"""poplib's name for the base error, so ``except error_proto`` keeps working."""


class ResponseError(POP3Error):
    """The server answered ``-ERR``.

    ``response`` is the server's explanation (control characters escaped);
    ``code`` is the RFC 2449 / RFC 3206 response code in upper case, such as
    ``"SYS/TEMP"`` or ``"IN-USE"``, or ``None`` when the server sent none.
    """

    def __init__(self, response: str, code: str | None = None, *, command: str = "") -> None:
        self.response = response
        self.code = code
        self.command = command
        where = f"{command}: " if command else ""
        super().__init__(f"{where}-ERR {response}" if response else f"{where}-ERR")

    @property
    def is_temporary(self) -> bool:
        """True when the code says the same request may succeed later.

        That is ``IN-USE``, ``LOGIN-DELAY`` (RFC 2449) and ``SYS/TEMP`` (RFC 3206)
        and any of their sub-codes.
        """
        if self.code is None:
            return False
        return any(self.code == c or self.code.startswith(c + "/") for c in _TEMPORARY_CODES)

    @property
    def is_credentials_problem(self) -> bool:
        """True when the server says the credentials themselves were wrong (``[AUTH]``)."""
        return self.code is not None and (self.code == "AUTH" or self.code.startswith("AUTH/"))


class AuthenticationError(ResponseError):
    """USER, PASS or APOP was refused: wrong credentials, locked mailbox, and so on.

    Check ``code`` (``AUTH``, ``IN-USE``, ``LOGIN-DELAY``, ``SYS/TEMP`` ...) to
    tell a wrong password from a mailbox that is busy.
    """


class ProtocolError(POP3Error):
    """The server sent data that breaks the protocol: malformed, oversized or unrequested.

    When the framing itself is broken (a line or reply over its size limit, a
    status line that is neither ``+OK`` nor ``-ERR``, data nobody asked for)
    the stream cannot be trusted any more and the connection is closed. The
    subclass :class:`MalformedReplyError` is the exception: there the reply
    was framed correctly and only its content was wrong.
    """


class MalformedReplyError(ProtocolError):
    """A correctly framed reply carried content that makes no sense.

    For example ``+OK abc`` to STAT, a listing line without a size, or
    ``LIST 1`` answered about message 99. The whole reply was read, so the
    stream is still in step and the connection stays open; the next command
    may succeed. Nothing from the bad reply is returned.
    """


class ConnectionLostError(POP3Error, ConnectionError):
    """The connection closed before the reply was complete.

    A partial reply is never returned as if it were whole. The server keeps
    every message when a session ends without QUIT (RFC 1939 section 6).
    """


class ConnectionClosedError(POP3Error):
    """This side closed the connection while the command was queued or in flight.

    Raised in every task whose command was still waiting when ``close()``
    ran (or ``async with`` left by an exception). The server did not cause
    it, and it keeps every message (RFC 1939 section 6).
    """


class POP3TimeoutError(POP3Error, TimeoutError):
    """Connecting, a reply, or the flow of a message stalled for longer than the timeout.

    The connection is closed at once, without QUIT, so the server rolls back
    any deletions of this session; every other command in flight fails with
    this error too.
    """


class CommandStateError(POP3Error):
    """A command was called where the protocol does not allow it.

    For example ``stat()`` before logging in, or ``user()`` after it. It is
    raised before anything is sent.
    """


class APOPNotOfferedError(CommandStateError):
    """``apop()`` was called but the greeting carried no valid APOP timestamp.

    Nothing was sent. Use ``login()`` to fall back to USER/PASS automatically.
    """


class InsecureLoginError(POP3Error):
    """``login()`` would have sent a password in cleartext, and that was not allowed.

    Raised before the password is sent. Use :class:`aiopop.POP3_SSL`, or pass
    ``allow_cleartext=True`` where the network path is trusted.
    """
