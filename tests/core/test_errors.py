"""The exception hierarchy: what an error says, and what it tells a caller to do."""

from __future__ import annotations

import pytest

from aiopop._errors import AuthenticationError, ResponseError


@pytest.mark.parametrize(
    ("cls", "response", "code", "command", "message"),
    [
        (ResponseError, "no such message", None, None, "-ERR no such message"),
        (ResponseError, "", None, None, "-ERR"),
        (ResponseError, "no such message", "SYS/PERM", "RETR 7", "RETR 7: -ERR no such message"),
        (ResponseError, "", None, "NOOP", "NOOP: -ERR"),
        (AuthenticationError, "[AUTH] bad", "AUTH", "PASS", "PASS: -ERR [AUTH] bad"),
    ],
)
def test_response_error_message_is_the_reply_after_the_command(
    cls: type[ResponseError], response: str, code: str | None, command: str | None, message: str
) -> None:
    # Built here, not in the parameters: the test must run the constructor.
    error = cls(response, code) if command is None else cls(response, code, command=command)
    assert str(error) == message


def test_response_error_keeps_its_parts() -> None:
    error = ResponseError("[IN-USE] locked", "IN-USE", command="PASS")
    assert (error.response, error.code, error.command) == ("[IN-USE] locked", "IN-USE", "PASS")
    bare = ResponseError("no")
    assert (bare.code, bare.command) == (None, "")


@pytest.mark.parametrize(
    ("code", "temporary", "credentials"),
    [
        (None, False, False),
        ("IN-USE", True, False),
        ("LOGIN-DELAY", True, False),
        ("SYS/TEMP", True, False),
        ("SYS/TEMP/DISK", True, False),
        ("SYS/PERM", False, False),
        ("SYS/TEMPORARY", False, False),
        ("AUTH", False, True),
        ("AUTH/EXPIRED", False, True),
        ("AUTHX", False, False),
    ],
)
def test_what_the_code_tells_the_caller(
    code: str | None, temporary: bool, credentials: bool
) -> None:
    error = ResponseError("text", code)
    assert error.is_temporary is temporary
    assert error.is_credentials_problem is credentials
