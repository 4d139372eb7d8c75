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
    "CredentialsError",
    "InsecureLoginError",
    "LoginDelayError",
    "MailboxInUseError",
    "MalformedReplyError",
    "MethodNotOfferedError",
    "POP3Error",
    "POP3TimeoutError",
    "PermanentFailureError",
    "ProtocolError",
    "ResponseError",
    "SASLError",
    "TLSRequiredError",
    "TemporaryFailureError",
    "error_proto",
    "response_error",
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

    def __reduce__(self) -> tuple[object, ...]:
        # Picklable with its code and command (task queues carry errors between processes).
        return (_rebuild, (type(self), self.response, self.code, self.command, self.__dict__))

    def has_code(self, code: str) -> bool:
        """True when the response code is ``code`` or one of its sub-codes, in any case."""
        return _has_code(self.code, code)

    @property
    def is_temporary(self) -> bool:
        """True when the code says the same request may succeed later.

        That is ``IN-USE``, ``LOGIN-DELAY`` (RFC 2449) and ``SYS/TEMP`` (RFC 3206)
        and any of their sub-codes.
        """
        return any(_has_code(self.code, code) for code in _TEMPORARY_CODES)

    @property
    def is_credentials_problem(self) -> bool:
        """True when the server says the credentials themselves were wrong (``[AUTH]``)."""
        return _has_code(self.code, "AUTH")


class AuthenticationError(ResponseError):
    """A login was refused (USER, PASS, APOP or AUTH), whatever the reason.

    Wrong credentials, a locked mailbox, too early a login... The code says
    which: catch :class:`CredentialsError`, :class:`MailboxInUseError`,
    :class:`LoginDelayError` and the others, which a refused login also is.
    """


class CredentialsError(AuthenticationError):
    """The server says the credentials are wrong: ``[AUTH]`` (RFC 3206).

    Asking for a new password (or token) is the remedy; retrying is not.
    """


class MailboxInUseError(ResponseError):
    """``[IN-USE]`` (RFC 2449): another session holds the mailbox; try again later."""


class LoginDelayError(ResponseError):
    """``[LOGIN-DELAY]`` (RFC 2449): logged in too soon after the last login.

    ``delay`` is the minimum number of seconds between logins when the
    server announced it in CAPA (LOGIN-DELAY), else None.
    """

    delay: int | None = None


class TemporaryFailureError(ResponseError):
    """``[SYS/TEMP]`` (RFC 3206): a passing problem on the server; trying later may work."""


class PermanentFailureError(ResponseError):
    """``[SYS/PERM]`` (RFC 3206): a lasting problem on the server; retrying will not help."""


class _LoginInUse(AuthenticationError, MailboxInUseError):
    """A login refused with ``[IN-USE]``."""


class _LoginDelayed(AuthenticationError, LoginDelayError):
    """A login refused with ``[LOGIN-DELAY]``."""


class _LoginTemporary(AuthenticationError, TemporaryFailureError):
    """A login refused with ``[SYS/TEMP]``."""


class _LoginPermanent(AuthenticationError, PermanentFailureError):
    """A login refused with ``[SYS/PERM]``."""


# The most specific code first: SYS/TEMP/DISK is SYS/TEMP.
_BY_CODE: tuple[tuple[str, type[ResponseError], type[AuthenticationError]], ...] = (
    # [AUTH] outside a login (rare) stays a plain ResponseError: the class says
    # "a login was refused"; is_credentials_problem still reads the code.
    ("AUTH", ResponseError, CredentialsError),
    ("IN-USE", MailboxInUseError, _LoginInUse),
    ("LOGIN-DELAY", LoginDelayError, _LoginDelayed),
    ("SYS/TEMP", TemporaryFailureError, _LoginTemporary),
    ("SYS/PERM", PermanentFailureError, _LoginPermanent),
)


def response_error(
    response: str, code: str | None, *, command: str, login: bool = False
) -> ResponseError:
    """The most specific :class:`ResponseError` for a ``-ERR``, by its response code.

    ``login`` marks a refused USER, PASS, APOP or AUTH: the error is then
    also an :class:`AuthenticationError`, whatever the code.
    """
    for known, plain, refused_login in _BY_CODE:
        if _has_code(code, known):
            cls: type[ResponseError] = refused_login if login else plain
            break
    else:
        cls = AuthenticationError if login else ResponseError
    return cls(response, code, command=command)


def _has_code(code: str | None, wanted: str) -> bool:
    if code is None:
        return False
    code, wanted = code.upper(), wanted.upper()
    return code == wanted or code.startswith(wanted + "/")


def _rebuild(
    cls: type[ResponseError],
    response: str,
    code: str | None,
    command: str,
    state: dict[str, object],
) -> ResponseError:
    error = cls(response, code, command=command)
    error.__dict__.update(state)
    return error


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


class MethodNotOfferedError(CommandStateError):
    """The server does not offer the login method asked for; no credential was sent."""


class APOPNotOfferedError(MethodNotOfferedError):
    """``apop()`` was called but the greeting carried no valid APOP timestamp.

    Nothing was sent. Use ``login()`` to fall back to USER/PASS automatically.
    """


class InsecureLoginError(POP3Error):
    """``login()`` would have sent a password in cleartext, and that was not allowed.

    Raised before the password is sent. Use :class:`aiopop.POP3_SSL`, or pass
    ``allow_cleartext=True`` where the network path is trusted.
    """


class TLSRequiredError(POP3Error):
    """TLS was required (``starttls="required"``) and the server could not provide it.

    CAPA was refused, STLS was not offered, or STLS was answered ``-ERR``.
    Nothing but CAPA and STLS was sent, and the connection is closed.
    """


class SASLError(POP3Error):
    """A SASL exchange could not go on, and was cancelled (``*``) or its success rejected.

    A malformed, oversized or unexpected challenge, too many challenges, or a
    server that accepted a SCRAM login without proving that it knows the
    password (a forged or missing server signature). Raised by mechanisms
    from :mod:`aiopop.sasl` and by :meth:`aiopop.POP3.auth`; never a reason
    for :meth:`aiopop.POP3.login` to try a weaker method.
    """
