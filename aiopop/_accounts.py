"""Accounts: one description of a mailbox, from code, a POP URL (RFC 2384) or a TOML file.

An :class:`Account` says where the mailbox is (host, port, TLS mode), who
logs in, how (``auth``, RFC 2384's ``;AUTH=`` values) and with which
secret. Secrets are never part of a URL and never required inline: a
:data:`Secret` is a string or an async callable returning one, and
:func:`secret_from_env`, :func:`secret_from_command` and
:func:`secret_from_keyring` build the callables. A secret never appears in
a ``repr()``, a log line or an exception message.

``async with account.session() as client:`` connects, logs in, and quits
on the way out (or closes without QUIT if the block raised, so the server
rolls back deletions).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import os
import ssl
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, cast

from ._account_keys import KEY_TYPES, command_argv
from ._client import (
    DEFAULT_TIMEOUT,
    POP3,
    POP3_PORT,
    POP3_SSL,
    POP3_SSL_PORT,
    Connector,
    use_connector,
)
from ._errors import AccountError, InsecureLoginError
from ._login import PASSWORD_MECHANISMS, OAuth2Token, TokenSource, ensure_tls
from ._parse import format_fingerprint, parse_fingerprint
from ._proxy import parse_proxy, proxy_connector, require_proxy_support
from ._types import TLS_POLICIES, AuthMethod, TLSPolicy

__all__ = [
    "REFUSED_TOKEN_VARIABLE",
    "Account",
    "AccountError",
    "Secret",
    "load_accounts",
    "mailbox_key",
    "secret_from_command",
    "secret_from_env",
    "secret_from_keyring",
]


Secret = str | Callable[[], Awaitable[str]]
"""A password or token, or an async callable that returns a fresh one."""


_DEFAULT_PORTS = frozenset({POP3_PORT, POP3_SSL_PORT})


def mailbox_key(user: str, host: str, port: int) -> str:
    """The name of one mailbox, for state kept about it: ``user@host[:port]``.

    The host is lower-cased; an IPv6 literal is written in brackets
    (``user@[::1]``). The port is added only when it is neither 110 nor
    995: POP3 and POP3S on one server reach the same mailbox, with the
    same unique-ids, while another port may be another server
    (``user@[::1]:1100``). The user name is kept as it is: servers differ
    on whether it is case-sensitive.
    """
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise ValueError(f"port must be an int from 1 to 65535, not {port!r}")
    name = host.lower()
    if ":" in name and not name.startswith("["):
        name = f"[{name}]"
    suffix = "" if port in _DEFAULT_PORTS else f":{port}"
    return f"{user}@{name}{suffix}"


@dataclass(frozen=True)
class Account:
    """One mailbox and how to log in to it.

    ``auth`` follows RFC 2384: ``"*"`` lets :meth:`aiopop.POP3.login` pick
    the strongest method; ``"+APOP"`` APOP only; ``"+USER"`` USER/PASS only;
    any other value names a SASL mechanism (``"SCRAM-SHA-256"``,
    ``"XOAUTH2"``...). Give ``password`` (a :data:`Secret`) or
    ``oauth2_token`` (a string or an async callable, which may be a
    :class:`~aiopop.TokenSource`, told which token was refused). ``name``
    labels the account in reports; it defaults to ``user@host``.
    ``tls_fingerprint`` pins the server's certificate by its SHA-256
    fingerprint in place of the CA and host name checks (see
    :class:`aiopop.POP3`); it needs ``tls`` "implicit" or "starttls".

    ``proxy`` (a URL: ``socks5://[user:password@]host:port``, ``socks5h://``
    to let the proxy resolve the server's name, or ``http://`` for HTTP
    CONNECT) opens every connection through that proxy; it needs the extra
    ``proxy`` (``pip install 'aiopop[proxy]'``, python-socks). ``connector``
    (an async callable returning a new connected socket) opens every
    connection itself: it is called again for each session, reconnection
    and poll. Give one or neither. TLS always verifies ``host``, never the
    proxy. The proxy URL is kept out of ``repr()``: it may hold a password.
    """

    host: str
    user: str
    port: int | None = None
    tls: TLSPolicy = "implicit"
    auth: str = "*"
    password: Secret | None = field(default=None, repr=False, compare=False)
    oauth2_token: OAuth2Token | None = field(default=None, repr=False, compare=False)
    allow_cleartext: bool = False
    timeout: float | None = DEFAULT_TIMEOUT
    ssl_context: ssl.SSLContext | None = field(default=None, repr=False, compare=False)
    label: str | None = None
    state_key: str | None = None
    tls_fingerprint: str | None = None
    proxy: str | None = field(default=None, repr=False)
    connector: Connector | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        host = self.host
        if not isinstance(host, str) or not host or any(c.isspace() or c in "/@" for c in host):
            raise AccountError(f"invalid host {host!r}")
        if not isinstance(self.user, str):
            raise AccountError(f"the user name must be a string, not {self.user!r}")
        if not self.user:
            raise AccountError("the user name is empty")
        if self.tls not in TLS_POLICIES:
            raise AccountError(f"tls must be one of {sorted(TLS_POLICIES)}, not {self.tls!r}")
        port = self.port
        if port is not None and (
            isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536
        ):
            raise AccountError(f"invalid port {port!r}")
        if not isinstance(self.auth, str) or not self.auth or any(c.isspace() for c in self.auth):
            raise AccountError(f"invalid auth {self.auth!r}")
        timeout = self.timeout
        if timeout is not None and (
            isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0
        ):
            raise AccountError(f"timeout must be a positive number or None, not {timeout!r}")
        if not isinstance(self.allow_cleartext, bool):
            raise AccountError("allow_cleartext must be true or false")
        if self.label is not None and not isinstance(self.label, str):
            raise AccountError(f"the label must be a string, not {self.label!r}")
        if self.state_key is not None and (
            not isinstance(self.state_key, str) or not self.state_key.strip()
        ):
            raise AccountError(f"state_key must be a non-empty string, not {self.state_key!r}")
        if self.tls_fingerprint is not None:
            try:
                pin = parse_fingerprint(self.tls_fingerprint)
            except (TypeError, ValueError) as exc:
                raise AccountError(f"tls_fingerprint: {exc}") from None
            if self.tls not in ("implicit", "starttls"):
                raise AccountError(
                    f"tls_fingerprint needs TLS: tls {self.tls!r} may go on without it"
                    " (use implicit or starttls)"
                )
            object.__setattr__(self, "tls_fingerprint", format_fingerprint(pin))
        if self.proxy is not None:
            if self.connector is not None:
                raise AccountError("give proxy or connector, not both")
            try:
                parse_proxy(self.proxy)
            except ValueError as exc:
                raise AccountError(f"invalid proxy: {exc}") from None
            require_proxy_support()
        if self.connector is not None and not callable(self.connector):
            raise AccountError("connector must be an async callable returning a socket")

    @property
    def name(self) -> str:
        """The label, or ``user@host[:port]``."""
        if self.label:
            return self.label
        port = f":{self.port}" if self.port is not None else ""
        return f"{self.user}@{self.host}{port}"

    @property
    def effective_port(self) -> int:
        """The port connected to: the given one, or 995 (implicit TLS) or 110."""
        if self.port is not None:
            return self.port
        return POP3_SSL_PORT if self.tls == "implicit" else POP3_PORT

    @property
    def mailbox_key(self) -> str:
        """The name of this mailbox's state: ``state_key`` if set, else :func:`mailbox_key`."""
        if self.state_key is not None:
            return self.state_key
        return mailbox_key(self.user, self.host, self.effective_port)

    def with_secret(
        self, *, password: Secret | None = None, oauth2_token: OAuth2Token | None = None
    ) -> Account:
        """A copy with the given secret."""
        return replace(self, password=password, oauth2_token=oauth2_token)

    def client(self, **options: Any) -> POP3:
        """An unconnected client for this account; ``options`` go to the constructor."""
        options.setdefault("timeout", self.timeout)
        if self.tls_fingerprint is not None:
            options.setdefault("tls_fingerprint", self.tls_fingerprint)
        client: POP3
        if self.tls == "implicit":
            client = POP3_SSL(self.host, self.port, ssl_context=self.ssl_context, **options)
        else:
            client = POP3(
                self.host, self.port, tls=self.tls, ssl_context=self.ssl_context, **options
            )
        connector = self.connector
        if connector is None and self.proxy is not None:
            connector = proxy_connector(
                self.proxy, self.host, self.effective_port, timeout=client.timeout
            )
        if connector is not None:
            use_connector(client, connector)
        return client

    async def login(self, client: POP3, *, prefer: AuthMethod | None = None) -> AuthMethod:
        """Log ``client`` (connected) in as this account says; returns the method used.

        With ``auth="*"``, :meth:`aiopop.POP3.login` chooses (at most two
        attempts), trying ``prefer`` (a method that worked before) first;
        any other ``auth`` pins the method, and ``prefer`` is ignored.
        """
        if self.oauth2_token is not None:
            if self.auth.upper() not in ("*", "XOAUTH2", "OAUTHBEARER"):
                raise AccountError(
                    f"{self.name}: an OAuth 2.0 token cannot be used with {self.auth}"
                )
            pinned = self.auth != "*"
            return await client.login(
                self.user,
                oauth2_token=self.oauth2_token,
                allow_cleartext=self.allow_cleartext,
                methods=[self.auth] if pinned else None,
                prefer=None if pinned else prefer,
            )
        if self.password is None:
            raise AccountError(f"{self.name}: no password or OAuth 2.0 token")
        password = await _reveal(self.password)
        method = self.auth.upper()
        if method == "*":
            return await client.login(
                self.user, password, allow_cleartext=self.allow_cleartext, prefer=prefer
            )
        # A pinned method skips login()'s choice, not its STLS: "if-offered"
        # upgrades here as login() would ("starttls" did so on connecting).
        await ensure_tls(client, client.tls)
        cleartext_ok = client.is_tls or self.allow_cleartext
        if method == "+APOP":
            await client.apop(self.user, password)
            return AuthMethod.APOP
        mechanism = next(
            (m for name, m in PASSWORD_MECHANISMS.items() if name.value == method), None
        )
        sends_password = method == "+USER" or (
            mechanism is not None and mechanism.sends_secret_in_clear
        )
        if sends_password and not cleartext_ok:
            raise InsecureLoginError(
                f"{self.name}: {method} would send the password in cleartext; no password was sent"
            )
        if method == "+USER":
            await client.user(self.user)
            await client.pass_(password)
            return AuthMethod.USER
        if mechanism is None:
            raise AccountError(f"{self.name}: unknown login method {self.auth!r}")
        await client.auth(mechanism(self.user, password))
        return AuthMethod(method)

    @contextlib.asynccontextmanager
    async def session(
        self, *, prefer: AuthMethod | None = None, **options: Any
    ) -> AsyncIterator[POP3]:
        """Connect and log in; QUIT when the block ends, close without QUIT if it raised.

        ``prefer`` goes to :meth:`login`; ``options`` to :meth:`client`.
        """
        client = self.client(**options)
        async with client:
            await self.login(client, prefer=prefer)
            yield client

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        password: Secret | None = None,
        oauth2_token: OAuth2Token | None = None,
        **options: Any,
    ) -> Account:
        """An account from a POP URL (RFC 2384): ``pop://user;AUTH=mech@host:port``.

        ``pops://`` (not in RFC 2384, but common) means implicit TLS; plain
        ``pop://`` means STLS required unless ``tls=`` says otherwise. A
        password in the URL is refused: pass it as ``password``.
        """
        parts = urllib.parse.urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in ("pop", "pops"):
            raise AccountError(f"not a POP URL (pop:// or pops://): {_shown_url(url)}")
        if parts.password is not None or ":" in (parts.username or ""):
            raise AccountError("a POP URL must not carry a password; give it separately")
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise AccountError(f"unexpected path or query in POP URL: {_shown_url(url)}")
        userinfo = parts.username
        if not userinfo:
            raise AccountError(f"no user in POP URL: {_shown_url(url)}")
        user, _, auth_part = userinfo.partition(";")
        auth = "*"
        if auth_part:
            key, _, value = auth_part.partition("=")
            if key.upper() != "AUTH" or not value:
                raise AccountError(f"unknown POP URL parameter {auth_part!r}")
            auth = urllib.parse.unquote(value)
        try:
            port = parts.port
        except ValueError as exc:
            raise AccountError(f"bad port in POP URL: {exc}") from None
        host = parts.hostname
        if not host:
            raise AccountError(f"no host in POP URL: {_shown_url(url)}")
        options.setdefault("tls", "implicit" if scheme == "pops" else "starttls")
        if "auth" in options:
            if auth_part:
                raise AccountError(
                    "the login method is given twice: in the POP URL (;AUTH=) and as auth; keep one"
                )
            auth = options.pop("auth")
        return cls(
            host=host,
            user=urllib.parse.unquote(user),
            port=port,
            auth=auth,
            password=password,
            oauth2_token=oauth2_token,
            **options,
        )

    def url(self) -> str:
        """This account as a POP URL (no secret in it)."""
        scheme = "pops" if self.tls == "implicit" else "pop"
        user = urllib.parse.quote(self.user, safe="")
        auth = "" if self.auth == "*" else ";AUTH=" + urllib.parse.quote(self.auth, safe="+*")
        port = f":{self.port}" if self.port is not None else ""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{user}{auth}@{host}{port}"


def _shown_url(url: str) -> str:
    """A URL for an error message, with anything after a ':' in the userinfo hidden."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


async def _reveal(secret: Secret) -> str:
    value = secret if isinstance(secret, str) else await secret()
    if not isinstance(value, str) or not value:
        raise AccountError("the secret is empty or not a string")
    return value


# -- where secrets come from ------------------------------------------------------------


def secret_from_env(variable: str) -> Callable[[], Awaitable[str]]:
    """A secret read from environment variable ``variable`` when needed."""

    async def read() -> str:
        value = os.environ.get(variable)
        if not value:
            state = "is empty" if value == "" else "is not set"
            raise AccountError(f"environment variable {variable} {state}")
        return value

    return read


REFUSED_TOKEN_VARIABLE = "AIOPOP_REFUSED_TOKEN"  # noqa: S105 - a variable's name
"""Set to ``1`` for a token command run again because the server refused its last token."""


def secret_from_command(argv: Sequence[str] | str) -> TokenSource:
    """A secret printed by a password command (``["pass", "show", "mail/work"]``).

    A string (``"pass show mail/work"``) is split as a POSIX shell would
    split it (:func:`shlex.split`: quotes and backslashes work), but it is
    never run through a shell: no variables, globs, pipes or redirections.
    The command runs each time the secret is needed; its first output line
    is the secret. A failure names the command, never its output.

    As an OAuth 2.0 token source (a :class:`~aiopop.TokenSource`): when the
    server refused the token the command printed, the command runs once
    more with ``AIOPOP_REFUSED_TOKEN=1`` in its environment, so a command
    that caches tokens knows to fetch a new one. The refused token itself
    is never passed, neither in the environment nor in the arguments.
    """
    command = command_argv(argv)
    if command is None:
        raise AccountError(
            "a password command is a non-empty list of strings, or a non-empty string "
            "split as a shell would split it"
        )

    async def run(*, refused: str | None = None) -> str:
        env = None if refused is None else {**os.environ, REFUSED_TOKEN_VARIABLE: "1"}
        try:
            process = await asyncio.create_subprocess_exec(
                *command,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.DEVNULL,
                env=env,
            )
        except OSError as exc:
            raise AccountError(f"password command {command[0]!r} could not run: {exc}") from None
        out, _ = await process.communicate()
        if process.returncode != 0:
            raise AccountError(
                f"password command {command[0]!r} failed with exit status {process.returncode}"
            )
        line = out.decode("utf-8", "replace").splitlines()[0] if out else ""
        if not line:
            raise AccountError(f"password command {command[0]!r} printed nothing")
        return line

    return run


def secret_from_keyring(service: str, username: str) -> Callable[[], Awaitable[str]]:
    """A secret from the system keyring, through the ``keyring`` package (if installed)."""

    async def read() -> str:
        try:
            keyring = importlib.import_module("keyring")
        except ImportError:
            raise AccountError(
                "the keyring package is not installed (pip install keyring)"
            ) from None
        value = await asyncio.to_thread(keyring.get_password, service, username)
        if not value:
            raise AccountError(f"no keyring entry for service {service!r}, user {username!r}")
        return cast(str, value)

    return read


# -- TOML ---------------------------------------------------------------------------------


def load_accounts(path: str | os.PathLike[str]) -> list[Account]:
    """Accounts from a TOML file: one ``[[account]]`` table each.

    ::

        [[account]]
        name = "work"
        url = "pops://alice@pop.example.com"     # or host, port, user, tls, auth
        password_command = ["pass", "show", "mail/work"]

        [[account]]
        host = "pop.gmail.com"
        user = "bob@gmail.com"
        oauth2_token_env = "GMAIL_TOKEN"

    A secret comes from ``password_env`` / ``oauth2_token_env`` (an
    environment variable), ``password_command`` / ``oauth2_token_command``
    (an array of strings, or one string split as a shell would split it,
    ``"pass show mail/work"``, but never run through a shell), or
    ``keyring = true`` (service ``aiopop``, user ``user@host``). Inline
    passwords are refused: a file of accounts should be safe to share.
    ``proxy`` (a URL, ``socks5://127.0.0.1:1080``) opens every connection through
    that proxy (see :class:`Account`). ``state_key`` (a string) names the mailbox's
    state in place of :attr:`Account.mailbox_key`'s default. ``tls_fingerprint`` (a
    string, ``"SHA256:AB:CD:..."``) pins the server's certificate. ``maildir`` (a string) is where
    ``aiopop fetch ACCOUNTS`` saves the account's mail: it is no part of the
    :class:`Account` and is ignored here (see :func:`aiopop._targets.load_fetch_targets`).

    The file is data: each key has a type (``port`` an integer from 1 to
    65535, ``timeout`` a positive number, ``allow_cleartext`` true or
    false, the others strings), and a key of the wrong type or an unknown
    key raises :class:`AccountError` naming the file, the account and the key.
    """
    return [account for account, _, _ in account_tables(path)]


def account_tables(path: str | os.PathLike[str]) -> list[tuple[Account, Mapping[str, Any], str]]:
    """As :func:`load_accounts`, each account with its table and its place in the file
    (``"FILE: account N ('name')"``, for messages): for the keys that a feature reads
    itself, such as ``maildir``. Every table is checked before any is returned."""
    import tomllib  # here: only files of accounts need it, not every command's start-up

    file = Path(path)
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise AccountError(f"{file}: {exc}") from None
    entries = data.get("account", [])
    if not isinstance(entries, list) or not entries:
        raise AccountError(f"{file}: no [[account]] tables")
    places = [f"{file}: account {n}" for n in range(1, len(entries) + 1)]
    return [
        (_account(entry, where), entry, _where(entry, where))
        for entry, where in zip(entries, places, strict=True)
    ]


def _where(entry: Mapping[str, Any], where: str) -> str:
    if isinstance(entry.get("name"), str) and entry["name"]:
        return f"{where} ({entry['name']!r})"
    return where


def _account(entry: Mapping[str, Any], where: str) -> Account:
    if not isinstance(entry, Mapping):
        raise AccountError(f"{where}: not a table")
    where = _where(entry, where)
    if "password" in entry or "oauth2_token" in entry:
        raise AccountError(
            f"{where}: inline secrets are refused; use password_env, password_command or keyring"
        )
    unknown = sorted(set(entry) - set(KEY_TYPES))
    if unknown:
        raise AccountError(f"{where}: unknown keys {unknown}")
    for key, value in entry.items():
        problem = KEY_TYPES[key](value)
        if problem:
            raise AccountError(f"{where}: {key} must be {problem}")
    options: dict[str, Any] = {}
    for key in (
        "tls", "auth", "allow_cleartext", "timeout", "state_key", "tls_fingerprint", "proxy",
    ):  # fmt: skip
        if key in entry:
            options[key] = entry[key]
    if "name" in entry:
        options["label"] = entry["name"]
    try:
        if "url" in entry:
            for key in ("host", "port", "user"):
                if key in entry:
                    raise AccountError(f"{where}: give url or {key}, not both")
            account = Account.from_url(entry["url"], **options)
        else:
            if "host" not in entry or "user" not in entry:
                raise AccountError(f"{where}: host and user (or url) are required")
            account = Account(
                host=entry["host"], user=entry["user"], port=entry.get("port"), **options
            )
    except AccountError as exc:
        if str(exc).startswith(where):
            raise
        raise AccountError(f"{where}: {exc}") from None
    except TypeError as exc:
        raise AccountError(f"{where}: {exc}") from None
    sources = [k for k in ("password_env", "password_command", "keyring") if k in entry]
    token_sources = [k for k in ("oauth2_token_env", "oauth2_token_command") if k in entry]
    if len(sources) + len(token_sources) != 1:
        raise AccountError(
            f"{where}: exactly one secret source is needed (password_env, password_command, "
            "keyring, oauth2_token_env or oauth2_token_command)"
        )
    if "password_env" in entry:
        return account.with_secret(password=secret_from_env(entry["password_env"]))
    if "password_command" in entry:
        return account.with_secret(password=secret_from_command(entry["password_command"]))
    if "keyring" in entry:
        return account.with_secret(
            password=secret_from_keyring("aiopop", f"{account.user}@{account.host}")
        )
    if "oauth2_token_env" in entry:
        return account.with_secret(oauth2_token=secret_from_env(entry["oauth2_token_env"]))
    return account.with_secret(oauth2_token=secret_from_command(entry["oauth2_token_command"]))


# Each key's check: "" when the value will do, else what it must be (for the error).
