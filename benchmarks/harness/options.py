"""The options every rounds-based suite takes: rounds, warm-up, --quick, retries, the JSON file."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from .paths import RESULTS

__all__ = ["RoundDefaults", "add_round_options", "resolve_round_options", "wanted"]


@dataclass(frozen=True)
class RoundDefaults:
    """A suite's defaults: rounds and warm-up, full and ``--quick``; its JSON file names."""

    rounds: int
    quick_rounds: int
    results: str
    """The committed result's file name in benchmarks/results/."""
    partial_results: str
    """Where a --quick or partial run writes instead (git-ignored)."""
    warmup: int = 1
    quick_warmup: int = 1
    quick_help: str = "a smoke run: fewer rounds"


def add_round_options(
    parser: argparse.ArgumentParser,
    defaults: RoundDefaults,
    *,
    only: str | None = None,
    strict: bool = False,
) -> None:
    """Add --rounds, --warmup, --quick, --retries and --json to ``parser``.

    With ``only`` (examples of workload names, for the help), also
    ``--only TEXT`` (see :func:`wanted`); with ``strict``, ``--strict``
    (exit 1 when a target fails).
    """
    parser.add_argument(
        "--rounds",
        type=int,
        default=None,
        help=f"measured rounds ({defaults.rounds}; --quick {defaults.quick_rounds})",
    )
    parser.add_argument(
        "--warmup",
        type=int,
        default=None,
        help=f"untimed rounds first ({defaults.warmup}; --quick {defaults.quick_warmup})",
    )
    parser.add_argument("--quick", action="store_true", help=defaults.quick_help)
    parser.add_argument(
        "--retries",
        type=int,
        default=None,
        help="noisy rounds run again, at most this many per workload (as many as --rounds)",
    )
    parser.add_argument("--json", type=Path, default=None, help="where the JSON result goes")
    if only is not None:
        parser.add_argument(
            "--only",
            action="append",
            metavar="TEXT",
            help=f"run only workloads whose name contains TEXT (repeatable; e.g. {only})",
        )
    if strict:
        parser.add_argument("--strict", action="store_true", help="exit 1 when a target fails")


def resolve_round_options(
    parser: argparse.ArgumentParser,
    options: argparse.Namespace,
    defaults: RoundDefaults,
    *,
    partial: bool = False,
) -> None:
    """Fill in the defaults (``--quick`` ones when asked) and check the values.

    A ``--quick`` or ``partial`` run writes ``defaults.partial_results``, so
    that it never replaces the committed result.
    """
    quick = options.quick
    if options.rounds is None:
        options.rounds = defaults.quick_rounds if quick else defaults.rounds
    if options.warmup is None:
        options.warmup = defaults.quick_warmup if quick else defaults.warmup
    name = defaults.partial_results if quick or partial else defaults.results
    options.json = options.json or RESULTS / name
    if options.rounds < 1 or options.warmup < 0:
        parser.error("--rounds must be at least 1, --warmup at least 0")
    if options.retries is not None and options.retries < 0:
        parser.error("--retries must be at least 0")


def wanted(options: argparse.Namespace, name: str) -> bool:
    """Whether ``--only`` (case-insensitive substrings of workload names) lets ``name`` run."""
    only: list[str] | None = getattr(options, "only", None)
    return only is None or any(text.lower() in name.lower() for text in only)
