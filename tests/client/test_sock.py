"""``sock=`` (a connected socket), ``Account(connector=...)`` and ``Account(proxy=...)``.

The proxies themselves are tested against real ones in tests/integration/test_proxy.py;
here a socket connected straight to the in-process server stands in for one that a
proxy connected.
"""

from __future__ import annotations

import importlib.util
import socket
import ssl
from pathlib import Path

import pytest
import trustme

import aiopop
from aiopop import _proxy
from aiopop._account_keys import KEY_TYPES
from aiopop._accounts import load_accounts
from aiopop._errors import EXIT_NETWORK, EXIT_USAGE, FailureKind, MissingExtraError, diagnose
from aiopop.testing import Mailbox, POP3TestServer
from tests.helpers.login import MESSAGE, PASSWORD
from tests.helpers.tls import client_context, server_context


def connected(server: POP3TestServer, *, blocking: bool = True) -> socket.socket:
    sock = socket.create_connection((server.host, server.port), timeout=5)
    sock.setblocking(blocking)
    return sock


@pytest.mark.parametrize("blocking", [True, False])
async def test_pop3_over_a_given_socket(stls_server: POP3TestServer, blocking: bool) -> None:
    sock = connected(stls_server, blocking=blocking)
    async with aiopop.POP3("pop.example.invalid", tls="none", sock=sock, timeout=5) as client:
        await client.login("mrose", PASSWORD, allow_cleartext=True)
        assert await client.stat() == (1, len(MESSAGE))
    assert sock.fileno() == -1  # owned, and closed with the connection
    assert stls_server.sessions[0].quit


async def test_stls_over_a_given_socket_verifies_the_pop3_host(
    ca: trustme.CA, mailbox: Mailbox
) -> None:
    # The certificate names localhost; the socket goes to 127.0.0.1 (as a proxy's would).
    server = POP3TestServer({"mrose": mailbox}, starttls_context=server_context(ca, "localhost"))
    async with server:
        sock = connected(server)
        client = aiopop.POP3(
            "localhost", tls="starttls", ssl_context=client_context(ca), sock=sock, timeout=5
        )
        async with client:
            assert client.is_tls
            await client.login("mrose", PASSWORD)
        sock = connected(server)
        wrong = aiopop.POP3(
            "127.0.0.1", tls="starttls", ssl_context=client_context(ca), sock=sock, timeout=5
        )
        with pytest.raises(ssl.SSLCertVerificationError):
            await wrong.connect()
        await wrong.close()


async def test_implicit_tls_over_a_given_socket(ca: trustme.CA, mailbox: Mailbox) -> None:
    server = POP3TestServer({"mrose": mailbox}, ssl_context=server_context(ca, "localhost"))
    async with server:
        sock = connected(server)
        client = aiopop.POP3_SSL("localhost", ssl_context=client_context(ca), sock=sock, timeout=5)
        async with client:
            await client.login("mrose", PASSWORD)
            assert await client.stat() == (1, len(MESSAGE))
        assert server.sessions[0].tls


async def test_a_given_socket_serves_one_connection(stls_server: POP3TestServer) -> None:
    client = aiopop.POP3("h", tls="none", sock=connected(stls_server), timeout=5)
    await client.connect()
    await client.close()
    with pytest.raises(aiopop.CommandStateError, match="one connection"):
        await client.connect()


async def test_an_unused_socket_is_closed_by_close() -> None:
    left, right = socket.socketpair()
    with right:
        client = aiopop.POP3("h", sock=left)
        await client.close()
        assert left.fileno() == -1


def test_sock_is_checked() -> None:
    with pytest.raises(TypeError, match=r"socket\.socket"):
        aiopop.POP3("h", sock=3)  # type: ignore[arg-type]
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp,
        pytest.raises(ValueError, match="SOCK_STREAM"),
    ):
        aiopop.POP3("h", sock=udp)
    left, right = socket.socketpair()
    with left, right, pytest.raises(ValueError, match="local_addr"):
        aiopop.POP3("h", sock=left, local_addr=("127.0.0.1", 0))


async def test_an_account_calls_its_connector_for_every_session(
    stls_server: POP3TestServer,
) -> None:
    calls = 0

    async def connector() -> socket.socket:
        nonlocal calls
        calls += 1
        return connected(stls_server, blocking=False)

    account = aiopop.Account(
        "pop.example.invalid",
        "mrose",
        port=110,
        tls="none",
        allow_cleartext=True,
        password=PASSWORD,
        connector=connector,
        timeout=5,
    )
    for _ in range(2):
        async with account.session() as client:
            assert await client.stat() == (1, len(MESSAGE))
    assert calls == 2
    assert [session.quit for session in stls_server.sessions] == [True, True]
    assert "connector" not in repr(account)


async def test_a_connector_that_returns_no_socket_fails_cleanly() -> None:
    async def connector() -> socket.socket:
        return "not a socket"  # type: ignore[return-value]

    account = aiopop.Account("h", "u", tls="none", password="x", connector=connector, timeout=5)
    with pytest.raises(TypeError, match="socket"):
        async with account.session():
            pass


# -- proxy URLs ---------------------------------------------------------------------------------


def test_proxy_urls() -> None:
    parsed = _proxy.parse_proxy("socks5h://alice:p%40ss@127.0.0.1")
    assert (parsed.scheme, parsed.host, parsed.port) == ("socks5h", "127.0.0.1", 1080)
    assert (parsed.username, parsed.password) == ("alice", "p@ss")
    assert "p@ss" not in repr(parsed)
    assert _proxy.parse_proxy("http://127.0.0.1:3128").port == 3128
    assert _proxy.shown_proxy("socks5://alice:secret@h:1") == "socks5://alice:***@h:1"
    assert _proxy.shown_proxy("http://h:1") == "http://h:1"
    for bad in ("ftp://h:1", "socks5://:1", "socks5://h:99999", "socks5://h:1/path", "", 3):
        with pytest.raises(ValueError, match="proxy") as caught:
            _proxy.parse_proxy(bad)
        assert "secret" not in str(caught.value)
    with pytest.raises(ValueError, match="socks4://") as caught:
        _proxy.parse_proxy("socks4://u:secret@h:1")
    assert "secret" not in str(caught.value)


def test_an_accounts_proxy_is_checked_and_kept_secret() -> None:
    account = aiopop.Account("h", "u", proxy="socks5://alice:Sup3r-secret@127.0.0.1:1080")
    assert "Sup3r-secret" not in repr(account)
    with pytest.raises(aiopop.AccountError) as caught:
        aiopop.Account("h", "u", proxy="gopher://alice:Sup3r-secret@127.0.0.1:1")
    assert "Sup3r-secret" not in str(caught.value)

    async def connector() -> socket.socket:
        raise AssertionError("never called")

    with pytest.raises(aiopop.AccountError, match="not both"):
        aiopop.Account("h", "u", proxy="socks5://127.0.0.1:1", connector=connector)


def test_the_proxy_key_of_an_accounts_file(tmp_path: Path) -> None:
    path = tmp_path / "accounts.toml"
    path.write_text(
        '[[account]]\nurl = "pops://u@pop.example.com"\npassword_env = "X"\n'
        'proxy = "socks5://127.0.0.1:1080"\n'
    )
    (account,) = load_accounts(path)
    assert account.proxy == "socks5://127.0.0.1:1080"
    assert KEY_TYPES["proxy"]("socks5h://127.0.0.1:1080") == ""
    problem = KEY_TYPES["proxy"]("ftp://u:Sup3r-secret@h:1")
    assert problem
    assert "Sup3r-secret" not in problem
    path.write_text('[[account]]\nhost = "h"\nuser = "u"\npassword_env = "X"\nproxy = 1080\n')
    with pytest.raises(aiopop.AccountError, match="proxy must be a proxy URL"):
        load_accounts(path)


def test_without_python_socks_a_proxy_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = importlib.util.find_spec

    def find_spec(name: str, *args: object) -> object:
        return None if name == "python_socks" else real(name)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    with pytest.raises(MissingExtraError, match=r"pip install 'aiopop\[proxy\]'") as caught:
        aiopop.Account("h", "u", proxy="socks5://127.0.0.1:1080")
    failure = diagnose(caught.value)
    assert (failure.kind, failure.exit_status) == (FailureKind.USAGE, EXIT_USAGE)
    assert failure.hint is not None
    assert "aiopop[proxy]" in failure.hint


def test_python_socks_errors_are_the_network() -> None:
    import python_socks

    refused = python_socks.ProxyError("Connection refused by destination host", 5)
    unreachable = python_socks.ProxyConnectionError(111, "Could not connect to proxy h:1")
    slow = python_socks.ProxyTimeoutError("Proxy connection timed out: 5")
    for error, kind in (
        (refused, FailureKind.CONNECTION),
        (unreachable, FailureKind.CONNECTION),
        (slow, FailureKind.TIMEOUT),
    ):
        failure = diagnose(error)
        assert (failure.kind, failure.exit_status, failure.retryable) == (kind, EXIT_NETWORK, True)
        assert not failure.local
    assert "proxy" in (diagnose(refused).hint or "")
    assert "proxy" in (diagnose(unreachable).hint or "")


async def test_a_given_socket_is_closed_when_connecting_fails() -> None:
    left, right = socket.socketpair()  # nothing ever greets on the other end
    with right:
        client = aiopop.POP3("h", sock=left, timeout=0.2)
        with pytest.raises(aiopop.POP3TimeoutError):
            await client.connect()
        await client.close()
        assert left.fileno() == -1


def test_odd_proxy_urls_and_connectors() -> None:
    with pytest.raises(ValueError, match="needs a user name") as caught:
        _proxy.parse_proxy("socks5://:Sup3r-secret@127.0.0.1:1080")
    assert "Sup3r-secret" not in str(caught.value)
    assert _proxy.shown_proxy("http://[::1") == "(a proxy URL that cannot be read)"
    with pytest.raises(aiopop.AccountError, match="async callable"):
        aiopop.Account("h", "u", connector=3)  # type: ignore[arg-type]


async def test_a_connector_excludes_sock_and_local_addr() -> None:
    from aiopop._client import use_connector

    async def connector() -> socket.socket:
        raise AssertionError("never called")

    left, right = socket.socketpair()
    with right:
        client = aiopop.POP3("h", sock=left)
        with pytest.raises(ValueError, match="not both"):
            use_connector(client, connector)
        await client.close()
    bound = aiopop.POP3("h", local_addr=("127.0.0.1", 0))
    with pytest.raises(ValueError, match="not both"):
        use_connector(bound, connector)
