"""The ``aiopop`` command (also ``python -m aiopop``): stat, list, uidl, fetch, check, demo.

Passwords come from a ``getpass`` prompt, an environment variable
(``--password-env``) or a password command (``--password-command``); never
from a visible argument, and they are never echoed or logged. Errors print
the server's explanation and a hint, not a traceback. Exit statuses:

=====  ==============================================================
0      done
1      the server refused a command, or (``check``) an account failed
2      bad usage or a bad account description
3      the login was refused (wrong credentials, or no safe method)
4      TLS: a certificate that does not verify, or TLS required and missing
5      the network: connection refused or lost, or a timeout
130    interrupted (Ctrl-C)
=====  ==============================================================
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import getpass
import importlib
import json
import os
import shlex
import ssl
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, NoReturn, TextIO

from . import __version__
from ._accounts import (
    Account,
    AccountError,
    Secret,
    load_accounts,
    secret_from_command,
    secret_from_env,
)
from ._delivery_state import STATE_FILE, DeliveryState, StateError, StateLockedError
from ._errors import (
    AuthenticationError,
    ConnectionLostError,
    InsecureLoginError,
    LoginDelayError,
    MailboxInUseError,
    MethodNotOfferedError,
    POP3Error,
    POP3TimeoutError,
    ProtocolError,
    ResponseError,
    SASLError,
    TemporaryFailureError,
    TLSRequiredError,
)
from ._fetch import DEFAULT_MAX_SIZE, UIDLUnavailableError, fetch_to_maildir
from ._maildir import Maildir
from ._many import CheckResult, check_many
from ._types import TLS_POLICIES, AuthMethod

__all__ = ["EXIT_AUTH", "EXIT_FAILED", "EXIT_NETWORK", "EXIT_TLS", "EXIT_USAGE", "main"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_AUTH = 3
EXIT_TLS = 4
EXIT_NETWORK = 5
EXIT_INTERRUPTED = 130

_EXIT_TABLE = """exit status:
  0    done
  1    the server refused a command, or (check) an account failed
  2    bad usage or a bad account description
  3    the login was refused (wrong credentials, or no safe method)
  4    TLS: a certificate that does not verify, or TLS required and missing
  5    the network: connection refused or lost, or a timeout
  130  interrupted"""

_SECRETS = """secrets: the password comes from --password-env VAR, --password-command CMD,
or a prompt when stdin is a terminal; never from an argument. OAuth 2.0 tokens
(Gmail, Microsoft 365) come from --oauth2-token-env or --oauth2-token-command."""


class UsageError(Exception):
    """The command line cannot be run as given."""


# -- the parser -------------------------------------------------------------------------


def _mailbox_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("host", help="the server's host name, or a POP URL (pops://user@host)")
    parser.add_argument("user", nargs="?", help="the user name (not needed with a POP URL)")
    parser.add_argument("--port", type=int, help="the port (default 995, or 110 without TLS)")
    parser.add_argument(
        "--tls",
        choices=sorted(TLS_POLICIES),
        help="implicit: POP3S (default); starttls: STLS required; "
        "if-offered: STLS when offered; none: cleartext",
    )
    parser.add_argument(
        "--auth",
        default=None,
        help='the login method: "*" picks the strongest (default), "+APOP", "+USER", '
        "or a SASL mechanism such as SCRAM-SHA-256",
    )
    parser.add_argument(
        "--allow-cleartext",
        action="store_true",
        help="allow sending the password unencrypted (only on a trusted network path)",
    )
    parser.add_argument("--cafile", help="trust the CA certificates in this PEM file")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds (default 60)")
    secrets = parser.add_mutually_exclusive_group()
    secrets.add_argument("--password-env", metavar="VAR", help="read the password from $VAR")
    secrets.add_argument(
        "--password-command", metavar="CMD", help="run CMD (no shell) and read its first line"
    )
    secrets.add_argument("--oauth2-token-env", metavar="VAR", help="an OAuth 2.0 token in $VAR")
    secrets.add_argument(
        "--oauth2-token-command", metavar="CMD", help="run CMD to print an OAuth 2.0 token"
    )
    parser.add_argument("--json", action="store_true", help="print JSON")


def build_parser() -> argparse.ArgumentParser:
    """The whole command line, every subcommand documented."""
    parser = argparse.ArgumentParser(
        prog="aiopop",
        description="Read POP3 mailboxes: check them, list them, download them into a Maildir.",
        epilog=f"{_SECRETS}\n\n{_EXIT_TABLE}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"aiopop {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, summary: str) -> argparse.ArgumentParser:
        return commands.add_parser(
            name,
            help=summary,
            description=summary,
            epilog=f"{_SECRETS}\n\n{_EXIT_TABLE}",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )

    _mailbox_options(
        command("stat", "Print 'You have N messages totaling M bytes'; the mailbox is unchanged.")
    )
    _mailbox_options(command("list", "List each message's number and size."))
    _mailbox_options(command("uidl", "List each message's number and unique id."))
    fetch = command(
        "fetch",
        "Download every message into a Maildir (tmp/, fsync, rename into new/).",
    )
    _mailbox_options(fetch)
    fetch.add_argument("--maildir", required=True, help="the Maildir (created if missing)")
    fetch.add_argument(
        "--delete",
        action="store_true",
        help="delete each message on the server once it is safely on disk",
    )
    fetch.add_argument(
        "--new-only",
        action="store_true",
        help="skip messages fetched before (by UIDL, state kept next to the Maildir)",
    )
    fetch.add_argument(
        "--max-size",
        type=_size,
        default=DEFAULT_MAX_SIZE,
        metavar="SIZE",
        help="skip messages larger than SIZE bytes (K, M, G suffixes; 0: no limit;"
        f" default {DEFAULT_MAX_SIZE // 2**20}M): they stay on the server and are reported",
    )
    check = command("check", "Check every account of a TOML file at once; a table of results.")
    check.add_argument("accounts", help="a TOML file of [[account]] tables")
    check.add_argument("--concurrency", type=int, default=100, help="accounts at once (100)")
    check.add_argument("--per-host", type=int, default=10, help="sessions per host at once (10)")
    check.add_argument("--timeout", type=float, default=60.0, help="seconds per account (60)")
    check.add_argument("--cafile", help="trust the CA certificates in this PEM file")
    check.add_argument("--json", action="store_true", help="print JSON lines, one per account")
    command("demo", "Start the embedded test server with a sample mailbox and read it.")
    return parser


# -- accounts from the command line -------------------------------------------------------------


def _context(cafile: str | None) -> ssl.SSLContext | None:
    if cafile is None:
        return None
    try:
        return ssl.create_default_context(cafile=cafile)
    except (OSError, ssl.SSLError) as exc:
        raise UsageError(f"cannot read --cafile {cafile}: {exc}") from None


def _size(text: str) -> int | None:
    """``--max-size``: octets, with an optional K, M or G (powers of 1024); 0 for none."""
    units = {"K": 2**10, "M": 2**20, "G": 2**30}
    number, unit = (text[:-1], units[text[-1].upper()]) if text[-1:].upper() in units else (text, 1)
    try:
        value = int(number) * unit
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a size: {text!r} (say 500000, 100K or 150M)"
        ) from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"a size cannot be negative: {text!r}")
    return value or None


def _command(text: str) -> list[str]:
    argv = shlex.split(text)
    if not argv:
        raise UsageError("the command is empty")
    return argv


def account_from_args(args: argparse.Namespace, stdin: TextIO) -> Account:
    """The account the options describe, with its secret source (prompting if need be)."""
    options: dict[str, Any] = {"timeout": args.timeout, "allow_cleartext": args.allow_cleartext}
    if args.tls is not None:
        options["tls"] = args.tls
    if args.auth is not None:
        options["auth"] = args.auth
    context = _context(args.cafile)
    if context is not None:
        options["ssl_context"] = context
    if "://" in args.host:
        if args.user is not None:
            raise UsageError("give a POP URL or HOST USER, not both")
        if args.port is not None:
            raise UsageError("put the port in the POP URL")
        account = Account.from_url(args.host, **options)
    else:
        if args.user is None:
            raise UsageError("the user name is missing: aiopop COMMAND HOST USER")
        account = Account(args.host, args.user, port=args.port, **options)
    password: Secret | None = None
    token: Secret | None = None
    if args.password_env:
        password = secret_from_env(args.password_env)
    elif args.password_command:
        password = secret_from_command(_command(args.password_command))
    elif args.oauth2_token_env:
        token = secret_from_env(args.oauth2_token_env)
    elif args.oauth2_token_command:
        token = secret_from_command(_command(args.oauth2_token_command))
    elif stdin.isatty():
        password = getpass.getpass(f"Password for {account.name}: ")
    else:
        raise UsageError(
            "no password: use --password-env or --password-command (stdin is not a terminal)"
        )
    return account.with_secret(password=password, oauth2_token=token)


# -- errors -------------------------------------------------------------------------------------


def explain(exc: BaseException) -> tuple[int, str, str | None]:
    """The exit status, a one-line message and a hint for an error."""
    if isinstance(exc, UsageError | AccountError):
        return EXIT_USAGE, str(exc), None
    if isinstance(exc, StateLockedError):
        return EXIT_FAILED, str(exc), "a fetch or watch of this mailbox is running: wait for it"
    if isinstance(exc, StateError):
        return EXIT_FAILED, str(exc), None
    if isinstance(exc, InsecureLoginError):
        return EXIT_AUTH, str(exc), "use --tls implicit (POP3S), or --allow-cleartext if trusted"
    if isinstance(exc, TLSRequiredError):
        return EXIT_TLS, str(exc), "the server cannot do TLS here: try --tls implicit (port 995)"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return (
            EXIT_TLS,
            f"the server's certificate does not verify: {exc.verify_message}",
            "for a private CA, pass --cafile; check the host name",
        )
    if isinstance(exc, MailboxInUseError | LoginDelayError | TemporaryFailureError):
        hint = "try again later"
        if isinstance(exc, LoginDelayError) and exc.delay:
            hint = f"the server allows one login every {exc.delay} s; try again later"
        return EXIT_FAILED, f"the server refused: {exc}", hint
    if isinstance(exc, AuthenticationError):
        notes = "; ".join(getattr(exc, "__notes__", []))
        message = f"login refused: {exc}" + (f" ({notes})" if notes else "")
        return EXIT_AUTH, message, "check the user name and the password or token"
    if isinstance(exc, SASLError | MethodNotOfferedError):
        return EXIT_AUTH, str(exc), "try another --auth method"
    if isinstance(exc, POP3TimeoutError):
        return EXIT_NETWORK, str(exc), "the server is slow or unreachable; try --timeout"
    if isinstance(exc, ConnectionLostError):
        return EXIT_NETWORK, str(exc), None
    if isinstance(exc, ResponseError):
        return EXIT_FAILED, f"the server refused: {exc}", None
    if isinstance(exc, ProtocolError):
        return EXIT_FAILED, f"the server broke the protocol: {exc}", None
    if isinstance(exc, ssl.SSLError):
        return EXIT_TLS, f"TLS failed: {exc}", "is this a POP3S port? try --tls starttls"
    if isinstance(exc, OSError) and exc.filename is not None:
        # A local file (the Maildir, its state): not the network's fault.
        where = exc.filename if exc.filename2 is None else f"{exc.filename} -> {exc.filename2}"
        return (
            EXIT_FAILED,
            f"{where}: {exc.strerror or exc}",
            "a local file: check the free space, the file system and the permissions",
        )
    if isinstance(exc, OSError):
        reason = exc.strerror or str(exc)
        return EXIT_NETWORK, f"cannot reach the server: {reason}", "check the host and port"
    if isinstance(exc, UIDLUnavailableError):
        return EXIT_FAILED, str(exc), "this server has no UIDL: run without --new-only"
    if isinstance(exc, POP3Error):
        return EXIT_FAILED, str(exc), None
    raise exc


def _report(exc: BaseException, err: TextIO) -> int:
    status, message, hint = explain(exc)
    print(f"aiopop: error: {message}", file=err)
    if hint:
        print(f"  hint: {hint}", file=err)
    return status


# -- the commands -----------------------------------------------------------------------------


async def run_stat(account: Account, as_json: bool, out: TextIO) -> int:
    """``aiopop stat``: the classic line, and nothing changed on the server."""
    async with account.session() as client:
        stat = await client.stat()
    if as_json:
        print(
            json.dumps({"account": account.name, "messages": stat[0], "octets": stat[1]}), file=out
        )
    else:
        print("You have %d messages totaling %d bytes" % stat, file=out)
    return EXIT_OK


async def run_list(account: Account, as_json: bool, out: TextIO) -> int:
    """``aiopop list``: number and size of each message."""
    async with account.session() as client:
        entries = await client.list()
    _print_pairs([(n, size) for n, size in entries], "size", as_json, out)
    return EXIT_OK


async def run_uidl(account: Account, as_json: bool, out: TextIO) -> int:
    """``aiopop uidl``: number and unique id of each message."""
    async with account.session() as client:
        entries = await client.uidl()
    _print_pairs([(n, uid) for n, uid in entries], "uid", as_json, out)
    return EXIT_OK


def _print_pairs(pairs: list[tuple[int, int | str]], name: str, as_json: bool, out: TextIO) -> None:
    """One line ``number value`` per message, or a JSON list of ``{"number", name}``."""
    if as_json:
        print(json.dumps([{"number": number, name: value} for number, value in pairs]), file=out)
    else:
        for number, value in pairs:
            print(f"{number} {value}", file=out)


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
    """``aiopop fetch``: every message into a Maildir, durably, before any deletion commits.

    Deletions are reported only once the server answered ``+OK`` to QUIT; a
    session that ended before that rolled them back, which is said, with the
    network's exit status. The login method that worked is kept in the
    Maildir's state and tried first next time.
    """
    key = account.mailbox_key
    state_path = Maildir(maildir).path / STATE_FILE
    prefer = await _remembered_login(state_path, key)
    client = account.client()
    try:
        await client.connect()
        method = await account.login(client, prefer=prefer)
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
    deleted = result.marked if ended is None else []
    octets = sum(delivery.size for delivery in result.delivered)
    if as_json:
        report = {
            "account": account.name,
            "maildir": maildir,
            "fetched": [
                {"number": d.number, "uid": d.uid, "file": d.name, "size": d.size}
                for d in result.delivered
            ],
            "skipped": result.skipped,
            "deleted": deleted,
            "not_deleted": result.marked if ended is not None else [],
            "recovered": result.recovered,
            "refused": [
                {"number": r.number, "uid": r.uid, "error": str(r.error)} for r in result.refused
            ],
            "oversized": [
                {"number": o.number, "uid": o.uid, "size": o.size} for o in result.oversized
            ],
        }
        print(json.dumps(report), file=out)
    else:
        line = f"Fetched {len(result.delivered)} messages ({octets} bytes) into {maildir}"
        extras = []
        if result.skipped:
            extras.append(f"{result.skipped} already there")
        if deleted:
            extras.append(f"{len(deleted)} deleted on the server")
        if result.recovered:
            extras.append(f"{result.recovered} recovered from an interrupted run")
        print(line + (f" ({', '.join(extras)})" if extras else ""), file=out)
        for refusal in result.refused:
            print(f"  message {refusal.number}: the server refused: {refusal.error}", file=out)
        for big in result.oversized:
            print(
                f"  message {big.number} (uid {big.uid or '-'}): {big.size} bytes or more, over"
                f" --max-size {max_size}: not saved, left on the server",
                file=out,
            )
    if ended is not None:
        status, message, hint = explain(ended)
        if result.marked:
            message += (
                f"; the session ended before the server confirmed QUIT, so the"
                f" {len(result.marked)} deletions were rolled back: the messages are saved"
                " and still on the server"
            )
            hint = "run again with --new-only --delete to delete them"
        print(f"aiopop: error: {message}", file=err)
        if hint:
            print(f"  hint: {hint}", file=err)
        return status
    return EXIT_FAILED if result.refused or result.oversized else EXIT_OK


async def _remembered_login(state_path: Path, key: str) -> AuthMethod | None:
    """The login method that worked last for ``key``, from an existing state file."""
    if not os.path.exists(state_path):  # noqa: ASYNC240 (one stat, before any I/O)
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


async def run_check(
    path: str,
    *,
    concurrency: int,
    per_host: int,
    seconds: float,
    cafile: str | None,
    as_json: bool,
    out: TextIO,
) -> int:
    """``aiopop check``: every account of a TOML file at once; a table, or JSON lines."""
    accounts = load_accounts(path)
    context = _context(cafile)
    if context is not None:
        accounts = [replace(account, ssl_context=context) for account in accounts]
    order = {id(account): index for index, account in enumerate(accounts)}
    fancy = not as_json and out.isatty() and _rich() is not None
    results: list[CheckResult] = []
    checks = check_many(accounts, concurrency=concurrency, per_host=per_host, timeout=seconds)
    with _progress(len(accounts), out) if fancy else contextlib.nullcontext() as advance:
        async with contextlib.aclosing(checks) as stream:
            async for result in stream:
                results.append(result)
                if as_json:
                    print(json.dumps(_check_json(result)), file=out, flush=True)
                if advance is not None:
                    advance()
    results.sort(key=lambda result: order[id(result.account)])
    if not as_json:
        (_rich_table if fancy else _plain_table)(results, out)
    failed = sum(not result.ok for result in results)
    return EXIT_FAILED if failed else EXIT_OK


def _check_json(result: CheckResult) -> dict[str, Any]:
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


def _plain_table(results: list[CheckResult], out: TextIO) -> None:
    rows = [
        (
            result.account.name,
            str(result.stat[0]) if result.stat else "-",
            str(result.stat[1]) if result.stat else "-",
            _outcome(result),
        )
        for result in results
    ]
    header = ("ACCOUNT", "MESSAGES", "OCTETS", "RESULT")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(3)]
    for row in [header, *rows]:
        print(
            f"{row[0]:<{widths[0]}}  {row[1]:>{widths[1]}}  {row[2]:>{widths[2]}}  {row[3]}",
            file=out,
        )
    failed = sum(not result.ok for result in results)
    print(f"{len(results)} accounts checked, {failed} failed", file=out)


def _rich() -> Any:
    try:
        return importlib.import_module("rich")
    except ImportError:
        return None


def _rich_table(results: list[CheckResult], out: TextIO) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=f"{len(results)} accounts")
    for column, justify in (("account", "left"), ("messages", "right"), ("octets", "right")):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    table.add_column("result")
    for result in results:
        table.add_row(
            result.account.name,
            str(result.stat[0]) if result.stat else "-",
            str(result.stat[1]) if result.stat else "-",
            "[green]ok[/]" if result.ok else f"[red]{escape(_outcome(result))}[/]",
        )
    Console(file=out).print(table)


@contextlib.contextmanager
def _progress(total: int, out: TextIO) -> Iterator[Callable[[], None]]:
    from rich.console import Console
    from rich.progress import Progress

    with Progress(console=Console(file=out), transient=True) as progress:
        task = progress.add_task("checking", total=total)
        yield lambda: progress.advance(task)


async def _mailbox_command(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    account = account_from_args(args, sys.stdin)
    if args.command == "fetch":
        return await run_fetch(
            account,
            args.maildir,
            delete=args.delete,
            new_only=args.new_only,
            max_size=args.max_size,
            as_json=args.json,
            out=out,
            err=err,
        )
    runners = {"stat": run_stat, "list": run_list, "uidl": run_uidl}
    return await runners[args.command](account, args.json, out)


def run() -> NoReturn:
    """The ``aiopop`` console script and ``python -m aiopop``: :func:`main`, then exit."""
    status = main()
    # Every file is closed and synced by now. Frozen objects are left out of the
    # interpreter's last garbage collection at exit, which otherwise walks every
    # object imported: about 15 ms here, a tenth of a small command's run.
    gc.freeze()
    sys.exit(status)


def main(argv: Sequence[str] | None = None, *, out: TextIO | None = None) -> int:
    """Run the ``aiopop`` command; returns the exit status."""
    out = out if out is not None else sys.stdout
    err = sys.stderr
    args = build_parser().parse_args(argv)
    try:
        if args.command == "demo":
            from ._demo import demo

            return asyncio.run(demo())
        if args.command == "check":
            return asyncio.run(
                run_check(
                    args.accounts,
                    concurrency=args.concurrency,
                    per_host=args.per_host,
                    seconds=args.timeout,
                    cafile=args.cafile,
                    as_json=args.json,
                    out=out,
                )
            )
        return asyncio.run(_mailbox_command(args, out, err))
    except KeyboardInterrupt:
        print("aiopop: interrupted", file=err)
        return EXIT_INTERRUPTED
    except Exception as exc:
        return _report(exc, err)
