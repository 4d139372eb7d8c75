"""Safe delivery into a Maildir: write in ``tmp/``, sync, rename into ``new/``, sync ``new/``.

The Maildir convention (D. J. Bernstein's "Using maildir format", qmail's
maildir(5)): a message is written under a unique name in ``tmp/``, and only
once it is complete and on disk is it renamed into ``new/``, where mail
readers look. A reader therefore never sees a partial message, and a crash
leaves at worst a stray file in ``tmp/``, which the convention lets any
program delete after 36 hours.

Delivery is split in two so that a caller can batch the second step::

    maildir = Maildir("~/Mail/inbox")
    await maildir.create()
    names = [await maildir.write_bytes(message) for message in messages]
    await maildir.publish(names)  # renamed into new/, then new/ synced once

:meth:`Maildir.write` and :meth:`Maildir.write_bytes` return once the
message's data is durable in ``tmp/`` (each file is synced before it is
closed; several writes may run at once, letting the file system commit
their syncs together). :meth:`Maildir.publish` renames a batch into ``new/``
and syncs ``new/`` once: after it returns, every message of the batch and
its directory entry are durable. :meth:`Maildir.deliver` does both for one
message.
"""

from __future__ import annotations

import functools
import itertools
import os
import random
import re
import socket
import time
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Sequence
from pathlib import Path

from . import _files

__all__ = ["Maildir", "to_unix_line_ends", "unique_name"]

_deliveries = itertools.count(1)
_FILE_MODE = 0o600
# Seeded from os.urandom, re-seeded in a forked child. Not secrets.token_hex per name:
# each os.urandom call releases the GIL, which the write threads then hold for a while.
# Names need to be unique, not unpredictable: tmp/ is 0700 and files are made O_EXCL.
_random = random.Random()  # noqa: S311
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_random.seed)


def unique_name() -> str:
    """A new Maildir file name: ``<seconds>.M<usec>P<pid>Q<n>R<random>.<host>``.

    The modern form of the convention: the time, then in the middle part the
    microseconds (``M``), the process id (``P``), this process's delivery
    count (``Q``) and 64 random bits (``R``), then the host name with ``/``
    written ``\\057`` and ``:`` written ``\\072``, as the convention asks
    (``:`` separates a name from its flags in ``cur/``).
    """
    seconds, microseconds = divmod(time.time_ns() // 1000, 1_000_000)
    host = _host()
    middle = f"M{microseconds}P{os.getpid()}Q{next(_deliveries)}R{_random.getrandbits(64):016x}"
    return f"{seconds}.{middle}.{host}"


@functools.cache
def _host() -> str:
    # Once per process, as mail servers do: gethostname() is a system call per name otherwise.
    return socket.gethostname().replace("/", "\\057").replace(":", "\\072") or "localhost"


_OURS = re.compile(r"[0-9]+\.M[0-9]+P([0-9]+)Q[0-9]+R[0-9a-f]{16}\.(.+)")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


async def to_unix_line_ends(batches: AsyncIterable[list[bytes]]) -> AsyncIterator[list[bytes]]:
    """The same content with every CRLF written as LF, as Maildir files hold mail on Unix.

    A CR at the end of one batch is held back until the next shows whether
    an LF follows; a CR that ends no line is content and is kept.
    """
    held = b""
    async for chunks in batches:
        data = held + b"".join(chunks)
        held = b"\r" if data.endswith(b"\r") else b""
        if held:
            data = data[:-1]
        if data:
            yield [data.replace(b"\r\n", b"\n")]
    if held:
        yield [held]


class Maildir:
    """A Maildir at ``path``: the directories ``tmp``, ``new`` and ``cur`` below it.

    The constructor does no I/O; :meth:`create` makes the directories
    (mode 0700) where they are missing. Messages are given in network form,
    as POP3 delivers them (CRLF line ends), and stored with LF line ends,
    the convention of Maildir files on Unix, unless ``keep_crlf`` is set.
    """

    def __init__(self, path: str | os.PathLike[str], *, keep_crlf: bool = False) -> None:
        self.path = Path(path).expanduser()
        self.tmp = self.path / "tmp"
        self.new = self.path / "new"
        self.cur = self.path / "cur"
        self.keep_crlf = keep_crlf
        self._tmp = os.fspath(self.tmp)  # joined once per message: no Path objects then

    def __repr__(self) -> str:
        return f"<Maildir {str(self.path)!r}>"

    async def create(self) -> None:
        """Create the Maildir and its three directories (mode 0700) where missing.

        Raises :class:`NotADirectoryError` (or another :class:`OSError`)
        when something else is in the way. A directory that was created is
        made durable: its parent is synced.
        """
        created = False
        for directory in (self.path, self.tmp, self.new, self.cur):
            try:
                directory.mkdir(mode=0o700, parents=directory is self.path)
            except FileExistsError:
                if not directory.is_dir():
                    raise NotADirectoryError(f"{directory} exists and is not a directory") from None
            else:
                created = True
        if created:
            await _files.sync_directory(self.path)
            await _files.sync_directory(self.path.parent)

    async def write(
        self, batches: AsyncIterable[list[bytes]], *, sync: bool = True
    ) -> tuple[str, int]:
        """Write a message, chunk by chunk, into ``tmp/`` under a new unique name.

        Returns the name and the message's size as received (network
        form). When it returns, the file's data is durable, but mail readers
        do not see it until :meth:`publish`. With ``sync=False`` the data is
        written but not yet durable: :meth:`sync` the name before publishing
        it. On any error or cancellation the file is removed. Files are
        created with mode 0600.
        """
        name = unique_name()
        counted = _Counted(batches)
        stored = counted if self.keep_crlf else to_unix_line_ends(counted)
        path = os.path.join(self._tmp, name)
        await _files.write_new(path, stored, fsync=sync, mode=_FILE_MODE, write_back=True)
        return name, counted.size

    async def sync(self, names: Sequence[str]) -> list[str]:
        """Make files that :meth:`write` wrote with ``sync=False`` durable; returns ``names``.

        All or none: on an error or a cancellation the files are removed
        from ``tmp/``.
        """
        await _files.sync_files([os.path.join(self._tmp, name) for name in names])
        return list(names)

    async def write_bytes(self, message: bytes) -> str:
        """:meth:`write` for a message held in memory, in one trip to a worker thread.

        Returns the name. Several calls may run at once.
        """
        return (await self.write_all_bytes([message]))[0]

    async def write_all_bytes(self, messages: Sequence[bytes]) -> list[str]:
        """:meth:`write_bytes` for several messages, one after the other in one worker thread.

        Returns their names, in order. All or none: on an error or a
        cancellation none of the files is left in ``tmp/``. Several calls
        may run at once.
        """
        names = [unique_name() for _ in messages]
        tmp, keep = self._tmp, self.keep_crlf
        files = [
            (os.path.join(tmp, name), message if keep else message.replace(b"\r\n", b"\n"))
            for name, message in zip(names, messages, strict=True)
        ]
        await _files.write_new_files(files, fsync=True, mode=_FILE_MODE)
        return names

    async def publish(self, names: Sequence[str]) -> None:
        """Rename the files ``names`` from ``tmp/`` into ``new/``, then sync ``new/``.

        Call it for files that :meth:`write` or :meth:`write_bytes` wrote
        (their data is durable already): after it returns, the messages and
        their directory entries are on disk.
        The names are unique, so a rename never replaces another message.
        """
        if names:
            tmp, new = os.fspath(self.tmp), os.fspath(self.new)
            await _files.rename_all(
                [(os.path.join(tmp, name), os.path.join(new, name)) for name in names]
            )
            await _files.sync_directory(self.new)

    async def deliver(self, batches: AsyncIterable[list[bytes]]) -> str:
        """Write and publish one message; return its name once it is durable in ``new/``."""
        name, _ = await self.write(batches)
        await self.publish([name])
        return name

    def discard(self, names: Iterable[str]) -> None:
        """Remove the files ``names`` from ``tmp/`` (those that are there)."""
        for name in names:
            _files.remove_if_present(self.tmp / name)

    def abandoned(self) -> list[str]:
        """Files in ``tmp/`` that a process of this host, now dead, was writing.

        Only names of the form :func:`unique_name` makes are considered, with
        this host's name and the id of a process that no longer exists: their
        writer was killed before it finished, and nothing will ever complete
        them. (A process id reused since then makes a file look alive: it is
        left for the convention's 36-hour rule.)
        """
        host = _host()
        found: list[str] = []
        with os.scandir(self.tmp) as entries:
            for entry in entries:
                match = _OURS.fullmatch(entry.name)
                if match and match[2] == host:
                    pid = int(match[1])
                    if pid != os.getpid() and not _alive(pid):
                        found.append(entry.name)
        return sorted(found)

    def locate(self, name: str) -> Path | None:
        """The path of the delivered file ``name``: in ``new/``, or in ``cur/`` with the flags
        a reader added (``<name>:2,S``); None when it is in neither."""
        path = self.new / name
        if path.exists():
            return path
        with os.scandir(self.cur) as entries:
            for entry in entries:
                if entry.name.split(":", 1)[0].split("!", 1)[0] == name:
                    return Path(entry.path)
        return None

    def find(self, names: Iterable[str]) -> dict[str, str]:
        """Where each of ``names`` is: ``"tmp"``, ``"new"`` or ``"cur"``; absent names are left out.

        In ``cur/`` a mail reader adds flags to the name (``<name>:2,S``), so
        a name there matches up to its ``:`` (or ``!``, the separator some
        file systems force). Files only ever move forward (``tmp`` to ``new``
        to ``cur``), and the directories are looked at in that order, so a
        message moved meanwhile is still found.
        """
        found: dict[str, str] = {}
        wanted = set(names)
        for where, directory in (("tmp", self.tmp), ("new", self.new)):
            for name in wanted - found.keys():
                if (directory / name).exists():
                    found[name] = where
        missing = wanted - found.keys()
        if missing:
            with os.scandir(self.cur) as entries:
                for entry in entries:
                    base = entry.name.split(":", 1)[0].split("!", 1)[0]
                    if base in missing:
                        found[base] = "cur"
        return found


class _Counted:
    """The batches of a message, counting its octets as they pass."""

    def __init__(self, batches: AsyncIterable[list[bytes]]) -> None:
        self._batches = batches
        self.size = 0

    async def __aiter__(self) -> AsyncIterator[list[bytes]]:
        async for chunks in self._batches:
            self.size += sum(map(len, chunks))
            yield chunks
