"""Command injection: CR, LF and NUL in arguments never reach a hostile server."""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import cast

import pytest

import aiopop
from aiopop import sasl
from aiopop._apop import apop_digest
from aiopop.testing import (
    Expect,
    ScriptedServer,
    Send,
    Step,
    WaitForClose,
)
from tests.helpers.hostile import (
    AUTHORIZED,
    CAPA_USER,
    GREETING,
    TIMESTAMP,
    Scripted,
    b64,
    challenge,
    client_closed,
    leftovers,
)
from tests.helpers.scripted import client_for, logged_in

# -- command injection: CR, LF, NUL in arguments --------------------------------------------------

INJECTIONS = ["\r", "\n", "\0", "\r\n", "x\r\nDELE 1", "x\nDELE 1", "x\0DELE 1"]
"""CR, LF and NUL alone, and each carrying a command of its own."""


def named(name: str, initial: bytes | None = None) -> sasl.Mechanism:
    """A :class:`Scripted` mechanism registered under ``name``."""
    return cast(sasl.Mechanism, type("Named", (Scripted,), {"name": name})(initial))


def bad_int(text: str) -> int:
    """``text`` where the API wants a number: what a caller passing user input might do."""
    return cast(int, text)


@pytest.mark.parametrize("bad", INJECTIONS)
async def test_control_characters_in_authorization_arguments(bad: str) -> None:
    script: list[Step] = [
        Send(GREETING),
        Expect(b"USER u"),
        Send(b"+OK\r\n"),
        Expect(b"QUIT"),
        Send(b"+OK bye\r\n"),
    ]
    async with ScriptedServer(script) as server:
        client = client_for(server, timeout=3)
        await client.connect()
        calls: list[Callable[[], Awaitable[object]]] = [
            lambda: client.user(bad),
            lambda: client.user("u" + bad),
            lambda: client.apop(bad, "p"),
            lambda: client.apop("u" + bad, "p"),
            lambda: client.auth(named("X" + bad)),
            lambda: client.auth(named(bad + "X")),
            lambda: client.lang(bad),
            lambda: client.lang("en" + bad),
        ]
        for call in calls:
            with pytest.raises(ValueError, match=r"control character|space|mechanism name"):
                await call()
        assert await client.user("u") == b"+OK"
        with pytest.raises(ValueError, match=r"^PASS: control character in a secret argument$"):
            await client.pass_("p" + bad)  # the password itself is never shown
        assert await client.quit() == b"+OK bye"
    # Nothing reached the server but the valid USER and the QUIT that ended the script.
    assert server.received == [b"USER u", b"QUIT"]
    assert server.mismatches == []


@pytest.mark.parametrize("bad", INJECTIONS)
async def test_control_characters_in_transaction_arguments(bad: str, tmp_path: Path) -> None:
    # retr_many() and the like first learn whether they may pipeline (CAPA,
    # once per state), then meet the bad number: CAPA is all that goes out.
    steps: list[Step] = [
        Expect(b"CAPA"),
        Send(b"+OK\r\nUSER\r\n.\r\n"),
        Expect(b"QUIT"),
        Send(b"+OK bye\r\n"),
    ]
    async with logged_in(steps, timeout=3) as (server, client):
        number = bad_int("1" + bad)

        async def stream() -> None:
            async with client.retr_stream(number):
                pass

        async def many() -> None:
            async for _ in client.retr_many([number, 1]):
                pass

        async def top_many() -> None:
            async for _ in client.top_many([number], 0):
                pass

        async def dele_many() -> None:
            async for _ in client.dele_many([number]):
                pass

        calls: list[Callable[[], Awaitable[object]]] = [
            lambda: client.retr(number),
            lambda: client.top(number, 0),
            lambda: client.top(1, bad_int("0" + bad)),
            lambda: client.dele(number),
            lambda: client.list(number),
            lambda: client.uidl(number),
            lambda: client.lang("en" + bad),
            stream,
            many,
            top_many,
            dele_many,
            lambda: client.retr_to_file(number, tmp_path / "message"),
        ]
        for call in calls:
            with pytest.raises(ValueError, match=r"must be a (positive|non-negative) int|control"):
                await call()
        assert await client.quit() == b"+OK bye"
    assert server.received == [*AUTHORIZED, b"CAPA", b"QUIT"]
    assert server.mismatches == []
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("bad", INJECTIONS)
async def test_apop_hashes_control_characters_in_the_password(bad: str) -> None:
    script: list[Step] = [Send(GREETING), Expect(), Send(b"+OK maildrop ready\r\n")]
    async with ScriptedServer(script) as server:
        client = client_for(server, timeout=3)
        await client.connect()
        await client.apop("u", "p" + bad)
        await client.close()
    digest = apop_digest(TIMESTAMP, ("p" + bad).encode()).encode()
    assert re.fullmatch(rb"[0-9a-f]{32}", digest)
    assert server.received == [b"APOP u " + digest]


@pytest.mark.parametrize("bad", INJECTIONS)
@pytest.mark.parametrize("deferred", [False, True], ids=["on-the-auth-line", "after-challenge"])
async def test_sasl_responses_go_out_as_base64_only(bad: str, deferred: bool) -> None:
    # CR, LF and NUL inside SASL credentials are content, not line ends:
    # the wire carries them base64-encoded (RFC 5034 section 4).
    initial = (b"A" * 300 if deferred else b"") + ("\0u" + bad + "\0p" + bad).encode()
    answer = ("answer" + bad).encode()
    steps: list[Step] = [Expect()]
    if deferred:
        steps += [Send(b"+ \r\n"), Expect()]
    steps += [Send(challenge(b"more")), Expect(), Send(b"+OK in\r\n")]
    async with ScriptedServer([Send(b"+OK ready\r\n"), *steps]) as server:
        client = client_for(server, timeout=3)
        await client.connect()
        assert await client.auth(Scripted(initial, [answer])) == b"+OK in"
        assert client.state is aiopop.State.TRANSACTION
        await client.close()
    lines = server.received
    first = [b"AUTH X-SCRIPTED"] if deferred else [b"AUTH X-SCRIPTED " + b64(initial)]
    assert lines == [*first, *([b64(initial)] if deferred else []), b64(answer)]
    for line in lines:
        assert re.fullmatch(rb"(AUTH X-SCRIPTED )?[A-Za-z0-9+/]+=*|AUTH X-SCRIPTED", line), line


@pytest.mark.parametrize(
    ("size", "inline"),
    # "AUTH X-SCRIPTEDX " is 17 octets and CRLF 2: 177 octets encode to 236, 255 in all.
    [(0, True), (1, True), (177, True), (178, False), (180, False)],
)
async def test_the_initial_response_rides_on_the_auth_line_up_to_255_octets(
    size: int, inline: bool
) -> None:
    """RFC 5034 section 4 and RFC 2449 section 4: an empty initial response is ``=``."""
    initial = b"i" * size
    encoded = b64(initial) or b"="
    steps: list[Step] = [Expect()]
    if not inline:
        steps += [Send(b"+ \r\n"), Expect()]
    steps += [Send(b"+OK in\r\n")]
    async with ScriptedServer([Send(b"+OK ready\r\n"), *steps]) as server:
        client = client_for(server, timeout=3)
        await client.connect()
        assert await client.auth(named("X-SCRIPTEDX", initial)) == b"+OK in"
        await client.close()
    if inline:
        assert server.received == [b"AUTH X-SCRIPTEDX " + encoded]
        assert len(server.received[0]) + 2 <= 255
    else:
        assert server.received == [b"AUTH X-SCRIPTEDX", encoded]
        assert len(b"AUTH X-SCRIPTEDX " + encoded) + 2 > 255


async def test_no_initial_response_leaves_the_auth_line_bare_and_unredacted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="aiopop")
    script: list[Step] = [
        Send(b"+OK ready\r\n"),
        Expect(b"AUTH X-SCRIPTED"),
        Send(b"+ \r\n"),
        Expect(b64(b"r")),
        Send(b"+OK in\r\n"),
    ]
    async with ScriptedServer(script) as server:
        client = client_for(server, timeout=3)
        await client.connect()
        await client.auth(Scripted())
        await client.close()
    assert server.mismatches == []
    assert "C: AUTH X-SCRIPTED" in caplog.messages
    assert "C: <SASL response>" in caplog.messages


async def test_a_deferred_initial_response_needs_an_empty_challenge_first() -> None:
    script: list[Step] = [
        Send(b"+OK ready\r\n"),
        Expect(b"AUTH X-SCRIPTED"),
        Send(challenge(b"not empty")),
        Expect(b"*"),
        Send(b"-ERR cancelled\r\n"),
    ]
    async with ScriptedServer(script) as server:
        client = client_for(server, timeout=3)
        await client.connect()
        expected = r"^X-SCRIPTED: expected an empty challenge first$"
        with pytest.raises(aiopop.SASLError, match=expected):
            await client.auth(Scripted(b"x" * 300))
        assert client.state is aiopop.State.AUTHORIZATION
        await client.close()
    assert server.received == [b"AUTH X-SCRIPTED", b"*"]


@pytest.mark.parametrize(("extra", "accepted"), [(0, True), (1, False)])
async def test_a_challenge_may_be_as_long_as_the_mechanism_allows(
    extra: int, accepted: bool
) -> None:
    mechanism = Scripted()
    size = mechanism.max_challenge + extra
    reply = b"+OK in\r\n" if accepted else b"-ERR cancelled\r\n"
    script: list[Step] = [
        Send(b"+OK ready\r\n"),
        Expect(b"AUTH X-SCRIPTED"),
        Send(challenge(b"c" * size)),
        Expect(),
        Send(reply),
    ]
    async with ScriptedServer(script) as server:
        client = client_for(server, timeout=3)
        await client.connect()
        if accepted:
            assert await client.auth(mechanism) == b"+OK in"
        else:
            with pytest.raises(aiopop.SASLError, match=f"a challenge of {size} octets"):
                await client.auth(mechanism)
        await client.close()
    assert server.received[1] == (b64(b"r") if accepted else b"*")


@pytest.mark.parametrize("bad", ["\r\nDELE 1", "\nDELE 1", "\0DELE 1"])
@pytest.mark.parametrize("where", ["user", "password"])
async def test_login_never_puts_control_characters_on_the_wire(bad: str, where: str) -> None:
    user, password = ("u" + bad, "p") if where == "user" else ("u", "p" + bad)
    script: list[Step] = [Send(b"+OK ready\r\n"), *CAPA_USER, Expect(), Send(b"+OK\r\n")]
    async with ScriptedServer([*script, WaitForClose()]) as server:
        client = client_for(server, timeout=3)
        await client.connect()
        with pytest.raises(ValueError, match="control character"):
            await client.login(user, password, allow_cleartext=True)
        await client.close()
        await client_closed(server)
    # Checked before anything at all is sent: not even CAPA.
    assert server.received == []
