"""Switching to aiopop from the real fetchmail, getmail6 and mpop, against the private Dovecot.

Each tool fetches a fresh mailbox once in keep mode (its own configuration
in a temporary directory, its own state file, no home-directory file
touched, loopback only); ``aiopop import-state`` reads its state file;
``aiopop fetch --new-only`` must then fetch nothing, and fetch a message
added to the mailbox afterwards; with ``--delete`` it deletes that one
only, never a message the old tool delivered. The tools are those of
scripts/install-peers.sh: a missing one skips its test, except on CI
(``CI=true``) where that is a failure.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from aiopop._delivery_state import STATE_FILE
from servers.dovecot import HOST, DovecotServer, MailUser, make_message

pytestmark = pytest.mark.dovecot

PASSWORD_ENV = "AIOPOP_IMPORT_TEST_PASSWORD"
TIMEOUT = 60


def _program(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        reason = (
            f"{name} is not installed (Debian package {package}: bash scripts/install-peers.sh)"
        )
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI needs the peer tools: {reason}", pytrace=False)
        pytest.skip(reason)
    return path


@pytest.fixture
def workdir() -> Iterator[Path]:
    """A private directory that the unprivileged user getmail6 runs as may use."""
    directory = Path(tempfile.mkdtemp(prefix="aiopop-import-"))
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _mailbox(dovecot: DovecotServer) -> MailUser:
    return dovecot.new_user(
        [make_message(f"message {n}", [f"body {n}"]) for n in range(1, 4)], prefix="import"
    )


def _add_message(dovecot: DovecotServer, user: MailUser, name: str) -> None:
    """Deliver one more message into ``user``'s Maildir, as a local delivery agent would."""
    maildir = dovecot.maildir(user.name)
    owner = maildir.stat()
    path = maildir / "new" / f"2000000000.{name}.aiopop-test"
    path.write_bytes(make_message(name, ["added after the import"]).replace(b"\r\n", b"\n"))
    os.chown(path, owner.st_uid, owner.st_gid)


def _run(argv: list[str], *, env: dict[str, str] | None = None, **options: object) -> None:
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


def _aiopop(*args: str, password: str = "") -> dict[str, object]:
    env = {**os.environ, PASSWORD_ENV: password}
    done = subprocess.run(
        [sys.executable, "-m", "aiopop", *args, "--json"],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout)
    return result


def _import_then_fetch(
    dovecot: DovecotServer, user: MailUser, tool: str, state: Path, workdir: Path
) -> None:
    port = str(dovecot.pop3_port)
    maildir = workdir / "Maildir"
    imported = _aiopop(
        "import-state", tool, str(state), HOST, user.name, "--port", port, "--maildir", str(maildir)
    )
    assert (imported["imported"], imported["skipped"]) == (3, 0), imported
    assert (maildir / STATE_FILE).exists()
    fetch = [
        "fetch", HOST, user.name, "--port", port, "--tls", "none", "--allow-cleartext",
        "--password-env", PASSWORD_ENV, "--maildir", str(maildir), "--new-only",
    ]  # fmt: skip
    first = _aiopop(*fetch, password=user.password)
    assert (first["fetched"], first["skipped"]) == ([], 3), first
    _add_message(dovecot, user, f"after-{tool}")
    second = _aiopop(*fetch, password=user.password)
    fetched = second["fetched"]
    assert isinstance(fetched, list)
    assert (len(fetched), second["skipped"]) == (1, 3), second
    assert (
        b"Subject: after-" + tool.encode() in Path(maildir, "new", fetched[0]["file"]).read_bytes()
    )


def test_switching_from_fetchmail(dovecot: DovecotServer, workdir: Path) -> None:
    fetchmail = _program("fetchmail", "fetchmail")
    user = _mailbox(dovecot)
    rc = workdir / "fetchmailrc"
    rc.write_text(
        "set no bouncemail\nset no syslog\n"
        f"poll {HOST} protocol pop3 port {dovecot.pop3_port} auth password\n"
        f'  user "{user.name}" there with password "{user.password}" is root here\n'
        "  keep no fetchall no rewrite\n  fetchsizelimit 0\n  sslproto ''\n"
        "  mda \"/bin/sh -c 'cat >/dev/null'\"\n"
    )
    rc.chmod(0o600)
    ids = workdir / "fetchids"
    env = {**os.environ, "HOME": str(workdir), "FETCHMAILHOME": str(workdir)}
    _run(
        [
            fetchmail,
            "--fetchmailrc",
            str(rc),
            "--idfile",
            str(ids),
            "--pidfile",
            str(workdir / "fetchmail.pid"),
            "--nosyslog",
            "--silent",
        ],
        env=env,
    )
    assert ids.read_text().count(f"{user.name}@{HOST} ") == 3
    _import_then_fetch(dovecot, user, "fetchmail", ids, workdir)


def test_switching_from_mpop(dovecot: DovecotServer, workdir: Path) -> None:
    mpop = _program("mpop", "mpop")
    user = _mailbox(dovecot)
    uidls = workdir / "mpop_uidls"
    rc = workdir / "mpoprc"
    rc.write_text(
        f"account old\nhost {HOST}\nport {dovecot.pop3_port}\ntls off\nauth user\n"
        f"user {user.name}\npassword {user.password}\nkeep on\nonly_new on\n"
        f"uidls_file {uidls}\ndelivery mbox {workdir / 'mpop.mbox'}\n"
    )
    rc.chmod(0o600)
    _run([mpop, "--file", str(rc), "--quiet", "old"], env={**os.environ, "HOME": str(workdir)})
    assert uidls.read_bytes().startswith(b"# This file was generated by mpop version ")
    _import_then_fetch(dovecot, user, "mpop", uidls, workdir)


def test_switching_from_getmail(dovecot: DovecotServer, workdir: Path) -> None:
    getmail = _program("getmail", "getmail6")
    user = _mailbox(dovecot)
    state = workdir / "getmail"
    state.mkdir()
    mbox = workdir / "getmail.mbox"
    mbox.touch()
    rc = workdir / "getmailrc"
    rc.write_text(
        f"[retriever]\ntype = SimplePOP3Retriever\nserver = {HOST}\nport = {dovecot.pop3_port}\n"
        f"username = {user.name}\npassword = {user.password}\n\n"
        f"[destination]\ntype = Mboxrd\npath = {mbox}\n\n"
        "[options]\nverbose = 0\nread_all = false\ndelete = false\nmessage_log_syslog = false\n"
    )
    rc.chmod(0o600)
    options: dict[str, object] = {}
    if os.geteuid() == 0:  # getmail6 will not deliver as root: run it as nobody
        nobody = pwd.getpwnam("nobody")
        for path in [workdir, *workdir.rglob("*")]:
            os.chown(path, nobody.pw_uid, nobody.pw_gid)
        options = {"user": nobody.pw_uid, "group": nobody.pw_gid}
    _run(
        [getmail, "--rcfile", str(rc), "--getmaildir", str(state), "--quiet"],
        env={**os.environ, "HOME": str(workdir)},
        **options,
    )
    (oldmail,) = state.glob("oldmail-*")
    assert oldmail.name == f"oldmail-{HOST}-{dovecot.pop3_port}-{user.name}"
    _import_then_fetch(dovecot, user, "getmail", oldmail, workdir)
