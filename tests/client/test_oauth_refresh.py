"""OAuth 2.0 tokens that expire: one refresh after ``[AUTH]``, and long tokens on the wire.

Each test runs the client against POP3TestServer, whose mailboxes expire
tokens as providers do (Mailbox.expire_token, token_logins, issue_token),
and reads what reached the server in its session records.
"""

from __future__ import annotations

import base64
import functools
import logging
import sys
from typing import Any

import pytest
import trustme

import aiopop
from aiopop import Account, AuthMethod, secret_from_command
from aiopop._login import _takes_refused
from aiopop.testing import Expect, Mailbox, POP3TestServer, ScriptedServer, Send, Step
from tests.helpers.login import MESSAGE, PASSWORD, attempts, tls_client_for
from tests.helpers.scripted import client_for
from tests.helpers.tls import client_context, server_context

OAUTH = [AuthMethod.XOAUTH2, AuthMethod.OAUTHBEARER]


def oauth_server(ca: trustme.CA, mailbox: Mailbox, **options: Any) -> POP3TestServer:
    """An implicit-TLS server offering XOAUTH2 and OAUTHBEARER for "mrose"."""
    return POP3TestServer(
        {"mrose": mailbox},
        ssl_context=server_context(ca),
        sasl=["XOAUTH2", "OAUTHBEARER"],
        **options,
    )


def tokens_sent(server: POP3TestServer, index: int) -> list[str]:
    """The bearer token of each AUTH exchange in session ``index``, in order."""
    found: list[str] = []
    lines = server.sessions[index].lines
    for number, line in enumerate(lines):
        words = line.split(b" ")
        if words[0] != b"AUTH":
            continue
        # The initial response: on the AUTH line, else the next line (after "+ ").
        encoded = words[2] if len(words) > 2 else lines[number + 1]
        message = base64.b64decode(encoded).decode()
        found.append(message.split("auth=Bearer ", 1)[1].split("\x01", 1)[0])
    return found


class CachingProvider:
    """A token source as MSAL's cache behaves: the same token until told it was refused."""

    def __init__(self, mailbox: Mailbox) -> None:
        self.mailbox = mailbox
        self.cached = mailbox.issue_token()
        self.calls: list[str | None] = []

    async def __call__(self, *, refused: str | None = None) -> str:
        self.calls.append(refused)
        if refused is not None and refused == self.cached:
            self.cached = self.mailbox.issue_token()
        return self.cached


@pytest.mark.parametrize("method", OAUTH)
async def test_an_expired_token_is_refreshed_once_and_the_source_told_which(
    ca: trustme.CA, method: AuthMethod, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="aiopop")
    mailbox = Mailbox(PASSWORD, [MESSAGE])
    provider = CachingProvider(mailbox)
    first = provider.cached
    async with oauth_server(ca, mailbox) as server:
        async with tls_client_for(server, ca) as client:
            assert await client.login("mrose", oauth2_token=provider, methods=[method]) is method
        mailbox.expire_token(first)  # the hour is over
        async with tls_client_for(server, ca) as client:
            assert await client.login("mrose", oauth2_token=provider, methods=[method]) is method
            assert await client.stat() == (1, len(MESSAGE))
    assert provider.calls == [None, None, first]
    fresh = provider.cached
    assert fresh != first
    assert tokens_sent(server, 0) == [first]
    assert tokens_sent(server, 1) == [first, fresh]
    answer = b"" if method is AuthMethod.XOAUTH2 else b"AQ=="  # to the error challenge
    verbs = [line.split(b" ")[0] for line in server.sessions[1].lines]
    assert verbs[:4] == [b"CAPA", b"AUTH", answer, b"AUTH"]
    assert server.sessions[1].mechanism == method.value
    assert "the token was refused; asking its source for a fresh one" in caplog.text
    assert first not in caplog.text
    assert fresh not in caplog.text


async def test_a_source_without_refused_is_called_again(ca: trustme.CA) -> None:
    mailbox = Mailbox(PASSWORD, [MESSAGE], token_logins=1)
    calls: list[int] = []

    async def token() -> str:  # today's kind: knows nothing of refusals
        calls.append(1)
        return mailbox.issue_token() if len(calls) > 1 else "expired-an-hour-ago"

    async with oauth_server(ca, mailbox) as server, tls_client_for(server, ca) as client:
        assert await client.login("mrose", oauth2_token=token) is AuthMethod.OAUTHBEARER
    assert len(calls) == 2
    assert attempts(server) == ["OAUTHBEARER", "OAUTHBEARER"]
    assert mailbox.tokens == ()  # token_logins=1: the fresh token's one login is spent


async def test_a_source_that_gives_the_refused_token_again_is_not_retried(
    ca: trustme.CA,
) -> None:
    mailbox = Mailbox(PASSWORD, [MESSAGE])
    calls: list[int] = []

    async def stale() -> str:
        calls.append(1)
        return "cached-and-expired"

    async with oauth_server(ca, mailbox) as server, tls_client_for(server, ca) as client:
        with pytest.raises(aiopop.CredentialsError) as info:
            await client.login("mrose", oauth2_token=stale)
    assert len(calls) == 2
    assert attempts(server) == ["OAUTHBEARER"]  # the same token is never sent twice
    notes = "\n".join(info.value.__notes__)
    assert "gave the refused token again" in notes
    assert "refused" in notes
    assert "cached-and-expired" not in notes + str(info.value)


async def test_a_fresh_token_also_refused_ends_the_login_after_two_attempts(
    ca: trustme.CA,
) -> None:
    mailbox = Mailbox(PASSWORD, [MESSAGE])  # accepts no token at all (a missing scope)
    calls: list[str | None] = []

    async def token(*, refused: str | None = None) -> str:
        calls.append(refused)
        return f"token-{len(calls)}"

    async with oauth_server(ca, mailbox) as server, tls_client_for(server, ca) as client:
        with pytest.raises(aiopop.CredentialsError) as info:
            await client.login("mrose", oauth2_token=token)
    assert calls == [None, "token-1"]
    assert attempts(server) == ["OAUTHBEARER", "OAUTHBEARER"]  # never a third
    assert tokens_sent(server, 0) == ["token-1", "token-2"]
    assert info.value.has_code("AUTH")
    notes = info.value.__notes__
    assert any("a fresh token from the token source was also refused" in n for n in notes)
    assert not any("token-" in n for n in notes)


async def test_a_source_that_fails_to_refresh_says_after_what(ca: trustme.CA) -> None:
    mailbox = Mailbox(PASSWORD, [MESSAGE])
    calls: list[str | None] = []

    async def token(*, refused: str | None = None) -> str:
        calls.append(refused)
        if refused is not None:
            raise RuntimeError("invalid_grant: the refresh token has expired")
        return "expired"

    async with oauth_server(ca, mailbox) as server, tls_client_for(server, ca) as client:
        with pytest.raises(RuntimeError, match="invalid_grant") as info:
            await client.login("mrose", oauth2_token=token)
    assert calls == [None, "expired"]
    assert attempts(server) == ["OAUTHBEARER"]
    (note,) = info.value.__notes__
    assert note.startswith("the token source failed when asked for a fresh token after: AUTH")
    assert "[AUTH]" in note
    assert "expired" not in note  # the token is not in it


async def test_only_auth_refusals_ask_for_a_fresh_token(ca: trustme.CA) -> None:
    mailbox = Mailbox(PASSWORD, [MESSAGE], locked=True)
    provider = CachingProvider(mailbox)
    async with oauth_server(ca, mailbox) as server, tls_client_for(server, ca) as client:
        with pytest.raises(aiopop.MailboxInUseError):
            await client.login("mrose", oauth2_token=provider)
    assert provider.calls == [None]
    assert attempts(server) == ["OAUTHBEARER"]


async def test_a_token_string_is_never_retried(ca: trustme.CA) -> None:
    mailbox = Mailbox(PASSWORD, [MESSAGE])
    async with oauth_server(ca, mailbox) as server, tls_client_for(server, ca) as client:
        with pytest.raises(aiopop.CredentialsError):
            await client.login("mrose", oauth2_token="expired")
    assert attempts(server) == ["OAUTHBEARER"]


async def test_the_retry_reconnects_when_the_server_hung_up_after_the_refusal(
    ca: trustme.CA,
) -> None:
    mailbox = Mailbox(PASSWORD, [MESSAGE])
    provider = CachingProvider(mailbox)
    first = provider.cached
    mailbox.expire_token(first)
    server = oauth_server(ca, mailbox, close_after_failed_login=True)
    async with server, tls_client_for(server, ca) as client:
        assert await client.login("mrose", oauth2_token=provider) is AuthMethod.OAUTHBEARER
        assert client.is_tls
    assert len(server.sessions) == 2
    assert tokens_sent(server, 0) == [first]
    assert tokens_sent(server, 1) == [provider.cached]
    assert server.sessions[1].mechanism == "OAUTHBEARER"


async def test_a_password_login_still_makes_at_most_two_attempts(ca: trustme.CA) -> None:
    mailbox = Mailbox(PASSWORD, [MESSAGE])
    server = POP3TestServer(
        {"mrose": mailbox}, ssl_context=server_context(ca), sasl=["SCRAM-SHA-256", "PLAIN"]
    )
    async with server, tls_client_for(server, ca) as client:
        with pytest.raises(aiopop.CredentialsError):
            await client.login("mrose", "wrong-password")
    assert attempts(server) == ["SCRAM-SHA-256", "PLAIN"]


# -- the token command ------------------------------------------------------------------

TOKEN_COMMAND = (
    "import os, sys\n"
    "flag = os.environ.get('AIOPOP_REFUSED_TOKEN')\n"
    "assert not any('stale' in arg for arg in sys.argv)\n"
    "print('fresh-token' if flag == '1' else 'stale-token')\n"
)


async def test_a_token_command_runs_again_told_by_its_environment(ca: trustme.CA) -> None:
    mailbox = Mailbox(PASSWORD, [MESSAGE], tokens=("fresh-token",))
    command = secret_from_command([sys.executable, "-c", TOKEN_COMMAND])
    assert await command() == "stale-token"
    assert await command(refused="stale-token") == "fresh-token"
    async with oauth_server(ca, mailbox) as server:
        account = Account(
            server.host,
            "mrose",
            port=server.port,
            auth="XOAUTH2",
            oauth2_token=command,
            ssl_context=client_context(ca),
        )
        async with account.session() as client:
            assert await client.stat() == (1, len(MESSAGE))
    assert tokens_sent(server, 0) == ["stale-token", "fresh-token"]


# -- which callables are told -------------------------------------------------------------


async def _plain() -> str:
    return "t"


async def _keyword(*, refused: str | None = None) -> str:
    return "t"


async def _positional(refused: str | None = None) -> str:
    return "t"


async def _anything(**options: str) -> str:
    return "t"


async def _other(user: str = "", refused_at: str = "") -> str:
    return "t"


@pytest.mark.parametrize(
    ("source", "told"),
    [
        (_plain, False),
        (_keyword, True),
        (_positional, True),
        (_anything, False),  # **kwargs may forward to a callable that takes none
        (_other, False),
        (functools.partial(_keyword), True),
        (CachingProvider(Mailbox(PASSWORD)), True),
        (len, False),  # no refused parameter (and not async, but not called here)
    ],
)
def test_the_refused_keyword_is_read_from_the_signature(source: Any, told: bool) -> None:
    assert _takes_refused(source) is told


# -- long tokens on the wire (RFC 5034's 255 octets) ------------------------------------


@pytest.mark.parametrize("method", OAUTH)
@pytest.mark.parametrize("length", [40, 140, 170, 1500, 4500])
async def test_what_reaches_the_wire_for_tokens_of_every_length(
    ca: trustme.CA, method: AuthMethod, length: int
) -> None:
    mailbox = Mailbox(PASSWORD, [MESSAGE])
    token = mailbox.issue_token(length)
    async with oauth_server(ca, mailbox) as server, tls_client_for(server, ca) as client:
        assert await client.login("mrose", oauth2_token=token, methods=[method]) is method
        port = client.port
    lines = server.sessions[0].lines
    if method is AuthMethod.XOAUTH2:
        text = f"user=mrose\x01auth=Bearer {token}\x01\x01"
    else:
        text = f"n,a=mrose,\x01host=127.0.0.1\x01port={port}\x01auth=Bearer {token}\x01\x01"
    encoded = base64.b64encode(text.encode())
    on_the_line = b"AUTH " + method.value.encode() + b" " + encoded
    assert all(len(line) + 2 <= 255 for line in lines if line.startswith(b"AUTH"))
    fits = len(on_the_line) + 2 <= 255
    # XOAUTH2 fits up to a token of 155 characters here; OAUTHBEARER, which also
    # names the host and port, to one of about 130.
    assert fits == (length <= (140 if method is AuthMethod.XOAUTH2 else 40))
    if fits:
        # Short enough: the initial response goes on the AUTH line.
        assert lines[1] == on_the_line
    else:
        # Too long for one command line: AUTH alone, then after the server's empty
        # "+ " challenge the whole response as one line, however long.
        assert lines[1] == b"AUTH " + method.value.encode()
        assert lines[2] == encoded
    assert server.sessions[0].mechanism == method.value
    assert lines[-1] == b"QUIT"


# -- Microsoft's server: no response codes, no error challenge ----------------------------

MICROSOFT_CAPA = b"+OK\r\nTOP\r\nUIDL\r\nSASL PLAIN XOAUTH2\r\nUSER\r\n.\r\n"
MICROSOFT_REFUSAL = b"-ERR Authentication failure: unknown user name or bad password.\r\n"


def xoauth2_line(token: str) -> bytes:
    return base64.b64encode(f"user=mrose@contoso.test\x01auth=Bearer {token}\x01\x01".encode())


async def test_a_refusal_without_a_code_as_microsoft_sends_it_is_retried_once() -> None:
    stale, fresh = "s" * 1500, "f" * 1500  # Microsoft's tokens are over 1 KB
    script: list[Step] = [
        Send(b"+OK The Microsoft Exchange POP3 service is ready.\r\n"),
        Expect(b"CAPA"),
        Send(MICROSOFT_CAPA),
        Expect(b"AUTH XOAUTH2"),  # too long for the AUTH line: after an empty challenge
        Send(b"+ \r\n"),
        Expect(xoauth2_line(stale)),
        Send(MICROSOFT_REFUSAL),  # no JSON challenge, no [AUTH]
        Expect(b"AUTH XOAUTH2"),
        Send(b"+ \r\n"),
        Expect(xoauth2_line(fresh)),
        Send(b"+OK User successfully authenticated.\r\n"),
        Expect(b"QUIT"),
        Send(b"+OK Microsoft Exchange Server POP3 server signing off.\r\n"),
    ]
    provider_calls: list[str | None] = []

    async def token(*, refused: str | None = None) -> str:
        provider_calls.append(refused)
        return stale if refused is None else fresh

    async with ScriptedServer(script) as server, client_for(server) as client:
        method = await client.login("mrose@contoso.test", oauth2_token=token, allow_cleartext=True)
        assert method is AuthMethod.XOAUTH2
        assert client.state is aiopop.State.TRANSACTION
    assert not server.mismatches
    assert provider_calls == [None, stale]


async def test_microsoft_refusing_the_fresh_token_too_ends_the_login() -> None:
    script: list[Step] = [
        Send(b"+OK The Microsoft Exchange POP3 service is ready.\r\n"),
        Expect(b"CAPA"),
        Send(MICROSOFT_CAPA),
        Expect(b"AUTH XOAUTH2"),
        Send(b"+ \r\n"),
        Expect(xoauth2_line("a" * 1500)),
        Send(MICROSOFT_REFUSAL),
        Expect(b"AUTH XOAUTH2"),
        Send(b"+ \r\n"),
        Expect(xoauth2_line("b" * 1500)),
        Send(MICROSOFT_REFUSAL),
        Expect(b"QUIT"),
        Send(b"+OK Microsoft Exchange Server POP3 server signing off.\r\n"),
    ]
    tokens = iter(["a" * 1500, "b" * 1500, "c" * 1500])

    async def token() -> str:
        return next(tokens)

    async with ScriptedServer(script) as server, client_for(server) as client:
        with pytest.raises(aiopop.AuthenticationError) as info:
            await client.login("mrose@contoso.test", oauth2_token=token, allow_cleartext=True)
    assert not server.mismatches
    assert info.value.code is None
    assert any(
        "a fresh token from the token source was also refused" in n for n in info.value.__notes__
    )
    assert next(tokens) == "c" * 1500  # asked twice, not three times
