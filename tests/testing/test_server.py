"""Tests for aiopop.testing: the in-process POP3 server and the scripted server.

The server is driven two ways: with raw asyncio streams, to see the exact
octets on the wire, and with the stdlib poplib in a thread, as an independent
client that knows nothing about this package.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import email
import hashlib
import json
import poplib
import re
import socket
import ssl
import struct
import time
import tracemalloc
import unicodedata
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import pytest
import trustme

from aiopop import sasl
from aiopop.testing import (
    MAX_LINE,
    Close,
    Expect,
    GeneratedMessage,
    Mailbox,
    Mismatch,
    POP3TestServer,
    Respond,
    ScriptedServer,
    Send,
    Sleep,
    StartTLS,
    Step,
    Trickle,
    WaitForClose,
)
from aiopop.testing._generated import rechunk, take_lines
from aiopop.testing._lines import LineReader, LineTooLong, strip_crlf
from aiopop.testing._mailbox import header_end, headers_of, normalise, size_of, top_of
from aiopop.testing._saslprep import saslprep
from aiopop.testing._session import dot_stuff

T = TypeVar("T")

# LF line ends on purpose (stored as CRLF); lines starting with "." to stuff.
FIRST = b"From: a@example.com\nSubject: one\n\nline 1\n.dot line\n.\nline 4\n"
SECOND = b"Subject: two\r\n\r\nbody\r\n"
THIRD = b"Subject: three\r\n\r\n" + b"x\r\n" * 5
FIRST_CRLF = FIRST.replace(b"\n", b"\r\n")
FAILED = b"-ERR [AUTH] Authentication failed.\r\n"


def md5_hex(data: bytes) -> bytes:
    """The APOP digest computed here, independently of the client's code."""
    return hashlib.md5(data, usedforsecurity=False).hexdigest().encode()


def mailboxes() -> dict[str, Mailbox]:
    return {
        "alice": Mailbox("secret", [FIRST, SECOND, THIRD]),
        "bob": Mailbox("hunter2"),
    }


class Wire:
    """A raw POP3 client over asyncio streams, reading one line at a time."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.greeting = b""

    @classmethod
    async def open(cls, server: POP3TestServer | ScriptedServer, **kwargs: Any) -> Wire:
        reader, writer = await asyncio.open_connection(server.host, server.port, **kwargs)
        return cls(reader, writer)

    @classmethod
    async def pop(cls, server: POP3TestServer, **kwargs: Any) -> Wire:
        wire = await cls.open(server, **kwargs)
        wire.greeting = await wire.line()
        return wire

    async def line(self) -> bytes:
        async with asyncio.timeout(5):
            return await self.reader.readline()

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def cmd(self, command: bytes) -> bytes:
        await self.send(command + b"\r\n")
        return await self.line()

    async def body(self) -> bytes:
        """The rest of a multi-line response as sent: dot-stuffed, without the end line."""
        lines = []
        while (line := await self.line()) != b".\r\n":
            assert line, "connection closed inside a multi-line response"
            lines.append(line)
        return b"".join(lines)

    async def multi(self, command: bytes) -> tuple[bytes, bytes]:
        first = await self.cmd(command)
        assert first.startswith(b"+OK"), first
        return first, await self.body()

    async def login(self, user: bytes = b"alice", password: bytes = b"secret") -> bytes:
        assert (await self.cmd(b"USER " + user)).startswith(b"+OK")
        return await self.cmd(b"PASS " + password)

    async def at_eof(self) -> bool:
        async with asyncio.timeout(5):
            return await self.reader.read() == b""

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):  # ssl.SSLError is an OSError
            await self.writer.wait_closed()


@pytest.fixture
async def server() -> AsyncIterator[POP3TestServer]:
    async with POP3TestServer(mailboxes()) as srv:
        yield srv


async def in_thread(fn: Callable[[], T]) -> T:
    return await asyncio.to_thread(fn)


# -- Mailbox and message helpers ------------------------------------------------


def test_normalise_line_ends() -> None:
    assert normalise(b"a\nb\r\nc") == b"a\r\nb\r\nc\r\n"
    assert normalise(b"") == b""
    assert normalise(b"a\rb\n") == b"a\rb\r\n"  # a CR ending no line is content


def test_mailbox_stores_crlf_and_derives_valid_stable_uids() -> None:
    box = Mailbox("pw", [FIRST, SECOND, SECOND])
    assert box.messages == [FIRST_CRLF, SECOND, SECOND]
    assert box.uids is not None
    assert len(set(box.uids)) == 3  # equal messages still get distinct ids
    for uid in box.uids:
        assert 1 <= len(uid) <= 70
        assert re.fullmatch(r"[\x21-\x7e]+", uid)
    assert Mailbox("other", [FIRST, SECOND, SECOND]).uids == box.uids


def test_mailbox_explicit_uids_are_checked() -> None:
    assert Mailbox("pw", [SECOND], uids=["id-1"]).uids == ["id-1"]
    with pytest.raises(ValueError, match="2 unique-ids given for 1 messages"):
        Mailbox("pw", [SECOND], uids=["a", "b"])
    for bad in ["", "has space", "x" * 71, "caf\u00e9"]:
        with pytest.raises(ValueError, match="unique-id"):
            Mailbox("pw", [SECOND], uids=[bad])


def test_mailbox_add_normalises_and_never_reuses_uids() -> None:
    box = Mailbox("pw", [SECOND])
    assert box.uids is not None
    first_uid = box.uids[0]
    box._expunge([0])
    uid = box.add(SECOND)
    assert uid != first_uid
    assert box.add(b"a\nb", uid="mine") == "mine"
    assert box.messages == [SECOND, b"a\r\nb\r\n"]
    assert box.uids == [uid, "mine"]
    with pytest.raises(ValueError, match="unique-id"):
        box.add(SECOND, uid="bad id")


def test_mailbox_repr_hides_password_and_checks_it() -> None:
    assert "hunter2" not in repr(Mailbox("hunter2", [SECOND]))
    with pytest.raises(ValueError, match="prohibited"):
        Mailbox("bell\x07")


def test_mailbox_open_syncs_messages_appended_directly() -> None:
    box = Mailbox("pw", [SECOND])
    box.messages.append(b"Subject: raw\n\nx\n")
    box.uids = None
    entries = box._open()
    assert [m for m, _ in entries] == [SECOND, b"Subject: raw\r\n\r\nx\r\n"]
    assert len({uid for _, uid in entries}) == 2


def test_header_end_and_top_of() -> None:
    assert header_end(b"\r\nbody\r\n") == 2
    assert header_end(b"A: b\r\nC: d\r\n") == 12  # no blank line: all header
    message = b"A: b\r\n\r\n1\r\n2\r\n3\r\n"
    assert top_of(message, 0) == b"A: b\r\n\r\n"
    assert top_of(message, 2) == b"A: b\r\n\r\n1\r\n2\r\n"
    assert top_of(message, 10) == message
    assert top_of(b"A: b\r\n", 3) == b"A: b\r\n"


@pytest.mark.parametrize(
    ("text", "prepared"),
    [
        ("I\u00adX", "IX"),
        ("user", "user"),
        ("USER", "USER"),
        ("\u00aa", "a"),
        ("\u2168", "IX"),
        ("a\u00a0b", "a b"),
        ("\u0627\u0628", "\u0627\u0628"),
    ],
)
def test_saslprep_rfc4013_examples(text: str, prepared: str) -> None:
    assert saslprep(text) == prepared


@pytest.mark.parametrize("text", ["\u0007", "\u0627\u0031", "\u0627a\u0628", "\ue000"])
def test_saslprep_refuses(text: str) -> None:
    with pytest.raises(ValueError, match=r"prohibited|right-to-left"):
        saslprep(text)


def test_saslprep_allows_code_points_newer_than_unicode_3_2() -> None:
    assert saslprep("pw\U0001f642") == "pw\U0001f642"
    assert Mailbox("pw\U0001f642").password == "pw\U0001f642"


# -- GeneratedMessage and streaming helpers ---------------------------------------


def content(message: GeneratedMessage, chunk_size: int = 65536) -> bytes:
    return b"".join(message.chunks(chunk_size))


def unstuff(body: bytes) -> bytes:
    return re.sub(rb"(?m)^\.", b"", body)


def check_lines(data: bytes) -> list[bytes]:
    """Assert that ``data`` is CRLF lines of at most 78 characters; return them."""
    assert data.endswith(b"\r\n")
    lines = data[:-2].split(b"\r\n")
    assert all(b"\r" not in line and b"\n" not in line for line in lines)
    assert max(len(line) for line in lines) <= 78
    return lines


@pytest.mark.parametrize("size", [100, 101, 102, 181, 5000, 65537, 200_000])
def test_generated_message_has_the_exact_size_in_crlf_lines(size: int) -> None:
    message = GeneratedMessage(size)
    data = content(message)
    assert len(data) == size == message.size == size_of(message)
    check_lines(data)
    assert message.sha256() == hashlib.sha256(data).hexdigest()


def test_generated_message_has_lines_that_need_stuffing() -> None:
    data = content(GeneratedMessage(5000))
    lines = check_lines(data)
    assert b"." in lines  # would end the response if the server did not stuff it
    assert b".." in lines
    assert b"" in lines[4:]  # an empty body line
    assert any(line.startswith(b"..") and len(line) > 2 for line in lines)
    assert any(line.startswith(b".") and line[1:2] != b"." and len(line) > 1 for line in lines)
    assert b"".join(dot_stuff([data])) != data


def test_generated_message_sizes_at_block_boundaries() -> None:
    for size in range(100, 300):
        assert len(content(GeneratedMessage(size, seed=size))) == size
    # Sizes of five digits share one header length; the body repeats blocks.
    header, block = (len(piece) for piece in list(GeneratedMessage(50_000)._pieces())[:2])
    for blocks in (2, 3, 4):
        for extra in (-3, -2, -1, 0, 1, 2, 3, 80, 81, 82, 83):
            size = header + blocks * block + extra
            data = content(GeneratedMessage(size))
            assert len(data) == size
            check_lines(data)
            assert data.count(b"\r\nBlock ") == blocks + (extra > 80)


def test_generated_message_chunks_at_any_size_give_the_same_content() -> None:
    message = GeneratedMessage(5000, seed=3)
    whole = content(message)
    for chunk_size in (1, 7, 65536):
        chunks = list(message.chunks(chunk_size))
        assert b"".join(chunks) == whole
        assert all(len(chunk) == chunk_size for chunk in chunks[:-1])
        assert 0 < len(chunks[-1]) <= chunk_size
    assert hashlib.sha256(whole).hexdigest() == message.sha256()
    with pytest.raises(ValueError, match="chunk_size"):
        message.chunks(0)


def test_generated_message_is_deterministic_and_seeded() -> None:
    assert content(GeneratedMessage(3000)) == content(GeneratedMessage(3000, seed=0))
    assert GeneratedMessage(3000) == GeneratedMessage(3000, seed=0)
    other = content(GeneratedMessage(3000, seed=1))
    assert len(other) == 3000
    assert other != content(GeneratedMessage(3000))
    # One block in, the content is not a copy of the first block: blocks are counted.
    assert GeneratedMessage(3000, seed=1).sha256() != GeneratedMessage(3000).sha256()
    headers = email.message_from_bytes(GeneratedMessage(3000, seed=255).head(0))
    assert headers["From"] == "gen@aiopop.test"
    assert headers["Subject"] == "generated"
    assert headers["Message-ID"] == "<3000.ff@aiopop.test>"


def test_generated_message_validates_its_arguments() -> None:
    assert len(content(GeneratedMessage(100, seed=2**64 - 1))) == 100  # longest header
    with pytest.raises(ValueError, match="at least 100"):
        GeneratedMessage(99)
    for seed in (-1, 2**64):
        with pytest.raises(ValueError, match="seed"):
            GeneratedMessage(1000, seed=seed)
    with pytest.raises(ValueError, match="lines"):
        GeneratedMessage(1000).head(-1)


def test_generated_message_head_is_top_of_its_content() -> None:
    message = GeneratedMessage(20_000, seed=5)
    data = content(message)
    for lines in (0, 1, 2, 3, 4, 10, 250, 10**6):
        assert message.head(lines) == top_of(data, lines)
    assert len(message.head(3)) < 400  # only what was asked for is generated
    assert headers_of(message) == data[: header_end(data)] == message.head(0)
    assert list(message._head_chunks(10**6, 4096)) == list(message.chunks(4096))


def test_take_lines_and_rechunk() -> None:
    pieces = [b"a\nb", b"\nc\nd\n", b"e\n"]
    assert list(take_lines(pieces, 0)) == []
    assert list(take_lines(pieces, 1)) == [b"a\n"]
    assert list(take_lines(pieces, 2)) == [b"a\nb", b"\n"]
    assert list(take_lines(pieces, 4)) == [b"a\nb", b"\nc\nd\n"]
    assert list(take_lines(pieces, 9)) == pieces
    assert list(rechunk(pieces, 4)) == [b"a\nb\n", b"c\nd\n", b"e\n"]
    assert list(rechunk([b"", b""], 4)) == []


def test_dot_stuff_gives_the_same_result_at_every_split() -> None:
    data = b".a\r\n..\r\n.\r\nb.c\r\n\r\n.d\r\n"
    expected = b"..a\r\n...\r\n..\r\nb.c\r\n\r\n..d\r\n"
    assert b"".join(dot_stuff([data])) == expected
    assert unstuff(expected) == data
    for first in range(len(data) + 1):
        for second in range(first, len(data) + 1):
            pieces = [data[:first], data[first:second], data[second:]]  # empty pieces too
            assert b"".join(dot_stuff(pieces)) == expected


def test_mailbox_accepts_generated_messages() -> None:
    big = GeneratedMessage(10_000, seed=1)
    box = Mailbox("pw", [SECOND, big, GeneratedMessage(10_000, seed=1)])
    assert box.messages == [SECOND, big, big]
    assert box.messages[1] is big  # kept as it is, never generated into bytes
    assert box.uids is not None
    assert len(set(box.uids)) == 3  # equal generated messages still get distinct ids
    assert Mailbox("other", [SECOND, big, big]).uids == box.uids
    assert Mailbox("pw", [SECOND, GeneratedMessage(10_000, seed=2), big]).uids != box.uids
    small = GeneratedMessage(500)
    uid = box.add(small)
    assert re.fullmatch(r"[\x21-\x7e]{1,70}", uid)
    assert uid not in box.uids[:3]
    assert box.messages[-1] is small
    box.messages.append(GeneratedMessage(300))
    entries = box._open()
    assert entries[-1][0] == GeneratedMessage(300)
    assert len({uid for _, uid in entries}) == 5
    assert [size_of(m) for m, _ in entries] == [len(SECOND), 10_000, 10_000, 500, 300]


# -- LineReader -------------------------------------------------------------------


def reader_with(data: bytes, *, eof: bool = True) -> asyncio.StreamReader:
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    if eof:
        reader.feed_eof()
    return reader


async def test_line_reader_splits_and_returns_a_partial_last_line() -> None:
    lines = LineReader(reader_with(b"one\r\ntwo\nthr"), 100)
    assert await lines.readline() == b"one\r\n"
    assert await lines.readline() == b"two\n"
    assert await lines.readline() == b"thr"
    assert await lines.readline() is None
    assert strip_crlf(b"one\r\n") == b"one"
    assert strip_crlf(b"two\n") == b"two\n"


async def test_line_reader_limits_lines() -> None:
    assert await LineReader(reader_with(b"12345\r\n"), 7).readline() == b"12345\r\n"
    with pytest.raises(LineTooLong):
        await LineReader(reader_with(b"123456\r\n"), 7).readline()
    with pytest.raises(LineTooLong):  # no line feed at all: stop at the limit
        await LineReader(reader_with(b"x" * 50, eof=False), 7).readline()


async def test_line_reader_take_buffered() -> None:
    stream = reader_with(b"STLS\r\nCA", eof=False)
    lines = LineReader(stream, 100)
    assert await lines.readline() == b"STLS\r\n"
    stream.feed_data(b"PA\r\n")  # arrives in the StreamReader, not yet read
    assert await lines.take_buffered() == b"CAPA\r\n"
    assert await lines.take_buffered() == b""  # nothing there: does not wait
    stream.feed_eof()
    assert await lines.take_buffered() == b""
    assert await lines.readline() is None


async def test_line_reader_poll_buffered_keeps_every_octet_in_order() -> None:
    stream = reader_with(b"STAT\r\n", eof=False)
    lines = LineReader(stream, 100)
    assert await lines.readline() == b"STAT\r\n"
    async with asyncio.timeout(1):
        assert not await lines.poll_buffered()  # nothing there: does not wait
    stream.feed_data(b"LI")
    assert await lines.poll_buffered()  # taken from the StreamReader
    stream.feed_data(b"ST\r\nUIDL\r\n")
    assert await lines.poll_buffered()  # already known: the StreamReader is left alone
    assert await lines.readline() == b"LIST\r\n"
    assert await lines.poll_buffered()
    assert await lines.readline() == b"UIDL\r\n"
    stream.feed_eof()
    assert not await lines.poll_buffered()
    assert await lines.readline() is None


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


# -- poplib as an independent client ------------------------------------------------------


async def test_poplib_user_pass_session(server: POP3TestServer) -> None:
    sizes = [len(FIRST_CRLF), len(SECOND), len(THIRD)]
    uids = server.mailboxes["alice"].uids
    assert uids is not None

    def session() -> None:
        pop = poplib.POP3(server.host, server.port, timeout=5)
        assert pop.getwelcome().startswith(b"+OK aiopop test POP3 server ready <")
        caps = pop.capa()
        assert {"TOP", "UIDL", "USER", "RESP-CODES", "PIPELINING"} <= caps.keys()
        assert caps["UTF8"] == ["USER"]
        pop.user("alice")
        pop.pass_("secret")
        assert pop.stat() == (3, sum(sizes))
        assert pop.list()[1] == [b"%d %d" % (i + 1, s) for i, s in enumerate(sizes)]
        single: object = pop.list(3)  # typeshed has no overload for a message number
        assert single == b"+OK 3 %d" % sizes[2]
        assert pop.uidl()[1] == [b"%d %s" % (i + 1, u.encode()) for i, u in enumerate(uids)]
        assert pop.uidl(1) == b"+OK 1 %s" % uids[0].encode()
        _, lines, octets = pop.retr(1)
        # poplib undoes the dot-stuffing: the original lines come back
        assert lines == FIRST.rstrip(b"\n").split(b"\n")
        assert octets == sizes[0]  # the size LIST gave: stuffing not counted
        _, lines, _ = pop.top(3, 1)
        assert lines == [b"Subject: three", b"", b"x"]
        pop.dele(1)
        with pytest.raises(poplib.error_proto, match="already deleted"):
            pop.retr(1)
        assert pop.stat() == (2, sizes[1] + sizes[2])
        pop.rset()
        assert pop.stat() == (3, sum(sizes))
        pop.dele(2)
        pop.noop()
        assert pop.quit().startswith(b"+OK")

    await in_thread(session)
    assert server.mailboxes["alice"].messages == [FIRST_CRLF, THIRD]
    record = server.sessions[0]
    assert record.quit
    assert b"PASS secret" in record.lines


async def test_poplib_retrieves_a_generated_message() -> None:
    message = GeneratedMessage(200 * 1024, seed=9)
    async with POP3TestServer({"alice": Mailbox("secret", [message])}) as srv:

        def session() -> tuple[list[bytes], int, list[bytes]]:
            pop = poplib.POP3(srv.host, srv.port, timeout=10)
            pop.user("alice")
            pop.pass_("secret")
            assert pop.stat() == (1, message.size)
            _, lines, octets = pop.retr(1)
            _, top, _ = pop.top(1, 2)
            pop.quit()
            return lines, octets, top

        lines, octets, top = await in_thread(session)
    # poplib undoes the dot-stuffing: the generated lines come back as they were
    assert b"".join(line + b"\r\n" for line in lines) == content(message)
    assert octets == message.size
    assert b"".join(line + b"\r\n" for line in top) == message.head(2)


async def test_poplib_deletions_need_quit(server: POP3TestServer) -> None:
    def drop() -> None:
        pop = poplib.POP3(server.host, server.port, timeout=5)
        pop.user("alice")
        pop.pass_("secret")
        pop.dele(1)
        pop.dele(2)
        pop.close()  # no QUIT

    def count() -> int:
        pop = poplib.POP3(server.host, server.port, timeout=5)
        pop.user("alice")
        pop.pass_("secret")
        messages = pop.stat()[0]
        pop.quit()
        return messages

    await in_thread(drop)
    await server.wait_idle()
    assert await in_thread(count) == 3


async def test_poplib_apop(server: POP3TestServer) -> None:
    def session() -> tuple[int, int]:
        pop = poplib.POP3(server.host, server.port, timeout=5)
        pop.apop("alice", "secret")
        stat = pop.stat()
        pop.quit()
        return stat

    assert (await in_thread(session))[0] == 3
    assert server.sessions[0].keywords == ["APOP", "STAT", "QUIT"]


async def test_poplib_apop_refused() -> None:
    async with POP3TestServer(mailboxes(), apop_accepted=False) as srv:

        def session() -> None:
            pop = poplib.POP3(srv.host, srv.port, timeout=5)
            with pytest.raises(poplib.error_proto, match="Unknown command"):
                pop.apop("alice", "secret")
            pop.user("alice")  # USER/PASS still works
            pop.pass_("secret")
            pop.quit()

        await in_thread(session)


async def test_poplib_in_use(server: POP3TestServer) -> None:
    def session() -> None:
        first = poplib.POP3(server.host, server.port, timeout=5)
        first.user("alice")
        first.pass_("secret")
        second = poplib.POP3(server.host, server.port, timeout=5)
        second.user("alice")
        with pytest.raises(poplib.error_proto, match=re.escape("[IN-USE]")):
            second.pass_("secret")
        second.quit()
        first.quit()

    await in_thread(session)


# -- TLS ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def server_tls(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost", "127.0.0.1").configure_cert(context)
    return context


@pytest.fixture(scope="module")
def client_tls(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


async def test_implicit_tls(server_tls: ssl.SSLContext, client_tls: ssl.SSLContext) -> None:
    async with POP3TestServer(mailboxes(), ssl_context=server_tls) as srv:

        def session() -> int:
            pop = poplib.POP3_SSL(srv.host, srv.port, context=client_tls, timeout=5)
            pop.user("alice")
            pop.pass_("secret")
            count = pop.stat()[0]
            pop.quit()
            return count

        assert await in_thread(session) == 3
        wire = await Wire.pop(srv, ssl=client_tls, server_hostname="localhost")
        assert wire.greeting.startswith(b"+OK")
        _, capa = await wire.multi(b"CAPA")
        assert b"STLS" not in capa
        await wire.close()
        await srv.wait_idle()
        assert all(s.tls for s in srv.sessions)


async def test_failed_handshake_leaves_the_server_running(
    server_tls: ssl.SSLContext, client_tls: ssl.SSLContext
) -> None:
    async with POP3TestServer(mailboxes(), ssl_context=server_tls) as srv:
        untrusting = ssl.create_default_context()
        with pytest.raises(ssl.SSLCertVerificationError):
            await asyncio.open_connection(srv.host, srv.port, ssl=untrusting)
        wire = await Wire.open(srv)  # plaintext on the TLS port
        await wire.send(b"USER alice\r\n")
        assert await wire.at_eof()
        await wire.close()
        wire = await Wire.pop(srv, ssl=client_tls, server_hostname="localhost")
        assert (await wire.login()).startswith(b"+OK")
        await wire.close()


async def test_stls_on_the_wire(server_tls: ssl.SSLContext, client_tls: ssl.SSLContext) -> None:
    async with POP3TestServer(mailboxes(), starttls_context=server_tls) as srv:
        wire = await Wire.pop(srv)
        _, capa = await wire.multi(b"CAPA")
        assert b"\r\nSTLS\r\n" in capa
        assert await wire.cmd(b"STLS x") == b"-ERR STLS takes no arguments\r\n"
        assert await wire.cmd(b"STLS") == b"+OK Begin TLS negotiation\r\n"
        await wire.writer.start_tls(client_tls, server_hostname="localhost")
        _, capa = await wire.multi(b"CAPA")
        assert b"STLS" not in capa
        assert await wire.cmd(b"STLS") == b"-ERR Command not permitted when TLS active\r\n"
        assert (await wire.login()).startswith(b"+OK")
        assert await wire.cmd(b"STLS") == b"-ERR STLS is not valid in the TRANSACTION state\r\n"
        await wire.close()
        await srv.wait_idle()
        record = srv.sessions[0]
        assert record.tls
        assert record.discarded_before_tls == b""


async def test_stls_discards_pipelined_cleartext(
    server_tls: ssl.SSLContext, client_tls: ssl.SSLContext
) -> None:
    async with POP3TestServer(mailboxes(), starttls_context=server_tls) as srv:
        wire = await Wire.pop(srv)
        await wire.send(b"STLS\r\nUSER alice\r\n")
        assert await wire.line() == b"+OK Begin TLS negotiation\r\n"
        await wire.writer.start_tls(client_tls, server_hostname="localhost")
        assert await wire.cmd(b"PASS secret") == (
            b"-ERR PASS must immediately follow a successful USER\r\n"
        )
        await wire.close()
        await srv.wait_idle()
        record = srv.sessions[0]
        assert record.discarded_before_tls == b"USER alice\r\n"
        assert record.lines == [b"STLS", b"PASS secret"]


async def test_failed_stls_handshake_ends_the_session_quietly(
    server_tls: ssl.SSLContext,
) -> None:
    async with POP3TestServer(mailboxes(), starttls_context=server_tls) as srv:
        wire = await Wire.pop(srv)
        assert await wire.cmd(b"STLS") == b"+OK Begin TLS negotiation\r\n"
        await wire.send(b"USER alice\r\n")  # cleartext where a handshake belongs
        assert await wire.at_eof()
        await wire.close()
        await srv.wait_idle()
        record = srv.sessions[0]
        assert (record.tls, record.error, record.closed) == (False, None, True)


async def test_connection_reset_by_the_client(server: POP3TestServer) -> None:
    wire = await Wire.pop(server)
    await wire.login()
    sock = wire.writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    wire.writer.transport.abort()  # RST instead of FIN
    await server.wait_idle()
    record = server.sessions[0]
    assert (record.quit, record.error, record.closed) == (False, None, True)
    wire = await Wire.pop(server)
    assert (await wire.login()).startswith(b"+OK Mailbox locked")
    await wire.close()


async def test_stls_refused_after_utf8(server_tls: ssl.SSLContext) -> None:
    async with POP3TestServer(mailboxes(), starttls_context=server_tls) as srv:
        wire = await Wire.pop(srv)
        assert (await wire.cmd(b"UTF8")).startswith(b"+OK")
        assert await wire.cmd(b"STLS") == b"-ERR STLS is not permitted after UTF8\r\n"
        await wire.close()


async def test_poplib_stls(server_tls: ssl.SSLContext, client_tls: ssl.SSLContext) -> None:
    async with POP3TestServer(mailboxes(), starttls_context=server_tls) as srv:

        def session() -> int:
            pop = poplib.POP3(srv.host, srv.port, timeout=5)
            pop.stls(client_tls)
            assert "STLS" not in pop.capa()
            pop.user("alice")
            pop.pass_("secret")
            count = pop.stat()[0]
            pop.quit()
            return count

        assert await in_thread(session) == 3
        assert srv.sessions[0].tls


# -- ScriptedServer -------------------------------------------------------------------------


async def test_scripted_send_and_expect() -> None:
    script: list[Step] = [
        Send(b"+OK hi\r\n"),
        Expect(b"STAT"),
        Send(b"+OK 0 0\r\n"),
        Expect(),
        Send(b"+OK bye\r\n"),
    ]
    async with ScriptedServer(script) as srv:
        wire = await Wire.open(srv)
        assert await wire.line() == b"+OK hi\r\n"
        assert await wire.cmd(b"STAT") == b"+OK 0 0\r\n"
        assert await wire.cmd(b"anything") == b"+OK bye\r\n"
        await wire.send(b"after the script\r\nmore\r\n")
        await wire.close()
        await srv.wait_idle()
        assert srv.received == [b"STAT", b"anything", b"after the script", b"more"]
        assert srv.mismatches == []
        assert srv.errors == []


async def test_scripted_mismatch_closes_the_connection() -> None:
    script: list[Step] = [Send(b"+OK hi\r\n"), Expect(b"STAT"), Send(b"+OK never sent\r\n")]
    async with ScriptedServer(script) as srv:
        wire = await Wire.open(srv)
        assert await wire.line() == b"+OK hi\r\n"
        await wire.send(b"LIST\r\n")
        assert await wire.at_eof()
        await wire.close()
        wire = await Wire.open(srv)  # each connection runs the script from the start
        await wire.line()
        await wire.send(b"STAT\n")  # a bare LF is not a match
        assert await wire.at_eof()
        await wire.close()
        await srv.wait_idle()
        assert srv.connections == 2
        assert srv.mismatches == [
            Mismatch(connection=0, step=1, expected=b"STAT", received=b"LIST"),
            Mismatch(connection=1, step=1, expected=b"STAT", received=b"STAT\n"),
        ]


async def test_scripted_expect_sees_the_client_close() -> None:
    async with ScriptedServer([Expect()]) as srv:
        wire = await Wire.open(srv)
        await wire.close()
        await srv.wait_idle()
        assert srv.mismatches == [Mismatch(0, 0, None, None)]


async def test_scripted_overlong_line() -> None:
    async with ScriptedServer([Expect()]) as srv:
        wire = await Wire.open(srv)
        wire.writer.write(b"x" * 70000)
        assert await wire.at_eof()
        await wire.close()
        await srv.wait_idle()
        assert srv.mismatches == [Mismatch(0, 0, None, None)]


async def test_scripted_sleep_and_trickle() -> None:
    script: list[Step] = [Sleep(0.2), Trickle(b"+OK\r\n", 0.05), Close()]
    async with ScriptedServer(script) as srv:
        wire = await Wire.open(srv)
        start = time.monotonic()
        chunks = []
        async with asyncio.timeout(5):
            while data := await wire.reader.read(100):
                chunks.append(data)
        elapsed = time.monotonic() - start
        assert b"".join(chunks) == b"+OK\r\n"
        assert len(chunks) > 1  # it really came in pieces
        assert elapsed >= 0.2 + 4 * 0.05 * 0.9
        await wire.close()


async def test_scripted_close_ends_the_connection_at_once() -> None:
    script: list[Step] = [Send(b"+OK\r\n"), Close(), Send(b"never\r\n")]
    async with ScriptedServer(script) as srv:
        wire = await Wire.open(srv)
        assert await wire.line() == b"+OK\r\n"
        assert await wire.at_eof()
        await wire.close()


async def test_scripted_wait_for_close_records_everything() -> None:
    script: list[Step] = [Send(b"+OK\r\n"), WaitForClose(), Send(b"never\r\n")]
    async with ScriptedServer(script) as srv:
        wire = await Wire.open(srv)
        assert await wire.line() == b"+OK\r\n"
        await wire.send(b"QUIT\r\npartial")
        wire.writer.write_eof()
        assert await wire.at_eof()
        await wire.close()
        await srv.wait_idle()
        assert srv.received == [b"QUIT", b"partial"]


async def test_scripted_starttls(server_tls: ssl.SSLContext, client_tls: ssl.SSLContext) -> None:
    script: list[Step] = [
        Send(b"+OK\r\n"),
        Expect(b"STLS"),
        Send(b"+OK go ahead\r\n"),
        StartTLS(server_tls),
        Expect(b"CAPA"),
        Send(b"+OK secret\r\n"),
    ]
    async with ScriptedServer(script) as srv:
        wire = await Wire.open(srv)
        assert await wire.line() == b"+OK\r\n"
        assert await wire.cmd(b"STLS") == b"+OK go ahead\r\n"
        await wire.writer.start_tls(client_tls, server_hostname="localhost")
        assert await wire.cmd(b"CAPA") == b"+OK secret\r\n"
        await wire.close()
        await srv.wait_idle()
        assert srv.received == [b"STLS", b"CAPA"]


async def test_scripted_implicit_tls(
    server_tls: ssl.SSLContext, client_tls: ssl.SSLContext
) -> None:
    async with ScriptedServer([Send(b"+OK tls\r\n")], ssl_context=server_tls) as srv:
        wire = await Wire.open(srv, ssl=client_tls, server_hostname="localhost")
        assert await wire.line() == b"+OK tls\r\n"
        await wire.close()


async def test_scripted_errors_are_recorded() -> None:
    async with ScriptedServer([Send("not bytes")]) as srv:  # type: ignore[arg-type]
        wire = await Wire.open(srv)
        assert await wire.at_eof()
        await wire.close()
        await srv.wait_idle()
        assert len(srv.errors) == 1
        assert isinstance(srv.errors[0], TypeError)


async def test_scripted_respond_answers_what_the_client_sent() -> None:
    script: list[Step] = [
        Send(b"+OK\r\n"),
        Respond(lambda line: b"+OK you said " + line[::-1] + b"\r\n"),
        Respond(lambda line: b""),
        Respond(lambda line: b"+OK\r\n"),
    ]
    async with ScriptedServer(script) as srv:
        wire = await Wire.open(srv)
        assert await wire.line() == b"+OK\r\n"
        assert await wire.cmd(b"ABC") == b"+OK you said CBA\r\n"
        await wire.send(b"silent\r\n")  # b"": nothing is sent back
        assert await wire.cmd(b"NOOP") == b"+OK\r\n"
        await wire.close()
        await srv.wait_idle()
        assert srv.received == [b"ABC", b"silent", b"NOOP"]
        assert srv.mismatches == []


async def test_scripted_respond_sees_the_client_close() -> None:
    async with ScriptedServer([Respond(lambda line: b"never\r\n")]) as srv:
        wire = await Wire.open(srv)
        await wire.close()
        await srv.wait_idle()
        assert srv.mismatches == [Mismatch(0, 0, None, None)]


async def test_scripted_then_gives_later_connections_their_own_script() -> None:
    first: list[Step] = [Send(b"+OK first\r\n")]
    async with ScriptedServer(
        first, then=[[Send(b"+OK second\r\n")], [Send(b"+OK third\r\n")]]
    ) as srv:
        assert srv.then == ((Send(b"+OK second\r\n"),), (Send(b"+OK third\r\n"),))
        greetings = []
        for _ in range(4):
            wire = await Wire.open(srv)
            greetings.append(await wire.line())
            await wire.close()
        # The fourth connection, beyond ``then``, plays the first script again.
        assert greetings == [
            b"+OK first\r\n",
            b"+OK second\r\n",
            b"+OK third\r\n",
            b"+OK first\r\n",
        ]
        assert srv.connections == 4


async def test_scripted_close_aborts_sleeping_connections() -> None:
    srv = ScriptedServer([Send(b"+OK\r\n"), Sleep(60)])
    await srv.start()
    wire = await Wire.open(srv)
    assert await wire.line() == b"+OK\r\n"  # the server has taken the connection
    async with asyncio.timeout(5):
        await srv.close()
    assert await wire.at_eof()
    await wire.close()


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


def sasl_mailboxes() -> dict[str, Mailbox]:
    return {"alice": Mailbox("secret", [SECOND], tokens=("good-token",))}


async def sasl_exchange(
    wire: Wire, mechanism: sasl.Mechanism, *, initial_on_line: bool = True
) -> bytes:
    """Run one AUTH exchange with ``mechanism`` as a raw client; return the final line."""
    initial = mechanism.initial_response() if initial_on_line else None
    line = b"AUTH " + mechanism.name.encode()
    if initial is not None:
        line += b" " + (base64.b64encode(initial) or b"=")
    reply = await wire.cmd(line)
    pending = mechanism.initial_response() if not initial_on_line else None
    while reply.startswith(b"+ "):
        challenge = base64.b64decode(reply[2:].rstrip(b"\r\n"))
        if pending is not None and not challenge:
            # RFC 5034: the initial response follows an empty challenge.
            response, pending = pending, None
        else:
            response = mechanism.respond(challenge)
        reply = await wire.cmd(base64.b64encode(response))
    return reply


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


async def test_external_uses_the_client_certificate() -> None:
    ca = trustme.CA()
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_tls)
    ca.configure_trust(server_tls)
    server_tls.verify_mode = ssl.CERT_OPTIONAL
    client_tls = ssl.create_default_context()
    ca.configure_trust(client_tls)
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


# -- Faults: drops, -ERR [SYS/TEMP] and latency --------------------------------

from aiopop.testing import LOGIN, Faults  # noqa: E402 - this section was appended


async def test_faults_drop_at_the_nth_command_without_answering_it() -> None:
    async with POP3TestServer(mailboxes(), faults=Faults(drop_at=4)) as srv:
        wire = await Wire.pop(srv)
        assert (await wire.login()).startswith(b"+OK")  # commands 1 and 2
        assert await wire.cmd(b"DELE 1") == b"+OK Message 1 deleted\r\n"
        await wire.send(b"QUIT\r\n")  # the 4th: dropped, not carried out
        assert await wire.at_eof()
        await wire.close()
        await srv.wait_idle()
    record = srv.sessions[0]
    assert record.dropped
    assert not record.quit
    assert record.lines[-1] == b"QUIT"
    assert len(srv.mailboxes["alice"].messages) == 3  # the deletion was rolled back


async def test_faults_drop_mid_reply_after_k_octets() -> None:
    async with POP3TestServer(mailboxes()) as srv:
        wire = await Wire.pop(srv)
        await wire.login()
        whole = await wire.cmd(b"RETR 1") + await wire.body() + b".\r\n"
        await wire.close()
        srv.faults = Faults(drop_at="retr", drop_after_octets=30)
        wire = await Wire.pop(srv)
        await wire.login()
        await wire.send(b"RETR 1\r\nNOOP\r\n")
        async with asyncio.timeout(5):
            received = await wire.reader.read()
        await wire.close()
        await srv.wait_idle()
    assert len(whole) > 30
    assert received == whole[:30]
    assert [record.dropped for record in srv.sessions] == [False, True]
    assert srv.sessions[1].lines[-1] == b"RETR 1"  # the NOOP after it was never read


async def test_faults_drop_mid_reply_of_a_generated_message() -> None:
    message = GeneratedMessage(300_000, seed=7)
    faults = Faults(drop_at="RETR", drop_after_octets=150_000)
    async with POP3TestServer({"alice": Mailbox("secret", [message])}, faults=faults) as srv:
        wire = await Wire.pop(srv)
        await wire.login()
        await wire.send(b"RETR 1\r\n")
        async with asyncio.timeout(5):
            received = await wire.reader.read()
        await wire.close()
    status = b"+OK 300000 octets\r\n"
    assert len(received) == 150_000
    assert received.startswith(status)
    assert received[len(status) :] == b"".join(dot_stuff([message.head(10**9)]))[: 150_000 - 19]
    assert srv.sessions[0].dropped


async def test_faults_a_reply_shorter_than_the_cut_is_sent_whole_then_dropped() -> None:
    async with POP3TestServer(mailboxes(), faults=Faults(drop_at=3, drop_after_octets=1000)) as srv:
        wire = await Wire.pop(srv)
        await wire.login()
        assert await wire.cmd(b"NOOP") == b"+OK\r\n"
        assert await wire.at_eof()
        await wire.close()


async def test_faults_a_cut_quit_is_still_carried_out() -> None:
    faults = Faults(drop_at="QUIT", drop_after_octets=0)
    async with POP3TestServer(mailboxes(), faults=faults) as srv:
        wire = await Wire.pop(srv)
        await wire.login()
        await wire.cmd(b"DELE 1")
        await wire.send(b"QUIT\r\n")
        assert await wire.at_eof()  # the reply was lost, not the deletion
        await wire.close()
        await srv.wait_idle()
    assert srv.sessions[0].dropped
    assert srv.mailboxes["alice"].messages == [SECOND, THIRD]


async def test_faults_drop_during_a_sasl_exchange() -> None:
    faults = Faults(drop_at=LOGIN, drop_after_octets=3)
    async with POP3TestServer(sasl_mailboxes(), sasl=["CRAM-MD5"], faults=faults) as srv:
        wire = await Wire.pop(srv)
        await wire.send(b"AUTH CRAM-MD5\r\n")
        async with asyncio.timeout(5):
            assert await wire.reader.read() == b"+ P"  # three octets of the challenge
        await wire.close()
        await srv.wait_idle()
    assert srv.sessions[0].dropped


async def test_faults_error_at_a_keyword_answers_sys_temp_every_time() -> None:
    async with POP3TestServer(mailboxes(), faults=Faults(error_at="RETR")) as srv:
        wire = await Wire.pop(srv)
        await wire.login()
        temp = b"-ERR [SYS/TEMP] Temporary failure, please try again later\r\n"
        assert await wire.cmd(b"RETR 1") == temp
        assert await wire.cmd(b"retr 2") == temp
        assert (await wire.cmd(b"TOP 1 0")).startswith(b"+OK")
        await wire.body()
        octets = sum(map(len, [FIRST_CRLF, SECOND, THIRD]))
        assert await wire.cmd(b"STAT") == b"+OK 3 %d\r\n" % octets
        await wire.close()


async def test_faults_error_at_login_refuses_every_login_method() -> None:
    faults = Faults(error_at=LOGIN, error="[SYS/TEMP] Backend down")
    async with POP3TestServer(sasl_mailboxes(), sasl=["PLAIN"], faults=faults) as srv:
        wire = await Wire.pop(srv)
        down = b"-ERR [SYS/TEMP] Backend down\r\n"
        assert (await wire.cmd(b"USER alice")).startswith(b"+OK")  # USER is no login
        assert await wire.cmd(b"PASS secret") == down
        timestamp = srv.sessions[0].apop_timestamp
        assert timestamp is not None
        assert await wire.cmd(b"APOP alice " + md5_hex(timestamp + b"secret")) == down
        _, listed = await wire.multi(b"AUTH")  # only lists the mechanisms
        assert listed == b"PLAIN\r\n"
        assert await sasl_exchange(wire, sasl.Plain("alice", "secret")) == down
        assert await wire.cmd(b"STAT") == b"-ERR STAT is not valid in the AUTHORIZATION state\r\n"
        await wire.close()
    assert srv.sessions[0].user is None


async def test_faults_error_at_the_nth_command_only() -> None:
    async with POP3TestServer(mailboxes(), faults=Faults(error_at=3)) as srv:
        wire = await Wire.pop(srv)
        await wire.login()
        assert (await wire.cmd(b"NOOP")).startswith(b"-ERR [SYS/TEMP]")
        assert await wire.cmd(b"NOOP") == b"+OK\r\n"
        await wire.close()


async def test_faults_latency_delays_the_greeting_and_each_reply() -> None:
    async with POP3TestServer(mailboxes(), faults=Faults(latency=0.15)) as srv:
        started = time.monotonic()
        wire = await Wire.pop(srv)
        greeted = time.monotonic()
        assert await wire.cmd(b"CAPA") == b"+OK Capability list follows\r\n"
        await wire.body()
        answered = time.monotonic()
        await wire.send(b"USER alice\r\nPASS secret\r\n")  # pipelined: each reply waits
        assert (await wire.line()).startswith(b"+OK")
        assert (await wire.line()).startswith(b"+OK")
        both = time.monotonic()
        await wire.close()
    assert greeted - started >= 0.15
    assert answered - greeted >= 0.15
    assert both - answered >= 0.3


async def test_faults_latency_in_a_sasl_exchange() -> None:
    faults = Faults(latency=0.1)
    async with POP3TestServer(sasl_mailboxes(), sasl=["SCRAM-SHA-256"], faults=faults) as srv:
        wire = await Wire.pop(srv)
        started = time.monotonic()
        assert (await sasl_exchange(wire, sasl.ScramSHA256("alice", "secret"))).startswith(b"+OK")
        assert time.monotonic() - started >= 0.3  # the challenge, the final data, the +OK
        await wire.close()


async def test_faults_change_only_later_connections() -> None:
    async with POP3TestServer(mailboxes()) as srv:
        first = await Wire.pop(srv)
        srv.faults = Faults(error_at="NOOP")
        second = await Wire.pop(srv)
        await first.login()
        await second.login()
        assert await first.cmd(b"NOOP") == b"+OK\r\n"
        assert (await second.cmd(b"NOOP")).startswith(b"-ERR [SYS/TEMP]")
        await first.close()
        await second.close()
    assert Faults() == POP3TestServer({}).faults


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"drop_at": 0}, "from 1"),
        ({"error_at": -2}, "from 1"),
        ({"drop_at": "RETR 1"}, "keyword"),
        ({"error_at": ""}, "keyword"),
        ({"drop_after_octets": 10}, "needs drop_at"),
        ({"drop_at": 1, "drop_after_octets": -1}, ">= 0"),
        ({"error": "two\r\nlines"}, "one line"),
        ({"error": ""}, "one line"),
        ({"error": "caf\u00e9"}, "one line"),
        ({"latency": -1.0}, "latency"),
        ({"latency": float("nan")}, "latency"),
        ({"latency": float("inf")}, "latency"),
    ],
)
def test_faults_are_checked(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Faults(**kwargs)


def test_faults_selectors_must_be_ints_or_keywords() -> None:
    with pytest.raises(TypeError, match="drop_at"):
        Faults(drop_at=True)
    with pytest.raises(TypeError, match="error_at"):
        Faults(error_at=1.5)  # type: ignore[arg-type]
