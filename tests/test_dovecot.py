"""Integration tests against a real Dovecot 2.3 (the private instance of tests/dovecot.py).

The first tests use the stdlib poplib, to show that the harness serves what
it claims to; the others drive aiopop through the flows a user depends on,
and compare its answers with poplib's on the same mailbox.
"""

from __future__ import annotations

import asyncio
import poplib
import re
import ssl
from typing import Any

import pytest

import aiopop
from tests.dovecot import ALICE, BOB, CAROL, DAVE, HOST, DovecotServer, MailUser, make_message

pytestmark = pytest.mark.dovecot

TIMEOUT = 15.0
# RFC 1939 section 7: the APOP timestamp is a msg-id, <local@domain>.
APOP_TIMESTAMP = re.compile(rb"<[\x21-\x3b\x3d\x3f-\x7e]+@[\x21-\x3b\x3d\x3f-\x7e]+>")


def plain_client(server: DovecotServer) -> aiopop.POP3:
    """An aiopop client for the plain POP3 port."""
    return aiopop.POP3(HOST, server.pop3_port, timeout=TIMEOUT)


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


async def log_contains(server: DovecotServer, since: int, *needles: str) -> bool:
    """Wait (briefly: Dovecot's log process writes asynchronously) for lines in the info log."""
    for _ in range(40):
        text = server.info_log_path.read_bytes()[since:].decode("utf-8", "replace")
        if all(needle in text for needle in needles):
            return True
        await asyncio.sleep(0.05)
    return False


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


async def test_login_prefers_apop(dovecot: DovecotServer) -> None:
    # No allow_cleartext needed: APOP does not send the password.
    async with plain_client(dovecot) as client:
        assert await client.login(ALICE.name, ALICE.password) is aiopop.AuthMethod.APOP
        assert (await client.stat()).count == len(ALICE.messages)


async def test_login_falls_back_to_user_pass_when_apop_refused(dovecot: DovecotServer) -> None:
    since = dovecot.info_log_path.stat().st_size
    async with plain_client(dovecot) as client:
        method = await client.login(CAROL.name, CAROL.password, allow_cleartext=True)
        assert method is aiopop.AuthMethod.USER
        assert await client.stat() == aiopop.Stat(1, CAROL.maildrop_size)
    # Dovecot saw the APOP attempt fail for want of a plaintext secret, then a USER/PASS login.
    assert await log_contains(
        dovecot, since, "carol", "we have only SSHA256", "user=<carol>, method=PLAIN"
    )


async def test_login_falls_back_over_tls_without_opt_in(dovecot: DovecotServer) -> None:
    async with tls_client(dovecot) as client:
        assert await client.login(CAROL.name, CAROL.password) is aiopop.AuthMethod.USER
        assert (await client.retr(1)) == CAROL.messages[0]


async def test_login_will_not_fall_back_to_cleartext_by_default(dovecot: DovecotServer) -> None:
    client = plain_client(dovecot)
    await client.connect()
    try:
        with pytest.raises(aiopop.InsecureLoginError):
            await client.login(CAROL.name, CAROL.password)
        assert client.state is aiopop.State.AUTHORIZATION
    finally:
        await client.close()


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


async def test_commands_before_login_are_refused_locally(dovecot: DovecotServer) -> None:
    async with plain_client(dovecot) as client:
        with pytest.raises(aiopop.CommandStateError):
            await client.stat()
        assert await client.login(ALICE.name, ALICE.password) is aiopop.AuthMethod.APOP
        assert (await client.stat()).count == len(ALICE.messages)


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
    for tag in ("TOP", "UIDL", "USER", "RESP-CODES", "PIPELINING", "SASL"):
        assert tag in capabilities
    assert {"PLAIN", "LOGIN"} <= set(capabilities["SASL"])

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
