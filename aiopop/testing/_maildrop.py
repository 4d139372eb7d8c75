"""A mailbox as one session sees it: numbered once at login, with deletion marks."""

from __future__ import annotations

import re

from ._mailbox import Mailbox, size_of
from ._wire import err

__all__ = ["Maildrop"]

_DIGITS = re.compile(rb"[0-9]{1,18}")


class Maildrop:
    """A mailbox as one session sees it: fixed numbering, deletion marks."""

    def __init__(self, name: str, mailbox: Mailbox) -> None:
        self.name = name
        self.mailbox = mailbox
        self.entries = mailbox._open()
        self.deleted: set[int] = set()

    def visible(self) -> list[int]:
        """0-based indexes of the messages not marked as deleted."""
        return [i for i in range(len(self.entries)) if i not in self.deleted]

    def totals(self) -> tuple[int, int]:
        """(count, octets) of the messages not marked as deleted."""
        indexes = self.visible()
        return len(indexes), sum(size_of(self.entries[i][0]) for i in indexes)

    def find(self, arg: bytes) -> int | bytes:
        """The 0-based index for a message-number argument, or an -ERR reply."""
        if not _DIGITS.fullmatch(arg):
            return err("Invalid message number")
        number = int(arg)
        if not 1 <= number <= len(self.entries):
            return err(f"No such message, only {len(self.entries)} messages in maildrop")
        if number - 1 in self.deleted:
            return err(f"Message {number} already deleted")
        return number - 1
