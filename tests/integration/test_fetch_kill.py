"""Killing the fetching process at random points loses no message and duplicates none.

The fetch runs in a child process against a POP3TestServer in this one; the
child is SIGKILLed after a random delay (seeded), then a second child run
is killed too, and a last run in this process finishes the job. After every
kill each message must be on the server or complete in the Maildir, and
none twice; after the last run the server is empty and the Maildir holds
each message exactly once.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import random
import signal
import sqlite3
import sys
import time
from pathlib import Path

import pytest

import aiopop
from aiopop._delivery_state import STATE_FILE
from aiopop._fetch import fetch_to_maildir
from aiopop.testing import Mailbox, POP3TestServer

pytestmark = pytest.mark.slow

USER = "alice"
PASSWORD = "secret"
ACCOUNT = "alice@test"
ITERATIONS = 20
SEED = 20261126
OPTIONS = {"delete": True, "new_only": True, "batch_messages": 5, "stream_threshold": 65536}

CHILD = f"""
import asyncio, sys
import aiopop
from aiopop._fetch import fetch_to_maildir

async def main() -> None:
    port, path = int(sys.argv[1]), sys.argv[2]
    async with aiopop.POP3("127.0.0.1", port, timeout=10) as client:
        await client.login({USER!r}, {PASSWORD!r})
        print("ready", flush=True)
        await fetch_to_maildir(client, path, account={ACCOUNT!r}, **{OPTIONS!r})
    print("done", flush=True)

asyncio.run(main())
"""


def make_messages() -> list[bytes]:
    """40 small messages and 3 of 200 KB (streamed), every one different."""
    small = [b"Subject: small %d\r\n\r\n" % i + b"text\r\n.\r\n..\r\n" * 50 for i in range(40)]
    big = [
        b"Subject: big %d\r\n\r\n" % i + b"%05d line of a big one\r\n" % i * 8000 for i in range(3)
    ]
    return small[:20] + big[:2] + small[20:] + big[2:]


def unix(message: bytes) -> bytes:
    return message.replace(b"\r\n", b"\n")


def in_maildir(path: Path) -> collections.Counter[bytes]:
    return collections.Counter(
        file.read_bytes()
        for sub in ("new", "cur")
        if (path / sub).exists()
        for file in (path / sub).iterdir()
    )


def pending_rows(path: Path) -> int:
    if not (path / STATE_FILE).exists():
        return 0
    db = sqlite3.connect(path / STATE_FILE)
    try:
        (count,) = db.execute("SELECT count(*) FROM messages WHERE delivered = 0").fetchone()
    except sqlite3.OperationalError:  # killed before the table was made
        return 0
    finally:
        db.close()
    return int(count)


def check(path: Path, mailbox: Mailbox, originals: list[bytes]) -> None:
    """Each message on the server or complete in the Maildir; nothing partial, nothing twice."""
    saved = in_maildir(path)
    expected = {unix(message) for message in originals}
    assert set(saved) <= expected, "a partial message reached the Maildir"
    assert max(saved.values(), default=1) == 1, "a message was saved twice"
    on_server = {unix(message) for message in mailbox.messages}  # type: ignore[arg-type]
    assert expected <= set(saved) | on_server, "a message was lost"


async def run_child(port: int, path: Path, delay: float | None) -> tuple[bool, float]:
    """Run the fetch in a child; SIGKILL it ``delay`` seconds after it logged in.

    Returns whether it was killed (rather than done first) and how long it
    ran after logging in.
    """
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CHILD, str(port), str(path), stdout=asyncio.subprocess.PIPE
    )
    assert child.stdout is not None
    try:
        assert await child.stdout.readline() == b"ready\n"
        started = time.perf_counter()
        if delay is None:
            assert await child.wait() == 0
            return False, time.perf_counter() - started
        try:
            await asyncio.wait_for(child.wait(), delay)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):  # it may have ended just now
                child.kill()
            await child.wait()
        return child.returncode == -signal.SIGKILL, time.perf_counter() - started
    finally:
        if child.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                child.kill()
            await child.wait()


async def test_killing_the_fetch_at_random_points_loses_nothing(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    originals = make_messages()
    server = POP3TestServer({})
    async with server:
        # How long a whole run takes here, to spread the kills over it.
        server.mailboxes[USER] = Mailbox(PASSWORD, list(originals))
        _, whole = await run_child(server.port, tmp_path / "calibration", None)
        await server.wait_idle()

        kills = pending = strays = 0
        for iteration in range(ITERATIONS):
            mailbox = Mailbox(PASSWORD, list(originals))
            server.mailboxes[USER] = mailbox
            path = tmp_path / f"run{iteration}"
            for _ in range(2):  # a kill, then a kill of the run that recovers from it
                killed, _ = await run_child(server.port, path, rng.uniform(0, 1.2 * whole))
                await server.wait_idle()
                kills += killed
                pending += pending_rows(path) > 0
                check(path, mailbox, originals)
            strays += len(os.listdir(path / "tmp")) if (path / "tmp").exists() else 0
            async with aiopop.POP3("127.0.0.1", server.port, timeout=10) as client:
                await client.login(USER, PASSWORD)
                await fetch_to_maildir(client, path, account=ACCOUNT, **OPTIONS)  # type: ignore[arg-type]
            await server.wait_idle()
            assert mailbox.messages == [], f"iteration {iteration}: the job was not finished"
            assert in_maildir(path) == collections.Counter(map(unix, originals))
            assert os.listdir(path / "tmp") == [], "a killed run's unfinished file was left"
    print(
        f"\n{ITERATIONS} iterations: {kills} kills over a {whole:.3f} s run;"
        f" {pending} left recorded files in tmp/ for the next run to publish;"
        f" {strays} unfinished files in tmp/ for the next run to remove"
    )
    assert kills >= ITERATIONS // 2  # most runs were interrupted, not finished
