"""The keys of an ``[[account]]`` table of an accounts file, and the type each takes.

:func:`aiopop.load_accounts` checks every key of a table against
:data:`KEY_TYPES` before it builds anything: the account's own keys, and
those that ``aiopop fetch`` and ``aiopop watch`` read
(:mod:`aiopop._targets`). Each checker returns "" for a good value, else
what the value must be, for the message naming the file, the account and
the key.
"""

from __future__ import annotations

import math
import re
import shlex
from collections.abc import Callable, Sequence

from ._parse import parse_fingerprint
from ._proxy import parse_proxy
from ._types import TLS_POLICIES

__all__ = ["KEY_TYPES", "command_argv", "parse_size"]


def command_argv(argv: object) -> list[str] | None:
    """A command as an argv list: a string split by :func:`shlex.split`; None if unusable."""
    if isinstance(argv, str):
        try:
            command = shlex.split(argv)
        except ValueError:  # an unclosed quote, a lone backslash at the end
            return None
    elif isinstance(argv, Sequence) and all(isinstance(arg, str) for arg in argv):
        command = list(argv)
    else:
        return None
    return command if command and command[0] else None


def _text(value: object) -> str:
    return "" if isinstance(value, str) and value.strip() else f"a non-empty string, not {value!r}"


def _port(value: object) -> str:
    if isinstance(value, int) and not isinstance(value, bool) and 0 < value < 65536:
        return ""
    return f"an integer from 1 to 65535, not {value!r}"


def _positive(value: object) -> str:
    if (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and value > 0
        and math.isfinite(value)
    ):
        return ""
    return f"a positive number of seconds, not {value!r}"


_SIZE = re.compile(r"(-?[0-9]+)([KMG]?)", re.IGNORECASE)
_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30}


def parse_size(value: object) -> int | None:
    """A size in octets: an integer, or a string with an optional K, M or G (powers of
    1024), ``"150M"``; 0 means no limit (None). Raises ValueError for anything else."""
    if isinstance(value, bool):
        raise ValueError(f"not a size: {value!r}")
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and (match := _SIZE.fullmatch(value.strip())):
        number = int(match[1]) * _UNITS[match[2].upper()]
    else:
        raise ValueError(f"not a size: {value!r} (say 500000, 100K or 150M)")
    if number < 0:
        raise ValueError(f"a size cannot be negative: {value!r}")
    return number or None


def _size(value: object) -> str:
    try:
        parse_size(value)
    except ValueError:
        return f'a size in octets, or a string such as "100K" or "150M", not {value!r}'
    return ""


def _days(value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"a number of days, at least 0, not {value!r}"
    if value >= 0 and math.isfinite(value):
        return ""
    return f"a number of days, at least 0, not {value!r}"


def _flag(value: object) -> str:
    return "" if isinstance(value, bool) else f"true or false, not {value!r}"


def _true(value: object) -> str:
    return "" if value is True else f"true (the only value it takes), not {value!r}"


def _tls(value: object) -> str:
    if isinstance(value, str) and value in TLS_POLICIES:
        return ""
    return f"one of {', '.join(sorted(TLS_POLICIES))}, not {value!r}"


def _fingerprint(value: object) -> str:
    try:
        parse_fingerprint(value)
    except (TypeError, ValueError):
        return (
            'a SHA-256 certificate fingerprint, "SHA256:AB:CD:..." (64 hex digits, colons'
            f" optional), not {value!r}"
        )
    return ""


def _proxy(value: object) -> str:
    # The value is not shown: a proxy URL may hold a password.
    try:
        parse_proxy(value)
    except ValueError as exc:
        return f"a proxy URL such as socks5://127.0.0.1:1080 ({exc})"
    return ""


def _command(value: object) -> str:
    # The value is not shown: a command line may hold more than its author meant to share.
    if command_argv(value) is not None:
        return ""
    if isinstance(value, str):
        return "a command line (split as a shell would split it), not an empty or unclosed one"
    return "a command line or a non-empty array of strings"


KEY_TYPES: dict[str, Callable[[object], str]] = {
    "name": _text,
    "url": _text,
    "host": _text,
    "port": _port,
    "user": _text,
    "tls": _tls,
    "tls_fingerprint": _fingerprint,
    "auth": _text,
    "allow_cleartext": _flag,
    "timeout": _positive,
    "state_key": _text,
    "proxy": _proxy,
    # Where and how aiopop fetch ACCOUNTS and aiopop watch ACCOUNTS deliver (read by
    # aiopop._targets); no part of an Account, and ignored here.
    "maildir": _text,
    "command": _command,
    "command_time_limit": _positive,
    "state": _text,
    "delete": _flag,
    "delete_after_days": _days,
    "skip_larger_than": _size,
    "delete_larger_than": _size,
    "filter": _command,
    "password_env": _text,
    "password_command": _command,
    "keyring": _true,
    "oauth2_token_env": _text,
    "oauth2_token_command": _command,
}
