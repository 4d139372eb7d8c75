"""The server side of SASL (RFC 5034) for POP3TestServer: one object per AUTH exchange.

Each mechanism turns the client's (decoded) responses into the next step:
a :class:`Challenge` to send, :class:`Success` naming the user, or
:class:`Failure` with the ``-ERR`` text. SCRAM comes from ``scramp``.
"""

from __future__ import annotations

import hmac
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

import scramp

from ._mailbox import Mailbox
from ._saslprep import saslprep

__all__ = [
    "MECHANISMS",
    "Challenge",
    "Failure",
    "ServerMechanism",
    "Step",
    "Success",
    "make_mechanism",
]

Lookup = Callable[[str], "tuple[str, Mailbox] | None"]
"""Find a mailbox by user name (after SASLprep): its key and the mailbox."""


@dataclass(frozen=True)
class Challenge:
    """Send ``data`` as a ``+`` challenge and wait for the client's response."""

    data: bytes


@dataclass(frozen=True)
class Success:
    """The client authenticated as ``user`` (the key of its mailbox)."""

    user: str
    mailbox: Mailbox


@dataclass(frozen=True)
class Failure:
    """Refuse the exchange; ``credentials`` means a wrong password or token ([AUTH])."""

    text: str
    credentials: bool = True


Step = Challenge | Success | Failure


class ServerMechanism:
    """One SASL exchange on the server side."""

    def __init__(self, lookup: Lookup, *, hostname: str, peer_name: str | None) -> None:
        self.lookup = lookup
        self.hostname = hostname
        self.peer_name = peer_name
        """The TLS client certificate's common name, for EXTERNAL; None without one."""

    def start(self, initial: bytes | None) -> Step:
        """The first step: ``initial`` is the initial response, or None when there was none."""
        return Challenge(b"") if initial is None else self.step(initial)

    def step(self, response: bytes) -> Step:
        """The next step after a client response."""
        raise NotImplementedError

    def _password_login(self, user: str, password: str) -> Step:
        found = self.lookup(user)
        try:
            given = saslprep(password)
        except ValueError:
            return Failure("Authentication failed.")
        if found is None or not hmac.compare_digest(
            given.encode(), saslprep(found[1].password).encode()
        ):
            return Failure("Authentication failed.")
        return Success(*found)


class _Plain(ServerMechanism):
    def step(self, response: bytes) -> Step:
        try:
            authzid, user, password = response.decode().split("\0")
        except ValueError:  # not UTF-8, or not three fields
            return Failure("Malformed PLAIN response", credentials=False)
        if authzid and authzid != user:
            return Failure("Authorization as another user is not permitted.")
        return self._password_login(user, password)


class _Login(ServerMechanism):
    def __init__(self, lookup: Lookup, *, hostname: str, peer_name: str | None) -> None:
        super().__init__(lookup, hostname=hostname, peer_name=peer_name)
        self.user: str | None = None

    def start(self, initial: bytes | None) -> Step:
        if initial is not None:
            return self.step(initial)
        return Challenge(b"Username:")

    def step(self, response: bytes) -> Step:
        try:
            text = response.decode()
        except UnicodeDecodeError:
            return Failure("Malformed LOGIN response", credentials=False)
        if self.user is None:
            self.user = text
            return Challenge(b"Password:")
        return self._password_login(self.user, text)


class _CramMD5(ServerMechanism):
    def __init__(self, lookup: Lookup, *, hostname: str, peer_name: str | None) -> None:
        super().__init__(lookup, hostname=hostname, peer_name=peer_name)
        self.challenge = f"<{os.getpid()}.{time.time_ns()}@{hostname}>".encode()

    def start(self, initial: bytes | None) -> Step:
        if initial is not None:
            return Failure("CRAM-MD5 takes no initial response", credentials=False)
        return Challenge(self.challenge)

    def step(self, response: bytes) -> Step:
        user, _, digest = response.rpartition(b" ")
        try:
            found = self.lookup(user.decode())
        except UnicodeDecodeError:
            found = None
        if found is None:
            return Failure("Authentication failed.")
        secret = saslprep(found[1].password).encode()
        expected = hmac.new(secret, self.challenge, "md5").hexdigest().encode()
        if not hmac.compare_digest(digest, expected):
            return Failure("Authentication failed.")
        return Success(*found)


class _Scram(ServerMechanism):
    name = ""

    def __init__(self, lookup: Lookup, *, hostname: str, peer_name: str | None) -> None:
        super().__init__(lookup, hostname=hostname, peer_name=peer_name)
        self.mechanism = scramp.ScramMechanism(self.name)
        self.found: tuple[str, Mailbox] | None = None
        self.server: scramp.ScramServer | None = None
        self.done = False

    def _auth_info(self, user: str) -> tuple[bytes, bytes, bytes, int]:
        self.found = self.lookup(user)
        # An unknown user gets made-up keys, so the exchange fails at the proof
        # as for a wrong password, without telling which it was.
        password = saslprep(self.found[1].password) if self.found else os.urandom(16).hex()
        info: tuple[bytes, bytes, bytes, int] = self.mechanism.make_auth_info(password)
        return info

    def step(self, response: bytes) -> Step:
        try:
            text = response.decode()
            if self.server is None:
                self.server = self.mechanism.make_server(self._auth_info)
                self.server.set_client_first(text)
                return Challenge(self.server.get_server_first().encode())
            if not self.done:
                self.server.set_client_final(text)
                self.done = True
                return Challenge(self.server.get_server_final().encode())
        except (UnicodeDecodeError, scramp.ScramException):
            return Failure("Authentication failed.")
        if response or self.found is None:
            return Failure("Authentication failed.")
        return Success(*self.found)


class _ScramSHA1(_Scram):
    name = "SCRAM-SHA-1"


class _ScramSHA256(_Scram):
    name = "SCRAM-SHA-256"


class _OAuth(ServerMechanism):
    """XOAUTH2 and OAUTHBEARER: a bearer token listed in the user's ``Mailbox.tokens``."""

    error: bytes = b""
    after_error: bytes = b""

    def __init__(self, lookup: Lookup, *, hostname: str, peer_name: str | None) -> None:
        super().__init__(lookup, hostname=hostname, peer_name=peer_name)
        self.failed = False

    def parse(self, response: bytes) -> tuple[str, str] | None:
        """The user and token of the client's message, or None when malformed."""
        raise NotImplementedError

    def step(self, response: bytes) -> Step:
        if self.failed:
            if response != self.after_error:
                return Failure("Malformed response after the error", credentials=False)
            return Failure("Authentication failed.")
        parsed = self.parse(response)
        if parsed is None:
            return Failure("Malformed initial response", credentials=False)
        found = self.lookup(parsed[0])
        if found is None or not found[1]._accept_token(parsed[1]):
            # RFC 7628 section 3.2.2: the error comes as a challenge, the client answers.
            self.failed = True
            return Challenge(self.error)
        return Success(*found)


class _XOAuth2(_OAuth):
    # The shape of Gmail's error (its XOAUTH2 protocol page): status, schemes, scope.
    error = json.dumps(
        {"status": "401", "schemes": "bearer", "scope": "https://mail.example.test/"}
    ).encode()
    after_error = b""

    def parse(self, response: bytes) -> tuple[str, str] | None:
        fields = _kvsep_fields(response)
        if fields is None or set(fields) != {"user", "auth"}:
            return None
        scheme, _, token = fields["auth"].partition(" ")
        return (fields["user"], token) if scheme.lower() == "bearer" and token else None


class _OAuthBearer(_OAuth):
    error = json.dumps({"status": "invalid_token", "scope": "mail"}).encode()
    after_error = b"\x01"

    def parse(self, response: bytes) -> tuple[str, str] | None:
        gs2, separator, rest = response.partition(b"\x01")
        parts = gs2.split(b",")
        if not separator or len(parts) != 3 or parts[0] != b"n" or parts[2]:
            return None
        if not parts[1].startswith(b"a="):
            return None
        try:
            user = parts[1][2:].decode().replace("=2C", ",").replace("=3D", "=")
        except UnicodeDecodeError:
            return None
        fields = _kvsep_fields(rest, leading=False)
        if fields is None or "auth" not in fields:
            return None
        scheme, _, token = fields["auth"].partition(" ")
        return (user, token) if scheme.lower() == "bearer" and token else None


class _External(ServerMechanism):
    def step(self, response: bytes) -> Step:
        if self.peer_name is None:
            return Failure("No client certificate was presented")
        try:
            authzid = response.decode()
        except UnicodeDecodeError:
            return Failure("Malformed EXTERNAL response", credentials=False)
        if authzid and authzid != self.peer_name:
            return Failure("Authorization as another user is not permitted.")
        found = self.lookup(self.peer_name)
        if found is None:
            return Failure("No mailbox for the certificate's name")
        return Success(*found)


def _kvsep_fields(data: bytes, *, leading: bool = True) -> dict[str, str] | None:
    """``key=value`` pairs separated by ^A and ended by ^A^A (RFC 7628), or None."""
    if not data.endswith(b"\x01\x01"):
        return None
    try:
        text = data[:-2].decode()
    except UnicodeDecodeError:
        return None
    fields: dict[str, str] = {}
    for item in text.split("\x01") if text else []:
        key, equals, value = item.partition("=")
        if not equals or not key:
            return None
        fields[key] = value
    return fields if fields or not leading else None


MECHANISMS: dict[str, type[ServerMechanism]] = {
    "PLAIN": _Plain,
    "LOGIN": _Login,
    "CRAM-MD5": _CramMD5,
    "SCRAM-SHA-1": _ScramSHA1,
    "SCRAM-SHA-256": _ScramSHA256,
    "XOAUTH2": _XOAuth2,
    "OAUTHBEARER": _OAuthBearer,
    "EXTERNAL": _External,
}
"""The mechanisms POP3TestServer can offer, by name."""


def make_mechanism(
    name: str, lookup: Lookup, *, hostname: str, peer_name: str | None
) -> ServerMechanism:
    """A new exchange of mechanism ``name`` (one of :data:`MECHANISMS`)."""
    return MECHANISMS[name](lookup, hostname=hostname, peer_name=peer_name)
