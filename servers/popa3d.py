"""A real POP3 server that neither pipelines nor corks its replies: popa3d on 127.0.0.1.

Why this exists: a server that writes each reply with several ``write()``
calls and leaves Nagle's algorithm on holds the last, short TCP segment of a
RETR reply back until the client ACKs what is in flight. A client that reads
and then sends the next command only after the whole reply has arrived does
not ACK at once: Linux delays that ACK (up to about 40 ms on loopback). So
such a client pays one delayed-ACK timeout per message, unless it re-arms
``TCP_QUICKACK`` before every read. The private Dovecot of ``servers/dovecot.py``
does not show this; popa3d does.

:class:`NoCorkServer` runs Debian's ``popa3d`` (1.0.3) without installing it
and without changing the host:

1. ``apt-get download popa3d`` into a cache directory (``.cache/popa3d/``
   in the repository, made git-ignored by a ``.gitignore`` inside it; or
   ``cache_dir``), then ``dpkg -x`` into that cache. The package conflicts
   with ``dovecot-pop3d`` and is therefore never installed with ``dpkg -i``.
2. A private instance directory gets its own ``passwd``, ``group``,
   ``shadow`` (one mail user with a SHA-512 crypt hash, made by the system's
   own ``libcrypt``, and the ``popa3d`` user that popa3d drops to before
   authentication), ``nsswitch.conf`` (files only), a ``pam.d`` holding only
   ``popa3d`` (``pam_unix`` for auth and account) and ``other`` (deny), a
   mail spool with the user's mbox, and an empty ``/var/lib/popa3d``
   (popa3d's chroot for its unprivileged half).
3. ``unshare --mount --propagation private`` starts this file again as a
   small inetd, in a new mount namespace. There, and only there, it
   bind-mounts those files and directories over ``/etc/passwd``,
   ``/etc/group``, ``/etc/shadow``, ``/etc/nsswitch.conf``, ``/etc/pam.d``,
   ``/var/mail`` and ``/var/lib/popa3d`` (over ``/var/lib`` when that
   directory does not exist, since a mount point cannot be created without
   writing to the host), and over ``/run/nscd`` when it exists. It refuses
   to mount anything unless its mount namespace differs from its parent's.
4. The inetd accepts on a listening socket that the parent bound to
   127.0.0.1 on a free port (and passed down), and for each connection runs
   ``popa3d`` (inetd mode: the connection is its stdin and stdout). The
   accepted sockets keep the kernel's defaults: Nagle on, no cork.

When the namespace's last process ends, its mounts go with it. The inetd
also stops when its standard input (a pipe from the parent) reaches end of
file, so it does not outlive a parent that died. Set
``AIOPOP_NOCORK_KEEP=1`` to keep the instance directory (popa3d's stderr is
in ``popa3d.log`` there; popa3d's own log goes to syslog, which is absent
in the namespace).

What popa3d does to a mailbox, as found with this harness:

- it adds no header and changes none (no ``Status:``, no ``X-UIDL:``);
- it sends the mbox with LF turned into CRLF and lines starting with ``.``
  dot-stuffed; it removes the From_ line and the blank line that ends each
  message in the mbox; LIST and STAT count the CRLF form, unstuffed;
- it does not undo mbox quoting: a line that starts with ``From `` is
  written to the mbox as ``>From `` (so popa3d cannot take it for the start
  of a message) and RETR returns it as ``>From ``;
- a message that has no empty line (no header/body separator) comes back
  with one more CRLF: popa3d takes the mbox's blank line after it for the
  end of its header. :func:`expected_retr` gives what RETR returns for a
  message: the message itself unless a line starts with ``From `` or it
  has no empty line;
- its UIDL is a digest of a few headers (the binary names ``Received:``,
  ``Delivered-To:``, ``Date:``, ``Message-ID:`` and ``X-Delivery-ID:``;
  ``Date:``, ``Received:`` and ``Message-ID:`` were seen to change it),
  not of the From_ line or the body: messages without any of them share a
  UIDL. :func:`make_messages` gives each its own ``Message-ID:``;
- the greeting is a bare ``+OK`` (no APOP timestamp), and so is every
  positive status line that carries no numbers (USER, PASS, RETR, TOP,
  UIDL and LIST without argument, DELE, RSET, NOOP, QUIT); STAT, LIST n,
  UIDL n and LAST say ``+OK 5 138``, ``+OK 1 43``, ``+OK 1 04ebb448c0d7a0bc``,
  ``+OK 2``. Errors are a bare ``-ERR``, except a failed login. CAPA,
  APOP, AUTH and STLS get ``-ERR`` in either state. It supports USER,
  PASS, QUIT, NOOP, STAT, LIST, UIDL, RETR, TOP, DELE, RSET and LAST;
- a second session can log in while one is open; QUIT after DELE
  rewrites the mbox, and a session whose mailbox another session changed
  meanwhile is closed at QUIT without a reply.
  :meth:`NoCorkServer.reset_mailbox` writes the original mbox back;
- a failed login is answered ``-ERR Authentication failed (bad password?)``
  (for unknown users too). ``pam_unix`` runs with ``nodelay`` here, so that
  takes milliseconds, not PAM's usual 1 to 2 seconds.

It needs root (popa3d refuses to start otherwise, and so does
``unshare --mount``), Linux, ``apt-get`` and ``dpkg`` (and network access to
Debian's archive the first time), ``unshare`` and ``mount`` from
util-linux, PAM's ``pam_unix`` and ``libcrypt``. :class:`NoCorkServerUnavailableError`
says which of these is missing.

Run this file as a module to show the premise on this machine: it starts
the server with 100 messages of 8 KB and times, alternating, stdlib
``poplib`` and a raw blocking socket without and with ``TCP_QUICKACK``::

    .venv/bin/python -m servers.popa3d [--messages 100] [--size 8192] [--rounds 3]
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import ctypes.util
import grp
import io
import json
import os
import platform
import poplib
import pwd
import re
import secrets
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

__all__ = [
    "HOST",
    "NoCorkServer",
    "NoCorkServerError",
    "NoCorkServerUnavailableError",
    "expected_retr",
    "make_messages",
    "mbox_from_messages",
]

HOST = "127.0.0.1"
"""The only address the server listens on, and the only one this module connects to."""

PACKAGE = "popa3d"
"""The Debian package that holds the server."""

EXPECTED_UPSTREAM_VERSION = "1.0.3"
"""The version this harness was written against; another one is used but reported."""

POPA3D_IN_PACKAGE = Path("usr/sbin/popa3d")
TERMINATOR = b"\r\n.\r\n"
TIMEOUT = 60.0
"""Seconds any one socket operation of this module may take, so a stuck run ends by itself."""
START_TIMEOUT = 30.0
"""Seconds the inetd may take to set its namespace up and report that it is ready."""
READY = b"READY\n"
KEEP_ENV = "AIOPOP_NOCORK_KEEP"
INETD_FLAG = "--run-inetd"
"""The hidden command line of the inetd half; not for people."""

_REPOSITORY = Path(__file__).resolve().parent.parent
_DEFAULT_CACHE = _REPOSITORY / ".cache" / "popa3d"
_UID_SEARCH = range(64000, 60000, -1)
_SALT_ALPHABET = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_MBOX_DATE = "Thu Jan  1 00:00:00 2026"
_ANY_FROM_LINE = re.compile(rb"^From ", re.MULTILINE)
_OPTIONAL_TARGETS = frozenset({"/etc/nsswitch.conf", "/run/nscd", "/var/run/nscd"})
"""Mount targets that may be missing: glibc then reads files only, and there is no nscd."""


class NoCorkServerError(Exception):
    """The server failed to start or misbehaved; the message carries the reason."""


class NoCorkServerUnavailableError(NoCorkServerError):
    """The server cannot run on this machine at all: not root, no apt, namespaces refused, ..."""


# -- messages and the mbox ---------------------------------------------------------------


def _check_wire_message(message: bytes) -> None:
    if not message.endswith(b"\r\n"):
        raise ValueError("a message must end with CRLF")
    bare = message.replace(b"\r\n", b"")
    if b"\r" in bare or b"\n" in bare:
        raise ValueError("a message must use CRLF line ends only")


def expected_retr(message: bytes) -> bytes:
    """Return what popa3d's RETR gives back (unstuffed) for ``message`` in wire form.

    That is the message itself, except that

    - each line starting with ``From `` starts with ``>From ``: the mbox has
      to quote such lines and popa3d does not unquote them;
    - a message without an empty line (all header, no header/body
      separator) gets one more CRLF at its end: popa3d keeps the blank line
      that ends the message in the mbox as the end of the header.
    """
    _check_wire_message(message)
    quoted = _ANY_FROM_LINE.sub(b">From ", message)
    if not quoted.startswith(b"\r\n") and b"\r\n\r\n" not in quoted:
        quoted += b"\r\n"
    return quoted


def mbox_from_messages(messages: Sequence[bytes], sender: str = "bench@localhost") -> bytes:
    """Return an mbox holding ``messages`` (wire form: CRLF line ends, not dot-stuffed).

    Each message gets a From_ line, its line ends become LF, lines starting
    with ``From `` are quoted as ``>From `` and a blank line ends it.
    """
    if not re.fullmatch(r"[!-~]+", sender):
        raise ValueError(f"unusable envelope sender: {sender!r}")
    parts = []
    for message in messages:
        _check_wire_message(message)
        body = _ANY_FROM_LINE.sub(b">From ", message).replace(b"\r\n", b"\n")
        parts.append(b"From %s %s\n%s\n" % (sender.encode("ascii"), _MBOX_DATE.encode(), body))
    return b"".join(parts)


def make_messages(count: int, size: int) -> list[bytes]:
    """Return ``count`` distinct messages of exactly ``size`` octets in wire form.

    Each has its own ``Message-ID`` (so popa3d's UIDLs differ), lines of at
    most 80 octets, and a line starting with ``.`` so that the server must
    dot-stuff; none starts with ``From ``, so RETR returns them unchanged.
    """
    messages = []
    for number in range(1, count + 1):
        head = (
            b"From: bench <bench@localhost>\r\n"
            b"To: bench <bench@localhost>\r\n"
            b"Subject: no-cork benchmark message %d\r\n"
            b"Message-ID: <nocork-%d@localhost>\r\n"
            b"\r\n"
            b".a line that the server must dot-stuff\r\n" % (number, number)
        )
        room = size - len(head)
        if room < 2:
            raise ValueError(f"size {size} is too small: at least {len(head) + 2} octets")
        lines = []
        while room > 0:
            take = min(80, room)
            if room - take == 1:  # a lone CRLF needs 2 octets: leave them for the last line
                take -= 1
            lines.append(b"x" * (take - 2) + b"\r\n")
            room -= take
        message = head + b"".join(lines)
        assert len(message) == size
        messages.append(message)
    return messages


# -- getting popa3d -----------------------------------------------------------------------


def _run(command: Sequence[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(command), cwd=cwd, capture_output=True, text=True, check=False, timeout=600
    )


def _require(tool: str, why: str) -> str:
    found = shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/sbin:/usr/bin:/bin")
    if not found:
        raise NoCorkServerUnavailableError(f"{tool} not found: {why}")
    return found


def _download_deb(cache_dir: Path) -> Path:
    """Return the cached popa3d .deb, fetching it with ``apt-get download`` when missing."""
    existing = sorted(cache_dir.glob(f"{PACKAGE}_*.deb"))
    if existing:
        return existing[-1]
    apt_get = _require("apt-get", "popa3d comes from Debian's archive")
    command = [apt_get, "-o", "APT::Sandbox::User=root", "download", PACKAGE]
    result = _run(command, cwd=cache_dir)
    if result.returncode != 0:
        # A fresh machine may have no package lists yet: update them once and retry.
        update = _run([apt_get, "update"])
        if update.returncode != 0:
            raise NoCorkServerUnavailableError(f"apt-get update failed: {update.stderr.strip()}")
        result = _run(command, cwd=cache_dir)
    if result.returncode != 0:
        raise NoCorkServerUnavailableError(
            f"apt-get download {PACKAGE} failed: {result.stderr.strip() or result.stdout}"
        )
    downloaded = sorted(cache_dir.glob(f"{PACKAGE}_*.deb"))
    if not downloaded:
        raise NoCorkServerError(f"apt-get download {PACKAGE} left no .deb in {cache_dir}")
    return downloaded[-1]


def _unpack(deb: Path, cache_dir: Path) -> tuple[Path, str]:
    """Unpack ``deb`` once into the cache; return the popa3d binary and the package version."""
    dpkg_deb = _require("dpkg-deb", "it reads the .deb")
    dpkg = _require("dpkg", "it unpacks the .deb")
    field = _run([dpkg_deb, "--field", str(deb), "Version"])
    version = field.stdout.strip()
    if field.returncode != 0 or not re.fullmatch(r"[0-9A-Za-z.+~:-]+", version):
        raise NoCorkServerError(f"{deb} has no usable Version field: {field.stderr.strip()}")
    root = cache_dir / f"root-{version.replace(':', '_')}"
    binary = root / POPA3D_IN_PACKAGE
    if not binary.is_file():
        staging = Path(tempfile.mkdtemp(prefix="unpack-", dir=cache_dir))
        try:
            unpacked = _run([dpkg, "-x", str(deb), str(staging)])
            if unpacked.returncode != 0 or not (staging / POPA3D_IN_PACKAGE).is_file():
                raise NoCorkServerError(f"dpkg -x {deb} failed: {unpacked.stderr.strip()}")
            shutil.rmtree(root, ignore_errors=True)
            staging.rename(root)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return binary, version


def fetch_popa3d(cache_dir: Path | None = None) -> tuple[Path, str]:
    """Return the path of an unpacked ``popa3d`` binary and its Debian package version.

    The .deb is downloaded once into ``cache_dir`` (default
    ``<repository>/.cache/popa3d``) and unpacked there; nothing is installed.
    """
    cache = _DEFAULT_CACHE if cache_dir is None else cache_dir
    cache.mkdir(parents=True, exist_ok=True)
    if cache == _DEFAULT_CACHE:
        ignore = cache.parent / ".gitignore"
        if not ignore.exists():
            ignore.write_text(
                "# Downloads and unpacked tools of the benchmarks: never commit.\n*\n"
            )
    return _unpack(_download_deb(cache), cache)


# -- the private system files -------------------------------------------------------------


def sha512_crypt(password: str) -> str:
    """Return ``password`` hashed as ``$6$salt$...`` by the system's own ``crypt(3)``.

    That is the library ``pam_unix`` checks passwords with. The stdlib
    ``crypt`` module is deprecated and gone in Python 3.13, hence ctypes.
    """
    name = ctypes.util.find_library("crypt") or "libcrypt.so.1"
    try:
        library = ctypes.CDLL(name)
    except OSError as exc:
        raise NoCorkServerUnavailableError(f"libcrypt cannot be loaded: {exc}") from None
    crypt = library.crypt
    crypt.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    crypt.restype = ctypes.c_char_p
    salt = "$6$" + "".join(secrets.choice(_SALT_ALPHABET) for _ in range(16))
    hashed = crypt(password.encode("ascii"), salt.encode("ascii"))
    if not isinstance(hashed, bytes) or not hashed.startswith(salt.encode("ascii") + b"$"):
        raise NoCorkServerUnavailableError("libcrypt does not make SHA-512 ($6$) hashes")
    return hashed.decode("ascii")


def _free_ids(count: int) -> list[int]:
    """Return ``count`` ids that are neither a user id nor a group id on the host."""
    found = []
    for candidate in _UID_SEARCH:
        try:
            pwd.getpwuid(candidate)
        except KeyError:
            try:
                grp.getgrgid(candidate)
            except KeyError:
                found.append(candidate)
                if len(found) == count:
                    return found
    raise NoCorkServerError("no free user ids between 60001 and 64000")


@dataclass(frozen=True)
class _Layout:
    """Where the private files of one instance are, and what they are mounted over."""

    directory: Path

    @property
    def etc(self) -> Path:
        return self.directory / "etc"

    @property
    def pam(self) -> Path:
        return self.directory / "pam.d"

    @property
    def mail(self) -> Path:
        return self.directory / "mail"

    @property
    def varlib(self) -> Path:
        return self.directory / "varlib"

    @property
    def empty(self) -> Path:
        return self.directory / "empty"

    @property
    def log(self) -> Path:
        return self.directory / "popa3d.log"

    @property
    def config(self) -> Path:
        return self.directory / "inetd.json"

    def mounts(self) -> list[tuple[str, str]]:
        """Return (source, target) pairs: every bind mount the inetd makes in its namespace."""
        pairs = [
            (str(self.etc / name), f"/etc/{name}")
            for name in ("passwd", "group", "shadow", "nsswitch.conf")
        ]
        pairs += [(str(self.pam), "/etc/pam.d"), (str(self.mail), "/var/mail")]
        if Path("/var/lib/popa3d").is_dir():
            pairs.append((str(self.varlib / "popa3d"), "/var/lib/popa3d"))
        else:
            pairs.append((str(self.varlib), "/var/lib"))
        pairs += [(str(self.empty), path) for path in ("/run/nscd", "/var/run/nscd")]
        return pairs


def _write(path: Path, text: str | bytes, mode: int, owner: tuple[int, int] = (0, 0)) -> None:
    data = text.encode("ascii") if isinstance(text, str) else text
    path.write_bytes(data)
    os.chown(path, *owner)
    path.chmod(mode)


def _populate(layout: _Layout, user: str, password: str, messages: Sequence[bytes]) -> None:
    """Write the private passwd, group, shadow, nsswitch.conf, PAM files, spool and chroot."""
    popa3d_id, user_id = _free_ids(2)
    for directory in (layout.etc, layout.pam, layout.mail, layout.varlib / "popa3d", layout.empty):
        directory.mkdir(parents=True)
        directory.chmod(0o755)
    layout.directory.chmod(0o755)
    _write(
        layout.etc / "passwd",
        "root:x:0:0:root:/root:/bin/sh\n"
        f"popa3d:x:{popa3d_id}:{popa3d_id}:popa3d:/var/lib/popa3d:/usr/sbin/nologin\n"
        f"{user}:x:{user_id}:{user_id}:no-cork benchmark:/nonexistent:/usr/sbin/nologin\n",
        0o644,
    )
    _write(
        layout.etc / "group",
        f"root:x:0:\npopa3d:x:{popa3d_id}:\n{user}:x:{user_id}:\n",
        0o644,
    )
    _write(
        layout.etc / "shadow",
        f"root:*:20000:0:99999:7:::\npopa3d:*:20000:0:99999:7:::\n"
        f"{user}:{sha512_crypt(password)}:20000:0:99999:7:::\n",
        0o600,
    )
    _write(
        layout.etc / "nsswitch.conf",
        "passwd: files\ngroup: files\nshadow: files\ngshadow: files\n",
        0o644,
    )
    _write(
        layout.pam / "popa3d",
        "# popa3d inside the no-cork benchmark's mount namespace\n"
        "auth required pam_unix.so nodelay\naccount required pam_unix.so\n",
        0o644,
    )
    _write(
        layout.pam / "other",
        "auth required pam_deny.so\naccount required pam_deny.so\n"
        "password required pam_deny.so\nsession required pam_deny.so\n",
        0o644,
    )
    _write(layout.mail / user, mbox_from_messages(messages), 0o600, (user_id, user_id))


# -- the inetd, inside the namespace ------------------------------------------------------


def _inetd_main(arguments: Sequence[str]) -> int:
    """Run the inetd half: bind-mount the private files, then serve connections with popa3d.

    ``arguments``: the config file, the listening socket's fd, and the
    parent's mount namespace (as ``readlink /proc/self/ns/mnt`` shows it).
    """
    config_path, listen_fd, parent_namespace = arguments
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    if os.readlink("/proc/self/ns/mnt") == parent_namespace:
        print("not in a mount namespace of its own: refusing to mount", file=sys.stderr)
        return 2
    config = json.loads(Path(config_path).read_text())
    for source, target in config["mounts"]:
        if not os.path.lexists(target):
            if target in _OPTIONAL_TARGETS:
                continue
            print(f"cannot bind {source}: {target} does not exist", file=sys.stderr)
            return 2
        mounted = subprocess.run(
            [config["mount"], "--bind", source, target], capture_output=True, text=True, check=False
        )
        if mounted.returncode != 0:
            print(f"mount --bind {source} {target}: {mounted.stderr.strip()}", file=sys.stderr)
            return 2
    listener = socket.socket(fileno=int(listen_fd))
    children: list[subprocess.Popen[bytes]] = []
    with open(config["log"], "ab") as log, selectors.DefaultSelector() as selector:
        selector.register(listener, selectors.EVENT_READ, "accept")
        selector.register(sys.stdin.buffer, selectors.EVENT_READ, "parent")
        sys.stdout.buffer.write(READY)
        sys.stdout.buffer.flush()
        running = True
        while running:
            for key, _ in selector.select(timeout=1.0):
                if key.data == "parent":
                    running = bool(os.read(sys.stdin.fileno(), 4096))
                    continue
                connection, _peer = listener.accept()
                with connection:
                    children.append(
                        subprocess.Popen(
                            [config["popa3d"]],
                            stdin=connection.fileno(),
                            stdout=connection.fileno(),
                            stderr=log,
                            close_fds=True,
                        )
                    )
            children = [child for child in children if child.poll() is None]
    for child in children:
        child.terminate()
    for child in children:
        try:
            child.wait(timeout=5)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
    return 0


# -- the server, from the outside ---------------------------------------------------------


class NoCorkServer:
    """popa3d on 127.0.0.1:<free port> serving ``messages`` to one user, as a context manager.

    ``messages`` are in wire form (CRLF line ends, not dot-stuffed, each
    ending with CRLF). ``expected`` holds what RETR returns for each
    (see :func:`expected_retr`); ``sizes`` what LIST reports. Needs root.
    """

    def __init__(
        self,
        messages: Sequence[bytes],
        user: str = "bench",
        password: str = "bench-Secret-1",
        *,
        cache_dir: Path | None = None,
    ) -> None:
        """Check the arguments; nothing starts before :meth:`start` (or ``with``)."""
        if not re.fullmatch(r"[a-z_][a-z0-9_-]{0,30}", user) or user in {"root", PACKAGE}:
            raise ValueError(f"unusable user name: {user!r}")
        if not password or not re.fullmatch(r"[!-~]+", password):
            raise ValueError("the password must be printable ASCII without spaces, not empty")
        for message in messages:
            _check_wire_message(message)
        self.messages: tuple[bytes, ...] = tuple(messages)
        self.expected: tuple[bytes, ...] = tuple(expected_retr(m) for m in self.messages)
        self.sizes: tuple[int, ...] = tuple(len(m) for m in self.expected)
        self.user = user
        self.password = password
        self.host = HOST
        self.port = 0
        self.implementation = ""
        self.package_version = ""
        self.startup_seconds = 0.0
        self._cache_dir = cache_dir
        self._layout: _Layout | None = None
        self._listener: socket.socket | None = None
        self._inetd: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> NoCorkServer:
        """Start the server."""
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Stop the server and remove its files."""
        self.stop()

    @staticmethod
    def check_environment() -> None:
        """Raise :class:`NoCorkServerUnavailableError` when this machine cannot run the server."""
        if not sys.platform.startswith("linux"):
            raise NoCorkServerUnavailableError(
                f"Linux is needed (mount namespaces), not {sys.platform}"
            )
        if os.geteuid() != 0:
            raise NoCorkServerUnavailableError(
                "root is needed: popa3d starts as root, and so does unshare --mount"
            )
        _require("unshare", "util-linux's unshare makes the private mount namespace")
        _require("mount", "util-linux's mount makes the bind mounts")
        if not Path("/var/mail").is_dir():
            raise NoCorkServerUnavailableError(
                "/var/mail does not exist: nothing to bind the spool over"
            )

    def start(self) -> None:
        """Fetch popa3d if needed, write the private files, and start the inetd in a namespace."""
        if self._inetd is not None:
            raise NoCorkServerError("already started")
        began = time.perf_counter()
        self.check_environment()
        binary, self.package_version = fetch_popa3d(self._cache_dir)
        self.implementation = self._version(binary)
        layout = _Layout(Path(tempfile.mkdtemp(prefix="nocork-")))
        self._layout = layout
        try:
            _populate(layout, self.user, self.password, self.messages)
            config = {
                "popa3d": str(binary),
                "mount": _require("mount", "it makes the bind mounts"),
                "log": str(layout.log),
                "mounts": layout.mounts(),
            }
            layout.config.write_text(json.dumps(config))
            self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self._listener.bind((HOST, 0))
            self._listener.listen(64)
            self.port = self._listener.getsockname()[1]
            self._spawn_inetd(layout)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.perf_counter() - began

    @staticmethod
    def _version(binary: Path) -> str:
        result = _run([str(binary), "-V"])
        match = re.search(r"popa3d version (\S+)", result.stdout + result.stderr)
        if not match:
            raise NoCorkServerError(f"{binary} -V said {result.stdout!r} {result.stderr!r}")
        return f"popa3d {match.group(1)}"

    def _spawn_inetd(self, layout: _Layout) -> None:
        assert self._listener is not None
        command = [
            _require("unshare", "it makes the private mount namespace"),
            "--mount",
            "--propagation",
            "private",
            "--",
            sys.executable,
            "-I",
            str(Path(__file__).resolve()),
            INETD_FLAG,
            str(layout.config),
            str(self._listener.fileno()),
            os.readlink("/proc/self/ns/mnt"),
        ]
        stderr_path = layout.directory / "inetd.err"
        with open(stderr_path, "wb") as stderr:
            self._inetd = subprocess.Popen(
                command,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                pass_fds=(self._listener.fileno(),),
                start_new_session=True,  # a Ctrl-C at the terminal is the parent's to handle
            )
        assert self._inetd.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(self._inetd.stdout, selectors.EVENT_READ)
            ready = selector.select(timeout=START_TIMEOUT)
        line = self._inetd.stdout.readline() if ready else b""
        if line == READY:
            return
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._inetd.wait(timeout=5)
        reason = stderr_path.read_text(errors="replace").strip() or f"no answer, {line!r}"
        if "Operation not permitted" in reason or "unshare failed" in reason:
            raise NoCorkServerUnavailableError(f"mount namespaces are refused here: {reason}")
        raise NoCorkServerError(f"the inetd did not start: {reason}")

    def stop(self) -> None:
        """Stop the inetd and its popa3d processes; remove the instance directory."""
        inetd, self._inetd = self._inetd, None
        if inetd is not None:
            if inetd.stdin is not None:
                with contextlib.suppress(OSError):
                    inetd.stdin.close()  # end of file: the inetd's signal to stop
            try:
                inetd.wait(timeout=10)
            except subprocess.TimeoutExpired:
                inetd.kill()
                inetd.wait()
            if inetd.stdout is not None:
                inetd.stdout.close()
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        layout, self._layout = self._layout, None
        if layout is not None and os.environ.get(KEEP_ENV) != "1":
            shutil.rmtree(layout.directory, ignore_errors=True)

    def reset_mailbox(self) -> None:
        """Write the mailbox back as it was at the start (after a session's DELE and QUIT)."""
        if self._layout is None:
            raise NoCorkServerError("not started")
        mbox = self._layout.mail / self.user
        owner = mbox.stat()
        _write(mbox, mbox_from_messages(self.messages), 0o600, (owner.st_uid, owner.st_gid))

    def log(self) -> str:
        """Return what popa3d wrote to stderr so far (it logs to syslog, absent here)."""
        if self._layout is None or not self._layout.log.exists():
            return ""
        return self._layout.log.read_text(errors="replace")

    def verify(self) -> None:
        """Fetch every message with LIST and RETR on a raw socket; raise if any differs.

        Checks the STAT totals, each LIST size, and that RETR, unstuffed,
        is exactly :attr:`expected`.
        """
        with socket.create_connection((self.host, self.port), timeout=TIMEOUT) as sock:
            reader = sock.makefile("rb")
            _expect_ok(reader.readline(), "greeting")
            for command in (f"USER {self.user}", f"PASS {self.password}"):
                sock.sendall(command.encode("ascii") + b"\r\n")
                _expect_ok(reader.readline(), command.split()[0])
            sock.sendall(b"STAT\r\n")
            stat = _expect_ok(reader.readline(), "STAT")
            wanted = b"+OK %d %d" % (len(self.expected), sum(self.sizes))
            if stat != wanted:
                raise NoCorkServerError(f"STAT said {stat!r}, not {wanted!r}")
            sock.sendall(b"LIST\r\n")
            _expect_ok(reader.readline(), "LIST")
            listing = _read_data(reader)
            wanted = b"".join(b"%d %d\r\n" % (n, s) for n, s in enumerate(self.sizes, 1))
            if listing != wanted:
                raise NoCorkServerError(f"LIST said {listing[:200]!r}..., not {wanted[:200]!r}...")
            for number, expected in enumerate(self.expected, 1):
                sock.sendall(b"RETR %d\r\n" % number)
                _expect_ok(reader.readline(), f"RETR {number}")
                got = _read_data(reader)
                if got != expected:
                    raise NoCorkServerError(
                        f"RETR {number} returned {len(got)} octets that differ from the "
                        f"{len(expected)} expected: {got[:120]!r}..."
                    )
            sock.sendall(b"QUIT\r\n")
            _expect_ok(reader.readline(), "QUIT")


def _expect_ok(line: bytes, what: str) -> bytes:
    if not line.startswith(b"+OK"):
        raise NoCorkServerError(f"{what}: the server said {line!r}")
    return line.rstrip(b"\r\n")


def _read_data(reader: io.BufferedReader) -> bytes:
    """Read a multi-line reply's data up to its terminating ``.`` line, and unstuff it."""
    lines: list[bytes] = []
    while True:
        line = reader.readline()
        if not line.endswith(b"\r\n"):
            raise NoCorkServerError(f"the server closed or sent a bare line: {line[-80:]!r}")
        if line == b".\r\n":
            return b"".join(lines)
        lines.append(line[1:] if line.startswith(b".") else line)


# -- the benchmark: proving the premise ---------------------------------------------------

RECV_SIZE = 256 * 1024


@dataclass(frozen=True)
class Timing:
    """One client's run: ``retrieve`` from the first RETR to the last octet, ``session`` all."""

    retrieve: float
    session: float


def run_poplib(server: NoCorkServer) -> Timing:
    """Stdlib ``poplib.POP3``: USER, PASS, ``retr(n)`` for every message, QUIT."""
    got = []
    start = time.perf_counter()
    client = poplib.POP3(server.host, server.port, timeout=TIMEOUT)
    try:
        client.user(server.user)
        client.pass_(server.password)
        begin = time.perf_counter()
        for number in range(1, len(server.expected) + 1):
            _response, lines, _octets = client.retr(number)
            got.append(b"".join(line + b"\r\n" for line in lines))
        end = time.perf_counter()
        client.quit()
    finally:
        client.close()
    stop = time.perf_counter()
    if tuple(got) != server.expected:
        raise NoCorkServerError("poplib got messages that differ from the expected ones")
    return Timing(end - begin, stop - start)


def _recv(sock: socket.socket, quickack: bool) -> bytes:
    if quickack:
        # Linux clears TCP_QUICKACK by itself again: it has to be set before every read.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
    chunk = sock.recv(RECV_SIZE)
    if not chunk:
        raise NoCorkServerError("the server closed the connection")
    return chunk


def _command(sock: socket.socket, command: bytes, quickack: bool) -> bytes:
    """Send a one-line command and read its one-line reply, which must be +OK."""
    sock.sendall(command + b"\r\n")
    reply = b""
    while not reply.endswith(b"\r\n"):
        reply += _recv(sock, quickack)
    return _expect_ok(reply, command.split()[0].decode("ascii"))


def run_raw(server: NoCorkServer, quickack: bool) -> Timing:
    """A blocking socket: RETR n, read until the data ends in CRLF.CRLF, next RETR.

    No parsing and no unstuffing; with ``quickack``, ``TCP_QUICKACK`` is set
    before each ``recv``. Only the number of octets that arrived is checked.
    """
    total = 0
    start = time.perf_counter()
    sock = socket.create_connection((server.host, server.port), timeout=TIMEOUT)
    try:
        greeting = b""
        while not greeting.endswith(b"\r\n"):
            greeting += _recv(sock, quickack)
        _expect_ok(greeting, "greeting")
        _command(sock, f"USER {server.user}".encode("ascii"), quickack)
        _command(sock, f"PASS {server.password}".encode("ascii"), quickack)
        begin = time.perf_counter()
        for number in range(1, len(server.expected) + 1):
            sock.sendall(b"RETR %d\r\n" % number)
            chunk = _recv(sock, quickack)
            if not chunk.startswith(b"+OK"):
                raise NoCorkServerError(f"RETR {number}: the server said {chunk[:80]!r}")
            total += len(chunk)
            tail = chunk[-len(TERMINATOR) :]
            while tail != TERMINATOR:
                chunk = _recv(sock, quickack)
                total += len(chunk)
                tail = (tail + chunk)[-len(TERMINATOR) :]
        end = time.perf_counter()
        _command(sock, b"QUIT", quickack)
    finally:
        sock.close()
    stop = time.perf_counter()
    if total < sum(server.sizes):
        raise NoCorkServerError(f"only {total} octets arrived for {sum(server.sizes)} of mail")
    return Timing(end - begin, stop - start)


def main(argv: Sequence[str] | None = None) -> int:
    """Start popa3d with a mailbox and time poplib and two raw sockets against it."""
    arguments = sys.argv[1:] if argv is None else list(argv)
    if arguments[:1] == [INETD_FLAG]:
        return _inetd_main(arguments[1:])
    parser = argparse.ArgumentParser(
        prog="python -m servers.popa3d",
        description="Time poplib and raw sockets (with and without TCP_QUICKACK) against "
        "popa3d, a POP3 server that neither pipelines nor corks, on 127.0.0.1.",
    )
    parser.add_argument("--messages", type=int, default=100, help="messages (100)")
    parser.add_argument("--size", type=int, default=8192, help="octets per message (8192)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of all clients (3)")
    options = parser.parse_args(arguments)
    if options.messages < 1 or options.rounds < 1:
        parser.error("--messages and --rounds must be at least 1")
    clients = [
        ("poplib", run_poplib),
        ("raw", lambda server: run_raw(server, quickack=False)),
        ("raw+quickack", lambda server: run_raw(server, quickack=True)),
    ]
    messages = make_messages(options.messages, options.size)
    with NoCorkServer(messages) as server:
        print(
            f"{server.implementation} (Debian {server.package_version}) on "
            f"{server.host}:{server.port}, started in {server.startup_seconds:.2f} s; "
            f"{options.messages} x {options.size} octets; Linux {platform.release()}, "
            f"Python {platform.python_version()}",
            flush=True,
        )
        if server.implementation != f"{PACKAGE} {EXPECTED_UPSTREAM_VERSION}":
            print(f"note: written against {PACKAGE} {EXPECTED_UPSTREAM_VERSION}", flush=True)
        server.verify()
        results: dict[str, list[Timing]] = {name: [] for name, _ in clients}
        print(f"{'round':>5} {'client':<13} {'retrieve s':>10} {'session s':>10} {'ms/msg':>7}")
        for number in range(1, options.rounds + 1):
            for name, run in clients:
                timing = run(server)
                results[name].append(timing)
                per_message = 1000 * timing.retrieve / options.messages
                print(
                    f"{number:>5} {name:<13} {timing.retrieve:>10.3f} {timing.session:>10.3f} "
                    f"{per_message:>7.2f}",
                    flush=True,
                )
        best = {name: min(t.retrieve for t in timings) for name, timings in results.items()}
        print("best retrieve s: " + ", ".join(f"{name} {s:.3f}" for name, s in best.items()))
        print(
            f"poplib / raw+quickack: {best['poplib'] / best['raw+quickack']:.0f}x; "
            f"raw / raw+quickack: {best['raw'] / best['raw+quickack']:.0f}x"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
