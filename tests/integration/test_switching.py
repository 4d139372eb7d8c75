"""The README's promise, end to end: replacing fetchmail, getmail6 and mpop with `aiopop watch`.

Three mailboxes of the private Dovecot, each fetched once in keep mode by
the tool the README's commands name for it (fetchmail for alice, getmail6
for support, mpop for alerts). Then the README's own text: its accounts
file (the ```toml block, rewritten only where it must be to run here) and
its three steps (the ```sh block): import each tool's state, a dry run that
changes nothing anywhere, and the daemon (``--polls 1`` so that it ends).
Each account gets only the message that arrived after the switch; the
``delete = true`` account is emptied at once, imported messages included;
the ``delete_after_days = 7`` accounts keep everything until their rows are
eight days old, and are emptied then. Nothing arrives twice.

What is rewritten, and why: the URL's host, port and TLS (the private
Dovecot on 127.0.0.1, plain POP3 as the old tools used it, so
``tls = "none"`` and ``allow_cleartext = true``), the user names (the
Dovecot users), the paths (under a temporary directory), the commands
``rt-mailgate`` and ``pass`` (stand-ins that take the same arguments), and
``--port`` on the fetchmail and mpop imports (the mailbox is named with its
port when that is not 110 or 995; getmail6's file name carries it). Every
policy key is kept as the README has it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import tomllib
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aiopop._delivery_state import STATE_FILE
from servers.dovecot import HOST, DovecotServer, MailUser, make_message
from tests.helpers.peers import add_message, fetchmail_keep, getmail_keep, mpop_keep

README = Path(__file__).resolve().parents[2] / "README.md"
TIMEOUT = 60
DAY = 86400


def readme_block(language: str, first_line: str) -> str:
    """The README's block of ``language`` that starts with ``first_line``."""
    pattern = rf"```{language}\n(.*?)```"
    blocks = re.findall(pattern, README.read_text(encoding="utf-8"), re.DOTALL)
    found = [block for block in blocks if block.startswith(first_line)]
    assert len(found) == 1, f"expected one README {language} block starting with {first_line!r}"
    return str(found[0])


def toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a TOML basic string: JSON's escapes are TOML's
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    raise TypeError(f"no TOML for {value!r}")


def toml_accounts(accounts: list[dict[str, Any]]) -> str:
    """A file of ``[[account]]`` tables of flat keys."""
    lines = []
    for table in accounts:
        lines += ["[[account]]", *(f"{key} = {toml_value(v)}" for key, v in table.items()), ""]
    return "\n".join(lines)


@pytest.fixture
def home() -> Iterator[Path]:
    """The old tools' HOME: a directory of its own, which getmail6 (as nobody) may use."""
    directory = Path(tempfile.mkdtemp(prefix="aiopop-switch-"))
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def server_mail(dovecot: DovecotServer, user: MailUser) -> list[bytes]:
    """The messages of ``user``'s mailbox on the server, in sorted order (LF line ends)."""
    maildir = dovecot.maildir(user.name)
    return sorted(p.read_bytes() for sub in ("new", "cur") for p in (maildir / sub).iterdir())


def tree(root: Path) -> dict[str, str]:
    """Every file under ``root``, by relative path, with a digest of its bytes."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def rows(state: Path) -> list[tuple[str, str, int | None, int, float]]:
    db = sqlite3.connect(state)
    try:
        found = db.execute(
            "SELECT mailbox, uid, size, delivered, first_delivered FROM messages"
            " ORDER BY mailbox, uid"
        ).fetchall()
    finally:
        db.close()
    return [tuple(row) for row in found]


def maildir_files(box: Path) -> dict[str, list[bytes]]:
    return {sub: sorted(p.read_bytes() for p in (box / sub).iterdir()) for sub in ("new", "cur")}


GATEWAY = """\
import json, os, re, sys
from pathlib import Path

TICKETS = Path({tickets!r})
if sys.argv[1:] != json.loads({arguments!r}):
    sys.exit("rt-mailgate stand-in: unexpected arguments %r" % sys.argv[1:])
uid = os.environ["AIOPOP_UID"]
if not re.fullmatch(r"[A-Za-z0-9._-]+", uid):
    sys.exit("rt-mailgate stand-in: unexpected AIOPOP_UID %r" % uid)
data = sys.stdin.buffer.read()
with open(TICKETS / "deliveries.log", "a") as log:
    log.write("%s %s %s\\n" % (os.environ["AIOPOP_ACCOUNT"], uid, os.environ["AIOPOP_SIZE"]))
with open(TICKETS / ("." + uid + ".tmp"), "xb") as ticket:
    ticket.write(data)
    ticket.flush()
    os.fsync(ticket.fileno())
os.link(TICKETS / ("." + uid + ".tmp"), TICKETS / uid)  # fails if this message came before
os.unlink(TICKETS / ("." + uid + ".tmp"))
"""
"""The stand-in for rt-mailgate: each message becomes a file named by its unique-id."""

PASS = """\
import sys

if sys.argv[1:] != ["show", {entry!r}]:
    sys.exit("pass stand-in: unexpected arguments %r" % sys.argv[1:])
print({password!r})
"""
"""The stand-in for pass: the one password of the README's entry."""


class Switch:
    """The README's three accounts, here: Dovecot users, paths, environment."""

    def __init__(self, dovecot: DovecotServer, home: Path, root: Path) -> None:
        self.dovecot = dovecot
        self.home = home
        self.root = root
        self.users: dict[str, MailUser] = {}
        self.old: dict[str, list[bytes]] = {}
        self.new: dict[str, bytes] = {}
        self.env = {**os.environ, "HOME": str(home)}
        self.accounts_file = root / "etc" / "aiopop" / "accounts.toml"
        self.tickets = root / "tickets"

    def local(self, path: str) -> str:
        """A README path (``/var/mail/alice``) under the temporary root."""
        assert path.startswith("/"), path
        return str(self.root / path.lstrip("/"))

    def rewrite(self, table: dict[str, Any]) -> dict[str, Any]:
        """One README ``[[account]]`` table, rewritten to run here."""
        out = dict(table)
        url = urllib.parse.urlsplit(table["url"])
        assert (url.scheme, url.hostname, url.port) == ("pops", "pop.example.com", None)
        user = self.users[table["name"]]
        out["url"] = f"pop://{user.name}@{HOST}:{self.dovecot.pop3_port}"
        out["tls"] = "none"
        out["allow_cleartext"] = True
        if "password_env" in table:
            self.env[table["password_env"]] = user.password
        if "password_command" in table:
            program, *arguments = table["password_command"]
            assert (program, arguments[:1]) == ("pass", ["show"]), table["password_command"]
            stand_in = self.root / "pass.py"
            stand_in.write_text(PASS.format(entry=arguments[1], password=user.password))
            out["password_command"] = [sys.executable, str(stand_in), *arguments]
        if "command" in table:
            program, *arguments = table["command"]
            assert program == "rt-mailgate", table["command"]
            stand_in = self.root / "rt-mailgate.py"
            stand_in.write_text(
                GATEWAY.format(tickets=str(self.tickets), arguments=json.dumps(arguments))
            )
            out["command"] = [sys.executable, str(stand_in), *arguments]
        for key in ("maildir", "state"):
            if key in table:
                out[key] = self.local(table[key])
        return out

    def argv(self, line: str) -> list[str]:
        """One ``aiopop ...`` line of the README's steps, rewritten to run here."""
        words = shlex.split(line)
        assert words[0] == "aiopop", line
        rewritten = []
        for word in words[1:]:
            if word == "pop.example.com":
                word = HOST
            elif word in self.users:
                word = self.users[word].name
            elif word == "/etc/aiopop/accounts.toml":
                word = str(self.accounts_file)
            elif word.startswith("/var/"):
                word = self.local(word)
            elif word.startswith("~/.getmail/oldmail-pop.example.com-995-"):
                user = self.users[word.rsplit("-", 1)[1]].name
                word = str(self.home / f".getmail/oldmail-{HOST}-{self.dovecot.pop3_port}-{user}")
            elif word.startswith("~/.mpop_uidls/") and word.endswith("_at_pop.example.com"):
                user = self.users[word.split("/")[-1].split("_at_")[0]].name
                word = str(self.home / f".mpop_uidls/{user}_at_{HOST}")
            elif word.startswith("~/"):
                word = str(self.home / word[2:])
            rewritten.append(word)
        if rewritten[:2] in (["import-state", "fetchmail"], ["import-state", "mpop"]):
            rewritten += ["--port", str(self.dovecot.pop3_port)]
        return rewritten

    def aiopop(self, argv: list[str]) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "aiopop", *argv],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            env=self.env,
            check=False,
        )
        assert done.returncode == 0, (
            f"aiopop {shlex.join(argv)}: exit status {done.returncode}\n{done.stdout}{done.stderr}"
        )
        return done.stdout

    def watch(self, argv: list[str]) -> dict[str, dict[str, Any]]:
        """Run ``aiopop watch ... --polls 1 --json``; each account's "polled" event."""
        lines = self.aiopop([*argv, "--polls", "1", "--json"]).splitlines()
        events = [json.loads(line) for line in lines]
        kinds = [event["event"] for event in events]
        assert kinds[0] == "started", events
        assert kinds[-1] == "finished", events
        assert sorted(kinds[1:-1]) == ["polled"] * 3, events  # no failure, nothing undelivered
        assert events[0]["accounts"] == ["alice", "support", "alerts"]
        return {event["account"]: event for event in events[1:-1]}


@pytest.mark.dovecot
def test_switching_as_the_readme_says(dovecot: DovecotServer, home: Path, tmp_path: Path) -> None:
    switch = Switch(dovecot, home, tmp_path)
    for name in ("alice", "support", "alerts"):
        old = [make_message(f"{name} old {n}", [f"fetched by the old tool {n}"]) for n in (1, 2)]
        old.append(make_message(f"{name} old 3", ["x" * 70] * 40))
        switch.users[name] = dovecot.new_user(old, prefix=f"{name}-")
        switch.old[name] = [message.replace(b"\r\n", b"\n") for message in old]
    users = switch.users

    # Before: each old tool has fetched its mailbox, leaving the mail on the server.
    fetchids = fetchmail_keep(dovecot, users["alice"], home)
    assert fetchids.read_text().count(f"{users['alice'].name}@{HOST} ") == 3
    uidls = mpop_keep(dovecot, users["alerts"], home)
    assert uidls.read_bytes().startswith(b"# This file was generated by mpop version ")
    oldmail = getmail_keep(dovecot, users["support"], home)
    assert len(oldmail.read_bytes().splitlines()) == 3

    # The README's accounts file, rewritten only where it must be to run here.
    readme = tomllib.loads(readme_block("toml", "# /etc/aiopop/accounts.toml: three accounts,"))
    assert [table["name"] for table in readme["account"]] == ["alice", "support", "alerts"]
    accounts = [switch.rewrite(table) for table in readme["account"]]
    policy = {"delete", "delete_after_days"}
    for theirs, ours in zip(readme["account"], accounts, strict=True):
        assert {k: v for k, v in theirs.items() if k in policy} == {
            k: v for k, v in ours.items() if k in policy
        }
    assert [a.get("delete_after_days") for a in accounts] == [7, 7, None]
    assert [a.get("delete") for a in accounts] == [None, None, True]
    switch.accounts_file.parent.mkdir(parents=True)
    switch.accounts_file.write_text(toml_accounts(accounts), encoding="utf-8")
    assert tomllib.loads(switch.accounts_file.read_text(encoding="utf-8")) == {"account": accounts}
    (tmp_path / "var" / "mail").mkdir(parents=True)  # there on any system, as /var/lib is
    (tmp_path / "var" / "lib").mkdir(parents=True)  # /var/lib/aiopop: import-state makes it
    switch.tickets.mkdir()

    alice_box = Path(accounts[0]["maildir"])
    support_state = Path(accounts[1]["state"])
    alerts_box = Path(accounts[2]["maildir"])
    states = {
        "alice": alice_box / STATE_FILE,
        "support": support_state,
        "alerts": alerts_box / STATE_FILE,
    }
    # The mailboxes as aiopop names them: user@host:port (the port is not 110 or 995).
    keys = {name: f"{user.name}@{HOST}:{dovecot.pop3_port}" for name, user in users.items()}

    # The README's steps.
    steps = [
        line
        for line in readme_block(
            "sh", "# 1. Stop the old tool, and import what it already fetched,"
        ).splitlines()
        if line.startswith("aiopop ")
    ]
    imports, fetch, watch = steps[:3], steps[3], steps[4]
    assert [shlex.split(line)[1:3] for line in imports] == [
        ["import-state", "fetchmail"],
        ["import-state", "getmail"],
        ["import-state", "mpop"],
    ]
    assert shlex.split(fetch)[1:] == [
        "fetch",
        "/etc/aiopop/accounts.toml",
        "--new-only",
        "--dry-run",
    ]
    assert shlex.split(watch)[1] == "watch"

    # 1. Import what the old tools fetched.
    for line, name in zip(imports, ("alice", "support", "alerts"), strict=True):
        imported = json.loads(switch.aiopop([*switch.argv(line), "--json"]))
        assert imported["mailbox"] == keys[name], imported
        assert (imported["imported"], imported["known"], imported["skipped"]) == (3, 0, 0)
        assert imported["state"] == str(states[name])
    for name, state in states.items():
        assert [(r[0], r[2], r[3]) for r in rows(state)] == [(keys[name], None, 1)] * 3

    # Mail arrives after the switch: one message per mailbox.
    for name, user in users.items():
        message = make_message(f"{name} new", ["arrived after the switch"])
        add_message(dovecot, user, message, f"{name}-new")
        switch.new[name] = message.replace(b"\r\n", b"\n")
    everything = {name: sorted([*switch.old[name], switch.new[name]]) for name in users}
    assert {name: server_mail(dovecot, user) for name, user in users.items()} == everything

    # 2. The dry run: what the first poll would fetch and delete; nothing changes anywhere.
    before = tree(tmp_path)
    planned = json.loads(switch.aiopop([*switch.argv(fetch), "--json"]))
    assert planned["failed"] == 0, planned
    assert tree(tmp_path) == before  # Maildirs, state files, tickets: byte for byte
    assert {name: server_mail(dovecot, user) for name, user in users.items()} == everything
    plans = {report["account"]: report for report in planned["accounts"]}
    assert list(plans) == ["alice", "support", "alerts"]
    for report in plans.values():
        assert report["ok"], report
        assert (report["fetched"], report["deleted"]) == ([], []), report
        assert [p["number"] for p in report["dry_run"]["fetch"]] == [4], report
    assert plans["alice"]["dry_run"]["delete"] == []
    assert plans["support"]["dry_run"]["delete"] == []
    assert [p["number"] for p in plans["alerts"]["dry_run"]["delete"]] == [1, 2, 3]

    # 3. The daemon, one poll of every account: only the new message, to its destination.
    polled = switch.watch(switch.argv(watch))
    assert {name: (e["delivered"], e["deleted"]) for name, e in polled.items()} == {
        "alice": (1, 0),
        "support": (1, 0),
        "alerts": (1, 4),
    }
    assert maildir_files(alice_box) == {"new": [switch.new["alice"]], "cur": []}
    assert maildir_files(alerts_box) == {"new": [switch.new["alerts"]], "cur": []}
    log = (switch.tickets / "deliveries.log").read_text().splitlines()
    ((account, uid, size),) = [line.split() for line in log]  # one run of the gateway
    assert (account, uid) == ("support", plans["support"]["dry_run"]["fetch"][0]["uid"])
    assert int(size) == len(switch.new["support"].replace(b"\n", b"\r\n"))
    assert (switch.tickets / uid).read_bytes() == switch.new["support"]
    assert sorted(p.name for p in switch.tickets.iterdir()) == sorted(["deliveries.log", uid])
    assert server_mail(dovecot, users["alice"]) == everything["alice"]
    assert server_mail(dovecot, users["support"]) == everything["support"]
    assert server_mail(dovecot, users["alerts"]) == []  # delete = true: imported ones too
    for name in ("alice", "support"):
        found = rows(states[name])
        assert len(found) == 4, found
        assert all(r[2] is not None and r[3] == 1 for r in found), found  # sizes learnt
    assert uid in {r[1] for r in rows(states["support"])}

    # A week and a day later: the 7-day accounts' messages are due, and only deleted.
    for name in ("alice", "support"):
        db = sqlite3.connect(states[name])
        with db:
            db.execute("UPDATE messages SET first_delivered = first_delivered - ?", (8 * DAY,))
        db.close()
    tickets_before = tree(switch.tickets)
    polled = switch.watch(switch.argv(watch))
    assert {name: (e["delivered"], e["deleted"]) for name, e in polled.items()} == {
        "alice": (0, 4),
        "support": (0, 4),
        "alerts": (0, 0),
    }
    assert {name: server_mail(dovecot, user) for name, user in users.items()} == {
        "alice": [],
        "support": [],
        "alerts": [],
    }
    # Nothing delivered again: the same files in the Maildirs and the gateway's directory.
    assert tree(switch.tickets) == tickets_before
    assert maildir_files(alice_box) == {"new": [switch.new["alice"]], "cur": []}
    assert maildir_files(alerts_box) == {"new": [switch.new["alerts"]], "cur": []}


def test_import_state_creates_the_state_directory_as_fetch_does(tmp_path: Path) -> None:
    """The README's getmail6 import as printed, on a machine without /var/lib/aiopop."""
    (line,) = [
        line
        for line in readme_block("sh", "# 1. Stop the old tool").splitlines()
        if line.startswith("aiopop import-state getmail ")
    ]
    argv = []
    for word in shlex.split(line)[1:]:
        if word.startswith("~/"):
            word = str(tmp_path / "home" / word[2:])
        elif word.startswith("/var/"):
            word = str(tmp_path / word.lstrip("/"))
        argv.append(word)
    oldmail, state = Path(argv[2]), Path(argv[argv.index("--state") + 1])
    oldmail.parent.mkdir(parents=True)
    oldmail.write_bytes(b"000000017a3c1f00\x001700000000\n000000027a3c1f00\x001700000001\n")
    (tmp_path / "var" / "lib").mkdir(parents=True)  # /var/lib exists; /var/lib/aiopop not yet
    done = subprocess.run(
        [sys.executable, "-m", "aiopop", *argv, "--json"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert (state.parent.stat().st_mode & 0o777) == 0o700
    assert json.loads(done.stdout)["imported"] == 2
    assert [(r[0], r[1]) for r in rows(state)] == [
        ("support@pop.example.com", "000000017a3c1f00"),
        ("support@pop.example.com", "000000027a3c1f00"),
    ]
