"""aiopop: an asyncio POP3 client.

A sans-I/O protocol core with a thin asyncio layer, named after :mod:`poplib`
so that poplib programs port line by line::

    async with aiopop.POP3_SSL("pop.example.com") as client:
        await client.login("user", "password")
        print("You have %d messages totaling %d bytes" % await client.stat())

The public API is what this module's ``__all__`` lists, plus two
namespaces: :mod:`aiopop.sasl` (the SASL mechanisms) and
:mod:`aiopop.testing` (a POP3 server and a pytest fixture for tests). Every
other module is private and may change without notice; each public name
says ``aiopop`` in its ``__module__``, so reprs, tracebacks and the
documentation show the name to import. The features load on first use:
``import aiopop`` costs neither :mod:`ssl` nor :mod:`sqlite3`.
"""

from __future__ import annotations

import contextlib
import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# Each public name and the private module that defines it.
_SOURCES: dict[str, str] = {
    # the client
    "POP3": "_client",
    "POP3_SSL": "_client",
    "POP3_PORT": "_client",
    "POP3_SSL_PORT": "_client",
    "DEFAULT_TIMEOUT": "_client",
    "MessageSource": "_stream",
    "MessageStream": "_stream",
    "State": "_state",
    "OAuth2Token": "_login",
    "TokenSource": "_login",
    # what the client returns
    "AuthMethod": "_types",
    "Capabilities": "_types",
    "Expire": "_types",
    "ListEntry": "_types",
    "LoginDelay": "_types",
    "SizeListing": "_types",
    "Stat": "_types",
    "TLSPolicy": "_types",
    "TLS_POLICIES": "_types",
    "UidEntry": "_types",
    "UidListing": "_types",
    # errors
    "APOPNotOfferedError": "_errors",
    "AccountError": "_errors",
    "AuthenticationError": "_errors",
    "CommandStateError": "_errors",
    "ConnectionClosedError": "_errors",
    "ConnectionLostError": "_errors",
    "CredentialsError": "_errors",
    "DeliveryError": "_errors",
    "FingerprintMismatchError": "_tls",
    "InsecureLoginError": "_errors",
    "LoginDelayError": "_errors",
    "MailboxInUseError": "_errors",
    "MalformedReplyError": "_errors",
    "MethodNotOfferedError": "_errors",
    "POP3Error": "_errors",
    "POP3TimeoutError": "_errors",
    "PermanentFailureError": "_errors",
    "ProtocolError": "_errors",
    "ResponseError": "_errors",
    "SASLError": "_errors",
    "TLSRequiredError": "_errors",
    "TemporaryFailureError": "_errors",
    "UIDLUnavailableError": "_errors",
    "Failure": "_errors",
    "FailureKind": "_errors",
    "diagnose": "_errors",
    "error_proto": "_errors",
    # accounts
    "Account": "_accounts",
    "Connector": "_client",
    "Secret": "_accounts",
    "load_accounts": "_accounts",
    "mailbox_key": "_accounts",
    "secret_from_command": "_accounts",
    "secret_from_env": "_accounts",
    "secret_from_keyring": "_accounts",
    # many mailboxes at once
    "CheckResult": "_many",
    "check_many": "_many",
    # fetching into a Maildir
    "Delivery": "_fetch_run",
    "FetchResult": "_fetch_run",
    "Oversized": "_fetch_run",
    "Refusal": "_fetch_run",
    "Filtered": "_fetch_run",
    "Plan": "_fetch_run",
    "Planned": "_fetch_run",
    "Undelivered": "_fetch_run",
    "fetch_into": "_fetch",
    "fetch_to_maildir": "_fetch",
    "recover": "_fetch",
    "Maildir": "_maildir",
    # what was delivered: the state file
    "DeliveryState": "_delivery_state",
    "STATE_FILE": "_delivery_state",
    "StateError": "_errors",
    "StateLock": "_delivery_state",
    "StateLockedError": "_errors",
    # switching from fetchmail, getmail6 or mpop
    "ImportFileError": "_errors",
    "ImportKind": "_import_state",
    "ImportResult": "_import_state",
    "import_state": "_import_state",
    "read_seen_uids": "_import_state",
    # what a destination and a filter are given
    "Deliver": "_message",
    "Filter": "_message",
    "MessageHeaders": "_message",
    "NewMessage": "_message",
    "Verdict": "_message",
    # running a program per message
    "CommandDelivery": "_programs",
    "FilterCommand": "_programs",
    # watching for new mail
    "MemoryStore": "_stores",
    "SQLiteStore": "_stores",
    "SeenStore": "_stores",
    "Watcher": "_watch",
    "watch": "_watch",
    # a namespace of its own
    "sasl": "sasl",
}

__all__ = [
    "DEFAULT_TIMEOUT",
    "POP3",
    "POP3_PORT",
    "POP3_SSL",
    "POP3_SSL_PORT",
    "STATE_FILE",
    "TLS_POLICIES",
    "APOPNotOfferedError",
    "Account",
    "AccountError",
    "AuthMethod",
    "AuthenticationError",
    "Capabilities",
    "CheckResult",
    "CommandDelivery",
    "CommandStateError",
    "ConnectionClosedError",
    "ConnectionLostError",
    "Connector",
    "CredentialsError",
    "Deliver",
    "Delivery",
    "DeliveryError",
    "DeliveryState",
    "Expire",
    "Failure",
    "FailureKind",
    "FetchResult",
    "Filter",
    "FilterCommand",
    "Filtered",
    "FingerprintMismatchError",
    "ImportFileError",
    "ImportKind",
    "ImportResult",
    "InsecureLoginError",
    "ListEntry",
    "LoginDelay",
    "LoginDelayError",
    "MailboxInUseError",
    "Maildir",
    "MalformedReplyError",
    "MemoryStore",
    "MessageHeaders",
    "MessageSource",
    "MessageStream",
    "MethodNotOfferedError",
    "NewMessage",
    "OAuth2Token",
    "Oversized",
    "POP3Error",
    "POP3TimeoutError",
    "PermanentFailureError",
    "Plan",
    "Planned",
    "ProtocolError",
    "Refusal",
    "ResponseError",
    "SASLError",
    "SQLiteStore",
    "Secret",
    "SeenStore",
    "SizeListing",
    "Stat",
    "State",
    "StateError",
    "StateLock",
    "StateLockedError",
    "TLSPolicy",
    "TLSRequiredError",
    "TemporaryFailureError",
    "TokenSource",
    "UIDLUnavailableError",
    "UidEntry",
    "UidListing",
    "Undelivered",
    "Verdict",
    "Watcher",
    "check_many",
    "diagnose",
    "error_proto",
    "fetch_into",
    "fetch_to_maildir",
    "import_state",
    "load_accounts",
    "mailbox_key",
    "read_seen_uids",
    "recover",
    "sasl",
    "secret_from_command",
    "secret_from_env",
    "secret_from_keyring",
    "watch",
]

if TYPE_CHECKING:
    from . import sasl
    from ._accounts import (
        Account,
        Secret,
        load_accounts,
        mailbox_key,
        secret_from_command,
        secret_from_env,
        secret_from_keyring,
    )
    from ._client import DEFAULT_TIMEOUT, POP3, POP3_PORT, POP3_SSL, POP3_SSL_PORT, Connector
    from ._delivery_state import STATE_FILE, DeliveryState, StateLock
    from ._errors import (
        AccountError,
        APOPNotOfferedError,
        AuthenticationError,
        CommandStateError,
        ConnectionClosedError,
        ConnectionLostError,
        CredentialsError,
        DeliveryError,
        Failure,
        FailureKind,
        ImportFileError,
        InsecureLoginError,
        LoginDelayError,
        MailboxInUseError,
        MalformedReplyError,
        MethodNotOfferedError,
        PermanentFailureError,
        POP3Error,
        POP3TimeoutError,
        ProtocolError,
        ResponseError,
        SASLError,
        StateError,
        StateLockedError,
        TemporaryFailureError,
        TLSRequiredError,
        UIDLUnavailableError,
        diagnose,
        error_proto,
    )
    from ._fetch import fetch_into, fetch_to_maildir, recover
    from ._fetch_run import (
        Delivery,
        FetchResult,
        Filtered,
        Oversized,
        Plan,
        Planned,
        Refusal,
        Undelivered,
    )
    from ._import_state import ImportKind, ImportResult, import_state, read_seen_uids
    from ._login import OAuth2Token, TokenSource
    from ._maildir import Maildir
    from ._many import CheckResult, check_many
    from ._message import Deliver, Filter, MessageHeaders, NewMessage, Verdict
    from ._programs import CommandDelivery, FilterCommand
    from ._state import State
    from ._stores import MemoryStore, SeenStore, SQLiteStore
    from ._stream import MessageSource, MessageStream
    from ._tls import FingerprintMismatchError
    from ._types import (
        TLS_POLICIES,
        AuthMethod,
        Capabilities,
        Expire,
        ListEntry,
        LoginDelay,
        SizeListing,
        Stat,
        TLSPolicy,
        UidEntry,
        UidListing,
    )
    from ._watch import Watcher, watch


def __getattr__(name: str) -> Any:
    """Load a public name's module on first use (PEP 562)."""
    source = _SOURCES.get(name)
    if source is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = importlib.import_module(f"{__name__}.{source}")
    value = module if source == name else getattr(module, name)
    globals()[name] = value
    _publish()
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


def _publish() -> None:
    """Say ``aiopop`` in the ``__module__`` of each public class and function loaded so far."""
    for name, source in _SOURCES.items():
        module = sys.modules.get(f"{__name__}.{source}")
        value = getattr(module, name, None) if module is not None else None
        if not isinstance(value, type | types.FunctionType):
            continue
        home = sys.modules.get(value.__module__)
        if home is not None and value.__module__.startswith(f"{__name__}._"):
            if isinstance(value, type):
                _resolve_annotations(value, home)
            value.__module__ = __name__


class _PublicNames(dict[str, Any]):
    """A private module's names, then the public ones, loaded as asked for."""

    def __missing__(self, key: str) -> Any:
        try:
            return __getattr__(key)
        except AttributeError:
            raise KeyError(key) from None


def _resolve_annotations(cls: type, module: types.ModuleType) -> None:
    """Evaluate ``cls``'s annotations where they were written, before its module changes.

    The library writes annotations as strings (PEP 563), and
    :func:`typing.get_type_hints` evaluates them in the namespace that
    ``__module__`` names: once that says ``aiopop``, whose names load on
    first use, it would miss them. Evaluated here, in the defining module
    (with the public names for those it imports only for type checking),
    they stay readable to pydantic, cattrs and the like.
    """
    annotations = dict(vars(cls).get("__annotations__", {}))
    names = _PublicNames(vars(module))
    for key, value in annotations.items():
        if isinstance(value, str):
            with contextlib.suppress(Exception):
                annotations[key] = eval(value, vars(module), names)  # noqa: S307 - our own annotation
    cls.__annotations__ = annotations
