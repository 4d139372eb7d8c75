"""The ``aiopop`` command line: its parser, its options' types and its help texts."""

from __future__ import annotations

import argparse
import math
import shlex

from . import __version__
from ._account_keys import parse_size
from ._client import DEFAULT_TIMEOUT
from ._fetch import DEFAULT_MAX_SIZE
from ._import_state import IMPORT_KINDS
from ._many import DEFAULT_CONCURRENCY, DEFAULT_DEADLINE, DEFAULT_PER_HOST
from ._targets import DEFAULT_COMMAND_TIME_LIMIT, DEFAULT_INTERVAL
from ._types import TLS_POLICIES

__all__ = ["ACCOUNT_KEYS", "build_parser"]

EXIT_TABLE = """exit status:
  0    done
  1    the server refused a command, an account failed (check, fetch ACCOUNTS), or
       fetch left a message on the server (not delivered, over the size limit)
  2    bad usage, or a bad account description or file of accounts
  3    the login was refused (wrong credentials, or no safe method)
  4    TLS: a certificate that does not verify, or TLS required and missing
  5    the network: connection refused or lost, or a timeout
  6    this machine: the Maildir, its state, the disk (full, read-only, permissions)
  130  interrupted"""

SECRETS = """secrets: the password comes from --password-env VAR, --password-command CMD,
or a prompt when stdin is a terminal; never from an argument. OAuth 2.0 tokens
(Gmail, Microsoft 365) come from --oauth2-token-env or --oauth2-token-command."""

ACCOUNT_KEYS = {
    "name": "a label for the results (default user@host)",
    "url": "a POP URL, pops://user@host[:port] (or host, port and user)",
    "host": "the server's host name",
    "port": "the port, an integer (default 995, or 110 without implicit TLS)",
    "user": "the user name",
    "tls": "implicit (default), starttls, if-offered or none",
    "tls_fingerprint": 'pin the certificate by SHA-256, "SHA256:AB:CD:..." (no CA check)',
    "auth": '"*" (default: the strongest offered), "+APOP", "+USER" or a SASL mechanism',
    "allow_cleartext": "true to allow a password over an unencrypted connection",
    "timeout": "seconds for each step (connect, each reply)",
    "state_key": "names the mailbox's state in place of user@host[:port]",
    "proxy": "connect through a proxy: socks5://, socks5h:// or http://HOST:PORT",
    "password_env": "the environment variable holding the password",
    "password_command": 'a command printing the password: ["pass", "show", "mail/work"]',
    "keyring": "true: the password is in the system keyring (service aiopop)",
    "oauth2_token_env": "the environment variable holding an OAuth 2.0 token",
    "oauth2_token_command": "a command printing an OAuth 2.0 token",
}
"""Every key of an ``[[account]]`` table, for ``aiopop check --help``."""

_ACCOUNTS_FILE = (
    "the accounts file: UTF-8 TOML, one [[account]] table per mailbox, with exactly one\n"
    "secret source (password_env, password_command, keyring, oauth2_token_env or\n"
    "oauth2_token_command); inline passwords are refused. Its keys:\n"
    + "\n".join(f"  {key:<21} {text}" for key, text in ACCOUNT_KEYS.items())
    + "\n  (fetch and watch read more keys: see aiopop fetch --help)"
    + "\n\nexample:\n"
    '  [[account]]\n  name = "work"\n  url = "pops://alice@pop.example.com"\n'
    '  password_command = ["pass", "show", "mail/work"]'
)


DELIVERY_KEYS = {
    "maildir": "the Maildir for this account's mail (~ expanded; relative to the file's folder)",
    "command": 'or a command run per message, the message on its stdin: ["procmail"]',
    "state": "with command: the state file (default ~/.local/state/aiopop/...)",
    "command_time_limit": "seconds the command may take per message",
    "delete": "true: delete each message once delivered",
    "delete_after_days": "delete each message N days after its first delivery",
    "skip_larger_than": 'leave bigger messages on the server: 20000000 or "20M"',
    "delete_larger_than": "delete bigger messages without fetching them",
    "filter": "a program given each new message's headers: exit 0 fetch, 1 delete, 2 skip",
}
"""The keys that fetch and watch read beside an account's own (check ignores them)."""

_DELIVERY = (
    "where each account's mail goes, and the policy (keys of its [[account]] table beside\n"
    "those of aiopop check --help; a key here beats the command line's option):\n"
    + "\n".join(f"  {key:<21} {text}" for key, text in DELIVERY_KEYS.items())
)

_FETCH_MANY = (
    "many accounts: aiopop fetch ACCOUNTS.toml fetches every account of the file at\n"
    "once, each to its maildir or command; the options below are every account's\n"
    "defaults, --concurrency and --per-host limit the sessions at once. Exit status 1\n"
    "when any account failed or left a message on the server, 2 when the file is bad\n"
    "(then nothing is fetched).\n\n" + _DELIVERY + "\n\nexample:\n"
    '  [[account]]\n  name = "work"\n  url = "pops://alice@pop.example.com"\n'
    '  password_command = ["pass", "show", "mail/work"]\n  maildir = "~/Mail/work"\n'
    "  delete_after_days = 7\n\n"
    '  [[account]]\n  name = "support"\n  url = "pops://help@pop.example.com"\n'
    '  password_env = "SUPPORT_PASSWORD"\n'
    '  command = ["rt-mailgate", "--queue", "general", "--url", "http://localhost/"]'
)

_WATCH = (
    "aiopop watch polls every account of the file for ever (new messages only, by UIDL),\n"
    "delivering each as the file says; one line per event on stdout (--json: one JSON\n"
    "object per line). A refused login stops that account until a reload; other failures\n"
    "are retried with backoff and jitter; the server's LOGIN-DELAY is honoured.\n"
    "Signals: SIGHUP reloads the file; SIGTERM or SIGINT stops within a few seconds (a\n"
    "running delivery command is killed after a short grace period, and its message\n"
    "stays on the server: delivery is at least once). Exit status 2 for a bad file\n"
    "at start, else 0.\n\n" + _DELIVERY
)


def seconds(text: str) -> float:
    """``--timeout`` and ``--deadline``: a positive, finite number of seconds."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, not {text!r}")
    return value


def positive(text: str) -> int:
    """``--concurrency`` and ``--per-host``: a whole number, at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {text!r}")
    return value


def size(text: str) -> int | None:
    """``--skip-larger-than`` and ``--delete-larger-than``: octets, with an optional K, M or G
    (powers of 1024); 0 for none."""
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _timeout_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--timeout",
        type=seconds,
        default=None,
        metavar="SECONDS",
        help=f"seconds for each step: connecting, each reply (default {DEFAULT_TIMEOUT:g})",
    )


def _verbose_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="show the dialogue with the server on standard error: each command sent and each"
        " status line received (never a message's content); passwords, APOP digests, AUTH"
        " responses and tokens hidden",
    )


def _mailbox_options(parser: argparse.ArgumentParser, *, or_file: bool = False) -> None:
    also = "; or (fetch) a TOML file of accounts" if or_file else ""
    parser.add_argument(
        "host", help=f"the server's host name, or a POP URL (pops://user@host){also}"
    )
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
    parser.add_argument(
        "--fingerprint",
        metavar="SHA256",
        help="pin the server's certificate by its SHA-256 fingerprint (SHA256:AB:CD:..., colons"
        " optional) in place of the CA and host name checks: for a self-signed certificate",
    )
    parser.add_argument(
        "--proxy",
        metavar="URL",
        help="connect through a proxy: socks5://HOST:PORT, socks5h:// (the proxy resolves the"
        " server's name) or http:// (HTTP CONNECT); needs pip install 'aiopop[proxy]'"
        + ("; in a file of accounts, each account's proxy key" if or_file else ""),
    )
    _timeout_option(parser)
    secrets = parser.add_mutually_exclusive_group()
    secrets.add_argument("--password-env", metavar="VAR", help="read the password from $VAR")
    secrets.add_argument(
        "--password-command", metavar="CMD", help="run CMD (no shell) and read its first line"
    )
    secrets.add_argument("--oauth2-token-env", metavar="VAR", help="an OAuth 2.0 token in $VAR")
    secrets.add_argument(
        "--oauth2-token-command", metavar="CMD", help="run CMD to print an OAuth 2.0 token"
    )
    parser.add_argument("--json", action="store_true", help="print JSON (sizes in octets)")
    _verbose_option(parser)


def _import_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("tool", choices=IMPORT_KINDS, help="the tool that wrote FILE")
    parser.add_argument(
        "file",
        metavar="FILE",
        help="its record: fetchmail's ~/.fetchids, getmail6's oldmail-SERVER-PORT-USER,"
        " mpop's ~/.mpop_uidls/USER_at_HOST (or its uidls_file)",
    )
    parser.add_argument(
        "host", metavar="HOST", help="the server's host name, as aiopop fetch will be given it"
    )
    parser.add_argument("user", metavar="USER", help="the user name")
    parser.add_argument(
        "--port", type=int, help="the port aiopop will use (default: getmail6's, or 110)"
    )
    parser.add_argument(
        "--host-in-file",
        metavar="NAME",
        help="the server's name in FILE, when the old tool called it otherwise",
    )
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--maildir", help="the Maildir aiopop fetch delivers into (its state)")
    where.add_argument("--state", metavar="STATE", help="a state file (SQLiteStore's, for watch)")
    parser.add_argument("--json", action="store_true", help="print JSON")


def days(text: str) -> float:
    """``--delete-after-days``: a number of days, at least 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of days: {text!r}") from None
    if not (value >= 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a number of days, at least 0, not {text!r}")
    return value


def program(text: str) -> tuple[str, ...]:
    """``--filter``: a command line, split as a shell would split it (never run by one)."""
    try:
        argv = shlex.split(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"cannot split {text!r}: {exc}") from None
    if not argv or not argv[0]:
        raise argparse.ArgumentTypeError("an empty command")
    return tuple(argv)


def _policy_options(parser: argparse.ArgumentParser) -> None:
    """What to delete, skip and filter, and the delivery command's time limit: for fetch, and
    (as every account's default) for watch. An account's own keys in a file beat them."""
    delete = parser.add_mutually_exclusive_group()
    delete.add_argument(
        "--delete",
        action="store_true",
        help="delete each message on the server once it is delivered (default: keep)",
    )
    delete.add_argument(
        "--delete-after-days",
        type=days,
        metavar="DAYS",
        help="delete each message DAYS days after it was first delivered",
    )
    parser.add_argument(
        "--skip-larger-than",
        "--max-size",
        dest="skip_larger_than",
        type=size,
        default=DEFAULT_MAX_SIZE,
        metavar="SIZE",
        help="leave messages larger than SIZE bytes on the server, and report them (K, M, G"
        f" suffixes; 0: no limit; default {DEFAULT_MAX_SIZE // 2**20}M)",
    )
    parser.add_argument(
        "--delete-larger-than",
        type=size,
        metavar="SIZE",
        help="delete messages larger than SIZE on the server without fetching them",
    )
    parser.add_argument(
        "--filter",
        type=program,
        metavar="PROGRAM",
        help="run PROGRAM with each new message's headers on its standard input (mpop's"
        " convention): exit 0 fetch, 1 delete without fetching, 2 skip",
    )
    parser.add_argument(
        "--command-time-limit",
        type=seconds,
        default=DEFAULT_COMMAND_TIME_LIMIT,
        metavar="SECONDS",
        help="seconds the delivery command may take per message before it is killed and the"
        f" message left on the server (default {DEFAULT_COMMAND_TIME_LIMIT:g})",
    )


def _limit_options(parser: argparse.ArgumentParser, what: str) -> None:
    """``--concurrency`` and ``--per-host``: check_many's limits, for check and fetch."""
    parser.add_argument(
        "--concurrency",
        type=positive,
        default=DEFAULT_CONCURRENCY,
        help=f"{what} ({DEFAULT_CONCURRENCY})",
    )
    parser.add_argument(
        "--per-host",
        type=positive,
        default=DEFAULT_PER_HOST,
        help=f"sessions per host at once ({DEFAULT_PER_HOST})",
    )


def build_parser() -> argparse.ArgumentParser:
    """The whole command line, every subcommand documented.

    The secrets and the exit statuses are told once, in ``aiopop --help``.
    """
    parser = argparse.ArgumentParser(
        prog="aiopop",
        description="Read POP3 mailboxes: check them, list them, download them into a Maildir or"
        " to a command, once or as a daemon.",
        epilog=f"{SECRETS}\n\n{EXIT_TABLE}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"aiopop {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, summary: str, epilog: str | None = None) -> argparse.ArgumentParser:
        return commands.add_parser(
            name,
            help=summary,
            description=summary,
            epilog=epilog or "secrets and exit statuses: see aiopop --help",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )

    _mailbox_options(
        command("stat", "Print 'You have N messages totaling M bytes'; the mailbox is unchanged.")
    )
    _mailbox_options(command("list", "List each message's number and size."))
    _mailbox_options(command("uidl", "List each message's number and unique id."))
    fetch = command(
        "fetch",
        "Download every message into a Maildir (tmp/, fsync, rename into new/) or to a"
        " command run per message; or every account of a TOML file, each to its own.",
        f"{_FETCH_MANY}\n\nsecrets and exit statuses: see aiopop --help",
    )
    _mailbox_options(fetch, or_file=True)
    fetch.add_argument(
        "--maildir", help="the Maildir (created if missing); this or --command with HOST USER"
    )
    fetch.add_argument(
        "--new-only",
        action="store_true",
        help="skip messages delivered before (by UIDL and size, as the state records them)",
    )
    fetch.add_argument(
        "--dry-run",
        action="store_true",
        help="say what would be fetched, skipped and deleted; change nothing",
    )
    _policy_options(fetch)
    fetch.add_argument(
        "--state",
        metavar="FILE",
        help="with --command: the state file (default ~/.local/state/aiopop/aiopop-uidl.sqlite3)",
    )
    fetch.add_argument(
        "--command",
        dest="command_line",
        nargs=argparse.REMAINDER,
        metavar="PROGRAM [ARGS...]",
        help="deliver each message to PROGRAM's standard input (no shell); it counts as"
        " delivered when PROGRAM exits 0; the rest of the line is its arguments, so put"
        " --command last",
    )
    _limit_options(fetch, "accounts of a file at once")
    watch = command("watch", "Poll every account of a TOML file for ever: a daemon.", _WATCH)
    watch.add_argument("accounts", help="a TOML file of [[account]] tables (keys below)")
    watch.add_argument(
        "--interval",
        type=seconds,
        default=DEFAULT_INTERVAL,
        metavar="SECONDS",
        help=f"seconds between the polls of an account (default {DEFAULT_INTERVAL:g}); at"
        " least the server's LOGIN-DELAY",
    )
    watch.add_argument(
        "--polls",
        type=positive,
        metavar="N",
        help="stop after N polls of every account (default: never)",
    )
    _policy_options(watch)
    _limit_options(watch, "accounts polled at once")
    _timeout_option(watch)
    watch.add_argument("--cafile", help="trust the CA certificates in this PEM file")
    watch.add_argument("--json", action="store_true", help="log JSON lines, one per event")
    _verbose_option(watch)
    check = command(
        "check",
        "Check every account of a TOML file at once; a table of results.",
        f"{_ACCOUNTS_FILE}\n\nsecrets and exit statuses: see aiopop --help",
    )
    check.add_argument("accounts", help="a TOML file of [[account]] tables (keys below)")
    _limit_options(check, "accounts at once")
    _timeout_option(check)
    check.add_argument(
        "--deadline",
        type=seconds,
        default=DEFAULT_DEADLINE,
        metavar="SECONDS",
        help=f"seconds for each account's whole check (default {DEFAULT_DEADLINE:g})",
    )
    check.add_argument("--cafile", help="trust the CA certificates in this PEM file")
    check.add_argument("--json", action="store_true", help="print JSON lines, one per account")
    _verbose_option(check)
    _import_options(
        command(
            "import-state",
            "Import fetchmail's, getmail6's or mpop's record of fetched messages,"
            " so that fetch --new-only skips them.",
        )
    )
    fingerprint = command(
        "fingerprint",
        "Print the SHA-256 fingerprint of the server's certificate, to pin with --fingerprint.",
        "nothing is verified and no login is made: before pinning it (--fingerprint, or\n"
        "tls_fingerprint in a file of accounts), compare it with the fingerprint the server's\n"
        "administrator gives, or with this on the server:\n"
        "  openssl x509 -noout -fingerprint -sha256 -in CERT\n\n"
        "exit statuses: see aiopop --help",
    )
    fingerprint.add_argument("host", help="the server's host name")
    fingerprint.add_argument("--port", type=int, help="the port (default 995, or 110 with STLS)")
    fingerprint.add_argument(
        "--tls",
        choices=["implicit", "starttls"],
        default="implicit",
        help="implicit: POP3S (default); starttls: STLS",
    )
    _timeout_option(fingerprint)
    _verbose_option(fingerprint)
    command(
        "demo",
        "Start the embedded test server with a sample mailbox and read it.",
        "nothing leaves this machine: the server listens on the loopback only",
    )
    return parser
