"""errors.diagnose: one table for every exception, read alike by the CLI, check_many and watch."""

from __future__ import annotations

import asyncio
import errno
import socket
import ssl

import pytest

from aiopop import _cli_run
from aiopop import _errors as errors
from aiopop._cli import explain
from aiopop._delivery_state import StateError, StateLockedError
from aiopop._errors import POP3Error, diagnose
from aiopop._many import CheckResult, failure_reason
from aiopop._tls import FingerprintMismatchError
from aiopop._watch import _retryable

K = errors.FailureKind


def _all_subclasses(cls: type[BaseException]) -> set[type[BaseException]]:
    found: set[type[BaseException]] = set()
    for sub in cls.__subclasses__():
        found.add(sub)
        found |= _all_subclasses(sub)
    return found


def _instance(cls: type[BaseException]) -> BaseException:
    if issubclass(cls, FingerprintMismatchError):
        return cls("SHA256:AB", "SHA256:CD")
    if issubclass(cls, errors.UIDLUnavailableError):
        return cls(errors.ResponseError("no UIDL", command="UIDL"))
    if issubclass(cls, errors.ResponseError):
        return cls("refused", None, command="STAT")
    return cls("something")


# Every exception class aiopop defines, and the kind the table gives it. A new class
# without an entry here fails test_every_class_has_an_explicit_row.
EXPECTED: dict[type[BaseException], errors.FailureKind] = {
    POP3Error: K.OTHER,
    errors.ResponseError: K.REFUSED,
    errors.AuthenticationError: K.AUTHENTICATION,
    errors.CredentialsError: K.CREDENTIALS,
    errors.MailboxInUseError: K.IN_USE,
    errors.LoginDelayError: K.LOGIN_DELAY,
    errors.TemporaryFailureError: K.TEMPORARY,
    errors.PermanentFailureError: K.PERMANENT,
    errors._LoginInUse: K.IN_USE,
    errors._LoginDelayed: K.LOGIN_DELAY,
    errors._LoginTemporary: K.TEMPORARY,
    errors._LoginPermanent: K.PERMANENT,
    errors.ProtocolError: K.PROTOCOL,
    errors.MalformedReplyError: K.PROTOCOL,
    errors.ConnectionLostError: K.CONNECTION,
    errors.ConnectionClosedError: K.CONNECTION,
    errors.POP3TimeoutError: K.TIMEOUT,
    errors.CommandStateError: K.COMMAND_STATE,
    errors.MethodNotOfferedError: K.NOT_OFFERED,
    errors.APOPNotOfferedError: K.NOT_OFFERED,
    errors.InsecureLoginError: K.CLEARTEXT,
    errors.TLSRequiredError: K.TLS_MISSING,
    errors.SASLError: K.SASL,
    errors.UIDLUnavailableError: K.NO_UIDL,
    errors.AccountError: K.ACCOUNT,
    errors.UsageError: K.USAGE,
    errors.ImportFileError: K.USAGE,
    StateError: K.STATE,
    StateLockedError: K.STATE_LOCKED,
    errors.DeliveryError: K.DELIVERY,
    _cli_run.NoGreetingError: K.TIMEOUT,  # the command line's: no greeting within 5 s
    FingerprintMismatchError: K.FINGERPRINT,  # before the ssl module's certificate row
}


def _classes() -> set[type[BaseException]]:
    found: set[type[BaseException]] = {POP3Error, *_all_subclasses(POP3Error)}
    found |= {errors.AccountError, errors.UsageError, errors.ImportFileError}
    found |= {StateError, *_all_subclasses(StateError)}
    found |= {errors.DeliveryError, *_all_subclasses(errors.DeliveryError)}
    # aiopop's own; other tests define subclasses of their own (test_error_pickling's).
    return {cls for cls in found if cls.__module__.startswith("aiopop.")}


def test_every_class_has_an_explicit_row() -> None:
    classes = _classes()
    assert classes - set(EXPECTED) == set(), "add the new classes to EXPECTED"
    for cls in classes:
        failure = diagnose(_instance(cls))
        assert failure.kind is EXPECTED[cls], cls
        if cls is not POP3Error:
            assert failure.reason != "error", cls


BUILTINS: list[tuple[BaseException, errors.FailureKind]] = [
    (OSError(errno.ENOSPC, "No space left on device", "/m/new/x"), K.LOCAL),
    (OSError(errno.ENOSPC, "No space left on device"), K.LOCAL),
    (PermissionError(errno.EACCES, "Permission denied", "/m"), K.LOCAL),
    (NotADirectoryError(errno.ENOTDIR, "Not a directory", "/m/f/x"), K.LOCAL),
    (NotADirectoryError("/m exists and is not a directory"), K.LOCAL),
    (FileExistsError("/m"), K.LOCAL),
    (OSError(errno.EHOSTUNREACH, "No route to host"), K.CONNECTION),
    (OSError("something"), K.CONNECTION),
    (ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"), K.CONNECTION),
    (ConnectionResetError(), K.CONNECTION),
    (socket.gaierror(-2, "Name or service not known"), K.CONNECTION),
    (TimeoutError(), K.TIMEOUT),
    (ssl.SSLCertVerificationError("bad certificate"), K.CERTIFICATE),
    (ssl.SSLError("wrong version number"), K.TLS),
    (asyncio.CancelledError(), K.CANCELLED),
    (KeyboardInterrupt(), K.CANCELLED),
    (RuntimeError("a bug"), K.ERROR),
    (Exception("anything"), K.ERROR),
    (errors.ResponseError("no", command="QUIT"), K.QUIT_REFUSED),
    (errors.response_error("x", "SYS/PERM", command="PASS", login=True), K.PERMANENT),
]


@pytest.mark.parametrize(("error", "kind"), BUILTINS, ids=lambda v: repr(v)[:40])
def test_builtins(error: BaseException, kind: errors.FailureKind) -> None:
    assert diagnose(error).kind is kind


@pytest.mark.parametrize(
    "error", [_instance(cls) for cls in sorted(EXPECTED, key=str)] + [e for e, _ in BUILTINS]
)
def test_the_command_line_check_many_and_watch_agree(error: BaseException) -> None:
    failure = diagnose(error)
    status, message, hints = explain(error)
    assert status == failure.exit_status
    assert message  # never an empty reason
    if failure.hint:
        assert failure.hint in hints
    assert failure_reason(error) == failure.reason
    from aiopop._accounts import Account

    assert CheckResult(Account("h.test", "u"), error=error).reason == failure.reason
    assert _retryable(error) is failure.retryable
    # Local failures have exit statuses of their own, never the network's.
    # (A command called in the wrong state is this program's mistake: exit status 1;
    # so is a delivery command that failed: the run went on, one message is left.)
    if failure.local and failure.kind not in (K.CANCELLED, K.COMMAND_STATE, K.DELIVERY):
        assert status in (errors.EXIT_USAGE, errors.EXIT_LOCAL)
    if status == errors.EXIT_NETWORK:
        assert not failure.local


def test_a_failed_delivery_is_local_retryable_and_says_so() -> None:
    error = errors.DeliveryError("procmail exited with status 75", uid="u1")
    failure = diagnose(error)
    assert (failure.kind, failure.reason) == (K.DELIVERY, "delivery")
    assert (failure.retryable, failure.local) == (True, True)
    assert failure.exit_status == errors.EXIT_FAILED
    status, message, hints = explain(error)
    assert status == errors.EXIT_FAILED
    assert message == "procmail exited with status 75"
    assert any("stays on the server" in hint for hint in hints)
    # Not the server's: never a POP3Error, so `except POP3Error` does not swallow it.
    assert not isinstance(error, POP3Error)


def test_a_login_refused_with_sys_perm_is_permanent_everywhere() -> None:
    error = errors.response_error(
        "[SYS/PERM] account disabled", "SYS/PERM", command="PASS", login=True
    )
    failure = diagnose(error)
    assert (failure.reason, failure.retryable, failure.exit_status) == ("permanent", False, 1)
    status, _, hints = explain(error)
    assert status == errors.EXIT_FAILED
    assert not any("password" in hint for hint in hints)


def test_a_bare_timeout_has_a_reason() -> None:
    status, message, _ = explain(TimeoutError())
    assert status == errors.EXIT_NETWORK
    assert message == "the server did not answer in time"


def test_login_delay_hint_names_the_delay() -> None:
    error = errors.response_error("wait", "LOGIN-DELAY", command="PASS", login=True)
    assert isinstance(error, errors.LoginDelayError)
    error.delay = 900
    assert diagnose(error).hint == "the server allows one login every 900 s; try again later"


def test_the_tls_hints_use_the_tls_words() -> None:
    for _, failure in errors.FAILURES:
        hint = failure.hint or ""
        if "--tls" in hint:
            words = hint.split("--tls ")[1:]
            assert all(
                w.split()[0].rstrip(",;)") in {"implicit", "starttls", "if-offered", "none"}
                for w in words
            ), hint


def test_moved_classes_keep_their_old_import_paths() -> None:
    from aiopop import _cli, accounts, fetch

    with pytest.warns(DeprecationWarning, match="import AccountError from aiopop"):
        assert accounts.AccountError is errors.AccountError
    with pytest.warns(DeprecationWarning, match="import UIDLUnavailableError from aiopop"):
        assert fetch.UIDLUnavailableError is errors.UIDLUnavailableError
    assert _cli.UsageError is errors.UsageError
