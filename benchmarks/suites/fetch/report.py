"""The fetch suite's numbers (medians, ratios, verdicts, aiopop's parts) and its report."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from benchmarks.harness.ratios import median_or_nan as _median
from benchmarks.harness.ratios import round_ratios as ratios_of

from .maildir import AccountSet
from .peers import AIOPOP, INPROC, MANY_TARGETS, TARGETS, WATCH
from .runs import FetchResult

COMMANDS = (AIOPOP, INPROC, WATCH)
"""aiopop's clients: each compared with every other client of its workload."""

# -- numbers -----------------------------------------------------------------------------------


def summary(workload: FetchResult, client: str) -> dict[str, Any]:
    """Medians over ``client``'s successful runs."""
    runs = [run for run in workload.runs[client] if run.ok]
    seconds = _median([run.seconds for run in runs])
    box = workload.mailbox
    return {
        "runs_ok": len(runs),
        "runs": len(workload.runs[client]),
        "seconds": seconds,
        "process_seconds": _median([run.process_seconds for run in runs]),
        "messages_per_s": box.count / seconds,
        "mb_per_s": box.octets / 1e6 / seconds,
        "cpu_seconds": _median([run.cpu_seconds for run in runs]),
        "peak_rss_mib": _median([run.peak_rss_mib for run in runs]),
        "header_octets_per_message": _median([run.header_octets / box.count for run in runs]),
    }


def round_ratios(workload: FetchResult, reference: str, client: str = AIOPOP) -> list[float]:
    """reference's time / client's time in each round where both succeeded."""
    pairs = zip(workload.runs[reference], workload.runs[client], strict=True)
    both = [(ref.seconds, mine.seconds) for ref, mine in pairs if ref.ok and mine.ok]
    return ratios_of([ref for ref, _ in both], [mine for _, mine in both])


def targets(workload: FetchResult) -> list[tuple[str, str, float, str, str]]:
    """The workload's targets: (client, reference, minimum, words, test)."""
    if isinstance(workload.mailbox, AccountSet):
        return list(MANY_TARGETS)
    return [(AIOPOP, *target) for target in TARGETS]


def verdicts(workload: FetchResult) -> list[dict[str, Any]]:
    """PASS, FAIL or SKIP for each of aiopop's targets on this workload."""
    found: list[dict[str, Any]] = []
    key = workload.mailbox.key
    for client, reference, minimum, words, test in targets(workload):
        title = f"{key}: {client} {words}"
        if client in workload.unavailable:
            text = f"{title}: {workload.unavailable[client]}"
            found.append({"status": "SKIP", "text": text, "median": None})
            continue
        if reference not in workload.runs or client not in workload.runs:
            found.append({"status": "SKIP", "text": f"{title}: not measured", "median": None})
            continue
        ratios = round_ratios(workload, reference, client)
        if not ratios:
            found.append({"status": "SKIP", "text": f"{title}: no round", "median": None})
            continue
        value = statistics.median(ratios)
        passed = value > minimum if test == ">" else value >= minimum
        text = (
            f"{title}: {reference} time / {client} time {value:.2f}x "
            f"(target {test} {minimum:g}x; rounds {min(ratios):.2f} to {max(ratios):.2f})"
        )
        found.append(
            {
                "status": "PASS" if passed else "FAIL",
                "workload": key,
                "client": client,
                "reference": reference,
                "target": f"{test} {minimum:g}",
                "median": value,
                "rounds": ratios,
                "text": text,
            }
        )
    return found


def parts(workload: FetchResult) -> dict[str, float]:
    """Where aiopop's time goes: medians of the in-process parts, and the command's overhead."""
    if INPROC not in workload.runs:
        return {}
    runs = [run for run in workload.runs[INPROC] if run.ok]
    found = {name: _median([run.parts[name] for run in runs]) for name in runs[0].parts}
    found["process"] = _median([run.process_seconds for run in runs])
    found["interpreter_and_exit"] = _median(
        [run.process_seconds - sum(run.parts.values()) for run in runs]
    )
    if AIOPOP in workload.runs:
        pairs = zip(workload.runs[AIOPOP], workload.runs[INPROC], strict=True)
        outside = [cli.seconds - inner.seconds for cli, inner in pairs if cli.ok and inner.ok]
        found["command_outside_fetch_to_maildir"] = _median(outside)
    return found


# -- the report --------------------------------------------------------------------------------


def _header(width: int) -> str:
    return (
        f"{'client':<19}{'workload':<{width}}{'median s':>10}{'messages/s':>12}{'MB/s':>8}"
        f"{'CPU s':>8}{'peak RSS MB':>13}{'runs ok':>9}"
    )


def print_report(
    workloads: Sequence[FetchResult],
    info: dict[str, Any],
    found: Sequence[dict[str, Any]],
    startup: dict[str, Any] | None,
) -> None:
    """The table, the ratios, aiopop's parts, the load and the verdicts, on stdout."""
    print(f"aiopop fetch benchmark: {info['settings_line']}")
    print(info["machine_line"])
    print(info["tools_line"])
    for workload in workloads:
        if isinstance(workload.mailbox, AccountSet):
            print(
                f"{workload.mailbox.key}: {len(workload.mailbox.accounts)} accounts, "
                "each into a Maildir of its own, all in one process per client "
                "(the table's counts are for all of them)"
            )
    print()
    width = max([10, *(len(workload.mailbox.key) + 2 for workload in workloads)])
    header = _header(width)
    print(header)
    print("-" * len(header))
    for number, workload in enumerate(workloads):
        if number:
            print()
        key = workload.mailbox.key
        for client in workload.runs:
            s = summary(workload, client)
            if not s["runs_ok"]:
                print(f"{client:<19}{key:<{width}}  no successful run")
                continue
            print(
                f"{client:<19}{key:<{width}}{s['seconds']:>10.3f}"
                f"{s['messages_per_s']:>12.0f}{s['mb_per_s']:>8.1f}{s['cpu_seconds']:>8.3f}"
                f"{s['peak_rss_mib']:>13.1f}{s['runs_ok']:>5}/{s['runs']}"
            )
        for client, why in workload.unavailable.items():
            print(f"{client:<19}{key:<{width}}  {why}")
    print()
    print("aiopop's time against each other client's, median over rounds of (the other's")
    print("time / aiopop's time); above 1: aiopop is faster. `aiopop in-process` counts only")
    print("fetch_to_maildir (no start-up, login or QUIT): what the library does, not the command")
    for workload in workloads:
        for client in COMMANDS:
            for reference in workload.runs:
                if client not in workload.runs or reference in COMMANDS:
                    continue
                ratios = round_ratios(workload, reference, client)
                if ratios:
                    print(
                        f"  {workload.mailbox.key:<{width}}{client:<19}against {reference:<12}"
                        f"{statistics.median(ratios):>7.2f}x   "
                        f"(rounds {min(ratios):.2f} to {max(ratios):.2f})"
                    )
    all_parts = {workload.mailbox.key: parts(workload) for workload in workloads}
    if any(all_parts.values()):
        print()
        print("where aiopop's time goes (medians; the in-process run's parts, in seconds)")
    for key, found_parts in all_parts.items():
        if found_parts:
            print(
                f"  {key:<{width}} "
                + ", ".join(f"{name} {value:.3f}" for name, value in found_parts.items())
            )
    print()
    for workload in workloads:
        log = workload.rounds.log
        loads = [r["load_1min_at_start"] for r in log]
        probes = [r["create_probe_ms"] for r in log]
        shares = [r["others_cpu_share"] or 0.0 for r in log]
        print(
            f"{workload.mailbox.key}: load (1 min) {min(loads):.2f} to {max(loads):.2f}; "
            f"other programs' CPU {statistics.median(shares):.0%} of a CPU (median round); "
            f"{workload.rounds.repeated} noisy rounds run again, "
            f"{workload.rounds.noisy_kept} kept; "
            f"file creation {statistics.median(probes):.3f} ms (median round)"
        )
        for run in workload.aborted:
            print(f"  aborted: {run.client} round {run.round}: {run.problem}")
    print()
    if startup is not None:
        print(
            "start-up of the `aiopop` command: interpreter start and exit "
            f"{startup['interpreter_start_and_exit']:.3f} s (python -c pass); imports "
            f"{startup['imports_of_the_command']:.3f} s (-X importtime, cumulative):"
        )
        print("  " + ", ".join(f"{k} {v:.3f}" for k, v in startup["import_of"].items()))
    for workload in workloads:
        if workload.profile is None:
            continue
        profile = workload.profile
        print(
            f"{workload.mailbox.key}: aiopop's steps in one more in-process run "
            f"(fetch_to_maildir {profile['fetch_to_maildir']:.3f} s; seconds, calls):"
        )
        for label, (seconds, count) in profile["steps"].items():
            print(f"  {label:<50}{seconds:>8.3f}{count:>7}")
        if "pyinstrument_file" in profile:
            print(f"  pyinstrument's profile: {profile['pyinstrument_file']}")
    if startup is not None or any(w.profile for w in workloads):
        print()
    for verdict in found:
        print(f"{verdict['status']:<4}  {verdict['text']}")
    failed = sum(v["status"] == "FAIL" for v in found)
    skipped = sum(v["status"] == "SKIP" for v in found)
    print()
    print(
        f"targets: {len(found) - failed - skipped} passed, {failed} failed, {skipped} skipped; "
        f"total run time {info['elapsed']:.0f} s"
    )


def to_json(workload: FetchResult) -> dict[str, Any]:
    """A workload's mailbox, summaries, ratios, parts, rounds and every run.

    The many-account workload's ``mailbox`` counts all its accounts and
    lists each; ``watch_ratios`` are ``aiopop watch``'s against the other
    clients (but ``aiopop fetch``, whose ratio against it is in ``ratios``);
    ``unavailable`` names the clients that could not run, and why.
    """
    box = workload.mailbox
    mailbox: dict[str, Any] = {"count": box.count, "size": box.size, "octets": box.octets}
    if isinstance(box, AccountSet):
        mailbox["accounts"] = [
            {"user": account.user, "count": account.count, "octets": account.octets}
            for account in box.accounts
        ]
    return {
        "mailbox": mailbox,
        "summaries": {client: summary(workload, client) for client in workload.runs},
        "unavailable": workload.unavailable,
        "ratios": {
            reference: round_ratios(workload, reference)
            for reference in workload.runs
            if reference != AIOPOP and AIOPOP in workload.runs
        },
        "in_process_ratios": {
            reference: round_ratios(workload, reference, INPROC)
            for reference in workload.runs
            if reference not in (AIOPOP, INPROC) and INPROC in workload.runs
        },
        "watch_ratios": {
            reference: round_ratios(workload, reference, WATCH)
            for reference in workload.runs
            if reference not in COMMANDS and WATCH in workload.runs
        },
        "aiopop_parts": parts(workload),
        **workload.rounds.to_json(),
        "aborted": [asdict(run) for run in workload.aborted],
        "aiopop_steps": workload.profile,
        "runs": {client: [asdict(run) for run in runs] for client, runs in workload.runs.items()},
    }
