"""Connections through real proxies: Dante and microsocks (SOCKS5), tinyproxy (HTTP CONNECT).

The private proxies of servers/proxies.py (Debian's programs, installed by
scripts/install-proxy.sh) stand between aiopop and the in-process test
server or the private Dovecot. Each proxy's own log is the witness that the
connection went through it. When a proxy cannot be started its tests are
skipped, except on CI (``CI=true``), where that is a failure.
"""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import NoReturn

import pytest
import trustme

import aiopop
from aiopop.testing import Mailbox, POP3TestServer
from servers.dovecot import ALICE, DovecotServer
from servers.ports import free_port
from servers.proxies import Dante, Microsocks, ProxyError, ProxyServer, Tinyproxy
from tests.helpers.cli import MESSAGES, PASSWORD, aiopop_command, mailbox_args
from tests.helpers.tls import client_context, server_context

pytestmark = pytest.mark.proxy

TIMEOUT = 15.0
PROXY_USER = "mailproxy"
PROXY_PASSWORD = "Pr0xy-s3cret-word"


def _unavailable(reason: str) -> NoReturn:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(
            f"the proxy is required on CI but could not be started: {reason}", pytrace=False
        )
    pytest.skip(f"the proxy could not be started: {reason}")


def _serve(proxy: ProxyServer) -> Iterator[ProxyServer]:
    failure = None
    try:
        proxy.start()
    except ProxyError as exc:
        failure = str(exc)
    if failure is not None:
        _unavailable(failure)
    try:
        yield proxy
    finally:
        proxy.stop()


@pytest.fixture(scope="module")
def dante() -> Iterator[ProxyServer]:
    yield from _serve(Dante())


@pytest.fixture(scope="module")
def microsocks() -> Iterator[ProxyServer]:
    yield from _serve(Microsocks(PROXY_USER, PROXY_PASSWORD))


@pytest.fixture(scope="module")
def tinyproxy() -> Iterator[ProxyServer]:
    yield from _serve(Tinyproxy())


@pytest.fixture
async def server(ca: trustme.CA) -> AsyncIterator[POP3TestServer]:
    """POP3S whose certificate names only ``localhost``: not the proxies' 127.0.0.1."""
    context = server_context(ca, "localhost")
    box = Mailbox(PASSWORD, list(MESSAGES))
    async with POP3TestServer({"u": box}, ssl_context=context) as srv:
        yield srv


def localhost_args(server: POP3TestServer, cafile: Path, *more: str) -> list[str]:
    """HOST USER for the test server, by the name its certificate carries."""
    args = mailbox_args(server, cafile, *more)
    args[0] = "localhost"
    return args


async def wait_for_log(proxy: ProxyServer, needle: str) -> str:
    """The proxy's log once it holds ``needle`` (a proxy may write it a moment later)."""
    for _ in range(100):
        log = proxy.log()
        if needle in log:
            return log
        await asyncio.sleep(0.05)
    raise AssertionError(f"{needle!r} is not in {proxy.program}'s log:\n{proxy.log_tail()}")


# -- SOCKS5: Dante ------------------------------------------------------------------------------


async def test_stat_through_dante(dante: ProxyServer, server: POP3TestServer, cafile: Path) -> None:
    run = await aiopop_command(
        "stat",
        *localhost_args(server, cafile, "--proxy", f"socks5h://127.0.0.1:{dante.port}"),
        env={"AIOPOP_TEST_PASSWORD": PASSWORD},
    )
    assert (run.status, run.err) == (0, "")
    assert run.out.startswith("You have 2 messages")
    assert server.sessions[0].quit
    # Dante says where it connected the client: the test server's address and port.
    await wait_for_log(dante, f"127.0.0.1.{server.port}")


async def test_tls_through_the_proxy_verifies_the_servers_name(
    dante: ProxyServer, server: POP3TestServer, ca: trustme.CA
) -> None:
    """The certificate names localhost: verified for the POP3 host, not the proxy's 127.0.0.1."""
    account = aiopop.Account(
        "localhost",
        "u",
        port=server.port,
        password=PASSWORD,
        ssl_context=client_context(ca),
        proxy=f"socks5://127.0.0.1:{dante.port}",
        timeout=TIMEOUT,
    )
    async with account.session() as client:
        assert client.is_tls
        assert await client.stat() == (2, sum(map(len, MESSAGES)))
    # The same server by another name: the certificate does not name 127.0.0.1.
    other = aiopop.Account(
        "127.0.0.1",
        "u",
        port=server.port,
        password=PASSWORD,
        ssl_context=client_context(ca),
        proxy=f"socks5://127.0.0.1:{dante.port}",
        timeout=TIMEOUT,
    )
    with pytest.raises(ssl.SSLCertVerificationError):
        async with other.session():
            pass


async def test_an_account_reuses_its_connector_for_every_poll(
    dante: ProxyServer, server: POP3TestServer, ca: trustme.CA
) -> None:
    from python_socks.async_.asyncio import Proxy

    calls = 0

    async def through_dante() -> socket.socket:
        """A connector of one's own, as a user would write it with python-socks."""
        nonlocal calls
        calls += 1
        proxy = Proxy.from_url(f"socks5://127.0.0.1:{dante.port}")
        return await proxy.connect("localhost", server.port, timeout=TIMEOUT)

    account = aiopop.Account(
        "localhost",
        "u",
        port=server.port,
        password=PASSWORD,
        ssl_context=client_context(ca),
        connector=through_dante,
        timeout=TIMEOUT,
    )
    for _ in range(2):
        async with account.session() as client:
            await client.stat()
    assert calls == 2
    assert [record.quit for record in server.sessions] == [True, True]
    log = await wait_for_log(dante, f"127.0.0.1.{server.port}")
    assert sum(f"127.0.0.1.{server.port}" in line for line in log.splitlines()) >= 2


async def test_stat_through_dante_to_dovecot(dante: ProxyServer, dovecot: DovecotServer) -> None:
    run = await aiopop_command(
        "stat",
        "localhost",
        ALICE.name,
        "--port",
        str(dovecot.pop3s_port),
        "--cafile",
        str(dovecot.ca_pem_path),
        "--password-env",
        "AIOPOP_TEST_PASSWORD",
        "--proxy",
        f"socks5h://127.0.0.1:{dante.port}",
        env={"AIOPOP_TEST_PASSWORD": ALICE.password},
    )
    assert (run.status, run.err) == (0, "")
    assert run.out.startswith(f"You have {len(ALICE.messages)} message")
    await wait_for_log(dante, f"127.0.0.1.{dovecot.pop3s_port}")


async def test_stls_through_dante_to_dovecot(dante: ProxyServer, dovecot: DovecotServer) -> None:
    account = aiopop.Account(
        "localhost",
        ALICE.name,
        port=dovecot.pop3_port,
        tls="starttls",
        password=ALICE.password,
        ssl_context=dovecot.ssl_context(),
        proxy=f"socks5h://127.0.0.1:{dante.port}",
        timeout=TIMEOUT,
    )
    async with account.session() as client:
        assert client.is_tls
        count, _ = await client.stat()
    assert count == len(ALICE.messages)
    await wait_for_log(dante, f"127.0.0.1.{dovecot.pop3_port}")


async def test_a_proxy_that_refuses_the_connection(
    dante: ProxyServer, server: POP3TestServer, cafile: Path
) -> None:
    closed = free_port()  # nothing listens there: Dante answers "connection refused"
    args = localhost_args(server, cafile, "--proxy", f"socks5://127.0.0.1:{dante.port}")
    args[args.index("--port") + 1] = str(closed)
    run = await aiopop_command("stat", *args, env={"AIOPOP_TEST_PASSWORD": PASSWORD})
    assert run.status == 5, run.err
    assert run.out == ""
    first = run.err.splitlines()[0]
    assert f"the proxy at 127.0.0.1:{dante.port} answered" in first
    assert "refused" in first.lower()
    assert server.sessions == []


async def test_a_proxy_that_is_not_there(server: POP3TestServer, cafile: Path) -> None:
    nobody = free_port()
    run = await aiopop_command(
        "stat",
        *localhost_args(server, cafile, "--proxy", f"socks5://127.0.0.1:{nobody}"),
        env={"AIOPOP_TEST_PASSWORD": PASSWORD},
    )
    assert run.status == 5, run.err
    assert f"127.0.0.1:{nobody}" in run.err
    assert "proxy" in run.err.lower()
    assert server.sessions == []


# -- SOCKS5 with a user name and password: microsocks --------------------------------------------


async def test_proxy_authentication(
    microsocks: ProxyServer, server: POP3TestServer, cafile: Path
) -> None:
    url = f"socks5://{PROXY_USER}:{PROXY_PASSWORD}@127.0.0.1:{microsocks.port}"
    run = await aiopop_command(
        "stat",
        *localhost_args(server, cafile, "--proxy", url),
        env={"AIOPOP_TEST_PASSWORD": PASSWORD},
    )
    assert (run.status, run.err) == (0, "")
    assert run.out.startswith("You have 2 messages")
    await wait_for_log(microsocks, f"connected to 127.0.0.1:{server.port}")


async def test_a_wrong_proxy_password_is_refused_and_never_shown(
    microsocks: ProxyServer, server: POP3TestServer, cafile: Path
) -> None:
    wrong = "not-the-Pr0xy-word"
    url = f"socks5://{PROXY_USER}:{wrong}@127.0.0.1:{microsocks.port}"
    run = await aiopop_command(
        "stat",
        *localhost_args(server, cafile, "--proxy", url),
        env={"AIOPOP_TEST_PASSWORD": PASSWORD},
    )
    assert run.status == 5, run.err
    assert wrong not in run.err + run.out
    assert f"the proxy at 127.0.0.1:{microsocks.port} answered" in run.err
    assert "authentication" in run.err.lower()
    assert server.sessions == []
    account = aiopop.Account("localhost", "u", proxy=url)
    assert wrong not in repr(account)


# -- HTTP CONNECT: tinyproxy ---------------------------------------------------------------------


async def test_stat_through_tinyproxy(
    tinyproxy: ProxyServer, server: POP3TestServer, cafile: Path
) -> None:
    run = await aiopop_command(
        "stat",
        *localhost_args(server, cafile, "--proxy", f"http://127.0.0.1:{tinyproxy.port}"),
        env={"AIOPOP_TEST_PASSWORD": PASSWORD},
    )
    assert (run.status, run.err) == (0, "")
    assert run.out.startswith("You have 2 messages")
    await wait_for_log(tinyproxy, f"CONNECT localhost:{server.port}")


async def test_http_connect_to_dovecot(tinyproxy: ProxyServer, dovecot: DovecotServer) -> None:
    account = aiopop.Account(
        "localhost",
        ALICE.name,
        port=dovecot.pop3s_port,
        password=ALICE.password,
        ssl_context=dovecot.ssl_context(),
        proxy=f"http://127.0.0.1:{tinyproxy.port}",
        timeout=TIMEOUT,
    )
    async with account.session() as client:
        count, _ = await client.stat()
    assert count == len(ALICE.messages)
    await wait_for_log(tinyproxy, f"CONNECT localhost:{dovecot.pop3s_port}")


async def test_watch_polls_through_the_proxy_of_an_accounts_file(
    dante: ProxyServer, server: POP3TestServer, cafile: Path, tmp_path: Path
) -> None:
    """One Account from the file, two polls: two connections, both through Dante."""
    accounts = tmp_path / "accounts.toml"
    accounts.write_text(
        '[[account]]\nname = "u"\nhost = "localhost"\nuser = "u"\n'
        f'port = {server.port}\npassword_env = "AIOPOP_TEST_PASSWORD"\n'
        f'proxy = "socks5h://127.0.0.1:{dante.port}"\nmaildir = "Mail"\n'
    )
    run = await aiopop_command(
        "watch",
        str(accounts),
        "--polls",
        "2",
        "--interval",
        "0.2",
        "--cafile",
        str(cafile),
        env={"AIOPOP_TEST_PASSWORD": PASSWORD},
    )
    assert run.status == 0, run.err
    assert len(list((tmp_path / "Mail" / "new").iterdir())) == len(MESSAGES)
    assert [session.quit for session in server.sessions] == [True, True]
    log = await wait_for_log(dante, f"127.0.0.1.{server.port}")
    opened = [
        line for line in log.splitlines() if f"127.0.0.1.{server.port}" in line and "[:" in line
    ]
    assert len(opened) >= 2
