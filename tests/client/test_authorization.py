"""The AUTHORIZATION commands (aiopop._authorization): OAuth 2.0, auth(), stls() and the TLS
policy, CAPA and LANG, secrets, and the engine after STLS and SASL.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import ssl
from pathlib import Path

import pytest
import trustme

import aiopop
from aiopop import AuthMethod, sasl
from aiopop._types import TLS_POLICIES
from aiopop.testing import Expect, Mailbox, POP3TestServer, ScriptedServer, Send, Step
from tests.helpers.login import PASSWORD, TOKEN, WRONG, attempts, on_the_wire, tls_client_for, verbs
from tests.helpers.scripted import client_for
from tests.helpers.tls import client_context, server_context

# -- OAuth 2.0 ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("offered", "expected"),
    [
        (["PLAIN", "XOAUTH2", "OAUTHBEARER"], AuthMethod.OAUTHBEARER),
        (["PLAIN", "XOAUTH2"], AuthMethod.XOAUTH2),
    ],
)
async def test_oauth2_login(
    ca: trustme.CA, mailbox: Mailbox, offered: list[str], expected: AuthMethod
) -> None:
    tls = server_context(ca)
    async with (
        POP3TestServer({"mrose": mailbox}, ssl_context=tls, sasl=offered) as server,
        aiopop.POP3_SSL(server.host, server.port, ssl_context=client_context(ca)) as c,
    ):
        assert await c.login("mrose", oauth2_token=TOKEN) is expected
    assert server.sessions[0].mechanism == expected.value


async def test_oauth2_token_from_a_callable_and_several_kilobytes_long(
    ca: trustme.CA, mailbox: Mailbox
) -> None:
    long_token = "t" * 4000
    mailbox.tokens = (long_token,)
    calls: list[int] = []

    async def fresh_token() -> str:
        calls.append(1)
        return long_token

    tls = server_context(ca)
    async with (
        POP3TestServer({"mrose": mailbox}, ssl_context=tls, sasl=["XOAUTH2"]) as server,
        aiopop.POP3_SSL(server.host, server.port, ssl_context=client_context(ca)) as c,
    ):
        assert await c.login("mrose", oauth2_token=fresh_token) is AuthMethod.XOAUTH2
    assert calls == [1]
    lines = server.sessions[0].lines
    # Too long for the AUTH line (255 octets): sent after the server's empty challenge.
    assert lines[1] == b"AUTH XOAUTH2"
    assert base64.b64decode(lines[2]) == f"user=mrose\x01auth=Bearer {long_token}\x01\x01".encode()


async def test_a_refused_token_says_why_and_never_falls_back_to_a_password(
    ca: trustme.CA, mailbox: Mailbox, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="aiopop")
    tls = server_context(ca)
    offered = ["PLAIN", "SCRAM-SHA-256", "OAUTHBEARER"]
    async with (
        POP3TestServer({"mrose": mailbox}, ssl_context=tls, sasl=offered) as server,
        aiopop.POP3_SSL(server.host, server.port, ssl_context=client_context(ca)) as c,
    ):
        with pytest.raises(aiopop.CredentialsError) as info:
            await c.login("mrose", oauth2_token="expired-token")
    assert verbs(server) == [b"CAPA", b"AUTH", b"AQ==", b"QUIT"]  # AQ== is the dummy %x01
    assert any('"status"' in note for note in info.value.__notes__)
    assert "expired-token" not in caplog.text
    assert "expired-token" not in str(info.value)
    assert "expired-token" not in repr(info.value)


async def test_oauth2_needs_an_offered_mechanism_and_tls(mailbox: Mailbox) -> None:
    server = POP3TestServer({"mrose": mailbox}, sasl=["PLAIN", "XOAUTH2"])
    async with server, client_for(server) as client:
        with pytest.raises(aiopop.InsecureLoginError, match=r"OAuth 2\.0 token"):
            await client.login("mrose", oauth2_token=TOKEN)
        with pytest.raises(ValueError, match="password or an oauth2_token"):
            await client.login("mrose", PASSWORD, oauth2_token=TOKEN)
    server = POP3TestServer({"mrose": mailbox}, sasl=["PLAIN"])
    async with server, client_for(server) as client:
        with pytest.raises(aiopop.MethodNotOfferedError, match=r"SASL: PLAIN\); no token was sent"):
            await client.login("mrose", oauth2_token=TOKEN, allow_cleartext=True)
    assert verbs(server) == [b"CAPA", b"QUIT"]


async def test_oauth2_with_allow_cleartext_sends_the_token_in_the_clear(
    mailbox: Mailbox,
) -> None:
    server = POP3TestServer({"mrose": mailbox}, sasl=["XOAUTH2"])
    async with server, client_for(server) as client:
        assert not client.is_tls
        method = await client.login("mrose", oauth2_token=TOKEN, allow_cleartext=True)
        assert method is AuthMethod.XOAUTH2
        assert client.state is aiopop.State.TRANSACTION
    assert server.sessions[0].mechanism == "XOAUTH2"
    assert on_the_wire(server, TOKEN)


async def test_oauth2_methods_and_prefer(ca: trustme.CA, mailbox: Mailbox) -> None:
    tls = server_context(ca)
    offered = ["PLAIN", "XOAUTH2", "OAUTHBEARER"]
    async with POP3TestServer({"mrose": mailbox}, ssl_context=tls, sasl=offered) as server:
        async with tls_client_for(server, ca) as client:
            method = await client.login("mrose", oauth2_token=TOKEN, prefer=AuthMethod.XOAUTH2)
            assert method is AuthMethod.XOAUTH2
        async with tls_client_for(server, ca) as client:
            method = await client.login("mrose", oauth2_token=TOKEN, methods=["xoauth2", "PLAIN"])
            assert method is AuthMethod.XOAUTH2
        async with tls_client_for(server, ca) as client:
            with pytest.raises(ValueError, match=r"PLAIN take a password, not an OAuth 2\.0 token"):
                await client.login("mrose", oauth2_token=TOKEN, methods=["PLAIN"])
    assert [record.mechanism for record in server.sessions] == ["XOAUTH2", "XOAUTH2", None]
    assert verbs(server, 2) == [b"QUIT"]
    server = POP3TestServer({"mrose": mailbox}, ssl_context=tls, sasl=["XOAUTH2"])
    async with server, tls_client_for(server, ca) as client:
        with pytest.raises(aiopop.MethodNotOfferedError, match="of those asked for"):
            await client.login("mrose", oauth2_token=TOKEN, methods=["OAUTHBEARER"])
    assert verbs(server) == [b"CAPA", b"QUIT"]


# -- auth() ---------------------------------------------------------------------------


async def test_auth_sends_the_initial_response_on_the_auth_line(mailbox: Mailbox) -> None:
    async with (
        POP3TestServer({"mrose": mailbox}, sasl=["PLAIN"]) as server,
        client_for(server) as client,
    ):
        assert (await client.auth(sasl.Plain("mrose", PASSWORD))).startswith(b"+OK")
        assert client.state is aiopop.State.TRANSACTION
    encoded = base64.b64encode(f"\0mrose\0{PASSWORD}".encode())
    assert server.sessions[0].lines[0] == b"AUTH PLAIN " + encoded


async def test_auth_without_an_initial_response_answers_challenges(mailbox: Mailbox) -> None:
    async with POP3TestServer({"mrose": mailbox}, sasl=["LOGIN", "CRAM-MD5"]) as server:
        async with client_for(server) as client:
            await client.auth(sasl.CramMD5("mrose", PASSWORD))
        async with client_for(server) as client:
            await client.auth(sasl.Login("mrose", PASSWORD))
    assert server.sessions[0].lines[0] == b"AUTH CRAM-MD5"
    assert server.sessions[1].lines[:3] == [
        b"AUTH LOGIN",
        base64.b64encode(b"mrose"),
        base64.b64encode(PASSWORD.encode()),
    ]
    assert [s.mechanism for s in server.sessions] == ["CRAM-MD5", "LOGIN"]


async def test_an_empty_initial_response_is_sent_as_equals_sign() -> None:
    script: list[Step] = [
        Send(b"+OK ready\r\n"),
        Expect(b"AUTH EXTERNAL ="),
        Send(b"+OK welcome\r\n"),
    ]
    async with ScriptedServer(script) as server:
        client = client_for(server)
        await client.connect()
        assert await client.auth(sasl.External()) == b"+OK welcome"
        await client.close()
    assert server.mismatches == []


async def test_a_refused_auth_is_typed_by_its_code(mailbox: Mailbox) -> None:
    async with (
        POP3TestServer({"mrose": mailbox}, sasl=["SCRAM-SHA-1"]) as server,
        client_for(server) as client,
    ):
        with pytest.raises(aiopop.CredentialsError) as info:
            await client.auth(sasl.ScramSHA1("mrose", "wrong"))
        assert info.value.command == "AUTH"
        assert client.state is aiopop.State.AUTHORIZATION
        await client.auth(sasl.ScramSHA1("mrose", PASSWORD))  # the session goes on


class _Unnamed(sasl.Mechanism):
    name = "TWO WORDS"


async def test_auth_refuses_a_bad_mechanism_name_before_sending(mailbox: Mailbox) -> None:
    async with POP3TestServer({"mrose": mailbox}) as server, client_for(server) as client:
        with pytest.raises(ValueError, match="invalid SASL mechanism name"):
            await client.auth(_Unnamed())
    assert verbs(server) == [b"QUIT"]


# -- stls() and the policy ------------------------------------------------------------


async def test_stls_upgrades_and_asks_capa_again(
    ca: trustme.CA, stls_server: POP3TestServer
) -> None:
    async with client_for(stls_server) as client:
        assert (await client.capabilities()).stls
        assert (await client.stls(client_context(ca))).startswith(b"+OK")
        assert client.is_tls
        caps = await client.capabilities()
        assert not caps.stls
        with pytest.raises(aiopop.CommandStateError, match="already encrypted"):
            await client.stls(client_context(ca))
    assert verbs(stls_server) == [b"CAPA", b"STLS", b"CAPA", b"QUIT"]


async def test_stls_verifies_the_certificate_by_default(stls_server: POP3TestServer) -> None:
    client = client_for(stls_server)
    await client.connect()
    with pytest.raises(ssl.SSLCertVerificationError):
        await client.stls()
    assert not client.is_connected
    await client.close()
    assert verbs(stls_server) == [b"STLS"]


async def test_starttls_required_upgrades_on_connect(
    ca: trustme.CA, stls_server: POP3TestServer
) -> None:
    client = client_for(stls_server, tls="starttls", ssl_context=client_context(ca))
    async with client:
        assert client.is_tls
        assert await client.login("mrose", PASSWORD) is AuthMethod.SCRAM_SHA_256
    assert verbs(stls_server)[:3] == [b"CAPA", b"STLS", b"CAPA"]


async def test_starttls_required_without_stls_sends_nothing_else(mailbox: Mailbox) -> None:
    async with POP3TestServer({"mrose": mailbox}, sasl=["PLAIN"]) as server:
        client = client_for(server, tls="starttls")
        with pytest.raises(aiopop.TLSRequiredError, match=r"^TLS is required, but the server "):
            await client.connect()
        assert not client.is_connected
        await asyncio.sleep(0.05)
    assert verbs(server) == [b"CAPA"]


def test_starttls_policy_is_checked() -> None:
    with pytest.raises(ValueError, match="starttls must be one of"):
        aiopop.POP3("127.0.0.1", starttls="sometimes")  # type: ignore[arg-type]


def test_tls_policy_is_checked() -> None:
    with pytest.raises(ValueError, match="tls must be one of"):
        aiopop.POP3("127.0.0.1", tls="sometimes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="use POP3_SSL"):
        aiopop.POP3("127.0.0.1", tls="implicit")


def test_tls_words() -> None:
    assert aiopop.POP3("127.0.0.1").tls == "if-offered"
    for word in ("starttls", "if-offered", "none"):
        assert aiopop.POP3("127.0.0.1", tls=word).tls == word
    assert aiopop.POP3_SSL("127.0.0.1").tls == "implicit"
    assert {"implicit", "starttls", "if-offered", "none"} == TLS_POLICIES


@pytest.mark.parametrize(
    ("old", "new"), [("required", "starttls"), ("if-offered", "if-offered"), ("never", "none")]
)
def test_the_deprecated_starttls_keyword_warns_and_maps(old: str, new: str) -> None:
    with pytest.warns(DeprecationWarning, match=f"use tls={new!r}"):
        client = aiopop.POP3("127.0.0.1", starttls=old)  # type: ignore[arg-type]
    assert client.tls == new


def test_tls_and_starttls_together_are_refused() -> None:
    with pytest.raises(TypeError, match="not both"):
        aiopop.POP3("127.0.0.1", tls="starttls", starttls="required")
    with pytest.raises(TypeError, match="not both"):
        aiopop.POP3("127.0.0.1", tls="if-offered", starttls="if-offered")


def test_pop3_ssl_takes_no_tls_policy() -> None:
    for name in ("tls", "starttls"):
        with pytest.raises(TypeError, match="implicit"):
            aiopop.POP3_SSL("127.0.0.1", **{name: "none"})  # type: ignore[arg-type]


# -- capabilities, LANG -----------------------------------------------------------------


async def test_capabilities_are_asked_again_after_login(mailbox: Mailbox) -> None:
    server = POP3TestServer({"mrose": mailbox}, sasl=["SCRAM-SHA-256"])
    async with server, client_for(server) as client:
        before = await client.capabilities()
        assert await client.capabilities() is before  # remembered
        await client.login("mrose", PASSWORD)
        after = await client.capabilities()
        assert after is not before
    assert [v for v in verbs(server) if v == b"CAPA"] == [b"CAPA", b"CAPA"]


async def test_odd_capa_lines_are_tolerated() -> None:
    script: list[Step] = [
        Send(b"+OK ready\r\n"),
        Expect(b"CAPA"),
        Send(
            b"+OK here\r\n  sasl   plain  scram-sha-256 \r\n\r\nX-VENDOR-THING a b\r\n"
            b"top\r\nLOGIN-DELAY soon\r\nexpire 31 USER\r\n.\r\n"
        ),
    ]
    async with ScriptedServer(script) as server:
        client = client_for(server)
        await client.connect()
        caps = await client.capa()
        await client.close()
    assert caps.sasl == ("PLAIN", "SCRAM-SHA-256")
    assert caps.top
    assert caps["X-VENDOR-THING"] == ["a", "b"]
    assert caps.login_delay is None  # unreadable, so unknown
    assert caps.expire == aiopop.Expire(31, per_user=True)


async def test_lang_lists_and_chooses() -> None:
    script: list[Step] = [
        Send(b"+OK ready\r\n"),
        Expect(b"LANG"),
        Send(b"+OK languages\r\nen English\r\nde Deutsch\r\ni-default Default\r\n.\r\n"),
        Expect(b"LANG de"),
        Send(b"+OK de Sprache gewechselt\r\n"),
        Expect(b"LANG xx"),
        Send(b"-ERR invalid language xx\r\n"),
    ]
    async with ScriptedServer(script) as server:
        client = client_for(server)
        await client.connect()
        assert await client.lang() == [
            ("en", "English"),
            ("de", "Deutsch"),
            ("i-default", "Default"),
        ]
        assert await client.lang("de") == b"+OK de Sprache gewechselt"
        with pytest.raises(aiopop.ResponseError, match="invalid language"):
            await client.lang("xx")
        await client.close()
    assert server.mismatches == []


# -- secrets ----------------------------------------------------------------------------


async def test_no_secret_in_logs_or_reprs(
    ca: trustme.CA, stls_server: POP3TestServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="aiopop")
    client = client_for(stls_server, ssl_context=client_context(ca))
    async with client:
        await client.login("mrose", PASSWORD)
        text = repr(client)
    for mechanism in (
        sasl.Plain("u", PASSWORD),
        sasl.ScramSHA256("u", PASSWORD),
        sasl.XOAuth2("u", TOKEN),
        sasl.OAuthBearer("u", TOKEN),
    ):
        text += repr(mechanism)
    assert PASSWORD not in text
    assert TOKEN not in text
    assert PASSWORD not in caplog.text
    assert any(m.startswith("C: AUTH SCRAM-SHA-256 <redacted>") for m in caplog.messages)
    assert "C: <SASL response>" in caplog.messages


# -- the engine keeps working after STLS and SASL -------------------------------------------


async def test_pipelining_and_streaming_after_stls_and_scram(
    ca: trustme.CA, tmp_path: Path
) -> None:
    messages = [b"Subject: %d\r\n\r\n" % n + b".dotted line\r\n" * 2000 for n in range(1, 21)]
    box = Mailbox(PASSWORD, list(messages))
    server = POP3TestServer(
        {"mrose": box}, starttls_context=server_context(ca), sasl=["SCRAM-SHA-256"]
    )
    async with server, client_for(server, ssl_context=client_context(ca)) as client:
        assert await client.login("mrose", PASSWORD) is AuthMethod.SCRAM_SHA_256
        got = await asyncio.gather(*(client.retr(n) for n in range(1, 21)))
        assert got == messages
        async with client.retr_stream(3) as stream:
            assert b"".join([chunk async for chunk in stream]) == messages[2]
        assert await client.retr_to_file(4, tmp_path / "4.eml") == len(messages[3])
        assert (tmp_path / "4.eml").read_bytes() == messages[3]
    record = server.sessions[0]
    assert record.tls
    # CAPA after login taught the engine it may pipeline: RETRs went out together.
    assert len([line for line in record.pipelined if line.startswith(b"RETR")]) >= 10


async def test_commands_queued_during_stls_go_out_encrypted(
    ca: trustme.CA, stls_server: POP3TestServer
) -> None:
    async with client_for(stls_server) as client:
        status, caps = await asyncio.gather(client.stls(client_context(ca)), client.capa())
        assert status.startswith(b"+OK")
        assert not caps.stls  # asked over TLS
    record = stls_server.sessions[0]
    assert record.discarded_before_tls == b""  # nothing was sent between +OK and the handshake
    assert record.lines[:3] == [b"STLS", b"CAPA", b"CAPA"]


async def test_external_with_a_client_certificate(ca: trustme.CA, mailbox: Mailbox) -> None:
    tls = server_context(ca)
    tls.verify_mode = ssl.CERT_REQUIRED
    ca.configure_trust(tls)
    client_tls = client_context(ca)
    ca.issue_cert("mrose", common_name="mrose").configure_cert(client_tls)
    async with (
        POP3TestServer({"mrose": mailbox}, ssl_context=tls, sasl=["EXTERNAL"]) as server,
        aiopop.POP3_SSL(server.host, server.port, ssl_context=client_tls) as client,
    ):
        assert (await client.auth(sasl.External())).startswith(b"+OK")
        assert (await client.stat()).count == 1
    assert server.sessions[0].mechanism == "EXTERNAL"
    assert server.sessions[0].lines[0] == b"AUTH EXTERNAL ="


async def test_an_early_stop_keeps_the_history(
    mailbox: Mailbox, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="aiopop")
    mailbox.locked = True
    server = POP3TestServer({"mrose": mailbox}, apop_accepted=False)
    async with server, client_for(server) as client:
        with pytest.raises(aiopop.MailboxInUseError) as info:
            await client.login("mrose", PASSWORD, allow_cleartext=True)
    assert info.value.__notes__ == ["before it: APOP refused: Unknown command"]
    assert "APOP refused (APOP: -ERR Unknown command); trying the next method" in caplog.messages


async def test_the_debug_log_says_when_no_method_is_left(
    mailbox: Mailbox, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="aiopop")
    async with POP3TestServer({"mrose": mailbox}) as server, client_for(server) as client:
        with pytest.raises(aiopop.CredentialsError):
            await client.login("mrose", "wrong")
    refused = [m for m in caplog.messages if m.startswith("APOP refused")]
    assert refused == ["APOP refused (APOP: -ERR [AUTH] Authentication failed.); no method left"]


async def test_a_token_with_a_line_break_is_refused_before_anything_is_sent(
    mailbox: Mailbox,
) -> None:
    async with POP3TestServer({"mrose": mailbox}, sasl=["XOAUTH2"]) as server:
        client = client_for(server)
        await client.connect()
        with pytest.raises(ValueError, match="control character in the token; nothing was sent"):
            await client.login("mrose", oauth2_token="tok\r\nDELE 1", allow_cleartext=True)
        await client.close()
    assert server.sessions[0].lines == []


async def test_pop3_ssl_with_its_context_set_to_none_still_verifies(
    ca: trustme.CA, mailbox: Mailbox
) -> None:
    async with POP3TestServer({"mrose": mailbox}, ssl_context=server_context(ca)) as server:
        client = aiopop.POP3_SSL(server.host, server.port)
        client.ssl_context = None  # a public attribute: verification stays on
        with pytest.raises(ssl.SSLCertVerificationError):
            await client.connect()
        await client.close()
    assert all(record.lines == [] for record in server.sessions)


async def test_the_reconnect_after_a_refusal_keeps_the_tls_policy(
    ca: trustme.CA, mailbox: Mailbox
) -> None:
    server = POP3TestServer(
        {"mrose": mailbox}, starttls_context=server_context(ca), close_after_failed_login=True
    )
    async with server:
        client = client_for(server, tls="none", ssl_context=client_context(ca))
        async with client:
            with pytest.raises(aiopop.CredentialsError):
                await client.login("mrose", "wrong", allow_cleartext=True)
    assert len(server.sessions) == 2
    # "none" holds on the new connection too: no STLS, on either.
    assert b"STLS" not in verbs(server, 0)
    assert verbs(server, 1) == [b"USER", b"PASS"]


async def test_oauth2_keeps_the_tls_policy_and_checks_the_user(
    ca: trustme.CA, mailbox: Mailbox
) -> None:
    server = POP3TestServer(
        {"mrose": mailbox}, starttls_context=server_context(ca), sasl=["XOAUTH2"]
    )
    async with server:
        client = client_for(server, tls="none", ssl_context=client_context(ca))
        async with client:
            with pytest.raises(aiopop.InsecureLoginError, match="no token was sent"):
                await client.login("mrose", oauth2_token=TOKEN)
            with pytest.raises(ValueError, match="control character in the user"):
                await client.login("mrose\r\nDELE 1", oauth2_token=TOKEN)
    assert verbs(server) == [b"CAPA", b"QUIT"]  # no STLS, no AUTH


async def test_oauthbearer_names_the_host_and_port(ca: trustme.CA, mailbox: Mailbox) -> None:
    tls = server_context(ca)
    async with (
        POP3TestServer({"mrose": mailbox}, ssl_context=tls, sasl=["OAUTHBEARER"]) as server,
        aiopop.POP3_SSL(server.host, server.port, ssl_context=client_context(ca)) as client,
    ):
        assert await client.login("mrose", oauth2_token=TOKEN) is AuthMethod.OAUTHBEARER
    verb, name, encoded = server.sessions[0].lines[1].split(b" ")
    assert (verb, name) == (b"AUTH", b"OAUTHBEARER")
    fields = base64.b64decode(encoded).split(b"\x01")
    assert fields[:3] == [
        b"n,a=mrose,",
        f"host={server.host}".encode(),
        f"port={server.port}".encode(),
    ]


# -- pinned by mutation testing ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("offered", "apop", "held_back", "auth"),
    [
        (["SCRAM-SHA-256"], True, "APOP", "+APOP"),
        (["SCRAM-SHA-256", "PLAIN"], False, "USER", "+USER"),
    ],
)
async def test_the_pin_hint_names_apop_and_user_as_an_account_spells_them(
    mailbox: Mailbox, offered: list[str], apop: bool, held_back: str, auth: str
) -> None:
    server = POP3TestServer({"mrose": mailbox}, sasl=offered, apop=apop)
    async with server, client_for(server) as client:
        with pytest.raises(aiopop.CredentialsError) as info:
            await client.login("mrose", WRONG, allow_cleartext=True)
    assert held_back not in attempts(server)
    assert info.value.__notes__[-1] == (
        f"to try another method, pin it: login(..., methods=[{held_back!r}]) "
        f"or Account(auth={auth!r})"
    )


async def test_oauth2_refusals_say_what_is_missing_in_these_words(mailbox: Mailbox) -> None:
    server = POP3TestServer({"mrose": mailbox}, sasl=["PLAIN", "XOAUTH2"])
    async with server, client_for(server) as client:
        with pytest.raises(ValueError, match="take a password") as wrong_methods:
            await client.login("mrose", oauth2_token=TOKEN, methods=["USER", "plain"])
        with pytest.raises(aiopop.InsecureLoginError) as cleartext:
            await client.login("mrose", oauth2_token=TOKEN)
        with pytest.raises(aiopop.MethodNotOfferedError) as not_asked:
            await client.login(
                "mrose", oauth2_token=TOKEN, methods=["OAUTHBEARER"], allow_cleartext=True
            )
    assert str(wrong_methods.value) == (
        "PLAIN, USER take a password, not an OAuth 2.0 token; nothing was sent"
    )
    assert str(cleartext.value) == (
        "an OAuth 2.0 token would be sent in cleartext; no token was sent. Use POP3_SSL "
        "or a server that offers STLS, or pass allow_cleartext=True"
    )
    assert str(not_asked.value) == (
        "the server offers no OAuth 2.0 mechanism of those asked for (SASL: PLAIN XOAUTH2);"
        " no token was sent"
    )
    server = POP3TestServer({"mrose": mailbox}, sasl=[])
    async with server, client_for(server) as client:
        with pytest.raises(aiopop.MethodNotOfferedError) as none_offered:
            await client.login("mrose", oauth2_token=TOKEN, allow_cleartext=True)
    assert str(none_offered.value) == (
        "the server offers no OAuth 2.0 mechanism (SASL: none); no token was sent"
    )
    assert verbs(server) == [b"CAPA", b"QUIT"]


async def test_oauth2_against_a_server_without_capa_tries_xoauth2_only() -> None:
    """No CAPA: nothing is known of SASL, and XOAUTH2 is the one providers ran before
    RFC 7628; OAUTHBEARER is tried only when announced."""
    script: list[Step] = [
        Send(b"+OK ready\r\n"),
        Expect(b"CAPA"),
        Send(b"-ERR unknown command\r\n"),
        Expect(None),
        Send(b"+OK logged in\r\n"),
        Expect(b"QUIT"),
        Send(b"+OK\r\n"),
    ]
    async with ScriptedServer(script) as server, client_for(server, timeout=5) as client:
        method = await client.login("mrose", oauth2_token=TOKEN, allow_cleartext=True)
    assert method is AuthMethod.XOAUTH2
    assert server.received[1].startswith(b"AUTH XOAUTH2 ")
    assert server.mismatches == []


async def test_a_refused_tokens_error_is_noted_decoded_leniently_and_cut_at_500() -> None:
    """The provider's error: bytes that are not UTF-8 are replaced, and at most 500
    characters of it reach the note."""
    error = b'{"status":"invalid_token","detail":"caf\xe9 ' + b"x" * 600 + b'"}'
    script: list[Step] = [
        Send(b"+OK ready\r\n"),
        Expect(b"CAPA"),
        Send(b"+OK\r\nSASL XOAUTH2\r\n.\r\n"),
        Expect(None),
        Send(b"+ " + base64.b64encode(error) + b"\r\n"),
        Expect(None),
        Send(b"-ERR [AUTH] invalid credentials\r\n"),
        Expect(b"QUIT"),
        Send(b"+OK\r\n"),
    ]
    async with ScriptedServer(script) as server, client_for(server, timeout=5) as client:
        with pytest.raises(aiopop.AuthenticationError) as info:
            await client.login("mrose", oauth2_token=TOKEN, allow_cleartext=True)
    expected = error.decode("utf-8", "replace")[:500]
    assert "\ufffd" in expected
    assert info.value.__notes__ == [f"XOAUTH2 error from the server: {expected}"]
