"""aiopop: an asyncio POP3 client.

A sans-I/O protocol core with a thin asyncio layer, named after :mod:`poplib`
so that poplib programs port line by line::

    async with aiopop.POP3_SSL("pop.example.com") as client:
        await client.login("user", "password")
        print("You have %d messages totaling %d bytes" % await client.stat())
"""

from . import sasl
from ._state import State
from .accounts import Account, AccountError, load_accounts
from .client import POP3, POP3_PORT, POP3_SSL, POP3_SSL_PORT
from .errors import (
    APOPNotOfferedError,
    AuthenticationError,
    CommandStateError,
    ConnectionClosedError,
    ConnectionLostError,
    CredentialsError,
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
    TemporaryFailureError,
    TLSRequiredError,
    error_proto,
)
from .fetch import FetchResult, Oversized, UIDLUnavailableError, fetch_to_maildir
from .many import CheckResult, check_many
from .state import StateError, StateLockedError
from .stores import MemoryStore, SeenStore, SQLiteStore
from .stream import MessageStream
from .types import (
    AuthMethod,
    Capabilities,
    Expire,
    ListEntry,
    LoginDelay,
    SizeListing,
    Stat,
    UidEntry,
    UidListing,
)
from .watch import NewMessage, Watcher, watch

__version__ = "0.1.0"

__all__ = [
    "POP3",
    "POP3_PORT",
    "POP3_SSL",
    "POP3_SSL_PORT",
    "APOPNotOfferedError",
    "Account",
    "AccountError",
    "AuthMethod",
    "AuthenticationError",
    "Capabilities",
    "CheckResult",
    "CommandStateError",
    "ConnectionClosedError",
    "ConnectionLostError",
    "CredentialsError",
    "Expire",
    "FetchResult",
    "InsecureLoginError",
    "ListEntry",
    "LoginDelay",
    "LoginDelayError",
    "MailboxInUseError",
    "MalformedReplyError",
    "MemoryStore",
    "MessageStream",
    "MethodNotOfferedError",
    "NewMessage",
    "Oversized",
    "POP3Error",
    "POP3TimeoutError",
    "PermanentFailureError",
    "ProtocolError",
    "ResponseError",
    "SASLError",
    "SQLiteStore",
    "SeenStore",
    "SizeListing",
    "Stat",
    "State",
    "StateError",
    "StateLockedError",
    "TLSRequiredError",
    "TemporaryFailureError",
    "UIDLUnavailableError",
    "UidEntry",
    "UidListing",
    "Watcher",
    "check_many",
    "error_proto",
    "fetch_to_maildir",
    "load_accounts",
    "sasl",
    "watch",
]
