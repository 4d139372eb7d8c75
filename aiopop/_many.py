"""check_many: log in to many mailboxes at once and report each one as it finishes.

::

    from contextlib import aclosing

    async with aclosing(check_many(accounts, concurrency=100, per_host=10)) as results:
        async for result in results:
            if result.ok:
                print(result.account.name, "%d messages, %d octets" % result.stat)
            else:
                print(result.account.name, result.reason, result.error)

Each account is checked as ``async with account.session() as client:``
would (connect, log in), ``stat()`` (and ``uidl()`` when asked), then QUIT: nothing
on the server changes. At most ``concurrency`` checks run at once, and at
most ``per_host`` of them against one host name (compared without regard to
case), so that one provider is never hammered. An account waiting for its
host's turn never holds up the accounts of other hosts. ``deadline`` bounds
each account's whole check, from connecting to the end of QUIT; the
account's own ``timeout`` bounds each step, as everywhere in aiopop.

Every failure is the result of its account and nothing else: a slow, wrong
or hostile server, a refused login or even an unexpected exception (a
secret callable that raised, say) ends that account's check only. Closing
the generator (``aclose()``, leaving an ``aclosing`` block) or cancelling the
task that iterates it cancels every running check and waits for them, so
no connection is left open.

The login method that worked is remembered in memory, per mailbox (its
:attr:`Account.mailbox_key`), for the life of the process: a module-level
mapping shared by every ``check_many`` call. The next check of that
mailbox passes it to :meth:`Account.login` as ``prefer``, so a mailbox
whose server refuses its strongest method for a right password (a stored
hash that cannot serve SCRAM, say) is not charged a failed login on every
round. Nothing is written to disk.

The layer uses the client only through its public API (:class:`Account`,
:class:`aiopop.POP3`), as a program of yours would.
"""

from __future__ import annotations

import asyncio
import collections
import enum
import time
import warnings
from collections.abc import AsyncGenerator, Callable, Coroutine, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final, Generic, TypeVar

from ._accounts import Account
from ._client import DEFAULT_TIMEOUT
from ._errors import POP3TimeoutError, diagnose
from ._types import AuthMethod, Stat, UidEntry

__all__ = ["CheckResult", "check_many", "failure_reason", "run_many"]

Item = TypeVar("Item")
Result = TypeVar("Result")

DEFAULT_CONCURRENCY = 100
DEFAULT_PER_HOST = 10
DEFAULT_DEADLINE = DEFAULT_TIMEOUT
"""Seconds one account's whole check may take by default (each step has the account's
``timeout``)."""
TASK_NAME_PREFIX = "aiopop.check_many: "
"""Every check runs in a task whose name starts with this, then the account's name."""


class _Unset(enum.Enum):
    UNSET = enum.auto()


_UNSET: Final = _Unset.UNSET

_login_methods: dict[str, AuthMethod] = {}
"""The method that last logged in, by :attr:`Account.mailbox_key`, for this process."""


@dataclass(frozen=True, slots=True)
class CheckResult:
    """What checking one account found: its :class:`~aiopop.Stat`, or why there is none.

    ``stat`` is set once STAT was answered; ``uids`` once UIDL was (only
    with ``uidl=True``). ``error`` is the exception that ended the check,
    typed as aiopop raises it (:class:`~aiopop.CredentialsError`,
    :class:`~aiopop.MailboxInUseError`, :class:`~aiopop.POP3TimeoutError`...),
    or the ``OSError`` of a connection that could not be made; ``None`` when
    everything, QUIT included, went well. When QUIT fails after STAT
    succeeded, both ``stat`` and ``error`` are set (nothing was changed on
    the server either way). ``elapsed`` is the seconds the check took, from
    the moment it started (not counting the time it waited for a free slot)
    to its end.
    """

    account: Account
    stat: Stat | None = None
    uids: Sequence[UidEntry] | None = None
    error: BaseException | None = None
    elapsed: float = 0.0

    @property
    def ok(self) -> bool:
        """True when the check ran to the end without an error."""
        return self.error is None

    @property
    def reason(self) -> str | None:
        """A short word for what went wrong (see :func:`failure_reason`); None when ok."""
        return None if self.error is None else failure_reason(self.error)

    def __repr__(self) -> str:
        outcome = (
            f"stat={self.stat!r}"
            if self.error is None
            else f"reason={self.reason!r}, error={self.error!r}"
        )
        uids = "" if self.uids is None else f", uids=<{len(self.uids)}>"
        return f"CheckResult({self.account.name!r}, {outcome}{uids}, elapsed={self.elapsed:.3f})"


def failure_reason(error: BaseException) -> str:
    """A short, stable word for an error that ended a check: :func:`aiopop.diagnose`'s
    ``reason``, the word :attr:`CheckResult.reason` gives.

    ======================  ===================================================================
    ``"credentials"``       :class:`~aiopop.CredentialsError`: ``[AUTH]``, the password or token
                            is wrong
    ``"in use"``            :class:`~aiopop.MailboxInUseError`: ``[IN-USE]``, another session
                            holds the mailbox
    ``"login delay"``       :class:`~aiopop.LoginDelayError`: ``[LOGIN-DELAY]``, too soon after
                            the last login
    ``"temporary"``         :class:`~aiopop.TemporaryFailureError`: ``[SYS/TEMP]``
    ``"permanent"``         :class:`~aiopop.PermanentFailureError`: ``[SYS/PERM]``, a login
                            refused with it included
    ``"authentication"``    any other refused login (:class:`~aiopop.AuthenticationError`
                            without a code: many servers send none)
    ``"timeout"``           the check, or one step of it, took too long
                            (:class:`~aiopop.POP3TimeoutError`)
    ``"tls"``               a certificate or handshake failure, STLS required but not
                            offered, or a login that would have sent a password in cleartext
    ``"connection"``        the connection could not be made, or was lost or reset
    ``"protocol"``          the server broke the protocol (:class:`~aiopop.ProtocolError`,
                            a SASL exchange that could not go on: :class:`~aiopop.SASLError`)
    ``"unsupported"``       the server does not offer the login method asked for, or UIDL
    ``"refused"``           another ``-ERR`` (STAT or UIDL refused, a ``-ERR`` greeting)
    ``"account"``           the account itself is unusable: no secret, an unknown method
    ``"local"``             a file or disk of this machine (an ``OSError`` naming a path)
    ``"state"``             a state file that cannot be used, or is locked by another process
    ``"delivery"``          a destination did not take a message (:class:`~aiopop.DeliveryError`)
    ``"usage"``             a command line that cannot be run (:class:`~aiopop._errors.UsageError`)
    ``"cancelled"``         the check was cancelled from inside (not by closing the generator)
    ``"error"``             anything else: an unexpected exception, a bug
    ======================  ===================================================================
    """
    return diagnose(error).reason


def check_many(
    accounts: Iterable[Account],
    *,
    concurrency: int = DEFAULT_CONCURRENCY,
    per_host: int = DEFAULT_PER_HOST,
    deadline: float | None = DEFAULT_DEADLINE,
    uidl: bool = False,
    timeout: float | _Unset | None = _UNSET,
) -> AsyncGenerator[CheckResult, None]:
    """Check every account, concurrently, yielding a :class:`CheckResult` as each finishes.

    ``concurrency``: at most this many checks at once. ``per_host``: at
    most this many at once against one host name (case-insensitive).
    ``deadline`` (seconds, None: no bound): each account's whole check
    (connect, TLS, login, STAT, UIDL, QUIT) must end within it, else its
    result carries a :class:`~aiopop.POP3TimeoutError`; the account's own
    ``timeout`` bounds each step. ``uidl``: also fetch the unique-id
    listing into :attr:`CheckResult.uids`. ``timeout`` is the deprecated
    name of ``deadline`` (it warns): ``timeout`` means one step everywhere else.

    ``accounts`` is read lazily, as slots free up, never ahead of what can
    start, except that accounts of a host already at its ``per_host`` limit
    are read past (and kept, in order, for when that host has a free slot).

    Use it as ``async with contextlib.aclosing(check_many(...)) as results:
    async for result in results: ...``: leaving the block, even by
    ``break`` or an exception, then cancels the checks still running and
    waits for them, so no connection stays open. Cancelling the iterating
    task does the same. A ``ValueError`` for a bad argument is raised at
    the call, before anything starts.
    """
    for name, value in (("concurrency", concurrency), ("per_host", per_host)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, not {value!r}")
    name = "deadline"
    if not isinstance(timeout, _Unset):
        warnings.warn(
            "check_many(timeout=...) is deprecated: the limit on each account's whole check"
            " is deadline=...; timeout means one step (the Account's timeout)",
            DeprecationWarning,
            stacklevel=2,
        )
        deadline, name = timeout, "timeout"
    if deadline is not None and (
        isinstance(deadline, bool) or not isinstance(deadline, int | float) or not deadline > 0
    ):
        raise ValueError(f"{name} must be a positive number or None, not {deadline!r}")
    seconds = deadline
    return run_many(
        iter(accounts),
        account_of=_only_accounts,
        job=lambda account: _check(account, seconds, uidl),
        cancelled=lambda account: CheckResult(
            account, error=asyncio.CancelledError("the check was cancelled")
        ),
        concurrency=concurrency,
        per_host=per_host,
        task_prefix=TASK_NAME_PREFIX,
    )


def _only_accounts(item: object) -> Account:
    if not isinstance(item, Account):
        raise TypeError(f"check_many wants Account objects, not {item!r}")
    return item


async def run_many(
    items: Iterator[Item],
    *,
    account_of: Callable[[Item], Account],
    job: Callable[[Item], Coroutine[Any, Any, Result]],
    cancelled: Callable[[Item], Result],
    concurrency: int,
    per_host: int,
    task_prefix: str,
) -> AsyncGenerator[Result, None]:
    """Run ``job(item)`` for every item, with :func:`check_many`'s limits and guarantees.

    The scheduler of :func:`check_many`, for any job on one account each:
    ``account_of(item)`` gives the account whose host counts against
    ``per_host`` (a ``TypeError`` from it stops the whole run, as a bad item
    of ``check_many`` does); ``job`` must turn every ``Exception`` into its
    result; ``cancelled(item)`` is the result of a job cancelled by
    something else than closing the generator. Each job runs in a task
    named ``task_prefix`` and the account's name. ``aiopop fetch ACCOUNTS``
    runs its fetches through it.
    """
    scheduler = _Scheduler(items, account_of, job, cancelled, concurrency, per_host, task_prefix)
    try:
        scheduler.fill()
        while True:
            result = await scheduler.next_result()
            if result is None:
                return
            yield result
    finally:
        await scheduler.shut_down()


class _Scheduler(Generic[Item, Result]):
    """Starts jobs (checks) as slots free up and collects their results.

    Global and per-host limits are counters, not semaphores: an account
    waiting for a slot costs no task. The bookkeeping runs in the checks'
    done callbacks, so a slot is reused the moment it frees, whether or not
    the consumer has taken the results so far.

    Invariant: a host has accounts waiting only while it is at its limit;
    so when a check ends, the next account of the same host, if any, is the
    only waiting one that can take its place.
    """

    def __init__(
        self,
        items: Iterator[Item],
        account_of: Callable[[Item], Account],
        job: Callable[[Item], Coroutine[Any, Any, Result]],
        cancelled: Callable[[Item], Result],
        concurrency: int,
        per_host: int,
        task_prefix: str,
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.accounts: Iterator[Item] | None = items
        self.account_of = account_of
        self.job = job
        self.cancelled = cancelled
        self.concurrency = concurrency
        self.per_host = per_host
        self.task_prefix = task_prefix
        self.running: dict[asyncio.Task[Result], tuple[Item, str]] = {}
        self.per_host_running: collections.Counter[str] = collections.Counter()
        self.waiting: dict[str, collections.deque[Item]] = {}
        self.finished: collections.deque[Result] = collections.deque()
        self.wakeup: asyncio.Future[None] | None = None
        self.failure: BaseException | None = None
        self.closing = False

    def fill(self) -> None:
        """Start accounts from the iterable until every slot is taken or it is exhausted."""
        while len(self.running) < self.concurrency and self.accounts is not None:
            try:
                account = next(self.accounts)
            except StopIteration:
                self.accounts = None
                return
            except Exception as exc:  # the caller's iterable failed: stop everything
                self.accounts = None
                self.failure = exc
                self._wake()
                return
            try:
                host = _host_key(self.account_of(account))
            except TypeError as exc:
                self.accounts = None
                self.failure = exc
                self._wake()
                return
            if self.per_host_running[host] >= self.per_host:
                self.waiting.setdefault(host, collections.deque()).append(account)
            else:
                self._start(account, host)

    def _start(self, account: Item, host: str) -> None:
        self.per_host_running[host] += 1
        task = self.loop.create_task(
            self.job(account), name=self.task_prefix + self.account_of(account).name
        )
        self.running[task] = (account, host)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Result]) -> None:
        account, host = self.running.pop(task)
        self.per_host_running[host] -= 1
        if not self.per_host_running[host]:
            del self.per_host_running[host]
        if self.closing:
            if not task.cancelled():
                task.exception()  # retrieved: no "never retrieved" warning
            return
        if task.cancelled():  # cancelled by something other than shut_down()
            result = self.cancelled(account)
        else:
            error = task.exception()
            if error is not None:  # the job reports every Exception: this is a BaseException
                self.failure = error
                self._wake()
                return
            result = task.result()
        self.finished.append(result)
        queue = self.waiting.get(host)
        if queue:
            following = queue.popleft()
            if not queue:
                del self.waiting[host]
            self._start(following, host)
        else:
            self.fill()
        self._wake()

    def _wake(self) -> None:
        wakeup = self.wakeup
        if wakeup is not None and not wakeup.done():
            wakeup.set_result(None)

    async def next_result(self) -> Result | None:
        """The next finished check, waiting for one; None when every account is done."""
        while True:
            if self.failure is not None:
                raise self.failure
            if self.finished:
                return self.finished.popleft()
            if not self.running and self.accounts is None:
                return None
            self.wakeup = self.loop.create_future()
            try:
                await self.wakeup
            finally:
                self.wakeup = None

    async def shut_down(self) -> None:
        """Cancel the checks still running and wait until every one has ended.

        Keeps waiting when cancelled again meanwhile (each check closes its
        connection within a few seconds), then raises that cancellation.
        """
        self.closing = True
        self.accounts = None
        self.waiting.clear()
        self.finished.clear()
        tasks = list(self.running)
        for task in tasks:
            task.cancel()
        cancelled_again = False
        while tasks:
            try:
                await asyncio.wait(tasks)
            except asyncio.CancelledError:
                cancelled_again = True
            tasks = [task for task in tasks if not task.done()]
        if cancelled_again:
            raise asyncio.CancelledError


def _host_key(account: Account) -> str:
    return account.host.rstrip(".").lower()


async def _check(account: Account, seconds: float | None, uidl: bool) -> CheckResult:
    """Check one account; every Exception becomes its result."""
    began = time.monotonic()
    stat: Stat | None = None
    uids: Sequence[UidEntry] | None = None
    error: BaseException | None = None
    deadline = asyncio.timeout(seconds)
    try:
        key = account.mailbox_key
        async with deadline, account.client() as client:
            # As account.session() does, but trying first the method that worked last time.
            _login_methods[key] = await account.login(client, prefer=_login_methods.get(key))
            stat = await client.stat()
            if uidl:
                uids = await client.uidl()
    except Exception as exc:
        error = exc
        if deadline.expired() and not isinstance(exc, POP3TimeoutError):
            steps = "connect, login, STAT" + (", UIDL" if uidl else "") + " and QUIT"
            error = POP3TimeoutError(f"{account.name}: the check ({steps}) took over {seconds} s")
            error.__cause__ = exc
    return CheckResult(account, stat, uids, error, time.monotonic() - began)
