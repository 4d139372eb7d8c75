"""The APOP digest of RFC 1939 section 7.

APOP sends ``MD5(timestamp + secret)`` in hex, where the timestamp comes from
the server greeting. The digest comes from :mod:`hashlib` when it offers MD5.
FIPS-restricted Python builds refuse MD5 (``ValueError``), and some builds
lack it entirely, so there we fall back to the pure-Python RFC 1321
implementation in :mod:`aiopop._md5`. The choice is made once, on first use.

APOP is weak. MD5 collisions let an active attacker who plays the server
recover the password a few characters at a time from chosen challenges
(Leurent 2007; Sasaki et al. 2008; CVE-2007-1558). APOP only keeps the
password off the wire against a passive eavesdropper; prefer TLS or SCRAM.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

from aiopop._md5 import md5_hexdigest

__all__ = ["apop_digest"]

Md5Hex = Callable[[bytes], str]

# The implementation chosen on first use; tests reset it to None to choose again.
_selected: Md5Hex | None = None


def _hashlib_hexdigest(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def _hashlib_md5() -> Md5Hex | None:
    """Return a hashlib-backed MD5 hex function, or None if hashlib refuses MD5."""
    try:
        _hashlib_hexdigest(b"")
    except (AttributeError, ValueError):
        # ValueError: FIPS mode or "unsupported hash type"; AttributeError:
        # hashlib was built without md5 at all.
        return None
    return _hashlib_hexdigest


def _md5_impl() -> Md5Hex:
    """Return the MD5 hex function to use, choosing it on the first call."""
    global _selected
    if _selected is None:
        _selected = _hashlib_md5() or md5_hexdigest
    return _selected


def apop_digest(timestamp: bytes, secret: bytes) -> str:
    """Return the APOP digest: lowercase hex MD5 of ``timestamp + secret``.

    ``timestamp`` is the greeting's ``<...>`` msg-id including the angle
    brackets; ``secret`` is the shared secret, already encoded.
    """
    return _md5_impl()(timestamp + secret)
