"""SASL mechanisms for POP3 AUTH (RFC 5034), behind one small interface.

A mechanism is an object with a ``name`` and three methods, driven by
:meth:`aiopop.POP3.auth`: :meth:`Mechanism.initial_response` (what goes on
the AUTH line, or None), :meth:`Mechanism.respond` (the answer to each
server challenge) and :meth:`Mechanism.verify` (called on ``+OK``: a
mechanism that authenticates the server, like SCRAM, raises if the server
never proved itself). Challenges and responses are raw octets here; base64
is the client's business. Raise :class:`SASLError` from ``respond`` to
cancel the exchange (the client sends ``*``).

Built in: PLAIN, LOGIN, CRAM-MD5, SCRAM-SHA-1, SCRAM-SHA-256 (through the
``scramp`` package, which also verifies the server's signature), XOAUTH2,
OAUTHBEARER (RFC 7628) and EXTERNAL. Write your own by subclassing
:class:`Mechanism`.

Secrets are kept in private attributes and never appear in ``repr()``.
"""

from __future__ import annotations

from typing import ClassVar

from ._errors import SASLError

__all__ = [
    "CramMD5",
    "External",
    "Login",
    "Mechanism",
    "OAuthBearer",
    "Plain",
    "SASLError",
    "ScramSHA1",
    "ScramSHA256",
    "XOAuth2",
]


class Mechanism:
    """The interface of a SASL mechanism, one object per authentication exchange.

    Subclasses set :attr:`name` and override :meth:`respond`, and
    :meth:`initial_response` when the mechanism starts with the client.
    """

    name: ClassVar[str] = ""
    """The mechanism's registered name, as in CAPA's SASL line (upper case)."""

    max_challenge: ClassVar[int] = 4096
    """Largest decoded challenge accepted; a longer one cancels the exchange."""

    sends_secret_in_clear: ClassVar[bool] = False
    """True when the exchange reveals the password to anyone who can read it
    (PLAIN, LOGIN): :meth:`aiopop.POP3.login` uses such mechanisms only over TLS."""

    def initial_response(self) -> bytes | None:
        """The client's first message, sent with AUTH (or after an empty challenge)."""
        return None

    def respond(self, challenge: bytes) -> bytes:
        """The response to one server challenge. Raise :class:`SASLError` to cancel."""
        raise SASLError(f"{self.name} expects no challenge here")

    def verify(self) -> None:
        """Called once the server said ``+OK``: raise if the server did not authenticate itself."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} SASL mechanism>"


class Plain(Mechanism):
    """PLAIN (RFC 4616): authorization id, user name and password, in one message."""

    name = "PLAIN"
    sends_secret_in_clear = True

    def __init__(self, user: str, password: str, *, authzid: str = "") -> None:
        for what, value in (("user name", user), ("password", password), ("authzid", authzid)):
            if "\0" in value:
                raise ValueError(f"PLAIN: NUL in the {what}")
        self._message = f"{authzid}\0{user}\0{password}".encode()

    def initial_response(self) -> bytes:
        return self._message

    def respond(self, challenge: bytes) -> bytes:
        if challenge:
            raise SASLError("PLAIN expects only an empty challenge")
        return self._message


class Login(Mechanism):
    """LOGIN (draft-murchison-sasl-login): the user name, then the password, each when asked."""

    name = "LOGIN"
    sends_secret_in_clear = True

    def __init__(self, user: str, password: str) -> None:
        self._answers = [user.encode(), password.encode()]

    def respond(self, challenge: bytes) -> bytes:
        # The prompts ("Username:", "Password:") vary between servers: the
        # order of the questions is what counts.
        if not self._answers:
            raise SASLError("LOGIN: more than two challenges")
        return self._answers.pop(0)


class CramMD5(Mechanism):
    """CRAM-MD5 (RFC 2195): the user name and an HMAC-MD5 of the server's challenge."""

    name = "CRAM-MD5"
    max_challenge = 1024

    def __init__(self, user: str, password: str) -> None:
        self._user = user.encode()
        self._password = password.encode()
        self._answered = False

    def respond(self, challenge: bytes) -> bytes:
        if self._answered:
            raise SASLError("CRAM-MD5: more than one challenge")
        if not challenge:
            raise SASLError("CRAM-MD5: an empty challenge")
        self._answered = True
        import hmac  # here: only CRAM-MD5 needs it, not every command's start-up

        try:
            digest = hmac.new(self._password, challenge, "md5").hexdigest()
        except ValueError:  # a FIPS-restricted Python refuses MD5
            raise SASLError("CRAM-MD5: this Python refuses MD5") from None
        return self._user + b" " + digest.encode()


class _Scram(Mechanism):
    """SCRAM (RFC 5802, RFC 7677), through ``scramp``; the server's signature is checked."""

    max_challenge = 2048

    def __init__(self, user: str, password: str) -> None:
        import scramp  # only when SCRAM is used: it costs ~40 ms to import

        self._scramp = scramp
        try:
            self._client = scramp.ScramClient([self.name], user, password)
        except scramp.ScramException as exc:
            raise ValueError(f"{self.name}: {exc}") from None
        self._step = 0

    def initial_response(self) -> bytes:
        self._step = 1
        return str(self._client.get_client_first()).encode()

    def respond(self, challenge: bytes) -> bytes:
        try:
            text = challenge.decode("utf-8")
        except UnicodeDecodeError:
            raise SASLError(f"{self.name}: the challenge is not UTF-8") from None
        try:
            if self._step == 0:  # the server asked for our first message
                if challenge:
                    raise SASLError(f"{self.name}: the server spoke first")
                return self.initial_response()
            if self._step == 1:
                self._client.set_server_first(text)
                self._step = 2
                return str(self._client.get_client_final()).encode()
            if self._step == 2:
                self._client.set_server_final(text)
                self._step = 3
                return b""
        except self._scramp.ScramException as exc:
            raise SASLError(f"{self.name}: {exc}") from None
        raise SASLError(f"{self.name}: a challenge after the server's final message")

    def verify(self) -> None:
        if self._step != 3:
            raise SASLError(
                f"{self.name}: the server accepted the login without proving it knows "
                "the password (no server signature)"
            )


class ScramSHA1(_Scram):
    """SCRAM-SHA-1 (RFC 5802)."""

    name = "SCRAM-SHA-1"


class ScramSHA256(_Scram):
    """SCRAM-SHA-256 (RFC 7677)."""

    name = "SCRAM-SHA-256"


class XOAuth2(Mechanism):
    """XOAUTH2 (Google, Microsoft): the user and an OAuth 2.0 bearer token.

    On failure the server sends a JSON error as a challenge; the client
    answers with an empty response and the server then says ``-ERR``.
    """

    name = "XOAUTH2"

    def __init__(self, user: str, token: str) -> None:
        _check_oauth("XOAUTH2", user, token)
        self._message = f"user={user}\x01auth=Bearer {token}\x01\x01".encode()
        self.error: bytes | None = None
        """The server's JSON error, when it sent one."""

    def initial_response(self) -> bytes:
        return self._message

    def respond(self, challenge: bytes) -> bytes:
        if self.error is not None:
            raise SASLError("XOAUTH2: a second challenge")
        self.error = challenge
        return b""


class OAuthBearer(Mechanism):
    """OAUTHBEARER (RFC 7628): a GS2 header naming the user, and a bearer token.

    On failure the server sends a JSON error as a challenge; the client
    answers with the dummy response ``%x01`` (RFC 7628 section 3.2.3).
    """

    name = "OAUTHBEARER"

    def __init__(self, user: str, token: str, *, host: str = "", port: int = 0) -> None:
        _check_oauth("OAUTHBEARER", user, token)
        gs2_user = user.replace("=", "=3D").replace(",", "=2C")
        fields = [f"n,a={gs2_user},"]
        if host:
            fields.append(f"host={host}")
        if port:
            fields.append(f"port={port}")
        fields.append(f"auth=Bearer {token}")
        self._message = ("\x01".join(fields) + "\x01\x01").encode()
        self.error: bytes | None = None
        """The server's JSON error, when it sent one."""

    def initial_response(self) -> bytes:
        return self._message

    def respond(self, challenge: bytes) -> bytes:
        if self.error is not None:
            raise SASLError("OAUTHBEARER: a second challenge")
        self.error = challenge
        return b"\x01"


class External(Mechanism):
    """EXTERNAL (RFC 4422 appendix A): the identity established outside SASL.

    With POP3 that is a TLS client certificate (``ssl_context.load_cert_chain``).
    """

    name = "EXTERNAL"

    def __init__(self, authzid: str = "") -> None:
        self._authzid = authzid.encode()

    def initial_response(self) -> bytes:
        return self._authzid

    def respond(self, challenge: bytes) -> bytes:
        if challenge:
            raise SASLError("EXTERNAL expects only an empty challenge")
        return self._authzid


def _check_oauth(name: str, user: str, token: str) -> None:
    if not token:
        raise ValueError(f"{name}: an empty token")
    for what, value in (("user name", user), ("token", token)):
        if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
            raise ValueError(f"{name}: a control character in the {what}")
