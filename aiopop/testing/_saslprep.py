"""SASLprep (RFC 4013), which RFC 6856 asks of a server taking UTF-8 credentials."""

from __future__ import annotations

import stringprep
import unicodedata

__all__ = ["saslprep"]

_PROHIBITED = (
    stringprep.in_table_c12,  # non-ASCII space
    stringprep.in_table_c21_c22,  # ASCII and non-ASCII control characters
    stringprep.in_table_c3,
    stringprep.in_table_c4,
    stringprep.in_table_c5,
    stringprep.in_table_c6,
    stringprep.in_table_c7,
    stringprep.in_table_c8,
    stringprep.in_table_c9,
)


def saslprep(text: str) -> str:
    """Prepare a user name or password for comparison (RFC 4013).

    Raises :class:`ValueError` for prohibited characters and for text that
    breaks the bidi rules. Code points unassigned in Unicode 3.2 are allowed,
    as for a query string, on both sides: the rule for stored strings would
    refuse a mailbox password containing, say, a recent emoji.
    """
    mapped = "".join(
        " " if stringprep.in_table_c12(ch) else ch for ch in text if not stringprep.in_table_b1(ch)
    )
    # Stringprep is defined over Unicode 3.2, like the stringprep tables.
    prepared = unicodedata.ucd_3_2_0.normalize("NFKC", mapped)
    for ch in prepared:
        if any(table(ch) for table in _PROHIBITED):
            raise ValueError(f"prohibited character U+{ord(ch):04X}")
    if any(stringprep.in_table_d1(ch) for ch in prepared):
        if any(stringprep.in_table_d2(ch) for ch in prepared):
            raise ValueError("mixes right-to-left and left-to-right text")
        if not (stringprep.in_table_d1(prepared[0]) and stringprep.in_table_d1(prepared[-1])):
            raise ValueError("right-to-left text must start and end with a right-to-left character")
    return prepared
