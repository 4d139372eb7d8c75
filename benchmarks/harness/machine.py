"""What machine and software the numbers were measured on."""

from __future__ import annotations

import os
import platform
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiopop
from servers.dovecot import find_dovecot

__all__ = ["machine_info", "one_line", "short_line"]


def _nproc() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or "unknown"
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("model name", "Model", "cpu model"):
            return value.strip()
    return platform.processor() or "unknown"


def _output(command: list[str]) -> str:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return done.stdout.strip() if done.returncode == 0 and done.stdout.strip() else "unknown"


def machine_info(repository: Path) -> dict[str, Any]:
    """nproc, CPU model, memory, Python, Dovecot, kernel, aiopop's version and commit, the date."""
    dovecot = find_dovecot()
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "nproc": _nproc(),
        "cpu_model": _cpu_model(),
        "memory_gib": round(memory / 2**30, 1),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "dovecot": _output([dovecot, "--version"]) if dovecot else "not installed",
        "kernel": f"{platform.system()} {platform.release()} {platform.machine()}",
        "aiopop": aiopop.__version__,
        "commit": _output(["git", "-C", str(repository), "rev-parse", "--short", "HEAD"]),
    }


def one_line(info: dict[str, Any]) -> str:
    """The machine in one line, for the report's header."""
    return (
        f"{info['cpu_model']}, nproc {info['nproc']}, {info['memory_gib']} GiB; "
        f"{info['kernel']}; {info['python']}; Dovecot {info['dovecot']}; "
        f"aiopop {info['aiopop']} ({info['commit']}); {info['date']}"
    )


def short_line(info: dict[str, Any]) -> str:
    """The machine in a few words, for the chart's caption."""
    return (
        f"{info['cpu_model']}, {info['nproc']} CPUs; {info['python']}; Dovecot "
        f"{str(info['dovecot']).split()[0]}; aiopop {info['commit']}; {str(info['date'])[:10]}"
    )
