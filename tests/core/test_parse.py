"""The pure parsers of aiopop._parse."""

from __future__ import annotations

import re
import time
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aiopop import ListEntry, MalformedReplyError, ProtocolError, Stat, UidEntry
from aiopop._parse import (
    escape,
    find_apop_timestamp,
    parse_capa_line,
    parse_lang_line,
    parse_list_entry,
    parse_stat,
    parse_status_line,
    parse_uid_entry,
)

RFC_TIMESTAMP = b"<1896.697170952@dbc.mtview.ca.us>"


@pytest.mark.parametrize(
    ("line", "ok", "text", "code"),
    [
        (b"+OK", True, b"", None),
        (b"+OK ", True, b"", None),
        (b"+OK 2 320", True, b"2 320", None),
        (b"+ok lower case", True, b"lower case", None),
        (b"-ERR", False, b"", None),
        (b"-ERR no such message", False, b"no such message", None),
        (b"-ERR [SYS/TEMP] try later", False, b"[SYS/TEMP] try later", "SYS/TEMP"),
        (b"-ERR [in-use] locked", False, b"[in-use] locked", "IN-USE"),
        (b"-ERR [AUTH] bad", False, b"[AUTH] bad", "AUTH"),
        (b"-ERR [] empty", False, b"[] empty", None),
        (b"-ERR [NO END", False, b"[NO END", None),
        (b"-ERR [BAD CODE] space", False, b"[BAD CODE] space", None),
        (b"-ERR [\x1b[31m] escape", False, b"[\x1b[31m] escape", None),
        (b"-ERR [X] one character", False, b"[X] one character", "X"),
        (b"-ERR []] x", False, b"[]] x", None),
        (b"-ERR [SYS/TEMP] try [later]", False, b"[SYS/TEMP] try [later]", "SYS/TEMP"),
        # A code is printable ASCII from 0x21 to 0x7E, both ends included.
        (b"+OK [!~] edges", True, b"[!~] edges", "!~"),
        (b"-ERR [A\x7fB] delete", False, b"[A\x7fB] delete", None),
        (b"-ERR [A\x80B] octet", False, b"[A\x80B] octet", None),
    ],
)
def test_status_line(line: bytes, ok: bool, text: bytes, code: str | None) -> None:
    status = parse_status_line(line)
    assert (status.ok, status.text, status.code, status.raw) == (ok, text, code, line)


@pytest.mark.parametrize("line", [b"", b"OK", b"+OKAY", b"-ERROR x", b"* OK", b"+", b" +OK"])
def test_status_line_malformed(line: bytes) -> None:
    with pytest.raises(ProtocolError):
        parse_status_line(line)


@given(st.binary(max_size=200))
def test_status_line_parses_or_raises_protocol_error(line: bytes) -> None:
    head = line.partition(b" ")[0].upper()
    try:
        status = parse_status_line(line)
    except ProtocolError:
        assert head not in (b"+OK", b"-ERR")
        return
    assert status.ok == (head == b"+OK")
    assert status.raw == line


@pytest.mark.parametrize(
    ("greeting", "timestamp"),
    [
        (b"POP3 server ready " + RFC_TIMESTAMP, RFC_TIMESTAMP),
        (b"Dovecot ready. <1a2.3b.5f8e2a1c@host.example>", b"<1a2.3b.5f8e2a1c@host.example>"),
        (b"ready", None),
        (b"ready <>", None),
        (b"ready <no-at-sign>", None),
        (b"ready <@domain>", None),
        (b"ready <local@>", None),
        (b"ready <a b@c>", None),
        (b"ready <\x80@x>", None),
        (b"ready <a\x00@x>", None),
        (b"ready <unclosed@x", None),
        (b"<<<<a@b>", b"<a@b>"),
        (b"<bad> then <good@one> and <second@one>", b"<good@one>"),
        (b"<bad <good@x>", b"<good@x>"),
        (b">>> <a@b>", b"<a@b>"),
        (b"<<a@b>", b"<a@b>"),
        (b"<bad><good@x>", b"<good@x>"),
        (b"<@a@b>", b"<@a@b>"),
        (b"<a@b@>", None),
        (b"<a@\x7f>", None),
        (b"<a@b\x20c>", None),
        (b"<>a@b>", None),
        (b"<>a@b> <c@d>", b"<c@d>"),
    ],
)
def test_apop_timestamp(greeting: bytes, timestamp: bytes | None) -> None:
    assert find_apop_timestamp(greeting) == timestamp


@pytest.mark.parametrize(
    "hostile",
    [
        b"<" * 1_000_000,
        b"<@" * 500_000,
        b"<" * 500_000 + b">" * 500_000,
        b"<a@b " * 200_000,
    ],
)
def test_apop_timestamp_is_linear(hostile: bytes) -> None:
    # CVE-2018-1060: poplib's greeting regex backtracked on exactly this.
    started = time.perf_counter()
    find_apop_timestamp(hostile)
    # A generous bound that only a quadratic scan would break.
    assert time.perf_counter() - started < 1.0


_MSG_ID_CHAR = st.sampled_from([bytes([b]) for b in range(0x21, 0x7F) if b not in b"<>@"])
_MSG_ID = st.builds(
    lambda local, domain: b"<" + local + b"@" + domain + b">",
    st.lists(st.one_of(_MSG_ID_CHAR, st.just(b"@")), min_size=1, max_size=12).map(b"".join),
    st.lists(_MSG_ID_CHAR, min_size=1, max_size=12).map(b"".join),
)
# Greetings built to contain candidates: angle brackets, at signs, valid ids, junk.
_GREETING = st.lists(
    st.one_of(
        _MSG_ID,
        st.sampled_from([b"<", b">", b"@", b" ", b"<@>", b"<a@>", b"<@b>", b"\x80", b"<<"]),
        st.binary(max_size=8),
    ),
    max_size=12,
).map(b"".join)


def reference_timestamp(text: bytes) -> bytes | None:
    """The first ``<...>`` without brackets inside that is a valid msg-id (brute force)."""
    for match in re.finditer(rb"<[^<>]*>", text):
        local, at, domain = match.group()[1:-1].rpartition(b"@")
        if at and local and domain and all(0x21 <= b <= 0x7E for b in match.group()):
            return match.group()
    return None


@given(_GREETING)
def test_apop_timestamp_is_the_first_valid_msg_id(greeting: bytes) -> None:
    assert find_apop_timestamp(greeting) == reference_timestamp(greeting)


@given(st.binary(max_size=40).map(lambda b: b.replace(b"<", b"")), _MSG_ID, st.binary(max_size=40))
def test_apop_timestamp_embedded_is_found(before: bytes, timestamp: bytes, after: bytes) -> None:
    assert find_apop_timestamp(before + timestamp + after) == timestamp


def test_stat() -> None:
    assert parse_stat(b"2 320") == Stat(2, 320)
    assert parse_stat(b"0 0 extra words") == Stat(0, 0)
    count, size = parse_stat(b"7 1024")
    # The seed program's own formatting must keep working.
    assert "%d messages totaling %d bytes" % parse_stat(b"7 1024") == (
        "7 messages totaling 1024 bytes"
    )
    assert (count, size) == (7, 1024)


@pytest.mark.parametrize(
    "text",
    [b"", b"2", b"abc", b"2 abc", b"-1 5", b"2 +5", b"\xd9\xa3 5", b"1_0 5", b"9" * 21 + b" 1"],
)
def test_stat_malformed(text: bytes) -> None:
    # cpython PR 130646: "+OK" alone or "+OK abc" for STAT must not parse.
    with pytest.raises(MalformedReplyError):
        parse_stat(text)


def test_list_and_uidl_entries() -> None:
    assert parse_list_entry(b"1 120") == ListEntry(1, 120)
    assert parse_list_entry(b"3 5 extension") == ListEntry(3, 5)
    assert parse_uid_entry(b"1 whqtswO00WBw418f9t5JxYwZ") == UidEntry(1, "whqtswO00WBw418f9t5JxYwZ")
    for bad in (b"0 12", b"x 12", b"1", b""):
        with pytest.raises(MalformedReplyError):
            parse_list_entry(bad)
    for bad in (b"0 abc", b"1", b"one abc", b"1 \xff\xfe", b"1 a\x7fb", b"1 a\x1fb"):
        with pytest.raises(MalformedReplyError):
            parse_uid_entry(bad)
    # Printable ASCII from 0x21 to 0x7E, both ends included (RFC 1939 section 7).
    assert parse_uid_entry(b"2 !~") == UidEntry(2, "!~")


def test_numbers_up_to_twenty_digits() -> None:
    biggest = b"9" * 20
    assert parse_stat(biggest + b" " + biggest) == Stat(10**20 - 1, 10**20 - 1)
    assert parse_list_entry(b"1 " + biggest) == ListEntry(1, 10**20 - 1)
    assert parse_uid_entry(biggest + b" x") == UidEntry(10**20 - 1, "x")
    for too_long in (b"1" * 21 + b" 5", b"5 " + b"1" * 21):
        with pytest.raises(MalformedReplyError):
            parse_stat(too_long)
        with pytest.raises(MalformedReplyError):
            parse_list_entry(too_long)
    with pytest.raises(MalformedReplyError):
        parse_uid_entry(b"1" * 21 + b" x")


def test_capa_line() -> None:
    assert parse_capa_line(b"sasl PLAIN SCRAM-SHA-256") == ("SASL", ["PLAIN", "SCRAM-SHA-256"])
    assert parse_capa_line(b"TOP") == ("TOP", [])
    # A server's non-UTF-8 octets are replaced, never an exception.
    assert parse_capa_line(b"IMPLEMENTATION caf\xe9 \xff") == (
        "IMPLEMENTATION",
        ["caf\ufffd", "\ufffd"],
    )
    with pytest.raises(MalformedReplyError):
        parse_capa_line(b"   ")


_LONG = b"w" * 100


def _cut(text: str) -> str:
    """How a long line is quoted: its first 80 characters, then an ellipsis."""
    return text[:80] + "..."


@pytest.mark.parametrize(
    ("parse", "line", "message"),
    [
        (parse_status_line, b"* OK \x1b[2J", "expected +OK or -ERR, got '* OK \\\\x1b[2J'"),
        (
            parse_status_line,
            b"OK " + _LONG,
            "expected +OK or -ERR, got '" + _cut("OK " + "w" * 100) + "'",
        ),
        (parse_stat, b"", "malformed STAT line ''"),
        (parse_stat, b"7", "malformed STAT line '7'"),
        (parse_stat, b"seven 1024", "bad STAT in 'seven 1024'"),
        (parse_stat, b"7 big", "bad STAT in '7 big'"),
        (parse_stat, b"7 " + _LONG, "bad STAT in '" + _cut("7 " + "w" * 100) + "'"),
        (parse_stat, _LONG, "malformed STAT line '" + _cut("w" * 100) + "'"),
        (parse_list_entry, b"1", "malformed LIST line '1'"),
        (parse_list_entry, b"one 120", "bad LIST in 'one 120'"),
        (parse_list_entry, b"1 big", "bad LIST in '1 big'"),
        (parse_list_entry, b"0 120", "message number 0 in '0 120'"),
        (
            parse_list_entry,
            b"0 5 " + _LONG,
            "message number 0 in '" + _cut("0 5 " + "w" * 100) + "'",
        ),
        (parse_uid_entry, b"1", "malformed UIDL line '1'"),
        (parse_uid_entry, _LONG, "malformed UIDL line '" + _cut("w" * 100) + "'"),
        (parse_uid_entry, b"one abc", "bad UIDL in 'one abc'"),
        (
            parse_uid_entry,
            b"x" + _LONG + b" abc",
            "bad UIDL in '" + _cut("x" + "w" * 100 + " abc") + "'",
        ),
        (parse_uid_entry, b"0 abc", "bad UIDL line '0 abc'"),
        (parse_uid_entry, b"1 a\x7fb", "bad UIDL line '1 a\\\\x7fb'"),
        (parse_uid_entry, b"0 abc " + _LONG, "bad UIDL line '" + _cut("0 abc " + "w" * 100) + "'"),
        (parse_capa_line, b" \t ", "empty CAPA line"),
    ],
)
def test_error_messages_say_what_was_wrong_and_quote_the_line_safely(
    parse: Callable[[bytes], object], line: bytes, message: str
) -> None:
    """Each error names the reply it was parsing and quotes at most 80 characters of it, escaped."""
    with pytest.raises(ProtocolError) as info:
        parse(line)
    assert str(info.value) == message
    # Only a status line that is neither +OK nor -ERR breaks the framing.
    assert isinstance(info.value, MalformedReplyError) == (parse is not parse_status_line)


def test_escape() -> None:
    assert escape(b"plain text") == "plain text"
    assert escape(b"\x1b[2Jred\r\n") == "\\x1b[2Jred\\x0d\\x0a"
    assert escape("\x9b31m") == "\\u009b31m"
    assert escape(b"\xff") == "\\xff"
    assert escape(b"caf\xc3\xa9") == "caf\u00e9"
    assert escape(b"x" * 1000, limit=10) == "x" * 10 + "..."
    assert escape(b"x" * 10, limit=10) == "x" * 10


def test_escape_is_unambiguous() -> None:
    # U+202E (right-to-left override) once came out as \x202e, which reads as
    # \x20 then "2e"; and a literal backslash-x from the server looked escaped.
    assert escape("\u202e") == "\\u202e"
    assert escape(b"\xe2\x80\xae") == "\\u202e"
    assert escape(b"a\\x41") == "a\\\\x41"
    assert escape("\U000e0001") == "\\U000e0001"
    assert escape(b"\x80") == "\\x80"  # an octet that is not UTF-8...
    assert escape("\x80") == "\\u0080"  # ...is not the character U+0080
    assert escape("\udc80") == "\\udc80"  # a lone surrogate in a str is not an octet
    assert escape("\x7f\x00") == "\\x7f\\x00"
    # \u up to U+FFFF, \U only above it.
    assert escape("\uffff") == "\\uffff"
    assert escape("\U0001000c") == "\\U0001000c"


_ESCAPE = re.compile(r"\\(\\|x[0-9a-f]{2}|u[0-9a-f]{4}|U[0-9a-f]{8})")


def unescape(text: str) -> bytes:
    """The inverse of escape() for bytes input: proof that no two inputs share an output."""

    def one(match: re.Match[str]) -> str:
        code = match.group(1)
        if code == "\\":
            return "\\"
        point = int(code[1:], 16)
        if code[0] == "x" and point >= 0x80:
            return chr(0xDC00 + point)  # an octet that was not UTF-8
        return chr(point)

    return _ESCAPE.sub(one, text).encode("utf-8", "surrogateescape")


@given(st.binary(max_size=200))
def test_escape_output_has_no_control_characters_and_reads_back(data: bytes) -> None:
    shown = escape(data, limit=1000)
    assert all(c.isprintable() for c in shown)
    assert unescape(shown) == data


@given(st.text(max_size=100))
def test_escaped_text_reads_back(text: str) -> None:
    shown = escape(text, limit=1000)
    assert all(c.isprintable() for c in shown)
    assert unescape(shown).decode("utf-8", "surrogatepass") == text


@pytest.mark.parametrize(
    ("line", "tag", "description"),
    [
        (b"en English", "en", "English"),
        (b"en English language", "en", "English language"),  # the first space splits
        (b"pt-BR Portugu\xc3\xaas do Brasil", "pt-BR", "Portugu\u00eas do Brasil"),
        (b"  de   Deutsch  ", "de", "Deutsch"),
        (b"i-default   Default   language ", "i-default", "Default   language"),
        (b"fr", "fr", ""),
        (b"fr ", "fr", ""),
        (b"x \xff y", "x", "\ufffd y"),
    ],
)
def test_lang_lines(line: bytes, tag: str, description: str) -> None:
    assert parse_lang_line(line) == (tag, description)


@pytest.mark.parametrize("line", [b"", b"   ", b"\t"])
def test_an_empty_lang_line_is_malformed(line: bytes) -> None:
    with pytest.raises(MalformedReplyError, match=r"^empty LANG line$"):
        parse_lang_line(line)
