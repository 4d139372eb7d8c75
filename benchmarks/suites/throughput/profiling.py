"""When a target fails: one more run of the client under cProfile, for whoever tunes it."""

from __future__ import annotations

import io
import pstats
from dataclasses import replace
from pathlib import Path

from .spec import run_worker
from .workloads import Workload

__all__ = ["profile_client"]

TOP = 25


def profile_client(workload: Workload, client: str, directory: Path) -> str:
    """Run ``client`` of ``workload`` once under cProfile; return the top functions by own time.

    The statistics file stays in ``directory`` (for ``python -m pstats`` or
    snakeviz). cProfile slows pure-Python code several times over: read the
    shares, not the seconds.
    """
    directory.mkdir(parents=True, exist_ok=True)
    name = f"{workload.key}-{client}".replace(" ", "-").replace("/", "_").replace("+", "_")
    path = directory / f"{name}.pstats"
    spec = replace(workload.clients[client], profile=str(path))
    result = run_worker(spec)
    out = io.StringIO()
    stats = pstats.Stats(str(path), stream=out)
    stats.strip_dirs().sort_stats("tottime").print_stats(TOP)
    lines = [line for line in out.getvalue().splitlines() if line.strip()]
    # pstats begins with the file name and a blank-line-separated preamble: keep the table.
    table = lines[next((i for i, line in enumerate(lines) if "ncalls" in line), 0) :]
    head = (
        f"profile of {client} on {workload.key} ({result.seconds:.3f} s under cProfile, "
        f"the timed span, main thread only; saved in {path}):"
    )
    return "\n".join([head, *table])
