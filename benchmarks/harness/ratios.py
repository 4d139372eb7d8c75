"""Ratios within a round, and their median over the rounds."""

from __future__ import annotations

import statistics
from collections.abc import Sequence

__all__ = ["median_or_nan", "round_ratios"]


def round_ratios(reference: Sequence[float], client: Sequence[float]) -> list[float]:
    """Per round: the reference's seconds / the client's (above 1: the client is faster)."""
    return [ref / mine for ref, mine in zip(reference, client, strict=True)]


def median_or_nan(values: Sequence[float]) -> float:
    """The median, or NaN when there is nothing (a client that never finished)."""
    return statistics.median(values) if values else float("nan")
