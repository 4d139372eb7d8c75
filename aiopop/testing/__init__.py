"""In-process POP3 servers for tests and demos.

:class:`POP3TestServer` is a real POP3 server (RFC 1939 with CAPA, response
codes, UTF8, STLS and implicit TLS) serving :class:`Mailbox` objects on a
loopback port. It keeps a :class:`SessionRecord` of every connection, so a
test can check what the client put on the wire::

    from aiopop.testing import Mailbox, POP3TestServer

    mailbox = Mailbox("secret", [b"Subject: hello\\n\\nHi!\\n"])
    async with POP3TestServer({"alice": mailbox}) as server:
        ...  # connect a client to server.host, server.port
    assert server.sessions[0].quit

A :class:`GeneratedMessage` stands in a Mailbox for a synthetic message of
any size, generated and streamed chunk by chunk, never held in memory.

:class:`ScriptedServer` instead plays a fixed script of raw bytes to each
connection (:class:`Send`, :class:`Expect`, :class:`Respond`, :class:`Sleep`,
:class:`Trickle`, :class:`Close`, :class:`WaitForClose`, :class:`StartTLS`),
for testing how a client copes with servers that misbehave.

Both listen on 127.0.0.1 and a free port by default; use them as async
context managers or call ``start()`` and ``close()``.

:class:`Faults` makes a POP3TestServer misbehave on purpose: drop the
connection at a chosen command or part way through its reply, answer
``-ERR [SYS/TEMP]``, wait before each reply.

Installing aiopop also gives pytest a ``pop3_server`` fixture (see
docs/testing.md): a :class:`POP3ServerFixture`, the handle of a running
server whose ``start()`` starts more, with TLS from a :class:`LocalCA`.
"""

import warnings
from typing import Any

from ._faults import LOGIN, Faults, Selector
from ._fixture import (
    DEFAULT_MESSAGES,
    DEFAULT_PASSWORD,
    DEFAULT_USER,
    LocalCA,
    POP3ServerFixture,
    ServerHandle,
)
from ._generated import GeneratedMessage
from ._mailbox import Mailbox
from ._scripted import (
    Close,
    Expect,
    Mismatch,
    Respond,
    ScriptedServer,
    Send,
    Sleep,
    StartTLS,
    Step,
    Trickle,
    WaitForClose,
)
from ._server import POP3TestServer
from ._session import MAX_LINE, SessionRecord

__all__ = [
    "DEFAULT_MESSAGES",
    "DEFAULT_PASSWORD",
    "DEFAULT_USER",
    "LOGIN",
    "MAX_LINE",
    "Close",
    "Expect",
    "Faults",
    "GeneratedMessage",
    "LocalCA",
    "Mailbox",
    "Mismatch",
    "POP3ServerFixture",
    "POP3TestServer",
    "Respond",
    "ScriptedServer",
    "Selector",
    "Send",
    "ServerHandle",
    "SessionRecord",
    "Sleep",
    "StartTLS",
    "Step",
    "Trickle",
    "WaitForClose",
]


def __getattr__(name: str) -> Any:
    # Deprecated names, kept for one minor version.
    if name == "TLSMode":
        warnings.warn(
            "aiopop.testing.TLSMode is deprecated: use aiopop.TLSPolicy, whose words "
            "the pop3_server fixture now takes",
            DeprecationWarning,
            stacklevel=2,
        )
        from aiopop._types import TLSPolicy

        return TLSPolicy
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
