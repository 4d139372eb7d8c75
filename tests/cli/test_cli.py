"""The ``aiopop`` command, run as a user runs it: a subprocess against the in-process server."""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trustme

from aiopop import _cli, _cli_report
from aiopop.testing import Faults, Mailbox, POP3TestServer
from tests.helpers.cli import MESSAGES, PASSWORD, aiopop_command, mailbox_args
from tests.helpers.tls import server_context


@pytest.fixture
async def server(ca: trustme.CA) -> AsyncIterator[POP3TestServer]:
    context = server_context(ca, "127.0.0.1")
    box = Mailbox(PASSWORD, list(MESSAGES))
    async with POP3TestServer({"u": box}, ssl_context=context, sasl=["SCRAM-SHA-256"]) as srv:
        yield srv


async def test_stat_prints_the_classic_line_and_changes_nothing(
    server: POP3TestServer, cafile: Path
) -> None:
    run = await aiopop_command(
        "stat", *mailbox_args(server, cafile), env={"AIOPOP_TEST_PASSWORD": PASSWORD}
    )
    assert (run.status, run.err) == (0, "")
    size = sum(map(len, MESSAGES))
    assert run.out == f"You have 2 messages totaling {size} bytes\n"
    record = server.sessions[0]
    assert record.mechanism == "SCRAM-SHA-256"
    assert record.quit
    assert [line.split(b" ")[0] for line in record.lines][-2:] == [b"STAT", b"QUIT"]
    assert len(server.mailboxes["u"].messages) == 2


async def test_list_and_uidl_with_json(server: POP3TestServer, cafile: Path) -> None:
    env = {"AIOPOP_TEST_PASSWORD": PASSWORD}
    listed = await aiopop_command("list", *mailbox_args(server, cafile, "--json"), env=env)
    assert json.loads(listed.out) == [
        {"number": 1, "size": len(MESSAGES[0])},
        {"number": 2, "size": len(MESSAGES[1])},
    ]
    plain = await aiopop_command("uidl", *mailbox_args(server, cafile), env=env)
    uids = server.mailboxes["u"].uids
    assert uids is not None
    assert plain.out == f"1 {uids[0]}\n2 {uids[1]}\n"
    stat = await aiopop_command("stat", *mailbox_args(server, cafile, "--json"), env=env)
    assert json.loads(stat.out) == {
        "account": f"u@{server.host}:{server.port}",
        "messages": 2,
        "octets": sum(map(len, MESSAGES)),
    }


async def test_a_password_command_and_a_pop_url(server: POP3TestServer, cafile: Path) -> None:
    url = f"pops://u@{server.host}:{server.port}"
    command = f'{sys.executable} -c "print({PASSWORD!r})"'
    run = await aiopop_command("stat", url, "--cafile", str(cafile), "--password-command", command)
    assert run.status == 0, run.err
    assert run.out.startswith("You have 2 messages")


async def test_a_wrong_password_prints_the_servers_text_and_a_hint(
    server: POP3TestServer, cafile: Path
) -> None:
    run = await aiopop_command(
        "stat", *mailbox_args(server, cafile), env={"AIOPOP_TEST_PASSWORD": "not-Th3-pw"}
    )
    assert run.status == _cli.EXIT_AUTH
    assert run.out == ""
    first, hint, *notes = run.err.splitlines()
    # One clean line: every method tried, in order, and the server's answer once.
    assert first == (
        "aiopop: error: login refused (SCRAM-SHA-256 then USER): [AUTH] Authentication failed."
    )
    assert hint == "  hint: check the user name and the password or token"
    assert all(note.startswith("  hint: ") for note in notes)
    assert "tried:" not in run.err
    assert "Traceback" not in run.err
    assert "not-Th3-pw" not in run.err  # the password is never printed


async def test_an_untrusted_certificate_is_a_tls_error(server: POP3TestServer) -> None:
    run = await aiopop_command(
        "stat",
        server.host,
        "u",
        "--port",
        str(server.port),
        "--password-env",
        "AIOPOP_TEST_PASSWORD",
        env={"AIOPOP_TEST_PASSWORD": PASSWORD},
    )
    assert run.status == _cli.EXIT_TLS
    assert run.err.startswith("aiopop: error: the server's certificate does not verify")
    assert "--cafile" in run.err
    assert all(record.lines == [] for record in server.sessions)  # nothing sent


async def test_usage_errors(server: POP3TestServer, cafile: Path) -> None:
    no_password = await aiopop_command("stat", server.host, "u", "--port", str(server.port))
    assert no_password.status == _cli.EXIT_USAGE
    assert "no password: use --password-env or --password-command" in no_password.err
    no_user = await aiopop_command("stat", server.host, "--password-env", "X")
    assert no_user.status == _cli.EXIT_USAGE
    assert "the user name is missing" in no_user.err
    bad_url = await aiopop_command("stat", "pop://u:secret@x.test", "--password-env", "X")
    assert bad_url.status == _cli.EXIT_USAGE
    assert "secret" not in bad_url.err
    unknown = await aiopop_command("frobnicate")
    assert unknown.status == 2


async def test_connection_refused_is_a_network_error(unused_tcp_port: int) -> None:
    run = await aiopop_command(
        "stat",
        "127.0.0.1",
        "u",
        "--port",
        str(unused_tcp_port),
        "--password-env",
        "AIOPOP_TEST_PASSWORD",
        env={"AIOPOP_TEST_PASSWORD": PASSWORD},
    )
    assert run.status == _cli.EXIT_NETWORK
    assert run.err.startswith("aiopop: error: cannot reach the server:")


def _help(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    with pytest.raises(SystemExit) as info:
        _cli.main([*argv, "--help"])
    assert info.value.code == 0
    return capsys.readouterr().out


def test_help_documents_secrets_and_exit_statuses_once(capsys: pytest.CaptureFixture[str]) -> None:
    top = _help(capsys)
    for needle in ("secrets:", "--password-env", "exit status:", "130", "  6    this machine"):
        assert needle in top
    for command in ("stat", "list", "uidl", "fetch", "check", "demo"):
        text = _help(capsys, command)
        assert "exit status:" not in text, command
        assert "secrets:" not in text, command
        assert "see aiopop --help" in text or command == "demo", command
    stat = _help(capsys, "stat")
    for needle in ("--password-env", "--password-command", "--json", "--timeout SECONDS"):
        assert needle in stat


def test_check_help_lists_every_key_of_the_accounts_file(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from aiopop._account_keys import KEY_TYPES
    from aiopop._cli_parser import ACCOUNT_KEYS, DELIVERY_KEYS

    assert set(ACCOUNT_KEYS) | set(DELIVERY_KEYS) == set(KEY_TYPES)
    assert not set(ACCOUNT_KEYS) & set(DELIVERY_KEYS)
    text = _help(capsys, "check")
    for key in ACCOUNT_KEYS:
        assert f"\n  {key} " in text, key
    for command in ("fetch", "watch"):  # where each account's mail goes
        delivery = _help(capsys, command)
        for key in DELIVERY_KEYS:
            assert f"\n  {key} " in delivery, (command, key)
    assert "--deadline SECONDS" in text
    assert "--timeout SECONDS" in text


# -- fetch --------------------------------------------------------------------------------------


def maildir_messages(maildir: Path) -> list[bytes]:
    return sorted(path.read_bytes() for path in (maildir / "new").iterdir())


async def test_fetch_into_a_maildir_then_new_only_then_delete(
    server: POP3TestServer, cafile: Path, tmp_path: Path
) -> None:
    env = {"AIOPOP_TEST_PASSWORD": PASSWORD}
    maildir = tmp_path / "Mail"
    first = await aiopop_command(
        "fetch", *mailbox_args(server, cafile, "--maildir", str(maildir), "--new-only"), env=env
    )
    assert first.status == 0, first.err
    size = sum(map(len, MESSAGES))
    assert first.out == f"Fetched 2 messages ({size} bytes) into {maildir}\n"
    assert size < 1024  # else a human size: see test_sizes_are_for_people
    stored = maildir_messages(maildir)
    assert stored == sorted(m.replace(b"\r\n", b"\n") for m in MESSAGES)
    assert len(server.mailboxes["u"].messages) == 2  # kept on the server

    again = await aiopop_command(
        "fetch",
        *mailbox_args(server, cafile, "--maildir", str(maildir), "--new-only", "--json"),
        env=env,
    )
    report = json.loads(again.out)
    assert (report["fetched"], report["skipped"], report["deleted"]) == ([], 2, [])
    assert maildir_messages(maildir) == stored  # no duplicate

    delete = await aiopop_command(
        "fetch",
        *mailbox_args(server, cafile, "--maildir", str(maildir), "--new-only", "--delete"),
        env=env,
    )
    assert delete.status == 0, delete.err
    assert delete.out.endswith("(2 already there, 2 deleted on the server)\n")
    assert server.mailboxes["u"].messages == []
    assert maildir_messages(maildir) == stored


async def test_fetch_delete_cut_before_quits_reply_reports_the_rollback(
    server: POP3TestServer, cafile: Path, tmp_path: Path
) -> None:
    """The server vanished at QUIT: nothing was deleted, and the command says so."""
    server.faults = Faults(drop_at="QUIT")
    maildir = tmp_path / "Mail"
    run = await aiopop_command(
        "fetch",
        *mailbox_args(server, cafile, "--maildir", str(maildir), "--delete", "--json"),
        env={"AIOPOP_TEST_PASSWORD": PASSWORD},
    )
    assert run.status == _cli.EXIT_NETWORK, run.err
    report = json.loads(run.out)
    assert (report["deleted"], report["not_deleted"]) == ([], [1, 2])
    assert "the 2 deletions were rolled back" in run.err
    assert "hint: run again with --new-only and the same policy" in run.err
    assert len(server.mailboxes["u"].messages) == 2  # the server kept them
    assert maildir_messages(maildir) == sorted(m.replace(b"\r\n", b"\n") for m in MESSAGES)
    assert server.sessions[-1].quit is False


async def test_fetch_max_size_leaves_a_bigger_message_and_says_so(
    server: POP3TestServer, cafile: Path, tmp_path: Path
) -> None:
    maildir = tmp_path / "Mail"
    run = await aiopop_command(
        "fetch",
        *mailbox_args(server, cafile, "--maildir", str(maildir), "--delete", "--max-size", "100"),
        env={"AIOPOP_TEST_PASSWORD": PASSWORD},
    )
    assert run.status == _cli.EXIT_FAILED, run.err
    lines = run.out.splitlines()
    assert lines[0].endswith("(1 deleted on the server)")
    assert lines[1].startswith("  message 2 (uid ")
    assert lines[1].endswith(
        ": 518 bytes or more, over --skip-larger-than 100 bytes: not fetched, left on the server"
    )
    assert server.mailboxes["u"].messages == [MESSAGES[1]]
    bad = await aiopop_command(
        "fetch", *mailbox_args(server, cafile, "--maildir", "x", "--max-size", "1X")
    )
    assert bad.status == _cli.EXIT_USAGE
    assert "not a size: '1X'" in bad.err


async def test_fetch_remembers_the_login_method_that_worked(
    server: POP3TestServer, cafile: Path, tmp_path: Path
) -> None:
    """SCRAM is refused for the right password (a hash it cannot use): the next run goes
    straight to the method that worked, with no failed attempt."""
    server.faults = Faults(error_at="AUTH", error="[AUTH] Authentication failed.")
    env = {"AIOPOP_TEST_PASSWORD": PASSWORD}
    args = mailbox_args(server, cafile, "--maildir", str(tmp_path / "Mail"), "--new-only")
    first = await aiopop_command("fetch", *args, env=env)
    second = await aiopop_command("fetch", *args, env=env)
    assert (first.status, second.status) == (0, 0), first.err + second.err
    verbs = [[line.split(b" ")[0] for line in s.lines] for s in server.sessions]
    assert b"AUTH" in verbs[0]
    assert b"AUTH" not in verbs[1]
    assert server.sessions[1].mechanism == "USER"


# -- check --------------------------------------------------------------------------------------


async def test_check_a_file_of_accounts(ca: trustme.CA, cafile: Path, tmp_path: Path) -> None:
    context = server_context(ca, "127.0.0.1")
    boxes = {f"user{n}": Mailbox(PASSWORD, list(MESSAGES[: n % 3])) for n in range(5)}
    boxes["locked"] = Mailbox(PASSWORD, [], locked=True)
    async with POP3TestServer(boxes, ssl_context=context) as srv:
        tables = []
        for name in [*boxes, "nobody"]:
            tables.append(
                f'[[account]]\nname = "{name}"\nurl = "pops://{name}@{srv.host}:{srv.port}"\n'
                'password_env = "AIOPOP_TEST_PASSWORD"\n'
            )
        path = tmp_path / "accounts.toml"
        path.write_text("\n".join(tables), encoding="utf-8")
        env = {"AIOPOP_TEST_PASSWORD": PASSWORD}
        table = await aiopop_command("check", str(path), "--cafile", str(cafile), env=env)
        lines = await aiopop_command("check", str(path), "--cafile", str(cafile), "--json", env=env)
    assert table.status == _cli.EXIT_FAILED  # two accounts failed
    rows = table.out.splitlines()
    assert rows[0].split() == ["ACCOUNT", "MESSAGES", "SIZE", "RESULT"]
    assert rows[1].split()[:5] == ["user0", "0", "0", "bytes", "ok"]
    assert rows[2].split()[:5] == ["user1", "1", str(len(MESSAGES[0])), "bytes", "ok"]
    assert rows[6].startswith("locked")
    assert "in use" in rows[6]
    assert rows[7].startswith("nobody")
    assert "credentials" in rows[7]
    assert rows[-1] == "7 accounts checked, 2 failed"
    reports = {r["account"]: r for r in map(json.loads, lines.out.splitlines())}
    assert len(reports) == 7
    assert reports["user2"]["messages"] == 2
    assert reports["locked"]["reason"] == "in use"
    assert not reports["nobody"]["ok"]
    assert PASSWORD not in table.out + table.err + lines.out


async def test_check_refuses_a_file_with_an_inline_password(tmp_path: Path) -> None:
    path = tmp_path / "accounts.toml"
    path.write_text('[[account]]\nurl = "pops://u@x.test"\npassword = "hunter2"\n')
    run = await aiopop_command("check", str(path))
    assert run.status == _cli.EXIT_USAGE
    assert "inline secrets are refused" in run.err
    assert "hunter2" not in run.err


def test_the_terminal_table_and_progress_bar() -> None:
    import io

    from aiopop import Stat
    from aiopop._accounts import Account
    from aiopop._errors import CredentialsError
    from aiopop._many import CheckResult

    good = CheckResult(Account("a.test", "alice"), stat=Stat(3, 4551))
    bad = CheckResult(
        Account("b.test", "bob"),
        error=CredentialsError("[AUTH] no", "AUTH", command="PASS"),
    )
    out = io.StringIO()
    with _cli_report.progress(2, out) as advance:
        advance()
        advance()
    _cli_report.rich_table([good, bad], out)
    text = out.getvalue()
    assert "alice@a.test" in text
    assert "4.4 KiB" in text
    assert "credentials: login refused (PASS):" in text
    assert "[AUTH] no" in text  # server text is never read as rich markup


def test_a_disk_error_is_local_with_its_own_exit_status() -> None:
    status, message, hints = _cli.explain(OSError(28, "No space left on device", "/m/x"))
    assert (status, message) == (_cli.EXIT_LOCAL, "/m/x: No space left on device (on this machine)")
    assert "this machine" in hints[0]
    unnamed = _cli.explain(OSError(28, "No space left on device"))
    assert unnamed[:2] == (_cli.EXIT_LOCAL, "on this machine: No space left on device")
    assert _cli.explain(ConnectionRefusedError(111, "Connection refused"))[0] == _cli.EXIT_NETWORK
