"""login() (aiopop._login): which method it chooses, refusals, methods= and prefer=."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import trustme

import aiopop
from aiopop import AuthMethod
from aiopop.testing import Expect, Faults, Mailbox, POP3TestServer, ScriptedServer, Send, Step
from tests.helpers.login import (
    PASSWORD,
    PASSWORD_MECHANISMS,
    WRONG,
    attempts,
    on_the_wire,
    tls_client_for,
    verbs,
)
from tests.helpers.scripted import client_for
from tests.helpers.tls import client_context, server_context

# -- which method ---------------------------------------------------------------------


async def test_login_upgrades_with_stls_then_uses_scram_sha_256(
    ca: trustme.CA, stls_server: POP3TestServer
) -> None:
    client = client_for(stls_server, ssl_context=client_context(ca))
    async with client:
        assert not client.is_tls
        assert await client.login("mrose", PASSWORD) is AuthMethod.SCRAM_SHA_256
        assert client.is_tls
        assert (await client.stat()).count == 1
    record = stls_server.sessions[0]
    assert record.tls
    assert record.mechanism == "SCRAM-SHA-256"
    # CAPA in the clear, STLS, CAPA again over TLS (what came in the clear proves nothing).
    assert verbs(stls_server)[:4] == [b"CAPA", b"STLS", b"CAPA", b"AUTH"]
    assert record.lines[3].startswith(b"AUTH SCRAM-SHA-256 ")
    assert not any(PASSWORD.encode() in line for line in record.lines)


@pytest.mark.parametrize(
    ("offered", "apop", "expected"),
    [
        (["CRAM-MD5", "SCRAM-SHA-1", "PLAIN"], True, AuthMethod.SCRAM_SHA_1),
        (["PLAIN", "CRAM-MD5"], True, AuthMethod.CRAM_MD5),
        (["PLAIN", "LOGIN"], True, AuthMethod.APOP),
        (["LOGIN", "PLAIN"], False, AuthMethod.PLAIN),
        (["LOGIN"], False, AuthMethod.LOGIN),
        ([], False, AuthMethod.USER),
    ],
)
async def test_login_takes_the_strongest_method_offered(
    ca: trustme.CA, mailbox: Mailbox, offered: list[str], apop: bool, expected: AuthMethod
) -> None:
    tls = server_context(ca)
    async with (
        POP3TestServer({"mrose": mailbox}, ssl_context=tls, sasl=offered, apop=apop) as srv,
        aiopop.POP3_SSL(srv.host, srv.port, ssl_context=client_context(ca)) as client,
    ):
        assert await client.login("mrose", PASSWORD) is expected
        assert client.state is aiopop.State.TRANSACTION
    assert srv.sessions[0].mechanism == expected.value


async def test_cleartext_methods_need_tls_or_consent(mailbox: Mailbox) -> None:
    server = POP3TestServer({"mrose": mailbox}, apop=False, sasl=["PLAIN", "LOGIN"])
    async with server, client_for(server) as client:
        with pytest.raises(aiopop.InsecureLoginError) as info:
            await client.login("mrose", PASSWORD)
        assert str(info.value).startswith(
            "the server offers only PLAIN, LOGIN, USER, which would send the password in "
            "cleartext; no password was sent."
        )
        assert verbs(server) == [b"CAPA"]
        assert await client.login("mrose", PASSWORD, allow_cleartext=True) is AuthMethod.PLAIN
    assert PASSWORD not in str(info.value)


async def test_starttls_never_stays_in_the_clear(
    ca: trustme.CA, stls_server: POP3TestServer
) -> None:
    client = client_for(stls_server, tls="none", ssl_context=client_context(ca))
    async with client:
        assert await client.login("mrose", PASSWORD) is AuthMethod.SCRAM_SHA_256
        assert not client.is_tls
    assert b"STLS" not in verbs(stls_server)


# -- refusals -------------------------------------------------------------------------


async def test_wrong_password_with_apop_on_plain_tcp_is_a_credentials_error(
    mailbox: Mailbox,
) -> None:
    # Was InsecureLoginError, inviting allow_cleartext=True to send a wrong password.
    async with POP3TestServer({"mrose": mailbox}) as server, client_for(server) as client:
        with pytest.raises(aiopop.CredentialsError) as info:
            await client.login("mrose", "wrong")
        assert client.state is aiopop.State.AUTHORIZATION
    error = info.value
    assert isinstance(error, aiopop.AuthenticationError)
    assert error.code == "AUTH"
    assert error.response == "[AUTH] Authentication failed."
    assert error.__notes__ == [
        "tried: APOP refused: [AUTH] Authentication failed.",
        "not tried, as they would send the password in cleartext: USER",
    ]
    assert verbs(server) == [b"CAPA", b"APOP", b"QUIT"]


@pytest.fixture
async def tls_server(ca: trustme.CA, mailbox: Mailbox) -> AsyncIterator[POP3TestServer]:
    """POP3S offering every password mechanism, APOP and USER."""
    server = POP3TestServer(
        {"mrose": mailbox}, ssl_context=server_context(ca), sasl=PASSWORD_MECHANISMS
    )
    async with server:
        yield server


async def test_a_wrong_password_over_tls_costs_two_attempts(
    ca: trustme.CA, tls_server: POP3TestServer
) -> None:
    async with tls_client_for(tls_server, ca) as client:
        with pytest.raises(aiopop.CredentialsError) as info:
            await client.login("mrose", WRONG)
    # The strongest challenge-response method, then one that sends the password.
    assert attempts(tls_server) == ["SCRAM-SHA-256", "PLAIN"]
    assert info.value.command == "AUTH"
    assert info.value.__notes__ == [
        "tried: SCRAM-SHA-256 refused: [AUTH] Authentication failed.; "
        "PLAIN refused: [AUTH] Authentication failed.",
        "held back, as one login makes at most 2 attempts so that a wrong password cannot "
        "lock the account: SCRAM-SHA-1, CRAM-MD5, APOP, LOGIN, USER",
        "to try another method, pin it: login(..., methods=['SCRAM-SHA-1']) "
        "or Account(auth='SCRAM-SHA-1')",
    ]
    assert WRONG not in str(info.value)
    assert WRONG not in "".join(info.value.__notes__)


async def test_a_wrong_password_with_allow_cleartext_costs_two_attempts(
    stls_server: POP3TestServer,
) -> None:
    async with client_for(stls_server, tls="none") as client:
        with pytest.raises(aiopop.CredentialsError):
            await client.login("mrose", WRONG, allow_cleartext=True)
    assert attempts(stls_server) == ["SCRAM-SHA-256", "PLAIN"]


@pytest.mark.parametrize(
    ("offered", "apop", "expected"),
    [
        (["CRAM-MD5", "LOGIN"], True, ["CRAM-MD5", "LOGIN"]),
        ([], True, ["APOP", "USER"]),
        (["SCRAM-SHA-1", "CRAM-MD5"], False, ["SCRAM-SHA-1", "USER"]),
        (["LOGIN", "PLAIN"], False, ["PLAIN"]),  # one method that sends the password, once
        ([], False, ["USER"]),
    ],
)
async def test_the_two_attempts_over_tls(
    ca: trustme.CA, mailbox: Mailbox, offered: list[str], apop: bool, expected: list[str]
) -> None:
    tls = server_context(ca)
    server = POP3TestServer({"mrose": mailbox}, ssl_context=tls, sasl=offered, apop=apop)
    async with server, tls_client_for(server, ca) as client:
        with pytest.raises(aiopop.CredentialsError):
            await client.login("mrose", WRONG)
    assert attempts(server) == expected


async def test_a_wrong_password_in_cleartext_tries_two_challenge_methods(
    stls_server: POP3TestServer,
) -> None:
    async with client_for(stls_server, tls="none") as client:
        with pytest.raises(aiopop.CredentialsError) as info:
            await client.login("mrose", WRONG)
    assert attempts(stls_server) == ["SCRAM-SHA-256", "SCRAM-SHA-1"]
    assert not on_the_wire(stls_server, WRONG)
    assert info.value.__notes__[1:] == [
        "held back, as one login makes at most 2 attempts so that a wrong password cannot "
        "lock the account: CRAM-MD5, APOP",
        "not tried, as they would send the password in cleartext: PLAIN, LOGIN, USER",
        "to try another method, pin it: login(..., methods=['CRAM-MD5']) "
        "or Account(auth='CRAM-MD5')",
    ]


async def test_the_checker_itself_sees_a_password_on_the_wire(
    stls_server: POP3TestServer,
) -> None:
    async with client_for(stls_server, tls="none") as client:
        with pytest.raises(aiopop.CredentialsError):
            await client.login("mrose", WRONG, allow_cleartext=True)
    assert on_the_wire(stls_server, WRONG)  # AUTH PLAIN carried it, base64-encoded


async def test_a_right_password_the_server_cannot_check_by_scram_logs_in(
    ca: trustme.CA, mailbox: Mailbox
) -> None:
    # Like Dovecot with a hashed password: SCRAM is offered, but refused for
    # the right password; PLAIN works with any stored hash.
    faults = Faults(error_at=2, error="[AUTH] Authentication failed.")  # 1 is CAPA
    tls = server_context(ca)
    server = POP3TestServer(
        {"mrose": mailbox}, ssl_context=tls, sasl=PASSWORD_MECHANISMS, faults=faults
    )
    async with server, tls_client_for(server, ca) as client:
        assert await client.login("mrose", PASSWORD) is AuthMethod.PLAIN
        assert (await client.stat()).count == 1
    assert attempts(server) == ["SCRAM-SHA-256", "PLAIN"]
    assert server.sessions[0].mechanism == "PLAIN"


async def test_a_right_password_refused_by_scram_in_cleartext_with_consent(
    mailbox: Mailbox,
) -> None:
    faults = Faults(error_at="AUTH", error="[AUTH] Authentication failed.")
    server = POP3TestServer({"mrose": mailbox}, sasl=["SCRAM-SHA-256"], faults=faults)
    async with server, client_for(server) as client:
        assert await client.login("mrose", PASSWORD, allow_cleartext=True) is AuthMethod.USER
    assert attempts(server) == ["SCRAM-SHA-256", "USER"]


# -- methods= and prefer= -------------------------------------------------------------


@pytest.mark.parametrize(
    ("methods", "expected"),
    [
        (["CRAM-MD5", "user"], ["CRAM-MD5", "USER"]),
        ([AuthMethod.SCRAM_SHA_1, "CRAM-MD5", "+APOP"], ["SCRAM-SHA-1", "CRAM-MD5"]),
        (["LOGIN", "PLAIN"], ["PLAIN"]),
        (["LOGIN"], ["LOGIN"]),
        (("APOP",), ["APOP"]),
    ],
)
async def test_methods_limits_the_choice(
    ca: trustme.CA, tls_server: POP3TestServer, methods: list[str], expected: list[str]
) -> None:
    async with tls_client_for(tls_server, ca) as client:
        with pytest.raises(aiopop.CredentialsError):
            await client.login("mrose", WRONG, methods=methods)
        assert await client.login("mrose", PASSWORD, methods=methods) == expected[0]
    assert attempts(tls_server) == [*expected, expected[0]]


async def test_methods_keeps_the_cleartext_rules(stls_server: POP3TestServer) -> None:
    async with client_for(stls_server, tls="none") as client:
        with pytest.raises(aiopop.CredentialsError) as info:
            await client.login("mrose", WRONG, methods=["PLAIN", "CRAM-MD5"])
        assert info.value.__notes__[-1] == (
            "not tried, as they would send the password in cleartext: PLAIN"
        )
        with pytest.raises(aiopop.InsecureLoginError, match="no password was sent"):
            await client.login("mrose", PASSWORD, methods=["PLAIN", "USER"])
    assert attempts(stls_server) == ["CRAM-MD5"]


@pytest.mark.parametrize(
    ("methods", "message"),
    [
        (["SCRAM-SHA-256", "NTLM"], r"unknown login method 'NTLM' \(known: SCRAM-SHA-256, "),
        ([""], "unknown login method ''"),
        ([], "methods is empty"),
        ("PLAIN", r"methods is a list of method names, such as \['PLAIN'\], not a string"),
        (["XOAUTH2"], "XOAUTH2 take an OAuth 2.0 token, not a password; nothing was sent"),
    ],
)
async def test_bad_methods_are_refused_before_anything_is_sent(
    tls_server: POP3TestServer, ca: trustme.CA, methods: list[str], message: str
) -> None:
    async with tls_client_for(tls_server, ca) as client:
        with pytest.raises(ValueError, match=message):
            await client.login("mrose", PASSWORD, methods=methods)
    assert verbs(tls_server) == [b"QUIT"]


async def test_methods_not_offered_sends_no_password(mailbox: Mailbox) -> None:
    server = POP3TestServer({"mrose": mailbox}, apop=False, sasl=["SCRAM-SHA-256", "PLAIN"])
    async with server, client_for(server) as client:
        with pytest.raises(aiopop.MethodNotOfferedError) as info:
            await client.login("mrose", PASSWORD, methods=["CRAM-MD5", "APOP"])
    assert str(info.value) == (
        "the server offers none of the login methods asked for (CRAM-MD5, APOP); it offers "
        "SCRAM-SHA-256, PLAIN, USER; no password was sent"
    )
    assert verbs(server) == [b"CAPA", b"QUIT"]


@pytest.mark.parametrize(
    ("prefer", "expected"),
    [
        (AuthMethod.PLAIN, ["PLAIN"]),
        (AuthMethod.CRAM_MD5, ["CRAM-MD5"]),
        (AuthMethod.USER, ["USER"]),
        (AuthMethod.SCRAM_SHA_256, ["SCRAM-SHA-256"]),
    ],
)
async def test_prefer_is_tried_first(
    ca: trustme.CA, tls_server: POP3TestServer, prefer: AuthMethod, expected: list[str]
) -> None:
    async with tls_client_for(tls_server, ca) as client:
        assert await client.login("mrose", PASSWORD, prefer=prefer) is prefer
    assert attempts(tls_server) == expected  # no failed attempt at all


@pytest.mark.parametrize(
    ("prefer", "expected"),
    [
        # Refused: then the method most likely to work where it did not.
        (AuthMethod.CRAM_MD5, ["CRAM-MD5", "PLAIN"]),
        (AuthMethod.APOP, ["APOP", "PLAIN"]),
        # Never a second method that sends the password.
        (AuthMethod.LOGIN, ["LOGIN", "SCRAM-SHA-256"]),
        # Not offered: as without it.
        (AuthMethod.XOAUTH2, ["SCRAM-SHA-256", "PLAIN"]),
    ],
)
async def test_a_refused_prefer_counts_as_one_of_the_two(
    ca: trustme.CA, tls_server: POP3TestServer, prefer: AuthMethod, expected: list[str]
) -> None:
    async with tls_client_for(tls_server, ca) as client:
        with pytest.raises(aiopop.CredentialsError):
            await client.login("mrose", WRONG, prefer=prefer)
    assert attempts(tls_server) == expected


async def test_prefer_follows_the_cleartext_rules_and_methods(
    stls_server: POP3TestServer,
) -> None:
    async with client_for(stls_server, tls="none") as client:
        # PLAIN would send the password in cleartext: not tried.
        with pytest.raises(aiopop.CredentialsError):
            await client.login("mrose", WRONG, prefer=AuthMethod.PLAIN)
        # Outside methods=: not tried either.
        with pytest.raises(aiopop.CredentialsError):
            await client.login("mrose", WRONG, prefer=AuthMethod.APOP, methods=["CRAM-MD5"])
        # In cleartext, a refused prefer is followed by the strongest other method.
        with pytest.raises(aiopop.CredentialsError):
            await client.login("mrose", WRONG, prefer=AuthMethod.APOP)
        assert await client.login("mrose", PASSWORD, prefer=AuthMethod.CRAM_MD5) == "CRAM-MD5"
    assert attempts(stls_server) == [
        *["SCRAM-SHA-256", "SCRAM-SHA-1"],
        "CRAM-MD5",
        *["APOP", "SCRAM-SHA-256"],
        "CRAM-MD5",
    ]


async def test_prefer_must_be_a_method(ca: trustme.CA, tls_server: POP3TestServer) -> None:
    async with tls_client_for(tls_server, ca) as client:
        with pytest.raises(ValueError, match="prefer must be an AuthMethod, not 'NTLM'"):
            await client.login("mrose", PASSWORD, prefer="NTLM")  # type: ignore[arg-type]
        # A remembered name read back as a string is accepted.
        assert await client.login("mrose", PASSWORD, prefer="PLAIN") is AuthMethod.PLAIN  # type: ignore[arg-type]
    assert attempts(tls_server) == ["PLAIN"]


async def test_a_temporary_refusal_stops_the_login(ca: trustme.CA, mailbox: Mailbox) -> None:
    mailbox.locked = True
    tls = server_context(ca)
    server = POP3TestServer({"mrose": mailbox}, ssl_context=tls, sasl=["SCRAM-SHA-256", "PLAIN"])
    async with server:
        client = aiopop.POP3_SSL(server.host, server.port, ssl_context=client_context(ca))
        async with client:
            with pytest.raises(aiopop.MailboxInUseError) as info:
                await client.login("mrose", PASSWORD)
    assert isinstance(info.value, aiopop.AuthenticationError)
    assert info.value.is_temporary
    assert [v for v in verbs(server) if v == b"AUTH"] == [b"AUTH"]  # nothing after the first


async def test_a_permanent_refusal_stops_the_login_too() -> None:
    """[SYS/PERM]: no other method can help; USER/PASS is not tried after APOP."""
    script: list[Step] = [
        Send(b"+OK ready <1.2@example.test>\r\n"),
        Expect(b"CAPA"),
        Send(b"+OK\r\nUSER\r\n.\r\n"),
        Expect(),  # APOP u <digest>
        Send(b"-ERR [SYS/PERM] this account is disabled\r\n"),
    ]
    async with ScriptedServer(script) as server:
        client = client_for(server)
        await client.connect()
        with pytest.raises(aiopop.PermanentFailureError, match="disabled") as info:
            await client.login("u", "p", allow_cleartext=True)
        await client.close()
    assert isinstance(info.value, aiopop.AuthenticationError)
    assert server.mismatches == []
    assert [line.split(b" ")[0] for line in server.received] == [b"CAPA", b"APOP"]


async def test_login_delay_error_carries_the_delay_from_capa() -> None:
    script: list[Step] = [
        Send(b"+OK ready\r\n"),
        Expect(b"CAPA"),
        Send(b"+OK\r\nUSER\r\nLOGIN-DELAY 900\r\n.\r\n"),
        Expect(b"USER u"),
        Send(b"+OK\r\n"),
        Expect(b"PASS p"),
        Send(b"-ERR [LOGIN-DELAY] wait 15 minutes between logins\r\n"),
    ]
    async with ScriptedServer(script) as server:
        client = client_for(server)
        await client.connect()
        with pytest.raises(aiopop.LoginDelayError) as info:
            await client.login("u", "p", allow_cleartext=True)
        await client.close()
    assert info.value.delay == 900
    assert isinstance(info.value, aiopop.AuthenticationError)
    assert server.mismatches == []


async def _serve_closing_after_refused_apop(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, seen: list[list[bytes]]
) -> None:
    """Like solid-pop3d: refuses APOP for a user without an APOP secret, then hangs up."""
    lines: list[bytes] = []
    seen.append(lines)
    writer.write(b"+OK solid <1.2@example.test>\r\n")
    while line := (await reader.readline()).rstrip(b"\r\n"):
        lines.append(line)
        verb = line.split(b" ")[0]
        if verb == b"CAPA":
            writer.write(b"-ERR unknown command\r\n")
        elif verb == b"APOP":
            writer.write(b"-ERR [AUTH] no APOP secret for this user\r\n")
            await writer.drain()
            await asyncio.sleep(0.2)  # solid-pop3d waits 1-3 s
            break
        elif verb == b"USER":
            writer.write(b"+OK\r\n")
        elif line == b"PASS " + PASSWORD.encode():
            writer.write(b"+OK in\r\n")
        elif verb == b"QUIT":
            writer.write(b"+OK bye\r\n")
            break
        else:
            writer.write(b"-ERR no\r\n")
    writer.close()


async def test_login_reconnects_when_the_server_closes_after_a_refusal() -> None:
    seen: list[list[bytes]] = []
    server = await asyncio.start_server(
        lambda r, w: _serve_closing_after_refused_apop(r, w, seen), "127.0.0.1", 0
    )
    port = server.sockets[0].getsockname()[1]
    async with server, aiopop.POP3("127.0.0.1", port, timeout=5) as client:
        method = await client.login("u", PASSWORD, allow_cleartext=True)
        assert method is AuthMethod.USER
    assert len(seen) == 2
    assert [line.split(b" ")[0] for line in seen[0]] == [b"CAPA", b"APOP"]
    assert seen[1] == [b"CAPA", b"USER u", b"PASS " + PASSWORD.encode(), b"QUIT"]


async def test_a_close_after_the_last_refusal_raises_the_refusal(mailbox: Mailbox) -> None:
    server = POP3TestServer({"mrose": mailbox}, close_after_failed_login=True)
    async with server, client_for(server) as client:
        with pytest.raises(aiopop.CredentialsError) as info:
            await client.login("mrose", "wrong", allow_cleartext=True)
    # APOP refused and closed; USER/PASS on a new connection refused too.
    assert info.value.command == "PASS"
    assert "Authentication failed" in info.value.response
    assert len(server.sessions) == 2
    assert verbs(server, 1) == [b"CAPA", b"USER", b"PASS"]
