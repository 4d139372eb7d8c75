"""The demo and the example programs, run as a user would run them."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest
import trustme

from aiopop.__main__ import main
from aiopop._demo import SAMPLE_MESSAGES
from aiopop.testing import Mailbox, POP3TestServer
from servers.dovecot import ALICE, CAROL, DovecotServer
from tests.helpers.tls import server_context

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
PASSWORD = "s3cret pass"


async def run_example(name: str, *args: str, password: str = PASSWORD) -> tuple[int, str, str]:
    env = {**os.environ, "POP3_PASSWORD": password}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(EXAMPLES / name),
        *args,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def test_demo(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    total = sum(len(m.replace(b"\n", b"\r\n")) for m in SAMPLE_MESSAGES)
    assert "Logged in as 'demo' with APOP" in out
    assert f"You have 3 messages totaling {total} bytes" in out
    assert "Subject: Welcome to aiopop" in out
    assert "Mailbox unchanged: 3 messages" in out
    # The command tour: every command against the same server.
    for command in ("stat", "list", "uidl", "fetch", "check"):
        assert f"$ aiopop {command} " in out
    assert out.count(f"You have 3 messages totaling {total} bytes") == 2
    assert "Fetched 3 messages (4.4 KiB) into " in out  # sizes for people
    assert "Fetched 0 messages (0 bytes) into " in out
    assert "(3 already there)" in out
    assert "2 accounts checked, 1 failed" in out


async def test_demo_as_a_module() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "aiopop", "demo", stdout=asyncio.subprocess.PIPE
    )
    out, _ = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0
    assert b"You have 3 messages totaling" in out


@pytest.mark.parametrize("script", ["popconn.py", "apop_fallback.py"])
async def test_examples_report_and_change_nothing(script: str) -> None:
    messages = [b"Subject: one\r\n\r\nhello\r\n", b"Subject: two\r\n\r\nworld\r\n"]
    mailbox = Mailbox(PASSWORD, list(messages))
    async with POP3TestServer({"alice": mailbox}) as server:
        code, out, err = await run_example(
            script, server.host, "alice", "--plain", "--port", str(server.port)
        )
    assert (code, err) == (0, "")
    assert f"You have 2 messages totaling {sum(map(len, messages))} bytes" in out
    assert mailbox.messages == messages
    [session] = server.sessions
    assert session.quit
    assert not any(line.upper().startswith(b"DELE") for line in session.lines)


async def test_apop_fallback_uses_user_pass_when_apop_is_refused() -> None:
    mailbox = Mailbox(PASSWORD, [b"Subject: one\r\n\r\nhello\r\n"])
    async with POP3TestServer({"alice": mailbox}, apop_accepted=False) as server:
        code, out, _ = await run_example(
            "apop_fallback.py", server.host, "alice", "--plain", "--port", str(server.port)
        )
    assert code == 0
    assert "Logged in with USER/PASS" in out


async def test_login_methods_takes_scram_after_stls_then_oauth2() -> None:
    # The example runs its own embedded server (trustme is installed with the test extras).
    code, out, err = await run_example("login_methods.py")
    assert (code, err) == (0, "")
    assert out.splitlines() == [
        "Logged in with SCRAM-SHA-256 over TLS, after CAPA STLS CAPA",
        "You have 2 messages totaling 46 bytes",
        "Logged in with OAUTHBEARER over TLS, after CAPA STLS CAPA",
        "You have 2 messages totaling 46 bytes",
    ]


@pytest.mark.parametrize("script", ["popconn.py", "apop_fallback.py"])
async def test_examples_exit_1_with_the_servers_explanation(script: str) -> None:
    async with POP3TestServer({"alice": Mailbox(PASSWORD, [])}) as server:
        code, out, err = await run_example(
            script, server.host, "alice", "--plain", "--port", str(server.port), password="wrong"
        )
    assert code == 1
    assert out == ""
    assert "Login failed" in err
    assert "Authentication failed" in err


async def test_popconn_over_tls(ca: trustme.CA, cafile: Path) -> None:
    context = server_context(ca, "127.0.0.1")
    mailbox = Mailbox(PASSWORD, [b"Subject: one\r\n\r\nhello\r\n"])
    async with POP3TestServer({"alice": mailbox}, ssl_context=context) as server:
        args = (server.host, "alice", "--port", str(server.port))
        code, out, _ = await run_example("popconn.py", *args, "--cafile", str(cafile))
        assert code == 0
        assert "You have 1 messages" in out
        # Without the CA the certificate is refused, and nothing is logged in.
        code, out, err = await run_example("popconn.py", *args)
    assert code == 2
    assert "CERTIFICATE_VERIFY_FAILED" in err


@pytest.mark.dovecot
@pytest.mark.parametrize("script", ["popconn.py", "apop_fallback.py"])
async def test_examples_against_dovecot(dovecot: DovecotServer, script: str) -> None:
    args = ("127.0.0.1", "--port", str(dovecot.pop3s_port), "--cafile", str(dovecot.ca_pem_path))
    code, out, _ = await run_example(
        script, args[0], ALICE.name, *args[1:], password=ALICE.password
    )
    assert code == 0
    assert f"You have {len(ALICE.messages)} messages totaling {ALICE.maildrop_size} bytes" in out
    code, _, err = await run_example(script, args[0], ALICE.name, *args[1:], password="wrong")
    assert code == 1
    assert "Login failed" in err


@pytest.mark.dovecot
async def test_apop_fallback_against_dovecot_refusing_apop(dovecot: DovecotServer) -> None:
    code, out, _ = await run_example(
        "apop_fallback.py",
        "127.0.0.1",
        CAROL.name,
        "--plain",
        "--port",
        str(dovecot.pop3_port),
        password=CAROL.password,
    )
    assert code == 0
    assert "Logged in with USER/PASS" in out


@pytest.mark.parametrize(("count", "left"), [(3, 0), (1, 1)])
async def test_bot_prints_each_new_subject_once_then_stops(count: int, left: int) -> None:
    # The bot runs its own embedded server; the third message arrives while it watches.
    code, out, err = await run_example("bot.py", "--count", str(count))
    assert (code, err) == (0, "")
    subjects = ["Lunch on Friday?", "Build 1939 passed", "Re: Lunch on Friday?"]
    assert out.splitlines() == [
        *(f"New mail: {subject}" for subject in subjects[:count]),
        f"{count} handled, {left} left on the server",
    ]


async def test_ticket_gateway_files_each_message_once_after_a_temporary_failure() -> None:
    # The example runs its own embedded server and `python -m aiopop fetch` three times.
    code, out, err = await run_example("ticket_gateway/run.py")
    assert (code, err) == (0, "")
    lines = out.splitlines()
    # Locked: every message stays on the server (exit status 1); then filed; then nothing more.
    assert [line for line in lines if line.startswith("(exit status")] == [
        "(exit status 1)",
        "(exit status 0)",
        "(exit status 0)",
    ]
    assert [line for line in lines if line.startswith("tickets filed:")] == [
        "tickets filed: 0",
        "tickets filed: 3",
        "tickets filed: 3",
    ]
    assert [line for line in lines if line.startswith("#") and "[general]" in line] == [
        "#1 [general] Printer on floor 3 is jammed again (from Ann <ann@example.com>)",
        "#2 [general] VPN drops every ten minutes (from Bo <bo@example.com>)",
        "#3 [general] Access to the finance share, please (from Cy <cy@example.com>)",
    ]
    assert lines[-1] == "still on the server: 3 messages (kept 7 days after filing)"
