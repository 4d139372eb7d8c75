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

from .maildir import AccountSet, CheckError, PeerMailbox, Workload, check_maildir
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
    WATCH,
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
    """A workload's kept runs by client, in round order, and how the rounds went."""

    mailbox: Workload
    """One mailbox, or the accounts of the many-account workload."""
    rounds: Rounds[Run]
    aborted: list[Run] = field(default_factory=list)
    """Runs of a flaky client (getmail6) that failed, warm-up and repeated rounds included."""
    profile: dict[str, Any] | None = None
    """aiopop's steps in one more in-process run, when a target failed."""
    unavailable: dict[str, str] = field(default_factory=dict)
    """Clients that could not run here (``aiopop watch`` before it exists), and why."""

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


def watch_missing(aiopop: str) -> str | None:
    """Why ``aiopop watch ACCOUNTS.toml --polls 1`` cannot run with ``aiopop``; None: it can."""
    try:
        done = subprocess.run(
            [aiopop, "watch", "--help"], capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"not available in this aiopop (aiopop watch --help: {exc})"
    if done.returncode != 0:
        return f"not available in this aiopop (aiopop watch --help: exit status {done.returncode})"
    if "--polls" not in done.stdout:
        return "not available in this aiopop (aiopop watch has no --polls)"
    return None


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

    def _fresh(self, client: str, workload: Workload, number: int) -> tuple[Path, list[Path]]:
        """A new directory for one run, with an empty Maildir for each account."""
        self.sequence += 1
        slug = re.sub(r"[^a-z0-9]+", "-", client.lower())
        label = f"r{number + 1}" if number >= 0 else f"w{-number}"
        directory = self.workdir / "runs" / f"{self.sequence:04d}-{workload.key}-{label}-{slug}"
        if isinstance(workload, AccountSet):
            maildirs = [directory / f"Maildir-{account.user}" for account in workload.accounts]
        else:
            maildirs = [directory / "Maildir"]
        for maildir in maildirs:
            for sub in ("tmp", "new", "cur"):
                (maildir / sub).mkdir(mode=0o700, parents=True)
        return directory, maildirs

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
            env["HOME"] = str(directory)
            argv = [
                self.tools.programs[GETMAIL], "--rcfile", str(rc), "--getmaildir", str(state),
                "--quiet",
            ]  # fmt: skip
            return argv, self._give_to_nobody(directory), env
        raise ValueError(f"unknown client {client!r}")

    def _give_to_nobody(self, directory: Path) -> tuple[int, int]:
        """Make ``directory`` and everything in it nobody's (getmail6's user); its uid and gid."""
        uid, gid = self.nobody
        for path in [directory, *directory.rglob("*")]:
            os.chown(path, uid, gid)
        return uid, gid

    def _many_command(
        self, client: str, accounts: AccountSet, directory: Path, maildirs: Sequence[Path]
    ) -> tuple[list[str], tuple[int, int], dict[str, str]]:
        """:meth:`_command` for several accounts: one process fetches them all.

        Each account has its own Maildir and password; each peer is set up
        for each account as for one mailbox. ``aiopop fetch`` and ``aiopop
        watch`` read one accounts file (``auth = "+USER"``, as ``--auth
        +USER`` for one mailbox), with ``HOME`` and the XDG folders in the
        run's directory, so that no state outlives the run wherever it is
        kept; mpop gets one rc file of accounts and ``-a``; fetchmail one rc
        file of ``poll`` entries, each with its own MDA; getmail6 one
        ``--rcfile`` per account; the raw socket a thread per account.
        """
        env = dict(os.environ)
        same = (-1, -1)
        pairs = list(zip(accounts.accounts, maildirs, strict=True))
        if client in (AIOPOP, WATCH):
            tables = []
            for number, (account, maildir) in enumerate(pairs, start=1):
                variable = f"{PASSWORD_ENV}_{number}"
                env[variable] = account.password
                tables.append(
                    "[[account]]\n"
                    f"name = {json.dumps(account.user)}\n"
                    f"host = {json.dumps(account.host)}\nport = {account.port}\n"
                    f"user = {json.dumps(account.user)}\n"
                    'tls = "none"\nauth = "+USER"\nallow_cleartext = true\n'
                    f"password_env = {json.dumps(variable)}\n"
                    f"maildir = {json.dumps(str(maildir))}\n"
                )
            toml = directory / "accounts.toml"
            toml.write_text("\n".join(tables))
            for variable in ("STATE", "DATA", "CACHE", "CONFIG"):
                env[f"XDG_{variable}_HOME"] = str(directory / "xdg" / variable.lower())
            env["HOME"] = str(directory)
            if client == AIOPOP:
                return [self.tools.aiopop, "fetch", str(toml)], same, env
            return [self.tools.aiopop, "watch", str(toml), "--polls", "1"], same, env
        if client == CEILING:
            request = {
                "accounts": [
                    {
                        "host": account.host,
                        "port": account.port,
                        "user": account.user,
                        "password": account.password,
                        "maildir": str(maildir),
                    }
                    for account, maildir in pairs
                ]
            }
            return [sys.executable, "-m", ENTRY, "ceiling-many", json.dumps(request)], same, env
        if client == MPOP:
            rc = directory / "mpoprc"
            rc.write_text(
                "defaults\ntls off\nauth user\n"
                "keep on\nonly_new off\nreceived_header off\npipelining auto\n"
                + "".join(
                    f"\naccount {account.user}\n"
                    f"host {account.host}\nport {account.port}\n"
                    f"user {account.user}\npassword {account.password}\n"
                    f"uidls_file {directory / f'mpop-uidls-{account.user}'}\n"
                    f"delivery maildir {maildir}\n"
                    for account, maildir in pairs
                )
            )
            rc.chmod(0o600)
            return [self.tools.programs[MPOP], "--file", str(rc), "--quiet", "-a"], same, env
        if client == FETCHMAIL:
            rc = directory / "fetchmailrc"
            polls = []
            for account, maildir in pairs:
                mda = shlex.join([*self.tools.mda, str(maildir)])
                polls.append(
                    f"poll {account.user} via {account.host} protocol pop3 port {account.port}"
                    " auth password\n"
                    f'  user "{account.user}" there with password "{account.password}"'
                    f' is "{self.me}" here\n'
                    "  keep fetchall no rewrite\n  fetchsizelimit 0\n  sslproto ''\n"
                    f'  mda "{mda}"\n'
                )
            rc.write_text("set no bouncemail\nset no syslog\n" + "".join(polls))
            rc.chmod(0o600)
            env["FETCHMAILHOME"] = str(directory)
            argv = [
                self.tools.programs[FETCHMAIL], "--fetchmailrc", str(rc), "--silent",
                "--invisible", "--idfile", str(directory / "fetchids"), "--nosyslog",
            ]  # fmt: skip
            return argv, same, env
        if client == GETMAIL:
            state = directory / "getmail"
            state.mkdir()
            argv = [self.tools.programs[GETMAIL]]
            for account, maildir in pairs:
                rc = directory / f"getmailrc-{account.user}"
                rc.write_text(
                    "[retriever]\ntype = SimplePOP3Retriever\n"
                    f"server = {account.host}\nport = {account.port}\n"
                    f"username = {account.user}\npassword = {account.password}\n\n"
                    f"[destination]\ntype = Maildir\npath = {maildir}/\n\n"
                    "[options]\nverbose = 0\nread_all = true\ndelete = false\n"
                    "delivered_to = false\nreceived = false\nmessage_log_syslog = false\n"
                )
                rc.chmod(0o600)
                argv += ["--rcfile", str(rc)]
            env["HOME"] = str(directory)
            argv += ["--getmaildir", str(state), "--quiet"]
            return argv, self._give_to_nobody(directory), env
        raise ValueError(f"unknown client {client!r} for several accounts")

    def run_client(self, client: str, workload: Workload, number: int) -> Run:
        """One run of ``client`` into fresh Maildirs (one per account), measured and checked."""
        directory, maildirs = self._fresh(client, workload, number)
        if isinstance(workload, AccountSet):
            argv, (uid, gid), env = self._many_command(client, workload, directory, maildirs)
            checks = list(zip(maildirs, workload.accounts, strict=True))
        else:
            argv, (uid, gid), env = self._command(client, workload, directory, maildirs[0])
            checks = [(maildirs[0], workload)]
        measured = directory / "measure.json"
        run = Run(client, workload.key, number + 1, directory=str(directory))
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
        for maildir, mailbox in checks:
            try:
                delivered, octets, added = check_maildir(maildir, mailbox)
            except (CheckError, OSError) as exc:
                where = f"{maildir.name}: " if len(checks) > 1 else ""
                problem = f"{where}{exc}"
                run.problem = f"{run.problem}; {problem}" if run.problem else problem
            else:
                run.delivered += delivered
                run.octets_on_disk += octets
                run.header_octets += added
        run.ok = run.problem is None
        if not run.ok and client not in FLAKY:
            tail = log.read_text(errors="replace")[-2000:]
            raise BenchmarkAbortedError(f"{client}, {workload.key}: {run.problem}\n{tail}")
        return run

    def profile(self, mailbox: PeerMailbox) -> dict[str, Any]:
        """One more in-process run with aiopop's steps timed (and pyinstrument, if installed)."""
        directory, (maildir,) = self._fresh("profile", mailbox, -99)
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

    def measure(
        self,
        workload: Workload,
        clients: Sequence[str],
        unavailable: dict[str, str] | None = None,
    ) -> FetchResult:
        """Every client once per round (the harness's rounds), each run checked.

        ``unavailable`` names clients that cannot run here, and why: they are
        reported, not run.
        """
        aborted: list[Run] = []

        def run(client: str, number: int) -> Run:
            found = self.run_client(client, workload, number)
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
            label=workload.key,
            describe=lambda r: f"{r.seconds:.3f} s" if r.ok else f"ABORTED ({r.problem})",
            before=lambda: {
                "load_1min_at_start": _load(),
                "create_probe_ms": round(self.probe(), 4),
            },
            after=lambda: {"load_1min_at_end": _load()},
        )
        return FetchResult(workload, rounds, aborted, unavailable=dict(unavailable or {}))
