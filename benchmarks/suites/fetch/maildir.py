"""The mailboxes a fetch downloads, and the check that a Maildir holds each exactly once."""

from __future__ import annotations

import hashlib
import os
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path


class CheckError(Exception):
    """A Maildir does not hold exactly the mailbox."""


@dataclass(frozen=True)
class PeerMailbox:
    """A mailbox on the private Dovecot, and what a Maildir must hold after a download."""

    key: str
    user: str
    count: int
    size: int
    host: str
    port: int
    password: str
    octets: int
    """Its messages' octets as stored (CRLF line ends), as LIST counts them."""
    expected: dict[str, int] = field(repr=False)
    """SHA-256 of each message with LF line ends (as Maildir files hold mail) -> how many."""
    lengths: tuple[int, ...] = ()
    """The distinct lengths of those LF forms."""


def peer_mailbox(
    key: str,
    user: str,
    count: int,
    size: int,
    host: str,
    port: int,
    password: str,
    first: int = 1,
) -> PeerMailbox:
    """The mailbox of ``user``: messages ``first`` to ``first + count - 1`` of ``size`` octets."""
    from benchmarks.harness.messages import build_message

    expected: Counter[str] = Counter()
    lengths = set()
    octets = 0
    for index in range(first, first + count):
        message = build_message(index, size)
        octets += len(message)
        stored = message.replace(b"\r\n", b"\n")
        expected[hashlib.sha256(stored).hexdigest()] += 1
        lengths.add(len(stored))
    return PeerMailbox(
        key,
        user,
        count,
        size,
        host,
        port,
        password,
        octets,
        dict(expected),
        tuple(sorted(lengths, reverse=True)),
    )


def peer_mailboxes(
    plans: Sequence[tuple[str, str, int, int]],
    host: str,
    ports: dict[str, int],
    passwords: dict[str, str],
) -> list[PeerMailbox]:
    return [
        peer_mailbox(key, user, count, size, host, ports[user], passwords[user])
        for key, user, count, size in plans
    ]


@dataclass(frozen=True)
class AccountSet:
    """Several mailboxes that one client run fetches, each into a Maildir of its own.

    Each account holds other messages (numbered on from the previous one's),
    so a message delivered into another account's Maildir fails the check.
    """

    key: str
    accounts: tuple[PeerMailbox, ...]

    @property
    def count(self) -> int:
        """Messages in all the accounts."""
        return sum(account.count for account in self.accounts)

    @property
    def size(self) -> int:
        """The size of each message."""
        return self.accounts[0].size

    @property
    def octets(self) -> int:
        """Octets in all the accounts, as LIST counts them."""
        return sum(account.octets for account in self.accounts)


Workload = PeerMailbox | AccountSet
"""What one client run fetches: one mailbox, or several accounts."""


_HEADER_LINE = re.compile(rb"[\x21-\x39\x3b-\x7e]+:.*|[ \t].*")


def _headers_only(prefix: bytes) -> bool:
    """True when ``prefix`` (LF line ends) is nothing, or whole header lines."""
    if not prefix:
        return True
    if not prefix.endswith(b"\n"):
        return False
    return all(_HEADER_LINE.fullmatch(line) for line in prefix[:-1].split(b"\n"))


def check_maildir(maildir: Path, mailbox: PeerMailbox) -> tuple[int, int, int]:
    """Raise CheckError unless ``maildir`` holds every message of ``mailbox`` exactly once.

    Each file (in ``new/`` or ``cur/``), its line ends made LF, must end with
    one of the stored messages, and what comes before must be header lines
    (the ones a peer adds: getmail6's Return-Path, say). Returns the files,
    their octets and the octets of the added headers.
    """
    remaining = Counter(mailbox.expected)
    files = octets = added = 0
    for sub in ("new", "cur"):
        with os.scandir(maildir / sub) as entries:
            for entry in entries:
                data = Path(entry.path).read_bytes().replace(b"\r\n", b"\n")
                for length in mailbox.lengths:
                    if len(data) < length:
                        continue
                    digest = hashlib.sha256(data[len(data) - length :]).hexdigest()
                    if remaining[digest] > 0 and _headers_only(data[: len(data) - length]):
                        remaining[digest] -= 1
                        added += len(data) - length
                        break
                else:
                    raise CheckError(
                        f"{sub}/{entry.name} ({len(data)} octets) is no stored message, "
                        "or one delivered twice"
                    )
                files += 1
                octets += len(data)
    missing = sum(remaining.values())
    if missing:
        raise CheckError(f"{missing} of {mailbox.count} messages missing ({files} delivered)")
    left = os.listdir(maildir / "tmp")
    if left:
        raise CheckError(f"{len(left)} files left in tmp/")
    return files, octets, added
