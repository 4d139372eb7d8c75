"""aiopop._parse: status lines, listings, CAPA and the APOP timestamp."""

from __future__ import annotations

from aiopop._parse import (
    find_apop_timestamp,
    parse_capabilities,
    parse_list_listing,
    parse_status_line,
    parse_uid_listing,
)

from .conftest import Benchmark

MESSAGES = 2000
LIST_LINES = [b"%d %d" % (n, 8192 + n) for n in range(1, MESSAGES + 1)]
UIDL_LINES = [b"%d 00000001%08x" % (n, n) for n in range(1, MESSAGES + 1)]
CAPA_LINES = [
    b"CAPA",
    b"TOP",
    b"UIDL",
    b"RESP-CODES",
    b"PIPELINING",
    b"AUTH-RESP-CODE",
    b"USER",
    b"SASL PLAIN LOGIN SCRAM-SHA-256",
    b"STLS",
    b"UTF8",
]
GREETING = b"+OK Dovecot ready. <1896.697170952@dbc.mtview.ca.us>"


def test_status_lines(benchmark: Benchmark) -> None:
    """A thousand status lines of the shapes RETR, STAT and an error get."""
    lines = [b"+OK 8192 octets", b"+OK 2000 16384000", b"-ERR [IN-USE] Mailbox locked"] * 333

    def parse() -> int:
        return sum(parse_status_line(line).ok for line in lines)

    assert benchmark(parse) == 666


def test_list_listing(benchmark: Benchmark) -> None:
    """LIST of 2,000 messages."""
    listing = benchmark(parse_list_listing, LIST_LINES)
    assert len(listing) == MESSAGES


def test_uid_listing(benchmark: Benchmark) -> None:
    """UIDL of 2,000 messages, Dovecot-shaped unique-ids."""
    listing = benchmark(parse_uid_listing, UIDL_LINES)
    assert len(listing) == MESSAGES


def test_capabilities(benchmark: Benchmark) -> None:
    """Dovecot's CAPA listing."""
    found = benchmark(parse_capabilities, CAPA_LINES)
    assert "PIPELINING" in found


def test_apop_timestamp(benchmark: Benchmark) -> None:
    """The APOP timestamp in a greeting (RFC 1939 section 7)."""
    assert benchmark(find_apop_timestamp, GREETING) == b"<1896.697170952@dbc.mtview.ca.us>"
