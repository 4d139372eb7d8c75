"""The ``aiopop`` commands themselves: the account from the options, then each command."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import json
import os
import shlex
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any, TextIO, TypeVar

from ._accounts import (
    Account,
    Secret,
    load_accounts,
    secret_from_command,
)
from ._cli_report import (
    check_json,
    human_size,
    plain_table,
    plural,
    progress,
    rich,
    rich_table,
)
from ._client import DEFAULT_TIMEOUT, POP3, POP3_SSL
from ._delivery_state import STATE_FILE
from ._errors import (
    EXIT_FAILED,
    EXIT_OK,
    AccountError,
    MethodNotOfferedError,
    POP3Error,
    POP3TimeoutError,
    UsageError,
)
from ._import_state import ImportKind, import_state
from ._maildir import Maildir
from ._many import CheckResult, check_many
from ._tls import client_context
from ._types import AuthMethod

__all__ = [
    "GREETING_WAIT",
    "account_from_args",
    "changed",
    "changes",
    "connect",
    "login",
    "reading",
    "run_check",
    "run_fingerprint",
    "run_import_state",
    "run_list",
    "run_stat",
    "run_uidl",
]

Loaded = TypeVar("Loaded")
V = TypeVar("V", int, str)

GREETING_WAIT = 5.0
"""Seconds to wait for the greeting on a connection without implicit TLS. A POP3S
port says nothing until the client starts TLS: after this, the command says so rather
than waiting out the whole --timeout and blaming a slow server."""


PROBE_WAIT = 2.0
"""Seconds a second connection may take to show that the port takes connections."""


class NoGreetingError(POP3TimeoutError):
    """No greeting within :data:`GREETING_WAIT`: perhaps a POP3S port reached in cleartext."""


# -- accounts from the command line -------------------------------------------------------------


def context(cafile: str | None) -> ssl.SSLContext | None:
    """An SSL context trusting ``cafile``, or None (the system's CAs)."""
    if cafile is None:
        return None
    try:
        return ssl.create_default_context(cafile=cafile)
    except (OSError, ssl.SSLError) as exc:
        raise UsageError(f"cannot read --cafile {cafile}: {exc}") from None


def _command(text: str) -> list[str]:
    try:
        argv = shlex.split(text)
    except ValueError as exc:
        raise UsageError(f"cannot split the command {text!r}: {exc}") from None
    if not argv:
        raise UsageError("the command is empty")
    return argv


def _from_env(variable: str, what: str) -> Callable[[], Awaitable[str]]:
    """A secret read from ``$variable`` when needed; says whether it is unset or empty."""

    async def read() -> str:
        value = os.environ.get(variable)
        if value is None:
            raise UsageError(f"--{what}-env {variable}: the environment variable is not set")
        if not value:
            raise UsageError(f"--{what}-env {variable}: the environment variable is empty")
        return value

    return read


def account_from_args(args: argparse.Namespace, stdin: TextIO) -> Account:
    """The account the options describe, with its secret source (prompting if need be).

    The prompt runs here, before any event loop: Ctrl-C there stops the
    command at once, and Ctrl-D (end of input) is a usage error.
    """
    options: dict[str, Any] = {"allow_cleartext": args.allow_cleartext}
    if args.timeout is not None:
        options["timeout"] = args.timeout
    if args.tls is not None:
        options["tls"] = args.tls
    if args.auth is not None:
        options["auth"] = args.auth
    if args.fingerprint is not None:
        if args.cafile is not None:
            raise UsageError("--fingerprint replaces the CA check: give it or --cafile, not both")
        options["tls_fingerprint"] = args.fingerprint
    if args.proxy is not None:
        options["proxy"] = args.proxy
    ssl_context = context(args.cafile)
    if ssl_context is not None:
        options["ssl_context"] = ssl_context
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
        password = _from_env(args.password_env, "password")
    elif args.password_command:
        password = secret_from_command(_command(args.password_command))
    elif args.oauth2_token_env:
        token = _from_env(args.oauth2_token_env, "oauth2-token")
    elif args.oauth2_token_command:
        token = secret_from_command(_command(args.oauth2_token_command))
    elif stdin.isatty():
        try:
            password = getpass.getpass(f"Password for {account.name}: ")
        except EOFError:
            raise UsageError("no password: the prompt reached the end of input") from None
        if not password:
            raise UsageError("no password: the prompt got an empty line")
    else:
        raise UsageError(
            "no password: use --password-env or --password-command (stdin is not a terminal)"
        )
    return account.with_secret(password=password, oauth2_token=token)


# -- one session ------------------------------------------------------------------------------


async def connect(account: Account, client: POP3) -> None:
    """Connect, waiting at most :data:`GREETING_WAIT` for the greeting without implicit TLS.

    The client's ``timeout`` keeps its meaning (one step); this shorter wait
    is the command's own, for the one mistake it can name: a POP3S port,
    which takes the connection and then says nothing. Whether the port takes
    connections is asked apart (:func:`takes_connections`) before saying so;
    a server that does not answer at all is left to the step timeout.
    """
    step = account.timeout
    indirect = account.proxy is not None or account.connector is not None
    if account.tls == "implicit" or indirect or (step is not None and step <= GREETING_WAIT):
        # Through a proxy or a connector, a direct probe would ask another network path.
        await client.connect()
        return
    connecting = asyncio.ensure_future(client.connect())
    try:
        done, _ = await asyncio.wait({connecting}, timeout=GREETING_WAIT)
        silent = not done and await takes_connections(account.host, account.effective_port)
        if silent and not connecting.done():
            connecting.cancel()
            with contextlib.suppress(asyncio.CancelledError, POP3Error, OSError):
                await connecting
            await client.close()
            raise NoGreetingError(
                f"no greeting from {account.host}:{account.effective_port} within"
                f" {GREETING_WAIT:g} s; is this a POP3S port? try --tls implicit"
            )
        await connecting
    finally:
        if not connecting.done():
            connecting.cancel()
            with contextlib.suppress(asyncio.CancelledError, POP3Error, OSError):
                await connecting


async def takes_connections(host: str, port: int, wait: float = PROBE_WAIT) -> bool:
    """Whether ``host:port`` completes a TCP connection within ``wait`` seconds (then closed)."""
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), wait)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


async def login(account: Account, client: POP3, prefer: AuthMethod | None = None) -> AuthMethod:
    """Log in as the account says; a pinned method the server does not offer is named,
    with what it offers, before any credential is sent."""
    pinned = account.auth.upper()
    if pinned not in ("*", "+USER"):
        caps = await client.capabilities()
        offered = ["+APOP"] if client.apop_timestamp else []
        if "USER" in caps:
            offered.append("+USER")
        offered.extend(caps.sasl)
        missing = (pinned == "+APOP" and client.apop_timestamp is None) or (
            pinned != "+APOP" and caps.announced and pinned not in caps.sasl
        )
        if missing:
            raise MethodNotOfferedError(
                f"the server does not offer {account.auth}; it offers "
                f"{', '.join(offered) or 'no method announced in CAPA'}; nothing was sent"
            )
    return await account.login(client, prefer=prefer)


@contextlib.asynccontextmanager
async def session(account: Account) -> AsyncIterator[POP3]:
    """As :meth:`Account.session`, with the command's greeting wait and login checks."""
    client = account.client()
    try:
        await connect(account, client)
        await login(account, client)
        yield client
    except BaseException:
        await client.close()
        raise
    await client.quit()


# -- the commands -----------------------------------------------------------------------------


async def run_stat(account: Account, as_json: bool, out: TextIO) -> int:
    """``aiopop stat``: the classic line, and nothing changed on the server."""
    async with session(account) as client:
        count, octets = await client.stat()
    if as_json:
        print(json.dumps({"account": account.name, "messages": count, "octets": octets}), file=out)
    else:
        size = f" ({human_size(octets)})" if octets >= 1024 else ""
        print(f"You have {plural(count, 'message')} totaling {octets} bytes{size}", file=out)
    return EXIT_OK


async def run_list(account: Account, as_json: bool, out: TextIO) -> int:
    """``aiopop list``: number and size of each message."""
    async with session(account) as client:
        entries = await client.list()
    _print_listing(entries, "size", human_size, as_json, out)
    return EXIT_OK


async def run_uidl(account: Account, as_json: bool, out: TextIO) -> int:
    """``aiopop uidl``: number and unique id of each message."""
    async with session(account) as client:
        entries = await client.uidl()
    _print_listing(entries, "uid", str, as_json, out)
    return EXIT_OK


def _print_listing(
    entries: Iterable[tuple[int, V]],
    name: str,
    shown: Callable[[V], str],
    as_json: bool,
    out: TextIO,
) -> None:
    """One line ``number value`` per message (``shown`` for people), or a JSON list."""
    if as_json:
        print(json.dumps([{"number": number, name: value} for number, value in entries]), file=out)
    else:
        for number, value in entries:
            print(f"{number} {shown(value)}", file=out)


def saved_messages(maildir: str) -> int:
    """How many messages the Maildir's ``new/`` holds (0 when there is none yet)."""
    try:
        return sum(1 for entry in os.scandir(Path(maildir) / "new") if entry.is_file())
    except OSError:
        return 0


def read_accounts(path: str) -> list[Account]:
    """The accounts of a TOML file; a file that cannot be read is a bad account file."""
    return reading(path, lambda: load_accounts(path))


def reading(path: str, load: Callable[[], Loaded]) -> Loaded:
    """``load()``, a file of accounts at ``path``; a file that cannot be read is a bad one."""
    try:
        return load()
    except UnicodeDecodeError as exc:
        raise AccountError(
            f"{path}: not UTF-8 (byte {exc.start}): save the accounts file as UTF-8"
        ) from None
    except IsADirectoryError:
        raise AccountError(f"{path}: a directory, not a file of accounts") from None
    except FileNotFoundError:
        raise AccountError(f"{path}: no such file of accounts") from None
    except OSError as exc:
        raise AccountError(f"{path}: cannot read it: {exc.strerror or exc}") from None


def changes(timeout: float | None, cafile: str | None) -> dict[str, Any]:
    """What the command's --timeout and --cafile change in every account of a file."""
    options: dict[str, Any] = {}
    ssl_context = context(cafile)
    if ssl_context is not None:
        options["ssl_context"] = ssl_context
    if timeout is not None:
        options["timeout"] = timeout
    return options


def changed(account: Account, options: dict[str, Any]) -> Account:
    """``account`` with :func:`changes`' ``options``; --cafile leaves alone an account that
    pins its certificate (tls_fingerprint replaces the CA check)."""
    if account.tls_fingerprint is not None and "ssl_context" in options:
        options = {key: value for key, value in options.items() if key != "ssl_context"}
    return replace(account, **options) if options else account


async def run_check(
    path: str,
    *,
    concurrency: int,
    per_host: int,
    deadline: float | None,
    timeout: float | None = None,  # noqa: ASYNC109 - one step, as everywhere in aiopop
    cafile: str | None,
    as_json: bool,
    out: TextIO,
) -> int:
    """``aiopop check``: every account of a TOML file at once; a table, or JSON lines.

    ``timeout`` (one step) replaces each account's own when given;
    ``deadline`` bounds each account's whole check.
    """
    accounts = read_accounts(path)
    options = changes(timeout, cafile)
    if options:
        accounts = [changed(account, options) for account in accounts]
    order = {id(account): index for index, account in enumerate(accounts)}
    fancy = not as_json and out.isatty() and rich() is not None
    results: list[CheckResult] = []
    checks = check_many(accounts, concurrency=concurrency, per_host=per_host, deadline=deadline)
    with progress(len(accounts), out) if fancy else contextlib.nullcontext() as advance:
        async with contextlib.aclosing(checks) as stream:
            async for result in stream:
                results.append(result)
                if as_json:
                    print(json.dumps(check_json(result)), file=out, flush=True)
                if advance is not None:
                    advance()
    results.sort(key=lambda result: order[id(result.account)])
    if not as_json:
        (rich_table if fancy else plain_table)(results, out)
    failed = sum(not result.ok for result in results)
    return EXIT_FAILED if failed else EXIT_OK


async def run_fingerprint(
    host: str,
    port: int | None,
    tls: str,
    *,
    timeout: float | None,  # noqa: ASYNC109 - one step, as everywhere in aiopop
    out: TextIO,
) -> int:
    """``aiopop fingerprint``: the server certificate's SHA-256 fingerprint, unverified.

    Connects (implicit TLS, or STLS), reads the certificate, and QUITs without logging in.
    """
    if port is not None and not 0 < port < 65536:
        raise UsageError(f"--port must be from 1 to 65535, not {port}")
    unverified = client_context(pinned=True)  # nothing to compare with yet: only shown
    step = timeout if timeout is not None else DEFAULT_TIMEOUT
    client: POP3
    if tls == "implicit":
        client = POP3_SSL(host, port, ssl_context=unverified, timeout=step)
    else:
        client = POP3(host, port, tls="starttls", ssl_context=unverified, timeout=step)
    try:
        await client.connect()
        fingerprint = client.certificate_fingerprint
        await client.quit()
    finally:
        await client.close()
    if fingerprint is None:  # pragma: no cover - connect() raised without TLS
        raise POP3Error("the server presented no certificate")
    print(fingerprint, file=out)
    return EXIT_OK


async def run_import_state(
    tool: ImportKind,
    file: str,
    host: str,
    user: str,
    *,
    port: int | None,
    host_in_file: str | None,
    maildir: str | None,
    state: str | None,
    as_json: bool,
    out: TextIO,
) -> int:
    """``aiopop import-state``: another tool's seen unique-ids into a Maildir's or a state file."""
    if port is not None and not 0 < port < 65536:
        raise UsageError(f"--port must be from 1 to 65535, not {port}")
    if maildir is not None:
        box = Maildir(maildir)
        await box.create()
        state_path = box.path / STATE_FILE
    else:
        state_path = Path(os.path.expanduser(state or ""))  # noqa: ASYNC240 - no I/O
        # As fetch and watch make the directory of a command's state: 0700, it holds
        # what was delivered.
        await asyncio.to_thread(state_path.parent.mkdir, mode=0o700, parents=True, exist_ok=True)
    result = await import_state(
        tool, file, state_path, user=user, host=host, port=port, host_in_file=host_in_file
    )
    if as_json:
        summary = {
            "mailbox": result.mailbox,
            "state": str(state_path),
            "imported": result.imported,
            "known": result.known,
            "skipped": result.skipped,
            "other_accounts": result.others,
        }
        print(json.dumps(summary), file=out)
        return EXIT_OK
    print(
        f"Imported {plural(result.imported, 'unique-id')} of {result.mailbox} from {file}"
        f" into {state_path} ({result.known} already known,"
        f" {result.skipped} of other accounts skipped)",
        file=out,
    )
    if result.others:
        shown = ", ".join(result.others[:5]) + (", ..." if len(result.others) > 5 else "")
        print(f"  other accounts in the file: {shown}", file=out)
    if not result.imported and not result.known:
        print(
            f"  nothing in {file} is for {user} on {host_in_file or host}:"
            " check the names, or give --host-in-file",
            file=out,
        )
    return EXIT_OK
