"""Accounts: POP URLs (RFC 2384), TOML files, where secrets come from, and logging in."""

from __future__ import annotations

import logging
import os
import re
import ssl
import subprocess
import sys
import types
from pathlib import Path

import pytest

import aiopop
from aiopop import AuthMethod
from aiopop._accounts import (
    Account,
    AccountError,
    load_accounts,
    mailbox_key,
    secret_from_command,
    secret_from_env,
    secret_from_keyring,
)
from aiopop.testing import Mailbox, POP3ServerFixture, POP3TestServer

PASSWORD = "tanstaaf"


def test_from_url_reads_rfc_2384() -> None:
    account = Account.from_url("pop://rg;AUTH=+APOP@mail.eudora.com:8110", password=PASSWORD)
    assert (account.host, account.port, account.user, account.auth) == (
        "mail.eudora.com",
        8110,
        "rg",
        "+APOP",
    )
    assert account.tls == "starttls"  # plain pop:// still refuses to log in without TLS
    assert account.effective_port == 8110
    assert Account.from_url("pop://baz;AUTH=SCRAM-SHA-256@x.test").auth == "SCRAM-SHA-256"
    secure = Account.from_url("pops://a%40b.example@x.test")
    assert (secure.user, secure.tls, secure.auth, secure.effective_port) == (
        "a@b.example",
        "implicit",
        "*",
        995,
    )
    assert secure.url() == "pops://a%40b.example@x.test"
    assert account.url() == "pop://rg;AUTH=+APOP@mail.eudora.com:8110"
    assert Account.from_url("pop://u@x.test", tls="none").effective_port == 110


def test_from_url_carries_the_secret_given_beside_it() -> None:
    assert Account.from_url("pop://u@x.test", password=PASSWORD).password == PASSWORD
    oauth = Account.from_url("pops://u;AUTH=XOAUTH2@x.test", oauth2_token="tok-123")
    assert (oauth.oauth2_token, oauth.password) == ("tok-123", None)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("pop://user:hunter2@x.test", "must not carry a password"),
        ("imap://user@x.test", "not a POP URL"),
        ("pop://x.test", "no user"),
        ("pop://u@x.test/INBOX", "unexpected path"),
        ("pop://u@x.test/?box=1", "unexpected path or query"),
        ("pop://u@x.test#inbox", "unexpected path or query"),
        ("pop://u;FOO=bar@x.test", "unknown POP URL parameter"),
        ("pop://u@x.test:99999", "bad port"),
    ],
)
def test_from_url_refuses_bad_urls(url: str, message: str) -> None:
    with pytest.raises(AccountError, match=message) as info:
        Account.from_url(url)
    assert "hunter2" not in str(info.value)


def test_account_checks_its_fields() -> None:
    with pytest.raises(AccountError, match="tls must be one of"):
        Account("x.test", "u", tls="sometimes")  # type: ignore[arg-type]
    with pytest.raises(AccountError, match="invalid host"):
        Account("x.test/evil", "u")
    with pytest.raises(AccountError, match="user name is empty"):
        Account("x.test", "")
    with pytest.raises(AccountError, match="invalid port"):
        Account("x.test", "u", port=0)
    with pytest.raises(AccountError, match="timeout must be"):
        Account("x.test", "u", timeout=0)
    with pytest.raises(AccountError, match="timeout must be"):
        Account("x.test", "u", timeout=True)
    for auth in ("", "SCRAM SHA-256", "+USER\t"):
        with pytest.raises(AccountError, match="invalid auth"):
            Account("x.test", "u", auth=auth)
    with pytest.raises(AccountError, match="invalid port"):
        Account("x.test", "u", port=65536)
    assert (Account("x.test", "u", port=1).port, Account("x.test", "u", port=65535).port) == (
        1,
        65535,
    )


def test_secrets_stay_out_of_repr() -> None:
    account = Account("x.test", "u", password=PASSWORD, oauth2_token="tok-123")
    assert PASSWORD not in repr(account)
    assert "tok-123" not in repr(account)
    assert account.name == "u@x.test"
    assert Account("x.test", "u", port=1100, label="work").name == "work"


async def test_secret_sources(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIOPOP_TEST_SECRET", PASSWORD)
    assert await secret_from_env("AIOPOP_TEST_SECRET")() == PASSWORD
    monkeypatch.delenv("AIOPOP_TEST_SECRET")
    with pytest.raises(AccountError, match="AIOPOP_TEST_SECRET is not set"):
        await secret_from_env("AIOPOP_TEST_SECRET")()
    monkeypatch.setenv("AIOPOP_TEST_SECRET", "")
    with pytest.raises(AccountError, match="AIOPOP_TEST_SECRET is empty"):
        await secret_from_env("AIOPOP_TEST_SECRET")()
    command = [sys.executable, "-c", f"print({PASSWORD!r}); print('second line')"]
    assert await secret_from_command(command)() == PASSWORD
    failing = [sys.executable, "-c", f"print({PASSWORD!r}); raise SystemExit(3)"]
    with pytest.raises(
        AccountError,
        match=f"^password command {re.escape(repr(sys.executable))} failed with exit status 3$",
    ) as info:
        await secret_from_command(failing)()
    assert PASSWORD not in str(info.value)
    with pytest.raises(AccountError, match="could not run"):
        await secret_from_command(["/nonexistent/aiopop-password-tool"])()
    with pytest.raises(AccountError, match="printed nothing"):
        await secret_from_command([sys.executable, "-c", "pass"])()


async def test_keyring_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[tuple[str, str]] = []

    def get_password(service: str, username: str) -> str | None:
        asked.append((service, username))
        return PASSWORD if username == "u@x.test" else None

    monkeypatch.setitem(sys.modules, "keyring", types.SimpleNamespace(get_password=get_password))
    assert await secret_from_keyring("aiopop", "u@x.test")() == PASSWORD
    with pytest.raises(AccountError, match="no keyring entry for service 'aiopop', user 'v@x'"):
        await secret_from_keyring("aiopop", "v@x")()
    assert asked == [("aiopop", "u@x.test"), ("aiopop", "v@x")]


async def test_keyring_secret_without_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "keyring", None)  # makes the import fail
    with pytest.raises(AccountError, match="keyring package is not installed"):
        await secret_from_keyring("aiopop", "u@x.test")()


def test_load_accounts(tmp_path: Path) -> None:
    path = tmp_path / "accounts.toml"
    path.write_text(
        """
[[account]]
name = "work"
url = "pops://alice@pop.example.test"
password_env = "WORK_PASSWORD"

[[account]]
host = "pop.example.test"
port = 1100
user = "bob"
tls = "if-offered"
auth = "SCRAM-SHA-256"
allow_cleartext = true
timeout = 12.5
password_command = ["pass", "show", "mail/bob"]

[[account]]
host = "pop.gmail.test"
user = "carol@gmail.test"
oauth2_token_env = "GMAIL_TOKEN"
""",
        encoding="utf-8",
    )
    work, bob, carol = load_accounts(path)
    assert (work.name, work.user, work.tls) == ("work", "alice", "implicit")
    assert callable(work.password)
    assert (bob.host, bob.user, bob.port) == ("pop.example.test", "bob", 1100)
    assert (bob.tls, bob.auth, bob.allow_cleartext, bob.timeout) == (
        "if-offered",
        "SCRAM-SHA-256",
        True,
        12.5,
    )
    assert (carol.host, carol.user, carol.port) == ("pop.gmail.test", "carol@gmail.test", None)
    assert carol.password is None
    assert callable(carol.oauth2_token)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('[[account]]\nhost = "x"\nuser = "u"\npassword = "hunter2"\n', "inline secrets"),
        ('[[account]]\nhost = "x"\nuser = "u"\noauth2_token = "hunter2"\n', "inline secrets"),
        (
            '[[account]]\nhost = "x"\nuser = "u"\npassword_env = "A"\n\n[[account]]\nhost = "y"\n',
            "accounts.toml: account 2: host and user",
        ),
        ('[[account]]\nhost = "x"\nuser = "u"\n', "exactly one secret source"),
        ('[[account]]\nhost = "x"\nuser = "u"\npassword_env = "A"\nkeyring = true\n', "exactly"),
        ('[[account]]\nhost = "x"\npassword_env = "A"\n', "host and user"),
        ('[[account]]\nurl = "pop://u@x"\nhost = "y"\npassword_env = "A"\n', "not both"),
        ('[[account]]\nhost = "x"\nuser = "u"\npasword_env = "A"\n', "unknown keys"),
        ("title = 'no accounts'\n", "no \\[\\[account\\]\\] tables"),
        ("[[account]\n", "accounts.toml"),
    ],
)
def test_load_accounts_refuses_bad_files(tmp_path: Path, body: str, message: str) -> None:
    path = tmp_path / "accounts.toml"
    path.write_text(body, encoding="utf-8")
    with pytest.raises(AccountError, match=message) as info:
        load_accounts(path)
    assert "hunter2" not in str(info.value)


# -- logging in ---------------------------------------------------------------------------


async def test_session_logs_in_and_quits(
    server_tls: ssl.SSLContext, client_tls: ssl.SSLContext, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="aiopop")
    box = Mailbox(PASSWORD, [b"Subject: a\r\n\r\nx\r\n"])
    server = POP3TestServer({"u": box}, ssl_context=server_tls, sasl=["SCRAM-SHA-256"])
    async with server:
        account = Account(
            server.host,
            "u",
            port=server.port,
            password=secret_from_command([sys.executable, "-c", f"print({PASSWORD!r})"]),
            ssl_context=client_tls,
        )
        async with account.session() as client:
            assert (await client.stat()).count == 1
    assert server.sessions[0].mechanism == "SCRAM-SHA-256"
    assert server.sessions[0].quit
    assert PASSWORD not in caplog.text


@pytest.mark.parametrize(
    ("auth", "expected"),
    [
        ("+APOP", AuthMethod.APOP),
        ("+USER", AuthMethod.USER),
        ("PLAIN", AuthMethod.PLAIN),
        ("LOGIN", AuthMethod.LOGIN),
    ],
)
async def test_the_accounts_auth_is_used(auth: str, expected: AuthMethod) -> None:
    box = Mailbox(PASSWORD, [])
    async with POP3TestServer({"u": box}, sasl=["PLAIN", "LOGIN", "SCRAM-SHA-256"]) as server:
        account = Account(
            server.host, "u", port=server.port, tls="none", auth=auth, password=PASSWORD
        )
        client = account.client()
        async with client:
            if expected is AuthMethod.APOP:
                assert await account.login(client) is expected
            else:
                with pytest.raises(aiopop.InsecureLoginError, match="no password was sent"):
                    await account.login(client)
                allowed = Account(
                    server.host,
                    "u",
                    port=server.port,
                    tls="none",
                    auth=auth,
                    password=PASSWORD,
                    allow_cleartext=True,
                )
                assert await allowed.login(client) is expected
    assert server.sessions[0].mechanism == expected.value


async def test_login_needs_a_secret_that_fits(pop3_server: POP3ServerFixture) -> None:
    server = (await pop3_server.start(mailboxes={"u": Mailbox(PASSWORD, [])})).server
    bare = Account(server.host, "u", port=server.port, tls="none")
    async with bare.client() as client:
        with pytest.raises(AccountError, match=r"no password or OAuth 2\.0 token"):
            await bare.login(client)
        token = bare.with_secret(oauth2_token="tok")
        with pytest.raises(AccountError, match="cannot be used with"):
            await (
                Account(server.host, "u", port=server.port, tls="none", auth="+APOP")
                .with_secret(oauth2_token="tok")
                .login(client)
            )
        assert token.oauth2_token == "tok"
        unknown = Account(server.host, "u", port=server.port, tls="none", auth="NTLM", password="x")
        with pytest.raises(AccountError, match="unknown login method"):
            await unknown.login(client)


def test_error_messages_hide_a_password_in_any_url() -> None:
    with pytest.raises(AccountError) as info:
        Account.from_url("imap://u:hunter2@x.test:143")
    assert str(info.value) == "not a POP URL (pop:// or pops://): imap://u:***@x.test:143"


def test_url_quotes_the_user_and_brackets_an_ipv6_host() -> None:
    account = Account("::1", "a/b@c", port=1100, tls="none", auth="+APOP")
    assert account.url() == "pop://a%2Fb%40c;AUTH=+APOP@[::1]:1100"


def test_client_carries_the_accounts_options() -> None:
    context = ssl.create_default_context()
    account = Account("x.test", "u", tls="starttls", timeout=7, ssl_context=context)
    client = account.client(max_in_flight=5)
    assert type(client) is aiopop.POP3
    assert (client.host, client.port, client.timeout, client.max_in_flight) == (
        "x.test",
        110,
        7,
        5,
    )
    assert client.tls == "starttls"
    assert client.ssl_context is context
    assert Account("x.test", "u", tls="none").client().tls == "none"
    secure = Account("x.test", "u", port=9950, ssl_context=context).client(max_in_flight=3)
    assert type(secure) is aiopop.POP3_SSL
    assert (secure.port, secure.ssl_context, secure.max_in_flight) == (9950, context, 3)


async def test_an_oauth2_account_logs_in_with_its_token(
    server_tls: ssl.SSLContext, client_tls: ssl.SSLContext
) -> None:
    box = Mailbox(PASSWORD, [], tokens=("tok-123",))
    server = POP3TestServer({"u": box}, ssl_context=server_tls, sasl=["XOAUTH2"])

    async def token() -> str:
        return "tok-123"

    async with server:
        account = Account(
            server.host, "u", port=server.port, auth="xoauth2", ssl_context=client_tls
        ).with_secret(oauth2_token=token)
        async with account.session() as client:
            assert client.state is aiopop.State.TRANSACTION
    assert server.sessions[0].mechanism == "XOAUTH2"


async def test_an_empty_secret_is_refused() -> None:
    async def empty() -> str:
        return ""

    async with POP3TestServer({"u": Mailbox(PASSWORD, [])}) as server:
        account = Account(server.host, "u", port=server.port, tls="none", password=empty)
        async with account.client() as client:
            with pytest.raises(AccountError, match="the secret is empty"):
                await account.login(client)
    assert server.sessions[0].lines == [b"QUIT"]


# -- files of accounts are data --------------------------------------------------------------


def write_accounts(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "accounts.toml"
    path.write_text(body, encoding="utf-8")
    return path


async def test_a_command_given_as_a_string_is_split_as_a_shell_would(tmp_path: Path) -> None:
    # Split into characters, this ran "p"; split by shlex, the quoted script is one argument.
    script = f"print({PASSWORD!r} + ' ' + 'x y')"
    path = write_accounts(
        tmp_path,
        f"""
[[account]]
host = "x.test"
user = "u"
password_command = "{sys.executable} -c \\"{script}\\""

[[account]]
host = "y.test"
user = "u"
oauth2_token_command = '{sys.executable} -c "print(1 + 2)"  # not a comment: no shell'
""",
    )
    first, second = load_accounts(path)
    assert callable(first.password)
    assert await first.password() == f"{PASSWORD} x y"
    assert callable(second.oauth2_token)
    # "#" and everything after it are arguments: python sees sys.argv[1:] == ["#", ...].
    assert await second.oauth2_token() == "3"


async def test_a_string_command_never_goes_through_a_shell(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    command = f"{sys.executable} -c 'import sys; print(sys.argv[1:])' $HOME ; touch {marker}"
    assert await secret_from_command(command)() == str(["$HOME", ";", "touch", str(marker)])
    assert not marker.exists()


@pytest.mark.parametrize("key", ["password_command", "oauth2_token_command"])
@pytest.mark.parametrize(
    ("value", "message"),
    [
        ('""', "an empty or unclosed one"),
        ('"   "', "an empty or unclosed one"),
        ("'pass show \"mail'", "an empty or unclosed one"),
        ("[]", "a command line or a non-empty array of strings"),
        ('["pass", 1]', "a command line or a non-empty array of strings"),
        ('[""]', "a command line or a non-empty array of strings"),
        ("42", "a command line or a non-empty array of strings"),
    ],
)
def test_an_unusable_command_is_refused(tmp_path: Path, key: str, value: str, message: str) -> None:
    path = write_accounts(
        tmp_path, f'[[account]]\nname = "work"\nhost = "x"\nuser = "u"\n{key} = {value}\n'
    )
    with pytest.raises(AccountError) as info:
        load_accounts(path)
    assert str(info.value).startswith(f"{path}: account 1 ('work'): {key} must be ")
    assert message in str(info.value)


def test_secret_from_command_refuses_an_empty_string() -> None:
    for argv in ("", "  ", "'unclosed"):
        with pytest.raises(AccountError, match="non-empty string split as a shell"):
            secret_from_command(argv)


@pytest.mark.parametrize(
    ("line", "key", "message"),
    [
        ("port = true", "port", "an integer from 1 to 65535, not True"),
        ("port = 995.5", "port", "an integer from 1 to 65535, not 995.5"),
        ('port = "995"', "port", "an integer from 1 to 65535, not '995'"),
        ("port = 0", "port", "an integer from 1 to 65535, not 0"),
        ("port = 65536", "port", "an integer from 1 to 65535, not 65536"),
        ("timeout = 0", "timeout", "a positive number of seconds, not 0"),
        ("timeout = -1.5", "timeout", "a positive number of seconds, not -1.5"),
        ("timeout = true", "timeout", "a positive number of seconds, not True"),
        ('timeout = "60"', "timeout", "a positive number of seconds, not '60'"),
        ("timeout = inf", "timeout", "a positive number of seconds, not inf"),
        ("timeout = nan", "timeout", "a positive number of seconds, not nan"),
        ('allow_cleartext = "yes"', "allow_cleartext", "true or false, not 'yes'"),
        ("allow_cleartext = 1", "allow_cleartext", "true or false, not 1"),
        ('tls = "sometimes"', "tls", "one of if-offered, implicit, none, starttls"),
        ("tls = true", "tls", "one of if-offered, implicit, none, starttls, not True"),
        ("auth = 1", "auth", "a non-empty string, not 1"),
        ("name = 7", "name", "a non-empty string, not 7"),
        ('name = ""', "name", "a non-empty string, not ''"),
        ("state_key = 3", "state_key", "a non-empty string, not 3"),
        ('state_key = ""', "state_key", "a non-empty string, not ''"),
        ("password_env = 1", "password_env", "a non-empty string, not 1"),
        ("keyring = false", "keyring", "true (the only value it takes), not False"),
        ('keyring = "yes"', "keyring", "true (the only value it takes), not 'yes'"),
    ],
)
def test_each_key_has_a_type(tmp_path: Path, line: str, key: str, message: str) -> None:
    secret = "" if key in ("password_env", "keyring") else 'password_env = "P"\n'
    path = write_accounts(tmp_path, f'[[account]]\nhost = "x"\nuser = "u"\n{secret}{line}\n')
    with pytest.raises(AccountError) as info:
        load_accounts(path)
    assert str(info.value).startswith(f"{path}: account 1: {key} must be {message}")


@pytest.mark.parametrize(
    ("line", "key"),
    [("host = 1", "host"), ("user = []", "user"), ('user = ""', "user")],
)
def test_host_and_user_are_strings(tmp_path: Path, line: str, key: str) -> None:
    other = 'user = "u"' if key == "host" else 'host = "x"'
    path = write_accounts(tmp_path, f'[[account]]\n{other}\n{line}\npassword_env = "P"\n')
    with pytest.raises(AccountError, match=f"^{re.escape(str(path))}: account 1: {key} must be"):
        load_accounts(path)


def test_url_is_a_string(tmp_path: Path) -> None:
    path = write_accounts(tmp_path, '[[account]]\nurl = 5\npassword_env = "P"\n')
    with pytest.raises(AccountError, match="account 1: url must be a non-empty string, not 5"):
        load_accounts(path)


def test_errors_from_the_account_itself_name_the_file_and_account(tmp_path: Path) -> None:
    path = write_accounts(
        tmp_path, '[[account]]\nname = "w"\nhost = "x/y"\nuser = "u"\npassword_env = "P"\n'
    )
    with pytest.raises(AccountError, match=r"accounts\.toml: account 1 \('w'\): invalid host"):
        load_accounts(path)


def test_the_right_types_load(tmp_path: Path) -> None:
    path = write_accounts(
        tmp_path,
        '[[account]]\nhost = "x"\nuser = "u"\nport = 1\ntimeout = 5\nallow_cleartext = false\n'
        'state_key = "work inbox"\nkeyring = true\n',
    )
    (account,) = load_accounts(path)
    assert (account.port, account.timeout, account.allow_cleartext) == (1, 5, False)
    assert account.state_key == "work inbox"
    assert account.mailbox_key == "work inbox"


def test_account_refuses_a_bool_or_float_port_in_code_too() -> None:
    for port in (True, 995.5):
        with pytest.raises(AccountError, match="invalid port"):
            Account("x.test", "u", port=port)  # type: ignore[arg-type]
    with pytest.raises(AccountError, match="state_key must be a non-empty string"):
        Account("x.test", "u", state_key="")


# -- the identity rule for state ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("user", "host", "port", "expected"),
    [
        ("alice", "POP.Example.COM", 995, "alice@pop.example.com"),
        ("alice", "pop.example.com", 110, "alice@pop.example.com"),
        ("Alice", "pop.example.com", 1100, "Alice@pop.example.com:1100"),
        ("u", "::1", 1100, "u@[::1]:1100"),
        ("u", "::1", 995, "u@[::1]"),
        ("u", "FE80::1", 110, "u@[fe80::1]"),
        ("a@b.example", "127.0.0.1", 9995, "a@b.example@127.0.0.1:9995"),
    ],
)
def test_mailbox_key(user: str, host: str, port: int, expected: str) -> None:
    assert mailbox_key(user, host, port) == expected


def test_mailbox_key_wants_a_port_number() -> None:
    for port in (0, 65536, True):
        with pytest.raises(ValueError, match="port must be an int from 1 to 65535"):
            mailbox_key("u", "x", port)


def test_the_accounts_mailbox_key() -> None:
    assert Account("POP.x.test", "u").mailbox_key == "u@pop.x.test"
    assert Account("pop.x.test", "u", tls="starttls").mailbox_key == "u@pop.x.test"
    assert Account("pop.x.test", "u", port=1100).mailbox_key == "u@pop.x.test:1100"
    assert Account("::1", "u", port=1100, tls="none").mailbox_key == "u@[::1]:1100"
    # POP3 and POP3S reach one mailbox: one key.
    assert Account("x.test", "u", port=110).mailbox_key == Account("x.test", "u").mailbox_key
    assert Account("x.test", "u", state_key="mine").mailbox_key == "mine"
    url = Account.from_url("pops://u@x.test", state_key="from-url")
    assert url.mailbox_key == "from-url"
    assert "mailbox_key" in aiopop._accounts.__all__


# -- prefer ----------------------------------------------------------------------------------


async def test_login_and_session_pass_prefer_through() -> None:
    box = Mailbox(PASSWORD, [])
    server = POP3TestServer({"u": box}, sasl=["SCRAM-SHA-256", "CRAM-MD5"])
    async with server:
        account = Account(server.host, "u", port=server.port, tls="none", password=PASSWORD)
        async with account.client() as client:
            assert await account.login(client, prefer=AuthMethod.CRAM_MD5) is AuthMethod.CRAM_MD5
        async with account.session(prefer=AuthMethod.APOP) as client:
            assert client.state is aiopop.State.TRANSACTION
        pinned = Account(
            server.host, "u", port=server.port, tls="none", auth="+APOP", password=PASSWORD
        )
        async with pinned.client() as client:  # auth pins: prefer is ignored
            assert await pinned.login(client, prefer=AuthMethod.CRAM_MD5) is AuthMethod.APOP
    assert [record.mechanism for record in server.sessions] == ["CRAM-MD5", "APOP", "APOP"]
    # Each login went straight to its method: CAPA, then one attempt.
    assert [record.keywords[:2] for record in server.sessions[:2]] == [
        ["CAPA", "AUTH"],
        ["CAPA", "APOP"],
    ]
    assert server.sessions[2].keywords[0] == "APOP"


# -- pinned by mutation testing ---------------------------------------------------------------


def test_from_url_names_the_problem_and_the_url() -> None:
    with pytest.raises(AccountError) as info:
        Account.from_url("pop://user:hunter2@x.test")
    assert str(info.value) == "a POP URL must not carry a password; give it separately"
    for url, message in [
        ("pop://u@x.test/INBOX", "unexpected path or query in POP URL: pop://u@x.test/INBOX"),
        ("pop://@x.test", "no user in POP URL: pop://@x.test"),
        ("pop://u@:110", "no host in POP URL: pop://u@:110"),
    ]:
        with pytest.raises(AccountError) as info:
            Account.from_url(url)
        assert str(info.value) == message


def test_from_url_takes_a_lone_slash_as_no_path() -> None:
    account = Account.from_url("pops://u@x.test/")
    assert (account.host, account.user, account.tls) == ("x.test", "u", "implicit")


async def test_a_password_command_reads_nothing_of_ours_and_shows_nothing_of_its_own(
    capfd: pytest.CaptureFixture[str],
) -> None:
    """Its stdin is /dev/null (never the caller's terminal or pipe), its stderr is
    discarded (a failing tool may print what it holds), and only line one is the secret."""
    script = (
        "import sys; data = sys.stdin.read(); "
        "print('stray diagnostic', file=sys.stderr); "
        "print('pw' if data == '' else 'read: ' + data)"
    )
    read_end, write_end = os.pipe()
    saved_stdin = os.dup(0)
    try:
        os.write(write_end, b"the caller's own input")
        os.close(write_end)
        os.dup2(read_end, 0)
        secret = await secret_from_command([sys.executable, "-c", script])()
    finally:
        os.dup2(saved_stdin, 0)
        os.close(saved_stdin)
        os.close(read_end)
    assert secret == "pw"
    assert "stray diagnostic" not in capfd.readouterr().err


async def test_a_password_command_printing_bytes_that_are_not_utf8_still_gives_its_line() -> None:
    script = "import sys; sys.stdout.buffer.write(b'caf\\xe9-pw\\n')"
    assert await secret_from_command([sys.executable, "-c", script])() == "caf\ufffd-pw"


async def test_a_password_command_printing_nothing_is_named() -> None:
    with pytest.raises(AccountError) as info:
        await secret_from_command([sys.executable, "-c", "pass"])()
    assert str(info.value) == f"password command {sys.executable!r} printed nothing"


async def test_keyring_missing_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "keyring", None)
    with pytest.raises(AccountError) as info:
        await secret_from_keyring("aiopop", "u@x.test")()
    assert str(info.value) == "the keyring package is not installed (pip install keyring)"


def test_an_accounts_file_is_read_as_utf8_whatever_the_locale(tmp_path: Path) -> None:
    path = write_accounts(
        tmp_path, '[[account]]\nname = "café"\nhost = "x"\nuser = "u"\npassword_env = "P"\n'
    )
    script = (
        "import sys; from aiopop._accounts import load_accounts; "
        "sys.stdout.buffer.write(load_accounts(sys.argv[1])[0].name.encode('utf-8'))"
    )
    env = {**os.environ, "LC_ALL": "C", "PYTHONCOERCECLOCALE": "0", "PYTHONUTF8": "0"}
    done = subprocess.run(
        [sys.executable, "-c", script, str(path)], env=env, capture_output=True, check=False
    )
    assert done.returncode == 0, done.stderr.decode("utf-8", "replace")
    assert done.stdout.decode("utf-8") == "café"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("account = [1, 2]\n", "account 1: not a table"),
        (
            '[[account]]\nurl = "pop://u@x.test"\nport = 1100\npassword_env = "P"\n',
            "account 1: give url or port, not both",
        ),
        (
            '[[account]]\nurl = "pop://u@x.test"\nuser = "v"\npassword_env = "P"\n',
            "account 1: give url or user, not both",
        ),
        (
            '[[account]]\nhost = "x"\nuser = "u"\n',
            "account 1: exactly one secret source is needed (password_env, password_command, "
            "keyring, oauth2_token_env or oauth2_token_command)",
        ),
    ],
)
def test_a_bad_entry_is_refused_naming_the_file_and_the_account(
    tmp_path: Path, body: str, message: str
) -> None:
    path = write_accounts(tmp_path, body)
    with pytest.raises(AccountError) as info:
        load_accounts(path)
    assert str(info.value) == f"{path}: {message}"


def test_an_error_raised_inside_names_the_file_and_the_account_once(tmp_path: Path) -> None:
    path = write_accounts(
        tmp_path, '[[account]]\nurl = "pop://u@x.test"\nhost = "y"\npassword_env = "P"\n'
    )
    with pytest.raises(AccountError) as info:
        load_accounts(path)
    assert str(info.value) == f"{path}: account 1: give url or host, not both"


async def test_the_secret_variables_named_in_the_file_are_the_ones_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIOPOP_TEST_PASSWORD", "from-the-password-variable")
    monkeypatch.setenv("AIOPOP_TEST_TOKEN", "from-the-token-variable")
    path = write_accounts(
        tmp_path,
        '[[account]]\nhost = "x"\nuser = "u"\npassword_env = "AIOPOP_TEST_PASSWORD"\n'
        '[[account]]\nhost = "y"\nuser = "u"\noauth2_token_env = "AIOPOP_TEST_TOKEN"\n',
    )
    first, second = load_accounts(path)
    assert callable(first.password)
    assert callable(second.oauth2_token)
    assert await first.password() == "from-the-password-variable"
    assert await second.oauth2_token() == "from-the-token-variable"


async def test_keyring_true_asks_for_service_aiopop_and_user_at_host(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[tuple[str, str]] = []

    def get_password(service: str, username: str) -> str:
        asked.append((service, username))
        return PASSWORD

    monkeypatch.setitem(sys.modules, "keyring", types.SimpleNamespace(get_password=get_password))
    path = write_accounts(tmp_path, '[[account]]\nhost = "x.test"\nuser = "u"\nkeyring = true\n')
    (account,) = load_accounts(path)
    assert callable(account.password)
    assert await account.password() == PASSWORD
    assert asked == [("aiopop", "u@x.test")]


def test_a_timeout_under_a_second_loads(tmp_path: Path) -> None:
    path = write_accounts(
        tmp_path, '[[account]]\nhost = "x"\nuser = "u"\ntimeout = 0.5\npassword_env = "P"\n'
    )
    (account,) = load_accounts(path)
    assert account.timeout == 0.5


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ('""', "a command line (split as a shell would split it), not an empty or unclosed one"),
        ("[]", "a command line or a non-empty array of strings"),
    ],
)
def test_an_unusable_command_is_refused_in_these_words(
    tmp_path: Path, value: str, problem: str
) -> None:
    path = write_accounts(
        tmp_path, f'[[account]]\nhost = "x"\nuser = "u"\npassword_command = {value}\n'
    )
    with pytest.raises(AccountError) as info:
        load_accounts(path)
    assert str(info.value) == f"{path}: account 1: password_command must be {problem}"


def test_mailbox_key_takes_port_1_and_a_host_already_in_brackets() -> None:
    assert mailbox_key("u", "x.test", 1) == "u@x.test:1"
    assert mailbox_key("u", "[::1]", 1100) == "u@[::1]:1100"
    assert mailbox_key("u", "::1", 1100) == "u@[::1]:1100"


def test_account_refuses_an_empty_host_and_says_what_is_wrong_with_a_field() -> None:
    with pytest.raises(AccountError, match="invalid host ''"):
        Account("", "u")
    with pytest.raises(AccountError) as cleartext:
        Account("x.test", "u", allow_cleartext="yes")  # type: ignore[arg-type]
    assert str(cleartext.value) == "allow_cleartext must be true or false"
    with pytest.raises(AccountError) as label:
        Account("x.test", "u", label=7)  # type: ignore[arg-type]
    assert str(label.value) == "the label must be a string, not 7"


async def test_an_empty_secret_is_refused_in_these_words() -> None:
    async with POP3TestServer({"u": Mailbox(PASSWORD, [])}) as server:
        account = Account(server.host, "u", port=server.port, tls="none", password="")
        async with account.client() as client:
            with pytest.raises(AccountError) as info:
                await account.login(client)
    assert str(info.value) == "the secret is empty or not a string"


@pytest.mark.parametrize(
    ("auth", "prefer", "expected"),
    [
        ("*", None, AuthMethod.OAUTHBEARER),  # login() chooses
        ("*", AuthMethod.XOAUTH2, AuthMethod.XOAUTH2),  # the method that worked before
        ("OAUTHBEARER", AuthMethod.XOAUTH2, AuthMethod.OAUTHBEARER),  # pinned: prefer ignored
    ],
)
async def test_an_oauth2_account_in_cleartext_with_consent_uses_its_auth_and_prefer(
    auth: str, prefer: AuthMethod | None, expected: AuthMethod
) -> None:
    box = Mailbox(PASSWORD, [], tokens=("tok-123",))
    offered = ["XOAUTH2", "OAUTHBEARER"]
    async with POP3TestServer({"u": box}, sasl=offered) as server:
        account = Account(
            server.host,
            "u",
            port=server.port,
            tls="none",
            auth=auth,
            oauth2_token="tok-123",
            allow_cleartext=True,
        )
        async with account.client() as client:
            assert await account.login(client, prefer=prefer) is expected
    assert server.sessions[0].mechanism == expected.value


async def test_a_token_accounts_auth_pins_its_mechanism() -> None:
    """auth="XOAUTH2" with a token: XOAUTH2, though the server offers OAUTHBEARER too."""
    box = Mailbox("pw", [], tokens=("tok-123",))
    async with POP3TestServer({"u": box}, sasl=["XOAUTH2", "OAUTHBEARER"]) as server:
        account = Account(
            server.host,
            "u",
            port=server.port,
            tls="none",
            auth="XOAUTH2",
            oauth2_token="tok-123",
            allow_cleartext=True,
        )
        async with account.client() as client:
            method = await account.login(client)
    assert server.sessions[0].mechanism == "XOAUTH2"
    assert method is AuthMethod.XOAUTH2


def test_a_url_and_auth_in_a_file_say_plainly_which_wins(tmp_path: Path) -> None:
    path = tmp_path / "accounts.toml"
    path.write_text(
        '[[account]]\nurl = "pops://a@h.example"\nauth = "+APOP"\npassword_env = "P"\n\n'
        '[[account]]\nurl = "pops://b;AUTH=+USER@h.example"\nauth = "+APOP"\n'
        'password_env = "P"\n',
        encoding="utf-8",
    )
    with pytest.raises(AccountError, match=r"login method is given twice") as caught:
        load_accounts(path)
    assert "got multiple values" not in str(caught.value)
    path.write_text(
        '[[account]]\nurl = "pops://a@h.example"\nauth = "+APOP"\npassword_env = "P"\n',
        encoding="utf-8",
    )
    assert load_accounts(path)[0].auth == "+APOP"


@pytest.mark.parametrize("auth", ["+USER", "+APOP", "PLAIN"])
async def test_a_pinned_method_upgrades_with_stls_when_offered(
    pop3_server: POP3ServerFixture, auth: str
) -> None:
    # tls="if-offered" means STLS when the server offers it, for a pinned method
    # as for login()'s choice: the password never goes out in the clear.
    server = await pop3_server.start(tls="if-offered", sasl=["PLAIN"])
    account = Account(
        server.host,
        server.user,
        port=server.port,
        tls="if-offered",
        auth=auth,
        password=server.password,
        ssl_context=server.client_ssl_context(),
    )
    async with account.session() as client:
        assert client.is_tls
    record = server.sessions[0]
    assert record.tls
    login = {"+USER": "USER", "+APOP": "APOP", "PLAIN": "AUTH"}[auth]
    assert record.keywords.index("STLS") < record.keywords.index(login)
