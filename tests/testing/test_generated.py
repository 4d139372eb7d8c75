"""aiopop.testing's generated messages: GeneratedMessage and its streaming helpers."""

from __future__ import annotations

import email
import hashlib
import re

import pytest

from aiopop.testing import (
    GeneratedMessage,
    Mailbox,
)
from aiopop.testing._generated import rechunk, take_lines
from aiopop.testing._mailbox import header_end, headers_of, size_of, top_of
from aiopop.testing._session import dot_stuff
from tests.helpers.server import SECOND, content, unstuff


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
