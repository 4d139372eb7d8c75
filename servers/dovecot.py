"""A private Dovecot POP3 server for the integration tests.

:class:`DovecotServer` runs ``dovecot -F -c <conf>`` as a child process with a
configuration of its own: its own directory (config, base_dir, state, logs,
Maildirs, TLS files), listeners on loopback addresses only (127.0.0.1 and
127.0.0.2), on free high ports, for plain POP3 and for POP3S with a
certificate from a throw-away ``trustme`` CA.
Nothing from ``/etc/dovecot`` is read, and the system-wide service (if any)
is neither used nor disturbed.

What it offers (Dovecot 2.3.19, as configured here):

* ``pop3_port`` on 127.0.0.1: plain POP3 with STLS (RFC 2595), an APOP
  timestamp in the greeting, and ``SASL PLAIN LOGIN CRAM-MD5 SCRAM-SHA-1
  SCRAM-SHA-256`` in CAPA, in the clear as well as after STLS
  (``disable_plaintext_auth = no``); USER/PASS works too.
* ``pop3s_port`` on 127.0.0.1: POP3S (implicit TLS), the same mechanisms.
* ``pop3_no_stls_port`` on :data:`NO_STLS_HOST` (127.0.0.2): plain POP3 whose
  CAPA offers no STLS (``local 127.0.0.2 { ssl = no }``), for the tests of
  ``tls="starttls"``. Otherwise the same as ``pop3_port``.

The mechanisms are the constructor's ``mechanisms`` (:data:`MECHANISMS` by
default; ``apop`` is what makes Dovecot put a timestamp in its greeting).

Passwords live in a ``passwd-file`` passdb, each user stored in the scheme
of its :attr:`MailUser.scheme`, which decides what Dovecot can verify:

* ``PLAIN`` (plaintext): every method, APOP and CRAM-MD5 included;
* ``SSHA256`` (salted hash): only methods that send the password (USER/PASS,
  PLAIN, LOGIN). Dovecot still offers APOP in the greeting and SCRAM and
  CRAM-MD5 in CAPA, but must refuse them ("Requested SCRAM-SHA-256 scheme,
  but we have only SSHA256" in its log);
* ``SCRAM-SHA-256`` / ``SCRAM-SHA-1``: that SCRAM mechanism and the methods
  that send the password, not the other SCRAM, CRAM-MD5 or APOP;
* ``CRAM-MD5`` (Dovecot's HMAC-MD5 context, made by ``doveadm pw``):
  CRAM-MD5 and the methods that send the password, not SCRAM or APOP.

As root (the CI case) Dovecot's own processes run as the ``dovecot`` and
``dovenull`` users that the package creates, and mail is accessed as
``nobody``: Dovecot refuses to access mail as uid 0. As any other user the
instance runs unprivileged, as that user, without chroots.

Set ``AIOPOP_DOVECOT_KEEP=1`` to keep the instance directory (and its logs)
after the run.
"""

from __future__ import annotations

import base64
import contextlib
import grp
import hashlib
import hmac
import itertools
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import trustme

from servers.ports import free_ports, start_on_free_ports
from servers.programs import find_program

__all__ = [
    "ALICE",
    "BOB",
    "CAROL",
    "CLASSIC_MECHANISMS",
    "DAVE",
    "ERIN",
    "FRANK",
    "GRACE",
    "HOST",
    "MECHANISMS",
    "NO_STLS_HOST",
    "SCHEMES",
    "STANDARD_USERS",
    "DovecotError",
    "DovecotServer",
    "DovecotUnavailableError",
    "MailUser",
    "find_dovecot",
    "make_message",
    "password_hash",
    "scram_hash",
    "ssha256",
]

HOST = "127.0.0.1"
"""The address of the private instance's POP3 (with STLS) and POP3S listeners."""

NO_STLS_HOST = "127.0.0.2"
"""The address of its plain POP3 listener that does not offer STLS (``ssl = no`` there)."""

MECHANISMS = ("plain", "login", "cram-md5", "scram-sha-1", "scram-sha-256", "apop")
"""Dovecot's ``auth_mechanisms`` by default: every password mechanism aiopop knows."""

CLASSIC_MECHANISMS = ("plain", "login", "apop")
"""``auth_mechanisms`` of a server without SCRAM or CRAM-MD5, where APOP is the strongest."""

SCHEMES = frozenset({"PLAIN", "SSHA256", "SCRAM-SHA-1", "SCRAM-SHA-256", "CRAM-MD5"})
"""The password schemes a :class:`MailUser` can be stored with."""

_KEEP_ENV = "AIOPOP_DOVECOT_KEEP"
# base_dir holds UNIX sockets such as run/login/pop3 and run/anvil-auth-penalty;
# sun_path has room for 107 bytes, so keep the instance directory short.
_MAX_PARENT_LENGTH = 40


class DovecotError(Exception):
    """The private Dovecot instance failed; the message carries the tail of its log."""


class DovecotUnavailableError(DovecotError):
    """Dovecot cannot run here at all: binary or system users missing, and so on."""


@dataclass(frozen=True)
class MailUser:
    """A mailbox owner of the private instance.

    ``messages`` are in wire form: CRLF line ends, not dot-stuffed, each
    ending with CRLF. That is exactly what RETR must give back, and each
    message's ``len()`` is what LIST must report for it. ``scheme`` is how
    the passdb stores the password (one of :data:`SCHEMES`; see the module's
    docstring for what Dovecot can verify with each).
    """

    name: str
    password: str
    messages: tuple[bytes, ...] = ()
    scheme: str = "PLAIN"

    def __post_init__(self) -> None:
        if self.scheme not in SCHEMES:
            raise ValueError(f"unknown password scheme {self.scheme!r}: one of {sorted(SCHEMES)}")

    @property
    def plaintext_password(self) -> bool:
        """True when Dovecot holds the plaintext password (APOP works)."""
        return self.scheme == "PLAIN"

    @property
    def maildrop_size(self) -> int:
        """The total size STAT must report."""
        return sum(len(m) for m in self.messages)


@dataclass(frozen=True)
class _Identity:
    """Who Dovecot's processes run as, and who owns the Maildirs."""

    privileged: bool
    internal_user: str
    internal_group: str
    login_user: str
    mail_uid: int
    mail_gid: int


def find_dovecot() -> str | None:
    """Return the path of the ``dovecot`` binary, or ``None`` when it is not installed."""
    return find_program("dovecot", ("/usr/sbin", "/usr/local/sbin"))


def ssha256(password: str, salt: bytes | None = None) -> str:
    """Return ``password`` as a Dovecot ``{SSHA256}`` string: base64(sha256(pw + salt) + salt)."""
    salt = secrets.token_bytes(8) if salt is None else salt
    digest = hashlib.sha256(password.encode() + salt).digest()
    return "{SSHA256}" + base64.b64encode(digest + salt).decode("ascii")


def scram_hash(password: str, algorithm: str = "sha256", iterations: int = 4096) -> str:
    """Return ``password`` as Dovecot stores SCRAM credentials (RFC 5802 section 3).

    ``{SCRAM-SHA-256}iterations,salt,StoredKey,ServerKey`` (or SHA-1), each
    value base64, as ``doveadm pw -s SCRAM-SHA-256`` writes it.
    """
    salt = secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac(algorithm, password.encode(), salt, iterations)
    client_key = hmac.digest(salted, b"Client Key", algorithm)
    stored_key = hashlib.new(algorithm, client_key).digest()
    server_key = hmac.digest(salted, b"Server Key", algorithm)
    scheme = {"sha1": "SCRAM-SHA-1", "sha256": "SCRAM-SHA-256"}[algorithm]
    fields = [str(iterations)] + [
        base64.b64encode(v).decode() for v in (salt, stored_key, server_key)
    ]
    return "{" + scheme + "}" + ",".join(fields)


def _find_doveadm() -> str:
    found = find_program("doveadm", ("/usr/bin", "/usr/local/bin"))
    if found is None:
        raise DovecotUnavailableError("doveadm is not installed (it comes with dovecot-core)")
    return found


def password_hash(password: str, scheme: str) -> str:
    """``password`` in Dovecot's passdb form for ``scheme`` (one of :data:`SCHEMES`).

    CRAM-MD5 is an HMAC-MD5 context that only Dovecot's own ``doveadm pw``
    computes (run with ``-O``: no configuration read); the others are made here.
    """
    if scheme == "PLAIN":
        return "{PLAIN}" + password
    if scheme == "SSHA256":
        return ssha256(password)
    if scheme == "SCRAM-SHA-256":
        return scram_hash(password, "sha256")
    if scheme == "SCRAM-SHA-1":
        return scram_hash(password, "sha1")
    if scheme == "CRAM-MD5":
        result = subprocess.run(
            [_find_doveadm(), "-O", "pw", "-s", "CRAM-MD5", "-p", password],
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        )
        line = result.stdout.strip()
        if result.returncode != 0 or not re.fullmatch(r"\{CRAM-MD5\}[0-9a-f]{64}", line):
            raise DovecotError(f"doveadm pw -s CRAM-MD5 failed: {result.stderr.strip()!r}")
        return line
    raise ValueError(f"unknown password scheme {scheme!r}")


def _check_user_name(name: str) -> None:
    # The name is also a file name (passwd.d/NAME) and a directory (home/NAME).
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", name):
        raise ValueError(f"unusable user name for the test server: {name!r}")


def _check_password(password: str) -> None:
    if not password or not password.isascii() or not password.isprintable() or ":" in password:
        raise ValueError("unusable password for the passwd-file (printable ASCII, no ':')")


def _check_wire_message(message: bytes) -> None:
    if not message.endswith(b"\r\n"):
        raise ValueError("a test message must end with CRLF")
    bare = message.replace(b"\r\n", b"")
    if b"\r" in bare or b"\n" in bare:
        raise ValueError("a test message must use CRLF line ends only")


def _identity() -> _Identity:
    if os.geteuid() == 0:
        try:
            for user in ("dovecot", "dovenull"):
                pwd.getpwnam(user)
            grp.getgrnam("dovecot")
            nobody = pwd.getpwnam("nobody")
        except KeyError as exc:
            raise DovecotUnavailableError(
                f"system user or group missing ({exc}): the dovecot-core package "
                "creates dovecot and dovenull, and nobody must exist"
            ) from None
        return _Identity(True, "dovecot", "dovecot", "dovenull", nobody.pw_uid, nobody.pw_gid)
    me = pwd.getpwuid(os.geteuid())
    group = grp.getgrgid(os.getegid()).gr_name
    return _Identity(False, me.pw_name, group, me.pw_name, me.pw_uid, os.getegid())


def _others_can_traverse(path: Path) -> bool:
    return all(p.stat().st_mode & 0o001 for p in [path, *path.parents])


def _instance_parent(identity: _Identity) -> Path:
    """A directory for the instance: short (socket paths), traversable by the mail user.

    pytest's own temporary directories are 0700 and owned by root, so they
    will not do when mail is read as ``nobody``.
    """
    candidates = [Path(tempfile.gettempdir()), Path("/tmp")]
    for parent in candidates:
        if (
            parent.is_dir()
            and len(str(parent)) <= _MAX_PARENT_LENGTH
            and (not identity.privileged or _others_can_traverse(parent))
        ):
            return parent
    raise DovecotUnavailableError(
        "no short temporary directory that the mail user can traverse "
        f"(tried {', '.join(map(str, candidates))})"
    )


class DovecotServer:
    """A private Dovecot: POP3 and POP3S on 127.0.0.1, POP3 without STLS on 127.0.0.2.

    Use it as a context manager, or call :meth:`start` and :meth:`stop`.
    Users given to the constructor exist from the start; :meth:`add_user`
    and :meth:`new_user` add more while it runs (each user has a passwd-file
    of its own, which Dovecot opens at the user's first login).
    """

    host = HOST

    def __init__(
        self,
        users: Iterable[MailUser] = (),
        *,
        cert_names: Sequence[str] = ("localhost", HOST),
        mechanisms: Sequence[str] = MECHANISMS,
        startup_timeout: float = 20.0,
        stop_timeout: float = 10.0,
        keep: bool | None = None,
        auth_penalty: bool = False,
    ) -> None:
        self._cert_names = tuple(cert_names)
        self.auth_penalty = auth_penalty
        """Dovecot's own delays after a failed login (``auth_failure_delay`` and the
        per-address penalty), as a production server has them; off by default so
        that tests do not wait for them (benchmarks/login.py turns them on)."""
        if not mechanisms or not all(re.fullmatch(r"[a-z0-9-]+", m) for m in mechanisms):
            raise ValueError(f"unusable auth_mechanisms: {mechanisms!r}")
        self.mechanisms = tuple(mechanisms)
        """Dovecot's ``auth_mechanisms``, lower case."""
        self._startup_timeout = startup_timeout
        self._stop_timeout = stop_timeout
        self._keep = bool(os.environ.get(_KEEP_ENV)) if keep is None else keep
        self._users: dict[str, MailUser] = {}
        self._counter = itertools.count(1)
        self._proc: subprocess.Popen[bytes] | None = None
        self._root: Path | None = None
        self._identity: _Identity | None = None
        self.ca = trustme.CA()
        """The test CA that issued the server certificate (``ca.configure_trust(ctx)``)."""
        self.pop3_port = 0
        """Plain POP3 on :data:`HOST`, offering STLS."""
        self.pop3s_port = 0
        """POP3S (implicit TLS) on :data:`HOST`."""
        self.pop3_no_stls_port = 0
        """Plain POP3 on :data:`NO_STLS_HOST`, where Dovecot has no TLS and offers no STLS."""
        self.greeting = b""
        """The greeting line (without CRLF) that the readiness probe saw."""
        for user in users:
            self.add_user(user)

    # -- paths -------------------------------------------------------------------

    @property
    def root(self) -> Path:
        """The instance directory."""
        if self._root is None:
            raise DovecotError("the server has not been started")
        return self._root

    @property
    def config_path(self) -> Path:
        """The generated ``dovecot.conf``."""
        return self.root / "etc" / "dovecot.conf"

    @property
    def passwd_dir(self) -> Path:
        """The passwd-file passdb: one file per user, named after the user."""
        return self.root / "etc" / "passwd.d"

    @property
    def log_path(self) -> Path:
        """Dovecot's error log (``log_path``)."""
        return self.root / "log" / "dovecot.log"

    @property
    def info_log_path(self) -> Path:
        """Dovecot's info log (``info_log_path``): logins, logouts, auth failures."""
        return self.root / "log" / "dovecot-info.log"

    @property
    def stderr_path(self) -> Path:
        """What the master wrote to stdout and stderr before its own log was set up."""
        return self.root / "log" / "dovecot-stderr.log"

    @property
    def ca_pem_path(self) -> Path:
        """The test CA's certificate in PEM, for ``cafile=`` arguments."""
        return self.root / "tls" / "ca.pem"

    def maildir(self, user: str) -> Path:
        """The Maildir of ``user``."""
        return self.root / "home" / user / "Maildir"

    def ssl_context(self) -> ssl.SSLContext:
        """A client context that trusts only the test CA and checks host names."""
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(self.ca_pem_path))
        return ctx

    # -- users -------------------------------------------------------------------

    @property
    def users(self) -> dict[str, MailUser]:
        """The users in the passdb, by name."""
        return dict(self._users)

    def add_user(self, user: MailUser) -> MailUser:
        """Create or replace ``user``: passdb entry, and a new Maildir holding its messages.

        Replacing a user whose session is still open, or changing a password,
        is not reliable: Dovecot re-reads a passwd-file at most once a second.
        """
        _check_user_name(user.name)
        _check_password(user.password)
        for message in user.messages:
            _check_wire_message(message)
        self._users[user.name] = user
        if self._root is not None:
            self._write_maildir(user)
            self._write_passwd(user)
        return user

    def new_user(self, messages: Iterable[bytes] = (), *, prefix: str = "scratch") -> MailUser:
        """A user with a fresh name and mailbox, for a test that changes mail."""
        name = f"{prefix}{next(self._counter)}"
        return self.add_user(MailUser(name, f"{name}-secret", tuple(messages)))

    def set_mailbox(self, name: str, messages: Iterable[bytes]) -> MailUser:
        """Replace ``name``'s Maildir, Dovecot's index and uidlist included.

        No session of that user may be open, nor closing, meanwhile; a
        :meth:`new_user` per test avoids that question.
        """
        old = self._users[name]
        return self.add_user(MailUser(old.name, old.password, tuple(messages), old.scheme))

    def _write_passwd(self, user: MailUser) -> None:
        secret = password_hash(user.password, user.scheme)
        # One file per user: Dovecot stats a passwd-file at most once a second,
        # so a user added to a shared file could stay unknown for that long.
        path = self.passwd_dir / user.name
        tmp = path.with_name(f".{user.name}.tmp")
        tmp.write_text(f"{user.name}:{secret}::::::\n", encoding="ascii")
        tmp.chmod(0o600)
        self._chown_internal(tmp)
        tmp.replace(path)

    def _write_maildir(self, user: MailUser) -> None:
        home = self.root / "home" / user.name
        shutil.rmtree(home, ignore_errors=True)
        maildir = home / "Maildir"
        for sub in ("cur", "new", "tmp"):
            (maildir / sub).mkdir(parents=True)
        for index, message in enumerate(user.messages, start=1):
            # Dovecot numbers new mail in the order of the time stamps that
            # start the file names. Stored with LF line ends, as a local
            # delivery agent would; Dovecot sends CRLF.
            name = f"{1_000_000_000 + index}.M{index}P{os.getpid()}.aiopop-test:2,"
            (maildir / "cur" / name).write_bytes(message.replace(b"\r\n", b"\n"))
        identity = self._require_identity()
        for path in [home, *home.rglob("*")]:
            os.chown(path, identity.mail_uid, identity.mail_gid)
            path.chmod(0o700 if path.is_dir() else 0o600)

    # -- lifecycle ---------------------------------------------------------------

    def start(self) -> None:
        """Create the instance directory, start Dovecot and wait until it answers.

        Raises :class:`DovecotUnavailableError` when Dovecot cannot run here,
        :class:`DovecotError` (with the log's tail) when it fails to start.
        """
        if self._proc is not None:
            raise DovecotError("already started")
        binary = find_dovecot()
        if binary is None:
            raise DovecotUnavailableError("dovecot is not installed (scripts/install-dovecot.sh)")
        self._identity = _identity()
        parent = _instance_parent(self._identity)
        self._root = Path(tempfile.mkdtemp(prefix="aiopop-dovecot-", dir=parent))

        def attempt() -> None:
            self.pop3_port, self.pop3s_port, self.pop3_no_stls_port = free_ports(
                HOST, HOST, NO_STLS_HOST
            )
            self.config_path.write_text(self._config(), encoding="ascii")
            self._spawn(binary)
            self._wait_ready()

        try:
            self._prepare()
            start_on_free_ports(
                attempt, failure=DovecotError, log_tail=self.log_tail, terminate=self._terminate
            )
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop Dovecot (SIGTERM; SIGKILL to its process group on timeout), remove its files."""
        self._terminate()
        if self._root is not None and not self._keep:
            shutil.rmtree(self._root, ignore_errors=True)
            self._root = None

    def __enter__(self) -> DovecotServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines of each of Dovecot's logs, for error messages."""
        if self._root is None:
            return "(no instance directory)"
        parts = []
        for path in (self.stderr_path, self.log_path, self.info_log_path):
            if path.exists():
                text = path.read_text(encoding="utf-8", errors="replace").splitlines()
                if text:
                    parts.append(f"--- {path}\n" + "\n".join(text[-lines:]))
        return "\n".join(parts) or "(Dovecot logged nothing)"

    def _require_identity(self) -> _Identity:
        if self._identity is None:
            raise DovecotError("the server has not been started")
        return self._identity

    def _chown_internal(self, path: Path) -> None:
        identity = self._require_identity()
        if identity.privileged:
            shutil.chown(path, identity.internal_user, identity.internal_group)

    def _prepare(self) -> None:
        root = self.root
        # Mail is read as an unprivileged user, which must reach home/*/Maildir.
        root.chmod(0o755)
        (root / "home").mkdir(mode=0o755)
        for sub in ("tls", "log", "state"):
            (root / sub).mkdir(mode=0o700)
        # The auth process (internal user) opens etc/passwd.d/NAME, each 0600.
        (root / "etc").mkdir(mode=0o711)
        self.passwd_dir.mkdir(mode=0o711)
        self.ca.cert_pem.write_to_path(str(self.ca_pem_path))
        cert = self.ca.issue_cert(*self._cert_names)
        (root / "tls" / "server-chain.pem").write_bytes(
            b"".join(blob.bytes() for blob in cert.cert_chain_pems)
        )
        key = root / "tls" / "server-key.pem"
        cert.private_key_pem.write_to_path(str(key))
        key.chmod(0o600)
        for user in self._users.values():
            self._write_maildir(user)
            self._write_passwd(user)

    def _config(self) -> str:
        identity = self._require_identity()
        root = self.root
        uid, gid = identity.mail_uid, identity.mail_gid
        lines = [
            "# Generated by servers/dovecot.py for one test run. Includes nothing system-wide.",
            "protocols = pop3",
            f"listen = {HOST}",
            f"base_dir = {root}/run",
            f"state_dir = {root}/state",
            f"instance_name = aiopop-test-{root.name}",
            "login_greeting = aiopop test server ready.",
            f"log_path = {self.log_path}",
            f"info_log_path = {self.info_log_path}",
            "auth_verbose = yes",
            # apop makes pop3-login put a timestamp in its greeting; the SASL
            # mechanisms are offered in CAPA, in the clear too (see below).
            f"auth_mechanisms = {' '.join(self.mechanisms)}",
            "disable_plaintext_auth = no",
            *([] if self.auth_penalty else ["auth_failure_delay = 0"]),
            "ssl = yes",
            f"ssl_cert = <{root}/tls/server-chain.pem",
            f"ssl_key = <{root}/tls/server-key.pem",
            "ssl_min_protocol = TLSv1.2",
            f"default_internal_user = {identity.internal_user}",
            f"default_internal_group = {identity.internal_group}",
            f"default_login_user = {identity.login_user}",
            "mail_location = maildir:~/Maildir",
            f"first_valid_uid = {uid}",
            f"last_valid_uid = {uid}",
            f"first_valid_gid = {gid}",
            f"last_valid_gid = {gid}",
            "passdb {",
            "  driver = passwd-file",
            f"  args = scheme=PLAIN username_format=%u {self.passwd_dir}/%u",
            "}",
            "userdb {",
            "  driver = static",
            f"  args = uid={uid} gid={gid} home={root}/home/%u",
            "}",
            "service pop3-login {",
            "  inet_listener pop3 {",
            f"    address = {HOST}",
            f"    port = {self.pop3_port}",
            "  }",
            "  inet_listener pop3s {",
            f"    address = {HOST}",
            f"    port = {self.pop3s_port}",
            "    ssl = yes",
            "  }",
            "  inet_listener pop3-no-stls {",
            f"    address = {NO_STLS_HOST}",
            f"    port = {self.pop3_no_stls_port}",
            "  }",
            "}",
            # Connections to this address get no TLS at all: pop3-login looks
            # its settings up by local address, and without ssl it offers no STLS.
            f"local {NO_STLS_HOST} {{",
            "  ssl = no",
            "}",
        ]
        # Without this, anvil's auth penalty would slow each login from
        # 127.0.0.1 by up to 15 s after a few failed ones. Mode 0: auth cannot
        # connect to the socket, which disables the penalty.
        lines += ["service anvil {"]
        if not self.auth_penalty:
            lines += ["  unix_listener anvil-auth-penalty {", "    mode = 0", "  }"]
        if identity.privileged:
            lines.append("}")
        else:
            # chroot() needs root; these are the services that chroot by default.
            lines += ["  chroot =", "}"]
            for service in (
                "aggregator",
                "director",
                "imap-login",
                "imap-urlauth-login",
                "ipc",
                "old-stats",
                "pop3-login",
                "submission-login",
            ):
                lines += [f"service {service} {{", "  chroot =", "}"]
        return "\n".join(lines) + "\n"

    def _spawn(self, binary: str) -> None:
        with self.stderr_path.open("ab") as err:
            self._proc = subprocess.Popen(
                [binary, "-F", "-c", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=err,
                stderr=err,
                # A process group of its own, so that a master that will not
                # stop can be killed together with its children.
                start_new_session=True,
            )

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self._startup_timeout
        problem = "no answer"
        while time.monotonic() < deadline:
            proc = self._proc
            if proc is None or proc.poll() is not None:
                code = None if proc is None else proc.returncode
                raise DovecotError(f"dovecot exited with status {code}\n{self.log_tail()}")
            try:
                self.greeting = self._probe_greeting(HOST, self.pop3_port)
                self._probe_greeting(NO_STLS_HOST, self.pop3_no_stls_port)
                with socket.create_connection((HOST, self.pop3s_port), timeout=1.0):
                    pass
                return
            except OSError as exc:
                problem = str(exc)
            time.sleep(0.05)
        raise DovecotError(
            f"dovecot did not answer on {HOST}:{self.pop3_port} within "
            f"{self._startup_timeout} s ({problem})\n{self.log_tail()}"
        )

    @staticmethod
    def _probe_greeting(host: str, port: int) -> bytes:
        with socket.create_connection((host, port), timeout=2.0) as sock:
            data = b""
            while not data.endswith(b"\r\n") and len(data) < 1024:
                chunk = sock.recv(1024)
                if not chunk:
                    break
                data += chunk
            sock.sendall(b"QUIT\r\n")
        if not data.startswith(b"+OK"):
            raise OSError(f"unexpected greeting {data!r}")
        return data.rstrip(b"\r\n")

    def _terminate(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=self._stop_timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


# -- the standard mailboxes ------------------------------------------------------


def make_message(
    subject: str, body: Sequence[str | bytes], *, headers: Sequence[str] = ()
) -> bytes:
    """A message in wire form: a few headers, ``headers``, a blank line, then ``body``'s lines."""
    head = [
        "From: Test Sender <sender@example.test>",
        "To: recipient@example.test",
        f"Subject: {subject}",
        "Date: Tue, 01 Apr 2025 12:00:00 +0000",
        *headers,
    ]
    lines = [h.encode("ascii") for h in head] + [b""]
    lines += [line.encode("utf-8") if isinstance(line, str) else line for line in body]
    return b"\r\n".join(lines) + b"\r\n"


def _big_body(target_size: int) -> list[str]:
    lines = []
    size = 0
    for number in itertools.count(1):
        line = f"{number:06d} " + "abcdefghijklmnopqrstuvwxyz0123456789" * 2
        lines.append(line)
        size += len(line) + 2
        if size >= target_size:
            return lines
    raise AssertionError("unreachable")


ALICE = MailUser(
    "alice",
    "alice-Secret-1",
    (
        make_message("hello", ["Hello Alice,", "", "this is the first message."]),
        # Lines a POP3 server must dot-stuff, ending with a line that is just
        # ".", which on the wire comes right before the terminating ".".
        make_message(
            "dots",
            [
                ".leading dot",
                "..two leading dots",
                ".",
                "...",
                " . not a terminator",
                "ends with a dot.",
                ".\t.",
                ".",
            ],
        ),
        make_message(
            "for TOP",
            [f"body line {n:02d}" for n in range(1, 31)],
            headers=["X-Folded: first part of a folded header", "\tsecond part of it"],
        ),
        make_message(
            "8-bit",
            [
                "Gr\u00fc\u00dfe, \u0410\u043b\u0438\u0441\u0430 \u2603",
                "",
                "a long line: " + "x" * 2000,
                "tab\tseparated",
                "",
            ],
            headers=[
                "MIME-Version: 1.0",
                "Content-Type: text/plain; charset=utf-8",
                "Content-Transfer-Encoding: 8bit",
            ],
        ),
        make_message("big", _big_body(300_000)),
        make_message("last", ["the last message"]),
    ),
)
"""Plaintext password, so APOP works; six messages, all within poplib's 2048-byte lines."""

BOB = MailUser("bob", "bob-Secret-2")
"""An empty mailbox."""

CAROL = MailUser(
    "carol",
    "carol-Secret-3",
    (make_message("for carol", ["only one message"]),),
    scheme="SSHA256",
)
"""Password stored as {SSHA256}: Dovecot offers APOP, SCRAM and CRAM-MD5 but refuses them for
her; USER/PASS, PLAIN and LOGIN work."""

DAVE = MailUser(
    "dave",
    "dave-Secret-4",
    (make_message("long lines", ["short", "L" * 10_000, "short again", "M" * 200_000, "end"]),),
)
"""A message with a 10 kB and a 200 kB line: beyond poplib's 2048-byte cap."""

ERIN = MailUser(
    "erin",
    "erin-Secret-5",
    (make_message("for erin", ["stored as SCRAM-SHA-256"]),),
    scheme="SCRAM-SHA-256",
)
"""Password stored as {SCRAM-SHA-256}: SCRAM-SHA-256 works, SCRAM-SHA-1, CRAM-MD5 and APOP not."""

FRANK = MailUser(
    "frank",
    "frank-Secret-6",
    (make_message("for frank", ["stored as SCRAM-SHA-1"]),),
    scheme="SCRAM-SHA-1",
)
"""Password stored as {SCRAM-SHA-1}: SCRAM-SHA-1 works, SCRAM-SHA-256, CRAM-MD5 and APOP not."""

GRACE = MailUser(
    "grace",
    "grace-Secret-7",
    (make_message("for grace", ["stored as CRAM-MD5"]),),
    scheme="CRAM-MD5",
)
"""Password stored as {CRAM-MD5}: CRAM-MD5 works, neither SCRAM nor APOP."""

STANDARD_USERS = (ALICE, BOB, CAROL, DAVE, ERIN, FRANK, GRACE)
"""The users the ``dovecot`` fixture starts with. Tests must not change their mail."""
