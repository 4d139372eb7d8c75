"""The command line's tests share these: the account's secrets, its messages, and running
``python -m aiopop`` as a user runs it (a subprocess)."""

from __future__ import annotations

import asyncio
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from aiopop.testing import POP3TestServer

PASSWORD = "tanstaaf"
MESSAGES = [b"Subject: one\r\n\r\nfirst\r\n", b"Subject: two\r\n\r\n" + b"x" * 500 + b"\r\n"]


@dataclass
class Run:
    status: int
    out: str
    err: str


async def aiopop_command(*args: str, env: dict[str, str] | None = None) -> Run:
    """Run ``python -m aiopop ARGS`` with stdin not a terminal; collect its output."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "aiopop",
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return Run(process.returncode, out.decode(), err.decode())


def mailbox_args(server: POP3TestServer, cafile: Path, *more: str) -> list[str]:
    return [
        server.host,
        "u",
        "--port",
        str(server.port),
        "--cafile",
        str(cafile),
        "--password-env",
        "AIOPOP_TEST_PASSWORD",
        *more,
    ]


def plain_args(server: POP3TestServer, *more: str) -> list[str]:
    """HOST USER for a cleartext server, the password from the environment."""
    return [
        server.host,
        "u",
        "--port",
        str(server.port),
        "--tls",
        "none",
        "--allow-cleartext",
        "--password-env",
        "AIOPOP_TEST_PASSWORD",
        *more,
    ]
