"""Running the real fetchmail, getmail6 and mpop once, in keep mode, against the private Dovecot.

As tests/integration/test_import_state_peers.py runs them: each with its own
configuration in ``home`` (its HOME for the run), loopback only, plain POP3
on ``dovecot.pop3_port``, delivering into a throw-away mbox and leaving
every message on the server. Each returns the state file the tool wrote,
where a user would find it: ``~/.fetchids``, ``~/.getmail/oldmail-...``,
``~/.mpop_uidls/USER_at_HOST``. A missing tool skips the test, except on CI
(``CI=true``) where that is a failure (scripts/install-peers.sh installs
them).
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from pathlib import Path

import pytest

from servers.dovecot import HOST, DovecotServer, MailUser

TIMEOUT = 60


def peer_program(name: str, package: str) -> str:
    """The path of ``name``; skip (fail on CI) when it is not installed."""
    path = shutil.which(name)
    if path is None:
        reason = (
            f"{name} is not installed (Debian package {package}: bash scripts/install-peers.sh)"
        )
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI needs the peer tools: {reason}", pytrace=False)
        pytest.skip(reason)
    return path


def run_tool(argv: list[str], *, env: dict[str, str], **options: object) -> None:
    done = subprocess.run(
        argv,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env=env,
        check=False,
        **options,  # type: ignore[call-overload]
    )
    assert done.returncode == 0, (
        f"{argv[0]} failed ({done.returncode}):\n{done.stdout}{done.stderr}"
    )


def fetchmail_keep(dovecot: DovecotServer, user: MailUser, home: Path) -> Path:
    """fetchmail fetches ``user``'s mailbox, keeping it; returns its idfile ``~/.fetchids``."""
    fetchmail = peer_program("fetchmail", "fetchmail")
    rc = home / ".fetchmailrc"
    rc.write_text(
        "set no bouncemail\nset no syslog\n"
        f"poll {HOST} protocol pop3 port {dovecot.pop3_port} auth password\n"
        f'  user "{user.name}" there with password "{user.password}" is root here\n'
        "  keep no fetchall no rewrite\n  fetchsizelimit 0\n  sslproto ''\n"
        "  mda \"/bin/sh -c 'cat >/dev/null'\"\n"
    )
    rc.chmod(0o600)
    ids = home / ".fetchids"
    env = {**os.environ, "HOME": str(home), "FETCHMAILHOME": str(home)}
    # Its own pid file: as root, fetchmail's default is /var/run/fetchmail.pid, and a
    # second fetchmail anywhere on the machine would then refuse to run.
    pidfile = home / "fetchmail.pid"
    run_tool(
        [
            fetchmail,
            "--fetchmailrc",
            str(rc),
            "--idfile",
            str(ids),
            "--pidfile",
            str(pidfile),
            "--nosyslog",
            "--silent",
        ],
        env=env,
    )
    return ids


def mpop_keep(dovecot: DovecotServer, user: MailUser, home: Path) -> Path:
    """mpop fetches ``user``'s mailbox, keeping it; returns its uidls file where mpop 1.0.1
    and later keep it by default: ``~/.mpop_uidls/USER_at_HOST``."""
    mpop = peer_program("mpop", "mpop")
    uidls = home / ".mpop_uidls" / f"{user.name}_at_{HOST}"
    uidls.parent.mkdir(mode=0o700, exist_ok=True)
    rc = home / ".mpoprc"
    rc.write_text(
        f"account old\nhost {HOST}\nport {dovecot.pop3_port}\ntls off\nauth user\n"
        f"user {user.name}\npassword {user.password}\nkeep on\nonly_new on\n"
        f"uidls_file {uidls}\ndelivery mbox {home / 'mpop.mbox'}\n"
    )
    rc.chmod(0o600)
    run_tool([mpop, "--file", str(rc), "--quiet", "old"], env={**os.environ, "HOME": str(home)})
    return uidls


def getmail_keep(dovecot: DovecotServer, user: MailUser, home: Path) -> Path:
    """getmail6 fetches ``user``'s mailbox, keeping it; returns its oldmail file in ``~/.getmail``.

    As root, getmail6 (which will not deliver as root) runs as ``nobody``, and
    ``home`` and everything in it are given to ``nobody`` first: ``home``
    must be a directory of its own that ``nobody`` may reach.
    """
    getmail = peer_program("getmail", "getmail6")
    state = home / ".getmail"
    state.mkdir()
    mbox = home / "getmail.mbox"
    mbox.touch()
    rc = state / "getmailrc"
    rc.write_text(
        f"[retriever]\ntype = SimplePOP3Retriever\nserver = {HOST}\nport = {dovecot.pop3_port}\n"
        f"username = {user.name}\npassword = {user.password}\n\n"
        f"[destination]\ntype = Mboxrd\npath = {mbox}\n\n"
        "[options]\nverbose = 0\nread_all = false\ndelete = false\nmessage_log_syslog = false\n"
    )
    rc.chmod(0o600)
    options: dict[str, object] = {}
    if os.geteuid() == 0:
        nobody = pwd.getpwnam("nobody")
        for path in [home, *home.rglob("*")]:
            os.chown(path, nobody.pw_uid, nobody.pw_gid)
        options = {"user": nobody.pw_uid, "group": nobody.pw_gid}
    run_tool(
        [getmail, "--rcfile", str(rc), "--getmaildir", str(state), "--quiet"],
        env={**os.environ, "HOME": str(home)},
        **options,
    )
    (oldmail,) = state.glob("oldmail-*")
    return oldmail


def add_message(dovecot: DovecotServer, user: MailUser, message: bytes, name: str) -> None:
    """Deliver ``message`` (wire form) into ``user``'s Maildir, as a local delivery agent
    would: it sorts after the messages the user was created with."""
    maildir = dovecot.maildir(user.name)
    owner = maildir.stat()
    path = maildir / "new" / f"2000000000.{name}.aiopop-test"
    path.write_bytes(message.replace(b"\r\n", b"\n"))
    os.chown(path, owner.st_uid, owner.st_gid)
