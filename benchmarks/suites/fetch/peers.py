"""The fetch suite's clients by name, the peers' packages, and aiopop fetch's targets."""

from __future__ import annotations

PASSWORD_ENV = "AIOPOP_BENCH_PASSWORD"
KIB = 1024
MIB = 1024 * 1024

AIOPOP = "aiopop fetch"
INPROC = "aiopop in-process"
MPOP = "mpop"
FETCHMAIL = "fetchmail"
GETMAIL = "getmail6"
CEILING = "raw socket"
CLIENTS = (AIOPOP, INPROC, MPOP, FETCHMAIL, GETMAIL, CEILING)
FLAKY = frozenset({GETMAIL})
"""Clients whose failed runs are recorded as aborts instead of stopping the benchmark."""

TARGETS = (
    (GETMAIL, 1.0, "faster than getmail6", ">"),
    (FETCHMAIL, 1.0, "faster than fetchmail", ">"),
    (MPOP, 1.0, "at least 1.0x mpop", ">="),
    (CEILING, 0.8, "at least 0.8x the raw socket ceiling", ">="),
)
"""aiopop fetch's targets: (reference, minimum of reference time / aiopop time, words, test)."""

PEER_PACKAGES = {MPOP: "mpop", FETCHMAIL: "fetchmail", GETMAIL: "getmail6"}
PEER_PROGRAMS = {MPOP: "mpop", FETCHMAIL: "fetchmail", GETMAIL: "getmail"}
