"""What a client hands back to the worker once its timed span is over."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from benchmarks.harness.messages import digest

__all__ = ["Outcome", "from_messages"]


@dataclass(frozen=True)
class Outcome:
    """The octets of message content that arrived, and how many messages.

    ``digests`` holds (size, SHA-256) of each message, for the clients whose
    results are checked against the stored mailbox; ``None`` for those that
    only count (the ceilings), which check what they can themselves.
    """

    octets: int
    messages: int
    digests: list[tuple[int, str]] | None


def from_messages(messages: Iterable[bytes]) -> Outcome:
    """An outcome that lists every message's size and digest (computed after the span)."""
    digests = [(len(m), digest(m)) for m in messages]
    return Outcome(sum(size for size, _ in digests), len(digests), digests)
