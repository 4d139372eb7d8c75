"""The fetch suite's clients by name, the peers' packages, and aiopop's targets."""

from __future__ import annotations

PASSWORD_ENV = "AIOPOP_BENCH_PASSWORD"
KIB = 1024
MIB = 1024 * 1024

AIOPOP = "aiopop fetch"
INPROC = "aiopop in-process"
WATCH = "aiopop watch"
MPOP = "mpop"
FETCHMAIL = "fetchmail"
GETMAIL = "getmail6"
CEILING = "raw socket"
CLIENTS = (AIOPOP, INPROC, WATCH, MPOP, FETCHMAIL, GETMAIL, CEILING)
SINGLE_ONLY = frozenset({INPROC})
"""Clients of the one-mailbox workloads only (the in-process run fetches one account)."""
MANY_ONLY = frozenset({WATCH})
"""Clients of the many-account workload only (``aiopop watch`` reads an accounts file)."""
FLAKY = frozenset({GETMAIL})
"""Clients whose failed runs are recorded as aborts instead of stopping the benchmark."""

TARGETS = (
    (GETMAIL, 1.0, "faster than getmail6", ">"),
    (FETCHMAIL, 1.0, "faster than fetchmail", ">"),
    (MPOP, 1.0, "at least 1.0x mpop", ">="),
    (CEILING, 0.8, "at least 0.8x the raw socket ceiling", ">="),
)
"""aiopop fetch's targets: (reference, minimum of reference time / aiopop time, words, test)."""

MANY_TARGETS = tuple(
    (client, reference, minimum, words, test)
    for client in (AIOPOP, WATCH)
    for reference, minimum, words, test in TARGETS
    if reference != CEILING
)
"""The many-account workload's targets, for both commands: (client, reference, minimum, words,
test). The raw socket's ratio is reported there, without a target."""

PEER_PACKAGES = {MPOP: "mpop", FETCHMAIL: "fetchmail", GETMAIL: "getmail6"}
PEER_PROGRAMS = {MPOP: "mpop", FETCHMAIL: "fetchmail", GETMAIL: "getmail"}
