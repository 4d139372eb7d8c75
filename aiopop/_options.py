"""The options of :class:`aiopop.POP3` and :class:`aiopop.POP3_SSL`: their checks and TLS words."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Literal, TypedDict

from ._types import TLS_POLICIES, TLSPolicy

if TYPE_CHECKING:
    import socket

__all__ = ["ClientOptions", "OldTLSPolicy", "check_options", "pinned_policy", "tls_policy"]


class ClientOptions(TypedDict, total=False):
    """The options :class:`POP3` and :class:`POP3_SSL` share (see :class:`POP3`)."""

    timeout: float | None
    max_line_length: int
    max_message_size: int | None
    max_listing_size: int | None
    pipelining: bool | None
    max_in_flight: int
    local_addr: tuple[str, int] | None
    tls_fingerprint: str | None
    sock: socket.socket | None


OldTLSPolicy = Literal["required", "if-offered", "never"]
"""The words of the deprecated ``starttls`` keyword."""
_FROM_OLD_POLICY: dict[str, TLSPolicy] = {
    "required": "starttls",
    "if-offered": "if-offered",
    "never": "none",
}


def tls_policy(tls: TLSPolicy | None, starttls: OldTLSPolicy | None) -> TLSPolicy:
    """``tls``, or the deprecated ``starttls`` in the new words; "if-offered" by default."""
    if starttls is not None:
        if tls is not None:
            raise TypeError("pass tls= or the deprecated starttls=, not both")
        if starttls not in _FROM_OLD_POLICY:
            raise ValueError(
                f"starttls must be one of {sorted(_FROM_OLD_POLICY)}, not {starttls!r}"
            )
        policy = _FROM_OLD_POLICY[starttls]
        warnings.warn(
            f"POP3(starttls={starttls!r}) is deprecated: use tls={policy!r}",
            DeprecationWarning,
            stacklevel=3,
        )
        return policy
    if tls is None:
        return "if-offered"
    if tls == "implicit":
        raise ValueError('tls="implicit" is POP3S: use POP3_SSL (POP3 upgrades with STLS)')
    if tls not in TLS_POLICIES:
        raise ValueError(f"tls must be one of {sorted(TLS_POLICIES - {'implicit'})}, not {tls!r}")
    return tls


def pinned_policy(policy: TLSPolicy, *, given: bool) -> TLSPolicy:
    """The TLS policy of a client with a pinned certificate: TLS is required.

    Unless ``given`` (the caller chose a policy), "starttls"; a policy that
    lets the session go on in the clear ("if-offered", "none") is refused.
    """
    if not given:
        return "starttls"
    if policy in ("if-offered", "none"):
        raise ValueError(
            f"tls={policy!r} may go on without TLS, and then tls_fingerprint would check"
            ' nothing: use tls="starttls" (or POP3_SSL)'
        )
    return policy


def check_options(
    *,
    timeout: float | None,
    max_line_length: int,
    max_message_size: int | None,
    max_listing_size: int | None,
    max_in_flight: int,
) -> None:
    """ValueError for an option out of range."""
    if timeout is not None and timeout <= 0:
        raise ValueError("timeout must be positive or None")
    if max_line_length < 512:
        raise ValueError("max_line_length must be at least 512 (RFC 2449 section 4)")
    for name, value in (
        ("max_message_size", max_message_size),
        ("max_listing_size", max_listing_size),
    ):
        if value is not None and value < 0:
            raise ValueError(f"{name} must be non-negative or None")
    if max_in_flight < 1:
        raise ValueError("max_in_flight must be at least 1")
