"""Hostile servers (../shared/security.md): one test per attack, each against a scripted server.

Every test checks both sides: what reached the wire (the exact lines the
server received, so that no credential or command went out that should not
have) and what the client raised (its type and the key part of its message).
Here: the APOP timestamp, bounded lines, unrequested data, escaped server text.
The other attacks are in the test_hostile_*.py files beside this one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

import pytest

import aiopop
from aiopop.testing import (
    Expect,
    ScriptedServer,
    Send,
    Sleep,
    Step,
    WaitForClose,
)
from tests.helpers.hostile import (
    ANSI,
    AUTHORIZED,
    CAPA_USER,
    assert_no_controls,
    client_closed,
)
from tests.helpers.scripted import LOGIN, client_for, logged_in

# -- CVE-2018-1060: the APOP timestamp search on a hostile greeting ----------------------------


@pytest.mark.timeout(15)  # a quadratic search of a megabyte would run for hours
async def test_a_megabyte_of_angle_brackets_is_refused_fast() -> None:
    async with ScriptedServer([Send(b"+OK " + b"<" * 1_000_000 + b"\r\n")]) as server:
        client = client_for(server, timeout=5)
        start = time.perf_counter()
        with pytest.raises(aiopop.ProtocolError, match=r"^line longer than 8192 octets$"):
            await client.connect()
        assert time.perf_counter() - start < 2.0
        assert not client.is_connected
        await client_closed(server)
    assert server.received == []


@pytest.mark.timeout(15)
@pytest.mark.parametrize(
    ("text", "timestamp"),
    [
        (b"<" * 1_000_000, None),
        (b"<" * 1_000_000 + b">", None),
        (b"<" * 500_000 + b">" * 500_000, None),
        (b"<@" * 500_000 + b">", None),
        (b"<a@b " * 200_000 + b">", None),  # a space: not an RFC 822 msg-id
        (b"<a>" * 300_000, None),  # no @
        (b"<" * 1_000_000 + b"<a@b>", b"<a@b>"),
    ],
    ids=["lt", "lt-gt", "lt-then-gt", "lt-at", "spaces", "no-at", "valid-at-the-end"],
)
async def test_a_megabyte_greeting_is_searched_in_linear_time(
    text: bytes, timestamp: bytes | None
) -> None:
    # A line limit large enough for the greeting to reach the timestamp search.
    script: list[Step] = [Send(b"+OK " + text + b"\r\n"), Expect(b"QUIT"), Send(b"+OK\r\n")]
    async with ScriptedServer(script) as server:
        client = client_for(server, timeout=5, max_line_length=2_000_000)
        start = time.perf_counter()
        await client.connect()
        assert time.perf_counter() - start < 2.0
        assert client.apop_timestamp == timestamp
        if timestamp is None:
            with pytest.raises(aiopop.APOPNotOfferedError, match="no APOP timestamp"):
                await client.apop("u", "p")
        await client.quit()
    assert server.received == [b"QUIT"]
    assert server.mismatches == []


# -- bounded lines ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "steps"),
    [
        ("NOOP", [Expect(b"NOOP"), Send(b"+OK " + b"a" * 100_000)]),
        ("NOOP", [Expect(b"NOOP"), Send(b"-ERR " + b"a" * 100_000)]),
        ("LIST", [Expect(b"LIST"), Send(b"+OK\r\n1 " + b"9" * 100_000)]),
        ("UIDL", [Expect(b"UIDL"), Send(b"+OK\r\n1 abc\r\n2 " + b"x" * 100_000)]),
    ],
    ids=["status", "err-status", "list-line", "uidl-line"],
)
async def test_a_100_kb_line_without_crlf(command: str, steps: list[Step]) -> None:
    # The server sends no line end and waits: the client must give up on the
    # length alone, holding no more than the limit (or it would time out).
    calls: dict[str, Callable[[aiopop.POP3], Awaitable[object]]] = {
        "NOOP": lambda client: client.noop(),
        "LIST": lambda client: client.list(),
        "UIDL": lambda client: client.uidl(),
    }
    async with logged_in([*steps, WaitForClose()], timeout=3) as (server, client):
        with pytest.raises(aiopop.ProtocolError, match=r"^line longer than 8192 octets$"):
            await calls[command](client)
        assert not client.is_connected
        await client_closed(server)
        with pytest.raises(aiopop.ProtocolError, match="the connection is closed"):
            await client.noop()
    assert server.received == [*AUTHORIZED, command.encode()]


@pytest.mark.parametrize(
    ("greeting", "steps", "call"),
    [
        (b"+OK hello\x00world\r\n", [], None),
        (b"+OK ready\r\n", [Expect(b"USER u"), Send(b"+OK\x00\r\n")], "user"),
        (b"+OK ready\r\n", [Expect(b"USER u"), Send(b"+OK u\x00-ERR\r\n")], "user"),
        (b"+OK ready\r\n", [Expect(b"USER u"), Send(b"-ERR no\x00such user\r\n")], "user"),
        (b"+OK ready\r\n", [Expect(b"CAPA"), Send(b"+OK\x00\r\nUSER\r\n.\r\n")], "capa"),
    ],
    ids=["greeting", "after-indicator", "in-ok-text", "in-err-text", "listing-status"],
)
async def test_nul_in_a_status_line(greeting: bytes, steps: list[Step], call: str | None) -> None:
    # RFC 2449 section 4: status text is CHAR (%x01-7F) at most; a NUL is
    # never valid and truncates C strings downstream.
    async with ScriptedServer([Send(greeting), *steps, WaitForClose()]) as server:
        client = client_for(server, timeout=3)
        with pytest.raises(aiopop.ProtocolError) as info:  # noqa: PT012 - wherever it comes
            await client.connect()
            await (client.user("u") if call == "user" else client.capa())
        message = str(info.value)
        assert message.startswith("NUL in a status line: ")
        assert "\\x00" in message
        assert "\x00" not in message
        assert not client.is_connected
        await client_closed(server)
    assert server.received == [line.line for line in steps if isinstance(line, Expect)]


# -- unrequested data ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "shown"),
    [
        (b"+OK extra\r\n", "+OK extra\\x0d\\x0a"),
        (b"-ERR extra\r\n", "-ERR extra\\x0d\\x0a"),
        (b"1 120\r\n.\r\n", "1 120\\x0d\\x0a.\\x0d\\x0a"),
        (b"+O", "+O"),
    ],
    ids=["ok", "err", "listing", "partial"],
)
async def test_unrequested_data_with_the_greeting(extra: bytes, shown: str) -> None:
    async with ScriptedServer([Send(b"+OK ready\r\n" + extra), WaitForClose()]) as server:
        client = client_for(server, timeout=3)
        assert await client.connect() == b"+OK ready"
        # It came with the greeting: never handed to USER as its answer.
        with pytest.raises(aiopop.ProtocolError) as info:
            await client.user("u")
        assert str(info.value) == (
            f"the connection is closed: server sent data nobody asked for: {shown!r}"
        )
        assert not client.is_connected
        await client_closed(server)
    assert server.received == []


@pytest.mark.parametrize("separate", [False, True], ids=["same-packet", "separate-packet"])
async def test_a_second_reply_nobody_asked_for(separate: bool) -> None:
    # USER answered twice: a client that sent PASS would take the second +OK
    # for PASS's answer and believe itself logged in.
    answer: list[Step] = (
        [Send(b"+OK\r\n"), Sleep(0.05), Send(b"+OK logged in\r\n")]
        if separate
        else [Send(b"+OK\r\n+OK logged in\r\n")]
    )
    script: list[Step] = [Send(b"+OK ready\r\n"), Expect(b"USER u"), *answer, WaitForClose()]
    async with ScriptedServer(script) as server:
        client = client_for(server, timeout=3)
        await client.connect()
        assert await client.user("u") == b"+OK"
        await client_closed(server)  # the client saw the second reply and hung up
        with pytest.raises(aiopop.ProtocolError, match="nobody asked for: '\\+OK logged in"):
            await client.pass_("p")
        assert client.state is aiopop.State.CLOSED
    assert server.received == [b"USER u"]


async def test_a_second_reply_after_a_message() -> None:
    steps: list[Step] = [
        Expect(b"RETR 1"),
        Send(b"+OK\r\nbody\r\n.\r\n+OK 1 5\r\n"),
        WaitForClose(),
    ]
    async with logged_in(steps, timeout=3) as (server, client):
        assert await client.retr(1) == b"body\r\n"
        await client_closed(server)
        with pytest.raises(aiopop.ProtocolError, match="nobody asked for: '\\+OK 1 5"):
            await client.stat()
    assert server.received == [*AUTHORIZED, b"RETR 1"]


ANSI_SHOWN = "\\x1b[2J\\x1b]0;pwned\\x07\\x1b[31mred\\u009b1m"
"""How :data:`ANSI` may appear: every control escaped."""


async def _act(client: aiopop.POP3, action: str) -> None:
    await client.connect()
    if action == "login":
        await client.login("u", "p", allow_cleartext=True)
    elif action == "user":
        await client.user("u")
    elif action in ("dele", "stat"):
        await client.user("u")
        await client.pass_("p")
        await (client.dele(1) if action == "dele" else client.stat())


@pytest.mark.parametrize(
    ("script", "action", "error", "message", "logged"),
    [
        (
            [Send(b"-ERR " + ANSI + b"\r\n")],
            "connect",
            aiopop.ResponseError,
            "greeting: -ERR " + ANSI_SHOWN,
            True,
        ),
        (
            [
                Send(b"+OK " + ANSI + b"\r\n"),
                *CAPA_USER,
                Expect(b"USER u"),
                Send(b"-ERR [AUTH] " + ANSI + b"\r\n"),
            ],
            "login",
            aiopop.CredentialsError,
            "USER: -ERR [AUTH] " + ANSI_SHOWN,
            True,
        ),
        (
            [*LOGIN, Expect(b"DELE 1"), Send(b"-ERR " + ANSI + b"\r\n")],
            "dele",
            aiopop.ResponseError,
            "DELE: -ERR " + ANSI_SHOWN,
            True,
        ),
        (
            [*LOGIN, Expect(b"STAT"), Send(b"+OK " + ANSI + b"\r\n")],
            "stat",
            aiopop.MalformedReplyError,
            f"malformed STAT line {ANSI_SHOWN!r}",
            True,
        ),
        (
            [*LOGIN, Expect(b"STAT"), Send(ANSI + b"\r\n")],
            "stat",
            aiopop.ProtocolError,
            f"expected +OK or -ERR, got {ANSI_SHOWN!r}",
            False,
        ),
        (
            [
                Send(b"+OK " + ANSI + b"\r\n"),
                Expect(b"CAPA"),
                Send(b"+OK\r\nSTLS\r\n.\r\n"),
                Expect(b"STLS"),
                Send(b"-ERR " + ANSI + b"\r\n"),
            ],
            "connect",
            aiopop.TLSRequiredError,
            "TLS is required, but the server refused STLS: " + ANSI_SHOWN,
            True,
        ),
        (
            [Send(b"+OK ready\r\n" + ANSI)],
            "user",
            aiopop.ProtocolError,
            f"the connection is closed: server sent data nobody asked for: {ANSI_SHOWN!r}",
            False,
        ),
    ],
    ids=["err-greeting", "login", "err", "bad-stat", "bad-status", "stls", "unrequested"],
)
async def test_ansi_escapes_in_server_text_are_escaped(
    script: list[Step],
    action: str,
    error: type[Exception],
    message: str,
    logged: bool,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="aiopop")
    policy = "starttls" if error is aiopop.TLSRequiredError else "if-offered"
    async with ScriptedServer([*script, WaitForClose()]) as server:
        client = client_for(server, timeout=3, tls=policy)
        with pytest.raises(error) as info:
            await _act(client, action)
        await client.close()
        await client_closed(server)
    # The script's own lines reached the server, and nothing more.
    assert server.received == [step.line for step in script if isinstance(step, Expect)]
    assert server.mismatches == []
    assert str(info.value) == message
    shown = [str(info.value), *getattr(info.value, "__notes__", [])]
    if isinstance(info.value, aiopop.ResponseError):
        assert ANSI_SHOWN in info.value.response
        shown.append(info.value.response)
    if action == "login":
        assert any(ANSI_SHOWN in note for note in info.value.__notes__)
    for text in shown:
        assert_no_controls(text)
    for record in caplog.records:
        assert_no_controls(record.getMessage())
    if logged:
        assert any(m.startswith("S: ") and ANSI_SHOWN in m for m in caplog.messages)
