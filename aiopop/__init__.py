"""aiopop: an asyncio POP3 client.

A sans-I/O protocol core with a thin asyncio layer, named after :mod:`poplib`
so that poplib programs port line by line::

    async with aiopop.POP3_SSL("pop.example.com") as client:
        await client.login("user", "password")
        print("You have %d messages totaling %d bytes" % await client.stat())
"""

from . import sasl
from ._connection import MessageStream
from ._state import State
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
from .types import AuthMethod, Capabilities, Expire, ListEntry, LoginDelay, Stat, UidEntry

__version__ = "0.1.0"

__all__ = [
    "POP3",
    "POP3_PORT",
    "POP3_SSL",
    "POP3_SSL_PORT",
    "APOPNotOfferedError",
    "AuthMethod",
    "AuthenticationError",
    "Capabilities",
    "CommandStateError",
    "ConnectionClosedError",
    "ConnectionLostError",
    "CredentialsError",
    "Expire",
    "InsecureLoginError",
    "ListEntry",
    "LoginDelay",
    "LoginDelayError",
    "MailboxInUseError",
    "MalformedReplyError",
    "MessageStream",
    "MethodNotOfferedError",
    "POP3Error",
    "POP3TimeoutError",
    "PermanentFailureError",
    "ProtocolError",
    "ResponseError",
    "SASLError",
    "Stat",
    "State",
    "TLSRequiredError",
    "TemporaryFailureError",
    "UidEntry",
    "__version__",
    "error_proto",
    "sasl",
]
