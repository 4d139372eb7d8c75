"""The distance suite's medians, physical limits, targets, report and JSON."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from benchmarks.harness.ratios import median_or_nan, round_ratios
from benchmarks.harness.report import noise_lines
from benchmarks.harness.rounds import Rounds
from benchmarks.suites.fetch.peers import MPOP
from benchmarks.suites.fetch.runs import FetchResult, Run

from .bench import AIOPOP, LIBRARY, LISTS, NEW_ONLY, POPLIB

__all__ = ["ROUND_TRIPS", "check_summary", "fetch_summary", "new_only_summary", "print_report"]

ROUND_TRIPS = 6
"""Round trips a pipelined fetch needs: connect and greeting, USER, PASS, CAPA, the RETRs, QUIT."""
TARGET_RTT = 50.0
LIMIT_FACTOR = 1.5
VS_MPOP = 1.0
CHECK_VS_POPLIB = 10.0
CHECK_VS_BARE = 0.9
NEW_ONLY_FACTOR = 2.0
NEW_ONLY_RSS_MIB = 64.0


def _scaled(run: Run, messages: int) -> float:
    """A run's seconds scaled to ``messages`` (serial clients fetch fewer)."""
    return run.seconds / max(run.delivered, 1) * messages


def _verdict(
    name: str, value: float, minimum: float | None, maximum: float | None
) -> dict[str, Any]:
    ok = not math.isnan(value)
    if minimum is not None:
        ok = ok and value >= minimum
    if maximum is not None:
        ok = ok and value <= maximum
    return {"target": name, "value": value, "status": "PASS" if ok else "FAIL"}


def fetch_summary(fetches: Sequence[dict[str, Any]], messages: int) -> list[dict[str, Any]]:
    """Per distance: each client's medians (scaled to ``messages``), the limits, the targets."""
    summaries = []
    loopback: dict[str, float] = {}
    for fetch in fetches:
        result: FetchResult = fetch["result"]
        rtt = fetch["rtt_ms"]
        clients: dict[str, Any] = {}
        for client, every in result.runs.items():
            runs = [run for run in every if run.ok]  # getmail6 may abort (see peers.md)
            scaled = [_scaled(run, messages) for run in runs]
            clients[client] = {
                "runs_ok": f"{len(runs)}/{len(every)}",
                "messages_fetched": runs[0].delivered if runs else 0,
                "scaled_seconds_median": median_or_nan(scaled),
                "seconds_median": median_or_nan([run.seconds for run in runs]),
                "ms_per_message_median": median_or_nan(
                    [run.seconds / max(run.delivered, 1) * 1000 for run in runs]
                ),
                "peak_rss_mib_median": median_or_nan([run.peak_rss_mib for run in runs]),
                "cpu_seconds_median": median_or_nan([run.cpu_seconds for run in runs]),
                "scaled": bool(runs) and runs[0].delivered != messages,
                "runs": [asdict(run) for run in every],
            }
        if rtt == 0:
            loopback = {c: v["scaled_seconds_median"] for c, v in clients.items()}
        summaries.append(
            {
                "rtt_ms": rtt,
                "messages": messages,
                "serial_messages": fetch["serial_messages"],
                "clients": clients,
                "rounds": result.rounds.to_json(),
                "noise": result.rounds.noise_line(f"fetch@{rtt:g}ms"),
                "_result": result,
            }
        )
    for summary in summaries:
        rtt = summary["rtt_ms"]
        result = summary.pop("_result")
        clients = summary["clients"]
        limits = {
            client: ROUND_TRIPS * rtt / 1000 + loopback[client]
            for client in (LIBRARY, AIOPOP)
            if client in loopback and client in clients
        }
        summary["physical_limit_seconds"] = limits
        summary["physical_limit_rule"] = (
            f"{ROUND_TRIPS} round trips x RTT + the client's own 0 ms median in this run"
        )

        def ratio(reference: str, client: str, result: FetchResult = result) -> float:
            runs = result.runs
            if reference not in runs or client not in runs:
                return float("nan")
            pairs = [
                (_scaled(ref, messages), _scaled(mine, messages))
                for ref, mine in zip(runs[reference], runs[client], strict=True)
                if ref.ok and mine.ok
            ]
            return median_or_nan(round_ratios([p[0] for p in pairs], [p[1] for p in pairs]))

        summary["ratios"] = {
            f"{LIBRARY} vs {POPLIB}": ratio(POPLIB, LIBRARY),
            f"{AIOPOP} vs {POPLIB}": ratio(POPLIB, AIOPOP),
            f"{AIOPOP} vs {MPOP}": ratio(MPOP, AIOPOP),
            f"{LIBRARY} vs {MPOP}": ratio(MPOP, LIBRARY),
        }
        targets = []
        if rtt == TARGET_RTT:
            if LIBRARY in clients:
                library = clients[LIBRARY]["scaled_seconds_median"]
                limit = limits.get(LIBRARY, float("nan"))
                targets.append(
                    _verdict(
                        f"{LIBRARY} within {LIMIT_FACTOR:g}x of its physical limit "
                        f"(seconds / limit, limit {limit:.3f} s)",
                        library / limit,
                        None,
                        LIMIT_FACTOR,
                    )
                )
            if AIOPOP in clients and MPOP in clients:
                targets.append(
                    _verdict(
                        f"{AIOPOP} at least {VS_MPOP:g}x mpop",
                        summary["ratios"][f"{AIOPOP} vs {MPOP}"],
                        VS_MPOP,
                        None,
                    )
                )
        summary["targets"] = targets
    return summaries


def check_summary(rounds: Rounds[dict[str, Any]], rtt: float, mailboxes: int) -> dict[str, Any]:
    runs = rounds.runs

    def seconds(name: str) -> list[float]:
        return [float(seen["seconds"]) for seen in runs[name]]

    vs_poplib = median_or_nan(round_ratios(seconds("poplib-32-threads"), seconds("check_many")))
    bare_vs_poplib = median_or_nan(
        round_ratios(seconds("poplib-32-threads"), seconds("bare-asyncio"))
    )
    vs_bare = median_or_nan(round_ratios(seconds("bare-asyncio"), seconds("check_many")))
    if vs_poplib >= CHECK_VS_POPLIB or bare_vs_poplib >= CHECK_VS_POPLIB:
        verdict = _verdict(
            f"check_many at least {CHECK_VS_POPLIB:g}x poplib in 32 threads",
            vs_poplib,
            CHECK_VS_POPLIB,
            None,
        )
    else:
        verdict = _verdict(
            f"check_many at least {CHECK_VS_BARE:g}x the bare asyncio loop (the loop itself "
            f"is {bare_vs_poplib:.1f}x poplib, below {CHECK_VS_POPLIB:g}x)",
            vs_bare,
            CHECK_VS_BARE,
            None,
        )
    return {
        "rtt_ms": rtt,
        "mailboxes": mailboxes,
        "medians": {name: median_or_nan(seconds(name)) for name in runs},
        "ratios": {
            "check_many vs poplib-32-threads": vs_poplib,
            "bare-asyncio vs poplib-32-threads": bare_vs_poplib,
            "check_many vs bare-asyncio": vs_bare,
        },
        "targets": [verdict],
        "runs": runs,
        "rounds": rounds.to_json(),
        "noise": rounds.noise_line(f"check@{rtt:g}ms"),
    }


def new_only_summary(news: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    summaries = []
    for new in news:
        result: FetchResult = new["result"]
        rtt = new["rtt_ms"]
        runs = result.runs
        command = runs.get(NEW_ONLY, [])
        lists = runs.get(LISTS, [])
        times = [run.seconds for run in command]
        replies = [run.seconds for run in lists]
        processes = [run.process_seconds for run in lists]
        rss = median_or_nan([run.peak_rss_mib for run in command])
        vs_replies = median_or_nan([a / b for a, b in zip(times, replies, strict=True)])
        vs_process = median_or_nan([a / b for a, b in zip(times, processes, strict=True)])
        targets = [
            _verdict(f"{NEW_ONLY}: peak RSS at most {NEW_ONLY_RSS_MIB:g} MiB", rss, None, 64.0)
        ]
        if rtt == 0:
            targets.insert(
                0,
                _verdict(
                    f"{NEW_ONLY} at most {NEW_ONLY_FACTOR:g}x its UIDL and LIST replies alone "
                    "(command seconds / replies' seconds)",
                    vs_replies,
                    None,
                    NEW_ONLY_FACTOR,
                ),
            )
        summaries.append(
            {
                "rtt_ms": rtt,
                "messages": new["messages"],
                "new": new["new"],
                "command_seconds_median": median_or_nan(times),
                "replies_seconds_median": median_or_nan(replies),
                "bare_process_seconds_median": median_or_nan(processes),
                "peak_rss_mib_median": rss,
                "command_vs_replies": vs_replies,
                "command_vs_bare_process": vs_process,
                "targets": targets,
                "runs": {client: [asdict(run) for run in found] for client, found in runs.items()},
                "rounds": result.rounds.to_json(),
                "noise": result.rounds.noise_line(f"new-only@{rtt:g}ms"),
            }
        )
    return summaries


def _s(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.3f} s"


def print_report(
    fetches: Sequence[dict[str, Any]],
    check: dict[str, Any] | None,
    news: Sequence[dict[str, Any]],
    info: dict[str, Any],
) -> None:
    print("aiopop at a distance (through the delay proxy)")
    print(info["settings_line"])
    print(info["machine_line"])
    for rtt, found in info["proxy"].items():
        ok = found["rtt_ok"] and found["throughput_ok"]
        print(
            f"proxy self-check at {rtt} ms: echo RTT {found['rtt_measured_ms']:.1f} ms, "
            f"10 MB {found['proxied_seconds']:.3f} s beyond the RTT (direct "
            f"{found['direct_seconds']:.3f} s): {'ok' if ok else 'OFF'}"
        )
    verdicts: list[dict[str, Any]] = []
    for summary in fetches:
        n = summary["messages"]
        print(f"\nfetch {n} x 8 KB at {summary['rtt_ms']:g} ms RTT (seconds for {n} messages)")
        for client, found in summary["clients"].items():
            note = ""
            if found["scaled"]:
                note = f"  (scaled from {found['messages_fetched']} messages)"
            ok, total = found["runs_ok"].split("/")
            if ok != total:
                note += f"  ({found['runs_ok']} runs ok)"
            print(
                f"  {client:<20} {_s(found['scaled_seconds_median']):>10}"
                f"  {found['ms_per_message_median']:8.2f} ms/message"
                f"  {found['peak_rss_mib_median']:6.1f} MiB{note}"
            )
        for client, limit in summary["physical_limit_seconds"].items():
            print(f"  physical limit of {client}: {limit:.3f} s ({summary['physical_limit_rule']})")
        for name, value in summary["ratios"].items():
            if not math.isnan(value):
                print(f"  {name}: {value:.2f}x")
        verdicts += summary["targets"]
    if check is not None:
        print(f"\ncheck {check['mailboxes']} accounts at {check['rtt_ms']:g} ms RTT")
        for name, value in check["medians"].items():
            print(f"  {name:<20} {_s(value):>10}")
        for name, value in check["ratios"].items():
            print(f"  {name}: {value:.2f}x")
        verdicts += check["targets"]
    for summary in news:
        print(
            f"\nnew-only: {summary['messages']} messages, {summary['new']} new, at "
            f"{summary['rtt_ms']:g} ms RTT"
        )
        print(
            f"  {NEW_ONLY}: {_s(summary['command_seconds_median'])}, peak RSS "
            f"{summary['peak_rss_mib_median']:.1f} MiB; UIDL+LIST replies "
            f"{_s(summary['replies_seconds_median'])} (the bare process "
            f"{_s(summary['bare_process_seconds_median'])}); "
            f"{summary['command_vs_replies']:.2f}x the replies, "
            f"{summary['command_vs_bare_process']:.2f}x the bare process"
        )
        verdicts += summary["targets"]
    print()
    noise = [s["noise"] for s in fetches] + [s["noise"] for s in news]
    if check is not None:
        noise.append(check["noise"])
    for line in noise_lines(noise):
        print(line)
    for verdict in verdicts:
        print(f"{verdict['status']}: {verdict['target']}: {verdict['value']:.2f}")
    print(f"elapsed {info['elapsed']:.0f} s")
