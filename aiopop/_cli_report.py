"""What the ``aiopop`` command prints: errors (read from :func:`aiopop.diagnose`),
sizes for people, and the table of ``check``."""

from __future__ import annotations

import contextlib
import importlib
import re
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TextIO

from ._errors import (
    AuthenticationError,
    FailureKind,
    MethodNotOfferedError,
    POP3Error,
    diagnose,
)
from ._many import CheckResult

__all__ = [
    "Explanation",
    "Row",
    "explain",
    "human_size",
    "plural",
    "print_error",
    "print_table",
    "report",
]

Explanation = tuple[int, str, list[str]]
"""An exit status, a one-line message, and hint lines."""

_TRIED = re.compile(r"(?:^|; )([A-Z0-9+/_-]+) refused: ")


def plural(count: int, word: str) -> str:
    """``1 message``, ``2 messages``."""
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def human_size(octets: int) -> str:
    """``512 bytes``, ``4.4 KiB``, ``1.2 MiB``: powers of 1024, one decimal."""
    if octets < 1024:
        return plural(octets, "byte")
    value = float(octets)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        value /= 1024
        if value < 1024 or unit == "TiB":
            break
    return f"{value:.1f} {unit}"


def _login_message(exc: AuthenticationError) -> tuple[str, list[str]]:
    """One clean line for a refused login, and the library's other notes as hints.

    The library notes every method tried (``tried: SCRAM-SHA-256 refused: ...;
    USER refused: ...``), the last one again: said once here.
    """
    notes = list(getattr(exc, "__notes__", []))
    tried = next((note for note in notes if note.startswith("tried: ")), None)
    rest = [note for note in notes if note is not tried and not note.startswith("before it: ")]
    reply = exc.response or "-ERR"
    plain = f"login refused ({exc.command}): {reply}" if exc.command else f"login refused: {reply}"
    if tried is None:
        return plain, rest
    text = tried.removeprefix("tried: ")
    marks = list(_TRIED.finditer(text))
    pairs = [
        (mark.group(1), text[mark.end() : marks[i + 1].start() if i + 1 < len(marks) else None])
        for i, mark in enumerate(marks)
    ]
    if not pairs:
        return plain, rest
    methods = " then ".join(method for method, _ in pairs)
    if len({answer for _, answer in pairs}) == 1:
        return f"login refused ({methods}): {pairs[-1][1]}", rest
    return "login refused: " + "; ".join(f"{m}: {answer}" for m, answer in pairs), rest


def _message(exc: BaseException, kind: FailureKind) -> tuple[str, list[str]]:
    text = str(exc)
    if kind in (FailureKind.CREDENTIALS, FailureKind.AUTHENTICATION) and isinstance(
        exc, AuthenticationError
    ):
        return _login_message(exc)
    if kind in (
        FailureKind.IN_USE,
        FailureKind.LOGIN_DELAY,
        FailureKind.TEMPORARY,
        FailureKind.PERMANENT,
        FailureKind.REFUSED,
    ):
        return f"the server refused: {text}", []
    if kind is FailureKind.QUIT_REFUSED:
        return f"the server refused QUIT, so nothing was deleted: {text}", []
    if kind is FailureKind.CERTIFICATE:
        reason = getattr(exc, "verify_message", None) or text
        return f"the server's certificate does not verify: {reason}", []
    if kind is FailureKind.TLS:
        return f"TLS failed: {text}", []
    if kind is FailureKind.PROTOCOL or kind is FailureKind.SASL:
        return f"the server broke the protocol: {text}", []
    if kind is FailureKind.TIMEOUT:
        return text or "the server did not answer in time", []
    if kind is FailureKind.LOCAL and isinstance(exc, OSError):
        reason = exc.strerror or text
        if exc.filename is None:
            return f"on this machine: {reason}", []
        where = exc.filename if exc.filename2 is None else f"{exc.filename} -> {exc.filename2}"
        return f"{where}: {reason} (on this machine)", []
    if (
        kind is FailureKind.CONNECTION
        and isinstance(exc, OSError)
        and not isinstance(exc, POP3Error)
    ):
        reason = exc.strerror or text or type(exc).__name__
        if isinstance(exc, ConnectionResetError | ConnectionAbortedError | BrokenPipeError):
            return f"the connection was lost: {reason}", []
        return f"cannot reach the server: {reason}", []
    if kind is FailureKind.ERROR:
        return f"unexpected {type(exc).__name__}: {text}" if text else type(exc).__name__, []
    if kind is FailureKind.CANCELLED:
        return "interrupted", []
    return text or type(exc).__name__, []


def explain(exc: BaseException) -> Explanation:
    """The exit status, a one-line message and hints for an error, from the one table."""
    failure = diagnose(exc)
    message, notes = _message(exc, failure.kind)
    hints = [failure.hint] if failure.hint else []
    hints += notes
    if isinstance(exc, MethodNotOfferedError) and "offers" in str(exc):
        hints = [hint for hint in hints if not hint.startswith("try another --auth")]
        hints.append("pick one of the methods it offers with --auth, or leave --auth out")
    return failure.exit_status, message, hints


def print_error(explanation: Explanation, err: TextIO) -> int:
    """Print an explained error and its hints on ``err``; return the exit status."""
    status, message, hints = explanation
    print(f"aiopop: error: {message}", file=err)
    for hint in hints:
        print(f"  hint: {hint}", file=err)
    return status


def report(exc: BaseException, err: TextIO) -> int:
    """Print the error and its hints on ``err``; return the exit status."""
    return print_error(explain(exc), err)


# -- check's results --------------------------------------------------------------------------


def check_json(result: CheckResult) -> dict[str, Any]:
    """One JSON line of ``aiopop check --json``: octets, not human sizes."""
    report: dict[str, Any] = {"account": result.account.name, "ok": result.ok}
    if result.stat is not None:
        report["messages"], report["octets"] = result.stat
    if result.error is not None:
        report["reason"] = result.reason
        report["error"] = explain(result.error)[1]
    report["seconds"] = round(result.elapsed, 3)
    return report


def _outcome(result: CheckResult) -> str:
    if result.error is None:
        return "ok"
    return f"{result.reason}: {explain(result.error)[1]}"


def _cells(result: CheckResult) -> tuple[str, str, str]:
    if result.stat is None:
        return result.account.name, "-", "-"
    return result.account.name, str(result.stat[0]), human_size(result.stat[1])


Row = tuple[Sequence[str], str | None]
"""One row of a table of accounts: its cells, then None when it went well, else what
went wrong (the last column, ``RESULT``)."""


def print_table(header: Sequence[str], rows: Sequence[Row], out: TextIO, *, fancy: bool) -> None:
    """A table with one row per account: the first column left-aligned, the numbers
    right-aligned, the result last; a rich table when ``fancy`` (check's and fetch's)."""
    if fancy:
        _rich_rows(header, rows, out)
        return
    lines = [(*header, "RESULT"), *((*cells, outcome or "ok") for cells, outcome in rows)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    for line in lines:
        columns = [f"{line[0]:<{widths[0]}}"]
        columns += [f"{cell:>{width}}" for cell, width in zip(line[1:-1], widths[1:], strict=True)]
        print("  ".join([*columns, line[-1]]), file=out)


def _rich_rows(header: Sequence[str], rows: Sequence[Row], out: TextIO) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=plural(len(rows), "account"))
    for n, column in enumerate(header):
        table.add_column(column.lower(), justify="left" if n == 0 else "right")
    table.add_column("result")
    for cells, outcome in rows:
        table.add_row(*cells, "[green]ok[/]" if outcome is None else f"[red]{escape(outcome)}[/]")
    Console(file=out).print(table)


_CHECK_HEADER = ("ACCOUNT", "MESSAGES", "SIZE")


def _check_rows(results: list[CheckResult]) -> list[Row]:
    return [(_cells(result), None if result.ok else _outcome(result)) for result in results]


def plain_table(results: list[CheckResult], out: TextIO) -> None:
    """The results as a plain text table, then a summary line."""
    print_table(_CHECK_HEADER, _check_rows(results), out, fancy=False)
    failed = sum(not result.ok for result in results)
    print(f"{plural(len(results), 'account')} checked, {failed} failed", file=out)


def rich() -> Any:
    """The ``rich`` module, or None when it is not installed."""
    try:
        return importlib.import_module("rich")
    except ImportError:
        return None


def rich_table(results: list[CheckResult], out: TextIO) -> None:
    """The results as a rich table (a terminal with rich installed)."""
    print_table(_CHECK_HEADER, _check_rows(results), out, fancy=True)


@contextlib.contextmanager
def progress(
    total: int, out: TextIO, description: str = "checking"
) -> Iterator[Callable[[], None]]:
    """A transient rich progress bar; yields the function that advances it."""
    from rich.console import Console
    from rich.progress import Progress

    with Progress(console=Console(file=out), transient=True) as bar:
        task = bar.add_task(description, total=total)
        yield lambda: bar.advance(task)
