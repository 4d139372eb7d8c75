"""The command line tells the truth: each case run through the real command (a subprocess)
against the in-process server, with its exit status, its message and no traceback."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trustme

from aiopop import _cli, _cli_run
from aiopop.testing import (
    LOGIN,
    Faults,
    GeneratedMessage,
    Mailbox,
    POP3ServerFixture,
    POP3TestServer,
)
from tests.helpers.cli import MESSAGES, PASSWORD, Run, aiopop_command, mailbox_args, plain_args
from tests.helpers.tls import server_context

ENV = {"AIOPOP_TEST_PASSWORD": PASSWORD}


def clean(run: Run) -> None:
    """No traceback, and the password never printed."""
    assert "Traceback" not in run.err
    assert PASSWORD not in run.out + run.err


@pytest.fixture
async def plain(pop3_server: POP3ServerFixture) -> POP3TestServer:
    return (await pop3_server.start(mailboxes={"u": Mailbox(PASSWORD, list(MESSAGES))})).server


@pytest.fixture
async def pop3s(ca: trustme.CA) -> AsyncIterator[POP3TestServer]:
    context = server_context(ca, "127.0.0.1")
    async with POP3TestServer({"u": Mailbox(PASSWORD, list(MESSAGES))}, ssl_context=context) as s:
        yield s


# -- the Maildir: this machine, not the network -----------------------------------------------


def assert_local(run: Run, path: Path, server: POP3TestServer) -> None:
    assert run.status == _cli.EXIT_LOCAL, run.err
    assert "cannot reach the server" not in run.err
    assert str(path) in run.err
    assert "on this machine" in run.err
    clean(run)
    assert len(server.mailboxes["u"].messages) == 2  # nothing deleted


async def test_a_maildir_that_is_a_file(plain: POP3TestServer, tmp_path: Path) -> None:
    blocker = tmp_path / "Mail"
    blocker.write_text("a file where the Maildir should be")
    run = await aiopop_command(
        "fetch", *plain_args(plain, "--maildir", str(blocker), "--delete"), env=ENV
    )
    assert_local(run, blocker, plain)


async def test_a_maildir_under_a_file(plain: POP3TestServer, tmp_path: Path) -> None:
    blocker = tmp_path / "Mail"
    blocker.write_text("a file where a directory should be")
    run = await aiopop_command(
        "fetch", *plain_args(plain, "--maildir", str(blocker / "inbox"), "--delete"), env=ENV
    )
    assert_local(run, blocker, plain)


async def test_an_unwritable_maildir(plain: POP3TestServer, tmp_path: Path) -> None:
    """Root writes anywhere: as root, the command runs without CAP_DAC_OVERRIDE."""
    parent = tmp_path / "locked"
    parent.mkdir()
    parent.chmod(0o555)
    maildir = parent / "Mail"
    prefix: list[str] = []
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:  # pragma: no cover
            pytest.skip("root can write anywhere, and setpriv is not here to drop that")
        caps = "-dac_override,-dac_read_search"
        prefix = [setpriv, f"--inh-caps={caps}", f"--bounding-set={caps}", "--"]
    process = await asyncio.create_subprocess_exec(
        *prefix,
        sys.executable,
        "-m",
        "aiopop",
        "fetch",
        *plain_args(plain, "--maildir", str(maildir), "--delete"),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **ENV},
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    run = Run(process.returncode, out.decode(), err.decode())
    assert_local(run, maildir, plain)
    assert "Permission denied" in run.err


def _can_mount() -> bool:
    return os.geteuid() == 0 and shutil.which("mount") is not None


@pytest.mark.skipif(not _can_mount(), reason="a tiny tmpfs needs root (see the in-process test)")
async def test_a_full_disk(tmp_path: Path) -> None:
    """A 64 KiB file system and a 200 KiB message: ENOSPC, named as this machine's."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(  # noqa: ASYNC221 - a moment, before the server starts
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:  # pragma: no cover
        pytest.skip(f"cannot mount a tmpfs: {mounted.stderr!r}")
    try:
        big = b"Subject: big\r\n\r\n" + b"x" * 200_000 + b"\r\n"
        async with POP3TestServer({"u": Mailbox(PASSWORD, [MESSAGES[0], big])}) as server:
            run = await aiopop_command(
                "fetch",
                *plain_args(server, "--maildir", str(disk / "Mail"), "--delete"),
                env=ENV,
            )
            assert run.status == _cli.EXIT_LOCAL, run.err
            assert "No space left on device" in run.err
            assert str(disk / "Mail") in run.err
            assert "on this machine" in run.err
            clean(run)
            assert len(server.mailboxes["u"].messages) == 2  # nothing deleted
    finally:
        subprocess.run(["umount", str(disk)], check=False)  # noqa: ASYNC221


# -- the accounts file: a usage error, exit status 2 --------------------------------------------


async def test_bad_accounts_files(tmp_path: Path) -> None:
    utf16 = tmp_path / "utf16.toml"
    utf16.write_text('[[account]]\nurl = "pops://u@x.test"\npassword_env = "X"\n', "utf-16")
    directory = tmp_path / "dir.toml"
    directory.mkdir()
    cases = {
        str(tmp_path / "missing.toml"): "no such file of accounts",
        str(directory): "a directory, not a file of accounts",
        str(utf16): "not UTF-8",
    }
    for path, words in cases.items():
        run = await aiopop_command("check", path)
        assert run.status == _cli.EXIT_USAGE, run.err
        assert run.err.startswith(f"aiopop: error: {path}: "), run.err
        assert words in run.err
        clean(run)


# -- the server's side, said plainly ------------------------------------------------------------


async def test_a_pop3s_port_reached_without_tls_is_named(pop3s: POP3TestServer) -> None:
    """No greeting within a few seconds: the command names the likely mistake."""
    loop = asyncio.get_running_loop()
    began = loop.time()
    runs = await asyncio.gather(
        *(
            aiopop_command(
                "stat",
                pop3s.host,
                "u",
                "--port",
                str(pop3s.port),
                "--tls",
                mode,
                "--password-env",
                "AIOPOP_TEST_PASSWORD",
                env=ENV,
            )
            for mode in ("none", "if-offered")
        )
    )
    took = loop.time() - began
    for run in runs:
        assert run.status == _cli.EXIT_NETWORK, run.err
        assert "no greeting from" in run.err
        assert "is this a POP3S port? try --tls implicit" in run.err
        clean(run)
    assert _cli_run.GREETING_WAIT <= took < _cli_run.GREETING_WAIT + 10


async def test_a_server_that_takes_no_connection_is_not_called_a_pop3s_port() -> None:
    """A stalled TCP connect is the step timeout's, without the POP3S hint."""
    # A listener whose backlog is full: the kernel drops further SYNs, so a
    # connect to it stalls, as to a host that drops packets.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    filler = socket.create_connection(("127.0.0.1", port), timeout=2)
    try:
        loop = asyncio.get_running_loop()
        began = loop.time()
        run = await aiopop_command(
            "stat", "127.0.0.1", "u", "--port", str(port), "--tls", "none",
            "--timeout", "7", "--password-env", "AIOPOP_TEST_PASSWORD", env=ENV,
        )  # fmt: skip
        took = loop.time() - began
    finally:
        filler.close()
        listener.close()
    assert run.status == _cli.EXIT_NETWORK, run.err
    assert "POP3S" not in run.err
    assert "timed out" in run.err or "slow or unreachable" in run.err, run.err
    clean(run)
    assert 7 <= took < 20


async def test_a_pinned_method_not_offered_says_what_is(plain: POP3TestServer) -> None:
    run = await aiopop_command("stat", *plain_args(plain, "--auth", "SCRAM-SHA-256"), env=ENV)
    assert run.status == _cli.EXIT_AUTH, run.err
    first = run.err.splitlines()[0]
    assert first == (
        "aiopop: error: the server does not offer SCRAM-SHA-256; it offers +APOP, +USER;"
        " nothing was sent"
    )
    assert "pick one of the methods it offers with --auth" in run.err
    clean(run)
    verbs = [line.split(b" ")[0] for line in plain.sessions[0].lines]
    assert b"AUTH" not in verbs
    assert b"PASS" not in verbs


async def test_a_login_refused_with_sys_perm_is_permanent(plain: POP3TestServer) -> None:
    plain.faults = Faults(error_at=LOGIN, error="[SYS/PERM] Your account is disabled")
    run = await aiopop_command("stat", *plain_args(plain, "--auth", "+USER"), env=ENV)
    assert run.status == _cli.EXIT_FAILED, run.err
    assert "[SYS/PERM] Your account is disabled" in run.err
    assert "retrying will not help" in run.err
    assert "password" not in run.err.split("hint:")[1]
    clean(run)


async def test_an_empty_password_variable_is_called_empty(plain: POP3TestServer) -> None:
    empty = await aiopop_command("stat", *plain_args(plain), env={"AIOPOP_TEST_PASSWORD": ""})
    assert empty.status == _cli.EXIT_USAGE
    assert empty.err.splitlines()[0] == (
        "aiopop: error: --password-env AIOPOP_TEST_PASSWORD: the environment variable is empty"
    )
    clean(empty)
    env = {k: v for k, v in os.environ.items() if k != "AIOPOP_TEST_PASSWORD"}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "aiopop",
        "stat",
        *plain_args(plain),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    _, err = await process.communicate()
    assert process.returncode == _cli.EXIT_USAGE
    assert b"the environment variable is not set" in err


async def test_option_values_are_checked_in_our_words() -> None:
    for option, value, words in [
        ("--timeout", "0", "must be a positive number of seconds, not '0'"),
        ("--timeout", "soon", "not a number of seconds: 'soon'"),
        ("--timeout", "inf", "must be a positive number of seconds, not 'inf'"),
    ]:
        run = await aiopop_command("stat", "x.test", "u", option, value)
        assert run.status == _cli.EXIT_USAGE
        assert f"argument {option}: {words}" in run.err
        clean(run)
    for option in ("--deadline", "--timeout"):
        run = await aiopop_command("check", "a.toml", option, "-1")
        assert run.status == _cli.EXIT_USAGE
        assert "must be a positive number of seconds" in run.err
    run = await aiopop_command("check", "a.toml", "--concurrency", "0")
    assert "argument --concurrency: must be at least 1, not '0'" in run.err


async def test_one_message_is_one_message(
    pop3s: POP3TestServer, cafile: Path, tmp_path: Path
) -> None:
    pop3s.mailboxes["u"].messages[1:] = []
    run = await aiopop_command(
        "fetch", *mailbox_args(pop3s, cafile, "--maildir", str(tmp_path / "M")), env=ENV
    )
    assert run.status == 0, run.err
    size = len(MESSAGES[0])
    assert run.out == f"Fetched 1 message ({size} bytes) into {tmp_path / 'M'}\n"
    stat = await aiopop_command("stat", *mailbox_args(pop3s, cafile), env=ENV)
    assert stat.out == f"You have 1 message totaling {size} bytes\n"


async def test_sizes_are_for_people_and_json_keeps_octets(
    pop3s: POP3TestServer, cafile: Path
) -> None:
    big = b"Subject: big\r\n\r\n" + b"y" * 1_300_000 + b"\r\n"
    pop3s.mailboxes["u"].messages.append(big)
    listed = await aiopop_command("list", *mailbox_args(pop3s, cafile), env=ENV)
    assert listed.out.splitlines()[2] == "3 1.2 MiB"
    as_json = await aiopop_command("list", *mailbox_args(pop3s, cafile, "--json"), env=ENV)
    assert '"size": 1300018' in as_json.out
    stat = await aiopop_command("stat", *mailbox_args(pop3s, cafile), env=ENV)
    total = sum(map(len, MESSAGES)) + len(big)
    assert stat.out == f"You have 3 messages totaling {total} bytes (1.2 MiB)\n"


async def test_an_interrupted_fetch_says_what_was_saved(tmp_path: Path) -> None:
    """Ctrl-C during a fetch: how many messages were saved, and how to finish."""
    messages: list[bytes | GeneratedMessage] = [
        b"Subject: %d\r\n\r\nbody\r\n" % n for n in range(300)
    ]
    async with POP3TestServer({"u": Mailbox(PASSWORD, list(messages))}) as server:
        server.faults = Faults(latency=0.02)
        maildir = tmp_path / "Mail"
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "aiopop",
            "fetch",
            *plain_args(server, "--maildir", str(maildir)),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, **ENV},
        )
        # Wait for the first batch to reach new/, then interrupt.
        for _ in range(600):
            if _cli_run.saved_messages(str(maildir)):
                break
            await asyncio.sleep(0.02)
        process.send_signal(signal.SIGINT)
        _, err = await asyncio.wait_for(process.communicate(), 30)
    text = err.decode()
    assert process.returncode == _cli.EXIT_INTERRUPTED, text
    saved = _cli_run.saved_messages(str(maildir))
    assert 0 < saved < 300
    assert text.splitlines()[0] == (
        f"aiopop: interrupted: {saved} messages saved into {maildir};"
        " the others are still on the server"
    )
    assert "hint: run the same command with --new-only to finish" in text
    assert "Traceback" not in text
