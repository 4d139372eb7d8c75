"""Shard a list of POP3 accounts over arq workers and collect one result per account.

    cd examples/scale_out
    python check_accounts.py accounts.txt --redis redis://127.0.0.1:6379/0

``accounts.txt`` has one account a line: its POP URL and, optionally, the
name of the environment variable that holds its password *in the workers'
environment* (``--secret-env`` for the lines that name none)::

    pops://alice@pop.example.com            ALICE_PASSWORD
    pop://bob;AUTH=+APOP@mail.example.org   BOB_PASSWORD

Each account becomes one arq job whose id is derived from the run name and
the URL, so enqueueing the same run twice (say, after this script was
interrupted) adds no job: arq refuses an id that is queued, running or has
a result, and this script then simply collects the result already there.
Results are printed as JSON lines, one per account, in the order of the
file; a summary goes to stderr. Exit status: 0 when every check succeeded,
1 when some failed, 2 when some result did not arrive within ``--wait``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

from aiopop_worker import QUEUE, redis_settings
from arq import create_pool
from arq.connections import ArqRedis
from arq.jobs import Job, ResultNotFound
from redis.exceptions import RedisError

from aiopop import Account, AccountError, TLSPolicy


@dataclass(frozen=True)
class Entry:
    """One line of the accounts file: the account's URL and its secret's variable name."""

    url: str
    secret_env: str


def read_accounts(path: Path, default_env: str) -> list[Entry]:
    """The accounts file's entries, each URL checked and given once."""
    entries: dict[str, Entry] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        fields = line.split("#", 1)[0].split()
        if not fields:
            continue
        if len(fields) > 2:
            raise AccountError(f"{path}:{number}: expected a POP URL and a variable name")
        url = fields[0]
        Account.from_url(url)  # refuse a bad URL here, before anything is enqueued
        entries.setdefault(url, Entry(url, fields[1] if len(fields) == 2 else default_env))
    return list(entries.values())


def job_id(run: str, url: str) -> str:
    """The job's id: one per account and run, so a rerun never enqueues it twice."""
    return f"aiopop:check:{run}:{url}"


async def enqueue(redis: ArqRedis, entries: list[Entry], args: argparse.Namespace) -> int:
    """Enqueue one job per entry; return how many were new."""
    added = 0
    for entry in entries:
        job = await redis.enqueue_job(
            "check_account",
            entry.url,
            secret_env=entry.secret_env,
            tls=args.tls,
            allow_cleartext=args.allow_cleartext,
            reply_timeout=args.timeout,
            _job_id=job_id(args.run, entry.url),
            _queue_name=QUEUE,
        )
        added += job is not None
    return added


async def collect(
    redis: ArqRedis, entries: list[Entry], run: str, wait: float
) -> dict[str, dict[str, Any]]:
    """Each entry's result, by URL; a result that is not there by the deadline says so."""
    deadline = time.monotonic() + wait
    results: dict[str, dict[str, Any]] = {}
    for entry in entries:
        job = Job(job_id(run, entry.url), redis, _queue_name=QUEUE)
        remaining = max(deadline - time.monotonic(), 0.0)
        try:
            result = await job.result(timeout=remaining, poll_delay=0.1)
        except (TimeoutError, ResultNotFound):
            result = {"account": entry.url, "ok": False, "reason": "missing"}
        except Exception as exc:  # the job raised: a bug in the worker, not a POP3 failure
            result = {
                "account": entry.url,
                "ok": False,
                "reason": "job-failed",
                "detail": repr(exc),
            }
        results[entry.url] = result
    return results


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("accounts", type=Path, help="one POP URL [variable name] a line")
    parser.add_argument("--redis", help="the queue's Redis URL (default: $AIOPOP_REDIS_URL)")
    parser.add_argument(
        "--run",
        default=time.strftime("%Y-%m-%dT%H", time.gmtime()),
        help="the run's name, part of each job id (default: the current UTC hour)",
    )
    parser.add_argument(
        "--secret-env",
        default="POP3_PASSWORD",
        help="the password variable for lines that name none (default: POP3_PASSWORD)",
    )
    parser.add_argument("--tls", choices=get_args(TLSPolicy), help="override each URL's TLS mode")
    parser.add_argument(
        "--allow-cleartext", action="store_true", help="allow a password in the clear"
    )
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per POP3 reply")
    parser.add_argument(
        "--wait", type=float, default=600.0, help="seconds to wait for all results (600)"
    )
    args = parser.parse_args(argv)
    try:
        entries = read_accounts(args.accounts, args.secret_env)
    except (OSError, AccountError) as exc:
        print(f"check_accounts: {exc}", file=sys.stderr)
        return 2

    try:
        redis = await create_pool(redis_settings(args.redis), default_queue_name=QUEUE)
    except (OSError, RedisError) as exc:
        print(f"check_accounts: cannot reach Redis: {exc}", file=sys.stderr)
        return 2
    try:
        added = await enqueue(redis, entries, args)
        results = await collect(redis, entries, args.run, args.wait)
    finally:
        await redis.aclose()

    for entry in entries:
        print(json.dumps(results[entry.url], sort_keys=True))
    failed = [r for r in results.values() if not r["ok"]]
    missing = [r for r in failed if r["reason"] == "missing"]
    workers = sorted({r["worker"] for r in results.values() if "worker" in r})
    print(
        f"check_accounts: run {args.run}: {len(entries)} accounts ({added} enqueued now, "
        f"{len(entries) - added} already known), {len(entries) - len(failed)} ok, "
        f"{len(failed) - len(missing)} failed, {len(missing)} missing; "
        f"{len(workers)} workers: {' '.join(workers)}",
        file=sys.stderr,
    )
    return 2 if missing else 1 if failed else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
