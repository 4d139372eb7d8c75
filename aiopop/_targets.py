"""Where ``aiopop fetch ACCOUNTS.toml`` saves each account's mail: the file's ``maildir`` key.

An :class:`~aiopop.Account` describes a mailbox and how to log in to it,
and nothing else: ``check_many``, ``watch`` and ``fetch_to_maildir`` all
take one, and only fetching into a Maildir needs a destination. So the
destination is not a field of the account; a :class:`FetchTarget` pairs
the two, as ``fetch_to_maildir(client, maildir, account=...)`` does in code.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ._accounts import Account, AccountError, account_tables

__all__ = ["FetchTarget", "load_fetch_targets"]


@dataclass(frozen=True)
class FetchTarget:
    """One account of a file of accounts, and the Maildir its mail goes into."""

    account: Account
    maildir: Path
    """The path as resolved: ``~`` expanded, relative to the accounts file's folder."""


def load_fetch_targets(path: str | os.PathLike[str]) -> list[FetchTarget]:
    """Every account of a TOML file of accounts with its ``maildir``, all checked first.

    ``maildir`` is a path: ``~`` is expanded, and a relative path is taken
    relative to the folder of the accounts file (not the current one), so a
    file means the same wherever the command runs. Raises
    :class:`~aiopop.AccountError` (naming the file and the account) for a
    bad table (as :func:`~aiopop.load_accounts`), for an account without
    ``maildir``, and for two accounts with the same mailbox
    (:attr:`Account.mailbox_key`) and the same Maildir: they would share one
    state, and fetch each message twice at once. Two mailboxes may share
    one Maildir (its state is kept per mailbox).
    """
    folder = Path(path).parent
    targets: list[FetchTarget] = []
    seen: dict[tuple[str, Path], str] = {}
    for account, table, where in account_tables(path):
        if "maildir" not in table:
            raise AccountError(
                f"{where}: no maildir: aiopop fetch needs one for every account"
                ' (maildir = "~/Mail/inbox")'
            )
        maildir = Path(os.path.abspath(folder / Path(table["maildir"]).expanduser()))
        key = (account.mailbox_key, maildir)
        if key in seen:
            raise AccountError(
                f"{where}: the same mailbox ({account.mailbox_key}) and Maildir ({maildir})"
                f" as {seen[key]}"
            )
        seen[key] = where
        targets.append(FetchTarget(account, maildir))
    return targets
