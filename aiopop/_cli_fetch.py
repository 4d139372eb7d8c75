"""``aiopop fetch``: one account (HOST USER, to a Maildir or a command), or every account of
a file; and the per-account path that ``aiopop watch ACCOUNTS`` polls with.

Both run :func:`fetch_account`: connect (with the command's greeting wait),
log in with the method remembered in the state, :func:`~aiopop.fetch_into`
(into the Maildir, or through :class:`~aiopop.CommandDelivery` with the
state file; with the policies, size limits and filter of the
:class:`~aiopop._targets.FetchSettings`), an explicit QUIT, and the login
method remembered. ``aiopop fetch ACCOUNTS.toml`` runs it for every account
of the file through :func:`aiopop._many.run_many`, ``check``'s scheduler
(``--concurrency``, ``--per-host``), each to the destination its table
names (:func:`aiopop._targets.load_fetch_targets`).

Exit status of a file of accounts: 0 when every account was fetched and no
message was refused, left over ``--skip-larger-than`` or not delivered;
else 1 (``EXIT_FAILED``), as ``aiopop check`` says 1 when an account
failed; the table or the JSON says which failed and why. A file that cannot
be used (an account without ``maildir`` or ``command``...) is 2, before any
account is fetched.
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
from ._cli_run import changed, changes, connect, login, reading
from ._delivery_state import DeliveryState
from ._errors import EXIT_FAILED, EXIT_OK, POP3Error, diagnose
from ._fetch import fetch_into
from ._fetch_run import FetchResult
from ._maildir import Maildir
from ._many import run_many
from ._message import Deliver, Filter
from ._programs import CommandDelivery, FilterCommand
from ._targets import FetchSettings, FetchTarget, load_fetch_targets
from ._types import AuthMethod

__all__ = ["Fetched", "fetch_account", "run_fetch", "run_fetch_many"]

TASK_NAME_PREFIX = "aiopop fetch: "
"""Each account's fetch of ``aiopop fetch ACCOUNTS`` runs in a task named so."""


@dataclass(frozen=True)
class Fetched:
    """What fetching one account did: the result, or the error that stopped it.

    ``ended`` is the error of a QUIT that failed after the fetch: the
    messages are delivered, and the deletions (if any) were rolled back by
    the server. ``error`` is what stopped the fetch before that (``result``
    is then None); only the many-account paths keep it here, the single one
    lets it propagate. ``login_delay`` is the server's LOGIN-DELAY in
    seconds after this login (0: none), when asked for.
    """

    target: FetchTarget
    result: FetchResult | None = None
    ended: Exception | None = None
    error: BaseException | None = None
    login_delay: float = 0.0

    @property
    def account(self) -> Account:
        return self.target.account

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
        """True when a message was refused, over the size limit or not delivered: still on
        the server, and worth an exit status."""
        result = self.result
        return result is not None and bool(result.refused or result.oversized or result.undelivered)


async def fetch_account(target: FetchTarget, *, ask_login_delay: bool = False) -> Fetched:
    """Deliver one account's mail as ``target`` says, every message before any deletion
    commits.

    The one per-account path of ``aiopop fetch`` (one account or a file of
    them) and of ``aiopop watch ACCOUNTS``: connect (with the command's
    greeting wait), log in with the method remembered in the state, run
    :func:`~aiopop.fetch_into` into the Maildir or through the command,
    QUIT, and remember the login method. Raises what stopped it before
    QUIT; a QUIT that failed is :attr:`Fetched.ended` (deletions are
    reported only once the server answered ``+OK`` to QUIT).
    """
    account, settings = target.account, target.settings
    key = account.mailbox_key
    state_path = target.state_path
    prefer = await _remembered_login(state_path, key)
    destination, state = _destination(target)
    screen: Filter | None = None
    if settings.filter:
        screen = FilterCommand(settings.filter, hidden=target.hidden)
    client = account.client()
    delay = 0.0
    try:
        await connect(account, client)
        method = await login(account, client, prefer)
        if ask_login_delay:
            announced = (await client.capabilities()).login_delay
            delay = float(announced.seconds) if announced is not None else 0.0
        result = await fetch_into(
            client,
            destination,
            account=account,
            state=state,
            new_only=settings.new_only,
            delete=settings.delete,
            delete_after_days=settings.delete_after_days,
            max_size=settings.skip_larger_than,
            delete_larger_than=settings.delete_larger_than,
            filter=screen,
            dry_run=settings.dry_run,
        )
        ended: Exception | None = None
        try:
            await client.quit()
        except (POP3Error, OSError) as exc:
            ended = exc
    finally:
        await client.close()
    if method is not prefer and not settings.dry_run:
        await _remember_login(state_path, key, method)
    return Fetched(target, result, ended, login_delay=delay)


def _destination(target: FetchTarget) -> tuple[Maildir | Deliver, Path | None]:
    """The destination ``fetch_into`` is given, and its state file (None: the Maildir's)."""
    if target.maildir is not None:
        return Maildir(target.maildir), None
    assert target.command is not None
    delivery = CommandDelivery(
        target.command, time_limit=target.settings.command_time_limit, hidden=target.hidden
    )
    return delivery, target.state_path


def ended_explanation(fetched: Fetched) -> Explanation:
    """Why a fetch whose QUIT failed is an error, and the rollback of its deletions."""
    assert fetched.ended is not None
    status, message, hints = explain(fetched.ended)
    marked = fetched.result.marked if fetched.result is not None else []
    if marked:
        message += (
            f"; the session ended before the server confirmed QUIT, so the"
            f" {plural(len(marked), 'deletion')} were rolled back: the messages"
            " are delivered and still on the server"
        )
        hints = ["run again with --new-only and the same policy to delete them"]
    return status, message, hints


def fetched_json(fetched: Fetched) -> dict[str, Any]:
    """One account's fetch as JSON: octets, not human sizes."""
    result, target = fetched.result, fetched.target
    report: dict[str, Any] = {"account": fetched.account.name}
    if target.maildir is not None:
        report["maildir"] = str(target.maildir)
    else:
        report["command"] = list(target.command or ())
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
        "undelivered": [
            {"number": u.number, "uid": u.uid, "error": str(u.error)} for u in result.undelivered
        ],
        "filtered": [
            {"number": f.number, "uid": f.uid, "size": f.size, "verdict": f.verdict, "by": f.by}
            for f in result.filtered
        ],
    }
    if result.plan is not None:
        report["dry_run"] = {
            part: [{"number": p.number, "uid": p.uid, "size": p.size} for p in planned]
            for part, planned in (("fetch", result.plan.fetch), ("delete", result.plan.delete))
        }
    return report


def describe(fetched: Fetched) -> list[str]:
    """The lines ``aiopop fetch`` prints about one account's fetch (not about a failure)."""
    result, target = fetched.result, fetched.target
    assert result is not None
    where = (
        target.destination
        if target.maildir is not None
        else f"the command {target.destination[2:]}"
    )
    if result.plan is not None:
        return _describe_plan(fetched, where)
    octets = sum(delivery.size for delivery in result.delivered)
    verb = "Fetched" if target.maildir is not None else "Delivered"
    line = f"{verb} {plural(len(result.delivered), 'message')} ({human_size(octets)})"
    line += f" into {where}" if target.maildir is not None else f" to {where}"
    extras = []
    if result.skipped:
        extras.append(f"{result.skipped} already there")
    if fetched.deleted:
        extras.append(f"{len(fetched.deleted)} deleted on the server")
    if result.recovered:
        extras.append(f"{result.recovered} recovered from an interrupted run")
    lines = [line + (f" ({', '.join(extras)})" if extras else "")]
    return lines + _details(fetched)


def _details(fetched: Fetched, *, planned: bool = False) -> list[str]:
    """The messages left, refused or judged; ``planned``: for a dry run, which judged
    nothing for good (the deletions it plans are listed on their own)."""
    result, settings = fetched.result, fetched.target.settings
    assert result is not None
    lines = []
    for refusal in result.refused:
        lines.append(f"  message {refusal.number}: the server refused: {refusal.error}")
    for big in result.oversized:
        limit = human_size(settings.skip_larger_than or 0)
        lines.append(
            f"  message {big.number} (uid {big.uid or '-'}): {human_size(big.size)} or more,"
            f" over --skip-larger-than {limit}: not fetched, left on the server"
        )
    for failed in result.undelivered:
        lines.append(
            f"  message {failed.number} (uid {failed.uid or '-'}): not delivered: {failed.error};"
            " left on the server, tried again next run"
        )
    for judged in result.filtered:
        if planned and judged.verdict == "delete":
            continue  # among the plan's deletions
        if judged.verdict == "skip":
            what = "the filter said skip: left on the server"
        elif judged.by == "filter":
            what = "the filter said delete: deleted without being fetched"
        else:
            limit = human_size(settings.delete_larger_than or 0)
            what = f"over --delete-larger-than {limit}: deleted without being fetched"
        if judged.verdict == "delete" and judged.number not in fetched.deleted:
            what = what.replace("deleted without", "marked deleted (not committed) without")
        lines.append(f"  message {judged.number} (uid {judged.uid or '-'}): {what}")
    return lines


def _describe_plan(fetched: Fetched, where: str) -> list[str]:
    result = fetched.result
    assert result is not None
    assert result.plan is not None
    plan = result.plan
    octets = sum(planned.size for planned in plan.fetch)
    line = (
        f"Dry run: would fetch {plural(len(plan.fetch), 'message')} ({human_size(octets)})"
        f" {'into' if fetched.target.maildir is not None else 'for'} {where}"
        f" and delete {plural(len(plan.delete), 'message')} on the server"
    )
    if fetched.target.settings.delete:
        line += " (and each fetched message once delivered, with --delete)"
    lines = [line]
    for planned in plan.fetch:
        lines.append(
            f"  would fetch message {planned.number} (uid {planned.uid or '-'},"
            f" {human_size(planned.size)})"
        )
    for planned in plan.delete:
        lines.append(f"  would delete message {planned.number} (uid {planned.uid or '-'})")
    return [*lines, *_details(fetched, planned=True), "  nothing was fetched, deleted or recorded"]


async def run_fetch(target: FetchTarget, *, as_json: bool, out: TextIO, err: TextIO) -> int:
    """``aiopop fetch HOST USER (--maildir DIR | --command ...)``: one account, as
    :func:`fetch_account` does.

    A session that ended before QUIT's ``+OK`` rolled the deletions back,
    which is said, with the network's exit status.
    """
    fetched = await fetch_account(target)
    if as_json:
        print(json.dumps(fetched_json(fetched)), file=out)
    else:
        for line in describe(fetched):
            print(line, file=out)
    if fetched.ended is not None:
        return print_error(ended_explanation(fetched), err)
    return EXIT_FAILED if fetched.left else EXIT_OK


# -- every account of a file ------------------------------------------------------------------


def load_targets(
    path: str, defaults: FetchSettings, timeout: float | None, cafile: str | None
) -> list[FetchTarget]:
    """The file's targets, with the command line's --timeout and --cafile applied to each."""
    targets = reading(path, lambda: load_fetch_targets(path, defaults))
    options = changes(timeout, cafile)
    if options:
        targets = [replace(t, account=changed(t.account, options)) for t in targets]
    return targets


async def run_fetch_many(
    path: str,
    *,
    defaults: FetchSettings,
    concurrency: int,
    per_host: int,
    timeout: float | None = None,  # noqa: ASYNC109 - one step, as everywhere in aiopop
    cafile: str | None,
    as_json: bool,
    out: TextIO,
) -> int:
    """``aiopop fetch ACCOUNTS.toml``: every account of the file, each to its destination.

    The whole file is checked before anything is fetched. One account's
    failure never stops the others. A table (a rich one, with a progress
    bar, on a terminal with rich), or with ``as_json`` one JSON object:
    ``{"accounts": [...], "failed": N}``, each account as ``aiopop fetch
    --json`` prints it plus ``ok`` (and ``reason``, ``error`` when it failed).
    """
    targets = load_targets(path, defaults, timeout, cafile)

    async def job(target: FetchTarget) -> Fetched:
        try:
            return await fetch_account(target)
        except Exception as exc:
            return Fetched(target, error=exc)

    def cancelled(target: FetchTarget) -> Fetched:
        return Fetched(target, error=asyncio.CancelledError("the fetch was cancelled"))

    order = {id(target): index for index, target in enumerate(targets)}
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
    results.sort(key=lambda fetched: order[id(fetched.target)])
    failed = sum(fetched.failure is not None for fetched in results)
    if as_json:
        reports = [_account_json(fetched) for fetched in results]
        print(json.dumps({"accounts": reports, "failed": failed}), file=out)
    elif defaults.dry_run:
        # The plan of each account, as aiopop fetch HOST USER --dry-run says it.
        for fetched in results:
            lines = [f"{fetched.account.name}: {_outcome(fetched)}"]
            if fetched.result is not None:
                lines = [f"{fetched.account.name}: {line.strip()}" for line in describe(fetched)]
            print("\n".join(lines), file=out)
        print(f"{plural(len(results), 'account')}, {failed} failed; nothing was changed", file=out)
    else:
        print_table(_HEADER, [_row(fetched) for fetched in results], out, fancy=fancy)
        if not fancy:
            print(f"{plural(len(results), 'account')} fetched, {failed} failed", file=out)
    return EXIT_FAILED if failed or any(fetched.left for fetched in results) else EXIT_OK


_HEADER = (
    "ACCOUNT", "FETCHED", "SIZE", "DELETED", "OVERSIZED", "REFUSED", "UNDELIVERED", "RECOVERED",
)  # fmt: skip


def failure_message(fetched: Fetched) -> str:
    """What went wrong with the account's fetch, in one line."""
    if fetched.error is not None:
        return explain(fetched.error)[1]
    return ended_explanation(fetched)[1]


def _outcome(fetched: Fetched) -> str | None:
    """None when the account's fetch went well, else its reason word and message."""
    failure = fetched.failure
    if failure is None:
        return None
    return f"{diagnose(failure).reason}: {failure_message(fetched)}"


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
        str(len(result.undelivered)),
        str(result.recovered),
    )
    return cells, _outcome(fetched)


def _account_json(fetched: Fetched) -> dict[str, Any]:
    report = fetched_json(fetched)
    failure = fetched.failure
    report["ok"] = failure is None
    if failure is not None:
        report["reason"] = diagnose(failure).reason
        report["error"] = failure_message(fetched)
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
