"""Integration tests against a real Dovecot 2.3 (the private instance of servers/dovecot.py).

The first tests use the stdlib poplib, to show that the harness serves what
it claims to; the others drive aiopop through the flows a user depends on,
and compare its answers with poplib's on the same mailbox.

Where it matters which login method or which transport was used, Dovecot's
own info log is the witness: pop3-login writes ``Login: user=<NAME>,
method=MECHANISM, ...`` with ``TLS`` among the fields when the session was
encrypted, and its auth process says why a method it cannot verify was
refused ("Requested SCRAM-SHA-256 scheme, but we have only SSHA256"; APOP
asks for the PLAIN scheme). Login with an OAuth 2.0 token is not tested
here: this Dovecot has no OAuth backend (the in-process test server covers it).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import poplib
import re
import ssl
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

import aiopop
from aiopop import AuthMethod, sasl
from servers.dovecot import (
    ALICE,
    BOB,
    CAROL,
    DAVE,
    ERIN,
    FRANK,
    GRACE,
    HOST,
    NO_STLS_HOST,
    DovecotServer,
    MailUser,
    make_message,
)

pytestmark = pytest.mark.dovecot

TIMEOUT = 15.0
# RFC 1939 section 7: the APOP timestamp is a msg-id, <local@domain>.
APOP_TIMESTAMP = re.compile(rb"<[\x21-\x3b\x3d\x3f-\x7e]+@[\x21-\x3b\x3d\x3f-\x7e]+>")


# What the private Dovecot offers in CAPA's SASL line, in the clear and over TLS.
SASL_OFFERED = ("PLAIN", "LOGIN", "CRAM-MD5", "SCRAM-SHA-1", "SCRAM-SHA-256")


def plain_client(server: DovecotServer, **options: Any) -> aiopop.POP3:
    """An aiopop client for the plain POP3 port (STLS, if used, with the default CAs)."""
    return aiopop.POP3(HOST, server.pop3_port, timeout=TIMEOUT, **options)


def stls_client(server: DovecotServer, **options: Any) -> aiopop.POP3:
    """An aiopop client for the plain POP3 port whose STLS trusts the test CA."""
    return plain_client(server, ssl_context=server.ssl_context(), **options)


def tls_client(server: DovecotServer, **options: Any) -> aiopop.POP3_SSL:
    """An aiopop client for the POP3S port, trusting the test CA."""
    return aiopop.POP3_SSL(
        HOST, server.pop3s_port, ssl_context=server.ssl_context(), timeout=TIMEOUT, **options
    )


def poplib_client(server: DovecotServer, user: MailUser) -> poplib.POP3_SSL:
    """A logged-in poplib session over POP3S (blocking: call it in a thread)."""
    client = poplib.POP3_SSL(HOST, server.pop3s_port, context=server.ssl_context(), timeout=TIMEOUT)
    client.user(user.name)
    client.pass_(user.password)
    return client


def joined(lines: list[bytes]) -> bytes:
    """A poplib multi-line answer as aiopop returns it: CRLF after every line."""
    return b"".join(line + b"\r\n" for line in lines)


def top_of(message: bytes, lines: int) -> bytes:
    """What TOP must answer for ``message``: the header, the blank line, ``lines`` body lines."""
    head, _, body = message.partition(b"\r\n\r\n")
    body_lines = body.split(b"\r\n")[:-1]
    return head + b"\r\n\r\n" + joined(body_lines[:lines])


def log_size(server: DovecotServer) -> int:
    """Where Dovecot's info log ends now: pass it as ``since`` to the helpers below."""
    return server.info_log_path.stat().st_size


def log_since(server: DovecotServer, since: int) -> str:
    """What Dovecot wrote to its info log after ``since``."""
    return server.info_log_path.read_bytes()[since:].decode("utf-8", "replace")


async def log_contains(server: DovecotServer, since: int, *needles: str) -> bool:
    """Wait (briefly: Dovecot's log process writes asynchronously) for lines in the info log."""
    for _ in range(40):
        text = log_since(server, since)
        if all(needle in text for needle in needles):
            return True
        await asyncio.sleep(0.05)
    return False


async def log_line(server: DovecotServer, since: int, *needles: str) -> str:
    """The first info-log line after ``since`` holding every needle (waiting briefly), or ""."""
    for _ in range(40):
        for line in log_since(server, since).splitlines():
            if all(needle in line for needle in needles):
                return line
        await asyncio.sleep(0.05)
    return ""


def encrypted(line: str) -> bool:
    """Whether a pop3-login line says the session ran over TLS (POP3S, or after STLS)."""
    return ", TLS," in line or line.endswith(", TLS")


def client_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    """What aiopop's debug log says it sent (secrets redacted), in order."""
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("C: ")]


async def contents(server: DovecotServer, user: MailUser) -> list[bytes]:
    """Every message in ``user``'s mailbox, read in a new session."""
    async with tls_client(server) as client:
        await client.user(user.name)
        await client.pass_(user.password)
        count, _ = await client.stat()
        return [await client.retr(n) for n in range(1, count + 1)]


# -- the harness itself, checked with poplib -------------------------------------------


async def test_harness_greeting_offers_apop_and_poplib_logs_in(dovecot: DovecotServer) -> None:
    assert APOP_TIMESTAMP.search(dovecot.greeting)

    def session() -> tuple[bytes, tuple[int, int]]:
        client = poplib.POP3(HOST, dovecot.pop3_port, timeout=TIMEOUT)
        try:
            client.apop(ALICE.name, ALICE.password)
            return client.getwelcome(), client.stat()
        finally:
            client.quit()

    welcome, stat = await asyncio.to_thread(session)
    assert APOP_TIMESTAMP.search(welcome)
    assert stat == (len(ALICE.messages), ALICE.maildrop_size)


async def test_harness_serves_the_stored_messages(dovecot: DovecotServer) -> None:
    def session() -> list[bytes]:
        client = poplib_client(dovecot, ALICE)
        try:
            return [joined(client.retr(n)[1]) for n in range(1, len(ALICE.messages) + 1)]
        finally:
            client.quit()

    assert await asyncio.to_thread(session) == list(ALICE.messages)


async def test_harness_hashed_password_refuses_apop_but_not_user_pass(
    dovecot: DovecotServer,
) -> None:
    def session() -> tuple[str, tuple[int, int]]:
        client = poplib.POP3(HOST, dovecot.pop3_port, timeout=TIMEOUT)
        try:
            with pytest.raises(poplib.error_proto) as refused:
                client.apop(CAROL.name, CAROL.password)
            client.user(CAROL.name)
            client.pass_(CAROL.password)
            return str(refused.value), client.stat()
        finally:
            client.quit()

    refusal, stat = await asyncio.to_thread(session)
    assert "-ERR" in refusal
    assert stat == (1, CAROL.maildrop_size)


# -- connecting and logging in ---------------------------------------------------------


async def test_pop3_user_pass(dovecot: DovecotServer) -> None:
    client = plain_client(dovecot)
    greeting = await client.connect()
    assert greeting.startswith(b"+OK ")
    assert client.getwelcome() == greeting
    assert APOP_TIMESTAMP.search(greeting)
    assert (await client.user(ALICE.name)).startswith(b"+OK")
    assert (await client.pass_(ALICE.password)).startswith(b"+OK")
    assert await client.stat() == aiopop.Stat(len(ALICE.messages), ALICE.maildrop_size)
    assert (await client.quit()).startswith(b"+OK")


async def test_pop3_ssl_user_pass(dovecot: DovecotServer) -> None:
    async with tls_client(dovecot) as client:
        assert client.getwelcome().startswith(b"+OK ")
        await client.user(BOB.name)
        assert (await client.pass_(BOB.password)).startswith(b"+OK")
        assert await client.stat() == aiopop.Stat(0, 0)
        assert await client.list() == []
        assert await client.uidl() == []


async def test_tls_verifies_localhost_name(dovecot: DovecotServer) -> None:
    async with tls_client(dovecot, server_hostname="localhost") as client:
        await client.user(BOB.name)
        await client.pass_(BOB.password)
        assert (await client.noop()).startswith(b"+OK")


async def test_apop(dovecot: DovecotServer) -> None:
    async with plain_client(dovecot) as client:
        assert (await client.apop(ALICE.name, ALICE.password)).startswith(b"+OK")
        assert (await client.stat()).count == len(ALICE.messages)


@pytest.mark.parametrize("tls", [False, True], ids=["clear", "stls"])
async def test_login_prefers_apop(dovecot_classic: DovecotServer, tls: bool) -> None:
    # A Dovecot without SCRAM and CRAM-MD5: APOP is the strongest method it
    # offers, ahead of SASL PLAIN, LOGIN and USER/PASS, in the clear and over
    # TLS. No allow_cleartext needed: APOP does not send the password.
    since = log_size(dovecot_classic)
    options: dict[str, Any] = {"tls": "none"}
    if tls:
        options = {"ssl_context": dovecot_classic.ssl_context()}
    async with plain_client(dovecot_classic, **options) as client:
        assert await client.login(ALICE.name, ALICE.password) is AuthMethod.APOP
        assert client.is_tls is tls
        assert (await client.stat()).count == len(ALICE.messages)
    line = await log_line(dovecot_classic, since, "Login: user=<alice>, method=APOP")
    assert line
    assert encrypted(line) is tls


async def test_login_in_the_clear_prefers_scram_to_apop(dovecot: DovecotServer) -> None:
    # Both keep the password off the wire; SCRAM-SHA-256 is the stronger.
    since = log_size(dovecot)
    async with plain_client(dovecot, tls="none") as client:
        assert await client.login(ALICE.name, ALICE.password) is AuthMethod.SCRAM_SHA_256
        assert not client.is_tls
        assert (await client.stat()).count == len(ALICE.messages)
    line = await log_line(dovecot, since, "Login: user=<alice>, method=SCRAM-SHA-256")
    assert line
    assert not encrypted(line)


# Dovecot's auth process, refusing a method that the stored password cannot verify.
def cannot_verify(method: str, stored: str) -> str:
    """The auth log line's text for a method Dovecot cannot check against ``stored``."""
    # APOP needs the plaintext password: Dovecot asks the passdb for the PLAIN scheme.
    scheme = "PLAIN" if method == "APOP" else method
    return f"Requested {scheme} scheme, but we have only {stored}"


async def test_login_falls_back_to_cleartext_when_apop_refused(dovecot: DovecotServer) -> None:
    # Carol's password is a salted hash: Dovecot refuses every method that
    # keeps the password off the wire, and with allow_cleartext login sends it
    # (SASL PLAIN, which Dovecot offers ahead of USER/PASS), in the clear,
    # after one refusal: the second of at most two attempts.
    since = log_size(dovecot)
    async with plain_client(dovecot, tls="none") as client:
        method = await client.login(CAROL.name, CAROL.password, allow_cleartext=True)
        assert method is AuthMethod.PLAIN
        assert not client.is_tls
        assert await client.stat() == aiopop.Stat(1, CAROL.maildrop_size)
    assert await log_contains(dovecot, since, cannot_verify("SCRAM-SHA-256", "SSHA256"))
    line = await log_line(dovecot, since, "Login: user=<carol>, method=PLAIN")
    assert line
    assert not encrypted(line)
    found = re.findall(r"Requested \S+ scheme", log_since(dovecot, since))
    assert found == ["Requested SCRAM-SHA-256 scheme"]


async def test_login_falls_back_over_tls_without_opt_in(dovecot: DovecotServer) -> None:
    # Over TLS the password may be sent: after SCRAM-SHA-256 is refused,
    # login uses SASL PLAIN, the first such method Dovecot offers.
    since = log_size(dovecot)
    async with tls_client(dovecot) as client:
        assert await client.login(CAROL.name, CAROL.password) is AuthMethod.PLAIN
        assert (await client.retr(1)) == CAROL.messages[0]
    assert await log_contains(dovecot, since, cannot_verify("SCRAM-SHA-256", "SSHA256"))
    line = await log_line(dovecot, since, "Login: user=<carol>, method=PLAIN")
    assert encrypted(line)


async def test_login_will_not_fall_back_to_cleartext_by_default(dovecot: DovecotServer) -> None:
    since = log_size(dovecot)
    client = plain_client(dovecot, tls="none")
    await client.connect()
    try:
        with pytest.raises(aiopop.CredentialsError) as refused:
            await client.login(CAROL.name, CAROL.password)
        assert client.state is aiopop.State.AUTHORIZATION
    finally:
        await client.close()
    # The last refusal is raised (SCRAM-SHA-1's), saying what was not tried and why.
    assert refused.value.command == "AUTH"
    assert refused.value.__notes__[1:] == [
        "held back, as one login makes at most 2 attempts so that a wrong password cannot "
        "lock the account: CRAM-MD5, APOP",
        "not tried, as they would send the password in cleartext: PLAIN, LOGIN, USER",
        "to try another method, pin it: login(..., methods=['CRAM-MD5']) "
        "or Account(auth='CRAM-MD5')",
    ]
    assert CAROL.password not in str(refused.value)
    # Dovecot saw two refused attempts and no login: the password never went out.
    line = await log_line(dovecot, since, "user=<carol>", "Disconnected")
    assert "auth failed, 2 attempts" in line
    assert "method=SCRAM-SHA-1" in line
    assert "Login: user=<carol>" not in log_since(dovecot, since)


async def test_login_upgrades_with_stls_then_uses_scram_sha_256(dovecot: DovecotServer) -> None:
    since = log_size(dovecot)
    async with stls_client(dovecot) as client:
        assert not client.is_tls
        assert await client.login(ALICE.name, ALICE.password) is AuthMethod.SCRAM_SHA_256
        assert client.is_tls
        assert await client.stat() == aiopop.Stat(len(ALICE.messages), ALICE.maildrop_size)
    line = await log_line(dovecot, since, "Login: user=<alice>, method=SCRAM-SHA-256")
    assert encrypted(line)
    # The first method tried was the one that worked.
    assert "Requested" not in log_since(dovecot, since)


@pytest.mark.parametrize(
    ("user", "expected", "stored", "refused"),
    [
        pytest.param(ERIN, AuthMethod.SCRAM_SHA_256, "SCRAM-SHA-256", (), id="erin"),
        # Stored so that SCRAM-SHA-256 cannot be checked: one refusal, then PLAIN
        # (SCRAM-SHA-1, CRAM-MD5 and APOP are held back: at most two attempts).
        pytest.param(FRANK, AuthMethod.PLAIN, "SCRAM-SHA-1", ("SCRAM-SHA-256",), id="frank"),
        pytest.param(GRACE, AuthMethod.PLAIN, "CRAM-MD5", ("SCRAM-SHA-256",), id="grace"),
        pytest.param(CAROL, AuthMethod.PLAIN, "SSHA256", ("SCRAM-SHA-256",), id="carol"),
    ],
)
async def test_login_uses_the_strongest_method_the_stored_password_allows(
    dovecot: DovecotServer,
    user: MailUser,
    expected: AuthMethod,
    stored: str,
    refused: tuple[str, ...],
) -> None:
    since = log_size(dovecot)
    async with stls_client(dovecot) as client:
        assert await client.login(user.name, user.password) is expected
        assert client.is_tls
        assert await client.stat() == aiopop.Stat(len(user.messages), user.maildrop_size)
    line = await log_line(dovecot, since, f"Login: user=<{user.name}>, method={expected}")
    assert encrypted(line)
    # Dovecot refused at most SCRAM-SHA-256, for want of a usable secret.
    found = re.findall(r"Requested \S+ scheme, but we have only \S+", log_since(dovecot, since))
    assert found == [cannot_verify(method, stored) for method in refused]


async def test_commands_before_login_are_refused_locally(dovecot: DovecotServer) -> None:
    async with stls_client(dovecot) as client:
        with pytest.raises(aiopop.CommandStateError):
            await client.stat()
        assert await client.login(ALICE.name, ALICE.password) is AuthMethod.SCRAM_SHA_256
        assert (await client.stat()).count == len(ALICE.messages)


async def test_wrong_password_carries_dovecots_explanation(dovecot: DovecotServer) -> None:
    async with tls_client(dovecot) as client:
        await client.user(ALICE.name)
        with pytest.raises(aiopop.AuthenticationError) as refused:
            await client.pass_("not-" + ALICE.password)
    assert refused.value.code == "AUTH"
    assert "Authentication failed" in refused.value.response
    assert "Authentication failed" in str(refused.value)
    assert ALICE.password not in str(refused.value)


async def test_apop_wrong_secret(dovecot: DovecotServer) -> None:
    async with plain_client(dovecot) as client:
        with pytest.raises(aiopop.AuthenticationError) as refused:
            await client.apop(ALICE.name, "not-" + ALICE.password)
    assert "Authentication failed" in str(refused.value)


# -- SASL AUTH -------------------------------------------------------------------------

MECHANISMS: dict[str, Callable[[str, str], sasl.Mechanism]] = {
    "PLAIN": sasl.Plain,
    "LOGIN": sasl.Login,
    "CRAM-MD5": sasl.CramMD5,
    "SCRAM-SHA-1": sasl.ScramSHA1,
    "SCRAM-SHA-256": sasl.ScramSHA256,
}


@contextlib.asynccontextmanager
async def session(server: DovecotServer, transport: str) -> AsyncIterator[aiopop.POP3]:
    """A session not logged in yet: in the clear, upgraded with STLS, or over POP3S."""
    client = tls_client(server) if transport == "pop3s" else stls_client(server, tls="none")
    async with client:
        if transport == "stls":
            await client.stls()
        yield client


@pytest.mark.parametrize(
    ("mechanism", "user", "transport"),
    [
        # PLAIN and LOGIN send the password: over TLS only.
        ("PLAIN", ALICE, "pop3s"),
        ("PLAIN", CAROL, "stls"),
        ("LOGIN", ALICE, "stls"),
        ("LOGIN", CAROL, "pop3s"),
        # The others keep it off the wire: in the clear too. Each with a
        # plaintext password and with the stored form of its own scheme.
        ("CRAM-MD5", ALICE, "clear"),
        ("CRAM-MD5", GRACE, "clear"),
        ("SCRAM-SHA-1", ALICE, "clear"),
        ("SCRAM-SHA-1", FRANK, "stls"),
        ("SCRAM-SHA-256", ALICE, "clear"),
        ("SCRAM-SHA-256", ERIN, "stls"),
    ],
    ids=lambda value: value.name if isinstance(value, MailUser) else str(value),
)
async def test_auth_with_each_mechanism(
    dovecot: DovecotServer, mechanism: str, user: MailUser, transport: str
) -> None:
    since = log_size(dovecot)
    async with session(dovecot, transport) as client:
        assert (await client.auth(MECHANISMS[mechanism](user.name, user.password))) == (
            b"+OK Logged in."
        )
        assert client.state is aiopop.State.TRANSACTION
        assert await client.stat() == aiopop.Stat(len(user.messages), user.maildrop_size)
        assert await client.list() == [
            aiopop.ListEntry(1 + n, len(m)) for n, m in enumerate(user.messages)
        ]
    line = await log_line(dovecot, since, f"Login: user=<{user.name}>, method={mechanism},")
    assert line
    assert encrypted(line) is (transport != "clear")


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-1", "SCRAM-SHA-256"])
async def test_scram_wrong_password_is_a_credentials_error(
    dovecot: DovecotServer, mechanism: str
) -> None:
    wrong = "not-" + ALICE.password
    since = log_size(dovecot)
    async with session(dovecot, "clear") as client:
        with pytest.raises(aiopop.CredentialsError) as refused:
            await client.auth(MECHANISMS[mechanism](ALICE.name, wrong))
        assert client.state is aiopop.State.AUTHORIZATION
        # Dovecot keeps the session: the right password works on it.
        await client.auth(MECHANISMS[mechanism](ALICE.name, ALICE.password))
        assert (await client.stat()).count == len(ALICE.messages)
    error = refused.value
    assert isinstance(error, aiopop.AuthenticationError)
    assert (error.code, error.command) == ("AUTH", "AUTH")
    assert error.response == "[AUTH] Authentication failed."
    assert str(error) == "AUTH: -ERR [AUTH] Authentication failed."
    for text in (str(error), repr(error), *getattr(error, "__notes__", [])):
        assert wrong not in text
        assert ALICE.password not in text
    assert await log_contains(dovecot, since, f"method={mechanism}", "Login: user=<alice>")
    assert "Password mismatch" in await log_line(dovecot, since, "(alice,")


# -- STLS and the starttls policy ------------------------------------------------------


async def test_stls_forgets_the_cleartext_capabilities(
    dovecot: DovecotServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="aiopop")
    since = log_size(dovecot)
    async with stls_client(dovecot, tls="none") as client:
        before = await client.capa()
        assert before.stls
        assert before.sasl == SASL_OFFERED
        assert (await client.stls()).startswith(b"+OK")
        assert client.is_tls
        after = await client.capabilities()
        assert after is not before
        assert not after.stls
        assert "STLS" not in after
        assert after.sasl == SASL_OFFERED
        # A second STLS is refused here; nothing goes to the server.
        with pytest.raises(aiopop.CommandStateError):
            await client.stls()
        assert client.is_tls
        assert client_lines(caplog) == ["C: CAPA", "C: STLS", "C: CAPA"]
        assert await client.login(ALICE.name, ALICE.password) is AuthMethod.SCRAM_SHA_256
    line = await log_line(dovecot, since, "Login: user=<alice>, method=SCRAM-SHA-256")
    assert encrypted(line)


async def test_pop3s_offers_the_same_mechanisms_without_stls(dovecot: DovecotServer) -> None:
    async with tls_client(dovecot) as client:
        capabilities = await client.capa()
    assert capabilities.sasl == SASL_OFFERED
    assert not capabilities.stls


async def test_starttls_required_fails_closed_without_stls(
    dovecot: DovecotServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="aiopop")
    since = log_size(dovecot)
    client = aiopop.POP3(
        NO_STLS_HOST,
        dovecot.pop3_no_stls_port,
        tls="starttls",
        ssl_context=dovecot.ssl_context(),
        timeout=TIMEOUT,
    )
    with pytest.raises(aiopop.TLSRequiredError, match="does not offer STLS"):
        await client.connect()
    assert not client.is_connected
    assert client_lines(caplog) == ["C: CAPA"]
    # Dovecot saw a connection to the listener without TLS end with no login attempt.
    line = await log_line(dovecot, since, f"lip={NO_STLS_HOST}", "Disconnected")
    assert "(no auth attempts" in line
    assert "user=<>" in line
    assert "Login:" not in log_since(dovecot, since)


async def test_listener_without_stls_works_in_the_clear(dovecot: DovecotServer) -> None:
    # The listener that fails "starttls" is a working POP3 server, just without STLS.
    since = log_size(dovecot)
    client = aiopop.POP3(NO_STLS_HOST, dovecot.pop3_no_stls_port, timeout=TIMEOUT)
    async with client:
        capabilities = await client.capa()
        assert not capabilities.stls
        assert capabilities.sasl == SASL_OFFERED
        assert await client.login(ALICE.name, ALICE.password) is AuthMethod.SCRAM_SHA_256
        assert not client.is_tls
        assert (await client.stat()).count == len(ALICE.messages)
    line = await log_line(dovecot, since, "Login: user=<alice>", f"lip={NO_STLS_HOST}")
    assert "method=SCRAM-SHA-256" in line
    assert not encrypted(line)


async def test_starttls_required_upgrades_where_stls_is_offered(dovecot: DovecotServer) -> None:
    since = log_size(dovecot)
    async with stls_client(dovecot, tls="starttls") as client:
        assert client.is_tls  # on connect, before any login
        assert await client.login(CAROL.name, CAROL.password) is AuthMethod.PLAIN
        assert await client.stat() == aiopop.Stat(1, CAROL.maildrop_size)
    line = await log_line(dovecot, since, "Login: user=<carol>, method=PLAIN")
    assert encrypted(line)


@pytest.mark.parametrize("how", ["stls", "login", "required"])
async def test_stls_with_a_context_that_does_not_trust_the_test_ca(
    dovecot: DovecotServer, how: str
) -> None:
    # The default context trusts the system's CAs, not the test CA.
    since = log_size(dovecot)
    client = plain_client(dovecot, tls="starttls" if how == "required" else "if-offered")

    async def attempt() -> None:
        await client.connect()
        if how == "stls":
            await client.stls(ssl.create_default_context())
        else:
            await client.login(ALICE.name, ALICE.password)

    try:
        with pytest.raises(ssl.SSLCertVerificationError) as refused:
            await attempt()
        assert not client.is_connected
        assert client.state is aiopop.State.CLOSED
    finally:
        await client.close()
    assert isinstance(refused.value, OSError)
    assert "unable to get local issuer certificate" in refused.value.verify_message
    # Dovecot saw the handshake break off, and no login attempt: nothing went out in the clear.
    line = await log_line(dovecot, since, "TLS handshaking")
    assert "(no auth attempts" in line
    assert "Login:" not in log_since(dovecot, since)


# -- reading mail ----------------------------------------------------------------------


async def test_stat_list_uidl(dovecot: DovecotServer) -> None:
    async with tls_client(dovecot) as client:
        await client.login(ALICE.name, ALICE.password)
        assert await client.stat() == (len(ALICE.messages), ALICE.maildrop_size)
        expected = [aiopop.ListEntry(n, len(m)) for n, m in enumerate(ALICE.messages, 1)]
        assert await client.list() == expected
        assert await client.list(3) == expected[2]
        uids = await client.uidl()
        assert [entry.number for entry in uids] == list(range(1, len(ALICE.messages) + 1))
        assert len({entry.uid for entry in uids}) == len(uids)
        assert await client.uidl(2) == uids[1]
    async with tls_client(dovecot) as client:
        await client.login(ALICE.name, ALICE.password)
        assert await client.uidl() == uids, "UIDs must be stable across sessions"


async def test_retr_every_message_exactly(dovecot: DovecotServer) -> None:
    # Dot-stuffed lines, a final "." line, 8-bit text and a 300 kB message among them.
    async with tls_client(dovecot) as client:
        await client.login(ALICE.name, ALICE.password)
        for number, message in enumerate(ALICE.messages, 1):
            assert await client.retr(number) == message, f"message {number}"


async def test_retr_lines_longer_than_poplib_allows(dovecot: DovecotServer) -> None:
    async with tls_client(dovecot) as client:
        await client.login(DAVE.name, DAVE.password)
        message = await client.retr(1)
    assert message == DAVE.messages[0]
    assert b"L" * 10_000 + b"\r\n" in message

    def with_poplib() -> None:
        client = poplib_client(dovecot, DAVE)
        try:
            client.retr(1)
        finally:
            client.close()

    with pytest.raises(poplib.error_proto, match="line too long"):
        await asyncio.to_thread(with_poplib)


async def test_concurrent_commands_from_several_tasks(dovecot: DovecotServer) -> None:
    async with tls_client(dovecot) as client:
        await client.login(ALICE.name, ALICE.password)
        count = len(ALICE.messages)
        messages = await asyncio.gather(*(client.retr(n) for n in range(1, count + 1)))
    assert list(messages) == list(ALICE.messages)


async def test_retr_many_pipelines_against_dovecot(dovecot: DovecotServer) -> None:
    count = len(ALICE.messages)
    for make in (plain_client, tls_client):
        async with make(dovecot) as client:
            await client.user(ALICE.name)
            await client.pass_(ALICE.password)
            got = [item async for item in client.retr_many(list(range(1, count + 1)) * 3)]
            assert [message for _, message in got] == list(ALICE.messages) * 3
            tops = [item async for item in client.top_many(range(1, count + 1), 0)]
            assert [message for _, message in tops] == [top_of(m, 0) for m in ALICE.messages]
            # Dovecot announces PIPELINING, so the engine learned it may pipeline.
            connection = client._connection
            assert connection is not None
            assert await connection.learn_pipelining()


async def test_streams_and_files_hold_the_exact_message(
    dovecot: DovecotServer, tmp_path: Any
) -> None:
    async with tls_client(dovecot) as client:
        await client.login(DAVE.name, DAVE.password)
        async with client.retr_stream(1) as stream:
            assert b"".join([chunk async for chunk in stream]) == DAVE.messages[0]
        path = tmp_path / "dave.eml"
        assert await client.retr_to_file(1, path) == len(DAVE.messages[0])
        assert path.read_bytes() == DAVE.messages[0] == await client.retr(1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dave.eml"]


async def test_top(dovecot: DovecotServer) -> None:
    folded = ALICE.messages[2]
    async with tls_client(dovecot) as client:
        await client.login(ALICE.name, ALICE.password)
        assert await client.top(3, 5) == top_of(folded, 5)
        assert await client.top(3, 0) == top_of(folded, 0)
        # More lines than the body has: the whole message, dots unstuffed.
        assert await client.top(2, 1000) == ALICE.messages[1]


async def test_error_reply_keeps_the_session(dovecot: DovecotServer) -> None:
    async with tls_client(dovecot) as client:
        await client.login(ALICE.name, ALICE.password)
        with pytest.raises(aiopop.ResponseError) as refused:
            await client.retr(99)
        assert not isinstance(refused.value, aiopop.AuthenticationError)
        assert "no message 99" in refused.value.response
        assert (await client.noop()).startswith(b"+OK")
        assert await client.retr(1) == ALICE.messages[0]


async def test_capa_before_login(dovecot: DovecotServer) -> None:
    async with plain_client(dovecot) as client:
        capabilities = await client.capa()
    for tag in ("TOP", "UIDL", "USER", "RESP-CODES", "PIPELINING", "SASL", "STLS"):
        assert tag in capabilities
    assert capabilities.sasl == SASL_OFFERED

    def poplib_capa() -> dict[str, list[str]]:
        client = poplib.POP3(HOST, dovecot.pop3_port, timeout=TIMEOUT)
        try:
            return client.capa()
        finally:
            client.quit()

    assert capabilities == await asyncio.to_thread(poplib_capa)


# -- deleting --------------------------------------------------------------------------

THREE = tuple(make_message(f"number {n}", [f"message {n}", ".dotted"]) for n in (1, 2, 3))


async def test_dele_then_quit_removes_the_message(dovecot: DovecotServer) -> None:
    user = dovecot.new_user(THREE)
    async with tls_client(dovecot) as client:
        await client.login(user.name, user.password)
        assert (await client.dele(2)).startswith(b"+OK")
        assert [entry.number for entry in await client.list()] == [1, 3]
        with pytest.raises(aiopop.ResponseError):
            await client.retr(2)
        assert (await client.quit()).startswith(b"+OK")
    assert await contents(dovecot, user) == [THREE[0], THREE[2]]


async def test_dele_then_rset_keeps_everything(dovecot: DovecotServer) -> None:
    user = dovecot.new_user(THREE)
    async with tls_client(dovecot) as client:
        await client.login(user.name, user.password)
        await client.dele(1)
        await client.dele(3)
        assert (await client.stat()).count == 1
        assert (await client.rset()).startswith(b"+OK")
        assert (await client.stat()).count == 3
    assert await contents(dovecot, user) == list(THREE)


async def test_leaving_async_with_by_an_exception_keeps_deleted_mail(
    dovecot: DovecotServer,
) -> None:
    user = dovecot.new_user(THREE)
    since = dovecot.info_log_path.stat().st_size
    client = tls_client(dovecot)

    async def delete_then_fail() -> None:
        async with client:
            await client.login(user.name, user.password)
            await client.dele(1)
            await client.dele(2)
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        await delete_then_fail()
    assert not client.is_connected
    # Dovecot saw the connection close without QUIT ("Logged out" would mean QUIT).
    assert await log_contains(
        dovecot, since, f"pop3({user.name})", "Disconnected: Connection closed"
    )
    assert await contents(dovecot, user) == list(THREE)


# -- certificates ----------------------------------------------------------------------


async def test_default_context_refuses_the_test_ca(dovecot: DovecotServer) -> None:
    client = aiopop.POP3_SSL(HOST, dovecot.pop3s_port, timeout=TIMEOUT)
    with pytest.raises(ssl.SSLCertVerificationError) as refused:
        await client.connect()
    assert "unable to get local issuer certificate" in refused.value.verify_message
    assert not client.is_connected


async def test_wrong_host_name_refused(dovecot: DovecotServer) -> None:
    client = tls_client(dovecot, server_hostname="mail.example.invalid")
    with pytest.raises(ssl.SSLCertVerificationError) as refused:
        await client.connect()
    assert "mismatch" in refused.value.verify_message


async def test_certificate_for_another_name_refused(dovecot_wrong_name: DovecotServer) -> None:
    # Trusted CA, right address, but the certificate names only mail.example.invalid.
    client = tls_client(dovecot_wrong_name)
    with pytest.raises(ssl.SSLCertVerificationError) as refused:
        await client.connect()
    assert "IP address mismatch" in refused.value.verify_message


def served_fingerprint(server: DovecotServer) -> str:
    """The SHA-256 fingerprint of the certificate Dovecot serves (the first of its chain)."""
    chain = (server.root / "tls" / "server-chain.pem").read_text()
    first = chain[: chain.index("-----END CERTIFICATE-----") + len("-----END CERTIFICATE-----")]
    digest = hashlib.sha256(ssl.PEM_cert_to_DER_cert(first)).digest()
    return "SHA256:" + ":".join(f"{octet:02X}" for octet in digest)


async def test_a_pinned_certificate_needs_neither_the_ca_nor_the_name(
    dovecot_wrong_name: DovecotServer,
) -> None:
    # Neither the system's CAs nor the name: only the pin vouches for this certificate.
    pin = served_fingerprint(dovecot_wrong_name)
    async with aiopop.POP3_SSL(
        HOST, dovecot_wrong_name.pop3s_port, tls_fingerprint=pin, timeout=TIMEOUT
    ) as client:
        assert client.certificate_fingerprint == pin
        assert client.getwelcome().startswith(b"+OK")
        assert "SASL" in await client.capabilities()  # this Dovecot has no users to log in
    async with aiopop.POP3(
        HOST, dovecot_wrong_name.pop3_port, tls_fingerprint=pin, timeout=TIMEOUT
    ) as plain:
        assert plain.is_tls  # STLS, required with a pin
        assert plain.certificate_fingerprint == pin
    wrong = pin[:-1] + ("0" if pin[-1] != "0" else "1")
    attempts: list[aiopop.POP3] = [
        aiopop.POP3_SSL(HOST, dovecot_wrong_name.pop3s_port, tls_fingerprint=wrong),
        aiopop.POP3(HOST, dovecot_wrong_name.pop3_port, tls_fingerprint=wrong),
    ]
    for attempt in attempts:
        with pytest.raises(aiopop.FingerprintMismatchError) as refused:
            await attempt.connect()
        assert refused.value.offered == pin
        assert not attempt.is_connected


# -- the same answers as poplib --------------------------------------------------------


async def test_same_answers_as_poplib(dovecot: DovecotServer) -> None:
    count = len(ALICE.messages)

    def with_poplib() -> dict[str, object]:
        client = poplib_client(dovecot, ALICE)
        try:
            listing = [aiopop.ListEntry(*map(int, line.split())) for line in client.list()[1]]
            uids = []
            for line in client.uidl()[1]:
                number, uid = line.split()
                uids.append(aiopop.UidEntry(int(number), uid.decode("ascii")))
            return {
                "stat": client.stat(),
                "list": listing,
                "uidl": uids,
                "retr": [joined(client.retr(n)[1]) for n in range(1, count + 1)],
                "top": [joined(client.top(n, 3)[1]) for n in range(1, count + 1)],
            }
        finally:
            client.quit()

    async with tls_client(dovecot) as client:
        await client.login(ALICE.name, ALICE.password)
        ours = {
            "stat": tuple(await client.stat()),
            "list": await client.list(),
            "uidl": await client.uidl(),
            "retr": [await client.retr(n) for n in range(1, count + 1)],
            "top": [await client.top(n, 3) for n in range(1, count + 1)],
        }
    theirs = await asyncio.to_thread(with_poplib)
    for key in ours:
        assert ours[key] == theirs[key], key


# -- at most two failed attempts per login ------------------------------------------------
#
# Each test connects from a loopback address of its own (127.0.22.x: Dovecot
# listens on 127.0.0.1, and Linux routes all of 127.0.0.0/8 to lo), so that
# Dovecot's log lines for it, which carry rip=<address>, are told apart from
# every other test's, and Dovecot's per-address failure penalty (off in this
# harness) could not carry over from one test to another.


async def failed_attempts(server: DovecotServer, since: int, user: str, address: str) -> int:
    """How many logins of ``user`` from ``address`` Dovecot's auth process refused."""
    await log_contains(server, since, f"rip={address},")  # pop3-login's line comes last
    return sum(
        1
        for line in log_since(server, since).splitlines()
        if " auth: " in line and f"({user},{address}," in line
    )


def login_client(server: DovecotServer, transport: str, address: str) -> aiopop.POP3:
    """A client for ``transport`` bound to ``address``: pop3s, stls or clear."""
    local = (address, 0)
    if transport == "pop3s":
        return tls_client(server, local_addr=local)
    if transport == "stls":
        return stls_client(server, local_addr=local)
    return plain_client(server, tls="none", local_addr=local)


@pytest.mark.parametrize(
    ("transport", "allow_cleartext", "address", "tried"),
    [
        ("pop3s", False, "127.0.22.1", ("SCRAM-SHA-256", "PLAIN")),
        ("stls", False, "127.0.22.2", ("SCRAM-SHA-256", "PLAIN")),
        ("clear", True, "127.0.22.3", ("SCRAM-SHA-256", "PLAIN")),
        ("clear", False, "127.0.22.4", ("SCRAM-SHA-256", "SCRAM-SHA-1")),
    ],
)
async def test_a_wrong_password_makes_at_most_two_attempts(
    dovecot: DovecotServer,
    caplog: pytest.LogCaptureFixture,
    transport: str,
    allow_cleartext: bool,
    address: str,
    tried: tuple[str, str],
) -> None:
    caplog.set_level(logging.DEBUG, logger="aiopop")
    wrong = "not-" + BOB.password
    since = log_size(dovecot)
    async with login_client(dovecot, transport, address) as client:
        with pytest.raises(aiopop.CredentialsError) as refused:
            await client.login(BOB.name, wrong, allow_cleartext=allow_cleartext)
    # Dovecot's witness: two refusals, then the client logged out.
    assert await failed_attempts(dovecot, since, BOB.name, address) == 2
    line = await log_line(dovecot, since, f"rip={address},", "Disconnected")
    assert "auth failed, 2 attempts" in line
    assert f"method={tried[1]}," in line
    # aiopop's: what it sent, and what it says it held back.
    attempts = [
        text.split(" ")[2] if text.startswith("C: AUTH ") else text.split(" ")[1]
        for text in client_lines(caplog)
        if text.startswith(("C: AUTH ", "C: APOP ", "C: PASS "))
    ]
    assert attempts == list(tried)
    assert refused.value.__notes__[0].startswith(f"tried: {tried[0]} refused: ")
    assert any(
        note.startswith("held back, as one login makes at most 2")
        for note in refused.value.__notes__
    )
    assert wrong not in caplog.text
    assert wrong not in str(refused.value)


@pytest.mark.parametrize(
    ("user", "address", "expected", "failures"),
    [
        pytest.param(ALICE, "127.0.22.11", AuthMethod.SCRAM_SHA_256, 0, id="alice"),
        pytest.param(ERIN, "127.0.22.12", AuthMethod.SCRAM_SHA_256, 0, id="erin"),
        # Stored so that Dovecot cannot do SCRAM-SHA-256 for them: one refusal, then PLAIN.
        pytest.param(FRANK, "127.0.22.13", AuthMethod.PLAIN, 1, id="frank"),
        pytest.param(GRACE, "127.0.22.14", AuthMethod.PLAIN, 1, id="grace"),
        pytest.param(CAROL, "127.0.22.15", AuthMethod.PLAIN, 1, id="carol"),
    ],
)
async def test_a_right_password_logs_in_and_prefer_makes_it_free(
    dovecot: DovecotServer, user: MailUser, address: str, expected: AuthMethod, failures: int
) -> None:
    since = log_size(dovecot)
    async with login_client(dovecot, "pop3s", address) as client:
        method = await client.login(user.name, user.password)
        assert method is expected
        assert await client.stat() == aiopop.Stat(len(user.messages), user.maildrop_size)
    assert await log_line(dovecot, since, f"Login: user=<{user.name}>, method={expected},")
    assert await failed_attempts(dovecot, since, user.name, address) == failures
    # The next login, told what worked: no refusal at all.
    since = log_size(dovecot)
    async with login_client(dovecot, "pop3s", address) as client:
        assert await client.login(user.name, user.password, prefer=method) is method
    assert await log_line(dovecot, since, f"Login: user=<{user.name}>, method={expected},")
    assert await failed_attempts(dovecot, since, user.name, address) == 0


async def test_in_the_clear_a_pinned_or_preferred_method_reaches_past_the_first_two(
    dovecot: DovecotServer,
) -> None:
    # Grace's password is stored for CRAM-MD5, the third challenge-response method:
    # in the clear login() tries only SCRAM-SHA-256 and SCRAM-SHA-1, and says how to pin.
    address = "127.0.22.21"
    since = log_size(dovecot)
    async with login_client(dovecot, "clear", address) as client:
        with pytest.raises(aiopop.CredentialsError) as refused:
            await client.login(GRACE.name, GRACE.password)
        assert refused.value.__notes__[-1] == (
            "to try another method, pin it: login(..., methods=['CRAM-MD5']) "
            "or Account(auth='CRAM-MD5')"
        )
        assert await client.login(GRACE.name, GRACE.password, methods=["CRAM-MD5"]) == "CRAM-MD5"
    assert await failed_attempts(dovecot, since, GRACE.name, address) == 2
    since = log_size(dovecot)
    async with login_client(dovecot, "clear", address) as client:
        method = await client.login(GRACE.name, GRACE.password, prefer=AuthMethod.CRAM_MD5)
        assert method is AuthMethod.CRAM_MD5
        assert not client.is_tls
    assert await log_line(dovecot, since, "Login: user=<grace>, method=CRAM-MD5,")
    assert await failed_attempts(dovecot, since, GRACE.name, address) == 0


async def test_an_account_session_prefers_what_worked(dovecot: DovecotServer) -> None:
    address = "127.0.22.31"
    account = aiopop.Account(
        HOST,
        CAROL.name,
        port=dovecot.pop3s_port,
        password=CAROL.password,
        ssl_context=dovecot.ssl_context(),
        timeout=TIMEOUT,
    )
    since = log_size(dovecot)
    async with account.session(prefer=AuthMethod.PLAIN, local_addr=(address, 0)) as client:
        assert await client.stat() == aiopop.Stat(1, CAROL.maildrop_size)
    assert await log_line(dovecot, since, "Login: user=<carol>, method=PLAIN,")
    assert await failed_attempts(dovecot, since, CAROL.name, address) == 0
