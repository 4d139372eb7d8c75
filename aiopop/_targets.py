"""Where ``aiopop fetch`` and ``aiopop watch`` deliver each account's mail, and by what policy.

An :class:`~aiopop.Account` describes a mailbox and how to log in to it,
and nothing else: ``check_many``, ``watch`` and ``fetch_into`` all take
one. A :class:`FetchTarget` pairs it with a destination (a Maildir, or a
command run per message with its state file) and the settings of
:func:`aiopop.fetch_into` that the command line and the accounts file give.

In an accounts file, each ``[[account]]`` table may carry these keys beside
the account's own (``aiopop check --help`` lists those):

* ``maildir = "~/Mail/work"``, or ``command = ["rt-mailgate", "--queue",
  "general"]`` (an array, or one string split as a shell would split it,
  never run through a shell), with ``state = "..."`` (the state file;
  default: :func:`default_state`) and ``command_time_limit`` (seconds);
* ``delete = true``, ``delete_after_days = 7``, ``skip_larger_than =
  "20M"``, ``delete_larger_than = "50M"``, ``filter = ["spam-check"]``.

A key in the file beats the command line's option for that account (and
``delete`` and ``delete_after_days`` go together: either one in the file
makes the file's policy the whole policy); the command line's options are
the defaults of every account. A command is only ever handed new messages
(``--new-only`` always holds for it). The delivery and filter programs do
not get the environment variables that hold the file's secrets.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ._account_keys import command_argv, parse_size
from ._accounts import Account, AccountError, account_tables
from ._delivery_state import STATE_FILE
from ._fetch import DEFAULT_MAX_SIZE
from ._programs import DEFAULT_COMMAND_TIME_LIMIT

__all__ = [
    "DEFAULT_COMMAND_TIME_LIMIT",
    "FetchSettings",
    "FetchTarget",
    "default_state",
    "load_fetch_targets",
]

DEFAULT_INTERVAL = 300.0
"""Seconds between two polls of an account by ``aiopop watch ACCOUNTS``, by default
(fetchmail's and getmail's usual daemon interval is 5 to 15 minutes)."""


def default_state() -> Path:
    """The state file of command deliveries when none is named:
    ``$XDG_STATE_HOME/aiopop/aiopop-uidl.sqlite3`` (``~/.local/state/aiopop/...``)."""
    home = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    return Path(home) / "aiopop" / "aiopop-uidl.sqlite3"


@dataclass(frozen=True)
class FetchSettings:
    """The settings of one account's fetch: :func:`aiopop.fetch_into`'s, and the command's."""

    delete: bool = False
    delete_after_days: float | None = None
    skip_larger_than: int | None = DEFAULT_MAX_SIZE
    delete_larger_than: int | None = None
    filter: tuple[str, ...] | None = None
    """A filter program (mpop's convention), as an argv."""
    command_time_limit: float = DEFAULT_COMMAND_TIME_LIMIT
    new_only: bool = False
    dry_run: bool = False


@dataclass(frozen=True)
class FetchTarget:
    """One account, where its mail goes, and how: a Maildir, or a command and a state file."""

    account: Account
    maildir: Path | None = None
    """The Maildir, as resolved: ``~`` expanded, relative to the accounts file's folder."""
    command: tuple[str, ...] | None = None
    """The delivery command's argv, run once per message."""
    state: Path | None = None
    """The state file of a command delivery (a Maildir keeps its own)."""
    settings: FetchSettings = field(default_factory=FetchSettings)
    hidden: tuple[str, ...] = ()
    """Environment variables the delivery and filter programs do not get: those that hold
    the passwords and tokens of the file's accounts."""

    def __post_init__(self) -> None:
        if (self.maildir is None) == (self.command is None):
            raise ValueError("a FetchTarget needs a maildir or a command, not both")

    @property
    def destination(self) -> str:
        """The destination in words, for reports: the Maildir's path, or ``| command``."""
        if self.maildir is not None:
            return str(self.maildir)
        assert self.command is not None
        return "| " + " ".join(self.command)

    @property
    def state_path(self) -> Path:
        """The state file: the Maildir's, or the command delivery's."""
        if self.maildir is not None:
            return self.maildir / STATE_FILE
        return self.state if self.state is not None else default_state()


def load_fetch_targets(
    path: str | os.PathLike[str], defaults: FetchSettings | None = None
) -> list[FetchTarget]:
    """Every account of a TOML file of accounts with its destination and settings, all
    checked first.

    ``maildir`` and ``state`` are paths: ``~`` is expanded, and a relative
    path is taken relative to the folder of the accounts file (not the
    current one), so a file means the same wherever the command runs.
    Raises :class:`~aiopop.AccountError` (naming the file and the account)
    for a bad table (as :func:`~aiopop.load_accounts`), for an account
    with neither or both of ``maildir`` and ``command``, for settings of
    the wrong type, and for two accounts with the same mailbox
    (:attr:`Account.mailbox_key`) and the same state file: they would share
    one state, and fetch each message twice at once. Two mailboxes may
    share one Maildir or one state file (its state is kept per mailbox).
    """
    folder = Path(path).parent
    targets: list[FetchTarget] = []
    seen: dict[tuple[str, Path], str] = {}
    tables = account_tables(path)
    hidden = tuple(sorted({t[key] for _, t, _ in tables for key in _SECRET_VARIABLES if key in t}))
    for account, table, where in tables:
        target = _target(account, table, where, folder, defaults or FetchSettings())
        target = replace(target, hidden=hidden)
        key = (account.mailbox_key, target.state_path)
        if key in seen:
            raise AccountError(
                f"{where}: the same mailbox ({account.mailbox_key}) and state"
                f" ({target.state_path}) as {seen[key]}"
            )
        seen[key] = where
        targets.append(target)
    return targets


_SECRET_VARIABLES = ("password_env", "oauth2_token_env")


def _path(folder: Path, value: str) -> Path:
    return Path(os.path.abspath(folder / Path(value).expanduser()))


def _target(
    account: Account, table: Mapping[str, Any], where: str, folder: Path, defaults: FetchSettings
) -> FetchTarget:
    if ("maildir" in table) == ("command" in table):
        raise AccountError(
            f"{where}: give maildir or command (where the account's mail goes), not"
            ' both or neither: maildir = "~/Mail/inbox", or command = ["procmail"]'
        )
    if "state" in table and "maildir" in table:
        raise AccountError(f"{where}: a Maildir keeps its own state: leave state out")
    changes: dict[str, Any] = {}
    if table.get("delete") and "delete_after_days" in table:
        raise AccountError(f"{where}: give delete = true or delete_after_days, not both")
    if "delete" in table or "delete_after_days" in table:
        # The account's policy is the file's, whole: "delete = false" keeps mail whatever
        # the command line says, "delete_after_days = 7" is not cut short by its --delete.
        changes["delete"] = table.get("delete", False)
        changes["delete_after_days"] = table.get("delete_after_days")
    if "command_time_limit" in table:
        changes["command_time_limit"] = table["command_time_limit"]
    for key in ("skip_larger_than", "delete_larger_than"):
        if key in table:
            changes[key] = parse_size(table[key])
    if "filter" in table:
        changes["filter"] = tuple(command_argv(table["filter"]) or ())
    settings = replace(defaults, **changes)
    if "maildir" in table:
        return FetchTarget(account, maildir=_path(folder, table["maildir"]), settings=settings)
    command = tuple(command_argv(table["command"]) or ())
    state = _path(folder, table["state"]) if "state" in table else None
    # A command is never handed a message it took before, whatever --new-only says.
    settings = replace(settings, new_only=True)
    return FetchTarget(account, command=command, state=state, settings=settings)
