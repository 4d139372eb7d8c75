"""One very large message: aiopop's ``retr_to_file`` against ``retr`` into memory.

Both log in, fetch message 1 and quit; the span covers the fetch only (for
``retr_to_file`` that includes writing, the fsync and the rename, which is
what the call does before it returns). The file is checked after the span by
reading it back in pieces, so the check adds nothing to the span's memory.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

import aiopop
from benchmarks.harness.measure import Span

from .clients import TIMEOUT
from .outcome import Outcome, from_messages
from .spec import ServerSpec

__all__ = ["fetch_memory", "fetch_to_file"]

READ_SIZE = 1024 * 1024


def _client(server: ServerSpec) -> aiopop.POP3:
    if server.cafile is not None:
        raise ValueError("the large-message workload runs over plain POP3 only")
    return aiopop.POP3(server.host, server.port, timeout=TIMEOUT)


async def _to_file(server: ServerSpec, path: Path, span: Span, fsync: bool) -> int:
    async with _client(server) as client:
        await client.user(server.user)
        await client.pass_(server.password)
        span.start()
        written = await client.retr_to_file(1, path, fsync=fsync)
        span.stop()
    return written


def _file_digest(path: Path) -> tuple[int, str]:
    hashed = hashlib.sha256()
    size = 0
    with path.open("rb") as file:
        while chunk := file.read(READ_SIZE):
            hashed.update(chunk)
            size += len(chunk)
    return size, hashed.hexdigest()


def fetch_to_file(server: ServerSpec, directory: str, span: Span, *, fsync: bool) -> Outcome:
    """``retr_to_file(1, path, fsync=fsync)`` into a fresh file in ``directory``, removed after."""
    path = Path(directory) / f"message-{os.getpid()}.eml"
    try:
        written = asyncio.run(_to_file(server, path, span, fsync))
        size, hexdigest = _file_digest(path)
    finally:
        path.unlink(missing_ok=True)
    if written != size:
        raise AssertionError(f"retr_to_file said {written} octets, the file holds {size}")
    return Outcome(size, 1, [(size, hexdigest)])


async def _memory(server: ServerSpec, span: Span, got: list[bytes]) -> None:
    async with _client(server) as client:
        await client.user(server.user)
        await client.pass_(server.password)
        span.start()
        got.append(await client.retr(1))
        span.stop()


def fetch_memory(server: ServerSpec, span: Span) -> Outcome:
    """``retr(1)``: the whole message into memory."""
    got: list[bytes] = []  # not the coroutine's result: see clients.fetch_aiopop
    asyncio.run(_memory(server, span, got))
    return from_messages(got)
