"""The in-process POP3 server's faults: drops, -ERR [SYS/TEMP] and latency."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from aiopop import sasl
from aiopop.testing import (
    LOGIN,
    Faults,
    GeneratedMessage,
    Mailbox,
    POP3TestServer,
)
from aiopop.testing._session import dot_stuff
from tests.helpers.server import (
    FIRST_CRLF,
    SECOND,
    THIRD,
    Wire,
    mailboxes,
    md5_hex,
    sasl_exchange,
    sasl_mailboxes,
)


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
