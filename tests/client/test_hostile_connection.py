"""Hostile servers that close mid-reply (an error, never a partial result) or are slow."""

from __future__ import annotations

import base64
import re
import time
from pathlib import Path

import pytest

import aiopop
from aiopop import sasl
from aiopop.testing import (
    Close,
    Expect,
    ScriptedServer,
    Send,
    Step,
    Trickle,
    WaitForClose,
)
from tests.helpers.hostile import AUTHORIZED, Scripted, challenge, leftovers
from tests.helpers.scripted import LOGIN, client_for, logged_in

# -- the server closing mid-reply: an error, never a partial result ----------------------------

RETR_REPLY = b"+OK 49 octets\r\nSubject: x\r\n\r\nline one\r\n..dotted\r\nlast line\r\n.\r\n"
STATUS_END = RETR_REPLY.index(b"\r\n") + 2
BODY_CUTS = {
    "before-the-status-line": 0,
    "mid-status-line": 3,
    "after-the-status-line": STATUS_END,
    "after-the-first-body-octet": STATUS_END + 1,
    "mid-header": STATUS_END + 5,
    "after-a-cr": RETR_REPLY.index(b"\r\n", STATUS_END) + 1,
    "before-a-stuffed-dot": RETR_REPLY.index(b"..dotted"),
    "after-a-stuffed-dot": RETR_REPLY.index(b"..dotted") + 1,
    "before-the-final-dot": len(RETR_REPLY) - 3,
    "after-the-final-dot": len(RETR_REPLY) - 2,
    "after-the-final-dot-cr": len(RETR_REPLY) - 1,
}


@pytest.mark.parametrize("cut", range(len(RETR_REPLY)))
async def test_the_server_closing_at_every_point_of_retr(cut: int) -> None:
    steps: list[Step] = [Expect(b"RETR 1"), Send(RETR_REPLY[:cut]), Close()]
    async with logged_in(steps, timeout=3) as (server, client):
        start = time.perf_counter()
        with pytest.raises(aiopop.ConnectionLostError) as info:
            await client.retr(1)
        # The server's close, not the timeout, ended it.
        assert time.perf_counter() - start < 2.0
        assert not isinstance(info.value, aiopop.POP3TimeoutError)
        assert re.search(
            r"in the middle of the reply to RETR|connection to .* lost", str(info.value)
        )
        assert not client.is_connected
    assert server.received == [*AUTHORIZED, b"RETR 1"]


async def test_the_whole_retr_reply_is_the_control() -> None:
    steps: list[Step] = [Expect(b"RETR 1"), Send(RETR_REPLY), Close()]
    async with logged_in(steps, timeout=3) as (_server, client):
        assert await client.retr(1) == b"Subject: x\r\n\r\nline one\r\n.dotted\r\nlast line\r\n"


@pytest.mark.parametrize("cut", BODY_CUTS.values(), ids=BODY_CUTS.keys())
async def test_the_server_closing_mid_stream_never_completes_it(cut: int, tmp_path: Path) -> None:
    steps: list[Step] = [Expect(b"RETR 1"), Send(RETR_REPLY[:cut]), Close()]
    async with logged_in(steps, timeout=3) as (_server, client):
        chunks: list[bytes] = []
        with pytest.raises(aiopop.ConnectionLostError):  # noqa: PT012 - entry or iteration
            async with client.retr_stream(1) as stream:
                async for chunk in stream:
                    chunks.append(chunk)
        # What was handed out is a prefix of the message (perhaps all of its
        # octets), and still the stream raised: it never claims to be complete.
        assert b"Subject: x\r\n\r\nline one\r\n.dotted\r\nlast line\r\n".startswith(
            b"".join(chunks)
        )
    steps = [Expect(b"RETR 1"), Send(RETR_REPLY[:cut]), Close()]
    async with logged_in(steps, timeout=3) as (_server, client):
        with pytest.raises(aiopop.ConnectionLostError):
            await client.retr_to_file(1, tmp_path / "message")
    assert leftovers(tmp_path) == []  # no partial file, no leftover temporary


@pytest.mark.parametrize(
    ("steps", "sent"),
    [
        ([Expect(b"AUTH CRAM-MD5"), Close()], [b"AUTH CRAM-MD5"]),
        ([Expect(b"AUTH CRAM-MD5"), Send(b"+ "), Close()], [b"AUTH CRAM-MD5"]),
        (
            [Expect(b"AUTH CRAM-MD5"), Send(challenge(b"<1.2@host>")), Close()],
            [b"AUTH CRAM-MD5"],
        ),
        (
            [Expect(b"AUTH CRAM-MD5"), Send(challenge(b"<1.2@host>")), Expect(), Close()],
            [b"AUTH CRAM-MD5", None],
        ),
        (
            [
                Expect(b"AUTH CRAM-MD5"),
                Send(challenge(b"<1.2@host>")),
                Expect(),
                Send(b"+OK logged"),
                Close(),
            ],
            [b"AUTH CRAM-MD5", None],
        ),
    ],
    ids=[
        "after-auth",
        "mid-challenge",
        "after-a-challenge",
        "after-the-response",
        "mid-ok",
    ],
)
async def test_the_server_closing_at_every_point_of_auth(
    steps: list[Step], sent: list[bytes | None]
) -> None:
    async with ScriptedServer([Send(b"+OK ready\r\n"), *steps]) as server:
        client = client_for(server, timeout=3)
        await client.connect()
        start = time.perf_counter()
        with pytest.raises(aiopop.ConnectionLostError):
            await client.auth(sasl.CramMD5("u", "p"))
        assert time.perf_counter() - start < 2.0
        assert client.state is not aiopop.State.TRANSACTION
        assert not client.is_connected
        await client.close()
    assert len(server.received) == len(sent)
    for line, expected in zip(server.received, sent, strict=True):
        assert expected is None or line == expected
    if len(sent) == 2:  # the response: the user name and an HMAC, base64-encoded
        assert base64.b64decode(server.received[1]).startswith(b"u ")


# -- slow servers ---------------------------------------------------------------------------------


@pytest.mark.parametrize("delay", [0.05, 1.0], ids=["steady-trickle", "a-byte-a-second"])
@pytest.mark.parametrize("what", ["greeting", "status", "listing", "challenge"])
async def test_a_trickling_server_hits_the_timeout(what: str, delay: float) -> None:
    # Octets keep coming (every 50 ms, with a 0.3 s timeout), but a status
    # line or a listing must arrive whole in time: an inactivity timer is not enough.
    slow = Trickle(b"+OK " + b"z" * 100 + b"\r\n", delay)
    steps: dict[str, list[Step]] = {
        "greeting": [slow],
        "status": [*LOGIN, Expect(b"NOOP"), slow],
        "listing": [*LOGIN, Expect(b"LIST"), Send(b"+OK\r\n"), Trickle(b"1 1\r\n" * 40, delay)],
        "challenge": [
            Send(b"+OK\r\n"),
            Expect(b"AUTH X-SCRIPTED"),
            Trickle(challenge(b"z" * 60), delay),
        ],
    }
    async with ScriptedServer([*steps[what], WaitForClose()]) as server:
        client = client_for(server, timeout=0.3)
        start = time.perf_counter()
        with pytest.raises(aiopop.POP3TimeoutError) as info:  # noqa: PT012 - the whole session
            await client.connect()
            if what == "challenge":
                await client.auth(Scripted())
            elif what != "greeting":
                await client.user("u")
                await client.pass_("p")
                await (client.noop() if what == "status" else client.list())
        assert 0.25 < time.perf_counter() - start < 2.0
        assert isinstance(info.value, TimeoutError)
        expected = {
            "greeting": r"^connecting to .* timed out$",
            "status": r"^NOOP: no complete reply from .* within 0.3 s$",
            "listing": r"^LIST: no complete reply from .* within 0.3 s$",
            "challenge": r"^AUTH: no complete reply from .* within 0.3 s$",
        }
        assert re.match(expected[what], str(info.value))
        assert not client.is_connected  # (the server, busy trickling, may not notice yet)
    assert (
        server.received
        == {
            "greeting": [],
            "status": [*AUTHORIZED, b"NOOP"],
            "listing": [*AUTHORIZED, b"LIST"],
            "challenge": [b"AUTH X-SCRIPTED"],
        }[what]
    )
