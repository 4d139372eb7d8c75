"""Running the fetch suite's clients: the tools, one measured and checked run, the rounds."""

from __future__ import annotations

import argparse
import contextlib
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
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.harness.paths import CACHE, REPOSITORY, BenchmarkAbortedError
from benchmarks.harness.paths import progress as _progress
from benchmarks.harness.rounds import Rounds, alternate

from .maildir import CheckError, PeerMailbox, check_maildir
from .peers import (
    AIOPOP,
    CEILING,
    FETCHMAIL,
    FLAKY,
    GETMAIL,
    INPROC,
    KIB,
    MPOP,
    PASSWORD_ENV,
    PEER_PACKAGES,
    PEER_PROGRAMS,
)

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


def wait_for_quiet(maximum: float, patience: float) -> dict[str, Any]:
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


def find_tools(directory: Path) -> Tools:
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


def install_aiopop(directory: Path) -> str:
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
