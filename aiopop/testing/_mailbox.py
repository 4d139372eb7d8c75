"""The maildrop behind POP3TestServer: messages, unique-ids and message slicing."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Collection
from dataclasses import dataclass, field

from ._generated import GeneratedMessage
from ._saslprep import saslprep

__all__ = [
    "Mailbox",
    "Message",
    "check_uid",
    "header_end",
    "headers_of",
    "normalise",
    "size_of",
    "top_of",
]

Message = bytes | GeneratedMessage
"""A message as a Mailbox holds it: CRLF-normalised bytes, or generated on demand."""


def normalise(message: bytes) -> bytes:
    """Return ``message`` with CRLF line ends and, unless empty, a final CRLF.

    A bare LF becomes CRLF; a CR that ends no line is message content and kept.
    """
    data = message.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    if data and not data.endswith(b"\r\n"):
        data += b"\r\n"
    return data


def _normalise_any(message: Message) -> Message:
    return message if isinstance(message, GeneratedMessage) else normalise(message)


def size_of(message: Message) -> int:
    """The size of a stored message in octets, as STAT and LIST report it."""
    return message.size if isinstance(message, GeneratedMessage) else len(message)


def headers_of(message: Message) -> bytes:
    """The header section of a stored message, with the blank line that ends it."""
    if isinstance(message, GeneratedMessage):
        return message.head(0)
    return message[: header_end(message)]


def check_uid(uid: str) -> None:
    """Raise ValueError unless ``uid`` is a valid unique-id (RFC 1939 section 7)."""
    if not 1 <= len(uid) <= 70 or any(not "\x21" <= ch <= "\x7e" for ch in uid):
        raise ValueError(f"a unique-id is 1 to 70 characters from 0x21 to 0x7E, not {uid!r}")


def _derive_uid(serial: int, message: Message) -> str:
    # The serial keeps two equal messages apart and is never reused in a
    # mailbox, so a unique-id survives deletions of the messages before it.
    # A generated message is named by its size and seed ("\1" rather than
    # "\0" after the serial, so no bytes message can produce the same key).
    if isinstance(message, GeneratedMessage):
        key = b"%d\1%d %d" % (serial, message.size, message.seed)
    else:
        key = b"%d\0%s" % (serial, message)
    return hashlib.sha256(key).hexdigest()[:40]


def header_end(message: bytes) -> int:
    """Return the offset just past the blank line ending the header section.

    A message without a blank line is all header: its length is returned.
    """
    if message.startswith(b"\r\n"):
        return 2
    blank = message.find(b"\r\n\r\n")
    return len(message) if blank < 0 else blank + 4


def top_of(message: bytes, lines: int) -> bytes:
    """Return the headers, the blank line and the first ``lines`` body lines."""
    end = header_end(message)
    for _ in range(lines):
        if end >= len(message):
            break
        end = message.index(b"\r\n", end) + 2
    return message[:end]


@dataclass
class Mailbox:
    """One user's maildrop on a :class:`POP3TestServer`.

    ``messages`` are raw RFC 5322 messages; LF or CRLF line ends are accepted
    and stored as CRLF, so sizes in STAT and LIST are exact wire octets. A
    :class:`GeneratedMessage` may stand wherever message bytes may: it is
    kept as it is, and the server generates and streams it chunk by chunk.
    ``uids`` defaults to stable unique-ids derived from each message and its
    position; given explicitly, it needs one valid unique-id per message.
    With ``locked`` set, every login is refused with ``-ERR [IN-USE]``.
    ``tokens`` are the OAuth 2.0 bearer tokens that XOAUTH2 and OAUTHBEARER
    accept for this mailbox (none by default). Tokens expire as a provider's
    do: :meth:`expire_token` withdraws one at once (its hour is over, or
    the grant was revoked), and with ``token_logins`` set each token is
    accepted for that many logins and then expires by itself.
    :meth:`issue_token` plays the identity provider: it mints a new token,
    accepts it from now on and returns it. An expired token is refused as
    any unknown one: the error challenge, then ``-ERR [AUTH]``.

    The server works on this object: after a session that ended with QUIT,
    ``messages`` and ``uids`` no longer hold the messages it deleted. Add
    mail with :meth:`add`; mail added while a session holds the mailbox
    appears at the next login, as it would on a real server.
    """

    password: str = field(repr=False)
    messages: list[Message] = field(default_factory=list)
    uids: list[str] | None = None
    locked: bool = False
    tokens: tuple[str, ...] = field(default=(), repr=False)
    token_logins: int | None = None
    _serial: int = field(default=0, init=False, repr=False, compare=False)
    _token_uses: dict[str, int] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        saslprep(self.password)  # fail early on a password no client could send
        if self.token_logins is not None and (
            isinstance(self.token_logins, bool)
            or not isinstance(self.token_logins, int)
            or self.token_logins < 1
        ):
            raise ValueError(f"token_logins must be None or an int >= 1, not {self.token_logins!r}")
        self.tokens = tuple(self.tokens)
        self.messages = [_normalise_any(message) for message in self.messages]
        if self.uids is None:
            self.uids = [_derive_uid(i, m) for i, m in enumerate(self.messages)]
        else:
            if len(self.uids) != len(self.messages):
                raise ValueError(
                    f"{len(self.uids)} unique-ids given for {len(self.messages)} messages"
                )
            for uid in self.uids:
                check_uid(uid)
            self.uids = list(self.uids)
        self._serial = len(self.messages)

    def add(self, message: Message, uid: str | None = None) -> str:
        """Append a message and return its unique-id (derived unless given)."""
        data = _normalise_any(message)
        if uid is None:
            uid = _derive_uid(self._serial, data)
        check_uid(uid)
        self._serial += 1
        self.messages.append(data)
        self._uid_list().append(uid)
        return uid

    def issue_token(self, length: int = 40) -> str:
        """Mint a new random token of ``length`` characters, accept it from now on, return it.

        The characters are those of base64url, as in a JWT. Microsoft's
        access tokens are over 1,000 characters, some over 4,000: pass such
        a ``length`` to test what reaches the wire.
        """
        if length < 8:
            raise ValueError(f"a token of {length} characters is too short to be unique")
        token = secrets.token_urlsafe(length)[:length]
        self.tokens = (*self.tokens, token)
        return token

    def expire_token(self, token: str) -> None:
        """Stop accepting ``token`` (a no-op for a token not accepted)."""
        self.tokens = tuple(t for t in self.tokens if t != token)

    def _accept_token(self, token: str) -> bool:
        """True if ``token`` is accepted now; counts the login against ``token_logins``."""
        given = token.encode()
        match = next((t for t in self.tokens if hmac.compare_digest(t.encode(), given)), None)
        if match is None:
            return False
        uses = self._token_uses.get(match, 0) + 1
        self._token_uses[match] = uses
        if self.token_logins is not None and uses >= self.token_logins:
            self.expire_token(match)  # this login is its last
        return True

    def _uid_list(self) -> list[str]:
        if self.uids is None:  # only if a caller set it back to None
            self.uids = []
        return self.uids

    def _open(self) -> list[tuple[Message, str]]:
        """Return the maildrop as (message, uid) pairs for a new session.

        Messages appended straight to ``messages`` are normalised here and get
        derived unique-ids, so the two lists stay in step.
        """
        self.messages[:] = [_normalise_any(message) for message in self.messages]
        uids = self._uid_list()
        while len(uids) < len(self.messages):
            uids.append(_derive_uid(self._serial, self.messages[len(uids)]))
            self._serial += 1
        return list(zip(self.messages, uids, strict=False))

    def _expunge(self, indexes: Collection[int]) -> None:
        """Remove the messages at ``indexes`` (0-based), as QUIT does."""
        uids = self._uid_list()
        for index in sorted(indexes, reverse=True):
            if index < len(self.messages):
                del self.messages[index]
            if index < len(uids):
                del uids[index]
