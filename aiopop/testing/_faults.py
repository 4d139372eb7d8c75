"""Faults: failures and delays that POP3TestServer injects, to test how a client copes."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from ._mailbox import check_uid

__all__ = ["LOGIN", "Faults", "Selector", "matches"]

Selector = int | str
"""Which commands a fault applies to, in every session.

An ``int`` N picks the N-th command line of the session, counting from 1
after the greeting; every line the client sends in the main loop counts,
refused or not, but the responses inside a SASL exchange do not. A ``str``
picks every command with that keyword, in any case (``"RETR"``).
:data:`LOGIN` picks every login attempt: PASS, APOP, and AUTH naming a
mechanism (not USER, and not a bare AUTH that only lists the mechanisms).
"""

LOGIN = "LOGIN"
"""The :data:`Selector` for every login attempt: PASS, APOP and AUTH with a mechanism."""

_KEYWORD = re.compile(r"[A-Za-z0-9]{1,40}")
_LOGIN_KEYWORDS = frozenset({b"PASS", b"APOP"})
_TEXT = re.compile(r"[^\x00-\x1f\x7f]*")


def _check_selector(name: str, selector: Selector | None) -> None:
    if selector is None:
        return
    if isinstance(selector, bool) or not isinstance(selector, int | str):
        raise TypeError(f"{name} must be an int, a keyword or None, not {selector!r}")
    if isinstance(selector, int) and selector < 1:
        raise ValueError(f"{name} counts commands from 1, not {selector}")
    if isinstance(selector, str) and not _KEYWORD.fullmatch(selector):
        raise ValueError(f"{name} must be a command keyword such as 'RETR', not {selector!r}")


def matches(selector: Selector | None, number: int, line: bytes) -> bool:
    """True if ``selector`` picks ``line``, the ``number``-th command of its session."""
    if selector is None:
        return False
    if isinstance(selector, int):
        return number == selector
    keyword, space, arg = line.partition(b" ")
    keyword = keyword.upper()
    if selector.upper() == LOGIN:
        return keyword in _LOGIN_KEYWORDS or (keyword == b"AUTH" and bool(space and arg))
    return keyword == selector.upper().encode()


@dataclass(frozen=True)
class Faults:
    """What a :class:`POP3TestServer` should get wrong, on purpose, in every session.

    * ``drop_at``: close the connection when the chosen command (a
      :data:`Selector`) arrives. By default the command is not carried out
      and nothing is answered: the server vanished. With
      ``drop_after_octets=K`` the command *is* carried out (a QUIT commits
      its deletions) and only the first K octets of its reply are sent
      before the connection closes: K=100 on ``"RETR"`` cuts a message
      after its status line and a few header lines. A reply shorter than K
      is sent whole, then the connection closes.
    * ``error_at``: answer the chosen commands with ``-ERR`` and ``error``
      (by default ``[SYS/TEMP] ...``, RFC 3206) instead of carrying them
      out; :data:`LOGIN` picks every login attempt.
    * ``latency``: seconds to wait before the greeting, each reply to a
      command and each step of a SASL exchange, as a slow server would.
      Replies to pipelined commands wait once each.

    And listings that break RFC 1939, as some real servers' do (see
    docs/security.md rule 19):

    * ``size_error``: LIST (the listing and the one-message form) reports
      each message's size plus this many octets (negative: smaller; never
      below 0), while RETR still sends the real message. STAT stays true.
    * ``repeat_in_list``: message number -> size; the LIST listing names
      that message a second time, right after its own line, with that size.
    * ``repeat_in_uidl``: message number -> unique-id; the UIDL listing
      names that message a second time, right after its own line, with that
      unique-id (its own, another message's, or one no message has).
      Numbers beyond the maildrop, or of deleted messages, are ignored.

    Two messages sharing a unique-id, or a unique-id given again to a later
    message, need no fault: give :class:`Mailbox` such ``uids``, or
    :meth:`Mailbox.add` a message with an earlier message's unique-id.

    :attr:`SessionRecord.dropped` tells whether a session was dropped.
    ``Faults()`` injects nothing. Assign a new value to
    :attr:`POP3TestServer.faults` to change them for later connections.
    """

    drop_at: Selector | None = None
    drop_after_octets: int | None = None
    error_at: Selector | None = None
    error: str = "[SYS/TEMP] Temporary failure, please try again later"
    latency: float = 0.0
    size_error: int = 0
    repeat_in_list: Mapping[int, int] = field(default_factory=dict)
    repeat_in_uidl: Mapping[int, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_selector("drop_at", self.drop_at)
        _check_selector("error_at", self.error_at)
        if self.drop_after_octets is not None:
            if self.drop_at is None:
                raise ValueError("drop_after_octets needs drop_at to say which reply to cut")
            if self.drop_after_octets < 0:
                raise ValueError(f"drop_after_octets must be >= 0, not {self.drop_after_octets}")
        if not self.error or not _TEXT.fullmatch(self.error) or not self.error.isascii():
            raise ValueError(f"error must be one line of ASCII text, not {self.error!r}")
        if not (self.latency >= 0 and math.isfinite(self.latency)):  # also refuses NaN
            raise ValueError(f"latency must be a finite number of seconds >= 0, not {self.latency}")
        if isinstance(self.size_error, bool) or not isinstance(self.size_error, int):
            raise TypeError(f"size_error must be an int, not {self.size_error!r}")
        for number, size in self.repeat_in_list.items():
            if number < 1 or size < 0:
                raise ValueError(f"repeat_in_list: number {number} or size {size} below range")
        for number, uid in self.repeat_in_uidl.items():
            if number < 1:
                raise ValueError(f"repeat_in_uidl needs message numbers >= 1, not {number}")
            check_uid(uid)
