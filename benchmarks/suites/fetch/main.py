"""``python -m benchmarks fetch``: ``aiopop fetch`` against the POP3 downloaders people use.

One run, one report (see benchmarks/README.md, "aiopop fetch against mpop,
fetchmail and getmail6"). A private Dovecot (``servers/dovecot.py``) on
127.0.0.1 serves two mailboxes, 2,000 x 8 KB and 5 x 5 MB, over plain POP3
with USER/PASS. Round after round, clients alternating, each client run
downloads a whole mailbox into a fresh Maildir of its own, keeping the mail
on the server, with no UID state from an earlier run:

* ``aiopop fetch``: the command as a user runs it, ``aiopop fetch ...
  --maildir DIR`` (process start-up included), from a venv of its own
  where this checkout is installed with ``pip install .``;
* ``aiopop in-process``: the same download in a Python process that times
  its parts (imports, login, :func:`aiopop.fetch_to_maildir`, QUIT),
  so that the command's start-up cost is visible; its *seconds* are the
  ``fetch_to_maildir`` call alone;
* ``mpop`` (C, pipelining), ``fetchmail`` (with a small MDA that writes into
  ``tmp/``, fsyncs and renames into ``new/``) and ``getmail6`` (as the
  unprivileged user ``nobody``: it refuses to write a Maildir as root),
  configured as /work/shared/peers.md says;
* ``raw socket``: the ceiling, a Python process with one blocking socket that
  sends every RETR at once, cuts the replies apart, unstuffs them, and writes
  each message into ``tmp/``, fsyncs it and renames it into ``new/`` (one
  fsync of ``new/`` before QUIT).

Every client fsyncs every message. Every process is started by a small
launcher (C when a compiler is there) that measures it from ``fork`` to
``wait4``: wall seconds, CPU seconds (user + system, with the children it
reaped: fetchmail's MDAs) and peak RSS (``ru_maxrss``, the largest of the
process and its reaped children; a launcher of its own keeps the
benchmark's own memory out of it). After each run, outside the timing, the
Maildir is checked: every stored message exactly once (line ends made LF;
the headers a peer puts in front are counted, not compared) and nothing
else. Every run's Maildir is kept until the end of the benchmark: on this
machine's ext4, deleting a large Maildir slows file creation for about a
minute.

The raw socket and the in-process run are :mod:`.inproc`'s entry points.
Only 127.0.0.1 is ever contacted.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import pwd
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from benchmarks.harness.options import (
    RoundDefaults,
    add_round_options,
    resolve_round_options,
    wanted,
)
from benchmarks.harness.paths import CACHE, REPOSITORY, BenchmarkAbortedError
from benchmarks.harness.paths import progress as _progress
from benchmarks.harness.ratios import median_or_nan
from benchmarks.harness.ratios import round_ratios as ratios_of
from benchmarks.harness.report import settings_of, write_json
from benchmarks.harness.rounds import Rounds, alternate

__all__ = ["main"]

PASSWORD_ENV = "AIOPOP_BENCH_PASSWORD"
KIB = 1024
MIB = 1024 * 1024

AIOPOP = "aiopop fetch"
INPROC = "aiopop in-process"
MPOP = "mpop"
FETCHMAIL = "fetchmail"
GETMAIL = "getmail6"
CEILING = "raw socket"
CLIENTS = (AIOPOP, INPROC, MPOP, FETCHMAIL, GETMAIL, CEILING)
FLAKY = frozenset({GETMAIL})
"""Clients whose failed runs are recorded as aborts instead of stopping the benchmark."""

TARGETS = (
    (GETMAIL, 1.0, "faster than getmail6", ">"),
    (FETCHMAIL, 1.0, "faster than fetchmail", ">"),
    (MPOP, 1.0, "at least 1.0x mpop", ">="),
    (CEILING, 0.8, "at least 0.8x the raw socket ceiling", ">="),
)
"""aiopop fetch's targets: (reference, minimum of reference time / aiopop time, words, test)."""


ENTRY = "benchmarks.suites.fetch.inproc"
"""The module whose entry points run the raw socket and the in-process client."""
PROGRAMS = Path(__file__).resolve().parent / "programs"
"""The launcher and fetchmail's MDA: C sources, and Python ones for a machine without cc."""
RUN_TIMEOUT = 120.0
"""Seconds one client run may take before it is killed (and, for getmail6, counted aborted)."""
PROFILES = CACHE / "bench-profiles"
STARTUP_MODULES = (
    "site",
    "aiopop",
    "aiopop.sasl",
    "scramp",
    "importlib.metadata",
    "aiopop._connection",
    "asyncio",
    "ssl",
    "aiopop._cli",
    "aiopop._fetch",
    "aiopop._maildir",
    "aiofiles",
    "sqlite3",
    "aiopop._demo",
    "aiopop.testing",
)
"""Modules whose import time the start-up analysis shows (cumulative, first import)."""
PROBE_FILES = 50
"""Files created (and kept) before each round, to see how fast this file system creates them."""
PEER_PACKAGES = {MPOP: "mpop", FETCHMAIL: "fetchmail", GETMAIL: "getmail6"}
PEER_PROGRAMS = {MPOP: "mpop", FETCHMAIL: "fetchmail", GETMAIL: "getmail"}

ROUNDS = RoundDefaults(
    rounds=5,
    quick_rounds=1,
    results="fetch.json",
    partial_results="partial-fetch.json",
    quick_warmup=0,
    quick_help="a smoke run: 200 x 8 KB and 2 x 5 MB, one round",
)
FULL = (("2000x8KB", "fetch8k", 2000, 8 * KIB), ("5x5MB", "fetch5m", 5, 5 * MIB))
QUICK = (("200x8KB", "fetch8k", 200, 8 * KIB), ("2x5MB", "fetch5m", 2, 5 * MIB))


class CheckError(Exception):
    """A Maildir does not hold exactly the mailbox."""


@dataclass(frozen=True)
class PeerMailbox:
    """A mailbox on the private Dovecot, and what a Maildir must hold after a download."""

    key: str
    user: str
    count: int
    size: int
    host: str
    port: int
    password: str
    octets: int
    """Its messages' octets as stored (CRLF line ends), as LIST counts them."""
    expected: dict[str, int] = field(repr=False)
    """SHA-256 of each message with LF line ends (as Maildir files hold mail) -> how many."""
    lengths: tuple[int, ...] = ()
    """The distinct lengths of those LF forms."""


@dataclass(frozen=True)
class Tools:
    """How client processes are started and measured, and fetchmail's MDA."""

    launcher: list[str]
    mda: list[str]
    compiled: bool
    """True: the launcher and the MDA are C programs built here; False: Python fallbacks."""
    programs: dict[str, str]
    versions: dict[str, str]
    aiopop: str = ""
    """The ``aiopop`` console script of a venv with this checkout installed as users install it."""


@dataclass
class Run:
    """One client run: its measurements and what it delivered."""

    client: str
    workload: str
    round: int
    """1, 2, ... (warm-up rounds are not kept)."""
    seconds: float = 0.0
    """What is compared: the process, start to exit (for aiopop in-process: fetch_to_maildir)."""
    process_seconds: float = 0.0
    cpu_seconds: float = 0.0
    peak_rss_mib: float = 0.0
    ok: bool = True
    problem: str | None = None
    delivered: int = 0
    octets_on_disk: int = 0
    header_octets: int = 0
    """Octets of the headers the client put in front of the messages."""
    parts: dict[str, float] = field(default_factory=dict)
    """aiopop in-process: seconds of import, connect_login, fetch_to_maildir, quit."""
    directory: str = ""


@dataclass
class FetchResult:
    """A mailbox's kept runs by client, in round order, and how the rounds went."""

    mailbox: PeerMailbox
    rounds: Rounds[Run]
    aborted: list[Run] = field(default_factory=list)
    """Runs of a flaky client (getmail6) that failed, warm-up and repeated rounds included."""
    profile: dict[str, Any] | None = None
    """aiopop's steps in one more in-process run, when a target failed."""

    @property
    def runs(self) -> dict[str, list[Run]]:
        """The kept runs by client, in round order."""
        return self.rounds.runs


# -- helpers -----------------------------------------------------------------------------------


def _load() -> float:
    """The 1-minute load average."""
    return float(Path("/proc/loadavg").read_text().split()[0])


def _wait_for_quiet(maximum: float, patience: float) -> dict[str, Any]:
    """Poll until the 1-minute load is below ``maximum`` or ``patience`` seconds passed."""
    began = time.monotonic()
    load = _load()
    while load >= maximum and time.monotonic() - began < patience:
        _progress(f"load {load:.2f} >= {maximum:g}: waiting ({time.monotonic() - began:.0f} s)")
        time.sleep(15)
        load = _load()
    waited = time.monotonic() - began
    reached = load < maximum
    if not reached:
        _progress(f"load still {load:.2f} after {waited:.0f} s: measuring anyway")
    return {"load_at_start": load, "waited_seconds": round(waited), "below_maximum": reached}


def _package_version(package: str) -> str:
    try:
        done = subprocess.run(
            ["dpkg-query", "-W", "-f", "${Version}", package],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return done.stdout.strip() if done.returncode == 0 and done.stdout.strip() else "unknown"


def _tools(directory: Path) -> Tools:
    """Find the peers; build the launcher and the MDA in C, or fall back to Python."""
    programs = {}
    for client, program in PEER_PROGRAMS.items():
        found = shutil.which(program)
        if found is None:
            raise SystemExit(
                f"{program} is not installed: run scripts/install-peers.sh (as root) first"
            )
        programs[client] = found
    versions = {client: _package_version(package) for client, package in PEER_PACKAGES.items()}
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is not None:
        built = []
        for name in ("bench-run", "bench-mda"):
            binary = directory / name
            subprocess.run(
                [compiler, "-O2", "-Wall", "-o", str(binary), str(PROGRAMS / f"{name}.c")],
                check=True,
                timeout=120,
            )
            binary.chmod(0o755)
            built.append(str(binary))
        return Tools([built[0]], [built[1]], True, programs, versions)
    _progress("no C compiler: the launcher and fetchmail's MDA are Python (the MDA is slower)")
    # Their source is given with -c, read here: no file of the repository need be readable by
    # nobody (getmail6's user), and fetchmail's mda string gets no path with "%" in it.
    python = [sys.executable, "-I", "-S", "-c"]
    launcher = (PROGRAMS / "bench_run.py").read_text()
    mda = (PROGRAMS / "bench_mda.py").read_text()
    return Tools([*python, launcher, "bench-run"], [*python, mda], False, programs, versions)


def _install_aiopop(directory: Path) -> str:
    """Install this checkout into a venv of its own, as users install it; returns ``aiopop``.

    A regular install (``pip install .``), not the editable one of the
    development venv: that one runs a path finder from a ``.pth`` file at
    every interpreter start (10 to 20 ms here), which no user pays.
    """
    venv = directory / "venv"
    _progress("installing this checkout into a venv of its own (pip install .)")
    for argv in (
        [sys.executable, "-m", "venv", str(venv)],
        [str(venv / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check", "."],
    ):
        done = subprocess.run(argv, cwd=REPOSITORY, capture_output=True, text=True, timeout=900)
        if done.returncode != 0:
            raise SystemExit(f"{shlex.join(argv)} failed:\n{done.stdout}{done.stderr}")
    return str(venv / "bin" / "aiopop")


def _mailboxes(
    plans: Sequence[tuple[str, str, int, int]],
    host: str,
    ports: dict[str, int],
    passwords: dict[str, str],
) -> list[PeerMailbox]:
    from benchmarks.harness.messages import build_message

    found = []
    for key, user, count, size in plans:
        expected: Counter[str] = Counter()
        lengths = set()
        octets = 0
        for index in range(1, count + 1):
            message = build_message(index, size)
            octets += len(message)
            stored = message.replace(b"\r\n", b"\n")
            expected[hashlib.sha256(stored).hexdigest()] += 1
            lengths.add(len(stored))
        found.append(
            PeerMailbox(
                key,
                user,
                count,
                size,
                host,
                ports[user],
                passwords[user],
                octets,
                dict(expected),
                tuple(sorted(lengths, reverse=True)),
            )
        )
    return found


_HEADER_LINE = re.compile(rb"[\x21-\x39\x3b-\x7e]+:.*|[ \t].*")


def _headers_only(prefix: bytes) -> bool:
    """True when ``prefix`` (LF line ends) is nothing, or whole header lines."""
    if not prefix:
        return True
    if not prefix.endswith(b"\n"):
        return False
    return all(_HEADER_LINE.fullmatch(line) for line in prefix[:-1].split(b"\n"))


def check_maildir(maildir: Path, mailbox: PeerMailbox) -> tuple[int, int, int]:
    """Raise CheckError unless ``maildir`` holds every message of ``mailbox`` exactly once.

    Each file (in ``new/`` or ``cur/``), its line ends made LF, must end with
    one of the stored messages, and what comes before must be header lines
    (the ones a peer adds: getmail6's Return-Path, say). Returns the files,
    their octets and the octets of the added headers.
    """
    remaining = Counter(mailbox.expected)
    files = octets = added = 0
    for sub in ("new", "cur"):
        with os.scandir(maildir / sub) as entries:
            for entry in entries:
                data = Path(entry.path).read_bytes().replace(b"\r\n", b"\n")
                for length in mailbox.lengths:
                    if len(data) < length:
                        continue
                    digest = hashlib.sha256(data[len(data) - length :]).hexdigest()
                    if remaining[digest] > 0 and _headers_only(data[: len(data) - length]):
                        remaining[digest] -= 1
                        added += len(data) - length
                        break
                else:
                    raise CheckError(
                        f"{sub}/{entry.name} ({len(data)} octets) is no stored message, "
                        "or one delivered twice"
                    )
                files += 1
                octets += len(data)
    missing = sum(remaining.values())
    if missing:
        raise CheckError(f"{missing} of {mailbox.count} messages missing ({files} delivered)")
    left = os.listdir(maildir / "tmp")
    if left:
        raise CheckError(f"{len(left)} files left in tmp/")
    return files, octets, added


_median = median_or_nan


# -- running clients ---------------------------------------------------------------------------


class FetchBench:
    """One benchmark run: the work directory, the tools, and every run so far."""

    def __init__(self, options: argparse.Namespace, workdir: Path, tools: Tools) -> None:
        self.options = options
        self.workdir = workdir
        self.tools = tools
        self.sequence = 0
        nobody = pwd.getpwnam("nobody")
        self.nobody = (nobody.pw_uid, nobody.pw_gid)
        self.me = pwd.getpwuid(os.geteuid()).pw_name

    def _fresh(self, client: str, mailbox: PeerMailbox, number: int) -> tuple[Path, Path]:
        self.sequence += 1
        slug = re.sub(r"[^a-z0-9]+", "-", client.lower())
        label = f"r{number + 1}" if number >= 0 else f"w{-number}"
        directory = self.workdir / "runs" / f"{self.sequence:04d}-{mailbox.key}-{label}-{slug}"
        maildir = directory / "Maildir"
        for sub in ("tmp", "new", "cur"):
            (maildir / sub).mkdir(mode=0o700, parents=True)
        return directory, maildir

    def _command(
        self, client: str, mailbox: PeerMailbox, directory: Path, maildir: Path
    ) -> tuple[list[str], tuple[int, int], dict[str, str]]:
        """The client's command line, the (uid, gid) it runs as (-1: unchanged) and its env."""
        env = dict(os.environ)
        same = (-1, -1)
        login = {
            "host": mailbox.host,
            "port": mailbox.port,
            "user": mailbox.user,
            "password": mailbox.password,
            "maildir": str(maildir),
        }
        if client == AIOPOP:
            env[PASSWORD_ENV] = mailbox.password
            argv = [
                self.tools.aiopop, "fetch", mailbox.host, mailbox.user,
                "--port", str(mailbox.port), "--tls", "none", "--allow-cleartext",
                "--auth", "+USER", "--password-env", PASSWORD_ENV, "--maildir", str(maildir),
            ]  # fmt: skip
            return argv, same, env
        if client == INPROC:
            request = {**login, "report": str(directory / "parts.json")}
            return (
                [sys.executable, "-m", ENTRY, "inproc", json.dumps(request)],
                same,
                env,
            )
        if client == CEILING:
            return (
                [sys.executable, "-m", ENTRY, "ceiling", json.dumps(login)],
                same,
                env,
            )
        if client == MPOP:
            rc = directory / "mpoprc"
            rc.write_text(
                "account bench\n"
                f"host {mailbox.host}\nport {mailbox.port}\ntls off\nauth user\n"
                f"user {mailbox.user}\npassword {mailbox.password}\n"
                "keep on\nonly_new off\nreceived_header off\npipelining auto\n"
                f"uidls_file {directory / 'mpop-uidls'}\ndelivery maildir {maildir}\n"
            )
            rc.chmod(0o600)
            return [self.tools.programs[MPOP], "--file", str(rc), "--quiet", "bench"], same, env
        if client == FETCHMAIL:
            rc = directory / "fetchmailrc"
            mda = shlex.join([*self.tools.mda, str(maildir)])
            rc.write_text(
                "set no bouncemail\nset no syslog\n"
                f"poll {mailbox.host} protocol pop3 port {mailbox.port} auth password\n"
                f'  user "{mailbox.user}" there with password "{mailbox.password}"'
                f' is "{self.me}" here\n'
                "  keep fetchall no rewrite\n  fetchsizelimit 0\n  sslproto ''\n"
                f'  mda "{mda}"\n'
            )
            rc.chmod(0o600)
            env["FETCHMAILHOME"] = str(directory)  # its lock and pid files, not ~/.fetchmail*
            argv = [
                self.tools.programs[FETCHMAIL], "--fetchmailrc", str(rc), "--silent",
                "--invisible", "--idfile", str(directory / "fetchids"), "--nosyslog",
            ]  # fmt: skip
            return argv, same, env
        if client == GETMAIL:
            rc = directory / "getmailrc"
            state = directory / "getmail"
            state.mkdir()
            rc.write_text(
                "[retriever]\ntype = SimplePOP3Retriever\n"
                f"server = {mailbox.host}\nport = {mailbox.port}\n"
                f"username = {mailbox.user}\npassword = {mailbox.password}\n\n"
                f"[destination]\ntype = Maildir\npath = {maildir}/\n\n"
                "[options]\nverbose = 0\nread_all = true\ndelete = false\n"
                "delivered_to = false\nreceived = false\nmessage_log_syslog = false\n"
            )
            rc.chmod(0o600)
            uid, gid = self.nobody
            for path in [directory, *directory.rglob("*")]:
                os.chown(path, uid, gid)
            env["HOME"] = str(directory)
            argv = [
                self.tools.programs[GETMAIL], "--rcfile", str(rc), "--getmaildir", str(state),
                "--quiet",
            ]  # fmt: skip
            return argv, (uid, gid), env
        raise ValueError(f"unknown client {client!r}")

    def run_client(self, client: str, mailbox: PeerMailbox, number: int) -> Run:
        """One run of ``client`` into a fresh Maildir, measured and checked."""
        directory, maildir = self._fresh(client, mailbox, number)
        argv, (uid, gid), env = self._command(client, mailbox, directory, maildir)
        measured = directory / "measure.json"
        run = Run(client, mailbox.key, number + 1, directory=str(directory))
        log = directory / "log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [*self.tools.launcher, str(measured), str(uid), str(gid), *argv],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=REPOSITORY,
                env=env,
                start_new_session=True,  # a process group of its own: a timeout kills it whole
            )
            try:
                process.wait(timeout=self.options.timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
                run.problem = f"no end within {self.options.timeout:g} s: killed"
        if run.problem is None:
            try:
                figures = json.loads(measured.read_text())
            except (OSError, ValueError):
                run.problem = f"the launcher failed (exit status {process.returncode})"
            else:
                run.process_seconds = run.seconds = figures["wall"]
                run.cpu_seconds = figures["user"] + figures["system"]
                run.peak_rss_mib = figures["maxrss_kib"] / KIB
                if figures["signal"]:
                    run.problem = f"killed by signal {figures['signal']}"
                elif figures["exit"] != 0:
                    run.problem = f"exit status {figures['exit']}"
        if run.problem is None and client == INPROC:
            parts = json.loads((directory / "parts.json").read_text())
            run.parts = parts["times"]
            run.seconds = parts["times"]["fetch_to_maildir"]
        try:
            run.delivered, run.octets_on_disk, run.header_octets = check_maildir(maildir, mailbox)
        except CheckError as exc:
            run.problem = f"{run.problem}; {exc}" if run.problem else str(exc)
        except OSError as exc:
            run.problem = f"{run.problem}; {exc}" if run.problem else str(exc)
        run.ok = run.problem is None
        if not run.ok and client not in FLAKY:
            tail = log.read_text(errors="replace")[-2000:]
            raise BenchmarkAbortedError(f"{client}, {mailbox.key}: {run.problem}\n{tail}")
        return run

    def profile(self, mailbox: PeerMailbox) -> dict[str, Any]:
        """One more in-process run with aiopop's steps timed (and pyinstrument, if installed)."""
        directory, maildir = self._fresh("profile", mailbox, -99)
        request = {
            "host": mailbox.host,
            "port": mailbox.port,
            "user": mailbox.user,
            "password": mailbox.password,
            "maildir": str(maildir),
            "report": str(directory / "profile.json"),
        }
        subprocess.run(
            [sys.executable, "-m", ENTRY, "profile", json.dumps(request)],
            cwd=REPOSITORY,
            check=True,
            timeout=self.options.timeout,
        )
        check_maildir(maildir, mailbox)
        found: dict[str, Any] = json.loads((directory / "profile.json").read_text())
        text = found.pop("pyinstrument")
        if text:
            PROFILES.mkdir(parents=True, exist_ok=True)
            path = PROFILES / f"fetch-{mailbox.key}.txt"
            path.write_text(text)
            found["pyinstrument_file"] = str(path.relative_to(REPOSITORY))
        return found

    def startup(self) -> dict[str, Any]:
        """What the ``aiopop`` command costs before it connects: the interpreter, then imports."""
        python = str(Path(self.tools.aiopop).with_name("python"))
        bare = []
        for _ in range(5):
            measured = self.workdir / "bare.json"
            subprocess.run(
                [*self.tools.launcher, str(measured), "-1", "-1", python, "-c", "pass"],
                check=True,
                timeout=60,
            )
            bare.append(json.loads(measured.read_text())["wall"])
        done = subprocess.run(
            [python, "-X", "importtime", "-c", "import aiopop._cli"],
            cwd=self.workdir,
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        cumulative: dict[str, float] = {}
        total = 0.0
        for line in done.stderr.splitlines():
            match = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)", line)
            if match is None:
                continue
            seconds = int(match[2]) / 1e6
            cumulative.setdefault(match[4], seconds)
            if len(match[3]) == 1:  # a top-level import: nested ones are in its cumulative time
                total += seconds
        return {
            "interpreter_start_and_exit": statistics.median(bare),
            "imports_of_the_command": total,
            "import_of": {name: cumulative[name] for name in STARTUP_MODULES if name in cumulative},
        }

    def probe(self) -> float:
        """Milliseconds to create (and close) an empty file here, median of PROBE_FILES."""
        self.sequence += 1
        directory = self.workdir / "probes" / str(self.sequence)
        directory.mkdir(parents=True)
        times = []
        for index in range(PROBE_FILES):
            began = time.perf_counter()
            os.close(os.open(directory / str(index), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            times.append(time.perf_counter() - began)
        return statistics.median(times) * 1000

    def measure(self, mailbox: PeerMailbox, clients: Sequence[str]) -> FetchResult:
        """Every client once per round (the harness's rounds), each run checked."""
        aborted: list[Run] = []

        def run(client: str, number: int) -> Run:
            found = self.run_client(client, mailbox, number)
            if not found.ok:
                aborted.append(found)
            return found

        rounds = alternate(
            clients,
            run,
            rounds=self.options.rounds,
            warmup=self.options.warmup,
            retries=self.options.retries
            if self.options.retries is not None
            else self.options.rounds,
            label=mailbox.key,
            describe=lambda r: f"{r.seconds:.3f} s" if r.ok else f"ABORTED ({r.problem})",
            before=lambda: {
                "load_1min_at_start": _load(),
                "create_probe_ms": round(self.probe(), 4),
            },
            after=lambda: {"load_1min_at_end": _load()},
        )
        return FetchResult(mailbox, rounds, aborted)


# -- numbers -----------------------------------------------------------------------------------


def summary(workload: FetchResult, client: str) -> dict[str, Any]:
    """Medians over ``client``'s successful runs."""
    runs = [run for run in workload.runs[client] if run.ok]
    seconds = _median([run.seconds for run in runs])
    box = workload.mailbox
    return {
        "runs_ok": len(runs),
        "runs": len(workload.runs[client]),
        "seconds": seconds,
        "process_seconds": _median([run.process_seconds for run in runs]),
        "messages_per_s": box.count / seconds,
        "mb_per_s": box.octets / 1e6 / seconds,
        "cpu_seconds": _median([run.cpu_seconds for run in runs]),
        "peak_rss_mib": _median([run.peak_rss_mib for run in runs]),
        "header_octets_per_message": _median([run.header_octets / box.count for run in runs]),
    }


def round_ratios(workload: FetchResult, reference: str, client: str = AIOPOP) -> list[float]:
    """reference's time / client's time in each round where both succeeded."""
    pairs = zip(workload.runs[reference], workload.runs[client], strict=True)
    both = [(ref.seconds, mine.seconds) for ref, mine in pairs if ref.ok and mine.ok]
    return ratios_of([ref for ref, _ in both], [mine for _, mine in both])


def verdicts(workload: FetchResult) -> list[dict[str, Any]]:
    """PASS, FAIL or SKIP for each of aiopop fetch's targets on this workload."""
    found: list[dict[str, Any]] = []
    for reference, minimum, words, test in TARGETS:
        title = f"{workload.mailbox.key}: aiopop fetch {words}"
        if reference not in workload.runs or AIOPOP not in workload.runs:
            found.append({"status": "SKIP", "text": f"{title}: not measured", "median": None})
            continue
        ratios = round_ratios(workload, reference)
        if not ratios:
            found.append({"status": "SKIP", "text": f"{title}: no round", "median": None})
            continue
        value = statistics.median(ratios)
        passed = value > minimum if test == ">" else value >= minimum
        text = (
            f"{title}: {reference} time / aiopop fetch time {value:.2f}x "
            f"(target {test} {minimum:g}x; rounds {min(ratios):.2f} to {max(ratios):.2f})"
        )
        found.append(
            {
                "status": "PASS" if passed else "FAIL",
                "workload": workload.mailbox.key,
                "reference": reference,
                "target": f"{test} {minimum:g}",
                "median": value,
                "rounds": ratios,
                "text": text,
            }
        )
    return found


def parts(workload: FetchResult) -> dict[str, float]:
    """Where aiopop's time goes: medians of the in-process parts, and the command's overhead."""
    if INPROC not in workload.runs:
        return {}
    runs = [run for run in workload.runs[INPROC] if run.ok]
    found = {name: _median([run.parts[name] for run in runs]) for name in runs[0].parts}
    found["process"] = _median([run.process_seconds for run in runs])
    found["interpreter_and_exit"] = _median(
        [run.process_seconds - sum(run.parts.values()) for run in runs]
    )
    if AIOPOP in workload.runs:
        pairs = zip(workload.runs[AIOPOP], workload.runs[INPROC], strict=True)
        outside = [cli.seconds - inner.seconds for cli, inner in pairs if cli.ok and inner.ok]
        found["command_outside_fetch_to_maildir"] = _median(outside)
    return found


# -- the report --------------------------------------------------------------------------------

_HEADER = (
    f"{'client':<19}{'workload':<10}{'median s':>10}{'messages/s':>12}{'MB/s':>8}"
    f"{'CPU s':>8}{'peak RSS MB':>13}{'runs ok':>9}"
)


def print_report(
    workloads: Sequence[FetchResult],
    info: dict[str, Any],
    found: Sequence[dict[str, Any]],
    startup: dict[str, Any] | None,
) -> None:
    """The table, the ratios, aiopop's parts, the load and the verdicts, on stdout."""
    print(f"aiopop fetch benchmark: {info['settings_line']}")
    print(info["machine_line"])
    print(info["tools_line"])
    print()
    print(_HEADER)
    print("-" * len(_HEADER))
    for number, workload in enumerate(workloads):
        if number:
            print()
        for client in workload.runs:
            s = summary(workload, client)
            if not s["runs_ok"]:
                print(f"{client:<19}{workload.mailbox.key:<10}  no successful run")
                continue
            print(
                f"{client:<19}{workload.mailbox.key:<10}{s['seconds']:>10.3f}"
                f"{s['messages_per_s']:>12.0f}{s['mb_per_s']:>8.1f}{s['cpu_seconds']:>8.3f}"
                f"{s['peak_rss_mib']:>13.1f}{s['runs_ok']:>5}/{s['runs']}"
            )
    print()
    print("aiopop's time against each other client's, median over rounds of (the other's")
    print("time / aiopop's time); above 1: aiopop is faster. `aiopop in-process` counts only")
    print("fetch_to_maildir (no start-up, login or QUIT): what the library does, not the command")
    for workload in workloads:
        for client in (AIOPOP, INPROC):
            for reference in workload.runs:
                if client not in workload.runs or reference in (AIOPOP, INPROC):
                    continue
                ratios = round_ratios(workload, reference, client)
                if ratios:
                    print(
                        f"  {workload.mailbox.key:<10}{client:<19}against {reference:<12}"
                        f"{statistics.median(ratios):>7.2f}x   "
                        f"(rounds {min(ratios):.2f} to {max(ratios):.2f})"
                    )
    print()
    print("where aiopop's time goes (medians; the in-process run's parts, in seconds)")
    for workload in workloads:
        found_parts = parts(workload)
        if found_parts:
            print(
                f"  {workload.mailbox.key:<10} "
                + ", ".join(f"{name} {value:.3f}" for name, value in found_parts.items())
            )
    print()
    for workload in workloads:
        log = workload.rounds.log
        loads = [r["load_1min_at_start"] for r in log]
        probes = [r["create_probe_ms"] for r in log]
        shares = [r["others_cpu_share"] or 0.0 for r in log]
        print(
            f"{workload.mailbox.key}: load (1 min) {min(loads):.2f} to {max(loads):.2f}; "
            f"other programs' CPU {statistics.median(shares):.0%} of a CPU (median round); "
            f"{workload.rounds.repeated} noisy rounds run again, "
            f"{workload.rounds.noisy_kept} kept; "
            f"file creation {statistics.median(probes):.3f} ms (median round)"
        )
        for run in workload.aborted:
            print(f"  aborted: {run.client} round {run.round}: {run.problem}")
    print()
    if startup is not None:
        print(
            "start-up of the `aiopop` command: interpreter start and exit "
            f"{startup['interpreter_start_and_exit']:.3f} s (python -c pass); imports "
            f"{startup['imports_of_the_command']:.3f} s (-X importtime, cumulative):"
        )
        print("  " + ", ".join(f"{k} {v:.3f}" for k, v in startup["import_of"].items()))
    for workload in workloads:
        if workload.profile is None:
            continue
        profile = workload.profile
        print(
            f"{workload.mailbox.key}: aiopop's steps in one more in-process run "
            f"(fetch_to_maildir {profile['fetch_to_maildir']:.3f} s; seconds, calls):"
        )
        for label, (seconds, count) in profile["steps"].items():
            print(f"  {label:<50}{seconds:>8.3f}{count:>7}")
        if "pyinstrument_file" in profile:
            print(f"  pyinstrument's profile: {profile['pyinstrument_file']}")
    if startup is not None or any(w.profile for w in workloads):
        print()
    for verdict in found:
        print(f"{verdict['status']:<4}  {verdict['text']}")
    failed = sum(v["status"] == "FAIL" for v in found)
    skipped = sum(v["status"] == "SKIP" for v in found)
    print()
    print(
        f"targets: {len(found) - failed - skipped} passed, {failed} failed, {skipped} skipped; "
        f"total run time {info['elapsed']:.0f} s"
    )


def to_json(workload: FetchResult) -> dict[str, Any]:
    """A workload's mailbox, summaries, ratios, parts, rounds and every run."""
    box = workload.mailbox
    return {
        "mailbox": {"count": box.count, "size": box.size, "octets": box.octets},
        "summaries": {client: summary(workload, client) for client in workload.runs},
        "ratios": {
            reference: round_ratios(workload, reference)
            for reference in workload.runs
            if reference != AIOPOP and AIOPOP in workload.runs
        },
        "in_process_ratios": {
            reference: round_ratios(workload, reference, INPROC)
            for reference in workload.runs
            if reference not in (AIOPOP, INPROC) and INPROC in workload.runs
        },
        "aiopop_parts": parts(workload),
        **workload.rounds.to_json(),
        "aborted": [asdict(run) for run in workload.aborted],
        "aiopop_steps": workload.profile,
        "runs": {client: [asdict(run) for run in runs] for client, runs in workload.runs.items()},
    }


# -- main --------------------------------------------------------------------------------------


def _options(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks fetch",
        description="aiopop fetch against mpop, fetchmail, getmail6 and a raw Python socket, "
        "each downloading a Dovecot mailbox on 127.0.0.1 into a fresh Maildir with an fsync "
        "per message; prints one report.",
    )
    add_round_options(parser, ROUNDS, only="8KB, 5MB")
    parser.add_argument(
        "--clients",
        help=f"comma-separated clients to run (default all: {', '.join(CLIENTS)})",
    )
    parser.add_argument("--timeout", type=float, default=RUN_TIMEOUT, help="seconds per run (120)")
    parser.add_argument(
        "--max-load",
        type=float,
        default=0.7,
        help="wait until the 1-minute load is below this before measuring (0.7)",
    )
    parser.add_argument(
        "--wait", type=float, default=1200, help="wait at most this many seconds for it (1200)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument(
        "--no-profile", action="store_true", help="do not time aiopop's steps when a target fails"
    )
    options = parser.parse_args(argv)
    clients = CLIENTS
    if options.clients:
        clients = tuple(name.strip() for name in options.clients.split(","))
        unknown = set(clients) - set(CLIENTS)
        if unknown:
            parser.error(f"unknown clients {sorted(unknown)}: choose among {', '.join(CLIENTS)}")
    options.client_list = clients
    partial = options.only is not None or options.clients is not None
    resolve_round_options(parser, options, ROUNDS, partial=partial)
    return options


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark, print the report, write the JSON."""
    from benchmarks.harness.machine import machine_info, one_line
    from benchmarks.harness.messages import build_message
    from servers.dovecot import DovecotServer, MailUser

    options = _options(argv)
    began = time.perf_counter()
    plans = [plan for plan in (QUICK if options.quick else FULL) if wanted(options, plan[0])]
    CACHE.mkdir(exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="bench-fetch-", dir=CACHE))  # the repository's disk
    workdir.chmod(0o755)  # getmail6 runs as nobody
    workloads: list[FetchResult] = []
    startup: dict[str, Any] | None = None
    try:
        tools = _tools(workdir)
        if AIOPOP in options.client_list:
            tools = replace(tools, aiopop=_install_aiopop(workdir))
        machine = machine_info(REPOSITORY)
        quiet = _wait_for_quiet(options.max_load, options.wait if not options.quick else 0)
        _progress(f"writing {sum(p[2] for p in plans)} messages and starting Dovecot")
        users = [
            MailUser(
                user,
                f"{user}-Secret-1",
                tuple(build_message(index, size) for index in range(1, count + 1)),
            )
            for _key, user, count, size in plans
        ]
        with DovecotServer(users) as server:
            ports = {user.name: server.pop3_port for user in users}
            passwords = {user.name: user.password for user in users}
            bench = FetchBench(options, workdir, tools)
            for mailbox in _mailboxes(plans, server.host, ports, passwords):
                _progress(
                    f"{mailbox.key}: {options.rounds} rounds after {options.warmup} warm-up "
                    f"of {', '.join(options.client_list)}"
                )
                workload = bench.measure(mailbox, options.client_list)
                workloads.append(workload)
                failed = any(v["status"] == "FAIL" for v in verdicts(workload))
                if failed and not options.no_profile:
                    _progress(f"  a target failed: timing aiopop's steps once ({mailbox.key})")
                    workload.profile = bench.profile(mailbox)
                    if startup is None:
                        startup = bench.startup()
    except BenchmarkAbortedError as exc:
        print(f"benchmark aborted: {exc}", file=sys.stderr)
        return 2
    finally:
        if options.keep:
            _progress(f"work directory kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    elapsed = time.perf_counter() - began
    found = [verdict for workload in workloads for verdict in verdicts(workload)]
    helpers = "C launcher and MDA" if tools.compiled else "Python launcher and MDA (no compiler)"
    versions = ", ".join(f"{client} {version}" for client, version in tools.versions.items())
    info = {
        "settings_line": (
            f"{options.rounds} rounds after {options.warmup} warm-up, clients alternating, "
            f"medians; plain POP3 with USER/PASS on 127.0.0.1"
            + (", --quick" if options.quick else "")
        ),
        "machine_line": one_line(machine),
        "tools_line": f"{versions}; {helpers}",
        "elapsed": elapsed,
    }
    print_report(workloads, info, found, startup)
    data = {
        "machine": machine,
        "settings": settings_of(options),
        "load": quiet,
        "tools": {"versions": tools.versions, "compiled_helpers": tools.compiled},
        "elapsed_seconds": elapsed,
        "workloads": {workload.mailbox.key: to_json(workload) for workload in workloads},
        "targets": found,
        "startup": startup,
    }
    write_json(options.json, data)
    print(f"\nJSON: {options.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
