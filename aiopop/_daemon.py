"""``aiopop watch ACCOUNTS.toml``: poll every account of a file for ever, a daemon.

fetchmail's daemon mode and getmail's loop, on the one per-account path of
``aiopop fetch`` (:func:`aiopop._cli_fetch.fetch_account`, so on the
delivery engine :func:`aiopop.fetch_into`): each account has one poller,
which fetches the new messages (by UIDL and size), delivers them as the file
says (a Maildir or a command), applies the account's policy, and sleeps
``--interval`` seconds (at least the LOGIN-DELAY the server announces after
login, RFC 2449 section 6.5) before the next poll. An account never has two
polls at once: one poller per mailbox and state file, and the state's lock
besides.

Failures: what :func:`aiopop.diagnose` calls a refused login (exit status 3:
wrong credentials, no safe method, a method not offered) stops that
account's polling until the daemon is reloaded, so that a changed password
never locks the account by retrying; everything else (a password command
that failed, the network, the server's ``[SYS/TEMP]``, a full disk) is
retried after a backoff with full jitter. No login comes sooner than the
server's LOGIN-DELAY allows, across failures and reloads. The other
accounts go on.

Signals: SIGHUP reloads the file (each poller finishes the poll in progress
and the new configuration takes over; a file that does not load is
reported and the old one kept); SIGTERM and SIGINT stop the daemon within a
few seconds: every poll is cancelled, a delivery command in progress gets
:data:`aiopop._programs.GRACE` seconds after SIGTERM and is then killed,
the session ends without QUIT (so no deletion of that poll commits), and
the message being delivered stays on the server. Delivery is at least
once: a message whose delivery completed but was not yet recorded when
the daemon stopped is delivered again.

One line per event on the output (``--json``: one JSON object per line,
with ``time``, ``event``, ``account`` and the event's fields).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import random
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from ._cli_fetch import Fetched, failure_message, fetch_account, load_targets
from ._cli_report import explain, human_size, plural
from ._errors import EXIT_AUTH, EXIT_OK, LoginDelayError, diagnose
from ._targets import FetchSettings, FetchTarget

__all__ = ["BACKOFF", "Daemon", "run_daemon"]

BACKOFF = (10.0, 1800.0)
"""After the n-th consecutive failure of an account (from 0), the next poll waits a delay
drawn uniformly from ``[0, min(1800, 10 * 2**n)]`` seconds ("full jitter")."""
STOP_WAIT = 10.0
"""Seconds the daemon waits for its cancelled polls to end when told to stop."""


class Log:
    """One line per event: text, or a JSON object with ``--json``."""

    def __init__(self, out: TextIO, *, as_json: bool, clock: Callable[[], float] = time.time):
        self.out = out
        self.as_json = as_json
        self.clock = clock

    def __call__(self, event: str, account: str | None, text: str, **fields: Any) -> None:
        now = time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(self.clock()))
        if self.as_json:
            record = {"time": now, "event": event, "account": account, **fields}
            line = json.dumps(record)
        else:
            line = f"{now} {account or 'aiopop'}: {text}"
        print(line, file=self.out, flush=True)


@dataclass(eq=False)
class _Poller:
    """One account's loop, and how to retire it after its poll in progress."""

    target: FetchTarget
    retiring: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None

    @property
    def key(self) -> tuple[str, Path]:
        return (self.target.account.mailbox_key, self.target.state_path)

    @property
    def name(self) -> str:
        return self.target.account.name


class Daemon:
    """``aiopop watch ACCOUNTS``: the pollers of a file of accounts, reloaded on SIGHUP."""

    def __init__(
        self,
        path: str,
        *,
        defaults: FetchSettings,
        interval: float,
        polls: int | None,
        concurrency: int,
        per_host: int,
        timeout: float | None,
        cafile: str | None,
        log: Log,
        backoff: tuple[float, float] = BACKOFF,
        jitter: Callable[[float], float] | None = None,
    ) -> None:
        self.path = path
        self.defaults = defaults
        self.interval = interval
        self.polls = polls
        self.per_host = per_host
        self.timeout = timeout
        self.cafile = cafile
        self.log = log
        self.backoff = backoff
        self.jitter = jitter or (lambda ceiling: random.uniform(0.0, ceiling))  # noqa: S311
        self._all = asyncio.Semaphore(concurrency)
        self._hosts: dict[str, asyncio.Semaphore] = {}
        self._pollers: dict[tuple[str, Path], _Poller] = {}
        self._next_login: dict[tuple[str, Path], float] = {}
        """When each mailbox may log in again by its server's LOGIN-DELAY (monotonic)."""
        self._reload = asyncio.Event()
        self._stop = asyncio.Event()

    def _load(self) -> list[FetchTarget]:
        return load_targets(self.path, self.defaults, self.timeout, self.cafile)

    async def run(self) -> int:
        """Poll until stopped (or, with ``polls``, until every account made that many polls).

        A file that does not load at start raises (:class:`~aiopop.AccountError`:
        exit status 2); later, on SIGHUP, it is reported and the old one kept.
        """
        targets = self._load()
        with self._signals():
            self.log(
                "started",
                None,
                f"watching {plural(len(targets), 'account')} of {self.path}, a poll every"
                f" {self.interval:g} s",
                accounts=[target.account.name for target in targets],
                interval=self.interval,
            )
            self._start(targets)
            while True:
                pollers = [p.task for p in self._pollers.values() if p.task is not None]
                stop = asyncio.ensure_future(self._stop.wait())
                reload = asyncio.ensure_future(self._reload.wait())
                # Without --polls, accounts that stopped (a refused login) wait for a reload:
                # the daemon runs until told to stop.
                counted = pollers and self.polls is not None
                done = asyncio.ensure_future(asyncio.wait(pollers)) if counted else None
                waits = [stop, reload] + ([done] if done is not None else [])
                try:
                    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for waiting in waits:
                        waiting.cancel()
                if self._stop.is_set():
                    await self._stop_all()
                    self.log("stopped", None, "stopped")
                    return EXIT_OK
                if self._reload.is_set():
                    self._reload.clear()
                    self._reload_file()
                elif self.polls is not None and all(
                    p.task is None or p.task.done() for p in self._pollers.values()
                ):
                    self.log("finished", None, "every account made its polls")
                    return EXIT_OK

    @contextlib.contextmanager
    def _signals(self) -> Iterator[None]:
        loop = asyncio.get_running_loop()
        handled = {
            signal.SIGHUP: self._reload.set,
            signal.SIGTERM: self._stop.set,
            signal.SIGINT: self._stop.set,
        }
        for number, handler in handled.items():
            loop.add_signal_handler(number, handler)
        try:
            yield
        finally:
            for number in handled:
                loop.remove_signal_handler(number)

    def _start(self, targets: list[FetchTarget]) -> None:
        """A poller per target; one that replaces a poller of the same mailbox and state
        starts once that one's poll in progress has ended."""
        old = self._pollers
        self._pollers = {}
        for target in targets:
            poller = _Poller(target)
            previous = old.pop(poller.key, None)
            self._pollers[poller.key] = poller
            poller.task = asyncio.create_task(
                self._poll_forever(poller, previous), name=f"aiopop watch: {poller.name}"
            )
        for gone in old.values():  # no longer in the file: retired after the poll in progress
            gone.retiring.set()

    def _reload_file(self) -> None:
        try:
            targets = self._load()
        except Exception as exc:
            status, message, _ = explain(exc)
            self.log(
                "reload-failed",
                None,
                f"the file was not reloaded, the accounts go on as before: {message}",
                error=message,
                status=status,
            )
            return
        self.log(
            "reloaded",
            None,
            f"reloaded {self.path}: {plural(len(targets), 'account')}",
            accounts=[target.account.name for target in targets],
        )
        for poller in self._pollers.values():
            poller.retiring.set()
        self._start(targets)

    async def _stop_all(self) -> None:
        tasks = [p.task for p in self._pollers.values() if p.task is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=STOP_WAIT)

    @contextlib.asynccontextmanager
    async def _slot(self, host: str) -> Any:
        per_host = self._hosts.setdefault(host, asyncio.Semaphore(self.per_host))
        async with self._all, per_host:
            yield

    def _delay(self, failures: int) -> float:
        first, ceiling = self.backoff
        return max(0.0, self.jitter(min(ceiling, first * 2.0 ** min(failures, 64))))

    async def _poll_forever(self, poller: _Poller, previous: _Poller | None) -> None:
        if previous is not None and previous.task is not None:
            previous.retiring.set()
            await asyncio.wait([previous.task])
        failures = 0
        made = 0
        # The server's LOGIN-DELAY outlives a reload: the new poller waits for it too.
        await self._nap(poller, self._login_delay_left(poller))
        while not poller.retiring.is_set():
            outcome = await self._poll(poller, failures)
            if outcome is None:
                return  # stopped until a reload
            succeeded, wait = outcome
            failures = 0 if succeeded else failures + 1
            made += 1
            if self.polls is not None and made >= self.polls:
                return
            await self._nap(poller, max(wait, self._login_delay_left(poller)))

    @staticmethod
    async def _nap(poller: _Poller, seconds: float) -> None:
        """Sleep ``seconds``, or until the poller is retired."""
        if seconds > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(poller.retiring.wait(), seconds)

    def _login_delay_left(self, poller: _Poller) -> float:
        """Seconds until the server's LOGIN-DELAY allows this mailbox's next login."""
        return self._next_login.get(poller.key, 0.0) - time.monotonic()

    async def _poll(self, poller: _Poller, failures: int) -> tuple[bool, float] | None:
        """One poll: whether it succeeded and the seconds until the next; None when the
        account stops until a reload."""
        name = poller.name
        try:
            async with self._slot(poller.target.account.host):
                fetched = await fetch_account(poller.target, ask_login_delay=True)
        except Exception as exc:
            failure = diagnose(exc)
            message = failure_message(Fetched(poller.target, error=exc))
            if failure.exit_status == EXIT_AUTH:
                # Refused: retrying with the same secret could lock the account.
                self.log(
                    "stopped",
                    name,
                    f"{failure.reason}: {message}; this account is not polled again until"
                    " the daemon is reloaded (SIGHUP)",
                    reason=failure.reason,
                    error=message,
                )
                return None
            wait = self._delay(failures)
            if isinstance(exc, LoginDelayError) and exc.delay:
                wait = max(wait, float(exc.delay))
            self.log(
                "failed",
                name,
                f"{failure.reason}: {message}; trying again in {wait:.0f} s",
                reason=failure.reason,
                error=message,
                retry_in=round(wait, 3),
            )
            return False, wait
        if fetched.login_delay:
            self._next_login[poller.key] = time.monotonic() + fetched.login_delay
        if fetched.ended is not None:  # QUIT failed: the deletions were rolled back
            wait = self._delay(failures)
            self._report(fetched, wait)
            return False, wait
        self._report(fetched, max(self.interval, fetched.login_delay))
        return True, max(self.interval, fetched.login_delay)

    def _report(self, fetched: Fetched, wait: float) -> None:
        name, result = fetched.account.name, fetched.result
        assert result is not None
        for failed in result.undelivered:
            self.log(
                "undelivered",
                name,
                f"message {failed.uid or failed.number} not delivered: {failed.error}; left"
                " on the server, tried again next poll",
                uid=failed.uid,
                error=str(failed.error),
            )
        for big in result.oversized:
            self.log(
                "oversized",
                name,
                f"message {big.uid or big.number} ({human_size(big.size)}) is over the size"
                " limit: left on the server",
                uid=big.uid,
                size=big.size,
            )
        for judged in result.filtered:
            what = "left on the server" if judged.verdict == "skip" else "deleted unread"
            by = "the filter" if judged.by == "filter" else "its size"
            self.log(
                "filtered",
                name,
                f"message {judged.uid or judged.number} ({human_size(judged.size)}): {what},"
                f" by {by}",
                uid=judged.uid,
                verdict=judged.verdict,
                by=judged.by,
            )
        for refusal in result.refused:
            self.log(
                "refused",
                name,
                f"message {refusal.uid or refusal.number}: the server refused: {refusal.error}",
                uid=refusal.uid,
                error=str(refusal.error),
            )
        if fetched.ended is not None:
            message = failure_message(fetched)
            self.log(
                "failed",
                name,
                f"{diagnose(fetched.ended).reason}: {message}; trying again in {wait:.0f} s",
                reason=diagnose(fetched.ended).reason,
                error=message,
                retry_in=round(wait, 3),
            )
            return
        octets = sum(delivery.size for delivery in result.delivered)
        self.log(
            "polled",
            name,
            f"{plural(len(result.delivered), 'message')} delivered ({human_size(octets)}),"
            f" {len(fetched.deleted)} deleted; next poll in {wait:g} s",
            delivered=len(result.delivered),
            octets=octets,
            deleted=len(fetched.deleted),
            filtered=len(result.filtered),
            next_poll=wait,
        )


async def run_daemon(
    path: str,
    *,
    defaults: FetchSettings,
    interval: float,
    polls: int | None,
    concurrency: int,
    per_host: int,
    timeout: float | None,  # noqa: ASYNC109 - one step, as everywhere in aiopop
    cafile: str | None,
    as_json: bool,
    out: TextIO,
) -> int:
    """``aiopop watch ACCOUNTS.toml``: the daemon; 0 when stopped, 2 for a bad file at start."""
    if not (interval > 0 and math.isfinite(interval)):
        raise ValueError(f"interval must be a positive number of seconds, not {interval!r}")
    daemon = Daemon(
        path,
        defaults=defaults,
        interval=interval,
        polls=polls,
        concurrency=concurrency,
        per_host=per_host,
        timeout=timeout,
        cafile=cafile,
        log=Log(out, as_json=as_json),
    )
    return await daemon.run()
