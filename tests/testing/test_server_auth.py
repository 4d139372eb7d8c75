"""The in-process POP3 server's authentication (USER/PASS, APOP), CAPA and UTF8."""

from __future__ import annotations

import asyncio
import re
import time
import unicodedata

import pytest

from aiopop.testing import (
    Mailbox,
    POP3TestServer,
)
from tests.helpers.server import FIRST_CRLF, SECOND, Wire, mailboxes, md5_hex

FAILED = b"-ERR [AUTH] Authentication failed.\r\n"


# -- Authentication ------------------------------------------------------------------


async def test_failed_logins_then_success(server: POP3TestServer) -> None:
    wire = await Wire.pop(server)
    failed = b"-ERR [AUTH] Authentication failed.\r\n"
    assert await wire.login(b"alice", b"wrong") == failed
    assert await wire.login(b"nobody", b"secret") == failed
    assert await wire.login(b"alice", b"\xff") == failed  # not UTF-8
    assert await wire.login(b"alice", b"secret\x07") == b"-ERR Invalid characters in command\r\n"
    assert (await wire.cmd(b"USER alice")).startswith(b"+OK")
    assert await wire.cmd(b"PASS") == b"-ERR Usage: PASS password\r\n"
    assert (await wire.login()).startswith(b"+OK Mailbox locked")
    await wire.close()


async def test_close_after_failed_login() -> None:
    async with POP3TestServer(mailboxes(), close_after_failed_login=True) as srv:
        wire = await Wire.pop(srv)
        # Usage errors are not refused credentials: the session goes on.
        assert await wire.cmd(b"PASS x") == (
            b"-ERR PASS must immediately follow a successful USER\r\n"
        )
        assert (await wire.cmd(b"USER alice")).startswith(b"+OK")
        await wire.send(b"PASS wrong\r\nNOOP\r\n")
        assert await wire.line() == FAILED
        assert await wire.at_eof()
        await wire.close()
        for command in (b"APOP alice " + b"0" * 32, b"APOP nobody " + b"0" * 32):
            wire = await Wire.pop(srv)
            assert await wire.cmd(command) == FAILED
            assert await wire.at_eof()
            await wire.close()
        await srv.wait_idle()
        first = srv.sessions[0]
        assert first.lines == [b"PASS x", b"USER alice", b"PASS wrong"]  # NOOP never read
        assert first.pipelined == []
        assert all(record.closed and not record.quit for record in srv.sessions)


async def test_failed_login_delay_then_close() -> None:
    delay = 0.2
    async with POP3TestServer(
        mailboxes(), close_after_failed_login=True, failed_login_delay=delay
    ) as srv:
        wire = await Wire.pop(srv)
        assert (await wire.cmd(b"USER alice")).startswith(b"+OK")
        start = time.monotonic()
        assert await wire.cmd(b"PASS wrong") == FAILED
        assert time.monotonic() - start >= delay - 0.001
        assert await wire.at_eof()
        await wire.close()


async def test_failed_login_delay_without_close() -> None:
    delay = 0.3
    async with POP3TestServer(mailboxes(), failed_login_delay=delay) as srv:
        wire = await Wire.pop(srv)
        assert (await wire.cmd(b"USER alice")).startswith(b"+OK")
        start = time.monotonic()
        await wire.send(b"PASS wrong\r\n")
        await asyncio.sleep(0.05)
        await wire.send(b"USER alice\r\n")  # sent while the server waits
        assert await wire.line() == FAILED
        assert time.monotonic() - start >= delay - 0.001
        assert (await wire.line()).startswith(b"+OK Send the password")
        assert (await wire.cmd(b"PASS secret")).startswith(b"+OK Mailbox locked")
        await wire.close()
        await srv.wait_idle()
        assert srv.sessions[0].pipelined == [b"USER alice"]


async def test_correct_logins_are_not_delayed_or_closed() -> None:
    # A delay long enough that any wait would trip the reader's 5 s timeout.
    async with POP3TestServer(
        mailboxes(), close_after_failed_login=True, failed_login_delay=60
    ) as srv:
        wire = await Wire.pop(srv)
        assert (await wire.login()).startswith(b"+OK Mailbox locked")
        assert (await wire.cmd(b"STAT")).startswith(b"+OK 3 ")
        assert (await wire.cmd(b"QUIT")).startswith(b"+OK")
        await wire.close()
        wire = await Wire.pop(srv)
        stamp = re.search(rb"<[^>]*>", wire.greeting)
        assert stamp
        digest = md5_hex(stamp[0] + b"hunter2")
        assert (await wire.cmd(b"APOP bob " + digest)).startswith(b"+OK Mailbox locked")
        await wire.close()


async def test_pass_must_follow_user_immediately(server: POP3TestServer) -> None:
    wire = await Wire.pop(server)
    assert (await wire.cmd(b"USER alice")).startswith(b"+OK")
    assert await wire.cmd(b"USER alice") == b"-ERR Send PASS or QUIT after a successful USER\r\n"
    assert (await wire.cmd(b"USER alice")).startswith(b"+OK")
    assert await wire.cmd(b"APOP alice x") == b"-ERR Send PASS or QUIT after a successful USER\r\n"
    assert (await wire.cmd(b"USER alice")).startswith(b"+OK")
    assert (await wire.cmd(b"CAPA")).startswith(b"+OK")
    await wire.body()
    assert await wire.cmd(b"PASS secret") == (
        b"-ERR PASS must immediately follow a successful USER\r\n"
    )
    await wire.close()


async def test_password_may_contain_spaces() -> None:
    async with POP3TestServer({"carol": Mailbox("correct horse battery")}) as srv:
        wire = await Wire.pop(srv)
        assert (await wire.login(b"carol", b"correct horse battery")).startswith(b"+OK")
        await wire.close()


async def test_apop_on_the_wire(server: POP3TestServer) -> None:
    wire = await Wire.pop(server)
    stamp = re.search(rb"<[^>]*>", wire.greeting)
    assert stamp
    digest = md5_hex(stamp[0] + b"secret")
    assert await wire.cmd(b"APOP alice " + digest.upper()) == (
        b"-ERR [AUTH] Authentication failed.\r\n"
    )
    assert await wire.cmd(b"APOP nobody " + digest) == b"-ERR [AUTH] Authentication failed.\r\n"
    assert await wire.cmd(b"APOP \xff " + digest) == b"-ERR [AUTH] Authentication failed.\r\n"
    assert (await wire.cmd(b"APOP alice " + digest)).startswith(b"+OK Mailbox locked")
    await wire.close()
    await server.wait_idle()
    assert server.sessions[0].user == "alice"
    assert b"secret" not in b"".join(server.sessions[0].lines)


async def test_apop_digest_is_checked_independently_of_the_client(
    server: POP3TestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A client whose digest is wrong must fail here: the server does not reuse it.
    import aiopop._apop

    monkeypatch.setattr(aiopop._apop, "_selected", lambda data: "0" * 32)
    client = aiopop.POP3(server.host, server.port)
    async with client:
        with pytest.raises(aiopop.AuthenticationError):
            await client.apop("alice", "secret")
    assert b"APOP alice " + b"0" * 32 in server.sessions[0].lines


async def test_apop_not_accepted_keeps_the_timestamp() -> None:
    async with POP3TestServer(mailboxes(), apop_accepted=False) as srv:
        wire = await Wire.pop(srv)
        stamp = re.search(rb"<[^>]*>", wire.greeting)
        assert stamp
        digest = md5_hex(stamp[0] + b"secret")
        assert await wire.cmd(b"APOP alice " + digest) == b"-ERR Unknown command\r\n"
        assert (await wire.login()).startswith(b"+OK")
        await wire.close()


async def test_apop_off_has_no_timestamp() -> None:
    async with POP3TestServer(mailboxes(), apop=False) as srv:
        wire = await Wire.pop(srv)
        assert wire.greeting == b"+OK aiopop test POP3 server ready\r\n"
        assert await wire.cmd(b"APOP alice 0123") == b"-ERR Unknown command\r\n"
        await wire.close()
        assert srv.sessions[0].apop_timestamp is None


async def test_user_pass_disabled() -> None:
    async with POP3TestServer(mailboxes(), user_pass=False) as srv:
        wire = await Wire.pop(srv)
        assert await wire.cmd(b"USER alice") == (
            b"-ERR USER/PASS is not available on this server, use APOP\r\n"
        )
        _, capa = await wire.multi(b"CAPA")
        assert b"USER" not in capa.split(b"\r\n")
        await wire.close()


async def test_utf8_credentials_after_saslprep() -> None:
    name = "j\u00f6rg"
    async with POP3TestServer({name: Mailbox("p\u00e4ss\u00a0word")}) as srv:
        wire = await Wire.pop(srv)
        decomposed = unicodedata.normalize("NFD", name).encode()
        password = "p\u00e4ss word".encode()  # U+00A0 is mapped to a plain space
        assert (await wire.login(decomposed, password)).startswith(b"+OK Mailbox locked")
        await wire.close()
        await srv.wait_idle()
        assert srv.sessions[0].user == name
        wire = await Wire.pop(srv)
        assert (await wire.login(b"j\xc3\xb6rg\xc2\x85", b"x")).startswith(b"-ERR [AUTH]")
        await wire.close()


async def test_in_use_on_a_second_session(server: POP3TestServer) -> None:
    first = await Wire.pop(server)
    assert (await first.login()).startswith(b"+OK")
    second = await Wire.pop(server)
    assert await second.login(b"alice", b"wrong") == b"-ERR [AUTH] Authentication failed.\r\n"
    in_use = b"-ERR [IN-USE] Mailbox is locked by another session.\r\n"
    assert await second.login() == in_use
    assert (await second.login(b"bob", b"hunter2")).startswith(b"+OK")  # others are free
    await second.close()
    assert (await first.cmd(b"QUIT")).startswith(b"+OK")
    await first.close()
    third = await Wire.pop(server)
    assert (await third.login()).startswith(b"+OK")
    await third.close()


async def test_locked_mailbox_is_in_use() -> None:
    boxes = mailboxes()
    boxes["alice"].locked = True
    async with POP3TestServer(boxes) as srv:
        wire = await Wire.pop(srv)
        assert await wire.login() == b"-ERR [IN-USE] Mailbox is locked by another session.\r\n"
        await wire.close()


async def test_drop_without_quit_commits_nothing_and_unlocks(server: POP3TestServer) -> None:
    wire = await Wire.pop(server)
    await wire.login()
    assert (await wire.cmd(b"DELE 1")).startswith(b"+OK")
    await wire.close()
    await server.wait_idle()
    assert len(server.mailboxes["alice"].messages) == 3
    assert not server.sessions[0].quit
    wire = await Wire.pop(server)
    assert (await wire.login()).startswith(b"+OK Mailbox locked and ready, 3 messages")
    await wire.close()


async def test_quit_in_authorization_state(server: POP3TestServer) -> None:
    wire = await Wire.pop(server)
    assert (await wire.cmd(b"USER alice")).startswith(b"+OK")
    assert await wire.cmd(b"QUIT") == b"+OK aiopop.test POP3 server signing off\r\n"
    assert await wire.at_eof()
    await wire.close()
    assert server.sessions[0].quit
    assert server.sessions[0].user is None


async def test_concurrent_sessions_on_different_mailboxes(server: POP3TestServer) -> None:
    server.mailboxes["bob"].add(SECOND)

    async def run(user: bytes, password: bytes) -> bytes:
        wire = await Wire.pop(server)
        await wire.login(user, password)
        _, body = await wire.multi(b"RETR 1")
        assert (await wire.cmd(b"DELE 1")).startswith(b"+OK")
        assert (await wire.cmd(b"QUIT")).startswith(b"+OK")
        await wire.close()
        return body

    results = await asyncio.gather(run(b"alice", b"secret"), run(b"bob", b"hunter2"))
    assert list(results) == [FIRST_CRLF.replace(b"\r\n.", b"\r\n.."), SECOND]
    assert len(server.mailboxes["alice"].messages) == 2
    assert server.mailboxes["bob"].messages == []


async def test_mailboxes_and_messages_added_while_running(server: POP3TestServer) -> None:
    server.mailboxes["dave"] = Mailbox("pw")
    server.mailboxes["dave"].messages.append(b"Subject: direct\n\nhi\n")
    wire = await Wire.pop(server)
    assert (await wire.login(b"dave", b"pw")).startswith(b"+OK")
    _, body = await wire.multi(b"RETR 1")
    assert body == b"Subject: direct\r\n\r\nhi\r\n"
    _, uidl = await wire.multi(b"UIDL")
    assert re.fullmatch(rb"1 [\x21-\x7e]{1,70}\r\n", uidl)
    await wire.close()


async def test_unexpected_error_is_recorded_not_raised(
    server: POP3TestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(self: Mailbox) -> list[tuple[bytes, str]]:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(Mailbox, "_open", broken)
    wire = await Wire.pop(server)
    assert (await wire.cmd(b"USER alice")).startswith(b"+OK")
    await wire.send(b"PASS secret\r\n")
    assert await wire.at_eof()
    await wire.close()
    await server.wait_idle()
    assert isinstance(server.sessions[0].error, RuntimeError)
    monkeypatch.undo()
    wire = await Wire.pop(server)
    assert (await wire.login()).startswith(b"+OK")  # the lock was released
    await wire.close()


# -- CAPA and UTF8 ---------------------------------------------------------------------


async def test_capa_in_both_states(server: POP3TestServer) -> None:
    wire = await Wire.pop(server)
    tags = b"TOP\r\nUIDL\r\nUSER\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\nPIPELINING\r\n"
    tags += b"UTF8 USER\r\nIMPLEMENTATION aiopop-testing\r\n"
    assert await wire.multi(b"CAPA") == (b"+OK Capability list follows\r\n", tags)
    await wire.login()
    assert await wire.multi(b"CAPA") == (b"+OK Capability list follows\r\n", tags)
    await wire.close()


async def test_capa_without_pipelining() -> None:
    async with POP3TestServer(mailboxes(), pipelining=False) as srv:
        wire = await Wire.pop(srv)
        _, capa = await wire.multi(b"CAPA")
        assert b"PIPELINING" not in capa
        await wire.close()


async def test_extra_capabilities_are_announced_after_the_usual_ones() -> None:
    async with POP3TestServer(
        mailboxes(), pipelining=False, extra_capabilities=["PIPELINE", "X-VENDOR a b"]
    ) as srv:
        wire = await Wire.pop(srv)
        _, capa = await wire.multi(b"CAPA")
        assert capa.endswith(b"IMPLEMENTATION aiopop-testing\r\nPIPELINE\r\nX-VENDOR a b\r\n")
        assert b"PIPELINING" not in capa
        await wire.close()


def test_extra_capabilities_must_be_single_lines() -> None:
    for bad in ("", "A\r\nB", "TAB\there"):
        with pytest.raises(ValueError, match="extra capability"):
            POP3TestServer({}, extra_capabilities=[bad])


async def test_utf8_headers_need_utf8_mode() -> None:
    utf8 = "Subject: gr\u00fc\u00dfe\r\n\r\nhi\r\n".encode()
    body_8bit = "Subject: plain\r\n\r\ngr\u00fc\u00dfe\r\n".encode()
    boxes = {"alice": Mailbox("secret", [utf8, body_8bit])}
    async with POP3TestServer(boxes) as srv:
        wire = await Wire.pop(srv)
        await wire.login()
        refused = b"-ERR [UTF8] Message has UTF-8 headers, issue UTF8 first\r\n"
        assert await wire.cmd(b"RETR 1") == refused
        assert await wire.cmd(b"TOP 1 0") == refused
        assert (await wire.cmd(b"LIST 1")).startswith(b"+OK 1 ")
        assert await wire.multi(b"RETR 2") == (b"+OK %d octets\r\n" % len(body_8bit), body_8bit)
        await wire.close()
        wire = await Wire.pop(srv)
        assert await wire.cmd(b"UTF8") == b"+OK UTF8 enabled\r\n"
        await wire.login()
        assert await wire.multi(b"RETR 1") == (b"+OK %d octets\r\n" % len(utf8), utf8)
        await wire.close()
        await srv.wait_idle()
        assert [s.utf8 for s in srv.sessions] == [False, True]
    async with POP3TestServer(boxes, require_utf8_mode=False) as srv:
        wire = await Wire.pop(srv)
        await wire.login()
        assert await wire.multi(b"RETR 1") == (b"+OK %d octets\r\n" % len(utf8), utf8)
        await wire.close()
