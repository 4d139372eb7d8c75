"""aiopop.testing's LineReader: the server's bounded line reader."""

from __future__ import annotations

import asyncio

import pytest

from aiopop.testing._lines import LineReader, LineTooLong, strip_crlf

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
