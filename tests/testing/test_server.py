"""The in-process POP3 server on the wire: greeting, lifecycle, a whole session, errors.

The server is driven with raw asyncio streams, to see the exact octets on the wire.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import ssl
import tracemalloc

import pytest

from aiopop.testing import (
    MAX_LINE,
    GeneratedMessage,
    Mailbox,
    POP3TestServer,
)
from aiopop.testing._session import dot_stuff
from tests.helpers.server import FIRST_CRLF, SECOND, THIRD, Wire, content, mailboxes, unstuff

# -- Greeting, construction and lifecycle -----------------------------------------


async def test_greeting_carries_a_fresh_apop_timestamp(server: POP3TestServer) -> None:
    first, second = await Wire.pop(server), await Wire.pop(server)
    pattern = rb"\+OK aiopop test POP3 server ready (<\d+\.\d+\.\d+@aiopop\.test>)\r\n"
    stamps = []
    for wire in (first, second):
        match = re.fullmatch(pattern, wire.greeting)
        assert match
        stamps.append(match[1])
        await wire.close()
    assert stamps[0] != stamps[1]
    assert [s.apop_timestamp for s in server.sessions] == stamps


async def test_custom_greeting_and_hostname() -> None:
    async with POP3TestServer({}, greeting=b"hello", hostname="pop.example") as srv:
        wire = await Wire.pop(srv)
        assert re.fullmatch(rb"\+OK hello <[\d.]+@pop\.example>\r\n", wire.greeting)
        assert await wire.cmd(b"QUIT") == b"+OK pop.example POP3 server signing off\r\n"
        assert await wire.at_eof()
        await wire.close()
    async with POP3TestServer({}, greeting=b"", apop=False) as srv:
        wire = await Wire.pop(srv)
        assert wire.greeting == b"+OK\r\n"
        await wire.close()


def test_constructor_validates_arguments() -> None:
    with pytest.raises(ValueError, match="hostname"):
        POP3TestServer({}, hostname="bad name")
    with pytest.raises(ValueError, match="hostname"):
        POP3TestServer({}, hostname="a<b")
    with pytest.raises(ValueError, match="greeting"):
        POP3TestServer({}, greeting=b"two\r\nlines")
    for delay in (-1.0, float("nan")):
        with pytest.raises(ValueError, match="failed_login_delay"):
            POP3TestServer({}, failed_login_delay=delay)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    with pytest.raises(ValueError, match="STLS"):
        POP3TestServer({}, ssl_context=ctx, starttls_context=ctx)
    with pytest.raises(ValueError, match="prohibited"):
        POP3TestServer({"bell\x07": Mailbox("pw")})


async def test_empty_greeting_with_apop() -> None:
    async with POP3TestServer({}, greeting=b"") as srv:
        wire = await Wire.pop(srv)
        assert re.fullmatch(rb"\+OK <[\d.]+@aiopop\.test>\r\n", wire.greeting)
        await wire.close()


async def test_ipv6_loopback() -> None:
    try:
        srv = POP3TestServer(mailboxes(), host="::1")
        await srv.start()
    except OSError:
        pytest.skip("no IPv6 loopback here")
    try:
        wire = await Wire.pop(srv)
        assert (await wire.login()).startswith(b"+OK")
        await wire.close()
    finally:
        await srv.close()


async def test_start_close_lifecycle() -> None:
    srv = POP3TestServer(mailboxes())
    await srv.close()  # closing a server never started is harmless
    await srv.start()
    assert srv.port != 0
    with pytest.raises(RuntimeError, match="already started"):
        await srv.start()
    await srv.close()
    await srv.close()
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection(srv.host, srv.port)


async def test_close_aborts_open_sessions() -> None:
    srv = POP3TestServer(mailboxes())
    await srv.start()
    wire = await Wire.pop(srv)
    assert (await wire.login()).startswith(b"+OK")
    await wire.send(b"DELE 1\r\n")
    assert (await wire.line()).startswith(b"+OK")
    await srv.close()
    assert await wire.at_eof()
    await wire.close()
    assert srv.sessions[0].closed
    assert not srv.sessions[0].quit
    assert len(srv.mailboxes["alice"].messages) == 3


# -- A whole session, on the wire ---------------------------------------------------


async def test_transaction_on_the_wire(server: POP3TestServer) -> None:
    wire = await Wire.pop(server)
    assert await wire.cmd(b"USER alice") == b"+OK Send the password with PASS\r\n"
    sizes = [len(FIRST_CRLF), len(SECOND), len(THIRD)]
    total = sum(sizes)
    assert await wire.cmd(b"PASS secret") == (
        b"+OK Mailbox locked and ready, 3 messages (%d octets)\r\n" % total
    )
    assert await wire.cmd(b"STAT") == b"+OK 3 %d\r\n" % total
    first, listing = await wire.multi(b"LIST")
    assert first == b"+OK 3 messages (%d octets)\r\n" % total
    assert listing == b"1 %d\r\n2 %d\r\n3 %d\r\n" % tuple(sizes)
    assert await wire.cmd(b"LIST 2") == b"+OK 2 %d\r\n" % sizes[1]
    uids = server.mailboxes["alice"].uids
    assert uids is not None
    _, uidl = await wire.multi(b"UIDL")
    assert uidl == b"".join(b"%d %s\r\n" % (i + 1, u.encode()) for i, u in enumerate(uids))
    assert await wire.cmd(b"UIDL 3") == b"+OK 3 %s\r\n" % uids[2].encode()
    first, body = await wire.multi(b"RETR 2")
    assert (first, body) == (b"+OK %d octets\r\n" % sizes[1], SECOND)
    assert await wire.cmd(b"NOOP") == b"+OK\r\n"
    assert await wire.cmd(b"DELE 2") == b"+OK Message 2 deleted\r\n"
    assert await wire.cmd(b"DELE 2") == b"-ERR Message 2 already deleted\r\n"
    assert await wire.cmd(b"RETR 2") == b"-ERR Message 2 already deleted\r\n"
    assert await wire.cmd(b"LIST 2") == b"-ERR Message 2 already deleted\r\n"
    assert await wire.cmd(b"UIDL 2") == b"-ERR Message 2 already deleted\r\n"
    assert await wire.cmd(b"TOP 2 0") == b"-ERR Message 2 already deleted\r\n"
    remaining = total - sizes[1]
    assert await wire.cmd(b"STAT") == b"+OK 2 %d\r\n" % remaining
    _, listing = await wire.multi(b"LIST")
    assert listing == b"1 %d\r\n3 %d\r\n" % (sizes[0], sizes[2])  # numbers do not shift
    _, uidl = await wire.multi(b"UIDL")
    assert uidl == b"1 %s\r\n3 %s\r\n" % (uids[0].encode(), uids[2].encode())
    assert await wire.cmd(b"RSET") == b"+OK Maildrop has 3 messages (%d octets)\r\n" % total
    assert await wire.cmd(b"DELE 3") == b"+OK Message 3 deleted\r\n"
    assert len(server.mailboxes["alice"].messages) == 3  # nothing removed before QUIT
    signoff = b"+OK aiopop.test POP3 server signing off"
    assert await wire.cmd(b"QUIT") == signoff + b" (2 messages left)\r\n"
    assert await wire.at_eof()
    await wire.close()
    assert server.mailboxes["alice"].messages == [FIRST_CRLF, SECOND]
    assert server.mailboxes["alice"].uids == uids[:2]
    record = server.sessions[0]
    assert record.user == "alice"
    assert record.quit
    assert record.lines[:3] == [b"USER alice", b"PASS secret", b"STAT"]
    assert record.keywords[-2:] == ["DELE", "QUIT"]
    assert record.error is None
    assert not record.pipelined_any


async def test_commands_are_case_insensitive(server: POP3TestServer) -> None:
    wire = await Wire.pop(server)
    assert (await wire.cmd(b"user alice")).startswith(b"+OK")
    assert (await wire.cmd(b"Pass secret")).startswith(b"+OK")
    assert (await wire.cmd(b"sTaT")).startswith(b"+OK 3 ")
    first, _ = await wire.multi(b"retr 1")
    assert first.startswith(b"+OK")
    await wire.close()


async def test_dot_stuffing_on_the_wire(server: POP3TestServer) -> None:
    wire = await Wire.pop(server)
    await wire.login()
    first, body = await wire.multi(b"RETR 1")
    assert first == b"+OK %d octets\r\n" % len(FIRST_CRLF)
    assert body == FIRST_CRLF.replace(b"\r\n.", b"\r\n..")
    assert b"\r\n..dot line\r\n..\r\nline 4\r\n" in body
    await wire.close()


async def test_top(server: POP3TestServer) -> None:
    wire = await Wire.pop(server)
    await wire.login()
    assert await wire.multi(b"TOP 3 0") == (
        b"+OK Top of message follows\r\n",
        b"Subject: three\r\n\r\n",
    )
    _, body = await wire.multi(b"TOP 3 2")
    assert body == b"Subject: three\r\n\r\nx\r\nx\r\n"
    _, body = await wire.multi(b"TOP 3 99")
    assert body == THIRD
    _, body = await wire.multi(b"TOP 3 99999999999999999999")
    assert body == THIRD
    _, body = await wire.multi(b"TOP 1 2")  # stuffed like any multi-line response
    assert body == b"From: a@example.com\r\nSubject: one\r\n\r\nline 1\r\n..dot line\r\n"
    await wire.close()


async def test_empty_maildrop(server: POP3TestServer) -> None:
    wire = await Wire.pop(server)
    assert await wire.login(b"bob", b"hunter2") == (
        b"+OK Mailbox locked and ready, 0 messages (0 octets)\r\n"
    )
    assert await wire.multi(b"LIST") == (b"+OK 0 messages (0 octets)\r\n", b"")
    assert await wire.multi(b"UIDL") == (b"+OK Unique-id listing follows\r\n", b"")
    assert await wire.cmd(b"RETR 1") == b"-ERR No such message, only 0 messages in maildrop\r\n"
    signoff = b"+OK aiopop.test POP3 server signing off"
    assert await wire.cmd(b"QUIT") == signoff + b" (0 messages left)\r\n"
    await wire.close()


async def test_pipelined_commands_are_answered_in_order(server: POP3TestServer) -> None:
    wire = await Wire.pop(server)
    await wire.send(b"USER alice\r\nPASS secret\r\nSTAT\r\nRETR 2\r\nLIST 3\r\nQUIT\r\n")
    assert (await wire.line()).startswith(b"+OK Send")
    assert (await wire.line()).startswith(b"+OK Mailbox locked")
    assert (await wire.line()).startswith(b"+OK 3 ")
    assert (await wire.line()).startswith(b"+OK %d octets" % len(SECOND))
    assert await wire.body() == SECOND
    assert await wire.line() == b"+OK 3 %d\r\n" % len(THIRD)
    assert (await wire.line()).startswith(b"+OK aiopop.test POP3 server signing off")
    assert await wire.at_eof()
    await wire.close()
    await server.wait_idle()
    record = server.sessions[0]
    # The greeting had arrived, but each line came before the previous reply.
    assert record.pipelined == record.lines[1:]
    assert record.pipelined == [b"PASS secret", b"STAT", b"RETR 2", b"LIST 3", b"QUIT"]


@pytest.mark.parametrize("announce", [True, False])
async def test_pipelining_is_recorded(announce: bool) -> None:
    async with POP3TestServer(mailboxes(), pipelining=announce) as srv:
        wire = await Wire.pop(srv)
        await wire.login()
        await wire.send(b"STAT\r\nLIST\r\n")
        total = len(FIRST_CRLF) + len(SECOND) + len(THIRD)
        assert await wire.line() == b"+OK 3 %d\r\n" % total
        assert await wire.line() == b"+OK 3 messages (%d octets)\r\n" % total
        assert await wire.body() == b"1 %d\r\n2 %d\r\n3 %d\r\n" % (
            len(FIRST_CRLF),
            len(SECOND),
            len(THIRD),
        )
        assert (await wire.cmd(b"QUIT")).startswith(b"+OK")
        await wire.close()
        await srv.wait_idle()
        record = srv.sessions[0]
        assert record.lines == [b"USER alice", b"PASS secret", b"STAT", b"LIST", b"QUIT"]
        assert record.pipelined == [b"LIST"]
        assert record.pipelined_any


@pytest.mark.parametrize("announce", [True, False])
async def test_waiting_for_each_reply_is_not_pipelining(announce: bool) -> None:
    async with POP3TestServer(mailboxes(), pipelining=announce) as srv:
        wire = await Wire.pop(srv)
        await wire.login()
        assert (await wire.cmd(b"STAT")).startswith(b"+OK 3 ")
        await wire.multi(b"LIST")
        await wire.multi(b"RETR 1")
        assert (await wire.cmd(b"QUIT")).startswith(b"+OK")
        await wire.close()
        await srv.wait_idle()
        record = srv.sessions[0]
        assert record.keywords == ["USER", "PASS", "STAT", "LIST", "RETR", "QUIT"]
        assert record.pipelined == []
        assert not record.pipelined_any


# -- Generated messages on the wire -------------------------------------------------


@pytest.mark.parametrize("chunk", [7, 65536])
async def test_generated_message_on_the_wire(chunk: int, monkeypatch: pytest.MonkeyPatch) -> None:
    # A tiny server chunk puts chunk boundaries before many lines that start with ".".
    monkeypatch.setattr("aiopop.testing._session._STREAM_CHUNK", chunk)
    message = GeneratedMessage(3000, seed=2)
    data = content(message)
    total = len(SECOND) + message.size
    async with POP3TestServer({"alice": Mailbox("secret", [SECOND, message])}) as srv:
        wire = await Wire.pop(srv)
        assert await wire.login() == (
            b"+OK Mailbox locked and ready, 2 messages (%d octets)\r\n" % total
        )
        assert await wire.cmd(b"STAT") == b"+OK 2 %d\r\n" % total
        assert await wire.cmd(b"LIST 2") == b"+OK 2 3000\r\n"
        _, listing = await wire.multi(b"LIST")
        assert listing == b"1 %d\r\n2 3000\r\n" % len(SECOND)
        first, body = await wire.multi(b"RETR 2")
        assert first == b"+OK 3000 octets\r\n"
        assert body == b"".join(dot_stuff([data]))
        assert unstuff(body) == data
        assert await wire.multi(b"TOP 2 3") == (
            b"+OK Top of message follows\r\n",
            b"".join(dot_stuff([message.head(3)])),
        )
        _, top = await wire.multi(b"TOP 2 99999999999")
        assert top == body
        # Pipelined after a streamed response: still answered in order.
        await wire.send(b"RETR 2\r\nSTAT\r\nQUIT\r\n")
        assert await wire.line() == b"+OK 3000 octets\r\n"
        assert await wire.body() == body
        assert await wire.line() == b"+OK 2 %d\r\n" % total
        assert (await wire.line()).startswith(b"+OK aiopop.test POP3 server signing off")
        assert await wire.at_eof()
        await wire.close()
        await srv.wait_idle()
        assert srv.sessions[0].pipelined == [b"STAT", b"QUIT"]


async def read_to_terminator(reader: asyncio.StreamReader) -> tuple[str, int]:
    """Read a multi-line body to its end line in 64 KiB reads, unstuffing and hashing.

    Only whole lines are handled: a partial last line waits for the next read.
    Returns the hex SHA-256 digest and the length of the unstuffed content.
    """
    digest = hashlib.sha256()
    size = 0
    carry = b""
    while True:
        chunk = await reader.read(65536)
        assert chunk, "connection closed inside the response"
        data = carry + chunk
        cut = data.rfind(b"\n") + 1
        lines, carry = b"\r\n" + data[:cut], data[cut:]  # starts as if after a line
        end = lines.find(b"\r\n.\r\n")
        if end >= 0:
            assert len(lines) == end + 5
            assert carry == b""
            lines = lines[: end + 2]
        body = lines.replace(b"\r\n.", b"\r\n")[2:]
        digest.update(body)
        size += len(body)
        if end >= 0:
            return digest.hexdigest(), size


@pytest.mark.slow
async def test_a_100_mb_generated_message_is_streamed_in_bounded_memory() -> None:
    message = GeneratedMessage(100 * 1024 * 1024, seed=1)
    async with POP3TestServer({"alice": Mailbox("secret", [message])}) as srv:
        wire = await Wire.pop(srv)
        await wire.login()
        tracemalloc.start()
        try:
            baseline, _ = tracemalloc.get_traced_memory()
            assert await wire.cmd(b"RETR 1") == b"+OK %d octets\r\n" % message.size
            digest, size = await read_to_terminator(wire.reader)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert (await wire.cmd(b"QUIT")).startswith(b"+OK")
        await wire.close()
    # Server and reader together: a few chunks, not the message.
    assert peak - baseline < 4 * 1024 * 1024
    assert size == message.size
    assert digest == message.sha256()


# -- Errors -----------------------------------------------------------------------


async def test_authorization_state_errors(server: POP3TestServer) -> None:
    wire = await Wire.pop(server)
    expected = {
        b"": b"-ERR Empty command",
        b"FOO": b"-ERR Unknown command",
        b"STAT": b"-ERR STAT is not valid in the AUTHORIZATION state",
        b"RETR 1": b"-ERR RETR is not valid in the AUTHORIZATION state",
        b"NOOP": b"-ERR NOOP is not valid in the AUTHORIZATION state",
        b"PASS secret": b"-ERR PASS must immediately follow a successful USER",
        b"USER": b"-ERR Usage: USER name",
        b"USER a b": b"-ERR Usage: USER name",
        b"USER \xff": b"-ERR User name is not valid UTF-8",
        b"USER al\x00ice": b"-ERR Invalid characters in command",
        b"CAPA x": b"-ERR CAPA takes no arguments",
        b"UTF8 x": b"-ERR UTF8 takes no arguments",
        b"QUIT x": b"-ERR QUIT takes no arguments",
        b"STLS": b"-ERR Unknown command",  # not offered without a context
        b"LIST \xc3\xa9": b"-ERR Invalid characters in command",
        b"APOP alice": b"-ERR Usage: APOP name digest",
        b"APOP alice  x": b"-ERR Usage: APOP name digest",
        b"APOP": b"-ERR Usage: APOP name digest",
    }
    for command, reply in expected.items():
        assert await wire.cmd(command) == reply + b"\r\n", command
    await wire.close()


async def test_transaction_state_errors(server: POP3TestServer) -> None:
    wire = await Wire.pop(server)
    await wire.login()
    expected = {
        b"USER alice": b"-ERR USER is not valid in the TRANSACTION state",
        b"PASS secret": b"-ERR PASS is not valid in the TRANSACTION state",
        b"UTF8": b"-ERR UTF8 is not valid in the TRANSACTION state",
        b"STAT 1": b"-ERR STAT takes no arguments",
        b"NOOP 1": b"-ERR NOOP takes no arguments",
        b"RSET 1": b"-ERR RSET takes no arguments",
        b"LIST x": b"-ERR Invalid message number",
        b"LIST ": b"-ERR Invalid message number",
        b"LIST -1": b"-ERR Invalid message number",
        b"LIST 1 2": b"-ERR Invalid message number",
        b"LIST 0": b"-ERR No such message, only 3 messages in maildrop",
        b"LIST 4": b"-ERR No such message, only 3 messages in maildrop",
        b"LIST " + b"9" * 40: b"-ERR Invalid message number",
        b"UIDL 9": b"-ERR No such message, only 3 messages in maildrop",
        b"RETR": b"-ERR Usage: RETR msg",
        b"RETR 1 2": b"-ERR Usage: RETR msg",
        b"RETR x": b"-ERR Invalid message number",
        b"DELE": b"-ERR Usage: DELE msg",
        b"DELE 1 2": b"-ERR Usage: DELE msg",
        b"DELE 7": b"-ERR No such message, only 3 messages in maildrop",
        b"TOP 1": b"-ERR Usage: TOP msg n",
        b"TOP": b"-ERR Usage: TOP msg n",
        b"TOP 1 -1": b"-ERR Invalid line count",
        b"TOP 1 x": b"-ERR Invalid line count",
        b"TOP x 1": b"-ERR Invalid message number",
        b"XTND": b"-ERR Unknown command",
        b"STAT\tx": b"-ERR Invalid characters in command",
    }
    for command, reply in expected.items():
        assert await wire.cmd(command) == reply + b"\r\n", command
    assert (await wire.cmd(b"STAT")).startswith(b"+OK 3 ")  # still usable
    await wire.close()


async def test_bare_lf_is_refused_and_recorded(server: POP3TestServer) -> None:
    wire = await Wire.pop(server)
    await wire.send(b"CAPA\n")
    assert await wire.line() == b"-ERR Command must end with CRLF\r\n"
    await wire.close()
    await server.wait_idle()
    assert server.sessions[0].lines == [b"CAPA\n"]


async def test_overlong_line_ends_the_session(server: POP3TestServer) -> None:
    wire = await Wire.pop(server)
    await wire.send(b"USER " + b"a" * MAX_LINE)
    assert await wire.line() == b"-ERR Line too long\r\n"
    assert await wire.at_eof()
    await wire.close()
    # the server is still serving
    wire = await Wire.pop(server)
    assert (await wire.login()).startswith(b"+OK")
    await wire.close()


async def test_longest_allowed_line_is_accepted(server: POP3TestServer) -> None:
    wire = await Wire.pop(server)
    name = b"a" * (MAX_LINE - len(b"USER \r\n"))
    assert await wire.cmd(b"USER " + name) == b"+OK Send the password with PASS\r\n"
    await wire.close()


async def test_closing_mid_line_is_recorded(server: POP3TestServer) -> None:
    wire = await Wire.pop(server)
    await wire.send(b"USER alice\r\nPASS sec")
    assert (await wire.line()).startswith(b"+OK")
    wire.writer.write_eof()
    assert await wire.at_eof()
    await wire.close()
    await server.wait_idle()
    record = server.sessions[0]
    assert record.lines == [b"USER alice", b"PASS sec"]
    assert record.user is None
    assert record.closed
