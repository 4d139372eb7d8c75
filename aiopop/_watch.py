"""watch(): new mail for bots, each message once (by UIDL), at least once.

::

    async with watch(account, store=SQLiteStore("seen.db"), delete=True) as messages:
        async for new in messages:
            await handle(new.message())   # an email.message.EmailMessage

Each poll logs in (with the method that worked last tried first), lists
the unique-ids (UIDL) and sizes (LIST), fetches the messages the store
does not know (pipelined RETRs) and yields them in mailbox order. **A
message is acknowledged when the loop asks for the next one**: the code
after ``yield`` records its uid in the store and, with ``delete=True``,
only then sends DELE. A message whose handling raised, or after which
the loop was left by ``break``, is not acknowledged, so the next poll
(or the next run, with a persistent store) delivers it again.
:meth:`Watcher.finish` acknowledges the message in hand and stops. The
session ends with QUIT, which commits the deletions; a message recorded
but not deleted (the connection dropped first) is deleted by the next
poll without being delivered again.

A message is known by its unique-id *and* its size: a unique-id that the
server reuses for a message of another size is a new message. A unique-id
that names two messages of one listing (RFC 1939 forbids it; servers do it)
is never trusted: with ``delete=True`` each of those messages is yielded,
and deleted once handled but not recorded (so that none is ever deleted
unseen on the strength of another's record); without it, the first is
treated as any other message and the rest are left alone.
:attr:`Watcher.completed_polls` counts only polls whose QUIT the server
answered ``+OK``, the moment the deletions take effect.

Connection loss, timeouts, socket errors, ``[SYS/TEMP]``, ``[IN-USE]`` and
``[LOGIN-DELAY]`` are retried with exponential backoff and full jitter:
whatever :func:`aiopop.diagnose` calls retryable, the one table the
command line and ``check_many`` read too. Logins are never closer together
than the LOGIN-DELAY the server announces after login (RFC 2449 section
6.5). Other errors (wrong credentials, ``[SYS/PERM]``, a server without
UIDL, a certificate that does not verify, a full disk) are raised.

The account configures the client: its ``timeout`` (one step),
``ssl_context``, ``tls`` and the rest. ``client_options`` is deprecated.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import math
import random
import time
import warnings
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Self

from ._accounts import Account
from ._errors import LoginDelayError, diagnose
from ._message import NewMessage
from ._stores import MemoryStore, SeenStore, SQLiteStore
from ._types import AuthMethod

if TYPE_CHECKING:
    from ._client import POP3

__all__ = ["NewMessage", "Watcher", "full_jitter", "watch"]

LOCK_WAIT = 30.0
"""Seconds a poll waits for another process working on the same mailbox and store
(a ``fetch`` from cron, say) before it counts as a failed poll and is retried."""

logger = logging.getLogger("aiopop.watch")

Sleep = Callable[[float], Awaitable[object]]
"""How the watcher waits: :func:`asyncio.sleep`, or a fake one in tests."""
Clock = Callable[[], float]
"""A monotonic clock in seconds: :func:`time.monotonic`, or a fake one in tests."""
Jitter = Callable[[float], float]
"""Given the backoff ceiling, the delay to wait: :func:`full_jitter` by default."""

_FINISH: Final = object()  # sent into the generator by Watcher.finish()


def full_jitter(ceiling: float) -> float:
    """A delay drawn uniformly from ``[0, ceiling]`` ("full jitter")."""
    return random.uniform(0.0, ceiling)  # noqa: S311 - spreading retries, not secrecy


def _retryable(exc: BaseException) -> bool:
    """Whether trying again later may help: :func:`aiopop.diagnose` says.

    The network (a lost or refused connection, a timeout, a TLS handshake
    that broke), ``[SYS/TEMP]``, ``[IN-USE]``, ``[LOGIN-DELAY]``, ``-ERR`` to
    QUIT (the deletions did not commit; the next poll repeats them) and
    another process (a fetch from cron) holding this mailbox's state.
    """
    return diagnose(exc).retryable


class Watcher:
    """The async iterator :func:`watch` returns; also an async context manager.

    ``async with`` closes it on the way out (without acknowledging the
    message in hand, and without QUIT, so this session's deletions are
    rolled back: the next poll repeats them). Prefer it to a bare
    ``async for``: a loop left by ``break`` or an exception then closes the
    connection at once instead of when the iterator is garbage collected.
    """

    def __init__(
        self,
        account: Account,
        *,
        interval: float,
        store: SeenStore,
        delete: bool,
        backoff: tuple[float, float],
        key: str | None,
        polls: int | None,
        prefetch: int,
        client_options: Mapping[str, Any] | None,
        sleep: Sleep,
        clock: Clock,
        jitter: Jitter,
    ) -> None:
        first, ceiling = backoff
        if not (interval >= 0 and math.isfinite(interval)):
            raise ValueError(f"interval must be a finite number >= 0, not {interval!r}")
        if not (0 < first <= ceiling and math.isfinite(ceiling)):
            raise ValueError(
                f"backoff must be (first, maximum) with 0 < first <= maximum: {backoff}"
            )
        if polls is not None and polls < 1:
            raise ValueError(f"polls must be at least 1 or None, not {polls!r}")
        if prefetch < 1:
            raise ValueError(f"prefetch must be at least 1, not {prefetch!r}")
        self.account = account
        self.interval = float(interval)
        self.store = store
        self.delete = delete
        self.backoff = (float(first), float(ceiling))
        self.key = account.mailbox_key if key is None else key
        self.polls = polls
        self.prefetch = prefetch
        self.client_options = dict(client_options or {})
        self._sleep = sleep
        self._clock = clock
        self._jitter = jitter
        self.login_delay = 0.0
        """The server's LOGIN-DELAY in seconds, as last announced after login (0: none)."""
        self.last_login: float | None = None
        """When the last login succeeded, on ``clock``."""
        self.completed_polls = 0
        """Polls that ended with a QUIT the server answered ``+OK``."""
        self.login_method: AuthMethod | None = None
        """The login method that worked last; tried first at the next login."""
        self._pending = False
        self._generator = self._run()

    def __repr__(self) -> str:
        return f"Watcher({self.account.name!r}, key={self.key!r}, store={self.store!r})"

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> NewMessage:
        """Acknowledge the message handed out last, then wait for the next new one."""
        self._pending = False
        message = await self._generator.__anext__()
        self._pending = True
        return message

    async def finish(self) -> None:
        """Acknowledge the message in hand (if any), end the session with QUIT, and stop.

        For a loop that wants to stop after handling a message without that
        message being delivered again. Afterwards the iteration is over.
        """
        if not self._pending:
            await self.aclose()
            return
        self._pending = False
        try:
            await self._generator.asend(_FINISH)
        except StopAsyncIteration:
            pass
        finally:
            await self._generator.aclose()

    async def aclose(self) -> None:
        """Stop without acknowledging the message in hand; close the connection without QUIT."""
        self._pending = False
        await self._generator.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # -- the loop ------------------------------------------------------------------------

    def _backoff_delay(self, failures: int) -> float:
        first, ceiling = self.backoff
        return max(0.0, self._jitter(min(ceiling, first * 2.0 ** min(failures, 64))))

    def _earliest_login(self) -> float:
        if self.last_login is None:
            return -math.inf
        return self.last_login + self.login_delay

    async def _wait_until(self, moment: float) -> None:
        delay = moment - self._clock()
        if delay > 0:
            await self._sleep(delay)

    async def _run(self) -> AsyncGenerator[NewMessage, object]:
        failures = 0
        start_at = -math.inf
        if isinstance(self.store, SQLiteStore):
            remembered = await self.store.login_method(self.key)
            with contextlib.suppress(ValueError):  # a value of a newer aiopop
                self.login_method = AuthMethod(remembered) if remembered else None
        while True:
            await self._wait_until(max(start_at, self._earliest_login()))
            finishing = False
            try:
                async with self._locked():
                    client = self.account.client(**self.client_options)
                    try:
                        await client.connect()
                        await self._login(client)
                        poll = await self._new_messages(client)
                        uids, sizes, shared = poll.new, poll.sizes, poll.shared
                        fetch = client.retr_many(uids, window=self.prefetch)
                        async with contextlib.aclosing(fetch) as fetched:
                            async for number, data in fetched:
                                message = NewMessage(uids[number], number, data, self.account)
                                command = yield message
                                # The consumer asked for more: its handling returned.
                                finishing = command is _FINISH
                                if not (self.delete and message.uid in shared):
                                    size = sizes.get(number, len(data))
                                    await self.store.add(self.key, message.uid, size)
                                if self.delete:
                                    await client.dele(number)
                                    poll.remaining.discard(message.uid)
                                if finishing:
                                    break
                        await client.quit()  # raises unless +OK: deletions not committed
                        if self.delete:
                            # Deleted now: a unique-id of theirs listed later (reused by
                            # the server, even at the same size) is another message.
                            await self.store.forget_missing(self.key, poll.remaining)
                    finally:
                        await client.close()
            except Exception as exc:
                if not _retryable(exc):
                    raise
                if finishing:
                    logger.warning(
                        "%s: %s while finishing; stopping all the same",
                        self.account.name,
                        _describe(exc),
                    )
                    return
                wait = self._backoff_delay(failures)
                failures += 1
                if isinstance(exc, LoginDelayError):
                    wait = max(wait, float(exc.delay or 0), self.login_delay)
                logger.warning(
                    "%s: %s; trying again in %.1f s", self.account.name, _describe(exc), wait
                )
                start_at = self._clock() + wait
                continue
            failures = 0
            self.completed_polls += 1
            if finishing or (self.polls is not None and self.completed_polls >= self.polls):
                return
            start_at = self._clock() + self.interval

    def _locked(self) -> contextlib.AbstractAsyncContextManager[object]:
        """The store's lock on this mailbox for one poll, where the store has one."""
        if isinstance(self.store, SQLiteStore):
            return self.store.lock(self.key, wait=LOCK_WAIT)
        return contextlib.nullcontext()

    async def _login(self, client: POP3) -> None:
        method = await self.account.login(client, prefer=self.login_method)
        self.last_login = self._clock()
        if method is not self.login_method:
            self.login_method = method
            if isinstance(self.store, SQLiteStore):
                await self.store.remember_login(self.key, method.value)
        delay = (await client.capabilities()).login_delay
        self.login_delay = float(delay.seconds) if delay is not None else 0.0

    async def _new_messages(self, client: POP3) -> _Poll:
        """Which messages to yield, from UIDL and LIST.

        With ``delete``, the messages an earlier poll recorded but could not
        delete are deleted first.
        """
        uidl, listing = await asyncio.gather(client.uidl(), client.list())
        sizes = {entry.number: entry.size for entry in listing}
        listed = {entry.number: entry.uid for entry in uidl}
        counts = collections.Counter(listed.values())
        await self.store.forget_missing(self.key, list(counts))
        known = await self.store.known(self.key, list(counts))
        old: list[int] = []
        new: dict[int, str] = {}
        shared = {uid for uid, count in counts.items() if count > 1}
        seen: set[str] = set()
        for entry in sorted(uidl, key=lambda entry: entry.number):
            number, uid = entry.number, entry.uid
            if uid in shared and self.delete:
                new[number] = uid  # yielded, deleted once handled, never recorded
                continue
            if uid in seen:
                continue  # without delete: the later messages of a shared unique-id
            seen.add(uid)
            if uid in known and known[uid] in (None, sizes.get(number)):
                old.append(number)  # delivered before (with delete: not yet deleted)
            else:
                new[number] = uid  # never seen, or a reused unique-id of another size
        remaining = set(counts)
        if self.delete and old:
            async with contextlib.aclosing(client.dele_many(old)) as deleted:
                async for number in deleted:
                    remaining.discard(listed[number])
        return _Poll(new, sizes, shared, remaining)


@dataclass
class _Poll:
    new: dict[int, str]
    """The messages to yield, ``{number: uid}``, in mailbox order."""
    sizes: dict[int, int]
    """LIST sizes by number."""
    shared: set[str]
    """Unique-ids that name more than one message of the listing."""
    remaining: set[str]
    """The unique-ids listed and not deleted in this session (so far)."""


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def watch(
    account: Account,
    *,
    interval: float = 60.0,
    store: SeenStore | None = None,
    delete: bool = False,
    backoff: tuple[float, float] = (1.0, 300.0),
    key: str | None = None,
    polls: int | None = None,
    prefetch: int = 8,
    client_options: Mapping[str, Any] | None = None,
    sleep: Sleep = asyncio.sleep,
    clock: Clock = time.monotonic,
    jitter: Jitter = full_jitter,
) -> Watcher:
    """Watch ``account``'s mailbox: an async iterator of each new :class:`NewMessage`, once.

    * ``interval``: seconds from the end of one poll to the start of the
      next; raised to the server's LOGIN-DELAY when it announces one.
    * ``store``: where delivered uids are kept (a :class:`~aiopop.SeenStore`);
      a :class:`~aiopop.MemoryStore` by default, which forgets when
      the process ends. Use :class:`~aiopop.SQLiteStore` to survive
      restarts.
    * ``delete``: DELE each message after its handling returned and the
      store recorded it; the deletions commit at the QUIT ending the poll.
    * ``backoff``: ``(first, maximum)``: after the n-th consecutive failure
      (counted from 0), wait ``jitter(min(maximum, first * 2**n))``.
    * ``key``: the store key; :attr:`Account.mailbox_key
      <aiopop.Account.mailbox_key>` by default.
    * ``polls``: stop after this many completed polls (``None``: never).
    * ``prefetch``: at most this many messages fetched ahead (pipelined).
    * ``client_options``: deprecated (it warns): keyword arguments for the
      client. The account is the one way to configure the client: its
      ``timeout``, ``ssl_context``, ``tls``, ``auth`` and other fields.
    * ``sleep``, ``clock``, ``jitter``: how to wait, tell the time and
      spread retries; replace them in tests.

    Nothing happens until the iteration starts.
    """
    if client_options is not None:
        warnings.warn(
            "watch(client_options=...) is deprecated: configure the client through the"
            " Account (timeout, ssl_context, tls...)",
            DeprecationWarning,
            stacklevel=2,
        )
    return Watcher(
        account,
        interval=interval,
        store=MemoryStore() if store is None else store,
        delete=delete,
        backoff=backoff,
        key=key,
        polls=polls,
        prefetch=prefetch,
        client_options=client_options,
        sleep=sleep,
        clock=clock,
        jitter=jitter,
    )
