"""``aiopop fetch``: one account (HOST USER --maildir DIR), or every account of a file.

Both run :func:`fetch_account`, the one per-account path: connect (with the
command's greeting wait), log in with the method remembered in the Maildir's
state, :func:`~aiopop.fetch_to_maildir`, an explicit QUIT, and the login
method remembered. ``aiopop fetch ACCOUNTS.toml`` runs it for every account
of the file through :func:`aiopop._many.run_many`, ``check``'s scheduler
(``--concurrency``, ``--per-host``), each into the Maildir its ``maildir``
key names (:func:`aiopop._targets.load_fetch_targets`).

Exit status of a file of accounts: 0 when every account was fetched and no
message was refused or left over ``--max-size``; else 1 (``EXIT_FAILED``),
as ``aiopop check`` says 1 when an account failed; the table or the JSON
says which failed and why. A file that cannot be used (an account without
``maildir``...) is 2, before any account is fetched.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TextIO

from ._accounts import Account
from ._cli_report import (
    Explanation,
    Row,
    explain,
    human_size,
    plural,
    print_error,
    print_table,
    progress,
    rich,
)
from ._cli_run import changes, connect, login, reading
from ._delivery_state import STATE_FILE, DeliveryState
from ._errors import EXIT_FAILED, EXIT_OK, POP3Error, diagnose
from ._fetch import fetch_to_maildir
from ._fetch_run import FetchResult
from ._maildir import Maildir
from ._many import run_many
from ._targets import FetchTarget, load_fetch_targets
from ._types import AuthMethod

__all__ = ["Fetched", "fetch_account", "run_fetch", "run_fetch_many"]

TASK_NAME_PREFIX = "aiopop fetch: "
"""Each account's fetch of ``aiopop fetch ACCOUNTS`` runs in a task named so."""


@dataclass(frozen=True)
class Fetched:
    """What fetching one account did: the result, or the error that stopped it.

    ``ended`` is the error of a QUIT that failed after the fetch: the
    messages are saved, and the deletions (if any) were rolled back by the
    server. ``error`` is what stopped the fetch before that (``result`` is
    then None); only the many-account path keeps it here, the single one
    lets it propagate.
    """

    account: Account
    maildir: str
    result: FetchResult | None = None
    ended: Exception | None = None
    error: BaseException | None = None

    @property
    def failure(self) -> BaseException | None:
        """What went wrong, if anything."""
        return self.error if self.error is not None else self.ended

    @property
    def deleted(self) -> list[int]:
        """The numbers deleted on the server: marked, and QUIT answered ``+OK``."""
        return self.result.marked if self.result is not None and self.ended is None else []

    @property
    def left(self) -> bool:
        """True when a message was refused or over ``--max-size``: still on the server."""
        return self.result is not None and bool(self.result.refused or self.result.oversized)


async def fetch_account(
    account: Account, maildir: str, *, delete: bool, new_only: bool, max_size: int | None
) -> Fetched:
    """Fetch one account into ``maildir``: every message durably, before any deletion commits.

    The one per-account path of ``aiopop fetch``, for one account or a file
    of them. Raises what stopped it before QUIT; a QUIT that failed is
    :attr:`Fetched.ended` (deletions are reported only once the server
    answered ``+OK`` to QUIT). The login method that worked is kept in the
    Maildir's state and tried first next time.
    """
    key = account.mailbox_key
    state_path = Maildir(maildir).path / STATE_FILE
    prefer = await _remembered_login(state_path, key)
    client = account.client()
    try:
        await connect(account, client)
        method = await login(account, client, prefer)
        result = await fetch_to_maildir(
            client, maildir, account=key, delete=delete, new_only=new_only, max_size=max_size
        )
        ended: Exception | None = None
        try:
            await client.quit()
        except (POP3Error, OSError) as exc:
            ended = exc
    finally:
        await client.close()
    if method is not prefer:
        await _remember_login(state_path, key, method)
    return Fetched(account, maildir, result, ended)


def ended_explanation(fetched: Fetched) -> Explanation:
    """Why a fetch whose QUIT failed is an error, and the rollback of its deletions."""
    assert fetched.ended is not None
    status, message, hints = explain(fetched.ended)
    marked = fetched.result.marked if fetched.result is not None else []
    if marked:
        message += (
            f"; the session ended before the server confirmed QUIT, so the"
            f" {plural(len(marked), 'deletion')} were rolled back: the messages"
            " are saved and still on the server"
        )
        hints = ["run again with --new-only --delete to delete them"]
    return status, message, hints


def fetched_json(fetched: Fetched) -> dict[str, Any]:
    """One account's fetch as JSON: octets, not human sizes."""
    result = fetched.result
    report: dict[str, Any] = {"account": fetched.account.name, "maildir": fetched.maildir}
    if result is None:
        return report
    report |= {
        "fetched": [
            {"number": d.number, "uid": d.uid, "file": d.name, "size": d.size}
            for d in result.delivered
        ],
        "skipped": result.skipped,
        "deleted": fetched.deleted,
        "not_deleted": result.marked if fetched.ended is not None else [],
        "recovered": result.recovered,
        "refused": [
            {"number": r.number, "uid": r.uid, "error": str(r.error)} for r in result.refused
        ],
        "oversized": [{"number": o.number, "uid": o.uid, "size": o.size} for o in result.oversized],
    }
    return report


async def run_fetch(
    account: Account,
    maildir: str,
    *,
    delete: bool,
    new_only: bool,
    max_size: int | None,
    as_json: bool,
    out: TextIO,
    err: TextIO,
) -> int:
    """``aiopop fetch HOST USER --maildir DIR``: one account, as :func:`fetch_account` does.

    A session that ended before QUIT's ``+OK`` rolled the deletions back,
    which is said, with the network's exit status.
    """
    fetched = await fetch_account(
        account, maildir, delete=delete, new_only=new_only, max_size=max_size
    )
    result = fetched.result
    assert result is not None
    if as_json:
        print(json.dumps(fetched_json(fetched)), file=out)
    else:
        octets = sum(delivery.size for delivery in result.delivered)
        line = (
            f"Fetched {plural(len(result.delivered), 'message')} ({human_size(octets)})"
            f" into {maildir}"
        )
        extras = []
        if result.skipped:
            extras.append(f"{result.skipped} already there")
        if fetched.deleted:
            extras.append(f"{len(fetched.deleted)} deleted on the server")
        if result.recovered:
            extras.append(f"{result.recovered} recovered from an interrupted run")
        print(line + (f" ({', '.join(extras)})" if extras else ""), file=out)
        for refusal in result.refused:
            print(f"  message {refusal.number}: the server refused: {refusal.error}", file=out)
        for big in result.oversized:
            print(
                f"  message {big.number} (uid {big.uid or '-'}): {human_size(big.size)} or more,"
                f" over --max-size {human_size(max_size or 0)}: not saved, left on the server",
                file=out,
            )
    if fetched.ended is not None:
        return print_error(ended_explanation(fetched), err)
    return EXIT_FAILED if fetched.left else EXIT_OK


# -- every account of a file ------------------------------------------------------------------


async def run_fetch_many(
    path: str,
    *,
    concurrency: int,
    per_host: int,
    timeout: float | None = None,  # noqa: ASYNC109 - one step, as everywhere in aiopop
    cafile: str | None,
    delete: bool,
    new_only: bool,
    max_size: int | None,
    as_json: bool,
    out: TextIO,
) -> int:
    """``aiopop fetch ACCOUNTS.toml``: every account of the file, each into its ``maildir``.

    The whole file is checked before anything is fetched. One account's
    failure never stops the others. A table (a rich one, with a progress
    bar, on a terminal with rich), or with ``as_json`` one JSON object:
    ``{"accounts": [...], "failed": N}``, each account as ``aiopop fetch
    --json`` prints it plus ``ok`` (and ``reason``, ``error`` when it failed).
    """
    targets = reading(path, lambda: load_fetch_targets(path))
    options = changes(timeout, cafile)
    if options:
        targets = [replace(t, account=replace(t.account, **options)) for t in targets]

    async def job(target: FetchTarget) -> Fetched:
        maildir = str(target.maildir)
        try:
            return await fetch_account(
                target.account, maildir, delete=delete, new_only=new_only, max_size=max_size
            )
        except Exception as exc:
            return Fetched(target.account, maildir, error=exc)

    def cancelled(target: FetchTarget) -> Fetched:
        error = asyncio.CancelledError("the fetch was cancelled")
        return Fetched(target.account, str(target.maildir), error=error)

    order = {id(target.account): index for index, target in enumerate(targets)}
    fancy = not as_json and out.isatty() and rich() is not None
    results: list[Fetched] = []
    fetches = run_many(
        iter(targets),
        account_of=lambda target: target.account,
        job=job,
        cancelled=cancelled,
        concurrency=concurrency,
        per_host=per_host,
        task_prefix=TASK_NAME_PREFIX,
    )
    with progress(len(targets), out, "fetching") if fancy else contextlib.nullcontext() as advance:
        async with contextlib.aclosing(fetches) as stream:
            async for fetched in stream:
                results.append(fetched)
                if advance is not None:
                    advance()
    results.sort(key=lambda fetched: order[id(fetched.account)])
    failed = sum(fetched.failure is not None for fetched in results)
    if as_json:
        reports = [_account_json(fetched) for fetched in results]
        print(json.dumps({"accounts": reports, "failed": failed}), file=out)
    else:
        print_table(_HEADER, [_row(fetched) for fetched in results], out, fancy=fancy)
        if not fancy:
            print(f"{plural(len(results), 'account')} fetched, {failed} failed", file=out)
    return EXIT_FAILED if failed or any(fetched.left for fetched in results) else EXIT_OK


_HEADER = ("ACCOUNT", "FETCHED", "SIZE", "DELETED", "OVERSIZED", "REFUSED", "RECOVERED")


def _message(fetched: Fetched) -> str:
    """What went wrong with the account's fetch, in one line."""
    if fetched.error is not None:
        return explain(fetched.error)[1]
    return ended_explanation(fetched)[1]


def _outcome(fetched: Fetched) -> str | None:
    """None when the account's fetch went well, else its reason word and message."""
    failure = fetched.failure
    if failure is None:
        return None
    return f"{diagnose(failure).reason}: {_message(fetched)}"


def _row(fetched: Fetched) -> Row:
    result = fetched.result
    if result is None:
        return (fetched.account.name, *["-"] * (len(_HEADER) - 1)), _outcome(fetched)
    octets = sum(delivery.size for delivery in result.delivered)
    cells = (
        fetched.account.name,
        str(len(result.delivered)),
        human_size(octets),
        str(len(fetched.deleted)),
        str(len(result.oversized)),
        str(len(result.refused)),
        str(result.recovered),
    )
    return cells, _outcome(fetched)


def _account_json(fetched: Fetched) -> dict[str, Any]:
    report = fetched_json(fetched)
    failure = fetched.failure
    report["ok"] = failure is None
    if failure is not None:
        report["reason"] = diagnose(failure).reason
        report["error"] = _message(fetched)
    return report


# -- the login method that worked, in the Maildir's state -------------------------------------


async def _remembered_login(state_path: Path, key: str) -> AuthMethod | None:
    """The login method that worked last for ``key``, from an existing state file."""
    if not os.path.isfile(state_path):  # noqa: ASYNC240 (one stat, before any I/O)
        return None
    async with await DeliveryState.open(state_path) as state:
        value = await state.login_method(key)
    try:
        return AuthMethod(value) if value is not None else None
    except ValueError:  # written by a newer aiopop
        return None


async def _remember_login(state_path: Path, key: str, method: AuthMethod) -> None:
    async with await DeliveryState.open(state_path) as state:
        await state.remember_login(key, method.value)
