"""The in-process POP3 server driven by the stdlib poplib in a thread, as an independent
client that knows nothing about this package.
"""

from __future__ import annotations

import poplib
import re

import pytest

from aiopop.testing import (
    GeneratedMessage,
    Mailbox,
    POP3TestServer,
)
from tests.helpers.server import FIRST, FIRST_CRLF, SECOND, THIRD, content, in_thread, mailboxes

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
