"""``--fingerprint`` and ``--verbose``, run as a user runs them: subprocesses against the
in-process server."""

from __future__ import annotations

import base64
import hashlib
import json
import ssl
from pathlib import Path

import pytest
import trustme

from aiopop import _cli
from aiopop._apop import apop_digest
from aiopop._parse import format_fingerprint
from aiopop.testing import Mailbox, POP3TestServer
from tests.helpers.cli import MESSAGES, PASSWORD, aiopop_command
from tests.helpers.tls import server_context

ENV = {"AIOPOP_TEST_PASSWORD": PASSWORD}


def pinned_server() -> tuple[ssl.SSLContext, str]:
    """A certificate from a CA nobody trusts, for another name; and its fingerprint."""
    leaf = trustme.CA().issue_cert("mail.example.org")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    leaf.configure_cert(context)
    der = ssl.PEM_cert_to_DER_cert(leaf.cert_chain_pems[0].bytes().decode())
    return context, format_fingerprint(hashlib.sha256(der).digest())


def args(server: POP3TestServer, *more: str) -> list[str]:
    return [
        server.host,
        "u",
        "--port",
        str(server.port),
        "--password-env",
        "AIOPOP_TEST_PASSWORD",
        *more,
    ]


def mailboxes() -> dict[str, Mailbox]:
    return {"u": Mailbox(PASSWORD, list(MESSAGES))}


# -- --fingerprint --------------------------------------------------------------------------------


async def test_fingerprint_reaches_a_server_no_ca_vouches_for() -> None:
    context, fingerprint = pinned_server()
    async with POP3TestServer(mailboxes(), ssl_context=context) as server:
        refused = await aiopop_command("stat", *args(server), env=ENV)
        assert refused.status == _cli.EXIT_TLS
        spelled = fingerprint.removeprefix("SHA256:").lower()
        run = await aiopop_command("stat", *args(server, "--fingerprint", spelled), env=ENV)
        assert (run.status, run.err) == (0, "")
        assert run.out.startswith("You have 2 messages")
        url = f"pops://u@{server.host}:{server.port}"
        run = await aiopop_command(
            "list", url, "--fingerprint", fingerprint, "--password-env", "AIOPOP_TEST_PASSWORD",
            env=ENV,
        )  # fmt: skip
        assert run.status == 0, run.err


async def test_a_wrong_fingerprint_exits_4_naming_both_and_sends_nothing() -> None:
    context, fingerprint = pinned_server()
    _, wrong = pinned_server()
    async with POP3TestServer(mailboxes(), ssl_context=context) as server:
        run = await aiopop_command("stat", *args(server, "--fingerprint", wrong), env=ENV)
    assert run.status == _cli.EXIT_TLS == 4
    assert run.out == ""
    first, *hints = run.err.splitlines()
    assert first.startswith("aiopop: error: ")
    assert wrong in first
    assert fingerprint in first
    assert any(fingerprint in hint and "--fingerprint" in hint for hint in hints)
    assert "Traceback" not in run.err
    # The server never saw the end of the handshake: no session began, nothing was read.
    assert all(record.lines == [] for record in server.sessions)  # not one command


async def test_a_wrong_fingerprint_over_stls_sends_only_capa_and_stls() -> None:
    context, fingerprint = pinned_server()
    _, wrong = pinned_server()
    async with POP3TestServer(mailboxes(), starttls_context=context) as server:
        run = await aiopop_command(
            "stat", *args(server, "--tls", "starttls", "--fingerprint", wrong), env=ENV
        )
        assert run.status == _cli.EXIT_TLS, run.err
        assert [record.lines for record in server.sessions] == [[b"CAPA", b"STLS"]]
        run = await aiopop_command(
            "stat", *args(server, "--tls", "starttls", "--fingerprint", fingerprint), env=ENV
        )
        assert run.status == 0, run.err


async def test_fingerprint_usage_errors(tmp_path: Path) -> None:
    context, fingerprint = pinned_server()
    async with POP3TestServer(mailboxes(), ssl_context=context) as server:
        for more in (
            ["--fingerprint", "sha1:" + "ab" * 20],
            ["--fingerprint", "not hex"],
            ["--fingerprint", fingerprint, "--tls", "if-offered"],
            ["--fingerprint", fingerprint, "--cafile", str(tmp_path / "ca.pem")],
        ):
            run = await aiopop_command("stat", *args(server, *more), env=ENV)
            assert run.status == _cli.EXIT_USAGE, (more, run.err)
            assert "fingerprint" in run.err
        assert server.sessions == []
    accounts = tmp_path / "accounts.toml"
    accounts.write_text('[[account]]\nurl = "pops://u@h.test"\npassword_env = "P"\n')
    run = await aiopop_command("fetch", str(accounts), "--fingerprint", fingerprint)
    assert run.status == _cli.EXIT_USAGE
    assert "--fingerprint: not with a file of accounts" in run.err


async def test_check_reads_tls_fingerprint_from_the_file_and_ignores_cafile_for_it(
    cafile: Path, tmp_path: Path
) -> None:
    context, fingerprint = pinned_server()
    async with POP3TestServer(mailboxes(), ssl_context=context) as server:
        accounts = tmp_path / "accounts.toml"
        accounts.write_text(
            f'[[account]]\nname = "pinned"\nurl = "pops://u@{server.host}:{server.port}"\n'
            f'password_env = "AIOPOP_TEST_PASSWORD"\ntls_fingerprint = "{fingerprint}"\n'
        )
        run = await aiopop_command(
            "check", str(accounts), "--json", "--cafile", str(cafile), env=ENV
        )
    assert run.status == 0, run.out + run.err
    assert json.loads(run.out)["ok"] is True


# -- --verbose ------------------------------------------------------------------------------------


def assert_no_secret(err: str, *secrets: str) -> None:
    for secret in secrets:
        assert secret not in err
    assert PASSWORD not in err
    assert base64.b64encode(PASSWORD.encode()).decode() not in err


async def test_verbose_shows_the_dialogue_with_the_password_hidden(
    cafile: Path, ca: trustme.CA
) -> None:
    context = server_context(ca, "127.0.0.1")
    async with POP3TestServer(mailboxes(), ssl_context=context, apop=False) as server:
        run = await aiopop_command(
            "stat", *args(server, "--json", "--verbose", "--cafile", str(cafile)), env=ENV
        )
    assert run.status == 0, run.err
    # Standard output is what it is without --verbose: one JSON object.
    assert json.loads(run.out)["messages"] == 2
    peer = f"{server.host}:{server.port}"
    lines = run.err.splitlines()
    assert f"{peer} S: +OK" in "\n".join(lines)  # the greeting
    assert f"{peer} C: USER u" in lines
    assert f"{peer} C: PASS <redacted>" in lines
    assert f"{peer} C: STAT" in lines
    assert any(line.startswith(f"{peer} S: +OK 2 ") for line in lines)
    assert f"{peer} C: QUIT" in lines
    assert_no_secret(run.err)
    assert "Subject:" not in run.err


async def test_verbose_hides_auth_responses_and_apop_digests(cafile: Path, ca: trustme.CA) -> None:
    context = server_context(ca, "127.0.0.1")
    async with POP3TestServer(mailboxes(), ssl_context=context, sasl=["PLAIN"]) as server:
        plain = await aiopop_command(
            "list", *args(server, "--auth", "PLAIN", "-v", "--cafile", str(cafile)), env=ENV
        )
        apop = await aiopop_command(
            "uidl", *args(server, "--auth", "+APOP", "-v", "--cafile", str(cafile)), env=ENV
        )
    assert plain.status == 0, plain.err
    assert "C: AUTH PLAIN <redacted>" in plain.err
    initial = base64.b64encode(f"\0u\0{PASSWORD}".encode()).decode()
    assert_no_secret(plain.err, initial)
    assert apop.status == 0, apop.err
    assert "C: APOP u <redacted>" in apop.err
    timestamp = server.sessions[-1].apop_timestamp
    assert timestamp is not None
    assert_no_secret(apop.err, apop_digest(timestamp, PASSWORD.encode()))
    # The listings' lines are no part of the dialogue shown; stdout has them.
    assert plain.out.startswith("1 ")
    assert "\n1 " not in "\n" + plain.err


async def test_without_verbose_nothing_is_logged(cafile: Path, ca: trustme.CA) -> None:
    context = server_context(ca, "127.0.0.1")
    async with POP3TestServer(mailboxes(), ssl_context=context) as server:
        run = await aiopop_command("stat", *args(server, "--cafile", str(cafile)), env=ENV)
    assert (run.status, run.err) == (0, "")


@pytest.mark.parametrize("command", ["check", "watch", "fetch"])
async def test_verbose_on_the_commands_of_many_accounts(
    command: str, cafile: Path, ca: trustme.CA, tmp_path: Path
) -> None:
    context = server_context(ca, "127.0.0.1")
    async with POP3TestServer(mailboxes(), ssl_context=context, apop=False) as server:
        accounts = tmp_path / "accounts.toml"
        accounts.write_text(
            f'[[account]]\nurl = "pops://u@{server.host}:{server.port}"\n'
            f'password_env = "AIOPOP_TEST_PASSWORD"\nmaildir = "{tmp_path / "mail"}"\n'
        )
        more = ["--polls", "1"] if command == "watch" else []
        run = await aiopop_command(
            command, str(accounts), "--verbose", "--cafile", str(cafile), *more, env=ENV
        )
    assert run.status == 0, run.out + run.err
    assert f"{server.host}:{server.port} C: PASS <redacted>" in run.err
    assert_no_secret(run.err)


# -- aiopop fingerprint ---------------------------------------------------------------------------


@pytest.mark.parametrize("tls", ["implicit", "starttls"])
async def test_the_fingerprint_command_prints_what_to_pin_and_logs_nothing_in(tls: str) -> None:
    context, fingerprint = pinned_server()
    if tls == "implicit":
        server = POP3TestServer(mailboxes(), ssl_context=context)
    else:
        server = POP3TestServer(mailboxes(), starttls_context=context)
    async with server:
        run = await aiopop_command(
            "fingerprint", server.host, "--port", str(server.port), "--tls", tls
        )
        assert (run.status, run.out, run.err) == (0, fingerprint + "\n", "")
        pinned = await aiopop_command(
            "stat", *args(server, "--tls", tls, "--fingerprint", run.out.strip()), env=ENV
        )
        assert pinned.status == 0, pinned.err
    verbs = {line.split(b" ")[0] for line in server.sessions[0].lines}
    assert verbs <= {b"CAPA", b"STLS", b"QUIT"}
    assert server.sessions[0].quit
