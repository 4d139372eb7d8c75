"""``aiopop watch ACCOUNTS.toml``: the daemon, run as a user runs it (a subprocess), with
signals, against in-process servers on the loopback; each test looks at the log, the
servers' mailboxes and sessions, and what was delivered."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from aiopop import _cli
from aiopop.testing import Mailbox, POP3TestServer
from tests.helpers.cli import PASSWORD, aiopop_command

ENV = {"AIOPOP_TEST_PASSWORD": PASSWORD, "AIOPOP_WRONG_PASSWORD": "not-it"}
Event = dict[str, Any]


def letters(user: str, count: int) -> list[bytes]:
    return [f"Subject: {user} {n}\r\n\r\nfor {user}\r\n".encode() for n in range(count)]


def table(server: POP3TestServer, user: str, *lines: str, secret: str = "TEST") -> str:
    return (
        "\n".join(
            [
                "[[account]]",
                f'name = "{user}"',
                f'url = "pop://{user}@{server.host}:{server.port}"',
                'tls = "none"',
                "allow_cleartext = true",
                f'password_env = "AIOPOP_{secret}_PASSWORD"',
                *lines,
            ]
        )
        + "\n\n"
    )


def command_line(tmp_path: Path, out: Path, script: str) -> str:
    out.mkdir(exist_ok=True)
    path = tmp_path / "deliver.py"
    path.write_text(script, encoding="utf-8")
    return (
        f"command = [{json.dumps(sys.executable)}, {json.dumps(str(path))}, {json.dumps(str(out))}]"
    )


STORE = r"""
import os, sys
data = sys.stdin.buffer.read()
open(os.path.join(sys.argv[1], os.environ["AIOPOP_UID"]), "wb").write(data)
"""
HANG = r"""
import os, sys, time
open(os.path.join(sys.argv[1], "started"), "w").write(str(os.getpid()))
time.sleep(120)
"""


class Daemon:
    """A running ``aiopop watch --json``, its events read as they come."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.events: list[Event] = []

    async def until(self, wanted: Callable[[Event], bool], within: float = 20) -> Event:
        """Read events until one is ``wanted``; return it."""
        for event in self.events:
            if wanted(event):
                return event
        assert self.process.stdout is not None
        async with asyncio.timeout(within):
            while True:
                line = await self.process.stdout.readline()
                assert line, f"the daemon ended; events so far: {self.events}"
                read: Event = json.loads(line)
                self.events.append(read)
                if wanted(read):
                    return read

    async def end(self, within: float = 20) -> int:
        assert self.process.stdout is not None
        async with asyncio.timeout(within):
            rest = await self.process.stdout.read()
            status = await self.process.wait()
        self.events += [json.loads(line) for line in rest.decode().splitlines()]
        return status

    def named(self, event: str, account: str | None = None) -> list[Event]:
        return [e for e in self.events if e["event"] == event and e["account"] == account]


@pytest.fixture
async def daemon(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    started: list[Daemon] = []

    async def start(*args: str) -> Daemon:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "aiopop", "watch", str(tmp_path / "accounts.toml"),
            "--json", *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            env={**os.environ, **ENV},
        )  # fmt: skip
        started.append(Daemon(process))
        return started[-1]

    yield start
    for running in started:
        if running.process.returncode is None:
            running.process.kill()
            await running.process.wait()


async def test_polls_deliver_to_a_maildir_and_a_command_and_only_new_mail(
    tmp_path: Path, daemon: Callable[..., Any]
) -> None:
    ann = Mailbox(PASSWORD, list(letters("ann", 2)))
    bob = Mailbox(PASSWORD, list(letters("bob", 1)))
    out = tmp_path / "out"
    async with POP3TestServer({"ann": ann, "bob": bob}) as server:
        (tmp_path / "accounts.toml").write_text(
            table(server, "ann", 'maildir = "Mail"')
            + table(server, "bob", command_line(tmp_path, out, STORE), 'state = "bob.db"')
        )
        running = await daemon("--interval", "0.3", "--polls", "3")
        await running.until(lambda e: e["event"] == "polled" and e["account"] == "ann")
        new = ann.add(b"Subject: later\r\n\r\nlate\r\n")  # between two polls
        assert await running.end() == _cli.EXIT_OK
    assert running.events[0]["event"] == "started"
    assert running.events[0]["accounts"] == ["ann", "bob"]
    assert running.events[-1]["event"] == "finished"
    delivered = [e["delivered"] for e in running.named("polled", "ann")]
    assert sum(delivered) == 3
    assert delivered[0] == 2
    assert len(delivered) == 3
    assert [e["delivered"] for e in running.named("polled", "bob")] == [1, 0, 0]
    saved = sorted(p.read_bytes() for p in (tmp_path / "Mail" / "new").iterdir())
    late = b"Subject: later\r\n\r\nlate\r\n"
    assert saved == sorted(m.replace(b"\r\n", b"\n") for m in [*letters("ann", 2), late])
    assert ann.uids is not None
    assert ann.uids[2] == new
    assert bob.uids is not None
    assert (out / bob.uids[0]).read_bytes() == letters("bob", 1)[0].replace(b"\r\n", b"\n")
    assert len(ann.messages) == 3  # kept: the default policy
    with sqlite3.connect(tmp_path / "bob.db") as db:
        assert [uid for (uid,) in db.execute("SELECT uid FROM messages")] == bob.uids
    polls = [s for s in server.sessions if s.user == "ann"]
    assert len(polls) == 3
    assert all(session.quit for session in polls)


async def test_a_refused_login_stops_that_account_until_a_reload(
    tmp_path: Path, daemon: Callable[..., Any]
) -> None:
    ann = Mailbox(PASSWORD, list(letters("ann", 1)))
    bob = Mailbox(PASSWORD, list(letters("bob", 1)))
    async with POP3TestServer({"ann": ann, "bob": bob}) as server:
        accounts = tmp_path / "accounts.toml"
        accounts.write_text(
            table(server, "ann", 'maildir = "A"', secret="WRONG")
            + table(server, "bob", 'maildir = "B"')
        )
        running = await daemon("--interval", "0.2")
        stopped = await running.until(lambda e: e["event"] == "stopped" and e["account"])
        assert stopped["account"] == "ann"
        assert stopped["reason"] == "credentials"
        # bob goes on polling; ann makes no new attempt, however many polls bob makes
        await running.until(lambda e: len(running.named("polled", "bob")) >= 4)
        attempts = [s for s in server.sessions if s.user != "bob"]
        assert len(attempts) == 1  # one session, its login refused: never tried again
        # fixed, and reloaded: ann is polled again
        accounts.write_text(
            table(server, "ann", 'maildir = "A"') + table(server, "bob", 'maildir = "B"')
        )
        running.process.send_signal(signal.SIGHUP)
        await running.until(lambda e: e["event"] == "reloaded")
        polled = await running.until(lambda e: e["event"] == "polled" and e["account"] == "ann")
        assert polled["delivered"] == 1
        running.process.send_signal(signal.SIGTERM)
        assert await running.end() == _cli.EXIT_OK
    assert running.events[-1]["event"] == "stopped"


async def test_a_bad_file_at_start_is_exit_2_and_at_reload_keeps_the_old_one(
    tmp_path: Path, daemon: Callable[..., Any]
) -> None:
    accounts = tmp_path / "accounts.toml"
    accounts.write_text(
        '[[account]]\nname = "x"\nhost = "127.0.0.1"\nuser = "u"\npassword_env = "X"\n'
    )
    bad = await aiopop_command("watch", str(accounts), env=ENV)
    assert bad.status == _cli.EXIT_USAGE
    assert "give maildir or command" in bad.err
    ann = Mailbox(PASSWORD, list(letters("ann", 1)))
    async with POP3TestServer({"ann": ann}) as server:
        accounts.write_text(table(server, "ann", 'maildir = "A"'))
        running = await daemon("--interval", "0.2")
        await running.until(lambda e: e["event"] == "polled")
        accounts.write_text("this is not TOML [")
        running.process.send_signal(signal.SIGHUP)
        failed = await running.until(lambda e: e["event"] == "reload-failed")
        assert failed["status"] == _cli.EXIT_USAGE
        count = len(running.named("polled", "ann"))
        await running.until(
            lambda e: e["event"] == "polled" and len(running.named("polled", "ann")) > count
        )
        running.process.send_signal(signal.SIGINT)
        assert await running.end() == _cli.EXIT_OK


async def test_sigterm_kills_a_hanging_command_and_its_message_stays(
    tmp_path: Path, daemon: Callable[..., Any]
) -> None:
    ann = Mailbox(PASSWORD, list(letters("ann", 2)))
    out = tmp_path / "out"
    async with POP3TestServer({"ann": ann}) as server:
        (tmp_path / "accounts.toml").write_text(
            table(
                server, "ann", command_line(tmp_path, out, HANG), 'state = "s.db"', "delete = true"
            )
        )
        running = await daemon("--interval", "0.2")
        async with asyncio.timeout(20):
            while not (out / "started").exists():  # noqa: ASYNC110 - the file system
                await asyncio.sleep(0.05)
        pid = int((out / "started").read_text())
        loop = asyncio.get_running_loop()
        asked = loop.time()
        running.process.send_signal(signal.SIGTERM)
        assert await running.end(within=15) == _cli.EXIT_OK
        assert loop.time() - asked < 10  # a few seconds: the grace period, then the kill
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
        assert ann.messages == letters("ann", 2)  # nothing deleted: no QUIT was sent
        assert server.sessions[-1].quit is False
    with sqlite3.connect(tmp_path / "s.db") as db:
        assert db.execute("SELECT count(*) FROM messages").fetchone() == (0,)
    assert running.events[-1]["event"] == "stopped"


async def test_login_delay_spaces_the_polls_and_failures_back_off(
    tmp_path: Path, daemon: Callable[..., Any]
) -> None:
    ann = Mailbox(PASSWORD, list(letters("ann", 1)))
    async with POP3TestServer({"ann": ann}, extra_capabilities=["LOGIN-DELAY 3"]) as server:
        (tmp_path / "accounts.toml").write_text(
            table(server, "ann", 'maildir = "A"')
            + '[[account]]\nname = "gone"\nurl = "pop://x@127.0.0.1:9"\ntls = "none"\n'
            'allow_cleartext = true\npassword_env = "AIOPOP_TEST_PASSWORD"\nmaildir = "G"\n'
        )
        running = await daemon("--interval", "0.1")
        polled = await running.until(lambda e: e["event"] == "polled")
        assert polled["next_poll"] == 3.0  # the server's LOGIN-DELAY beats --interval
        failed = await running.until(lambda e: e["event"] == "failed")
        assert failed["account"] == "gone"
        assert failed["reason"] == "connection"
        assert 0 <= failed["retry_in"] <= 10  # the first backoff: up to 10 s, jittered
        running.process.send_signal(signal.SIGTERM)
        assert await running.end() == _cli.EXIT_OK
    assert len([s for s in server.sessions if s.user == "ann"]) == 1  # no second login yet
