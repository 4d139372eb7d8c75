"""Response codes as exception types (RFC 2449 section 8, RFC 3206)."""

from __future__ import annotations

import pickle

import pytest

from aiopop import _errors as errors
from aiopop._errors import (
    AuthenticationError,
    CredentialsError,
    LoginDelayError,
    MailboxInUseError,
    PermanentFailureError,
    ResponseError,
    TemporaryFailureError,
    response_error,
)


@pytest.mark.parametrize(
    ("code", "cls"),
    [
        (None, ResponseError),
        ("AUTH", ResponseError),
        ("auth/expired", ResponseError),
        ("IN-USE", MailboxInUseError),
        ("in-use", MailboxInUseError),
        ("LOGIN-DELAY", LoginDelayError),
        ("SYS/TEMP", TemporaryFailureError),
        ("SYS/TEMP/FOO", TemporaryFailureError),
        ("SYS/PERM", PermanentFailureError),
        ("SYS", ResponseError),
        ("SYS/TEMPORARY", ResponseError),
        ("X-VENDOR", ResponseError),
    ],
)
def test_codes_choose_the_class(code: str | None, cls: type[ResponseError]) -> None:
    error = response_error("text", code, command="RETR")
    assert type(error) is cls
    assert (error.response, error.code, error.command) == ("text", code, "RETR")
    refused = response_error("text", code, command="PASS", login=True)
    assert isinstance(refused, AuthenticationError)  # a refused login, whatever the code
    if cls is not ResponseError:
        assert isinstance(refused, cls)
    elif code is not None and code.upper().startswith("AUTH"):
        assert type(refused) is CredentialsError  # wrong credentials: only at login
        assert error.is_credentials_problem
    else:
        assert type(refused) is AuthenticationError


def test_what_callers_catch() -> None:
    with pytest.raises(MailboxInUseError):
        raise response_error("[IN-USE] locked", "IN-USE", command="APOP", login=True)
    with pytest.raises(AuthenticationError):
        raise response_error("[IN-USE] locked", "IN-USE", command="APOP", login=True)
    with pytest.raises(TemporaryFailureError):
        raise response_error("[SYS/TEMP/DISK] full", "SYS/TEMP/DISK", command="RETR")
    assert not isinstance(response_error("x", "IN-USE", command="RETR"), AuthenticationError)


def test_has_code_is_hierarchical_and_case_insensitive() -> None:
    error = ResponseError("text", "SYS/TEMP/FOO")
    assert error.has_code("SYS/TEMP")
    assert error.has_code("sys/temp/foo")
    assert error.has_code("SYS")
    assert not error.has_code("SYS/PERM")
    assert not error.has_code("SYS/TEMP/FOO/BAR")
    assert not ResponseError("text").has_code("SYS")


def test_login_delay_carries_the_delay() -> None:
    error = response_error("[LOGIN-DELAY] wait", "LOGIN-DELAY", command="PASS", login=True)
    assert isinstance(error, LoginDelayError)
    assert error.delay is None
    error.delay = 300
    assert pickle.loads(pickle.dumps(error)).delay == 300


@pytest.mark.parametrize("login", [False, True])
@pytest.mark.parametrize("code", [None, "AUTH", "IN-USE", "LOGIN-DELAY", "SYS/TEMP", "SYS/PERM"])
def test_errors_survive_pickling(code: str | None, login: bool) -> None:
    error = response_error("explanation", code, command="PASS", login=login)
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error)
    assert (copy.response, copy.code, copy.command, str(copy)) == (
        error.response,
        error.code,
        error.command,
        str(error),
    )


def test_every_public_error_is_exported() -> None:
    for name in errors.__all__:
        assert hasattr(errors, name)
