"""An arq worker that checks POP3 mailboxes with aiopop (see README.md here).

Run as many of these as you like, on as many machines as reach the Redis
server; arq hands each job to exactly one of them at a time::

    cd examples/scale_out
    AIOPOP_REDIS_URL=redis://127.0.0.1:6379/0 POP3_PASSWORD=... arq aiopop_worker.WorkerSettings

A job names an account by its POP URL (``pops://alice@pop.example.com``) and
a *reference* to its secret: the name of an environment variable of the
worker. The secret itself never travels through the queue, nor into a
result or a log line. The check is read-only (log in, STAT, QUIT), so
running it twice, as arq may after a worker crash, is harmless.

Settings come from the worker's environment:

* ``AIOPOP_REDIS_URL``: the queue's Redis (``redis://127.0.0.1:6379/0``);
* ``AIOPOP_MAX_JOBS``: checks one worker runs at once (20);
* ``AIOPOP_POLL_DELAY``: seconds between two looks at the queue (0.5).
"""

from __future__ import annotations

import os
import socket
import time
from typing import Any, ClassVar

from arq.connections import RedisSettings

import aiopop
from aiopop import Account, TLSPolicy, secret_from_env

QUEUE = "aiopop:checks"
"""The arq queue (a Redis sorted set) the jobs wait in."""

WORKERS_KEY = "aiopop:workers"
"""A Redis hash of the running workers: ``pid@host`` -> the time it started."""

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


def redis_settings(url: str | None = None) -> RedisSettings:
    """Where the queue lives: ``url``, else ``$AIOPOP_REDIS_URL``, else the local default."""
    return RedisSettings.from_dsn(url or os.environ.get("AIOPOP_REDIS_URL") or DEFAULT_REDIS_URL)


def worker_name() -> str:
    """This worker process, as results and the workers hash name it."""
    return f"{os.getpid()}@{socket.gethostname()}"


async def check_account(
    ctx: dict[str, Any],
    url: str,
    *,
    secret_env: str,
    tls: TLSPolicy | None = None,
    allow_cleartext: bool = False,
    reply_timeout: float = 30.0,
) -> dict[str, Any]:
    """Log in to the account at ``url``, STAT, QUIT; return what happened as a dict.

    ``secret_env`` names the environment variable (of this worker) holding
    the password. ``tls`` overrides the URL's TLS mode (``pop://`` means
    STLS required, ``pops://`` implicit TLS); ``reply_timeout`` bounds each
    connect and each reply, in seconds. Every expected failure becomes
    a result with ``ok`` false and a ``reason``; only a bug raises.
    """
    started = time.monotonic()
    result: dict[str, Any] = {
        "account": url,
        "ok": False,
        "worker": worker_name(),
        "pid": os.getpid(),
        "try": ctx.get("job_try", 1),
    }
    options: dict[str, Any] = {"allow_cleartext": allow_cleartext, "timeout": reply_timeout}
    if tls is not None:
        options["tls"] = tls
    try:
        account = Account.from_url(url, password=secret_from_env(secret_env), **options)
        async with account.session() as client:
            count, size = await client.stat()
    except Exception as exc:  # classified by aiopop.diagnose; anything unexpected is re-raised
        failure = aiopop.diagnose(exc)
        if failure.kind is aiopop.FailureKind.ERROR:
            raise
        # str(exc) is safe to keep: aiopop never puts a secret in an error message.
        result.update(
            reason=failure.reason,
            retryable=failure.retryable,
            error=type(exc).__name__,
            detail=str(exc),
        )
        if isinstance(exc, aiopop.ResponseError):
            result.update(code=exc.code)
    else:
        result.update(ok=True, messages=count, size=size)
    result["seconds"] = round(time.monotonic() - started, 3)
    return result


async def startup(ctx: dict[str, Any]) -> None:
    """Announce this worker in the workers hash."""
    await ctx["redis"].hset(WORKERS_KEY, worker_name(), str(time.time()))


async def shutdown(ctx: dict[str, Any]) -> None:
    """Leave the workers hash."""
    await ctx["redis"].hdel(WORKERS_KEY, worker_name())


class WorkerSettings:
    """What ``arq aiopop_worker.WorkerSettings`` runs."""

    functions: ClassVar[list[Any]] = [check_account]
    on_startup = startup
    on_shutdown = shutdown
    queue_name = QUEUE
    redis_settings = redis_settings()
    max_jobs = int(os.environ.get("AIOPOP_MAX_JOBS", "20"))
    poll_delay = float(os.environ.get("AIOPOP_POLL_DELAY", "0.5"))
    job_timeout = 120  # seconds; a check that takes longer is cancelled
    keep_result = 24 * 3600  # results stay a day, so a rerun of the collector finds them
    max_tries = 3  # after a worker crash arq runs a job again, at most this often in all
