"""The workloads: which clients run against which mailbox, and what their ratios must reach."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

from benchmarks.harness.messages import REALISTIC_DOT_EVERY

from .mailboxes import Plan, ServedMailbox
from .spec import RunSpec

__all__ = [
    "CHART_SIZES",
    "KIB",
    "MIB",
    "PARSER_SHAPES",
    "Ratio",
    "RssLimit",
    "Workload",
    "chart_plans",
    "chart_workloads",
    "dovecot_plans",
    "dovecot_workloads",
    "parser_workloads",
    "popa3d_workload",
]

KIB = 1024
MIB = 1024 * 1024

SMALL = Plan("small", 2000, 8 * KIB)
LARGE = Plan("large", 5, 5 * MIB)
HUGE = Plan("huge", 1, 100 * MIB)
POPA3D_COUNT = 100
POPA3D_SIZE = 8 * KIB
PARSER_SIZE = 5 * MIB
PARSER_REPEAT = 5
"""A parser run takes milliseconds: each worker repeats it this often, the fastest counting."""
PARSER_SHAPES = {
    "no dot lines": 0,
    "realistic (1 line in 1000 starts with a dot)": REALISTIC_DOT_EVERY,
    "dense (every 10th line)": 10,
    "worst case (every line)": 1,
}
CHART_SIZES = (1 * KIB, 8 * KIB, 64 * KIB, 1 * MIB, 5 * MIB)
CHART_OCTETS = 16 * MIB
"""About this much mail per message size in the chart's mailboxes."""


@dataclass(frozen=True)
class Ratio:
    """``client``'s throughput over ``reference``'s: the reference's time / the client's time.

    Computed per round, reported as the median over rounds. ``minimum`` is
    the target, if any.
    """

    label: str
    client: str
    reference: str
    minimum: float | None = None


@dataclass(frozen=True)
class RssLimit:
    """``client``'s peak RSS growth over the span must stay within ``mib`` MiB in every round."""

    client: str
    mib: float


@dataclass(frozen=True)
class Workload:
    """One row group of the report: clients, in the order of their first round, and targets."""

    key: str
    title: str
    clients: dict[str, RunSpec]
    messages: int
    octets: int
    ratios: tuple[Ratio, ...] = ()
    rss_limits: tuple[RssLimit, ...] = ()
    size: int = 0
    """The size of each message, for the chart."""
    skipped: str | None = field(default=None, compare=False)


def dovecot_plans(wanted: Callable[[str], bool], *, chart: bool) -> list[Plan]:
    """The mailboxes that the wanted Dovecot workloads (and chart sizes, with ``chart``) need."""
    needs = {f"2000x8KB {p}": SMALL for p in ("POP3", "POP3S")}
    needs |= {f"5x5MB {p}": LARGE for p in ("POP3", "POP3S")}
    needs["1x100MB POP3"] = HUGE
    if chart:
        needs |= {_chart_key(plan.size): plan for plan in chart_plans()}
    plans: list[Plan] = []
    for key, plan in needs.items():
        if wanted(key) and plan not in plans:
            plans.append(plan)
    return plans


def _fetchers(mailbox: ServedMailbox, tls: bool) -> dict[str, RunSpec]:
    server = mailbox.tls if tls else mailbox.plain
    base = RunSpec(client="", count=mailbox.count, server=server, manifest=mailbox.manifest)
    return {name: replace(base, client=name) for name in ("aiopop", "poplib", "ceiling")}


def _fetch_ratios(speedup: float, fraction: float, tls: bool) -> tuple[Ratio, ...]:
    ceiling = "TLS ceiling" if tls else "ceiling"
    return (
        Ratio("aiopop speedup over poplib", "aiopop", "poplib", speedup),
        Ratio(f"aiopop as a fraction of the {ceiling}", "aiopop", "ceiling", fraction),
        # No target: how far above poplib anything could get against this server.
        Ratio(f"the {ceiling}'s speedup over poplib", "ceiling", "poplib"),
    )


def dovecot_workloads(mailboxes: dict[str, ServedMailbox], workdir: str) -> list[Workload]:
    """Workloads 1 to 3 (those whose mailbox is there): 2,000 x 8 KB, 5 x 5 MB, 1 x 100 MB."""
    workloads = []
    if SMALL.user in mailboxes:
        workloads += _small(mailboxes[SMALL.user])
    if LARGE.user in mailboxes:
        workloads += _large(mailboxes[LARGE.user])
    if HUGE.user in mailboxes:
        workloads.append(_huge(mailboxes[HUGE.user], workdir))
    return workloads


def _fetches(
    mailbox: ServedMailbox, plan: Plan, label: str, targets: dict[bool, tuple[float, float]]
) -> list[Workload]:
    """The plain and the POP3S workload of one mailbox; ``targets[tls]`` = (speedup, fraction)."""
    workloads = []
    for tls, protocol in ((False, "POP3"), (True, "POP3S")):
        speedup, fraction = targets[tls]
        workloads.append(
            Workload(
                key=f"{label.replace(' ', '').replace(',', '')} {protocol}",
                title=f"Dovecot {label}, {protocol}",
                clients=_fetchers(mailbox, tls),
                messages=mailbox.count,
                octets=mailbox.octets,
                ratios=_fetch_ratios(speedup, fraction, tls),
                size=plan.size,
            )
        )
    return workloads


def _small(small: ServedMailbox) -> list[Workload]:
    return _fetches(small, SMALL, "2,000 x 8 KB", {False: (5.0, 0.9), True: (4.0, 0.85)})


def _large(large: ServedMailbox) -> list[Workload]:
    return _fetches(large, LARGE, "5 x 5 MB", {False: (2.5, 0.9), True: (2.5, 0.9)})


def _huge(huge: ServedMailbox, workdir: str) -> Workload:
    base = RunSpec(client="", server=huge.plain, manifest=huge.manifest)
    return Workload(
        key="1x100MB POP3",
        title="Dovecot 1 x 100 MB, POP3, to a file / into memory",
        clients={
            "retr_to_file": replace(base, client="retr_to_file", directory=workdir),
            "retr": replace(base, client="retr"),
            # For comparison, no target: what the fsync costs.
            "retr_to_file nofsync": replace(
                base, client="retr_to_file", directory=workdir, fsync=False
            ),
        },
        messages=1,
        octets=huge.octets,
        ratios=(
            Ratio("retr_to_file throughput / retr() into memory", "retr_to_file", "retr", 0.8),
        ),
        rss_limits=(RssLimit("retr_to_file", 16.0),),
        size=HUGE.size,
    )


def popa3d_workload(mailbox: ServedMailbox | None, skipped: str | None = None) -> Workload:
    """Workload 4: popa3d, which neither pipelines nor corks (``None``: skipped, and why)."""
    clients: dict[str, RunSpec] = {}
    if mailbox is not None:
        base = RunSpec(
            client="", count=mailbox.count, server=mailbox.plain, manifest=mailbox.manifest
        )
        clients = {name: replace(base, client=name) for name in ("aiopop", "poplib")}
    return Workload(
        key=f"popa3d {POPA3D_COUNT}x8KB",
        title=f"popa3d {POPA3D_COUNT} x 8 KB, POP3 (no PIPELINING, no cork)",
        clients=clients,
        messages=POPA3D_COUNT,
        octets=mailbox.octets if mailbox is not None else POPA3D_COUNT * POPA3D_SIZE,
        ratios=(Ratio("aiopop speedup over poplib", "aiopop", "poplib", 10.0),),
        size=POPA3D_SIZE,
        skipped=skipped,
    )


def parser_workloads() -> list[Workload]:
    """Workload 5: the parser alone on a 5 MB message, for each shape of dot lines."""
    workloads = []
    for shape, dot_every in PARSER_SHAPES.items():
        label = f"1/{dot_every}" if dot_every else "no dots"
        base = RunSpec(client="", size=PARSER_SIZE, dot_every=dot_every, repeat=PARSER_REPEAT)
        target = 1.0 if dot_every == REALISTIC_DOT_EVERY else None
        workloads.append(
            Workload(
                key=f"parser {label}",
                title=f"parser, 5 MB, {shape}",
                clients={
                    name: replace(base, client=name) for name in ("aiopop-parser", "find+replace")
                },
                messages=1,
                octets=PARSER_SIZE,
                ratios=(
                    Ratio("parser speed / find+replace", "aiopop-parser", "find+replace", target),
                ),
                size=PARSER_SIZE,
            )
        )
    return workloads


def _chart_user(size: int) -> str:
    return f"chart{size}"


def chart_plans() -> list[Plan]:
    """One mailbox per message size of the chart, about 16 MiB each."""
    return [
        Plan(_chart_user(size), max(1, round(CHART_OCTETS / size)), size) for size in CHART_SIZES
    ]


def chart_workloads(mailboxes: dict[str, ServedMailbox]) -> list[Workload]:
    """Plain POP3 against Dovecot at each message size of the chart: aiopop, poplib, ceiling."""
    workloads = []
    for size in CHART_SIZES:
        mailbox = mailboxes.get(_chart_user(size))
        if mailbox is None:
            continue
        workloads.append(
            Workload(
                key=_chart_key(size),
                title=f"chart: Dovecot {mailbox.count} x {_size_label(size)}, POP3",
                clients=_fetchers(mailbox, tls=False),
                messages=mailbox.count,
                octets=mailbox.octets,
                size=size,
            )
        )
    return workloads


def _chart_key(size: int) -> str:
    return f"chart {_size_label(size)}"


def _size_label(size: int) -> str:
    return f"{size // MIB}MB" if size >= MIB else f"{size // KIB}KB"
