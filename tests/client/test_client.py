"""The asyncio client against the in-process server and scripted hostile servers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import socket
import ssl
import struct
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trustme

import aiopop
from aiopop import AuthMethod, ListEntry, Stat, UidEntry
from aiopop._apop import apop_digest
from aiopop.testing import (
    Close,
    Expect,
    Mailbox,
    POP3ServerFixture,
    POP3TestServer,
    ScriptedServer,
    Send,
    Sleep,
    Step,
    Trickle,
    WaitForClose,
)
from servers.ports import free_port
from tests.helpers.scripted import LOGIN, client_for, logged_in
from tests.helpers.tls import client_context, server_context

PASSWORD = "tanstaaf"
MESSAGES = [
    b"Subject: first\r\nFrom: a@example.org\r\n\r\n"
    b"line one\r\n.starts with a dot\r\nline three\r\n",
    b"Subject: second\r\n\r\n" + b"y" * 20000 + b"\r\n",
    b"Subject: third\r\n\r\nbody\r\n",
]


@pytest.fixture
def mailbox() -> Mailbox:
    return Mailbox(PASSWORD, list(MESSAGES))


@pytest.fixture
async def server(mailbox: Mailbox, pop3_server: POP3ServerFixture) -> POP3TestServer:
    return (await pop3_server.start(mailboxes={"mrose": mailbox})).server


# -- the seed flows ---------------------------------------------------------------


async def test_connect_and_greeting(server: POP3TestServer) -> None:
    client = client_for(server)
    assert repr(client).endswith("not connected>")
    greeting = await client.connect()
    assert greeting.startswith(b"+OK ")
    assert client.getwelcome() == greeting
    timestamp = server.sessions[0].apop_timestamp
    assert timestamp is not None
    assert client.apop_timestamp == timestamp
    assert client.is_connected
    assert client.state is aiopop.State.AUTHORIZATION
    assert "authorization" in repr(client)
    await client.quit()
    assert not client.is_connected
    assert client.state is aiopop.State.CLOSED


async def test_login_with_apop_keeps_the_password_off_the_wire(server: POP3TestServer) -> None:
    async with client_for(server) as client:
        assert await client.login("mrose", PASSWORD) is AuthMethod.APOP
        assert client.state is aiopop.State.TRANSACTION
    session = server.sessions[0]
    assert session.apop_timestamp is not None
    expected = b"APOP mrose " + apop_digest(session.apop_timestamp, PASSWORD.encode()).encode()
    # CAPA first (for STLS and SASL), then APOP: the strongest method offered here.
    assert session.lines[:2] == [b"CAPA", expected]
    assert not any(PASSWORD.encode() in line for line in session.lines)
    assert session.quit


async def test_apop_call_returns_the_ok_line(server: POP3TestServer) -> None:
    async with client_for(server) as client:
        assert (await client.apop("mrose", PASSWORD)).startswith(b"+OK")


async def test_login_falls_back_to_user_pass_when_apop_is_refused(
    mailbox: Mailbox, pop3_server: POP3ServerFixture
) -> None:
    server = (await pop3_server.start(mailboxes={"mrose": mailbox}, apop_accepted=False)).server
    async with client_for(server) as client:
        method = await client.login("mrose", PASSWORD, allow_cleartext=True)
        assert method is AuthMethod.USER
        assert str(method) == "USER"
    verbs = [line.split()[0] for line in server.sessions[0].lines]
    assert verbs == [b"CAPA", b"APOP", b"USER", b"PASS", b"QUIT"]


async def test_login_without_apop_refuses_cleartext_unless_allowed(mailbox: Mailbox) -> None:
    server = POP3TestServer({"mrose": mailbox}, apop=False)
    async with server, client_for(server) as client:
        assert client.apop_timestamp is None
        with pytest.raises(
            aiopop.APOPNotOfferedError, match=r"^the server's greeting offers no APOP timestamp$"
        ):
            await client.apop("mrose", PASSWORD)
        with pytest.raises(aiopop.InsecureLoginError) as info:
            await client.login("mrose", PASSWORD)
        assert str(info.value) == (
            "the server offers only USER, which would send the password in cleartext; "
            "no password was sent. Use POP3_SSL or a server that offers STLS, or pass "
            "allow_cleartext=True where the network path is trusted"
        )
        # Nothing but CAPA reached the server: no APOP, no USER, no PASS.
        assert server.sessions[0].lines == [b"CAPA"]
        assert await client.login("mrose", PASSWORD, allow_cleartext=True) is AuthMethod.USER


async def test_login_does_not_fall_back_on_a_temporary_refusal(
    mailbox: Mailbox, pop3_server: POP3ServerFixture
) -> None:
    mailbox.locked = True
    server = (await pop3_server.start(mailboxes={"mrose": mailbox})).server
    async with client_for(server) as client:
        with pytest.raises(aiopop.AuthenticationError) as info:
            await client.login("mrose", PASSWORD, allow_cleartext=True)
    assert info.value.code == "IN-USE"
    assert info.value.is_temporary
    assert [line.split()[0] for line in server.sessions[0].lines] == [b"CAPA", b"APOP", b"QUIT"]


async def test_wrong_password_carries_the_servers_explanation(server: POP3TestServer) -> None:
    async with client_for(server) as client:
        with pytest.raises(aiopop.AuthenticationError) as info:
            await client.login("mrose", "wrong", allow_cleartext=True)
    error = info.value
    assert isinstance(error, aiopop.ResponseError)
    assert isinstance(error, aiopop.error_proto)
    assert error.code == "AUTH"
    assert error.is_credentials_problem
    assert not error.is_temporary
    assert "Authentication failed" in error.response
    assert "Authentication failed" in str(error)
    assert "wrong" not in str(error)


async def test_stat_list_uidl_retr_top(server: POP3TestServer) -> None:
    async with client_for(server) as client:
        await client.login("mrose", PASSWORD)
        sizes = [len(m) for m in MESSAGES]
        stat = await client.stat()
        assert stat == Stat(3, sum(sizes))
        assert "%d messages totaling %d bytes" % stat == f"3 messages totaling {sum(sizes)} bytes"
        assert await client.list() == [ListEntry(i + 1, s) for i, s in enumerate(sizes)]
        assert await client.list(2) == ListEntry(2, sizes[1])
        uids = await client.uidl()
        assert [u.number for u in uids] == [1, 2, 3]
        assert await client.uidl(3) == UidEntry(3, uids[2].uid)
        for number, message in enumerate(MESSAGES, 1):
            assert await client.retr(number) == message
        assert (
            await client.top(1, 1) == b"Subject: first\r\nFrom: a@example.org\r\n\r\nline one\r\n"
        )
        assert await client.top(1, 0) == b"Subject: first\r\nFrom: a@example.org\r\n\r\n"
        assert (await client.noop()).startswith(b"+OK")
        capabilities = await client.capa()
        assert "UIDL" in capabilities
        assert "TOP" in capabilities


async def test_dele_then_quit_commits(server: POP3TestServer, mailbox: Mailbox) -> None:
    async with client_for(server) as client:
        await client.login("mrose", PASSWORD)
        assert (await client.dele(1)).startswith(b"+OK")
        with pytest.raises(aiopop.ResponseError) as info:
            await client.retr(1)
        # A refused RETR is the message's problem, not the credentials'.
        assert not isinstance(info.value, aiopop.AuthenticationError)
        assert info.value.command == "RETR"
        assert await client.stat() == Stat(2, len(MESSAGES[1]) + len(MESSAGES[2]))
    async with client_for(server) as client:
        await client.login("mrose", PASSWORD)
        assert (await client.stat()).count == 2
        assert await client.retr(1) == MESSAGES[1]


async def test_dele_then_rset_keeps_everything(server: POP3TestServer) -> None:
    async with client_for(server) as client:
        await client.login("mrose", PASSWORD)
        await client.dele(1)
        await client.dele(2)
        assert (await client.rset()).startswith(b"+OK")
        assert (await client.stat()).count == 3
    async with client_for(server) as client:
        await client.login("mrose", PASSWORD)
        assert (await client.stat()).count == 3
    assert server.sessions[0].lines[2:] == [b"DELE 1", b"DELE 2", b"RSET", b"STAT", b"QUIT"]


async def test_leaving_async_with_by_an_exception_rolls_deletions_back(
    server: POP3TestServer,
) -> None:
    client = client_for(server)

    async def fail_after_dele() -> None:
        async with client:
            await client.login("mrose", PASSWORD)
            await client.dele(1)
            raise KeyError("the program failed before it stored message 1")

    with pytest.raises(KeyError):
        await fail_after_dele()
    assert not server.sessions[0].quit
    assert not client.is_connected
    async with client_for(server) as client:
        await client.login("mrose", PASSWORD)
        assert (await client.stat()).count == 3


async def test_quit_refused_still_closes() -> None:
    async with logged_in(
        [Expect(b"QUIT"), Send(b"-ERR [SYS/PERM] some deleted messages not removed\r\n")]
    ) as (_server, client):
        with pytest.raises(aiopop.ResponseError) as info:
            await client.quit()
        assert info.value.code == "SYS/PERM"
        assert not client.is_connected


# -- local errors: nothing is sent ----------------------------------------------------


async def test_wrong_state_is_refused_before_sending(server: POP3TestServer) -> None:
    async with client_for(server) as client:
        with pytest.raises(aiopop.CommandStateError, match="before logging in"):
            await client.stat()
        with pytest.raises(aiopop.CommandStateError):
            await client.pass_(PASSWORD)
        await client.login("mrose", PASSWORD)
        with pytest.raises(aiopop.CommandStateError, match="after logging in"):
            await client.user("mrose")
    assert [line.split()[0] for line in server.sessions[0].lines] == [b"CAPA", b"APOP", b"QUIT"]


@pytest.mark.parametrize("bad", ["mrose\r\nDELE 1", "a\x00b", "tab\there", "esc\x1b"])
async def test_injection_is_refused_before_sending(server: POP3TestServer, bad: str) -> None:
    async with client_for(server) as client:
        with pytest.raises(ValueError, match="control character"):
            await client.user(bad)
        with pytest.raises(ValueError, match=r"control character|space"):
            await client.apop(bad, PASSWORD)
    assert server.sessions[0].lines == [b"QUIT"]


async def test_argument_checks(server: POP3TestServer) -> None:
    async with client_for(server) as client:
        with pytest.raises(ValueError, match=r"^APOP: the user name cannot contain a space$"):
            await client.apop("two words", PASSWORD)
        await client.login("mrose", PASSWORD)
        for bad in (0, -1, True, "1"):
            with pytest.raises(ValueError, match="message number"):
                await client.retr(bad)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="line count"):
            await client.top(1, -1)
        with pytest.raises(ValueError, match="line count"):
            await client.top(1, True)
    assert [line.split()[0] for line in server.sessions[0].lines] == [b"CAPA", b"APOP", b"QUIT"]


async def test_utf8_credentials(mailbox: Mailbox) -> None:
    async with POP3TestServer({"j\u00fcrgen": mailbox}) as server, client_for(server) as client:
        with pytest.raises(ValueError, match="UTF8"):
            await client.user("j\u00fcrgen")
        assert (await client.utf8()).startswith(b"+OK")
        await client.user("j\u00fcrgen")
        await client.pass_(PASSWORD)
        assert (await client.stat()).count == 3


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"timeout": 0}, "timeout must be positive or None"),
        ({"timeout": -1.0}, "timeout must be positive or None"),
        ({"max_line_length": 511}, "max_line_length must be at least 512 (RFC 2449 section 4)"),
        ({"max_message_size": -1}, "max_message_size must be non-negative or None"),
        ({"max_listing_size": -1}, "max_listing_size must be non-negative or None"),
        ({"max_in_flight": 0}, "max_in_flight must be at least 1"),
    ],
)
def test_constructor_refuses_bad_options(options: dict[str, Any], message: str) -> None:
    for cls in (aiopop.POP3, aiopop.POP3_SSL):
        with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
            cls("127.0.0.1", **options)


def test_constructor_accepts_the_smallest_options_and_keeps_them() -> None:
    smallest: dict[str, Any] = {
        "timeout": None,
        "max_line_length": 512,
        "max_message_size": 0,
        "max_listing_size": 0,
        "max_in_flight": 1,
        "pipelining": False,
        "local_addr": ("127.0.0.1", 0),
    }
    others: dict[str, Any] = {
        "timeout": 3.5,
        "max_line_length": 600,
        "max_message_size": 7,
        "max_listing_size": 9,
        "max_in_flight": 2,
        "pipelining": True,
        "local_addr": ("127.0.0.1", 1234),
    }
    for options in (smallest, others):
        for client in (
            aiopop.POP3("mail.example.org", 1, **options),
            aiopop.POP3_SSL("mail.example.org", 1, **options),
        ):
            assert {name: getattr(client, name) for name in options} == options
    assert repr(aiopop.POP3("mail.example.org", 1)) == "<POP3 mail.example.org:1 not connected>"
    assert (
        repr(aiopop.POP3_SSL("mail.example.org")) == "<POP3_SSL mail.example.org:995 not connected>"
    )


def test_constructor_checks_and_does_no_io() -> None:
    client = aiopop.POP3("127.0.0.1")
    assert client.port == aiopop.POP3_PORT
    assert not client.is_connected
    assert client.state is aiopop.State.CLOSED
    assert client.apop_timestamp is None
    with pytest.raises(aiopop.CommandStateError, match=r"^not connected$"):
        client.getwelcome()
    secure = aiopop.POP3_SSL("127.0.0.1")
    assert secure.port == aiopop.POP3_SSL_PORT
    assert secure.is_tls
    assert secure.ssl_context is not None
    assert secure.ssl_context.verify_mode is ssl.CERT_REQUIRED
    assert secure.ssl_context.check_hostname


async def test_commands_need_a_connection(server: POP3TestServer) -> None:
    client = client_for(server)
    with pytest.raises(aiopop.CommandStateError, match=r"^not connected$"):
        await client.noop()
    await client.connect()
    with pytest.raises(aiopop.CommandStateError, match=r"^already connected$"):
        await client.connect()
    await client.close()
    await client.close()
    with pytest.raises(aiopop.CommandStateError, match=r"^not connected$"):
        await client.noop()


# -- concurrency and cancellation ----------------------------------------------------


async def test_tasks_sharing_a_client_each_get_their_own_reply(server: POP3TestServer) -> None:
    async with client_for(server) as client:
        await client.login("mrose", PASSWORD)
        numbers = [1, 2, 3] * 5
        results = await asyncio.gather(*(client.retr(n) for n in numbers))
        assert results == [MESSAGES[n - 1] for n in numbers]
        stat, listing, message = await asyncio.gather(client.stat(), client.list(), client.retr(3))
        assert stat.count == 3
        assert len(listing) == 3
        assert message == MESSAGES[2]


async def test_a_cancelled_command_does_not_desynchronise_the_next() -> None:
    async with logged_in(
        [
            Expect(b"RETR 1"),
            Sleep(1.0),  # long enough that the cancel surely comes first
            Send(b"+OK\r\nthe first message\r\n.\r\n"),
            Expect(b"STAT"),
            Send(b"+OK 1 19\r\n"),
        ]
    ) as (server, client):
        task = asyncio.create_task(client.retr(1))
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await client.stat() == Stat(1, 19)
        assert client.is_connected
        await client.close()
    assert server.mismatches == []


async def test_cancelled_while_waiting_for_the_lock_sends_nothing(server: POP3TestServer) -> None:
    async with client_for(server) as client:
        await client.login("mrose", PASSWORD)
        first = asyncio.create_task(client.retr(2))
        second = asyncio.create_task(client.retr(3))
        await asyncio.sleep(0)
        second.cancel()
        assert await first == MESSAGES[1]
        with pytest.raises(asyncio.CancelledError):
            await second
        assert await client.retr(1) == MESSAGES[0]
    assert [line.split()[0] for line in server.sessions[0].lines].count(b"RETR") == 2


# -- timeouts ------------------------------------------------------------------------


async def test_a_status_line_trickled_byte_by_byte_hits_the_timeout() -> None:
    async with logged_in(
        [Expect(b"RETR 1"), Trickle(b"+OK " + b"z" * 100 + b"\r\n", 0.05)], timeout=0.5
    ) as (_server, client):
        with pytest.raises(aiopop.POP3TimeoutError, match="no complete reply") as info:
            await client.retr(1)
        assert isinstance(info.value, TimeoutError)
        assert not client.is_connected


async def test_a_message_trickled_steadily_outlives_the_timeout() -> None:
    # 40 octets, one every 0.05 s: 2 s in all, with a 0.5 s timeout.
    body = b"slow\r\n" * 5 + b"end\r\n.\r\n"
    async with logged_in(
        [
            Expect(b"RETR 1"),
            Send(b"+OK\r\n"),
            Trickle(body, 0.05),
            Expect(b"NOOP"),
            Send(b"+OK\r\n"),
        ],
        timeout=0.5,
    ) as (_server, client):
        assert await client.retr(1) == b"slow\r\n" * 5 + b"end\r\n"
        assert await client.noop() == b"+OK"


async def test_a_silent_server_hits_the_connect_timeout() -> None:
    async with ScriptedServer([Sleep(5)]) as server:
        client = client_for(server, timeout=0.2)
        with pytest.raises(aiopop.POP3TimeoutError, match="connecting"):
            await client.connect()
        assert not client.is_connected


# -- hostile and broken servers --------------------------------------------------------


async def test_err_greeting() -> None:
    async with ScriptedServer([Send(b"-ERR [SYS/TEMP] too busy\r\n")]) as server:
        client = client_for(server)
        with pytest.raises(aiopop.ResponseError) as info:
            await client.connect()
        assert not isinstance(info.value, aiopop.AuthenticationError)
        assert info.value.code == "SYS/TEMP"
        assert info.value.command == "greeting"
        assert info.value.response == "[SYS/TEMP] too busy"
        assert str(info.value) == "greeting: -ERR [SYS/TEMP] too busy"
        assert info.value.is_temporary
        assert not client.is_connected


async def test_unrequested_lines_after_the_greeting_are_refused() -> None:
    steps: list[Step] = [Send(b"+OK ready\r\n1 120\r\n2 200\r\n.\r\n"), WaitForClose()]
    async with ScriptedServer(steps) as server:
        client = client_for(server)
        await client.connect()
        # The extra lines came in the greeting's segment: USER is refused unsent.
        with pytest.raises(aiopop.ProtocolError, match="nobody asked for"):
            await client.user("u")
        assert not client.is_connected
    assert server.received == []


async def test_overlong_status_line() -> None:
    async with logged_in([Expect(b"NOOP"), Send(b"+OK " + b"a" * 100_000), WaitForClose()]) as (
        _server,
        client,
    ):
        with pytest.raises(aiopop.ProtocolError, match="longer than"):
            await client.noop()
        assert not client.is_connected


async def test_greeting_with_a_megabyte_of_angle_brackets() -> None:
    async with ScriptedServer(
        [Send(b"+OK " + b"<" * 1_000_000 + b"\r\n"), WaitForClose()]
    ) as server:
        client = client_for(server)
        with pytest.raises(aiopop.ProtocolError):
            await client.connect()


async def test_message_cut_short_is_never_returned() -> None:
    async with logged_in(
        [Expect(b"RETR 1"), Send(b"+OK\r\nSubject: x\r\n\r\nhalf a mess"), Close()]
    ) as (_server, client):
        with pytest.raises(aiopop.ConnectionLostError) as info:
            await client.retr(1)
        assert isinstance(info.value, ConnectionError)
        assert not client.is_connected


async def test_server_gone_between_commands() -> None:
    async with logged_in([Close()]) as (_server, client):
        await asyncio.sleep(0.05)
        with pytest.raises(aiopop.ConnectionLostError):
            await client.stat()


async def test_malformed_stat_is_a_protocol_error() -> None:
    async with logged_in([Expect(b"STAT"), Send(b"+OK abc\r\n"), WaitForClose()]) as (
        _server,
        client,
    ):
        with pytest.raises(aiopop.ProtocolError, match="STAT"):
            await client.stat()


async def test_message_size_cap() -> None:
    async with logged_in(
        [Expect(b"RETR 1"), Send(b"+OK\r\n" + b"m" * 2000 + b"\r\n.\r\n"), WaitForClose()],
        max_message_size=1000,
    ) as (_server, client):
        with pytest.raises(aiopop.ProtocolError, match="larger than"):
            await client.retr(1)


async def test_server_text_in_errors_is_escaped() -> None:
    async with logged_in([Expect(b"DELE 1"), Send(b"-ERR \x1b[2J\x1b]0;pwned\x07 gone\r\n")]) as (
        _server,
        client,
    ):
        with pytest.raises(aiopop.ResponseError) as info:
            await client.dele(1)
        assert "\x1b" not in str(info.value)
        assert "\\x1b[2J" in info.value.response
        await client.close()


async def test_debug_log_redacts_secrets(
    server: POP3TestServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="aiopop")
    async with client_for(server) as client:
        await client.login("mrose", PASSWORD)
        timestamp = client.apop_timestamp
        assert timestamp is not None
    async with client_for(server) as client:
        await client.user("mrose")
        await client.pass_(PASSWORD)
        await client.dele(1)
    digest = apop_digest(timestamp, PASSWORD.encode())
    client_lines = [m for m in caplog.messages if m.startswith("C: ")]
    assert client_lines == [
        "C: CAPA",
        "C: APOP mrose <redacted>",
        "C: QUIT",
        "C: USER mrose",
        "C: PASS <redacted>",
        "C: DELE 1",
        "C: QUIT",
    ]
    assert PASSWORD not in caplog.text
    assert digest not in caplog.text


async def test_debug_log_shows_server_lines_escaped(caplog: pytest.LogCaptureFixture) -> None:
    script: list[Step] = [
        Send(b"+OK hello \x1b[31mred\r\n"),
        Expect(b"USER u"),
        Send(b"-ERR \x1b]0;pwned\x07 100%s gone\r\n"),
    ]
    caplog.set_level(logging.DEBUG, logger="aiopop")
    async with ScriptedServer(script) as server:
        client = client_for(server)
        await client.connect()
        with pytest.raises(aiopop.AuthenticationError):
            await client.user("u")
        await client.close()
    server_lines = [m for m in caplog.messages if m.startswith("S: ")]
    assert server_lines == ["S: +OK hello \\x1b[31mred", "S: -ERR \\x1b]0;pwned\\x07 100%s gone"]
    assert not any("\x1b" in record.getMessage() for record in caplog.records)


async def test_debug_log_says_why_login_falls_back(
    mailbox: Mailbox, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="aiopop")
    server = POP3TestServer({"mrose": mailbox}, apop_accepted=False)
    async with server, client_for(server) as client:
        await client.login("mrose", PASSWORD, allow_cleartext=True)
    refused = [m for m in caplog.messages if m.startswith("APOP refused")]
    assert refused == ["APOP refused (APOP: -ERR Unknown command); trying the next method"]


# -- TLS -------------------------------------------------------------------------


async def test_pop3_ssl_with_a_trusted_ca(ca: trustme.CA, mailbox: Mailbox) -> None:
    tls = server_context(ca, "localhost", "127.0.0.1")
    async with POP3TestServer({"mrose": mailbox}, ssl_context=tls, apop=False) as server:
        async with aiopop.POP3_SSL(
            server.host, server.port, ssl_context=client_context(ca)
        ) as client:
            # Over TLS, login() may use USER/PASS without being told.
            assert await client.login("mrose", PASSWORD) is AuthMethod.USER
            assert await client.retr(1) == MESSAGES[0]
        assert server.sessions[0].tls


async def test_pop3_ssl_refuses_an_untrusted_certificate(ca: trustme.CA, mailbox: Mailbox) -> None:
    tls = server_context(ca, "localhost", "127.0.0.1")
    async with POP3TestServer({"mrose": mailbox}, ssl_context=tls) as server:
        client = aiopop.POP3_SSL(server.host, server.port, timeout=5)
        with pytest.raises(ssl.SSLCertVerificationError):
            await client.connect()
        assert not client.is_connected


async def test_pop3_ssl_refuses_a_certificate_for_another_name(
    ca: trustme.CA, mailbox: Mailbox
) -> None:
    tls = server_context(ca, "mail.example.org")
    async with POP3TestServer({"mrose": mailbox}, ssl_context=tls) as server:
        client = aiopop.POP3_SSL(
            server.host, server.port, ssl_context=client_context(ca), timeout=5
        )
        with pytest.raises(ssl.SSLCertVerificationError, match="match"):
            await client.connect()
        named = aiopop.POP3_SSL(
            server.host,
            server.port,
            ssl_context=client_context(ca),
            server_hostname="mail.example.org",
        )
        await named.connect()
        await named.quit()


@contextlib.asynccontextmanager
async def resetting_server(
    reset_after: bytes, *, answer_first: bool = False
) -> AsyncIterator[tuple[str, int]]:
    """A server that says +OK to anything, and resets the connection (TCP RST) on ``reset_after``.

    With ``answer_first`` it answers that line too before the reset.
    """

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"+OK ready\r\n")
        while line := await reader.readline():
            if line.rstrip(b"\r\n") == reset_after:
                if answer_first:
                    writer.write(b"+OK\r\n")
                    await writer.drain()
                sock = writer.get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                writer.transport.abort()
                return
            writer.write(b"+OK\r\n")

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    async with server:
        yield "127.0.0.1", server.sockets[0].getsockname()[1]


async def test_reset_while_reading_a_reply() -> None:
    async with resetting_server(b"NOOP") as (host, port):
        client = aiopop.POP3(host, port, timeout=5)
        await client.connect()
        await client.user("u")
        await client.pass_("p")
        with pytest.raises(
            aiopop.ConnectionLostError,
            match=rf"^connection to {host}:{port} lost: \[Errno \d+\] Connection reset by peer$",
        ):
            await client.noop()
        assert not client.is_connected


async def test_reset_before_the_greeting_fails_connect_at_once() -> None:
    async def handle(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    async with server:
        port = server.sockets[0].getsockname()[1]
        client = aiopop.POP3("127.0.0.1", port, timeout=5)
        async with asyncio.timeout(2):  # not the 5 s of the timeout
            with pytest.raises(
                aiopop.ConnectionLostError,
                match=rf"^connection to 127.0.0.1:{port} lost: .*reset",
            ):
                await client.connect()
        assert not client.is_connected


async def test_reset_between_commands() -> None:
    async with resetting_server(b"USER u", answer_first=True) as (host, port):
        client = aiopop.POP3(host, port, timeout=5)
        await client.connect()
        await client.user("u")
        await asyncio.sleep(0.1)  # the reset arrives while no command is under way
        with pytest.raises(aiopop.ConnectionLostError):
            await client.pass_("p")
        assert not client.is_connected


# -- where connect() goes ----------------------------------------------------------


@contextlib.asynccontextmanager
async def greeting_server(
    host: str, tls: ssl.SSLContext | None = None
) -> AsyncIterator[tuple[int, list[tuple[str, int]]]]:
    """A server on ``host`` that greets, records each client's address, then waits for QUIT."""
    peers: list[tuple[str, int]] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peers.append(writer.get_extra_info("peername"))
        writer.write(b"+OK hello\r\n")
        await reader.readline()
        writer.write(b"+OK bye\r\n")
        await writer.drain()
        writer.close()

    try:
        server = await asyncio.start_server(handle, host, 0, ssl=tls)
    except OSError as exc:  # pragma: no cover - a loopback without 127.0.0.2
        pytest.skip(f"cannot listen on {host}: {exc}")
    async with server:
        yield server.sockets[0].getsockname()[1], peers


@pytest.mark.parametrize("tls", [False, True])
async def test_connect_goes_to_host_and_port_from_local_addr(ca: trustme.CA, tls: bool) -> None:
    # 127.0.0.2, not the default loopback address, so that the host is not taken for granted.
    context = server_context(ca, "127.0.0.2") if tls else None
    async with greeting_server("127.0.0.2", context) as (port, peers):
        local = free_port()
        client = (
            aiopop.POP3_SSL(
                "127.0.0.2",
                port,
                ssl_context=client_context(ca),
                timeout=5,
                local_addr=("127.0.0.1", local),
            )
            if tls
            else aiopop.POP3("127.0.0.2", port, timeout=5, local_addr=("127.0.0.1", local))
        )
        assert await client.connect() == b"+OK hello"
        assert await client.quit() == b"+OK bye"
    assert peers == [("127.0.0.1", local)]


# -- bounds -------------------------------------------------------------------------


async def test_listings_and_top_are_bounded_too() -> None:
    lines = b"1 100\r\n2 200\r\n"  # 14 octets with their CRLFs
    steps: list[Step] = [Expect(b"LIST"), Send(b"+OK\r\n" + lines + b".\r\n")]
    async with logged_in(steps, max_listing_size=13) as (_server, client):
        with pytest.raises(aiopop.ProtocolError, match=r"^LIST listing larger than 13 octets$"):
            await client.list()
        assert not client.is_connected
    steps = [Expect(b"LIST"), Send(b"+OK\r\n" + lines + b".\r\n")]
    async with logged_in(steps, max_listing_size=14) as (_server, client):
        assert await client.list() == [ListEntry(1, 100), ListEntry(2, 200)]
    message = b"Subject: x\r\n\r\n"
    steps = [Expect(b"TOP 1 0"), Send(b"+OK\r\n" + message + b".\r\n"), WaitForClose()]
    async with logged_in(steps, max_message_size=len(message) - 1) as (_server, client):
        with pytest.raises(aiopop.ProtocolError, match=r"^TOP reply larger than 13 octets$"):
            await client.top(1, 0)
    steps = [Expect(b"TOP 1 0"), Send(b"+OK\r\n" + message + b".\r\n")]
    async with logged_in(steps, max_message_size=len(message)) as (_server, client):
        assert await client.top(1, 0) == message


async def test_top_is_bounded_by_inactivity_like_retr() -> None:
    # 1.2 s of steady data with a 0.3 s timeout: a message, not a status line.
    piece = b"h" * 78 + b"\r\n"
    steps: list[Step] = [Expect(b"TOP 1 5"), Send(b"+OK\r\n")]
    for _ in range(12):
        steps += [Send(piece * 10), Sleep(0.1)]
    steps += [Send(b".\r\n")]
    async with logged_in(steps, timeout=0.3) as (server, client):
        assert await client.top(1, 5) == piece * 120
    assert server.mismatches == []


async def test_a_name_queued_behind_utf8_is_still_checked_as_ascii(mailbox: Mailbox) -> None:
    # UTF8 mode starts once the server accepted UTF8 (README: "afterwards"); a
    # non-ASCII name queued before that is refused at once, and never sent.
    async with POP3TestServer({"j\u00fcrgen": mailbox}) as server, client_for(server) as client:
        switched, refused = await asyncio.gather(
            client.utf8(), client.user("j\u00fcrgen"), return_exceptions=True
        )
        assert isinstance(switched, bytes)
        assert isinstance(refused, ValueError)
        assert "call utf8() first" in str(refused)
        assert (await client.user("j\u00fcrgen")).startswith(b"+OK")
    assert server.sessions[0].lines == [b"UTF8", "USER j\u00fcrgen".encode(), b"QUIT"]


# -- deletions that QUIT never committed ------------------------------------------------------


async def gone(client: aiopop.POP3) -> None:
    """Until the client has seen the server close the connection."""
    async with asyncio.timeout(5):
        while client.is_connected:  # noqa: ASYNC110 (the close arrives by itself)
            await asyncio.sleep(0.005)


async def test_leaving_async_with_after_a_lost_connection_reports_rolled_back_deletions() -> None:
    """The DELEs were accepted, then the server vanished: nothing was deleted, and it says so."""
    steps: list[Step] = [
        Expect(b"DELE 1"),
        Send(b"+OK\r\n"),
        Expect(b"DELE 2"),
        Send(b"+OK\r\n"),
        Close(),
    ]
    async with ScriptedServer([*LOGIN, *steps]) as server:
        client = client_for(server, pipelining=False)

        async def delete_two() -> None:
            async with client:
                await client.user("u")
                await client.pass_("p")
                await client.dele(1)
                async for _ in client.dele_many([2]):
                    pass
                assert client.marked == 2
                await gone(client)

        with pytest.raises(aiopop.ConnectionLostError, match="rolled back the 2 deletions"):
            await delete_two()
    assert client.marked == 0


async def test_rset_and_quit_clear_what_is_marked() -> None:
    steps: list[Step] = [
        Expect(b"DELE 1"),
        Send(b"+OK\r\n"),
        Expect(b"RSET"),
        Send(b"+OK\r\n"),
        Close(),
    ]
    async with ScriptedServer([*LOGIN, *steps]) as server:
        client = client_for(server, pipelining=False)
        async with client:  # nothing marked when the server vanished: a quiet close
            await client.user("u")
            await client.pass_("p")
            await client.dele(1)
            await client.rset()
            assert client.marked == 0
            await gone(client)
    assert server.mismatches == []
