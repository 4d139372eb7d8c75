"""The ``aiopop`` command (also ``python -m aiopop``): stat, list, uidl, fetch, watch, check,
import-state, fingerprint, demo.

Passwords come from a ``getpass`` prompt, an environment variable
(``--password-env``) or a password command (``--password-command``); never
from a visible argument, and they are never echoed or logged. Errors print
a message and a hint, not a traceback; what an error is (and so the exit
status) is read from :func:`aiopop.diagnose`, the one table that
``check_many`` and ``watch`` read too. Exit statuses:

=====  ==============================================================
0      done
1      the server refused a command, an account failed, or a message was left
2      bad usage, or a bad account description or file of accounts
3      the login was refused (wrong credentials, or no safe method)
4      TLS: a certificate that does not verify, or TLS required and missing
5      the network: connection refused or lost, or a timeout
6      this machine: the Maildir, its state, the disk
130    interrupted (Ctrl-C)
=====  ==============================================================

The parser is in :mod:`aiopop._cli_parser`, the commands in
:mod:`aiopop._cli_run`, what is printed about errors and results in
:mod:`aiopop._cli_report`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, NoReturn, TextIO

from ._cli_fetch import run_fetch, run_fetch_many
from ._cli_parser import build_parser
from ._cli_report import explain, plural, print_error
from ._cli_run import (
    account_from_args,
    run_check,
    run_fingerprint,
    run_import_state,
    run_list,
    run_stat,
    run_uidl,
)
from ._cli_run import saved_messages as _saved_messages
from ._errors import (
    EXIT_AUTH,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_LOCAL,
    EXIT_NETWORK,
    EXIT_OK,
    EXIT_TLS,
    EXIT_USAGE,
    FailureKind,
    UsageError,
    diagnose,
)
from ._targets import FetchSettings, FetchTarget

__all__ = [
    "EXIT_AUTH",
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_LOCAL",
    "EXIT_NETWORK",
    "EXIT_OK",
    "EXIT_TLS",
    "EXIT_USAGE",
    "UsageError",
    "account_from_args",
    "build_parser",
    "explain",
    "main",
    "run",
]


def run() -> NoReturn:
    """The ``aiopop`` console script and ``python -m aiopop``: :func:`main`, then exit."""
    status = main()
    # Every file is closed and synced by now. Frozen objects are left out of the
    # interpreter's last garbage collection at exit, which otherwise walks every
    # object imported: about 15 ms here, a tenth of a small command's run.
    gc.freeze()
    sys.exit(status)


def _run_command(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    if args.command == "demo":
        from ._demo import demo

        return asyncio.run(demo())
    if args.command == "check":
        return asyncio.run(
            run_check(
                args.accounts,
                concurrency=args.concurrency,
                per_host=args.per_host,
                deadline=args.deadline,
                timeout=args.timeout,
                cafile=args.cafile,
                as_json=args.json,
                out=out,
            )
        )
    if args.command == "fingerprint":
        return asyncio.run(
            run_fingerprint(args.host, args.port, args.tls, timeout=args.timeout, out=out)
        )
    if args.command == "import-state":
        return asyncio.run(
            run_import_state(
                args.tool,
                args.file,
                args.host,
                args.user,
                port=args.port,
                host_in_file=args.host_in_file,
                maildir=args.maildir,
                state=args.state,
                as_json=args.json,
                out=out,
            )
        )
    if args.command == "watch":
        from ._daemon import run_daemon

        return asyncio.run(
            run_daemon(
                args.accounts,
                defaults=_settings(args, new_only=True, dry_run=False),
                interval=args.interval,
                polls=args.polls,
                **_file_options(args, out),
            )
        )
    if args.command == "fetch" and _accounts_file(args):
        return asyncio.run(
            run_fetch_many(
                args.host,
                defaults=_settings(args, new_only=args.new_only, dry_run=args.dry_run),
                **_file_options(args, out),
            )
        )
    if args.command == "fetch":
        _check_destination(args)
    # The password prompt (if any) runs here, outside the event loop: Ctrl-C
    # there raises KeyboardInterrupt at once instead of cancelling a task.
    account = account_from_args(args, sys.stdin)
    if args.command == "fetch":
        settings = _settings(args, new_only=args.new_only, dry_run=args.dry_run)
        secrets = (args.password_env, args.oauth2_token_env)
        hidden = tuple(variable for variable in secrets if variable)
        if args.command_line is not None:
            target = FetchTarget(
                account,
                command=tuple(args.command_line),
                state=Path(args.state).expanduser() if args.state else None,
                # A command is never handed a message it took before.
                settings=replace(settings, new_only=True),
                hidden=hidden,
            )
        else:
            target = FetchTarget(
                account, maildir=Path(args.maildir), settings=settings, hidden=hidden
            )
        return asyncio.run(run_fetch(target, as_json=args.json, out=out, err=err))
    runners = {"stat": run_stat, "list": run_list, "uidl": run_uidl}
    return asyncio.run(runners[args.command](account, args.json, out))


_MAILBOX_ONLY = {
    "port": "--port",
    "tls": "--tls",
    "auth": "--auth",
    "allow_cleartext": "--allow-cleartext",
    "fingerprint": "--fingerprint",
    "proxy": "--proxy",
    "password_env": "--password-env",
    "password_command": "--password-command",
    "oauth2_token_env": "--oauth2-token-env",
    "oauth2_token_command": "--oauth2-token-command",
    "maildir": "--maildir",
    "command_line": "--command",
    "state": "--state",
}


def _file_options(args: argparse.Namespace, out: TextIO) -> dict[str, Any]:
    """The options that fetch ACCOUNTS and watch ACCOUNTS pass on alike: the limits on
    sessions at once, --timeout, --cafile, --json and the output."""
    return {
        "concurrency": args.concurrency,
        "per_host": args.per_host,
        "timeout": args.timeout,
        "cafile": args.cafile,
        "as_json": args.json,
        "out": out,
    }


def _settings(args: argparse.Namespace, *, new_only: bool, dry_run: bool) -> FetchSettings:
    """The command line's policy options: one account's, or every account's default."""
    return FetchSettings(
        delete=args.delete,
        delete_after_days=args.delete_after_days,
        skip_larger_than=args.skip_larger_than,
        delete_larger_than=args.delete_larger_than,
        filter=args.filter,
        command_time_limit=args.command_time_limit,
        new_only=new_only,
        dry_run=dry_run,
    )


def _check_destination(args: argparse.Namespace) -> None:
    """``aiopop fetch HOST USER`` needs one destination: --maildir or --command."""
    if args.command_line is not None and not args.command_line:
        raise UsageError("--command needs a program (and its arguments), last on the line")
    if (args.maildir is None) == (args.command_line is None):
        raise UsageError(
            "give --maildir DIR or --command PROGRAM [ARGS...] with HOST USER (or give a file"
            " of accounts)"
        )
    if args.state is not None and args.maildir is not None:
        raise UsageError("--state is for --command: a Maildir keeps its own state")


def _accounts_file(args: argparse.Namespace) -> bool:
    """Whether ``aiopop fetch`` was given a file of accounts (one argument: a file, or a
    name ending in .toml) rather than HOST USER; options of one mailbox are then refused."""
    host: str = args.host
    if args.user is not None or "://" in host:
        return False
    if not (host.endswith(".toml") or os.path.isfile(host)):
        return False
    given = [option for name, option in _MAILBOX_ONLY.items() if getattr(args, name)]
    if given:
        raise UsageError(
            f"{', '.join(given)}: not with a file of accounts (the file says where and how"
            " to log in, and where each account's mail goes)"
        )
    return True


class _Dialogue(logging.Formatter):
    """``HOST:PORT C: USER u`` for the dialogue (the library logs the commands with their
    secrets redacted), ``aiopop: ...`` for the library's other notes."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        peer = getattr(record, "peer", None)
        return f"{peer} {text}" if isinstance(peer, str) and peer else f"aiopop: {text}"


@contextlib.contextmanager
def _dialogue(err: TextIO, verbose: bool) -> Iterator[None]:
    """With ``verbose``, the ``aiopop`` logger's debug lines (the dialogue) go to ``err``."""
    if not verbose:
        yield
        return
    logger = logging.getLogger("aiopop")
    handler = logging.StreamHandler(err)
    handler.setFormatter(_Dialogue("%(message)s"))
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def main(argv: Sequence[str] | None = None, *, out: TextIO | None = None) -> int:
    """Run the ``aiopop`` command; returns the exit status."""
    out = out if out is not None else sys.stdout
    err = sys.stderr
    args = build_parser().parse_args(argv)
    maildir: str | None = args.maildir if args.command == "fetch" else None
    before = _saved_messages(maildir) if maildir is not None else 0
    try:
        with _dialogue(err, getattr(args, "verbose", False)):
            return _run_command(args, out, err)
    except KeyboardInterrupt:
        if maildir is None:
            print("aiopop: interrupted", file=err)
        else:
            saved = max(0, _saved_messages(maildir) - before)
            print(
                f"aiopop: interrupted: {plural(saved, 'message')} saved into {maildir};"
                " the others are still on the server",
                file=err,
            )
            print("  hint: run the same command with --new-only to finish", file=err)
        return EXIT_INTERRUPTED
    except Exception as exc:
        status, message, hints = explain(exc)
        if maildir is not None and diagnose(exc).kind in (FailureKind.LOCAL, FailureKind.STATE):
            message += f" (fetching into the Maildir {maildir})"
        return print_error((status, message, hints), err)
