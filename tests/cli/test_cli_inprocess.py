"""The ``aiopop`` command through ``aiopop._cli.main(argv)`` in this process.

The server runs on its own event loop in a thread, since ``main`` runs
``asyncio.run`` itself. The subprocess tests (test_cli.py, test_cli_cases.py)
prove the real command; these reach the branches, and count for coverage.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import io
import json
import ssl
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme

from aiopop import _cli, _cli_report, _cli_run
from aiopop import _errors as errors
from aiopop.testing import LOGIN, Faults, Mailbox, POP3TestServer
from tests.helpers.cli import MESSAGES, PASSWORD, plain_args
from tests.helpers.faultfs import Fault, FaultFS
from tests.helpers.tls import server_context


@contextlib.contextmanager
def serving(**options: Any) -> Iterator[POP3TestServer]:
    """A POP3TestServer on a loop of its own, in a thread."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    mailboxes = options.pop("mailboxes", None) or {"u": Mailbox(PASSWORD, list(MESSAGES))}

    async def start() -> POP3TestServer:
        server = POP3TestServer(mailboxes, **options)
        await server.__aenter__()
        return server

    server = asyncio.run_coroutine_threadsafe(start(), loop).result(10)
    try:
        yield server
    finally:
        asyncio.run_coroutine_threadsafe(server.__aexit__(None, None, None), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIOPOP_TEST_PASSWORD", PASSWORD)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = _cli.main(list(argv))
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return status, captured.out, captured.err


@pytest.mark.usefixtures("env")
def test_stat_list_uidl(capsys: pytest.CaptureFixture[str]) -> None:
    with serving() as server:
        status, out, _ = run(capsys, "stat", *plain_args(server))
        assert (status, out) == (
            0,
            f"You have 2 messages totaling {sum(map(len, MESSAGES))} bytes\n",
        )
        status, out, _ = run(capsys, "stat", *plain_args(server, "--json"))
        assert json.loads(out)["messages"] == 2
        status, out, _ = run(capsys, "list", *plain_args(server))
        assert out == f"1 {len(MESSAGES[0])} bytes\n2 {len(MESSAGES[1])} bytes\n"
        status, out, _ = run(capsys, "list", *plain_args(server, "--json"))
        assert json.loads(out)[1] == {"number": 2, "size": len(MESSAGES[1])}
        status, out, _ = run(capsys, "uidl", *plain_args(server, "--json"))
        assert [entry["number"] for entry in json.loads(out)] == [1, 2]
        status, out, _ = run(capsys, "uidl", *plain_args(server))
        assert out.startswith("1 ")


@pytest.mark.usefixtures("env")
def test_fetch_and_its_reports(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    maildir = str(tmp_path / "Mail")
    with serving() as server:
        status, out, err = run(
            capsys, "fetch", *plain_args(server, "--maildir", maildir, "--new-only")
        )
        assert status == 0, err
        assert out.startswith("Fetched 2 messages")
        status, out, _ = run(
            capsys, "fetch", *plain_args(server, "--maildir", maildir, "--new-only", "--json")
        )
        assert json.loads(out)["skipped"] == 2
        server.faults = Faults(drop_at="QUIT")
        status, out, err = run(
            capsys, "fetch", *plain_args(server, "--maildir", maildir, "--new-only", "--delete")
        )
        assert status == _cli.EXIT_NETWORK
        assert "the 2 deletions were rolled back" in err
        assert "hint: run again with --new-only and the same policy" in err
        server.faults = Faults()
        status, out, _ = run(
            capsys,
            "fetch",
            *plain_args(server, "--maildir", maildir, "--delete", "--max-size", "100"),
        )
        assert status == _cli.EXIT_FAILED
        assert "over --skip-larger-than 100 bytes" in out
        assert "deleted on the server" in out


@pytest.mark.usefixtures("env")
def test_fetch_quit_lost_without_deletions_is_a_network_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    with serving() as server:
        server.faults = Faults(drop_at="QUIT")
        status, _, err = run(capsys, "fetch", *plain_args(server, "--maildir", str(tmp_path / "M")))
    assert status == _cli.EXIT_NETWORK
    assert "rolled back" not in err


@pytest.mark.usefixtures("env")
def test_fetch_refused_retr_is_reported(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    with serving() as server:
        server.faults = Faults(error_at="RETR", error="[SYS/PERM] cannot read it")
        status, out, _ = run(capsys, "fetch", *plain_args(server, "--maildir", str(tmp_path / "M")))
    assert status == _cli.EXIT_FAILED
    assert "the server refused" in out


@pytest.mark.usefixtures("env")
def test_a_full_disk_in_process(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ENOSPC at the first write into the Maildir: this machine's problem, exit status 6."""
    maildir = tmp_path / "Mail"
    fs = FaultFS(maildir)
    fs.install(monkeypatch)
    fs.arm(Fault("write", 1, errno.ENOSPC, sticky=True))
    with serving() as server:
        status, _, err = run(
            capsys, "fetch", *plain_args(server, "--maildir", str(maildir), "--delete")
        )
        assert len(server.mailboxes["u"].messages) == 2
    assert status == _cli.EXIT_LOCAL, err
    assert "No space left on device" in err
    assert str(maildir) in err
    assert "on this machine" in err


@pytest.mark.usefixtures("env")
def test_no_uidl_for_new_only(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    with serving(uidl=False) as server:
        status, _, err = run(
            capsys, "fetch", *plain_args(server, "--maildir", str(tmp_path / "M"), "--new-only")
        )
    assert status == _cli.EXIT_FAILED
    assert "hint: this server has no UIDL: run without --new-only" in err


@pytest.mark.usefixtures("env")
def test_no_greeting_in_process(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, ca: trustme.CA
) -> None:
    monkeypatch.setattr(_cli_run, "GREETING_WAIT", 0.2)
    context = server_context(ca, "127.0.0.1")
    with serving(ssl_context=context) as server:
        status, _, err = run(capsys, "stat", *plain_args(server))
        assert status == _cli.EXIT_NETWORK
        assert "is this a POP3S port? try --tls implicit" in err
        # A step timeout shorter than the greeting wait: the plain timeout, as it was.
        monkeypatch.setattr(_cli_run, "GREETING_WAIT", 5.0)
        status, _, err = run(capsys, "stat", *plain_args(server, "--timeout", "0.2"))
        assert status == _cli.EXIT_NETWORK
        assert "POP3S" not in err


@pytest.mark.usefixtures("env")
def test_plain_pop3_reached_with_implicit_tls(capsys: pytest.CaptureFixture[str]) -> None:
    with serving() as server:
        status, _, err = run(
            capsys, "stat", server.host, "u", "--port", str(server.port), "--password-env", "X"
        )
    assert status in (_cli.EXIT_TLS, _cli.EXIT_NETWORK)
    if status == _cli.EXIT_TLS:
        assert "try --tls starttls or --tls if-offered" in err


@pytest.mark.usefixtures("env")
def test_pinned_methods(capsys: pytest.CaptureFixture[str]) -> None:
    with serving(apop=False) as server:
        status, _, err = run(capsys, "stat", *plain_args(server, "--auth", "+APOP"))
        assert status == _cli.EXIT_AUTH
        assert "the server does not offer +APOP; it offers +USER" in err
    with serving(sasl=["SCRAM-SHA-256"]) as server:
        status, _, err = run(capsys, "stat", *plain_args(server, "--auth", "SCRAM-SHA-256"))
        assert status == 0, err
        status, _, err = run(capsys, "stat", *plain_args(server, "--auth", "+USER"))
        assert status == 0, err


def test_login_refusals(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIOPOP_TEST_PASSWORD", "wrong")
    with serving() as server:
        status, _, err = run(capsys, "stat", *plain_args(server, "--auth", "+USER"))
        assert status == _cli.EXIT_AUTH
        assert err.splitlines()[0].startswith("aiopop: error: login refused (PASS): ")
        server.faults = Faults(error_at=LOGIN, error="[IN-USE] busy")
        status, _, err = run(capsys, "stat", *plain_args(server))
        assert status == _cli.EXIT_FAILED
        assert "another session holds the mailbox" in err


def test_secrets_from_commands_and_tokens(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    with serving() as server:
        base = [server.host, "u", "--port", str(server.port), "--tls", "none"]
        command = f'{sys.executable} -c "print({PASSWORD!r})"'
        status, _, err = run(
            capsys, "stat", *base, "--allow-cleartext", "--password-command", command
        )
        assert status == 0, err
        status, _, err = run(capsys, "stat", *base, "--password-command", "'unclosed")
        assert status == _cli.EXIT_USAGE
        assert "cannot split the command" in err
        status, _, err = run(capsys, "stat", *base, "--password-command", " ")
        assert "the command is empty" in err
        # A token is read only once the server offers an OAuth 2.0 mechanism: none here.
        status, _, err = run(capsys, "stat", *base, "--oauth2-token-command", "true")
        assert status == _cli.EXIT_AUTH
        assert "the server offers no OAuth 2.0 mechanism" in err
        status, _, err = run(capsys, "stat", *base, "--oauth2-token-env", "AIOPOP_TOKEN")
        assert status == _cli.EXIT_AUTH
    monkeypatch.setenv("AIOPOP_TOKEN", "")
    read = _cli_run._from_env("AIOPOP_TOKEN", "oauth2-token")

    async def value() -> str:
        return await read()

    with pytest.raises(errors.UsageError, match=r"--oauth2-token-env AIOPOP_TOKEN: .* is empty"):
        asyncio.run(value())
    monkeypatch.setenv("AIOPOP_TOKEN", "t0ken")
    assert asyncio.run(value()) == "t0ken"


def test_usage_errors_in_process(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    for argv, words in [
        (["stat", "pops://u@x.test", "u", "--password-env", "X"], "not both"),
        (["stat", "pops://u@x.test", "--port", "1", "--password-env", "X"], "port in the POP URL"),
        (["stat", "x.test", "--password-env", "X"], "the user name is missing"),
        (["stat", "x.test", "u"], "stdin is not a terminal"),
        (["stat", "x.test", "u", "--cafile", str(tmp_path / "no.pem")], "cannot read --cafile"),
        (["check", str(tmp_path)], "a directory, not a file of accounts"),
    ]:
        status, _, err = run(capsys, *argv)
        assert status == _cli.EXIT_USAGE, argv
        assert words in err, (argv, err)


def test_unreadable_accounts_files(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "a.toml"
    path.write_bytes(b"\xff\xfe[")
    status, _, err = run(capsys, "check", str(path))
    assert status == _cli.EXIT_USAGE
    assert "not UTF-8 (byte 0)" in err

    def unreadable(_: object) -> None:
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(_cli_run, "load_accounts", unreadable)  # root reads anything
    status, _, err = run(capsys, "check", str(path))
    assert status == _cli.EXIT_USAGE
    assert f"{path}: cannot read it: Permission denied" in err


def _accounts_file(path: Path, server: POP3TestServer, names: list[str]) -> Path:
    path.write_text(
        "".join(
            f'[[account]]\nname = "{name}"\nurl = "pop://{name}@{server.host}:{server.port}"\n'
            'tls = "none"\nallow_cleartext = true\npassword_env = "AIOPOP_TEST_PASSWORD"\n\n'
            for name in names
        ),
        encoding="utf-8",
    )
    return path


@pytest.mark.usefixtures("env")
def test_check_in_process(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    with serving(mailboxes={"u": Mailbox(PASSWORD, list(MESSAGES))}) as server:
        path = _accounts_file(tmp_path / "a.toml", server, ["u", "nobody"])
        status, out, _ = run(capsys, "check", str(path), "--timeout", "5", "--deadline", "10")
        assert status == _cli.EXIT_FAILED
        assert out.splitlines()[-1] == "2 accounts checked, 1 failed"
        status, out, _ = run(capsys, "check", str(path), "--json")
        reports = [json.loads(line) for line in out.splitlines()]
        assert {r["account"]: r["ok"] for r in reports} == {"u": True, "nobody": False}
        one = _accounts_file(tmp_path / "b.toml", server, ["u"])
        status, out, _ = run(capsys, "check", str(one))
        assert (status, out.splitlines()[-1]) == (0, "1 account checked, 0 failed")


def test_check_with_a_cafile(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, ca: trustme.CA
) -> None:
    cafile = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(cafile))
    path = tmp_path / "a.toml"
    path.write_text('[[account]]\nurl = "pops://u@127.0.0.1:9"\npassword_env = "X"\n')
    status, out, _ = run(capsys, "check", str(path), "--cafile", str(cafile), "--json")
    assert status == _cli.EXIT_FAILED
    assert json.loads(out)["reason"] == "connection"


def test_demo_in_process(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, "demo")
    assert status == 0
    assert "Fetched 3 messages (4.4 KiB)" in out


def test_interrupted(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupt(*_: object) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(_cli, "_run_command", interrupt)
    status, _, err = run(capsys, "stat", "x.test", "u")
    assert (status, err) == (_cli.EXIT_INTERRUPTED, "aiopop: interrupted\n")


def test_run_exits_with_mains_status(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_cli, "main", lambda: 3)
    with pytest.raises(SystemExit) as info:
        _cli.run()
    assert info.value.code == 3


def test_reporting_details() -> None:
    assert _cli_report.human_size(1) == "1 byte"
    assert _cli_report.human_size(1023) == "1023 bytes"
    assert _cli_report.human_size(1024) == "1.0 KiB"
    assert _cli_report.human_size(5 * 2**40) == "5.0 TiB"
    assert _cli_report.human_size(5000 * 2**40) == "5000.0 TiB"
    assert _cli.explain(errors.POP3Error("x")) == (_cli.EXIT_FAILED, "x", [])
    error = errors.AuthenticationError("[AUTH] no", "AUTH", command="PASS")
    error.add_note("tried: SCRAM-SHA-256 refused: [AUTH] bad; USER refused: [AUTH] no")
    error.add_note("before it: something")
    assert _cli.explain(error)[1] == "login refused: SCRAM-SHA-256: [AUTH] bad; USER: [AUTH] no"
    odd = errors.AuthenticationError("", None)
    odd.add_note("tried: nothing parsable")
    assert _cli.explain(odd)[1] == "login refused: -ERR"
    lost = ConnectionResetError(104, "Connection reset by peer")
    assert _cli.explain(lost)[1] == "the connection was lost: Connection reset by peer"
    assert _cli.explain(OSError(28, "No space", "/a", None, "/b"))[1] == (
        "/a -> /b: No space (on this machine)"
    )
    quit_refused = errors.ResponseError("no", None, command="QUIT")
    assert "nothing was deleted" in _cli.explain(quit_refused)[1]
    assert _cli.explain(ssl.SSLError("bad"))[1].startswith("TLS failed")
    assert _cli.explain(RuntimeError("bug"))[1] == "unexpected RuntimeError: bug"
    assert _cli.explain(RuntimeError())[1] == "RuntimeError"
    assert _cli.explain(asyncio.CancelledError())[1] == "interrupted"
    out = io.StringIO()
    _cli_report.plain_table([], out)
    assert out.getvalue().endswith("0 accounts checked, 0 failed\n")
    assert _cli_run.saved_messages("/nonexistent/maildir") == 0


def test_an_interrupted_fetch_in_process(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    maildir = tmp_path / "Mail"

    def interrupt(*_: object) -> int:
        (maildir / "new").mkdir(parents=True)
        (maildir / "new" / "1.msg").write_bytes(b"Subject: saved\n\n")
        raise KeyboardInterrupt

    monkeypatch.setattr(_cli, "_run_command", interrupt)
    status, _, err = run(capsys, "fetch", "x.test", "u", "--maildir", str(maildir))
    assert status == _cli.EXIT_INTERRUPTED
    assert err.splitlines() == [
        f"aiopop: interrupted: 1 message saved into {maildir}; the others are still on the server",
        "  hint: run the same command with --new-only to finish",
    ]


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["stat", "h", "u", "--timeout", "nan"], "must be a positive number of seconds"),
        (["check", "a.toml", "--per-host", "many"], "not a whole number: 'many'"),
        (["fetch", "h", "u", "--maildir", "m", "--max-size", "-1"], "cannot be negative"),
        (["fetch", "h", "u", "--maildir", "m", "--max-size", "1X"], "not a size: '1X'"),
    ],
)
def test_option_types(capsys: pytest.CaptureFixture[str], argv: list[str], words: str) -> None:
    with pytest.raises(SystemExit) as info:
        _cli.main(argv)
    assert info.value.code == _cli.EXIT_USAGE
    assert words in capsys.readouterr().err


def test_option_values() -> None:
    from aiopop import _cli_parser

    assert _cli_parser.size("0") is None
    assert _cli_parser.size("2k") == 2048
    assert _cli_parser.size("3M") == 3 * 2**20
    assert _cli_parser.seconds("0.5") == 0.5
    assert _cli_parser.positive("7") == 7


def test_a_token_command_refreshes_after_a_refusal(capsys: pytest.CaptureFixture[str]) -> None:
    # The command prints a cached token unless told, by AIOPOP_REFUSED_TOKEN=1 in its
    # environment, that the server refused it; the token is never in its arguments.
    script = (
        "import os; print('fresh-token' if os.environ.get('AIOPOP_REFUSED_TOKEN') == '1' "
        "else 'cached-token')"
    )
    command = f'{sys.executable} -c "{script}"'
    mailbox = Mailbox(PASSWORD, list(MESSAGES), tokens=("fresh-token",))
    with serving(mailboxes={"u": mailbox}, sasl=["XOAUTH2"]) as server:
        base = [server.host, "u", "--port", str(server.port), "--tls", "none", "--allow-cleartext"]
        status, out, err = run(capsys, "stat", *base, "--oauth2-token-command", command)
        assert status == 0, err
        assert out.startswith("You have 2 messages")
        mailbox.expire_token("fresh-token")
        status, _, err = run(capsys, "stat", *base, "--oauth2-token-command", command)
        assert status == _cli.EXIT_AUTH
        assert "a fresh token from the token source was also refused" in err
    auths = [
        [line for line in record.lines if line.startswith(b"AUTH")] for record in server.sessions
    ]
    assert [len(lines) for lines in auths] == [2, 2]  # cached, then fresh; never a third
