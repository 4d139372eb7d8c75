"""Summarise a mutmut run per file: killed, survived, the score, and the survivors' names.

Reads ``mutants/**/*.py.meta`` (written by ``mutmut run``) and
``scripts/mutation-equivalent*.txt``: mutants that cannot change behaviour,
one per line as ``<mutant name>  # why``. Those are left out of the score,
which is killed / (all - equivalent), timeouts counting as killed.

    .venv/bin/python scripts/mutation_report.py [--survivors]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EQUIVALENT = sorted((ROOT / "scripts").glob("mutation-equivalent*.txt"))
KILLED = {1: "killed", 3: "killed", 36: "timeout", 24: "timeout", -24: "timeout", 152: "timeout"}
KILLED.update({255: "timeout", 37: "killed"})
OTHER = {0: "survived", 5: "no tests", 33: "no tests", 34: "skipped", None: "not checked"}


def equivalent_mutants() -> dict[str, str]:
    """The mutants listed as equivalent, with the reason given for each."""
    found: dict[str, str] = {}
    for listing in EQUIVALENT:
        for line in listing.read_text().splitlines():
            name, _, why = line.partition("#")
            if name.strip():
                found[name.strip()] = why.strip()
    return found


def status(code: int | None) -> str:
    return KILLED.get(code) or OTHER.get(code, "suspicious") if code is not None else "not checked"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--survivors", action="store_true", help="list every surviving mutant")
    args = parser.parse_args(argv)
    metas = sorted((ROOT / "mutants").glob("**/*.py.meta"))
    if not metas:
        print("no mutmut results: run `bash scripts/mutation` first", file=sys.stderr)
        return 1
    equivalent = equivalent_mutants()
    columns = ("mutants", "equiv.", "killed", "surv.", "other", "score")
    print(f"{'file':<26} " + " ".join(f"{name:>7}" for name in columns))
    survivors: list[str] = []
    for meta in metas:
        codes: dict[str, int | None] = json.loads(meta.read_text())["exit_code_by_key"]
        counts: Counter[str] = Counter()
        for name, code in codes.items():
            if name in equivalent:
                counts["equivalent"] += 1
                continue
            kind = status(code)
            counts["killed" if kind in ("killed", "timeout") else kind] += 1
            if kind == "survived":
                survivors.append(name)
        total = len(codes) - counts["equivalent"]
        other = total - counts["killed"] - counts["survived"]
        score = counts["killed"] / total if total else 1.0
        name = str(meta.relative_to(ROOT / "mutants"))[: -len(".meta")]
        values = (len(codes), counts["equivalent"], counts["killed"], counts["survived"], other)
        print(f"{name:<26} " + " ".join(f"{value:>7}" for value in values) + f" {score:>7.1%}")
    if args.survivors:
        print("\nsurvivors (inspect one with `.venv/bin/mutmut show NAME`):")
        for name in survivors:
            print(" ", name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
