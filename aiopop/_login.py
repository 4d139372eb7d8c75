"""How :meth:`aiopop.POP3.login` chooses: TLS first, then at most two methods.

The order, strongest first (RFC 5034, RFC 2595, RFC 8314):
STLS when offered (unless the client's ``tls`` says "none"), then
SCRAM-SHA-256, SCRAM-SHA-1, CRAM-MD5 and APOP, none of which sends the
password (the challenge-response methods); PLAIN, LOGIN and USER/PASS do,
so they are used only over TLS or with ``allow_cleartext=True``.

A login makes at most two attempts, because every refused one counts
against the account (providers lock it after 3 to 5; Dovecot slows down
each source address after failures):

* over TLS, or with ``allow_cleartext``: the strongest challenge-response
  method offered, then ONE method that sends the password (PLAIN, else
  LOGIN, else USER/PASS), which a server can check against any stored
  hash, so a right password still logs in where the stored hash cannot
  serve SCRAM, CRAM-MD5 or APOP;
* in cleartext: the two strongest challenge-response methods.

A method that worked before (``prefer``) goes first when it is offered and
allowed; if it is refused, the second attempt is the one most likely to
work (the password method when allowed, else the strongest other one).
``methods`` limits the choice. What is not tried is named on the error,
with how to pin a method.

A method refused for a reason that another method cannot fix
(``[IN-USE]``, ``[LOGIN-DELAY]``, ``[SYS/TEMP]``, ``[SYS/PERM]``) stops the
login at once. A server that closes the connection after a refusal (RFC
1939 section 4 allows it) is reconnected to, and the next attempt made
there. A SASL error (a server that failed to prove itself) never leads to
a weaker method.

An OAuth 2.0 login is one method with one token, and at most one retry:
when the server refuses the token with ``[AUTH]``, or with no response
code at all as Microsoft's server does (the token has expired, or was
revoked), and the token came from a callable, the callable is asked
again, told which token was refused when it takes a ``refused`` keyword
(:class:`TokenSource`), and the fresh token is tried once. A token string,
a source that hands back the refused token, or a second refusal ends the
login with the server's refusal (:class:`~aiopop.CredentialsError` for
``[AUTH]``).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from . import sasl
from ._errors import (
    AuthenticationError,
    ConnectionLostError,
    CredentialsError,
    InsecureLoginError,
    MethodNotOfferedError,
    ResponseError,
    TLSRequiredError,
)
from ._types import AuthMethod, Capabilities, TLSPolicy

__all__ = [
    "MAX_ATTEMPTS",
    "OAUTH2_METHODS",
    "PASSWORD_MECHANISMS",
    "LoginClient",
    "OAuth2Token",
    "TokenSource",
    "ensure_tls",
    "oauth2_login",
    "parse_methods",
    "password_login",
]

logger = logging.getLogger("aiopop")


class TokenSource(Protocol):
    """An async callable that returns an OAuth 2.0 access token and learns of refusals.

    ``login()`` calls it with ``refused=None`` for a token to log in with.
    If the server refuses that token with ``[AUTH]``, or with no response
    code (it expired, or was revoked), ``login()`` calls it once more with
    ``refused`` set to the refused token: a source that caches tokens drops
    that one and fetches a new one (MSAL: ``acquire_token_silent(...,
    force_refresh=True)``; google-auth: ``credentials.refresh(...)``). One
    retry, never more::

        async def token(*, refused: str | None = None) -> str:
            return await asyncio.to_thread(access_token, refused is not None)

    A callable without a ``refused`` parameter (``async def token() ->
    str``) works as before; it is simply called again after a refusal, and
    when it hands back the refused token that token is not sent again.
    """

    def __call__(self, *, refused: str | None = None) -> Awaitable[str]: ...


OAuth2Token = str | Callable[[], Awaitable[str]] | TokenSource
"""An OAuth 2.0 access token, or an async callable returning a fresh one
(optionally a :class:`TokenSource`, told which token was refused)."""


class LoginClient(Protocol):
    """What a login needs from a client: :class:`aiopop.POP3` is one."""

    @property
    def host(self) -> str: ...
    @property
    def port(self) -> int: ...
    @property
    def is_tls(self) -> bool: ...
    @property
    def is_connected(self) -> bool: ...
    @property
    def apop_timestamp(self) -> bytes | None: ...
    async def capabilities(self) -> Capabilities: ...
    async def stls(self) -> bytes: ...
    async def auth(self, mechanism: sasl.Mechanism) -> bytes: ...
    async def apop(self, user: str, password: str) -> bytes: ...
    async def user(self, user: str) -> bytes: ...
    async def pass_(self, pswd: str) -> bytes: ...
    async def connect(self) -> bytes: ...
    async def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class _Method:
    method: AuthMethod
    sends_password: bool
    run: Callable[[LoginClient, str, str], Awaitable[object]]


async def _sasl(client: LoginClient, mechanism: sasl.Mechanism) -> None:
    await client.auth(mechanism)


async def _apop(client: LoginClient, user: str, password: str) -> None:
    await client.apop(user, password)


async def _user_pass(client: LoginClient, user: str, password: str) -> None:
    await client.user(user)
    await client.pass_(password)


PasswordMechanism = type[sasl.CramMD5 | sasl.Login | sasl.Plain | sasl.ScramSHA1 | sasl.ScramSHA256]

PASSWORD_MECHANISMS: dict[AuthMethod, PasswordMechanism] = {
    AuthMethod.SCRAM_SHA_256: sasl.ScramSHA256,
    AuthMethod.SCRAM_SHA_1: sasl.ScramSHA1,
    AuthMethod.CRAM_MD5: sasl.CramMD5,
    AuthMethod.PLAIN: sasl.Plain,
    AuthMethod.LOGIN: sasl.Login,
}
"""The SASL mechanisms that take a user name and a password, strongest first."""


def _sasl_method(method: AuthMethod, mechanism: PasswordMechanism) -> _Method:
    async def run(client: LoginClient, user: str, password: str) -> None:
        await _sasl(client, mechanism(user, password))

    return _Method(method, mechanism.sends_secret_in_clear, run)


MAX_ATTEMPTS = 2
"""The most methods one :meth:`~aiopop.POP3.login` with a password tries."""

OAUTH2_METHODS: tuple[AuthMethod, ...] = (AuthMethod.OAUTHBEARER, AuthMethod.XOAUTH2)
"""The methods that take an OAuth 2.0 token, in the order login() prefers them."""


def parse_methods(methods: Sequence[AuthMethod | str] | None) -> frozenset[AuthMethod] | None:
    """``methods`` as AuthMethods (names in any case; ``+APOP`` and ``+USER`` as in RFC 2384).

    Raises ValueError for an unknown name or an empty list, before anything is sent.
    """
    if methods is None:
        return None
    if isinstance(methods, str):
        raise ValueError(f"methods is a list of method names, such as [{methods!r}], not a string")
    chosen: set[AuthMethod] = set()
    for item in methods:
        if isinstance(item, AuthMethod):
            chosen.add(item)
            continue
        name = item.upper() if isinstance(item, str) else ""
        name = {"+APOP": "APOP", "+USER": "USER"}.get(name, name)
        try:
            chosen.add(AuthMethod(name))
        except ValueError:
            known = ", ".join(m.value for m in AuthMethod)
            raise ValueError(
                f"unknown login method {item!r} (known: {known}); nothing was sent"
            ) from None
    if not chosen:
        raise ValueError("methods is empty: name at least one login method")
    return frozenset(chosen)


def _preferred(prefer: AuthMethod | None) -> AuthMethod | None:
    if prefer is None or isinstance(prefer, AuthMethod):
        return prefer
    try:  # a remembered value may have gone through a file as a string
        return AuthMethod(prefer)
    except ValueError:
        raise ValueError(f"prefer must be an AuthMethod, not {prefer!r}") from None


def _offered(client: LoginClient, caps: Capabilities) -> list[_Method]:
    """Every password method the server offers, strongest first."""
    offered = caps.sasl
    usable = [(m, f) for m, f in PASSWORD_MECHANISMS.items() if m.value in offered]
    plan = [_sasl_method(m, f) for m, f in usable if not f.sends_secret_in_clear]
    if client.apop_timestamp is not None:
        plan.append(_Method(AuthMethod.APOP, False, _apop))
    plan += [_sasl_method(m, f) for m, f in usable if f.sends_secret_in_clear]
    # USER when announced; also when CAPA is missing (RFC 1939 servers) or
    # when nothing else is on offer, as some servers forget to announce it.
    if caps.user or not caps.announced or not plan:
        plan.append(_Method(AuthMethod.USER, True, _user_pass))
    return plan


def _choose(usable: list[_Method], prefer: AuthMethod | None) -> list[_Method]:
    """At most MAX_ATTEMPTS of ``usable`` (strongest first), in the order to try them.

    Without ``prefer``: the strongest challenge-response method, then the
    first method that sends the password (in ``usable`` only when that is
    allowed); without such a method, the next challenge-response one.
    ``prefer`` (when usable) goes first, followed by the method most likely
    to work where it did not: the password method, else the strongest
    other one (never a second method that sends the password).
    """
    challenge = [m for m in usable if not m.sends_password]
    sends = [m for m in usable if m.sends_password][:1]
    first = next((m for m in usable if m.method is prefer), None)
    if first is None:
        plan = challenge[:1] + sends
        plan += [m for m in challenge if m not in plan]
        return plan[:MAX_ATTEMPTS]
    rest = [
        m
        for m in sends + challenge
        if m is not first and not (first.sends_password and m.sends_password)
    ]
    return [first, *rest[: MAX_ATTEMPTS - 1]]


def _pin_hint(method: str) -> str:
    auth = {"APOP": "+APOP", "USER": "+USER"}.get(method, method)
    return (
        f"to try another method, pin it: login(..., methods=[{method!r}]) or Account(auth={auth!r})"
    )


async def ensure_tls(client: LoginClient, policy: TLSPolicy) -> None:
    """Upgrade with STLS as ``policy`` says; for "starttls", raise unless TLS is on."""
    if client.is_tls or policy == "none":
        return
    caps = await client.capabilities()
    if caps.stls:
        try:
            await client.stls()
        except ResponseError as exc:
            if policy == "starttls":
                raise TLSRequiredError(
                    f"TLS is required, but the server refused STLS: {exc.response}"
                ) from exc
            logger.debug("STLS refused (%s); staying in the clear", exc)
        return
    if policy == "starttls":
        why = "refused CAPA" if not caps.announced else "does not offer STLS"
        raise TLSRequiredError(f"TLS is required, but the server {why}")


async def password_login(
    client: LoginClient,
    user: str,
    password: str,
    *,
    allow_cleartext: bool,
    policy: TLSPolicy,
    methods: Sequence[AuthMethod | str] | None = None,
    prefer: AuthMethod | None = None,
) -> AuthMethod:
    """Log in with at most two password methods; see the module's docstring."""
    _check_credentials(user=user, password=password)
    allowed = parse_methods(methods)
    if allowed is not None and allowed <= set(OAUTH2_METHODS):
        raise ValueError(
            f"{', '.join(sorted(allowed))} take an OAuth 2.0 token, not a password; "
            "nothing was sent"
        )
    preferred = _preferred(prefer)
    await ensure_tls(client, policy)
    offered = _offered(client, await client.capabilities())
    usable = offered if allowed is None else [m for m in offered if m.method in allowed]
    if not usable:
        asked = ", ".join(m.value for m in AuthMethod if m in (allowed or ()))
        raise MethodNotOfferedError(
            f"the server offers none of the login methods asked for ({asked}); it offers "
            f"{', '.join(m.method.value for m in offered)}; no password was sent"
        )
    withheld: list[str] = []
    if not (client.is_tls or allow_cleartext):
        withheld = [m.method.value for m in usable if m.sends_password]
        usable = [m for m in usable if not m.sends_password]
    if not usable:
        raise InsecureLoginError(
            f"the server offers only {', '.join(withheld)}, which would send the password "
            "in cleartext; no password was sent. Use POP3_SSL or a server that offers STLS, "
            "or pass allow_cleartext=True where the network path is trusted"
        )
    plan = _choose(usable, preferred)
    held_back = [m.method.value for m in usable if m not in plan]
    refusals: list[str] = []
    last: AuthenticationError | None = None
    for index, step in enumerate(plan):
        try:
            await _attempt(client, step, user, password, policy, reconnect=last is not None)
        except AuthenticationError as exc:
            if exc.is_temporary or exc.has_code("SYS/PERM"):
                if refusals:
                    exc.add_note("before it: " + "; ".join(refusals))
                raise
            refusals.append(f"{step.method.value} refused: {exc.response}")
            more = "trying the next method" if index + 1 < len(plan) else "no method left"
            logger.debug("%s refused (%s); %s", step.method.value, exc, more)
            last = exc
            continue
        return step.method
    if last is None:  # cannot happen: a plan is never empty here
        raise MethodNotOfferedError("no login method was tried; nothing was sent")
    last.add_note("tried: " + "; ".join(refusals))
    if held_back:
        last.add_note(
            f"held back, as one login makes at most {MAX_ATTEMPTS} attempts so that a wrong "
            f"password cannot lock the account: {', '.join(held_back)}"
        )
    if withheld:
        last.add_note(
            f"not tried, as they would send the password in cleartext: {', '.join(withheld)}"
        )
    if held_back:
        last.add_note(_pin_hint(held_back[0]))
    raise last


def _check_credentials(**values: str) -> None:
    """Refuse CR, LF and NUL in credentials before anything at all is sent."""
    for name, value in values.items():
        if any(c in value for c in "\r\n\0"):
            raise ValueError(f"login: control character in the {name}; nothing was sent")


async def _attempt(
    client: LoginClient,
    step: _Method,
    user: str,
    password: str,
    policy: TLSPolicy,
    *,
    reconnect: bool,
) -> None:
    """Run one method; reconnect once if the server closed after the previous refusal."""
    if reconnect and not client.is_connected:
        await _reconnect(client, policy)
    try:
        await step.run(client, user, password)
    except ConnectionLostError:
        if not reconnect:
            raise
        # RFC 1939 section 4: the server may close after a refused login, and
        # may take a while to do it (solid-pop3d waits 1-3 s): this command
        # met the close. Once more, on a new connection.
        logger.debug("the server closed after the refusal; reconnecting for %s", step.method)
        await _reconnect(client, policy)
        await step.run(client, user, password)


async def _reconnect(client: LoginClient, policy: TLSPolicy) -> None:
    await client.close()
    await client.connect()
    await ensure_tls(client, policy)


async def oauth2_login(
    client: LoginClient,
    user: str,
    token: OAuth2Token,
    *,
    allow_cleartext: bool,
    policy: TLSPolicy,
    methods: Sequence[AuthMethod | str] | None = None,
    prefer: AuthMethod | None = None,
) -> AuthMethod:
    """Log in with OAUTHBEARER, else XOAUTH2 (or ``prefer``); never falls back to a password.

    A refused token from a callable gets one retry with a fresh token (see
    the module's docstring).
    """
    _check_credentials(user=user, token=token if isinstance(token, str) else "")
    allowed = parse_methods(methods)
    if allowed is not None and not allowed & set(OAUTH2_METHODS):
        raise ValueError(
            f"{', '.join(sorted(allowed))} take a password, not an OAuth 2.0 token; "
            "nothing was sent"
        )
    preferred = _preferred(prefer)
    await ensure_tls(client, policy)
    caps = await client.capabilities()
    offered = caps.sasl
    usable = [
        m
        for m in OAUTH2_METHODS
        if (m.value in offered or (m is AuthMethod.XOAUTH2 and not caps.announced))
        and (allowed is None or m in allowed)
    ]
    if not usable:
        raise MethodNotOfferedError(
            "the server offers no OAuth 2.0 mechanism"
            + ("" if allowed is None else " of those asked for")
            + f" (SASL: {' '.join(offered) or 'none'}); no token was sent"
        )
    method = next((m for m in usable if m is preferred), usable[0])
    if not (client.is_tls or allow_cleartext):
        raise InsecureLoginError(
            "an OAuth 2.0 token would be sent in cleartext; no token was sent. Use POP3_SSL "
            "or a server that offers STLS, or pass allow_cleartext=True"
        )
    if isinstance(token, str):
        await _send_token(client, method, user, token)
        return method
    tells = _takes_refused(token)
    value = await _ask(token, tells, None)
    try:
        await _send_token(client, method, user, value)
        return method
    except AuthenticationError as exc:
        if not _token_refused(exc):
            raise
        first = exc
    # The token expired or was revoked. Ask for a fresh one, once.
    logger.debug("%s: the token was refused; asking its source for a fresh one", method.value)
    try:
        fresh = await _ask(token, tells, value)
    except Exception as exc:
        exc.add_note(f"the token source failed when asked for a fresh token after: {first}")
        raise
    if fresh == value:
        first.add_note(
            "the token source gave the refused token again, so it was not sent twice; "
            "a source that caches tokens should take a `refused` keyword (aiopop.TokenSource) "
            "and fetch a new token when it is set"
        )
        raise first
    step = _Method(method, True, _token_run(method))
    try:
        await _attempt(client, step, user, fresh, policy, reconnect=True)
    except AuthenticationError as exc:
        if not _token_refused(exc):
            raise
        exc.add_note(
            f"a fresh token from the token source was also refused ({method.value}); "
            f"the first refusal: {first.response}"
        )
        raise
    return method


def _token_refused(exc: AuthenticationError) -> bool:
    """Whether a refusal of a token may be cured by a fresh token.

    ``[AUTH]`` says so (RFC 3206). So does a refusal without any response
    code: Microsoft's POP server announces no AUTH-RESP-CODE and refuses an
    expired token with a bare ``-ERR Authentication failure``. Any other
    code (``[IN-USE]``, ``[SYS/TEMP]``...) is about something else.
    """
    return isinstance(exc, CredentialsError) or exc.code is None


def _takes_refused(source: Callable[..., Awaitable[str]]) -> bool:
    """Whether ``source`` takes a ``refused`` keyword (a :class:`TokenSource`)."""
    try:
        parameter = inspect.signature(source).parameters.get("refused")
    except (TypeError, ValueError):  # no signature to read: call it as before
        return False
    return parameter is not None and parameter.kind in (
        inspect.Parameter.KEYWORD_ONLY,
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
    )


async def _ask(source: Callable[..., Awaitable[str]], tells: bool, refused: str | None) -> str:
    value = await (source(refused=refused) if tells else source())
    if not isinstance(value, str):
        raise TypeError(f"the token source returned {type(value).__name__}, not a str")
    return value


def _token_run(method: AuthMethod) -> Callable[[LoginClient, str, str], Awaitable[None]]:
    async def run(client: LoginClient, user: str, token: str) -> None:
        await _send_token(client, method, user, token)

    return run


async def _send_token(client: LoginClient, method: AuthMethod, user: str, token: str) -> None:
    """One AUTH exchange with ``token``; a refusal carries the server's JSON as a note."""
    mechanism: sasl.OAuthBearer | sasl.XOAuth2
    if method is AuthMethod.OAUTHBEARER:
        mechanism = sasl.OAuthBearer(user, token, host=client.host, port=client.port)
    else:
        mechanism = sasl.XOAuth2(user, token)
    try:
        await client.auth(mechanism)
    except AuthenticationError as exc:
        if mechanism.error:
            # The provider's JSON says why (an expired token, a missing scope).
            exc.add_note(
                f"{method.value} error from the server: "
                + mechanism.error.decode("utf-8", "replace")[:500]
            )
        raise
