"""Hostile servers during SASL (a server that cannot prove itself, hostile challenges),
and login() against a server that hangs up after a refusal (RFC 1939 section 4).
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable

import pytest
import scramp

import aiopop
from aiopop._apop import apop_digest
from aiopop._auth import MAX_SASL_CHALLENGES
from aiopop.testing import (
    Close,
    Expect,
    Respond,
    ScriptedServer,
    Send,
    Sleep,
    Step,
    WaitForClose,
)
from tests.helpers.hostile import (
    GREETING,
    TIMESTAMP,
    Scripted,
    assert_no_controls,
    b64,
    challenge,
    client_closed,
)
from tests.helpers.scripted import client_for

# -- SASL: a server that cannot prove itself, and hostile challenges ------------------------------


SCRAM_CAPA = b"+OK\r\nSASL SCRAM-SHA-256 PLAIN\r\nUSER\r\n.\r\n"
"""SCRAM first; PLAIN, USER (and APOP, in :data:`GREETING`) to fall back to, were that allowed."""


class ScramServer:
    """The server side of SCRAM-SHA-256 (through scramp) for user "u", password "p".

    :meth:`first` answers the AUTH line, :meth:`final` the client's final
    message with the server signature, or with what ``final_line`` makes of it.
    """

    def __init__(self, final_line: Callable[[bytes], bytes] | None = None) -> None:
        mechanism = scramp.ScramMechanism("SCRAM-SHA-256")
        auth_info = mechanism.make_auth_info("p", iteration_count=4096)
        self._server = mechanism.make_server(lambda _user: auth_info)
        self._final_line = final_line

    def first(self, line: bytes) -> bytes:
        verb, name, initial = line.split(b" ")
        assert (verb, name) == (b"AUTH", b"SCRAM-SHA-256")
        self._server.set_client_first(base64.b64decode(initial).decode())
        return challenge(self._server.get_server_first().encode())

    def final(self, line: bytes) -> bytes:
        self._server.set_client_final(base64.b64decode(line).decode())
        honest = challenge(self._server.get_server_final().encode())
        return honest if self._final_line is None else self._final_line(honest)


FORGED = challenge(b"v=" + b64(bytes(32)))
"""A server-final message with a signature that proves nothing."""


@pytest.mark.parametrize(
    ("final", "after", "message", "closes"),
    [
        (
            lambda _: FORGED,
            [Expect(b"*"), Send(b"-ERR [AUTH] cancelled\r\n")],
            "The server signature doesn't match",
            False,
        ),
        (
            lambda _: challenge(b"e=other-error"),
            [Expect(b"*"), Send(b"-ERR [AUTH] cancelled\r\n")],
            "The server returned an error",
            False,
        ),
        (
            lambda _: b"+OK no signature, but welcome\r\n",
            [],
            "without proving it knows the password",
            True,
        ),
        (
            lambda _: b"+ !!not base64!!\r\n",
            [Expect(b"*"), Send(b"-ERR [AUTH] cancelled\r\n")],
            "not valid base64",
            False,
        ),
        (
            lambda _: challenge(b"v=" + b"A" * 3000),
            [Expect(b"*"), Send(b"-ERR [AUTH] cancelled\r\n")],
            r"a challenge of 3002 octets \(at most 2048 accepted\)",
            False,
        ),
        (
            # The cancel is answered +OK: RFC 5034 section 4 says it MUST be -ERR.
            lambda _: FORGED,
            [Expect(b"*"), Send(b"+OK welcome anyway\r\n")],
            "The server signature doesn't match",
            True,
        ),
        (
            # ...or with yet another challenge.
            lambda _: FORGED,
            [Expect(b"*"), Send(challenge(b"v=try again"))],
            "The server signature doesn't match",
            True,
        ),
    ],
    ids=[
        "forged-signature",
        "server-error",
        "ok-without-signature",
        "invalid-base64",
        "oversized",
        "ok-after-cancel",
        "challenge-after-cancel",
    ],
)
async def test_scram_server_that_cannot_prove_itself(
    final: Callable[[bytes], bytes], after: list[Step], message: str, closes: bool
) -> None:
    scram = ScramServer(final)
    script: list[Step] = [
        Send(GREETING),
        Expect(b"CAPA"),
        Send(SCRAM_CAPA),
        Respond(scram.first),
        Respond(scram.final),
        *after,
        WaitForClose(),
    ]
    async with ScriptedServer(script) as server:
        client = client_for(server, timeout=3)
        await client.connect()
        with pytest.raises(aiopop.SASLError, match=message) as info:
            await client.login("u", "p", allow_cleartext=True)
        assert not isinstance(info.value, aiopop.AuthenticationError)
        assert str(info.value).startswith("SCRAM-SHA-256: ")
        if closes:
            # Told it is logged in by a server that never proved itself: hang up.
            await client_closed(server)
            assert not client.is_connected
            assert client.state is aiopop.State.CLOSED
        else:
            # The server refused the cancelled exchange: the session is in step.
            assert client.is_connected
            assert client.state is aiopop.State.AUTHORIZATION
        await client.close()
        await client_closed(server)
    cancelled = [b"*"] if after else []
    # No fallback to APOP, PLAIN or USER/PASS, on this connection or another.
    assert [line.split(b" ")[0] for line in server.received] == [
        b"CAPA",
        b"AUTH",
        server.received[2],
        *cancelled,
    ]
    assert re.fullmatch(rb"[A-Za-z0-9+/]+=*", server.received[2])
    assert server.connections == 1
    assert server.mismatches == []
    assert server.errors == []


async def test_scram_server_that_proves_itself_is_the_control() -> None:
    scram = ScramServer()
    script: list[Step] = [
        Send(GREETING),
        Expect(b"CAPA"),
        Send(SCRAM_CAPA),
        Respond(scram.first),
        Respond(scram.final),
        Expect(b""),
        Send(b"+OK logged in\r\n"),
    ]
    async with ScriptedServer(script) as server:
        client = client_for(server, timeout=3)
        await client.connect()
        assert await client.login("u", "p") is aiopop.AuthMethod.SCRAM_SHA_256
        assert client.state is aiopop.State.TRANSACTION
        await client.close()
    assert len(server.received) == 4
    assert server.mismatches == []
    assert server.errors == []


def auth_script(*exchange: Step) -> list[Step]:
    """Greet, then AUTH X-SCRIPTED and ``exchange``."""
    return [Send(b"+OK ready\r\n"), Expect(b"AUTH X-SCRIPTED"), *exchange]


ENDLESS = [
    step
    for _ in range(MAX_SASL_CHALLENGES)
    for step in (Send(challenge(b"more?")), Expect(b"cg=="))
]
"""As many challenges as the client answers, each answered "r" (base64 cg==)."""


@pytest.mark.parametrize(
    ("exchange", "answered", "message"),
    [
        (
            [*ENDLESS, Send(challenge(b"more?")), Expect(b"*")],
            MAX_SASL_CHALLENGES,
            f"^X-SCRIPTED: more than {MAX_SASL_CHALLENGES} challenges$",
        ),
        (
            [Send(challenge(b"x" * 4097)), Expect(b"*")],
            0,
            r"^X-SCRIPTED: a challenge of 4097 octets \(at most 4096 accepted\)$",
        ),
        (
            [Send(b"+ bm90IGJhc2U2NA=!\r\n"), Expect(b"*")],
            0,
            "^X-SCRIPTED: the server's challenge is not valid base64$",
        ),
        (
            [Send(b"+ Zm9v YmFy\r\n"), Expect(b"*")],
            0,
            "^X-SCRIPTED: the server's challenge is not valid base64$",
        ),
    ],
    ids=["endless", "oversized", "invalid-base64", "base64-with-a-space"],
)
@pytest.mark.parametrize("then", ["err", "endless", "ok"])
async def test_hostile_challenges_are_cancelled(
    exchange: list[Step], answered: int, message: str, then: str
) -> None:
    # After the client's "*" the server must say -ERR (RFC 5034 section 4);
    # another challenge, or +OK, ends the connection instead.
    replies: dict[str, list[Step]] = {
        "err": [Send(b"-ERR [AUTH] cancelled\r\n"), Expect(b"QUIT"), Send(b"+OK bye\r\n")],
        "endless": [Send(challenge(b"more?") * 3)],
        "ok": [Send(b"+OK welcome\r\n")],
    }
    async with ScriptedServer([*auth_script(*exchange), *replies[then], WaitForClose()]) as server:
        client = client_for(server, timeout=3)
        await client.connect()
        with pytest.raises(aiopop.SASLError, match=message):
            await client.auth(Scripted())
        if then == "err":
            assert await client.quit() == b"+OK bye"
        else:
            await client_closed(server)
            with pytest.raises(aiopop.ProtocolError, match="cancelled"):
                await client.noop()
        assert client.state is not aiopop.State.TRANSACTION
        await client.close()
    assert server.received == [
        b"AUTH X-SCRIPTED",
        *[b"cg=="] * answered,
        b"*",
        *([b"QUIT"] if then == "err" else []),
    ]
    assert server.mismatches == []


async def test_a_challenge_over_the_line_limit_ends_the_connection() -> None:
    script = auth_script(Send(challenge(b"x" * 10_000)), WaitForClose())
    async with ScriptedServer(script) as server:
        client = client_for(server, timeout=3)
        await client.connect()
        with pytest.raises(aiopop.ProtocolError, match=r"^line longer than 8192 octets$"):
            await client.auth(Scripted())
        await client_closed(server)
    assert server.received == [b"AUTH X-SCRIPTED"]


# -- login() and a server that hangs up after a refusal (RFC 1939 section 4) -----------------------

APOP_LINE = b"APOP u " + apop_digest(TIMESTAMP, b"p").encode()
REFUSED = b"-ERR [AUTH] bad \x1b[31mpassword\r\n"


def refusing_apop(capa: bytes, *hang_up: Step) -> list[Step]:
    """Greet with APOP, answer CAPA with ``capa``, refuse APOP and hang up."""
    return [Send(GREETING), Expect(b"CAPA"), Send(capa), Expect(APOP_LINE), Send(REFUSED), *hang_up]


@pytest.mark.parametrize(
    "hang_up",
    [[Close()], [Sleep(0.1), Close()]],
    ids=["at-once", "a-moment-later"],
)
async def test_login_reconnects_after_a_refused_apop_and_a_close(hang_up: list[Step]) -> None:
    second: list[Step] = [
        Send(GREETING),
        Expect(b"CAPA"),
        Send(b"+OK\r\nUSER\r\n.\r\n"),
        Expect(b"USER u"),
        Send(b"+OK\r\n"),
        Expect(b"PASS p"),
        Send(b"+OK logged in\r\n"),
    ]
    first = refusing_apop(b"+OK\r\nUSER\r\n.\r\n", *hang_up)
    async with ScriptedServer(first, then=[second]) as server:
        client = client_for(server, timeout=3)
        await client.connect()
        assert await client.login("u", "p", allow_cleartext=True) is aiopop.AuthMethod.USER
        assert client.state is aiopop.State.TRANSACTION
        await client.close()
        await client_closed(server)
    # APOP on the first connection, then USER/PASS on a second one.
    assert server.received == [b"CAPA", APOP_LINE, b"CAPA", b"USER u", b"PASS p"]
    assert server.connections == 2
    assert server.mismatches == []


@pytest.mark.parametrize(
    ("capa", "withheld"),
    [(b"+OK\r\nTOP\r\n.\r\n", False), (b"+OK\r\nUSER\r\n.\r\n", True)],
    ids=["apop-only", "user-not-allowed-in-cleartext"],
)
async def test_login_raises_the_refusal_when_no_method_is_left(capa: bytes, withheld: bool) -> None:
    async with ScriptedServer(refusing_apop(capa, Close())) as server:
        client = client_for(server, timeout=3)
        await client.connect()
        with pytest.raises(aiopop.CredentialsError) as info:
            await client.login("u", "p")
        assert str(info.value) == "APOP: -ERR [AUTH] bad \\x1b[31mpassword"
        assert info.value.response == "[AUTH] bad \\x1b[31mpassword"
        assert info.value.code == "AUTH"
        notes = " ".join(info.value.__notes__)
        assert "APOP" in notes
        assert ("USER" in notes) is withheld
        assert_no_controls(notes)
        await client.close()
    assert server.received == [b"CAPA", APOP_LINE]
    assert server.connections == 1
