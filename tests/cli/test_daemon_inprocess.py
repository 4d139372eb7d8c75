"""The daemon's branches in this process (the subprocess tests in test_daemon.py run the
real command with real signals): reload, retirement, failures, the text log."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path
from typing import Any

import pytest

from aiopop._daemon import Daemon, Log
from aiopop._targets import FetchSettings
from aiopop.testing import Faults, Mailbox, POP3TestServer
from tests.helpers.cli import PASSWORD

ENV = "AIOPOP_TEST_PASSWORD"


@pytest.fixture(autouse=True)
def _password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV, PASSWORD)
    monkeypatch.setenv("AIOPOP_WRONG_PASSWORD", "not-it")


def table(host: str, port: int, user: str, *lines: str, secret: str = ENV) -> str:
    return (
        "\n".join(
            [
                "[[account]]",
                f'name = "{user}"',
                f'url = "pop://{user}@{host}:{port}"',
                'tls = "none"',
                "allow_cleartext = true",
                f'password_env = "{secret}"',
                *lines,
            ]
        )
        + "\n\n"
    )


def daemon(path: Path, out: io.StringIO, *, polls: int | None = None, **settings: Any) -> Daemon:
    return Daemon(
        str(path),
        defaults=FetchSettings(new_only=True, **settings),
        interval=0.05,
        polls=polls,
        concurrency=4,
        per_host=2,
        timeout=5,
        cafile=None,
        log=Log(out, as_json=True),
        backoff=(0.01, 0.05),
        jitter=lambda ceiling: ceiling,
    )


def events(out: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


async def until(out: io.StringIO, event: str, account: str | None, count: int = 1) -> None:
    """Wait until the log has ``count`` such events (the log is a StringIO: polled)."""
    try:
        await asyncio.wait_for(_until(out, event, account, count), 10)
    except TimeoutError:
        raise AssertionError(f"no {count} {event} of {account}: {out.getvalue()}") from None


async def _until(out: io.StringIO, event: str, account: str | None, count: int) -> None:
    while sum(e["event"] == event and e["account"] == account for e in events(out)) < count:  # noqa: ASYNC110 - a log
        await asyncio.sleep(0.01)


async def test_reload_adds_retires_and_restarts_accounts(tmp_path: Path) -> None:
    ann = Mailbox(PASSWORD, [b"Subject: a\r\n\r\na\r\n"])
    bob = Mailbox(PASSWORD, [b"Subject: b\r\n\r\nb\r\n"])
    async with POP3TestServer({"ann": ann, "bob": bob}) as server:
        path = tmp_path / "accounts.toml"
        path.write_text(
            table(server.host, server.port, "ann", 'maildir = "A"', secret="AIOPOP_WRONG_PASSWORD")
        )
        out = io.StringIO()
        running = daemon(path, out)
        task = asyncio.create_task(running.run())
        await until(out, "stopped", "ann")
        path.write_text(
            table(server.host, server.port, "ann", 'maildir = "A"')
            + table(server.host, server.port, "bob", 'maildir = "B"')
        )
        running._reload.set()
        await until(out, "polled", "ann")
        await until(out, "polled", "bob")
        path.write_text(table(server.host, server.port, "bob", 'maildir = "B"'))
        running._reload.set()
        await until(out, "reloaded", None, 2)
        before = sum(e["event"] == "polled" and e["account"] == "ann" for e in events(out))
        await until(out, "polled", "bob", 4)
        after = sum(e["event"] == "polled" and e["account"] == "ann" for e in events(out))
        assert after <= before + 1  # retired after its poll in progress, if any
        running._stop.set()
        assert await task == 0
    assert len(list((tmp_path / "A" / "new").iterdir())) == 1
    assert len(list((tmp_path / "B" / "new").iterdir())) == 1
    assert events(out)[-1]["event"] == "stopped"


async def test_failures_back_off_and_a_failed_quit_is_a_failure(tmp_path: Path) -> None:
    ann = Mailbox(PASSWORD, [b"Subject: a\r\n\r\na\r\n"])
    async with POP3TestServer({"ann": ann}, faults=Faults(drop_at="QUIT")) as server:
        path = tmp_path / "accounts.toml"
        path.write_text(
            table(server.host, server.port, "ann", 'maildir = "A"', "delete = true")
            + table("127.0.0.1", 9, "gone", 'maildir = "G"')
        )
        out = io.StringIO()
        status = await daemon(path, out, polls=2).run()
    assert status == 0
    failed = [e for e in events(out) if e["event"] == "failed"]
    assert {e["account"] for e in failed} == {"ann", "gone"}
    gone = [e for e in failed if e["account"] == "gone"]
    assert [e["retry_in"] for e in gone] == [0.01, 0.02]  # doubling, at the ceiling's jitter
    assert all(e["reason"] == "connection" for e in gone)
    assert len(ann.messages) == 1  # QUIT never answered: the deletion rolled back
    assert events(out)[-1]["event"] == "finished"


async def test_the_text_log_reports_messages_left_on_the_server(tmp_path: Path) -> None:
    big = b"Subject: big\r\n\r\n" + b"x" * 2000 + b"\r\n"
    ann = Mailbox(PASSWORD, [b"Subject: a\r\n\r\na\r\n", big])
    async with POP3TestServer({"ann": ann}) as server:
        path = tmp_path / "accounts.toml"
        fail = tmp_path / "fail.sh"
        fail.write_text("#!/bin/sh\ncat >/dev/null\nexit 3\n")
        fail.chmod(0o755)
        path.write_text(
            table(server.host, server.port, "ann", f'command = ["{fail}"]', 'state = "s.db"')
        )
        out = io.StringIO()
        running = daemon(path, out, polls=1, skip_larger_than=1000)
        running.log = Log(out, as_json=False)
        assert await running.run() == 0
    text = out.getvalue()
    assert "ann: message " in text
    assert "fail.sh exited with status 3; left on the server, tried again next poll" in text
    assert "is over the size limit: left on the server" in text
    assert "filtered" not in text
    assert "ann: 0 messages delivered (0 bytes), 0 deleted; next poll in 0.05 s" in text
    assert len(ann.messages) == 2


async def test_login_delay_holds_across_a_reload_and_a_missing_password_is_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ann = Mailbox(PASSWORD, [b"Subject: a\r\n\r\na\r\n"])
    monkeypatch.delenv("AIOPOP_UNSET_PASSWORD", raising=False)
    async with POP3TestServer({"ann": ann}, extra_capabilities=["LOGIN-DELAY 2"]) as server:
        path = tmp_path / "accounts.toml"
        path.write_text(
            table(server.host, server.port, "ann", 'maildir = "A"')
            + table(
                server.host, server.port, "nopw", 'maildir = "N"', secret="AIOPOP_UNSET_PASSWORD"
            )
        )
        out = io.StringIO()
        running = daemon(path, out)
        task = asyncio.create_task(running.run())
        loop = asyncio.get_running_loop()
        await until(out, "polled", "ann")
        first = loop.time()
        running._reload.set()  # the new poller must wait for the server's LOGIN-DELAY too
        await until(out, "polled", "ann", 2)
        assert loop.time() - first >= 1.5
        await until(out, "failed", "nopw", 2)  # no password: retried, never stopped
        running._stop.set()
        assert await task == 0
    nopw = [e for e in events(out) if e["account"] == "nopw"]
    assert {e["event"] for e in nopw} == {"failed"}
    assert nopw[0]["reason"] == "account"
    assert [s.user for s in server.sessions].count("ann") == 2


async def test_messages_judged_before_retrieval_are_logged_one_by_one(tmp_path: Path) -> None:
    big = b"Subject: big\r\n\r\n" + b"x" * 2000 + b"\r\n"
    ann = Mailbox(PASSWORD, [b"Subject: a\r\n\r\na\r\n", big])
    async with POP3TestServer({"ann": ann}) as server:
        path = tmp_path / "accounts.toml"
        path.write_text(table(server.host, server.port, "ann", 'maildir = "A"'))
        out = io.StringIO()
        assert await daemon(path, out, polls=1, delete_larger_than=1000).run() == 0
    (judged,) = [e for e in events(out) if e["event"] == "filtered"]
    assert (judged["verdict"], judged["by"]) == ("delete", "size")
    assert ann.messages == [b"Subject: a\r\n\r\na\r\n"]  # the big one deleted unread
