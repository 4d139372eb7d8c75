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

import enum
import errno
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace

__all__ = [
    "EXIT_AUTH",
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_LOCAL",
    "EXIT_NETWORK",
    "EXIT_OK",
    "EXIT_TLS",
    "EXIT_USAGE",
    "FAILURES",
    "APOPNotOfferedError",
    "AccountError",
    "AuthenticationError",
    "CommandStateError",
    "ConnectionClosedError",
    "ConnectionLostError",
    "CredentialsError",
    "DeliveryError",
    "Failure",
    "FailureKind",
    "ImportFileError",
    "InsecureLoginError",
    "LoginDelayError",
    "MailboxInUseError",
    "MalformedReplyError",
    "MethodNotOfferedError",
    "MissingExtraError",
    "POP3Error",
    "POP3TimeoutError",
    "PermanentFailureError",
    "ProtocolError",
    "ResponseError",
    "SASLError",
    "StateError",
    "StateLockedError",
    "TLSRequiredError",
    "TemporaryFailureError",
    "UIDLUnavailableError",
    "UsageError",
    "diagnose",
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
    """TLS was required (``tls="starttls"``) and the server could not provide it.

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


class StateError(Exception):
    """A state file that this aiopop cannot use: a newer version, or not a state file."""


class StateLockedError(StateError):
    """Another process works on this mailbox's state; nothing was done."""


class UIDLUnavailableError(POP3Error):
    """``new_only`` was asked of a server that refuses UIDL: nothing was fetched.

    Without unique-ids there is no telling which messages an earlier run
    saved. ``refusal`` is the server's answer to UIDL.
    """

    def __init__(self, refusal: ResponseError) -> None:
        self.refusal = refusal
        super().__init__(
            f"the server refuses UIDL ({refusal}), so the messages fetched before"
            " cannot be told apart: fetch without new_only, or use another server"
        )

    def __reduce__(self) -> tuple[object, ...]:
        # Rebuilt from its refusal, not from its message (which quotes the refusal).
        return (_rebuild_uidl, (type(self), self.refusal, self.__dict__))


def _rebuild_uidl(
    cls: type[UIDLUnavailableError], refusal: ResponseError, state: dict[str, object]
) -> UIDLUnavailableError:
    error = cls(refusal)
    error.__dict__.update(state)
    return error


class DeliveryError(Exception):
    """A destination did not take a message: it stays on the server, is reported, and is
    tried again on the next run (a delivery command that failed or hung, a filter that broke).

    Not a :class:`POP3Error`: the server did nothing wrong.
    """

    def __init__(self, reason: str, uid: str | None = None) -> None:
        super().__init__(reason, uid)
        self.reason = reason
        self.uid = uid

    def __str__(self) -> str:
        return self.reason


class AccountError(ValueError):
    """An account description is invalid: a bad URL, a bad TOML entry, a missing secret."""


class UsageError(Exception):
    """The ``aiopop`` command line cannot be run as given."""


class MissingExtraError(ImportError):
    """A feature needs an optional dependency that is not installed; ``extra`` names the
    extra that brings it (``pip install 'aiopop[proxy]'``)."""

    def __init__(self, message: str, *, extra: str) -> None:
        super().__init__(message)
        self.extra = extra


class ImportFileError(ValueError):
    """Another tool's record of seen unique-ids that cannot be read: says the file and line."""


# -- the one table of failures ------------------------------------------------------------

EXIT_OK = 0
"""The ``aiopop`` command's exit status when everything went well."""
EXIT_FAILED = 1
"""The server refused a command (or, for ``check``, an account failed)."""
EXIT_USAGE = 2
"""Bad usage, or a bad account description or file of accounts."""
EXIT_AUTH = 3
"""The login was refused: wrong credentials, or no safe method."""
EXIT_TLS = 4
"""TLS: a certificate that does not verify, or TLS required and missing."""
EXIT_NETWORK = 5
"""The network: a connection refused or lost, or a timeout."""
EXIT_LOCAL = 6
"""This machine: the Maildir, its state, the disk (full, read-only, permissions)."""
EXIT_INTERRUPTED = 130
"""Interrupted (Ctrl-C)."""


class FailureKind(enum.Enum):
    """What kind of failure an exception is; see :data:`FAILURES` and :func:`diagnose`."""

    CANCELLED = "cancelled"
    USAGE = "usage"
    ACCOUNT = "account"
    STATE_LOCKED = "state locked"
    STATE = "state"
    NO_UIDL = "no uidl"
    CREDENTIALS = "credentials"
    IN_USE = "in use"
    LOGIN_DELAY = "login delay"
    TEMPORARY = "temporary"
    PERMANENT = "permanent"
    AUTHENTICATION = "authentication"
    TIMEOUT = "timeout"
    TLS_MISSING = "tls missing"
    CLEARTEXT = "cleartext"
    FINGERPRINT = "fingerprint"
    CERTIFICATE = "certificate"
    TLS = "tls"
    CONNECTION = "connection"
    LOCAL = "local"
    DELIVERY = "delivery"
    SASL = "sasl"
    PROTOCOL = "protocol"
    NOT_OFFERED = "not offered"
    COMMAND_STATE = "command state"
    QUIT_REFUSED = "quit refused"
    REFUSED = "refused"
    OTHER = "other"
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class Failure:
    """What kind of failure an exception is, and what follows from it.

    ``reason`` is the short stable word of :attr:`aiopop.CheckResult.reason`;
    ``retryable`` whether trying the same thing later may help (what
    :func:`aiopop.watch` retries); ``local`` whether the cause is on
    this machine (a path, a disk, a file of accounts, the command line)
    rather than the server's or the network's; ``exit_status`` the
    ``aiopop`` command's exit status; ``hint`` what to do about it, in the
    command line's words (None when there is nothing useful to say).
    """

    kind: FailureKind
    reason: str
    retryable: bool
    local: bool
    exit_status: int
    hint: str | None = None


# Errnos that come from files and file systems, never from a socket: an OSError
# carrying one is this machine's problem even when it names no file (a write to an
# open file descriptor on a full disk, say).
LOCAL_ERRNOS = frozenset(
    getattr(errno, name)
    for name in (
        "ENOSPC",
        "EDQUOT",
        "EROFS",
        "EIO",
        "EISDIR",
        "ENOTDIR",
        "EFBIG",
        "ENAMETOOLONG",
        "EEXIST",
        "EXDEV",
        "ELOOP",
        "EMLINK",
        "ENOTEMPTY",
    )
    if hasattr(errno, name)
)


def _is_local_oserror(exc: BaseException) -> bool:
    # These three never come from a socket, even without an errno or a file name.
    if isinstance(exc, NotADirectoryError | IsADirectoryError | FileExistsError):
        return True
    return isinstance(exc, OSError) and (exc.filename is not None or exc.errno in LOCAL_ERRNOS)


def _is_quit_refused(exc: BaseException) -> bool:
    # -ERR to QUIT: the deletions did not commit; the next poll repeats them.
    return isinstance(exc, ResponseError) and exc.command.upper().startswith("QUIT")


def _defined_in(module_name: str, name: str) -> Callable[[BaseException], bool]:
    """Matches the exception class ``module_name.name`` without importing its module.

    If that module was never imported, none of its exceptions can exist: so
    the table stays free of :mod:`asyncio` and :mod:`ssl`, and the core free
    of I/O.
    """

    def match(exc: BaseException) -> bool:
        module = sys.modules.get(module_name)
        cls = getattr(module, name, None) if module is not None else None
        return isinstance(cls, type) and isinstance(exc, cls)

    match.__qualname__ = f"{module_name}.{name}"
    return match


_cancelled = _defined_in("asyncio", "CancelledError")
_fingerprint = _defined_in("aiopop._tls", "FingerprintMismatchError")
_certificate = _defined_in("ssl", "SSLCertVerificationError")
_tls_failed = _defined_in("ssl", "SSLError")
# python-socks (the extra "proxy"): its errors come from the proxy, not the POP3 server.
_proxy_refused = _defined_in("python_socks", "ProxyError")
_proxy_unreachable = _defined_in("python_socks", "ProxyConnectionError")


_Match = type[BaseException] | tuple[type[BaseException], ...] | Callable[[BaseException], bool]

_AGAIN = "try again later"
_SECRET = "check the user name and the password or token"  # noqa: S105 - a hint
_LOCAL = (
    "a problem on this machine, not the server's: check the path, the free space,"
    " the file system and the permissions"
)
_PERMANENT = (
    "a lasting problem on the server ([SYS/PERM]): retrying will not help; ask the mail provider"
)
_STATE = (
    "the state file next to the Maildir was written by a newer aiopop, or is not aiopop's:"
    " move it away or upgrade aiopop"
)
_ACCOUNT = "check the account's description: its URL or keys, and where its password comes from"
_NOT_OFFERED = "try another --auth method, or leave --auth out to pick the strongest offered"
_SASL = "the server's side of the SASL exchange is broken: try another --auth method"
_PINNED = (
    "the server's certificate is not the pinned one: if it was renewed, check the new one"
    " by other means, then pin it (--fingerprint, or tls_fingerprint in a file of accounts)"
)
_PROXY = (
    "the proxy refused to connect to the server (or refused the proxy's user name"
    " and password): check --proxy and the server's host and port"
)
_BUG = "an unexpected error, perhaps a bug in aiopop: please report it"

# Columns: kind, reason word, retryable, local (this machine), exit status, hint.
_K = FailureKind

# fmt: off
FAILURES: tuple[tuple[_Match, Failure], ...] = (
    # The most specific first: a login refused with [IN-USE] is also an
    # AuthenticationError, a POP3TimeoutError a TimeoutError (an OSError), an
    # SSLError an OSError, a refused login with [SYS/PERM] a PermanentFailureError.
    (KeyboardInterrupt, Failure(_K.CANCELLED, "cancelled", False, True, EXIT_INTERRUPTED)),
    (_cancelled, Failure(_K.CANCELLED, "cancelled", False, True, EXIT_INTERRUPTED)),
    (UsageError, Failure(_K.USAGE, "usage", False, True, EXIT_USAGE, "see aiopop --help")),
    (AccountError, Failure(_K.ACCOUNT, "account", False, True, EXIT_USAGE, _ACCOUNT)),
    (MissingExtraError, Failure(_K.USAGE, "usage", False, True, EXIT_USAGE,
        "install the optional dependency: pip install 'aiopop[proxy]'")),
    (ImportFileError, Failure(_K.USAGE, "usage", False, True, EXIT_USAGE,
        "check that the file is that tool's record of unique-ids, and is whole")),
    (StateLockedError, Failure(_K.STATE_LOCKED, "state", True, True, EXIT_LOCAL,
        "a fetch or watch of this mailbox is running: wait for it")),
    (StateError, Failure(_K.STATE, "state", False, True, EXIT_LOCAL, _STATE)),
    (UIDLUnavailableError, Failure(_K.NO_UIDL, "unsupported", False, False, EXIT_FAILED,
        "this server has no UIDL: run without --new-only")),
    (CredentialsError, Failure(_K.CREDENTIALS, "credentials", False, False, EXIT_AUTH, _SECRET)),
    (MailboxInUseError, Failure(_K.IN_USE, "in use", True, False, EXIT_FAILED,
        "another session holds the mailbox; " + _AGAIN)),
    (LoginDelayError, Failure(_K.LOGIN_DELAY, "login delay", True, False, EXIT_FAILED, _AGAIN)),
    (TemporaryFailureError, Failure(_K.TEMPORARY, "temporary", True, False, EXIT_FAILED,
        "a passing problem on the server; " + _AGAIN)),
    (PermanentFailureError,
        Failure(_K.PERMANENT, "permanent", False, False, EXIT_FAILED, _PERMANENT)),
    (AuthenticationError,
        Failure(_K.AUTHENTICATION, "authentication", False, False, EXIT_AUTH, _SECRET)),
    (TimeoutError, Failure(_K.TIMEOUT, "timeout", True, False, EXIT_NETWORK,
        "the server is slow or unreachable; try a longer --timeout")),
    (TLSRequiredError, Failure(_K.TLS_MISSING, "tls", False, False, EXIT_TLS,
        "the server cannot do TLS on this port: try --tls implicit (port 995)")),
    (InsecureLoginError, Failure(_K.CLEARTEXT, "tls", False, False, EXIT_AUTH,
        "use --tls implicit, or --allow-cleartext if the network path is trusted")),
    (_fingerprint, Failure(_K.FINGERPRINT, "tls", False, False, EXIT_TLS, _PINNED)),
    (_certificate, Failure(_K.CERTIFICATE, "tls", False, False, EXIT_TLS,
        "for a private CA, pass --cafile; check the host name")),
    (_tls_failed, Failure(_K.TLS, "tls", True, False, EXIT_TLS,
        "is this a plain POP3 port? try --tls starttls or --tls if-offered")),
    ((ConnectionLostError, ConnectionClosedError),
        Failure(_K.CONNECTION, "connection", True, False, EXIT_NETWORK)),
    (_proxy_unreachable, Failure(_K.CONNECTION, "connection", True, False, EXIT_NETWORK,
        "the proxy is unreachable: check the proxy's host and port (--proxy)")),
    (_proxy_refused, Failure(_K.CONNECTION, "connection", True, False, EXIT_NETWORK, _PROXY)),
    (DeliveryError, Failure(_K.DELIVERY, "delivery", True, True, EXIT_FAILED,
        "the destination did not take the message: it stays on the server and is tried"
        " again next run; check the delivery command")),
    (_is_local_oserror, Failure(_K.LOCAL, "local", False, True, EXIT_LOCAL, _LOCAL)),
    (OSError, Failure(_K.CONNECTION, "connection", True, False, EXIT_NETWORK,
        "check the host and the port")),
    (SASLError, Failure(_K.SASL, "protocol", False, False, EXIT_FAILED, _SASL)),
    (ProtocolError, Failure(_K.PROTOCOL, "protocol", False, False, EXIT_FAILED)),
    (MethodNotOfferedError,
        Failure(_K.NOT_OFFERED, "unsupported", False, False, EXIT_AUTH, _NOT_OFFERED)),
    (CommandStateError, Failure(_K.COMMAND_STATE, "unsupported", False, True, EXIT_FAILED)),
    (_is_quit_refused, Failure(_K.QUIT_REFUSED, "refused", True, False, EXIT_FAILED)),
    (ResponseError, Failure(_K.REFUSED, "refused", False, False, EXIT_FAILED)),
    (POP3Error, Failure(_K.OTHER, "error", False, False, EXIT_FAILED)),
    (BaseException, Failure(_K.ERROR, "error", False, False, EXIT_FAILED, _BUG)),
)
# fmt: on
"""The ordered table: the first row whose match fits an exception says what it is.

A match is an exception class (or a tuple of them), or a predicate. Read it
through :func:`diagnose`."""


def _pinned(failure: Failure, exc: BaseException) -> Failure:
    """The fingerprint row's hint, naming the pinned fingerprint and the one offered."""
    expected, offered = getattr(exc, "expected", None), getattr(exc, "offered", None)
    if not expected or not offered:
        return failure
    return replace(
        failure,
        hint=f"pinned: {expected}; the server offered: {offered}. If its certificate was"
        " renewed, check the new one by other means, then pin it (--fingerprint, or"
        " tls_fingerprint in a file of accounts)",
    )


def diagnose(exc: BaseException) -> Failure:
    """What kind of failure ``exc`` is: the first row of :data:`FAILURES` that fits.

    The one classification of errors: the ``aiopop`` command's exit status
    and hint, :attr:`aiopop.CheckResult.reason` and
    :func:`aiopop.watch`'s decision to retry all come from here. The
    hint of a :class:`LoginDelayError` names the server's delay when known; that of a
    certificate fingerprint mismatch, the pinned fingerprint and the one offered.
    """
    for match, failure in FAILURES:
        fits = isinstance(exc, match) if isinstance(match, type | tuple) else match(exc)
        if fits:
            if failure.kind is FailureKind.FINGERPRINT:
                return _pinned(failure, exc)
            if failure.kind is FailureKind.LOGIN_DELAY and getattr(exc, "delay", None):
                delay = getattr(exc, "delay")  # noqa: B009 (typed as object here)
                return replace(
                    failure, hint=f"the server allows one login every {delay} s; {_AGAIN}"
                )
            return failure
    raise AssertionError("unreachable: the last row matches every exception")  # pragma: no cover
