"""Every error survives pickling whole: task-queue workers carry errors between processes.

An unpickled error keeps its class, its message, its response code, its
command and every attribute set on it (``delay``, notes, anything a caller
added), with every pickle protocol and with copy.copy / copy.deepcopy.
"""

from __future__ import annotations

import copy
import pickle

import pytest

from aiopop import _errors as errors
from aiopop._errors import (
    AuthenticationError,
    DeliveryError,
    LoginDelayError,
    POP3Error,
    ResponseError,
    response_error,
)

PROTOCOLS = range(pickle.HIGHEST_PROTOCOL + 1)


def exception_classes() -> list[type[POP3Error]]:
    """Every exception class errors.py defines, public or not (the login subclasses too)."""
    found = {
        value
        for value in vars(errors).values()
        if isinstance(value, type) and issubclass(value, POP3Error)
    }
    return sorted(found, key=lambda cls: cls.__name__)


def make(cls: type[POP3Error]) -> POP3Error:
    if issubclass(cls, ResponseError):
        return cls("[SYS/TEMP] busy \\x1b", "SYS/TEMP", command="RETR")
    return cls("the server did something \\x1b wrong")


def round_trips(error: POP3Error) -> list[POP3Error]:
    copies: list[POP3Error] = [pickle.loads(pickle.dumps(error, p)) for p in PROTOCOLS]
    return [*copies, copy.copy(error), copy.deepcopy(error)]


def test_every_error_class_is_covered() -> None:
    names = {cls.__name__ for cls in exception_classes()}
    assert {"ResponseError", "ProtocolError", "SASLError", "_LoginDelayed"} <= names
    exported = {getattr(errors, name) for name in errors.__all__}
    pop3_errors = {v for v in exported if isinstance(v, type) and issubclass(v, POP3Error)}
    assert {cls.__name__ for cls in pop3_errors} - {"error_proto"} <= names
    assert "UIDLUnavailableError" in names


@pytest.mark.parametrize("cls", exception_classes(), ids=lambda cls: cls.__name__)
def test_an_error_survives_pickling_with_every_attribute(cls: type[POP3Error]) -> None:
    error = make(cls)
    error.add_note("tried: SCRAM-SHA-256")
    error.retries = 3  # type: ignore[attr-defined]  # what a caller may have added
    for other in round_trips(error):
        assert type(other) is cls
        assert str(other) == str(error)
        assert other.args == error.args
        assert other.__notes__ == ["tried: SCRAM-SHA-256"]
        assert other.retries == 3  # type: ignore[attr-defined]
        assert vars(other) == vars(error)
        assert other is not error


@pytest.mark.parametrize(
    "cls",
    [cls for cls in exception_classes() if issubclass(cls, ResponseError)],
    ids=lambda cls: cls.__name__,
)
def test_a_response_error_keeps_its_response_code_and_command(cls: type[POP3Error]) -> None:
    error = make(cls)
    assert isinstance(error, ResponseError)
    for other in round_trips(error):
        assert isinstance(other, ResponseError)
        assert other.response == "[SYS/TEMP] busy \\x1b"
        assert other.code == "SYS/TEMP"
        assert other.command == "RETR"
        assert str(other) == "RETR: -ERR [SYS/TEMP] busy \\x1b"
        assert other.is_temporary
        assert other.has_code("SYS")


@pytest.mark.parametrize(
    ("response", "code", "command", "message"),
    [
        ("", None, "", "-ERR"),
        ("no such message", None, "", "-ERR no such message"),
        ("", "AUTH", "PASS", "PASS: -ERR"),
        ("[IN-USE] locked", "IN-USE", "USER", "USER: -ERR [IN-USE] locked"),
    ],
)
@pytest.mark.parametrize("login", [False, True])
def test_the_parts_of_a_refusal_each_survive(
    response: str, code: str | None, command: str, message: str, login: bool
) -> None:
    error = response_error(response, code, command=command, login=login)
    for other in round_trips(error):
        assert type(other) is type(error)
        assert isinstance(other, ResponseError)
        assert (other.response, other.code, other.command) == (response, code, command)
        assert str(other) == message
        assert isinstance(other, AuthenticationError) is login


def test_a_login_delay_keeps_its_delay_set_or_not() -> None:
    unset = response_error("[LOGIN-DELAY] wait", "LOGIN-DELAY", command="PASS", login=True)
    assert isinstance(unset, LoginDelayError)
    for other in round_trips(unset):
        assert isinstance(other, LoginDelayError)
        assert other.delay is None
        assert "delay" not in vars(other)
    unset.delay = 900
    for other in round_trips(unset):
        assert isinstance(other, LoginDelayError)
        assert other.delay == 900


@pytest.mark.parametrize("uid", ["u1", None])
def test_a_delivery_error_keeps_its_uid_and_reason(uid: str | None) -> None:
    """Not a POP3Error (the server did nothing wrong), but it travels between processes too."""
    error = DeliveryError("procmail exited with status 75; stderr: quota", uid=uid)
    error.add_note("account: work")
    error.retries = 2  # type: ignore[attr-defined]
    for other in [pickle.loads(pickle.dumps(error, p)) for p in PROTOCOLS] + [
        copy.copy(error),
        copy.deepcopy(error),
    ]:
        assert type(other) is DeliveryError
        assert (other.uid, other.reason) == (uid, "procmail exited with status 75; stderr: quota")
        assert str(other) == str(error)
        assert other.args == error.args
        assert other.__notes__ == ["account: work"]
        assert vars(other) == vars(error)
    assert str(error) == "procmail exited with status 75; stderr: quota"


def test_the_rebuilt_error_runs_its_constructor() -> None:
    """The code and command are passed to the class, not only restored as attributes."""
    seen: list[tuple[str, str | None, str]] = []

    class Watched(ResponseError):
        def __init__(self, response: str, code: str | None = None, *, command: str = "") -> None:
            seen.append((response, code, command))
            super().__init__(response, code, command=command)

    error = Watched("gone", "SYS/PERM", command="DELE")
    seen.clear()
    rebuilt = errors._rebuild(Watched, "gone", "SYS/PERM", "DELE", {})
    assert seen == [("gone", "SYS/PERM", "DELE")]
    assert (rebuilt.response, rebuilt.code, rebuilt.command) == ("gone", "SYS/PERM", "DELE")
    assert str(rebuilt) == str(error)
    function, arguments = error.__reduce__()
    assert function is errors._rebuild
    assert isinstance(arguments, tuple)
    assert arguments[:4] == (Watched, "gone", "SYS/PERM", "DELE")
