"""The pytest plugin: the ``pop3_server`` fixture, used here as a user would use it.

The plugin is registered by the ``pytest11`` entry point of the installed
project (``pip install -e .``), as it is for aiopop's users; the pytester
tests run small user test files in a fresh pytest process to prove it.
"""

from __future__ import annotations

import ssl
import subprocess
import sys
import textwrap
import time

import pytest

import aiopop
from aiopop.testing import (
    DEFAULT_MESSAGES,
    DEFAULT_PASSWORD,
    DEFAULT_USER,
    LOGIN,
    Faults,
    GeneratedMessage,
    LocalCA,
    Mailbox,
    POP3ServerFixture,
)

pytest_plugins = ["pytester"]

NOTE = b"Subject: note\r\n\r\nremember the milk\r\n"


# -- The default server -------------------------------------------------------


async def test_the_default_server_has_one_mailbox_of_three_messages(
    pop3_server: POP3ServerFixture,
) -> None:
    assert (pop3_server.host, pop3_server.tls) == ("127.0.0.1", None)
    assert pop3_server.port > 0
    assert (pop3_server.user, pop3_server.password) == (DEFAULT_USER, DEFAULT_PASSWORD)
    assert (DEFAULT_USER, DEFAULT_PASSWORD) == ("user", "password")
    client = pop3_server.client()
    assert type(client) is aiopop.POP3
    assert not client.is_connected  # unconnected until the test says so
    async with client:
        assert await client.login(pop3_server.user, pop3_server.password) is aiopop.AuthMethod.APOP
        assert await client.stat() == (3, sum(map(len, DEFAULT_MESSAGES)))
        assert [message async for _, message in client.retr_many([1, 2, 3])] == list(
            DEFAULT_MESSAGES
        )
    assert b"\r\n.\r\n" in DEFAULT_MESSAGES[1]  # a lone dot, stuffed on the wire
    assert pop3_server.sessions[0].quit
    assert pop3_server.sessions[0].pipelined  # the server announces PIPELINING


async def test_mail_added_to_the_mailbox_appears_at_the_next_login(
    pop3_server: POP3ServerFixture,
) -> None:
    uid = pop3_server.mailbox.add(NOTE)
    assert pop3_server.mailboxes == {"user": pop3_server.mailbox}
    async with pop3_server.client() as client:
        await client.login(pop3_server.user, pop3_server.password)
        assert (await client.uidl(4)).uid == uid
        assert await client.retr(4) == NOTE
        await client.dele(1)
    assert len(pop3_server.mailbox.messages) == 3  # QUIT committed the deletion


async def test_client_options_reach_the_client(pop3_server: POP3ServerFixture) -> None:
    client = pop3_server.client(timeout=3.5, pipelining=False)
    assert (client.host, client.port, client.timeout) == ("127.0.0.1", pop3_server.port, 3.5)
    assert pop3_server.client_ssl_context() is None
    assert repr(pop3_server) == f"<POP3ServerFixture 127.0.0.1:{pop3_server.port}>"


# -- More servers, with options -------------------------------------------------


async def test_start_with_mailboxes_of_your_own(pop3_server: POP3ServerFixture) -> None:
    big = GeneratedMessage(200_000, seed=3)
    server = await pop3_server.start(
        mailboxes={"alice": Mailbox("secret", [NOTE, big]), "bob": Mailbox("hunter2")}
    )
    assert server.port != pop3_server.port
    assert (server.user, server.password) == ("alice", "secret")
    async with server.client() as client:
        await client.login("alice", "secret")
        assert await client.list() == [
            aiopop.ListEntry(1, len(NOTE)),
            aiopop.ListEntry(2, 200_000),
        ]
        async with client.retr_stream(2) as stream:
            assert sum([len(chunk) async for chunk in stream]) == 200_000
    async with server.client() as client:
        await client.login("bob", "hunter2")
        assert await client.stat() == (0, 0)
    assert [record.user for record in server.sessions] == ["alice", "bob"]
    assert pop3_server.sessions == []  # the default server saw none of it


async def test_start_with_messages_fills_the_default_mailbox(
    pop3_server: POP3ServerFixture,
) -> None:
    server = await pop3_server.start(messages=[NOTE])
    assert server.user == "user"
    assert server.mailbox.messages == [NOTE]
    empty = await pop3_server.start(mailboxes={})
    with pytest.raises(LookupError, match="no mailboxes"):
        _ = empty.user


async def test_implicit_tls(pop3_server: POP3ServerFixture) -> None:
    server = await pop3_server.start(tls="implicit")
    client = server.client()
    assert isinstance(client, aiopop.POP3_SSL)
    async with client:
        assert client.is_tls
        await client.login(server.user, server.password)
        assert await client.retr(1) == DEFAULT_MESSAGES[0]
    assert server.sessions[0].tls


async def test_starttls(pop3_server: POP3ServerFixture) -> None:
    server = await pop3_server.start(tls="starttls", apop=False)
    client = server.client()
    assert type(client) is aiopop.POP3
    async with client:
        assert not client.is_tls
        # login() upgrades first, then USER/PASS is safe to send.
        assert await client.login(server.user, server.password) is aiopop.AuthMethod.USER
        assert client.is_tls
    record = server.sessions[0]
    assert record.tls
    assert record.keywords[:3] == ["CAPA", "STLS", "CAPA"]


async def test_tls_over_ipv6_loopback(pop3_server: POP3ServerFixture) -> None:
    try:
        server = await pop3_server.start(tls="implicit", host="::1")
    except OSError as exc:  # no IPv6 on this machine
        pytest.skip(f"cannot listen on ::1: {exc}")
    async with server.client() as client:
        await client.login(server.user, server.password)
        assert await client.stat() == (3, sum(map(len, DEFAULT_MESSAGES)))


async def test_the_ca_can_configure_other_clients(
    pop3_server: POP3ServerFixture, pop3_ca: LocalCA
) -> None:
    server = await pop3_server.start(tls="implicit")
    assert pop3_server.ca is pop3_ca.ca is server.ca
    async with aiopop.POP3_SSL(
        server.host, server.port, ssl_context=pop3_ca.client_context()
    ) as client:
        await client.login(server.user, server.password)
    with pytest.raises(ssl.SSLCertVerificationError):  # the system CAs do not know it
        await aiopop.POP3_SSL(server.host, server.port).connect()


async def test_sasl(pop3_server: POP3ServerFixture) -> None:
    server = await pop3_server.start(sasl=["SCRAM-SHA-256", "PLAIN"], apop=False)
    async with server.client() as client:
        assert await client.login(server.user, server.password) is aiopop.AuthMethod.SCRAM_SHA_256
    assert server.sessions[0].mechanism == "SCRAM-SHA-256"


@pytest.mark.parametrize("pipelining", [True, False])
async def test_pipelining_on_or_off(pop3_server: POP3ServerFixture, pipelining: bool) -> None:
    server = await pop3_server.start(pipelining=pipelining)
    async with server.client() as client:
        await client.login(server.user, server.password)
        assert ("PIPELINING" in await client.capa()) is pipelining
        assert len([n async for n, _ in client.retr_many([1, 2, 3])]) == 3
    assert bool(server.sessions[0].pipelined) is pipelining


async def test_tls_starttls_means_required_on_the_server_too(
    pop3_server: POP3ServerFixture,
) -> None:
    # One word, one meaning: "starttls" is TLS by STLS, required, for the
    # server as for the client. A login before STLS is refused, as Dovecot does.
    server = await pop3_server.start(tls="starttls")
    async with server.client() as client:
        with pytest.raises(aiopop.AuthenticationError, match="Plaintext authentication"):
            await client.user(server.user)
        await client.stls()
        await client.user(server.user)
        await client.pass_(server.password)
    # The client asks CAPA again after STLS (RFC 2595 section 4); the rest is ours.
    sent = [keyword for keyword in server.sessions[0].keywords if keyword != "CAPA"]
    assert sent[:4] == ["USER", "STLS", "USER", "PASS"]
    assert server.sessions[0].user == server.user


async def test_tls_if_offered_allows_a_cleartext_login(pop3_server: POP3ServerFixture) -> None:
    server = await pop3_server.start(tls="if-offered")
    async with server.client() as client:
        assert "STLS" in await client.capa()
        await client.user(server.user)
        await client.pass_(server.password)
        assert not client.is_tls
    assert server.sessions[0].user == server.user
    assert not server.sessions[0].tls


@pytest.mark.parametrize("word", ["none", None])
async def test_tls_none_offers_no_stls(pop3_server: POP3ServerFixture, word: str | None) -> None:
    server = await pop3_server.start(tls=word)  # type: ignore[arg-type]
    assert server.tls is None
    async with server.client() as client:
        assert "STLS" not in await client.capa()


async def test_other_server_options_pass_through(pop3_server: POP3ServerFixture) -> None:
    server = await pop3_server.start(greeting=b"Hello from the test", extra_capabilities=["X-ONE"])
    async with server.client() as client:
        assert client.getwelcome().startswith(b"+OK Hello from the test <")
        assert "X-ONE" in await client.capa()


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"mailboxes": {}, "messages": []}, ValueError, "not both"),
        ({"tls": "ssl"}, ValueError, "tls must be"),
        ({"host": "192.0.2.1"}, ValueError, "loopback"),
        ({"host": "localhost"}, ValueError, "loopback"),
        ({"ssl_context": None}, TypeError, "tls='implicit'"),
        ({"starttls_context": None}, TypeError, "tls='implicit'"),
        ({"require_tls": True}, TypeError, "tls='implicit'"),
    ],
)
async def test_start_checks_its_options(
    pop3_server: POP3ServerFixture, kwargs: dict[str, object], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        await pop3_server.start(**kwargs)  # type: ignore[arg-type]


# -- Faults and latency, as a client meets them ----------------------------------


async def test_a_drop_in_the_middle_of_a_message(pop3_server: POP3ServerFixture) -> None:
    server = await pop3_server.start(faults=Faults(drop_at="RETR", drop_after_octets=40))
    async with server.client() as client:
        await client.login(server.user, server.password)
        with pytest.raises(aiopop.ConnectionLostError):
            await client.retr(1)
    assert server.sessions[0].dropped
    assert server.sessions[0].lines[-1] == b"RETR 1"


async def test_a_drop_before_the_reply(pop3_server: POP3ServerFixture) -> None:
    pop3_server.faults = Faults(drop_at="STAT")
    async with pop3_server.client() as client:
        await client.login(pop3_server.user, pop3_server.password)
        with pytest.raises(aiopop.ConnectionLostError):
            await client.stat()
    pop3_server.faults = Faults()  # later connections are served normally
    async with pop3_server.client() as client:
        await client.login(pop3_server.user, pop3_server.password)
        assert (await client.stat()).count == 3


async def test_sys_temp_on_every_login(pop3_server: POP3ServerFixture) -> None:
    server = await pop3_server.start(faults=Faults(error_at=LOGIN))
    async with server.client() as client:
        with pytest.raises(aiopop.TemporaryFailureError, match="SYS/TEMP") as caught:
            await client.login(server.user, server.password)
        assert isinstance(caught.value, aiopop.AuthenticationError)
        assert caught.value.is_temporary


async def test_sys_temp_on_one_command(pop3_server: POP3ServerFixture) -> None:
    server = await pop3_server.start(faults=Faults(error_at="DELE"))
    async with server.client() as client:
        await client.login(server.user, server.password)
        with pytest.raises(aiopop.TemporaryFailureError):
            await client.dele(1)
        assert await client.retr(1) == DEFAULT_MESSAGES[0]


async def test_close_after_a_refused_login(pop3_server: POP3ServerFixture) -> None:
    server = await pop3_server.start(close_after_failed_login=True)
    async with server.client() as client:
        with pytest.raises(aiopop.CredentialsError):
            await client.apop(server.user, "wrong")
        with pytest.raises(aiopop.ConnectionLostError):
            await client.user(server.user)


async def test_latency(pop3_server: POP3ServerFixture) -> None:
    server = await pop3_server.start(latency=0.1, faults=Faults(error_at="NOOP"))
    assert server.faults == Faults(error_at="NOOP", latency=0.1)
    started = time.monotonic()
    async with server.client() as client:  # the greeting waits
        await client.login(server.user, server.password)  # CAPA, APOP
        assert time.monotonic() - started >= 0.3
        with pytest.raises(aiopop.TemporaryFailureError):
            await client.noop()


# -- Without trustme, and the cost of the plugin ---------------------------------


def test_tls_without_trustme_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "trustme", None)  # "import trustme" now fails
    ca = LocalCA()
    with pytest.raises(ModuleNotFoundError, match="pip install trustme"):
        ca.server_context()


async def test_a_plain_server_needs_no_trustme(
    pop3_server: POP3ServerFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "trustme", None)
    fresh = await POP3ServerFixture.open(LocalCA())
    try:
        server = await fresh.start(messages=[NOTE])
        async with server.client() as client:
            await client.login(server.user, server.password)
        with pytest.raises(ModuleNotFoundError, match="pip install trustme"):
            await fresh.start(tls="starttls")
    finally:
        await fresh.close()
    assert not server.server._server  # closed with the fixture


def test_loading_the_plugin_imports_nothing_of_aiopop() -> None:
    code = textwrap.dedent(
        """
        import sys
        import _aiopop_pytest
        loaded = [name for name in sys.modules if name.split(".")[0] in ("aiopop", "trustme")]
        assert not loaded, loaded
        assert callable(_aiopop_pytest.pop3_server)
        """
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# -- The entry point, as a user's pytest run sees it ------------------------------

USER_TESTS = """
import pytest

import aiopop
from aiopop.testing import LOGIN, Faults


@pytest.mark.asyncio
async def test_reads_the_default_mailbox(pop3_server):
    async with pop3_server.client() as client:
        await client.login(pop3_server.user, pop3_server.password)
        assert (await client.stat()).count == 3


@pytest.mark.asyncio
@pytest.mark.parametrize("tls", ["implicit", "starttls"])
async def test_tls(pop3_server, tls):
    server = await pop3_server.start(tls=tls)
    async with server.client() as client:
        await client.login(server.user, server.password)
        assert client.is_tls


@pytest.mark.asyncio
async def test_faults(pop3_server):
    server = await pop3_server.start(faults=Faults(error_at=LOGIN))
    async with server.client() as client:
        with pytest.raises(aiopop.TemporaryFailureError):
            await client.login(server.user, server.password)
"""

UNMARKED_TEST = """
async def test_unmarked_in_auto_mode(pop3_server):
    async with pop3_server.client() as client:
        await client.login(pop3_server.user, pop3_server.password)
"""


@pytest.mark.parametrize("mode", ["strict", "auto"])
def test_users_get_the_fixture_from_the_entry_point(pytester: pytest.Pytester, mode: str) -> None:
    pytester.makeini(
        f"""
        [pytest]
        asyncio_mode = {mode}
        asyncio_default_fixture_loop_scope = function
        """
    )
    pytester.makepyfile(test_user=USER_TESTS)
    expected = 4
    if mode == "auto":
        pytester.makepyfile(test_unmarked=UNMARKED_TEST)
        expected += 1
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-W", "error", timeout=120)
    result.assert_outcomes(passed=expected)


def test_the_plugin_shows_in_trace_config_and_can_be_turned_off(
    pytester: pytest.Pytester,
) -> None:
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    pytester.makepyfile(test_user=USER_TESTS)
    traced = pytester.runpytest_subprocess("--trace-config", "--co", "-q", timeout=120)
    traced.stdout.fnmatch_lines(["*PLUGIN registered: <module '_aiopop_pytest'*"])
    off = pytester.runpytest_subprocess("-p", "no:aiopop", "-p", "no:cacheprovider", timeout=120)
    off.stdout.fnmatch_lines(["*fixture 'pop3_server' not found*"])


def test_with_plugin_autoloading_off_dash_p_turns_it_on(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    pytester.makepyfile(test_user=USER_TESTS)
    result = pytester.runpytest_subprocess(
        "-p", "asyncio", "-p", "aiopop", "-p", "no:cacheprovider", timeout=120
    )
    result.assert_outcomes(passed=4)
