"""Running a program per message: a delivery (the MDA pattern) and a filter (mpop's convention).

:class:`CommandDelivery` hands each message to a program, such as
``procmail`` or ``maildrop``, on its standard input, and counts it
delivered only when that program exits 0. :class:`FilterCommand` hands a
message's header section to a program whose exit status is the verdict:
0 fetch, 1 delete, 2 skip (mpop's filter convention).

Both run the program directly, never through a shell, in a process group
of its own, with a time limit; both raise :class:`aiopop.DeliveryError`
when the program fails, so that the message stays on the server and is
tried again on the next run. POSIX only (process groups, signals).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import signal
import subprocess
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ._errors import DeliveryError
from ._parse import escape

if TYPE_CHECKING:
    from ._accounts import Account
    from ._message import MessageHeaders, NewMessage, Verdict

__all__ = [
    "DEFAULT_COMMAND_TIME_LIMIT",
    "DEFAULT_FILTER_TIME_LIMIT",
    "ENVIRONMENT",
    "GRACE",
    "CommandDelivery",
    "FilterCommand",
]

logger = logging.getLogger("aiopop")

DEFAULT_COMMAND_TIME_LIMIT = 120.0
"""Seconds a delivery command may take for one message, from its start to its exit."""
DEFAULT_FILTER_TIME_LIMIT = 60.0
"""Seconds a filter command may take for one message's headers, from its start to its exit."""
GRACE = 2.0
"""Seconds between SIGTERM and SIGKILL when a program is stopped."""

ENVIRONMENT = (
    "AIOPOP_ACCOUNT",
    "AIOPOP_MAILBOX",
    "AIOPOP_HOST",
    "AIOPOP_USER",
    "AIOPOP_UID",
    "AIOPOP_NUMBER",
    "AIOPOP_SIZE",
)
"""The variables aiopop sets for a program; inherited ones of these names are not passed on."""

_CHUNK = 65536
"""Octets written to, or read from, a pipe at a time."""
_STDERR_KEPT = 4096
"""Octets of a program's standard error kept (the last ones) while it runs."""
_STDERR_SHOWN = 500
"""Characters of that tail quoted in a :class:`DeliveryError`."""
_FINAL_READS = 64
"""Reads of standard error after the program ended, at most: what it wrote is in the pipe,
while a child it left running may go on writing."""

_VERDICTS: dict[int, Verdict] = {0: "fetch", 1: "delete", 2: "skip"}


# -- running one program --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Ending:
    """How a program ended: its exit status, or the signal that killed it, or the time limit."""

    status: int | None
    """The exit status, when it exited by itself within the time limit; else None."""
    killed_by: int | None
    """The signal that killed it (ours after the time limit, or anyone's); else None."""
    timed_out: bool
    stderr: bytes
    """The last octets (at most 4 KiB) it wrote on its standard error."""

    def describe(self, name: str, time_limit: float, note: str = "") -> str:
        """One line: what happened to the program called ``name``, ``note``, its stderr's tail."""
        if self.timed_out:
            what = f"{name} gave no answer within {time_limit:g} s: killed"
        elif self.killed_by is not None:
            number = self.killed_by
            what = f"{name} was killed by signal {number} ({_signal_name(number)})"
        else:
            what = f"{name} exited with status {self.status}"
        what += note
        said = self.said()
        return f"{what}; stderr: {said}" if said else what

    def said(self) -> str:
        """The tail of the program's standard error on one line, control characters escaped."""
        lines = self.stderr.decode("utf-8", "replace").splitlines()
        text = " / ".join(line.strip() for line in lines if line.strip())
        if len(text) > _STDERR_SHOWN:
            text = "..." + text[-_STDERR_SHOWN:]
        return escape(text, limit=len(text))


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return "unknown"


class _Pipes:
    """A program's standard input and error, our ends served by the event loop's callbacks.

    The pipes are our own rather than asyncio's: asyncio's ``wait()`` would
    wait for every pipe to close as well, which a child the program left
    running (holding its standard error) could put off for ever.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, data: bytes) -> None:
        self._loop = loop
        self._data = memoryview(data)
        self._tail = bytearray()
        self._fds: list[int] = []  # every descriptor still open, to close on the way out
        self._started = False
        self.child_stdin = self._stdin = self._stderr = self.child_stderr = -1
        try:
            self.child_stdin, self._stdin = self._pipe()
            self._stderr, self.child_stderr = self._pipe()
        except BaseException:
            self.close()
            raise

    def _pipe(self) -> tuple[int, int]:
        ends = os.pipe()  # both non-inheritable: the child gets only the ends it is given
        self._fds += ends
        return ends

    def start(self) -> None:
        """Once the program runs: close its ends here, then feed it and listen to it."""
        self._started = True
        self._close(self.child_stdin)
        self._close(self.child_stderr)
        os.set_blocking(self._stdin, False)
        os.set_blocking(self._stderr, False)
        self._loop.add_reader(self._stderr, self._read)
        if self._data:
            self._loop.add_writer(self._stdin, self._write)
        else:
            self._close(self._stdin)

    def _write(self) -> None:
        try:
            written = os.write(self._stdin, self._data[:_CHUNK])
        except BlockingIOError:
            return
        except OSError:
            # BrokenPipeError, ConnectionResetError: the program no longer reads its input.
            # It is judged by its exit status alone.
            self._close(self._stdin)
            return
        self._data = self._data[written:]
        if not self._data:
            self._close(self._stdin)  # the end of file

    def _read(self) -> bool:
        """Read once; False when nothing more is there for now (or ever)."""
        try:
            chunk = os.read(self._stderr, _CHUNK)
        except BlockingIOError:
            return False
        except OSError:
            chunk = b""
        if not chunk:
            self._close(self._stderr)
            return False
        self._tail += chunk
        del self._tail[:-_STDERR_KEPT]
        return True

    def close(self) -> bytes:
        """Close every descriptor; return the tail of standard error.

        What the program wrote before it ended is in the pipe already: read
        it, without waiting for an end of file that a child of the program
        may hold back.
        """
        for _ in range(_FINAL_READS if self._started else 0):
            if self._stderr not in self._fds or not self._read():
                break
        for fd in list(self._fds):
            self._close(fd)
        return bytes(self._tail)

    def _close(self, fd: int) -> None:
        if fd not in self._fds:
            return
        self._fds.remove(fd)
        if fd == self._stdin:
            self._loop.remove_writer(fd)
            self._data = memoryview(b"")
        elif fd == self._stderr:
            self._loop.remove_reader(fd)
        os.close(fd)


async def _run_program(
    argv: Sequence[str],
    data: bytes,
    *,
    env: Mapping[str, str],
    cwd: str | os.PathLike[str] | None,
    time_limit: float,
    grace: float,
) -> _Ending:
    """Run ``argv`` with ``data`` on its standard input, within ``time_limit`` seconds.

    The time limit covers the whole run, writing the input included. When
    it passes, or when this coroutine is cancelled, the program's process
    group gets SIGTERM, ``grace`` seconds later SIGKILL, and the program is
    reaped before this returns (or re-raises the cancellation). A program
    that cannot be started raises its :class:`OSError`.
    """
    loop = asyncio.get_running_loop()
    pipes = _Pipes(loop, data)
    try:
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=pipes.child_stdin,
            stdout=subprocess.DEVNULL,
            stderr=pipes.child_stderr,
            env=dict(env),
            cwd=cwd,
            start_new_session=True,  # a process group of its own: its children die with it
        )
    except BaseException:
        pipes.close()
        raise
    timed_out = cancelled = False
    try:
        pipes.start()
        async with asyncio.timeout(time_limit):
            await process.wait()
    except TimeoutError:
        # It may have exited in the very last moment: then its status stands.
        timed_out = process.returncode is None
        cancelled = timed_out and await _stop_surely(process, grace)
    except BaseException:
        # Cancelled (the daemon stops), or anything unexpected: the program does not outlive us.
        await _stop_surely(process, grace)
        raise
    finally:
        stderr = pipes.close()
    if cancelled:
        raise asyncio.CancelledError
    code = process.returncode
    assert code is not None  # reaped
    if timed_out:
        return _Ending(None, -code if code < 0 else None, True, stderr)
    if code < 0:
        return _Ending(None, -code, False, stderr)
    return _Ending(code, None, False, stderr)


async def _stop(process: asyncio.subprocess.Process, grace: float) -> None:
    """SIGTERM to the program's group, up to ``grace`` s for it to end, SIGKILL, reap."""
    _signal_group(process.pid, signal.SIGTERM)
    try:
        async with asyncio.timeout(grace):
            await process.wait()
    except TimeoutError:
        pass
    # To the group even when the program ended: a child that ignores SIGTERM goes too. (The
    # group keeps its id while any member lives; once empty, that id is reused only after
    # the kernel's pids wrap around.)
    _signal_group(process.pid, signal.SIGKILL)
    await process.wait()


async def _stop_surely(process: asyncio.subprocess.Process, grace: float) -> bool:
    """:func:`_stop`, which no cancellation interrupts; True if one came meanwhile."""
    stopping = asyncio.ensure_future(_stop(process, grace))
    cancelled = False
    while not stopping.done():
        try:
            await asyncio.shield(stopping)
        except asyncio.CancelledError:
            cancelled = True  # stop it all the same, then say so
    stopping.result()
    return cancelled


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):  # all gone already
        os.killpg(pgid, sig)


# -- what a program is given ----------------------------------------------------------------


def _environment(
    extra: Mapping[str, str],
    *,
    account: Account | None,
    uid: str | None,
    number: int,
    size: int,
    hidden: Collection[str] = (),
) -> dict[str, str]:
    """The program's environment: ours without ``hidden``, then ``extra``, then the
    ``AIOPOP_*`` variables."""
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in ENVIRONMENT and name not in hidden
    }
    env.update(extra)
    if account is not None:
        env["AIOPOP_ACCOUNT"] = account.name
        env["AIOPOP_MAILBOX"] = account.mailbox_key
        env["AIOPOP_HOST"] = account.host
        env["AIOPOP_USER"] = account.user
    if uid:  # None, or "" from a server without UIDL: no unique-id to give
        env["AIOPOP_UID"] = uid
    env["AIOPOP_NUMBER"] = str(number)
    env["AIOPOP_SIZE"] = str(size)
    return env


def _lf(data: bytes) -> bytes:
    """Network form to the form a Maildir file (and a program) holds: LF line ends."""
    return data.replace(b"\r\n", b"\n")


def _check_argv(argv: object) -> tuple[str, ...]:
    if isinstance(argv, str | bytes):
        raise ValueError(
            f"argv must be a list, such as ['procmail', '-d', 'me'], not a string ({argv!r}):"
            " no shell is run (shlex.split() splits a command line as a shell would)"
        )
    if not isinstance(argv, Sequence):
        raise ValueError(f"argv must be a list of strings, not {argv!r}")
    if not argv or not argv[0]:
        raise ValueError("argv must name a program: it is empty")
    for arg in argv:
        if not isinstance(arg, str):
            raise ValueError(f"argv must be a list of strings: {arg!r} is not a string")
        if "\0" in arg:
            raise ValueError(f"argv must not hold a NUL character: {arg!r}")
    return tuple(argv)


def _check_seconds(name: str, value: object, *, zero: bool) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value < 0
        or (value == 0 and not zero)
    ):
        least = "0 or more" if zero else "more than 0"
        raise ValueError(f"{name} must be a finite number of seconds, {least}, not {value!r}")
    return float(value)


def _check_env(env: object) -> dict[str, str]:
    if env is None:
        return {}
    if not isinstance(env, Mapping):
        raise ValueError(f"env must be a mapping of names to values, not {env!r}")
    for name, value in env.items():
        if not isinstance(name, str) or not name or "=" in name or "\0" in name:
            raise ValueError(f"env: {name!r} is not a variable name")
        if not isinstance(value, str) or "\0" in value:
            raise ValueError(f"env: the value of {name} must be a string without NUL")
    return dict(env)


class _Program:
    """What :class:`CommandDelivery` and :class:`FilterCommand` share: a checked command."""

    default_time_limit: float
    """``time_limit``'s default, per kind of program."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        time_limit: float | None = None,
        grace: float = GRACE,
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        hidden: Collection[str] = (),
    ) -> None:
        if time_limit is None:
            time_limit = self.default_time_limit
        self.argv: tuple[str, ...] = _check_argv(argv)
        self.hidden = frozenset(hidden)
        self.time_limit = _check_seconds("time_limit", time_limit, zero=False)
        self.grace = _check_seconds("grace", grace, zero=True)
        self.env: dict[str, str] = _check_env(env)
        self.cwd = cwd

    def __repr__(self) -> str:
        return f"{type(self).__name__}({list(self.argv)!r}, time_limit={self.time_limit:g})"

    @property
    def _name(self) -> str:
        return escape(self.argv[0])

    async def _run(
        self, data: bytes, *, account: Account | None, uid: str | None, number: int, size: int
    ) -> _Ending:
        env = _environment(
            self.env, account=account, uid=uid, number=number, size=size, hidden=self.hidden
        )
        ending = await _run_program(
            self.argv, data, env=env, cwd=self.cwd, time_limit=self.time_limit, grace=self.grace
        )
        if ending.status == 0 and ending.stderr:
            logger.info("%s said on stderr: %s", self._name, ending.said())
        return ending


class CommandDelivery(_Program):
    """A delivery that runs a program per message, an MDA such as ``procmail`` or ``maildrop``.

    ``await delivery(message)`` runs ``argv`` (a list: the program, then its
    arguments; never through a shell) with the message on its standard
    input, with LF line ends as a Maildir file holds it, then an end of
    file. The message is delivered when the program exits 0. Any other
    status, death by a signal, or ``time_limit`` seconds passing (120 by
    default; from the start to the exit, writing the input included) raises
    :class:`aiopop.DeliveryError`: the message stays on the server and is
    tried again on the next run. A program that exits without reading all
    of its input is judged by its exit status alone.

    The program runs in a process group of its own. After ``time_limit``,
    or when the awaiting task is cancelled, the group gets SIGTERM, then
    ``grace`` seconds later SIGKILL, and the program is reaped before the
    error (or the cancellation) goes on: neither it nor its children
    outlive the delivery. Its standard output is discarded; the tail of its
    standard error is quoted in the error.

    Its environment is this process's without the variables named in
    ``hidden`` (the command line passes the variables that hold the
    accounts' passwords and tokens: a delivery program has no use for
    them), then ``env``, then:

    ===================  ===============================================================
    ``AIOPOP_ACCOUNT``   the account's name (label, or ``user@host[:port]``)
    ``AIOPOP_MAILBOX``   the account's :attr:`~aiopop.Account.mailbox_key`
    ``AIOPOP_HOST``      the account's host
    ``AIOPOP_USER``      the account's user name
    ``AIOPOP_UID``       the message's unique-id (not set when the server gave none)
    ``AIOPOP_NUMBER``    the message's number in this session
    ``AIOPOP_SIZE``      the message's size in octets in network form (CRLF line ends,
                         :attr:`aiopop.NewMessage.size`), not of what the program reads
    ===================  ===============================================================

    The four account variables are set only when the message names its
    account; inherited variables of these seven names are never passed on.

    A program that cannot be started (missing, not executable, a missing
    ``cwd``) raises its :class:`OSError`, not a :class:`~aiopop.DeliveryError`:
    that is the configuration's fault, not one message's. POSIX only.
    """

    default_time_limit = DEFAULT_COMMAND_TIME_LIMIT

    async def __call__(self, message: NewMessage) -> None:
        """Deliver ``message``: return when the program exited 0, else raise DeliveryError."""
        ending = await self._run(
            _lf(message.data),
            account=message.account,
            uid=message.uid,
            number=message.number,
            size=message.size,
        )
        if ending.status != 0:
            reason = ending.describe(self._name, self.time_limit)
            raise DeliveryError(reason, uid=message.uid or None)


class FilterCommand(_Program):
    """A filter that runs a program per message, on its headers (mpop's filter convention).

    ``await f(headers)`` runs ``argv`` (never through a shell) with the
    message's header section on its standard input, LF line ends, and reads
    the verdict from its exit status: 0 ``"fetch"``, 1 ``"delete"`` (on the
    server, unread), 2 ``"skip"`` (leave it there, untouched). Any other
    status, death by a signal, or ``time_limit`` seconds passing (60 by
    default) raises :class:`aiopop.DeliveryError`, and the message is neither fetched nor
    deleted: a broken filter never deletes mail.

    The environment, the process group, the time limit, ``grace`` and
    cancellation work as for :class:`CommandDelivery`; ``AIOPOP_UID`` is set
    only when the server gave unique-ids, and ``AIOPOP_SIZE`` is the
    message's size by LIST (:attr:`aiopop.MessageHeaders.size`).
    """

    default_time_limit = DEFAULT_FILTER_TIME_LIMIT

    async def __call__(self, headers: MessageHeaders) -> Verdict:
        """The program's verdict on ``headers``: ``"fetch"``, ``"delete"`` or ``"skip"``."""
        ending = await self._run(
            _lf(headers.data),
            account=headers.account,
            uid=headers.uid,
            number=headers.number,
            size=headers.size,
        )
        verdict = _VERDICTS.get(ending.status) if ending.status is not None else None
        if verdict is None:
            what = ending.describe(
                f"the filter {self._name}",
                self.time_limit,
                " (a filter answers 0: fetch, 1: delete, 2: skip)",
            )
            raise DeliveryError(what, uid=headers.uid or None)
        return verdict
