"""File-system faults for delivery tests: OSError at the N-th call of an operation.

:class:`FaultFS` counts, and can fail, the file-system operations of a
delivery at their Python calls, under one directory (the test's Maildir)
only, so that pytest, hypothesis and anything else writing elsewhere are
unaffected. The operations (:data:`OPERATIONS`):

* ``open``: ``os.open`` of a file (not of a directory), and the builtin
  ``open`` that ``aiofiles.open`` calls (counted once with its opener);
* ``write``: ``os.write`` on a file opened under the directory, and
  ``write``, ``writelines`` and ``flush`` of an aiofiles file there;
* ``fsync``: ``os.fsync`` of such a file;
* ``rename``: ``os.rename`` and ``os.replace`` from or to the directory;
* ``dirsync``: ``os.fsync`` of a directory opened there (what
  ``aiopop._files.sync_directory`` does);
* ``commit``: the state's single write entry point, the async ``commit``
  method of the state class (:func:`state_class`).

The ``os`` functions are replaced in :mod:`os` itself (and where aiopop or
aiofiles hold them already wrapped, as ``aiofiles.os.wrap(os.fsync)``), so
the faults fire in worker threads too. A clean run with no fault armed
gives :attr:`FaultFS.counts`, from which a test enumerates every
injection point.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import importlib
import inspect
import os
import stat
import sys
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiofiles.os
import aiofiles.threadpool
import aiofiles.threadpool.binary
import pytest

_REAL = {
    name: getattr(os, name) for name in ("open", "close", "write", "fsync", "rename", "replace")
}
"""The os functions as they were before any FaultFS was installed."""
_REAL_SYNC_OPEN: Callable[..., Any] = aiofiles.threadpool.sync_open  # type: ignore[attr-defined]

OPERATIONS = ("open", "write", "fsync", "rename", "dirsync", "commit")
ERRNOS = (errno.ENOSPC, errno.EIO, errno.EROFS)


@dataclass(frozen=True)
class Fault:
    """Fail the ``call``-th call of ``operation`` (from 1) with ``OSError(code)``.

    With ``sticky`` every later call of that operation fails too, as on a
    disk that stays full or a file system remounted read-only.
    """

    operation: str
    call: int
    code: int
    sticky: bool = False

    def __post_init__(self) -> None:
        if self.operation not in OPERATIONS:
            raise ValueError(f"unknown operation {self.operation!r}")

    def __str__(self) -> str:
        more = "+" if self.sticky else ""
        return f"{self.operation}#{self.call}{more}:{errno.errorcode[self.code]}"


def state_class() -> type[Any]:
    """The state database's class: the one with the async ``commit`` that fetch uses."""
    fetch = importlib.import_module("aiopop._fetch")
    candidates = [value for value in vars(fetch).values() if inspect.isclass(value)]
    for module_name in ("aiopop._delivery_state", "aiopop.uidstate"):
        with contextlib.suppress(ImportError):
            candidates += [
                value
                for value in vars(importlib.import_module(module_name)).values()
                if inspect.isclass(value) and value.__module__ == module_name
            ]
    for value in candidates:
        if value.__module__.startswith("aiopop") and inspect.iscoroutinefunction(
            getattr(value, "commit", None)
        ):
            return value
    raise LookupError("no state class with an async commit method")


class FaultFS:
    """Counts and fails file-system operations under ``root``; :meth:`install` first."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = os.path.abspath(root)
        self.counts: Counter[str] = Counter()
        """Calls of each operation since the last :meth:`arm` or :meth:`reset`."""
        self.fault: Fault | None = None
        self.injected: list[tuple[str, int, str | None]] = []
        """The faults raised: (operation, call, path)."""
        self._lock = threading.Lock()
        self._files: dict[int, tuple[str, bool]] = {}  # descriptor -> (path, is a directory)
        self._local = threading.local()

    def arm(self, fault: Fault | None) -> None:
        """Inject ``fault`` (None: nothing) from now on, counting from zero."""
        with self._lock:
            self.fault = fault
            self.counts.clear()
            self.injected = []

    def reset(self) -> None:
        """No fault; counts from zero."""
        self.arm(None)

    def under(self, path: Any) -> bool:
        """True if ``path`` (a str, bytes or path-like) lies in the root directory."""
        if isinstance(path, int):
            return False
        try:
            absolute = os.path.abspath(os.fsdecode(path))
        except TypeError:
            return False
        return absolute == self.root or absolute.startswith(self.root + os.sep)

    def step(self, operation: str, path: str | None) -> None:
        """Count a call of ``operation``; raise if the armed fault says so."""
        with self._lock:
            self.counts[operation] += 1
            call = self.counts[operation]
            fault = self.fault
            hit = (
                fault is not None
                and fault.operation == operation
                and (call == fault.call or (fault.sticky and call > fault.call))
            )
            if hit:
                self.injected.append((operation, call, path))
        if hit:
            assert fault is not None
            raise OSError(fault.code, os.strerror(fault.code), path)

    def _descriptor(self, fd: int) -> tuple[str, bool] | None:
        with self._lock:
            return self._files.get(fd)

    # -- installing ---------------------------------------------------------------------

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Put the counting, failing wrappers in place (``monkeypatch`` undoes it)."""
        real_open, real_close = _REAL["open"], _REAL["close"]
        real_write, real_fsync = _REAL["write"], _REAL["fsync"]
        real_rename, real_replace = _REAL["rename"], _REAL["replace"]
        real_sync_open = _REAL_SYNC_OPEN

        def fake_open(
            path: Any, flags: int, mode: int = 0o777, *, dir_fd: int | None = None
        ) -> int:
            ours = dir_fd is None and self.under(path)
            directory = False
            if ours:
                directory = not flags & os.O_CREAT and os.path.isdir(path)
                if not directory and not getattr(self._local, "in_open", False):
                    self.step("open", os.fsdecode(path))
            fd: int = real_open(path, flags, mode, dir_fd=dir_fd)
            if ours:
                with self._lock:
                    self._files[fd] = (os.fsdecode(path), directory)
            return fd

        def fake_close(fd: int) -> None:
            with self._lock:
                self._files.pop(fd, None)
            real_close(fd)

        def fake_write(fd: int, data: Any) -> int:
            found = self._descriptor(fd)
            if found is not None:
                self.step("write", found[0])
            written: int = real_write(fd, data)
            return written

        def fake_fsync(fd: Any) -> None:
            number = fd if isinstance(fd, int) else fd.fileno()
            found = self._descriptor(number)
            if found is not None:
                self.step("dirsync" if found[1] else "fsync", found[0])
            real_fsync(fd)

        def renamer(real: Callable[..., None]) -> Callable[..., None]:
            @functools.wraps(real)
            def fake(source: Any, target: Any, **kwargs: Any) -> None:
                if self.under(source) or self.under(target):
                    self.step("rename", os.fsdecode(target))
                real(source, target, **kwargs)

            return fake

        def fake_sync_open(file: Any, *args: Any, **kwargs: Any) -> Any:
            ours = self.under(file)
            if ours:
                self.step("open", os.fsdecode(file))
            self._local.in_open = True
            try:
                opened = real_sync_open(file, *args, **kwargs)
            finally:
                self._local.in_open = False
            if ours:
                directory = stat.S_ISDIR(os.fstat(opened.fileno()).st_mode)
                with self._lock:
                    self._files[opened.fileno()] = (os.fsdecode(file), directory)
            return opened

        fakes: dict[Callable[..., Any], Callable[..., Any]] = {
            real_open: fake_open,
            real_close: fake_close,
            real_write: fake_write,
            real_fsync: fake_fsync,
            real_rename: renamer(real_rename),
            real_replace: renamer(real_replace),
        }
        for name, real in _REAL.items():
            monkeypatch.setattr(os, name, fakes[real])
        # Those held already: `from os import fsync`, or aiofiles.os.wrap(os.fsync).
        for name, module in list(sys.modules.items()):
            if module is None or not (name.startswith("aiopop") or name == "aiofiles.os"):
                continue
            for attribute, value in list(vars(module).items()):
                if attribute.startswith("__") or not callable(value):
                    continue
                wrapped = getattr(value, "__wrapped__", None)
                if wrapped in fakes:
                    monkeypatch.setattr(module, attribute, aiofiles.os.wrap(fakes[wrapped]))
                elif value in fakes and value is not os and module is not os:
                    monkeypatch.setattr(module, attribute, fakes[value])
        monkeypatch.setattr(aiofiles.threadpool, "sync_open", fake_sync_open)
        for cls in (
            aiofiles.threadpool.binary.AsyncBufferedIOBase,
            aiofiles.threadpool.binary.AsyncFileIO,
            aiofiles.threadpool.binary.AsyncIndirectBufferedIOBase,
        ):
            for method in ("write", "writelines", "flush"):
                monkeypatch.setattr(cls, method, self._file_method(getattr(cls, method)))
        commit_class = state_class()
        monkeypatch.setattr(commit_class, "commit", self._commit(commit_class.commit))

    def _file_method(self, real: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(real)
        async def fake(file: Any, *args: Any, **kwargs: Any) -> Any:
            name = getattr(file, "name", None)
            if isinstance(name, str | bytes) and self.under(name):
                self.step("write", os.fsdecode(name))
            return await real(file, *args, **kwargs)

        return fake

    def _commit(self, real: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(real)
        async def commit(state: Any, *args: Any, **kwargs: Any) -> Any:
            self.step("commit", None)
            return await real(state, *args, **kwargs)

        return commit


def points(counts: Counter[str], *, sticky: bool = False) -> list[Fault]:
    """Every single fault for a run whose clean twin made ``counts``: each call, each errno."""
    return [
        Fault(operation, call, code, sticky)
        for operation in OPERATIONS
        for call in range(1, counts[operation] + 1)
        for code in ERRNOS
    ]
