"""``python -m benchmarks [SUITE] [options]``: run one suite, print its report.

SUITE is ``throughput`` (the default: ``python -m benchmarks`` alone runs it),
``fetch``, ``scale``, ``login`` or ``distance``; ``python -m benchmarks SUITE --help``
lists a suite's options. See benchmarks/README.md.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Sequence

SUITES = {
    "throughput": "benchmarks.suites.throughput.main",
    "fetch": "benchmarks.suites.fetch.main",
    "scale": "benchmarks.suites.scale.main",
    "login": "benchmarks.suites.login",
    "distance": "benchmarks.suites.distance.main",
}
"""Suite name -> the module whose ``main(argv)`` runs it."""


def main(argv: Sequence[str] | None = None) -> int:
    """Pick the suite named first (throughput when none is), run it with the rest."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    name = "throughput"
    if arguments and not arguments[0].startswith("-"):
        name = arguments.pop(0)
    if name not in SUITES:
        print(f"unknown suite {name!r}; the suites: {', '.join(SUITES)}", file=sys.stderr)
        return 2
    run: Callable[[Sequence[str]], int] = importlib.import_module(SUITES[name]).main
    return run(arguments)


if __name__ == "__main__":
    sys.exit(main())
