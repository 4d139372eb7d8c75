"""The in-process POP3 server's SASL (RFC 5034): the mechanisms, their exchanges, refusals."""

from __future__ import annotations

import base64
import json
import ssl
from collections.abc import Callable

import pytest
import trustme

from aiopop import sasl
from aiopop.testing import Mailbox, POP3TestServer
from tests.helpers.server import Wire, sasl_exchange, sasl_mailboxes
from tests.helpers.tls import client_context, server_context

# -- SASL (RFC 5034) ----------------------------------------------------------------------

ALL_SASL = [
    "PLAIN",
    "LOGIN",
    "CRAM-MD5",
    "SCRAM-SHA-1",
    "SCRAM-SHA-256",
    "XOAUTH2",
    "OAUTHBEARER",
    "EXTERNAL",
]


@pytest.mark.parametrize(
    "make",
    [
        lambda: sasl.Plain("alice", "secret"),
        lambda: sasl.Login("alice", "secret"),
        lambda: sasl.CramMD5("alice", "secret"),
        lambda: sasl.ScramSHA1("alice", "secret"),
        lambda: sasl.ScramSHA256("alice", "secret"),
        lambda: sasl.XOAuth2("alice", "good-token"),
        lambda: sasl.OAuthBearer("alice", "good-token", host="127.0.0.1", port=110),
    ],
)
@pytest.mark.parametrize("initial_on_line", [True, False])
async def test_sasl_logins(make: Callable[[], sasl.Mechanism], initial_on_line: bool) -> None:
    mechanism = make()
    async with POP3TestServer(sasl_mailboxes(), sasl=ALL_SASL) as srv:
        wire = await Wire.pop(srv)
        reply = await sasl_exchange(wire, mechanism, initial_on_line=initial_on_line)
        assert reply.startswith(b"+OK Mailbox locked and ready")
        mechanism.verify()
        assert (await wire.cmd(b"STAT")).startswith(b"+OK 1 ")
        assert (await wire.cmd(b"AUTH PLAIN AGFsaWNlAHNlY3JldA==")).startswith(b"-ERR")
        await wire.close()
    assert srv.sessions[0].mechanism == mechanism.name


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda: sasl.Plain("alice", "wrong"), b"-ERR [AUTH] Authentication failed.\r\n"),
        (lambda: sasl.Plain("nobody", "secret"), b"-ERR [AUTH] Authentication failed.\r\n"),
        (lambda: sasl.Login("alice", "wrong"), b"-ERR [AUTH] Authentication failed.\r\n"),
        (lambda: sasl.CramMD5("alice", "wrong"), b"-ERR [AUTH] Authentication failed.\r\n"),
        (lambda: sasl.ScramSHA256("alice", "wrong"), b"-ERR [AUTH] Authentication failed.\r\n"),
        (lambda: sasl.ScramSHA1("nobody", "x"), b"-ERR [AUTH] Authentication failed.\r\n"),
        (lambda: sasl.XOAuth2("alice", "bad"), b"-ERR [AUTH] Authentication failed.\r\n"),
        (lambda: sasl.OAuthBearer("alice", "bad"), b"-ERR [AUTH] Authentication failed.\r\n"),
        (lambda: sasl.External(), b"-ERR [AUTH] No client certificate was presented\r\n"),
    ],
)
async def test_sasl_refusals(make: Callable[[], sasl.Mechanism], expected: bytes) -> None:
    mechanism = make()
    async with POP3TestServer(sasl_mailboxes(), sasl=ALL_SASL) as srv:
        wire = await Wire.pop(srv)
        assert await sasl_exchange(wire, mechanism) == expected
        assert (await wire.login()).startswith(b"+OK")  # the session goes on
        await wire.close()
    assert srv.sessions[0].mechanism == "USER"


async def test_oauth_errors_come_as_a_challenge_first() -> None:
    async with POP3TestServer(sasl_mailboxes(), sasl=["XOAUTH2", "OAUTHBEARER"]) as srv:
        wire = await Wire.pop(srv)
        token = base64.b64encode(b"user=alice\x01auth=Bearer bad\x01\x01")
        challenge = await wire.cmd(b"AUTH XOAUTH2 " + token)
        assert json.loads(base64.b64decode(challenge[2:]))["status"] == "401"
        assert await wire.cmd(b"") == b"-ERR [AUTH] Authentication failed.\r\n"
        bearer = base64.b64encode(b"n,a=alice,\x01auth=Bearer bad\x01\x01")
        challenge = await wire.cmd(b"AUTH OAUTHBEARER " + bearer)
        assert json.loads(base64.b64decode(challenge[2:]))["status"] == "invalid_token"
        # Anything but the dummy ^A is a protocol error, not a credentials problem.
        assert await wire.cmd(b"eA==") == b"-ERR Malformed response after the error\r\n"
        await wire.close()


async def test_sasl_capa_cancel_and_malformed_responses() -> None:
    async with POP3TestServer(sasl_mailboxes(), sasl=["plain", "SCRAM-SHA-256"]) as srv:
        wire = await Wire.pop(srv)
        _, capa = await wire.multi(b"CAPA")
        assert b"SASL PLAIN SCRAM-SHA-256\r\n" in capa
        _, listed = await wire.multi(b"AUTH")
        assert listed == b"PLAIN\r\nSCRAM-SHA-256\r\n"
        assert await wire.cmd(b"AUTH CRAM-MD5") == (
            b"-ERR Unsupported authentication mechanism CRAM-MD5\r\n"
        )
        assert await wire.cmd(b"AUTH PLAIN") == b"+ \r\n"  # an empty challenge
        assert await wire.cmd(b"*") == b"-ERR AUTH cancelled by the client\r\n"
        assert (
            await wire.cmd(b"AUTH PLAIN =AAA")
            == b"-ERR Malformed base64 in the initial response\r\n"
        )
        assert await wire.cmd(b"AUTH PLAIN") == b"+ \r\n"
        assert await wire.cmd(b"AAA=BBB") == b"-ERR Malformed base64 in the AUTH response\r\n"
        assert await wire.cmd(b"AUTH PLAIN =") == b"-ERR Malformed PLAIN response\r\n"
        assert (await wire.login()).startswith(b"+OK")
        await wire.close()
    assert srv.sessions[0].lines[-2:] == [b"USER alice", b"PASS secret"]


async def test_sasl_failure_can_close_the_connection() -> None:
    async with POP3TestServer(
        sasl_mailboxes(), sasl=["PLAIN"], close_after_failed_login=True
    ) as srv:
        wire = await Wire.pop(srv)
        assert await sasl_exchange(wire, sasl.Plain("alice", "wrong")) == (
            b"-ERR [AUTH] Authentication failed.\r\n"
        )
        assert await wire.at_eof()
        await wire.close()


async def test_external_uses_the_client_certificate(ca: trustme.CA) -> None:
    server_tls = server_context(ca, "127.0.0.1")
    ca.configure_trust(server_tls)
    server_tls.verify_mode = ssl.CERT_OPTIONAL
    client_tls = client_context(ca)
    ca.issue_cert("alice", common_name="alice").configure_cert(client_tls)
    async with POP3TestServer(sasl_mailboxes(), sasl=["EXTERNAL"], ssl_context=server_tls) as srv:
        wire = await Wire.pop(srv, ssl=client_tls, server_hostname="127.0.0.1")
        assert await sasl_exchange(wire, sasl.External("bob")) == (
            b"-ERR [AUTH] Authorization as another user is not permitted.\r\n"
        )
        assert (await sasl_exchange(wire, sasl.External())).startswith(b"+OK")
        await wire.close()
    assert srv.sessions[0].mechanism == "EXTERNAL"


def test_unknown_sasl_mechanisms_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown SASL"):
        POP3TestServer({}, sasl=["GSSAPI"])


# -- tokens that expire ------------------------------------------------------------------


async def test_expire_token_refuses_it_as_a_provider_does() -> None:
    mailbox = Mailbox("secret", tokens=("old-token",))
    async with POP3TestServer({"alice": mailbox}, sasl=["XOAUTH2", "OAUTHBEARER"]) as srv:
        wire = await Wire.pop(srv)
        assert (await sasl_exchange(wire, sasl.XOAuth2("alice", "old-token"))).startswith(b"+OK")
        await wire.close()
        mailbox.expire_token("old-token")
        mailbox.expire_token("never-issued")  # a no-op
        fresh = mailbox.issue_token()
        assert mailbox.tokens == (fresh,)
        for make in (sasl.XOAuth2, sasl.OAuthBearer):
            wire = await Wire.pop(srv)
            refused = await sasl_exchange(wire, make("alice", "old-token"))
            assert refused == b"-ERR [AUTH] Authentication failed.\r\n"
            assert (await sasl_exchange(wire, make("alice", fresh))).startswith(b"+OK")
            await wire.close()
    # The refusal: the AUTH line, the client's answer to the error challenge; then the
    # fresh token's AUTH line.
    assert [line.split(b" ")[0] for line in srv.sessions[1].lines] == [
        b"AUTH",
        b"",
        b"AUTH",
    ]
    assert srv.sessions[2].lines[1] == b"AQ=="  # OAUTHBEARER's dummy response


async def test_token_logins_expires_each_token_after_so_many_logins() -> None:
    mailbox = Mailbox("secret", token_logins=2)
    token = mailbox.issue_token(4500)
    assert len(token) == 4500
    assert token.isascii()
    assert token in mailbox.tokens
    async with POP3TestServer({"alice": mailbox}, sasl=["XOAUTH2"]) as srv:
        replies = []
        for _ in range(3):
            wire = await Wire.pop(srv)
            replies.append(await sasl_exchange(wire, sasl.XOAuth2("alice", token)))
            await wire.close()
    assert [reply[:4] for reply in replies] == [b"+OK ", b"+OK ", b"-ERR"]
    assert [record.mechanism for record in srv.sessions] == ["XOAUTH2", "XOAUTH2", None]
    assert mailbox.tokens == ()


@pytest.mark.parametrize("bad", [0, -1, True, 1.5])
def test_token_logins_must_be_a_positive_int(bad: object) -> None:
    with pytest.raises(ValueError, match="token_logins"):
        Mailbox("secret", token_logins=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="too short"):
        Mailbox("secret").issue_token(4)
