"""Hostile servers around STLS: STARTTLS stripping (curl CVE-2021-22946) fails closed, and
plaintext injected after STLS's +OK (CVE-2021-22947, CVE-2020-15953) is refused.
"""

from __future__ import annotations

import ssl

import pytest
import trustme

import aiopop
from aiopop.testing import (
    Expect,
    ScriptedServer,
    Send,
    Sleep,
    StartTLS,
    Step,
    WaitForClose,
)
from tests.helpers.hostile import CAPA_STLS, GREETING, client_closed
from tests.helpers.scripted import client_for
from tests.helpers.tls import client_context, server_context


@pytest.mark.parametrize(
    ("steps", "sent", "message"),
    [
        (
            [Expect(b"CAPA"), Send(b"+OK\r\nUSER\r\nSASL PLAIN\r\n.\r\n")],
            [b"CAPA"],
            "TLS is required, but the server does not offer STLS",
        ),
        (
            [Expect(b"CAPA"), Send(b"-ERR unknown command\r\n")],
            [b"CAPA"],
            "TLS is required, but the server refused CAPA",
        ),
        (
            [Expect(b"CAPA"), Send(CAPA_STLS), Expect(b"STLS"), Send(b"-ERR not now\r\n")],
            [b"CAPA", b"STLS"],
            "TLS is required, but the server refused STLS: not now",
        ),
    ],
    ids=["no-stls-in-capa", "capa-refused", "stls-refused"],
)
async def test_starttls_stripping_fails_closed(
    steps: list[Step], sent: list[bytes], message: str
) -> None:
    async with ScriptedServer([Send(GREETING), *steps, WaitForClose()]) as server:
        client = client_for(server, timeout=3, tls="starttls")
        with pytest.raises(aiopop.TLSRequiredError) as info:
            await client.connect()
        assert str(info.value) == message
        assert not client.is_connected
        assert not client.is_tls
        await client_closed(server)
        # And no login on what is left: nothing more reaches the server.
        with pytest.raises(aiopop.POP3Error):
            await client.login("u", "p", allow_cleartext=True)
    assert server.received == sent
    assert server.connections == 1


# -- plaintext injected after STLS's +OK (CVE-2021-22947, CVE-2020-15953) --------------------------


@pytest.mark.parametrize("entry", ["connect-required", "login-if-offered"])
@pytest.mark.parametrize(
    ("after_ok", "error", "message"),
    [
        (
            [Send(b"+OK begin TLS\r\n+OK injected\r\n")],
            aiopop.ProtocolError,
            "nobody asked for: '\\+OK injected",
        ),
        (
            [Send(b"+OK begin TLS\r\n+OK\r\nUSER\r\nSASL PLAIN\r\n.\r\n")],
            aiopop.ProtocolError,
            "nobody asked for: '\\+OK",
        ),
        (
            # Just after, in a packet of its own: the client reads no more in
            # the clear after +OK, so TLS meets it and refuses it.
            [Send(b"+OK begin TLS\r\n"), Sleep(0.05), Send(b"+OK injected\r\n")],
            ssl.SSLError,
            "WRONG_VERSION_NUMBER|wrong version number|record",
        ),
    ],
    ids=["same-packet", "same-packet-capa", "next-packet"],
)
async def test_plaintext_injected_after_stls_is_never_read(
    ca: trustme.CA,
    entry: str,
    after_ok: list[Step],
    error: type[Exception],
    message: str,
) -> None:
    tls = server_context(ca, "127.0.0.1")
    script: list[Step] = [
        Send(GREETING),
        Expect(b"CAPA"),
        Send(CAPA_STLS),
        Expect(b"STLS"),
        *after_ok,
        StartTLS(tls),
        WaitForClose(),
    ]
    async with ScriptedServer(script) as server:
        policy = "starttls" if entry == "connect-required" else "if-offered"
        client = client_for(server, timeout=3, tls=policy, ssl_context=client_context(ca))
        with pytest.raises(error, match=message):  # noqa: PT012 - in connect() or login()
            await client.connect()
            await client.login("u", "p", allow_cleartext=True)
        assert not client.is_tls
        assert not client.is_connected
        await client_closed(server)
    # Nothing else went out, in the clear or otherwise; no second connection.
    assert server.received == [b"CAPA", b"STLS"]
    assert server.connections == 1


async def test_stls_without_injection_goes_on_over_tls(ca: trustme.CA) -> None:
    # The script of the injection tests, played straight: the client upgrades,
    # asks CAPA again over TLS, and only then logs in.
    script: list[Step] = [
        Send(b"+OK ready\r\n"),
        Expect(b"CAPA"),
        Send(CAPA_STLS),
        Expect(b"STLS"),
        Send(b"+OK begin TLS\r\n"),
        StartTLS(server_context(ca, "127.0.0.1")),
        Expect(b"CAPA"),
        Send(b"+OK\r\nUSER\r\n.\r\n"),
        Expect(b"USER u"),
        Send(b"+OK\r\n"),
        Expect(b"PASS p"),
        Send(b"+OK logged in\r\n"),
    ]
    async with ScriptedServer(script) as server:
        client = client_for(server, timeout=3, ssl_context=client_context(ca))
        await client.connect()
        assert await client.login("u", "p") is aiopop.AuthMethod.USER
        assert client.is_tls
        await client.close()
        await client_closed(server)
    assert server.received == [b"CAPA", b"STLS", b"CAPA", b"USER u", b"PASS p"]
    assert server.mismatches == []
