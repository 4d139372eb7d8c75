"""Scale-out on arq: 200 accounts sharded over two worker processes (examples/scale_out/).

A private Redis (servers/redis_server.py), an in-process POP3TestServer with
mailboxes user0..user199, two ``arq aiopop_worker.WorkerSettings`` worker
processes and the example's ``check_accounts.py``, all as a user would run
them. Without ``redis-server`` or arq the test is skipped, except on CI
(``CI=true``), where that is a failure: CI must run it.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest

from aiopop.testing import Mailbox, POP3TestServer
from servers.redis_server import RedisError, RedisServer

pytestmark = pytest.mark.redis

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "scale_out"
PASSWORD = "scale-out s3cret"
ACCOUNTS = 200
WORKERS_KEY = "aiopop:workers"  # examples/scale_out/aiopop_worker.py: WORKERS_KEY


def _unavailable(reason: str) -> NoReturn:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"Redis and arq are required on CI: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A private redis-server on 127.0.0.1, for this test only."""
    if importlib.util.find_spec("arq") is None:
        _unavailable("arq is not installed (pip install -e '.[scale]')")
    server = RedisServer()
    failure = None
    try:
        server.start()
    except RedisError as exc:
        failure = str(exc)
    if failure is not None:
        _unavailable(f"Redis could not be started: {failure}")  # outside the except
    try:
        yield server
    finally:
        server.stop()


def message(n: int, i: int) -> bytes:
    return b"Subject: message %d for user%d\r\n\r\nHello.\r\n" % (n, i)


def mailboxes() -> dict[str, Mailbox]:
    boxes = {
        f"user{i}": Mailbox(PASSWORD, [message(n, i) for n in range(i % 7)])
        for i in range(ACCOUNTS)
    }
    boxes["locked"] = Mailbox(PASSWORD, locked=True)
    return boxes


class Worker:
    """One ``arq aiopop_worker.WorkerSettings`` process, its output in a log file."""

    def __init__(self, process: asyncio.subprocess.Process, log: Path) -> None:
        self.process = process
        self.log = log

    @classmethod
    async def start(cls, env: dict[str, str], log: Path) -> Worker:
        with log.open("wb") as out:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "arq",
                "aiopop_worker.WorkerSettings",
                cwd=EXAMPLE,
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
            )
        return cls(process, log)

    @property
    def pid(self) -> int:
        return self.process.pid

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]

    async def stop(self) -> int:
        """SIGTERM (arq's graceful stop), then SIGKILL after 15 s; the exit status."""
        if self.process.returncode is None:
            self.process.terminate()
            try:
                await asyncio.wait_for(self.process.wait(), 15)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        assert self.process.returncode is not None
        return self.process.returncode


@pytest.fixture
async def workers(redis_server: RedisServer, tmp_path: Path) -> AsyncIterator[list[Worker]]:
    """Two worker processes on the private Redis, registered and polling."""
    import redis.asyncio

    env = {
        **os.environ,
        "AIOPOP_REDIS_URL": redis_server.url,
        "AIOPOP_MAX_JOBS": "5",
        "AIOPOP_POLL_DELAY": "0.05",
        "POP3_PASSWORD": PASSWORD,
    }
    env.pop("NO_SUCH_PASSWORD", None)
    started: list[Worker] = []
    try:
        for n in range(2):
            started.append(await Worker.start(env, tmp_path / f"worker{n}.log"))
        client = redis.asyncio.Redis.from_url(redis_server.url)
        try:
            wanted = {str(w.pid) for w in started}
            deadline = time.monotonic() + 30
            while True:
                names = {key.decode().split("@")[0] for key in await client.hkeys(WORKERS_KEY)}
                if wanted <= names:
                    break
                dead = [w for w in started if w.process.returncode is not None]
                if dead or time.monotonic() > deadline:
                    logs = "\n".join(w.output() for w in started)
                    pytest.fail(f"the workers did not start:\n{logs}", pytrace=False)
                await asyncio.sleep(0.05)
            yield started
            for worker in started:
                assert await worker.stop() == 0, worker.output()
            assert await client.hlen(WORKERS_KEY) == 0  # each left the hash on its way out
        finally:
            await client.aclose()
    finally:
        for worker in started:
            await worker.stop()


async def check_accounts(accounts: Path, redis_url: str) -> tuple[int, list[dict[str, Any]], str]:
    """Run the example's enqueue-and-collect script; its exit status, results and summary."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "check_accounts.py",
        str(accounts),
        "--redis",
        redis_url,
        "--run",
        "test",
        "--tls",
        "none",
        "--wait",
        "60",
        cwd=EXAMPLE,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 90)
    assert process.returncode is not None
    results = [json.loads(line) for line in out.decode().splitlines()]
    return process.returncode, results, err.decode()


async def test_two_workers_check_200_accounts_each_exactly_once(
    redis_server: RedisServer, workers: list[Worker], tmp_path: Path
) -> None:
    async with POP3TestServer(mailboxes()) as server:
        base = f"{server.host}:{server.port}"
        good = [f"pop://user{i}@{base}" for i in range(ACCOUNTS)]
        failing = {
            f"pop://nobody@{base}": "credentials",
            f"pop://locked@{base}": "in use",
            f"pop://user0;AUTH=+APOP@{base} NO_SUCH_PASSWORD": "account",
        }
        accounts = tmp_path / "accounts.txt"
        accounts.write_text("# URL [password variable]\n" + "\n".join([*good, *failing]) + "\n")

        started = time.monotonic()
        code, results, summary = await check_accounts(accounts, redis_server.url)
        elapsed = time.monotonic() - started
        assert code == 1, summary  # some checks failed, none is missing
        by_account = Counter(r["account"] for r in results)
        expected = [*good, *(line.split()[0] for line in failing)]
        assert sorted(by_account) == sorted(expected)
        assert set(by_account.values()) == {1}, "a result appears twice"

        results_by = {r["account"]: r for r in results}
        for i, url in enumerate(good):
            result = results_by[url]
            count = i % 7
            size = sum(len(message(n, i)) for n in range(count))
            assert (result["ok"], result["messages"], result["size"]) == (True, count, size)
        for line, reason in failing.items():
            result = results_by[line.split()[0]]
            assert (result["ok"], result["reason"]) == (False, reason), result
        assert "s3cret" not in json.dumps(results)

        # Both workers took part; every result names one of them.
        pids = Counter(r["pid"] for r in results if "pid" in r)
        assert set(pids) == {w.pid for w in workers}, pids
        assert f"{ACCOUNTS} ok, 3 failed, 0 missing" in summary

        # The server saw each mailbox logged in to exactly once, each session ended with QUIT.
        logins = Counter(s.user for s in server.sessions if s.user is not None)
        assert logins == Counter({f"user{i}": 1 for i in range(ACCOUNTS)})
        assert all(s.quit for s in server.sessions if s.user is not None)
        assert not any(line.startswith(b"DELE") for s in server.sessions for line in s.lines)

        # The same run again enqueues nothing: the results already there are collected.
        sessions = len(server.sessions)
        code, again, summary = await check_accounts(accounts, redis_server.url)
        assert code == 1, summary
        assert again == results
        assert f"0 enqueued now, {len(expected)} already known" in summary
        assert len(server.sessions) == sessions
    print(f"{len(expected)} accounts checked by 2 workers in {elapsed:.1f} s ({dict(pids)})")
