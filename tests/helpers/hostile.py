"""What the hostile-server tests share: an APOP greeting, the login's lines, SASL challenges."""

from __future__ import annotations

import asyncio
import base64
import itertools
import unicodedata
from collections.abc import Sequence
from pathlib import Path

from aiopop import sasl
from aiopop._protocol import Command, ReplyShape
from aiopop.testing import (
    Expect,
    ScriptedServer,
    Send,
    Step,
)

TIMESTAMP = b"<1896.697170952@dbc.mtview.ca.us>"
GREETING = b"+OK POP3 server ready " + TIMESTAMP + b"\r\n"
"""A greeting that offers APOP, so that a client tempted to fall back has somewhere to go."""
AUTHORIZED = [b"USER u", b"PASS p"]
"""What :data:`tests.helpers.scripted.LOGIN` receives."""


async def client_closed(server: ScriptedServer) -> None:
    """Wait until the client has closed every connection (each script ends by reading to EOF).

    Times out, failing the test, when the client left a connection open.
    """
    await asyncio.wait_for(server.wait_idle(), 2)


def assert_no_controls(text: str) -> None:
    """Server text shown to a person: no control character at all (C0, DEL, C1, so no ANSI)."""
    assert not [c for c in text if unicodedata.category(c) == "Cc"], repr(text)


def b64(data: bytes) -> bytes:
    return base64.b64encode(data)


def challenge(data: bytes) -> bytes:
    """A SASL continuation line carrying ``data``."""
    return b"+ " + b64(data) + b"\r\n"


# -- server text is escaped ----------------------------------------------------------------------

ANSI = b"\x1b[2J\x1b]0;pwned\x07\x1b[31mred\xc2\x9b1m"
"""Clear the screen, set the terminal title, colour; the last is a C1 CSI in UTF-8."""
CAPA_USER: list[Step] = [Expect(b"CAPA"), Send(b"+OK\r\nUSER\r\n.\r\n")]


# -- STARTTLS stripping (curl CVE-2021-22946): TLS required fails closed ----------------------


CAPA_STLS = b"+OK\r\nSTLS\r\nUSER\r\nSASL PLAIN\r\n.\r\n"
"""A CAPA that offers STLS, and cleartext methods a stripped client could fall back to."""


class Scripted(sasl.Mechanism):
    """A mechanism that says what it is told: for tests of what the client makes of it."""

    name = "X-SCRIPTED"

    def __init__(self, initial: bytes | None = None, answers: Sequence[bytes] = ()) -> None:
        self._initial = initial
        self._answers = list(answers)

    def initial_response(self) -> bytes | None:
        return self._initial

    def respond(self, challenge: bytes) -> bytes:
        return self._answers.pop(0) if self._answers else b"r"


def leftovers(directory: Path) -> list[Path]:
    """What is in ``directory``: nothing, after a message that never arrived whole."""
    return list(directory.iterdir())


# -- the sans-I/O core: SASL continuation lines, fuzzed -------------------------------------------

AUTH = Command("AUTH", ("X-SCRIPTED",), ReplyShape.SASL)


def cut(data: bytes, points: Sequence[int]) -> list[bytes]:
    bounds = [0, *sorted(set(points)), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]
