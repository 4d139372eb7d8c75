"""``aiopop fetch HOST USER --command PROGRAM``, the policies, the filter and the dry run,
through the real command (a subprocess) against an in-process server; each test looks at
the server's mailbox, the wire and the state file, not only at the output."""

from __future__ import annotations

import json
import os
import sqlite3
import sys
from pathlib import Path

import pytest

from aiopop import _cli
from aiopop.testing import Mailbox, POP3TestServer
from tests.helpers.cli import PASSWORD, Run, aiopop_command, plain_args

ENV = {"AIOPOP_TEST_PASSWORD": PASSWORD}
MESSAGES = [
    b"Subject: one\r\n\r\nfirst\r\n",
    b"Subject: spam two\r\n\r\n.dotted\r\n",
    b"Subject: three\r\n\r\n" + b"x" * 3000 + b"\r\n",
]

# A delivery program: the message into OUT/<uid>, its environment into OUT/<uid>.env; it
# fails (exit 75) for the unique-ids listed in OUT/fail, and hangs for those in OUT/hang.
DELIVER = r"""
import os, sys, time
out = sys.argv[1]
uid = os.environ["AIOPOP_UID"]
def listed(name):
    path = os.path.join(out, name)
    return os.path.exists(path) and uid in open(path).read().split()
if listed("hang"):
    time.sleep(60)
data = sys.stdin.buffer.read()
if listed("fail"):
    sys.stderr.write("the gateway is down\n")
    sys.exit(75)
open(os.path.join(out, uid), "wb").write(data)
with open(os.path.join(out, uid + ".env"), "w") as env:
    ours = sorted((k, v) for k, v in os.environ.items() if k.startswith("AIOPOP_"))
    env.write("\n".join(f"{k}={v}" for k, v in ours))
"""
# A filter in mpop's convention: exit 1 (delete) for spam, 2 (skip) for "three", else 0.
FILTER = r"""
import sys
headers = sys.stdin.buffer.read()
assert b"\r\n" not in headers
sys.exit(1 if b"spam" in headers else 2 if b"three" in headers else 0)
"""


@pytest.fixture
async def server() -> POP3TestServer:  # type: ignore[misc]
    async with POP3TestServer({"u": Mailbox(PASSWORD, list(MESSAGES))}) as running:
        yield running


def program(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


async def fetch(server: POP3TestServer, *more: str) -> Run:
    return await aiopop_command("fetch", *plain_args(server, *more), env=ENV)


def command_args(tmp_path: Path, out: Path) -> list[str]:
    out.mkdir(exist_ok=True)
    state = tmp_path / "state.sqlite3"
    deliver = program(tmp_path, "deliver.py", DELIVER)
    return ["--state", str(state), "--command", sys.executable, deliver, str(out)]


def rows(state: Path) -> dict[str, int | None]:
    with sqlite3.connect(state) as db:
        return dict(db.execute("SELECT uid, size FROM messages"))


def sent(server: POP3TestServer) -> list[bytes]:
    """Every command line the server received, in order, over every session."""
    return [line.split(b" ")[0].upper() for s in server.sessions for line in s.lines]


async def test_each_message_goes_to_the_command_and_is_recorded(
    server: POP3TestServer, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    run = await fetch(server, "--json", "--new-only", *command_args(tmp_path, out))
    assert run.status == _cli.EXIT_OK, run.err
    report = json.loads(run.out)
    assert report["command"][0] == sys.executable
    mailbox = server.mailboxes["u"]
    assert mailbox.uids is not None
    uids = list(mailbox.uids)
    assert [m["uid"] for m in report["fetched"]] == uids
    assert [m["file"] for m in report["fetched"]] == [None, None, None]
    for uid, message in zip(uids, MESSAGES, strict=True):
        assert (out / uid).read_bytes() == message.replace(b"\r\n", b"\n")  # LF, unstuffed
        env = dict(line.split("=", 1) for line in (out / f"{uid}.env").read_text().splitlines())
        assert env["AIOPOP_UID"] == uid
        assert env["AIOPOP_SIZE"] == str(len(message))
        assert env["AIOPOP_USER"] == "u"
        assert env["AIOPOP_MAILBOX"] == f"u@127.0.0.1:{server.port}"
        assert "AIOPOP_TEST_PASSWORD" not in env  # the password's variable is not passed on
    assert rows(tmp_path / "state.sqlite3") == {
        uid: len(message) for uid, message in zip(uids, MESSAGES, strict=True)
    }
    assert mailbox.messages == MESSAGES  # kept: the default policy
    again = await fetch(server, *command_args(tmp_path, out))  # a command: new-only anyway
    assert again.status == _cli.EXIT_OK, again.err
    assert again.out.startswith("Delivered 0 messages (0 bytes) to the command ")
    assert "(3 already there)" in again.out


async def test_a_failing_command_leaves_its_message_and_the_next_run_retries_it(
    server: POP3TestServer, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    mailbox = server.mailboxes["u"]
    assert mailbox.uids is not None
    failing = mailbox.uids[1]
    out.mkdir()
    (out / "fail").write_text(failing)
    run = await fetch(server, "--new-only", "--delete", *command_args(tmp_path, out))
    assert run.status == _cli.EXIT_FAILED, run.err
    assert f"(uid {failing}): not delivered: " in run.out
    assert "exited with status 75" in run.out
    assert "the gateway is down" in run.out
    assert "left on the server, tried again next run" in run.out
    assert mailbox.messages == [MESSAGES[1]]  # the two delivered were deleted at QUIT
    delivered = {name for name in os.listdir(out) if "." not in name and name != "fail"}
    assert set(rows(tmp_path / "state.sqlite3")) == delivered
    assert failing not in rows(tmp_path / "state.sqlite3")
    (out / "fail").unlink()
    second = await fetch(server, "--new-only", "--delete", *command_args(tmp_path, out))
    assert second.status == _cli.EXIT_OK, second.err
    assert (out / failing).read_bytes() == MESSAGES[1].replace(b"\r\n", b"\n")
    assert mailbox.messages == []


async def test_a_command_that_hangs_is_killed_at_the_time_limit(
    server: POP3TestServer, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    mailbox = server.mailboxes["u"]
    assert mailbox.uids is not None
    hanging = mailbox.uids[0]
    out.mkdir()
    (out / "hang").write_text(hanging)
    args = command_args(tmp_path, out)
    run = await fetch(server, "--delete", "--command-time-limit", "0.5", *args)
    assert run.status == _cli.EXIT_FAILED, run.err
    assert "no answer within 0.5 s" in run.out
    assert mailbox.messages == [MESSAGES[0]]  # the others delivered and deleted
    assert hanging not in rows(tmp_path / "state.sqlite3")


async def test_the_dry_run_changes_nothing_and_says_what_a_run_would_do(
    server: POP3TestServer, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    first = await fetch(server, "--new-only", *command_args(tmp_path, out))
    assert first.status == _cli.EXIT_OK, first.err
    mailbox = server.mailboxes["u"]
    new = mailbox.add(b"Subject: four\r\n\r\nnew\r\n")
    state = tmp_path / "state.sqlite3"
    before = state.read_bytes()
    server.sessions.clear()
    dry = await fetch(server, "--new-only", "--delete", "--dry-run", *command_args(tmp_path, out))
    assert dry.status == _cli.EXIT_OK, dry.err
    assert dry.out.splitlines()[0].startswith(
        "Dry run: would fetch 1 message (22 bytes) for the command "
    )
    assert f"  would fetch message 4 (uid {new}, 22 bytes)" in dry.out
    assert dry.out.count("  would delete message ") == 3  # delivered before: due now
    assert "nothing was fetched, deleted or recorded" in dry.out
    assert b"RETR" not in sent(server)
    assert b"DELE" not in sent(server)
    assert state.read_bytes() == before
    assert len(mailbox.messages) == 4
    assert not (out / new).exists()
    real = await fetch(server, "--new-only", "--delete", "--json", *command_args(tmp_path, out))
    report = json.loads(real.out)
    assert [m["uid"] for m in report["fetched"]] == [new]
    assert sorted(report["deleted"]) == [1, 2, 3, 4]


async def test_a_dry_run_into_a_new_maildir_creates_nothing(
    server: POP3TestServer, tmp_path: Path
) -> None:
    maildir = tmp_path / "Mail"
    dry = await fetch(server, "--maildir", str(maildir), "--dry-run", "--json")
    assert dry.status == _cli.EXIT_OK, dry.err
    report = json.loads(dry.out)
    assert [p["number"] for p in report["dry_run"]["fetch"]] == [1, 2, 3]
    assert not maildir.exists()


async def test_the_filter_deletes_skips_and_fetches_and_deletions_wait_for_quit(
    server: POP3TestServer, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    screen = program(tmp_path, "filter.py", FILTER)
    args = ["--filter", f"{sys.executable} {screen}", *command_args(tmp_path, out)]
    run = await fetch(server, "--new-only", "--json", *args)
    assert run.status == _cli.EXIT_OK, run.err
    report = json.loads(run.out)
    assert [m["number"] for m in report["fetched"]] == [1]
    assert [(f["number"], f["verdict"], f["by"]) for f in report["filtered"]] == [
        (2, "delete", "filter"),
        (3, "skip", "filter"),
    ]
    assert report["deleted"] == [2]
    assert server.mailboxes["u"].messages == [MESSAGES[0], MESSAGES[2]]
    session = server.sessions[-1]
    commands = [line.split(b" ")[0] for line in session.lines]
    assert commands.count(b"TOP") == 3
    assert [line for line in session.lines if line.startswith(b"RETR")] == [b"RETR 1"]
    assert [line for line in session.lines if line.startswith(b"DELE")] == [b"DELE 2"]
    assert commands.index(b"DELE") < commands.index(b"QUIT")


async def test_delete_larger_than_deletes_unread_and_skip_larger_than_leaves(
    server: POP3TestServer, tmp_path: Path
) -> None:
    maildir = tmp_path / "Mail"
    run = await fetch(
        server, "--maildir", str(maildir), "--delete-larger-than", "2K",
        "--skip-larger-than", "25", "--json",
    )  # fmt: skip
    assert run.status == _cli.EXIT_FAILED, run.err  # message 2 left over the size limit
    report = json.loads(run.out)
    assert [m["number"] for m in report["fetched"]] == [1]
    assert [(f["number"], f["by"]) for f in report["filtered"]] == [(3, "size")]
    assert [o["number"] for o in report["oversized"]] == [2]
    assert server.mailboxes["u"].messages == MESSAGES[:2]
    assert b"RETR 3" not in server.sessions[-1].lines


async def test_delete_after_days_deletes_only_what_is_old_enough(
    server: POP3TestServer, tmp_path: Path
) -> None:
    maildir = tmp_path / "Mail"
    first = await fetch(server, "--maildir", str(maildir), "--delete-after-days", "7")
    assert first.status == _cli.EXIT_OK, first.err
    assert server.mailboxes["u"].messages == MESSAGES  # delivered now: not 7 days old
    mailbox = server.mailboxes["u"]
    assert mailbox.uids is not None
    with sqlite3.connect(maildir / "aiopop-uidl.sqlite3") as db:
        db.execute(
            "UPDATE messages SET first_delivered = first_delivered - 8 * 86400 WHERE uid = ?",
            (mailbox.uids[0],),
        )
    second = await fetch(
        server, "--maildir", str(maildir), "--delete-after-days", "7", "--new-only"
    )
    assert second.status == _cli.EXIT_OK, second.err
    assert "(3 already there, 1 deleted on the server)" in second.out
    assert mailbox.messages == MESSAGES[1:]


@pytest.mark.parametrize(
    ("more", "words"),
    [
        (["--maildir", "M", "--state", "s"], "--state is for --command"),
        (["--maildir", "M", "--command", "cat"], "give --maildir DIR or --command"),
        (["--command"], "--command needs a program"),
        ([], "give --maildir DIR or --command"),
        (["--maildir", "M", "--delete", "--delete-after-days", "3"], "not allowed with"),
        (["--maildir", "M", "--delete-after-days", "-1"], "at least 0"),
        (["--maildir", "M", "--filter", "'unclosed"], "cannot split"),
    ],
)
async def test_usage_errors(server: POP3TestServer, more: list[str], words: str) -> None:
    run = await fetch(server, *more)
    assert run.status == _cli.EXIT_USAGE
    assert words in run.err
    assert server.sessions == []  # nothing reached the server


async def test_the_default_state_is_under_xdg_state_home(
    server: POP3TestServer, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    deliver = program(tmp_path, "deliver.py", DELIVER)
    run = await aiopop_command(
        "fetch",
        *plain_args(server, "--new-only", "--command", sys.executable, deliver, str(out)),
        env={**ENV, "XDG_STATE_HOME": str(tmp_path / "xdg")},
    )
    assert run.status == _cli.EXIT_OK, run.err
    state = tmp_path / "xdg" / "aiopop" / "aiopop-uidl.sqlite3"
    assert len(rows(state)) == 3
    assert (state.parent.stat().st_mode & 0o777) == 0o700


async def test_a_dry_run_of_a_file_prints_each_accounts_plan(
    server: POP3TestServer, tmp_path: Path
) -> None:
    accounts = tmp_path / "accounts.toml"
    accounts.write_text(
        "[[account]]\n"
        f'url = "pop://u@127.0.0.1:{server.port}"\n'
        'tls = "none"\nallow_cleartext = true\npassword_env = "AIOPOP_TEST_PASSWORD"\n'
        'maildir = "Mail"\ndelete_larger_than = 2000\n',
        encoding="utf-8",
    )
    run = await aiopop_command("fetch", str(accounts), "--dry-run", env=ENV)
    assert run.status == _cli.EXIT_OK, run.err
    name = f"u@127.0.0.1:{server.port}"
    lines = run.out.splitlines()
    assert lines[0] == (
        f"{name}: Dry run: would fetch 2 messages (53 bytes) into {tmp_path / 'Mail'}"
        " and delete 1 message on the server"
    )
    assert f"{name}: would delete message 3 (uid " in run.out
    assert "marked deleted" not in run.out
    assert lines[-1] == "1 account, 0 failed; nothing was changed"
    assert not (tmp_path / "Mail").exists()
    assert len(server.mailboxes["u"].messages) == 3
