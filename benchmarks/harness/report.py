"""What every report shares: the noise lines, the verdict count, and the JSON file."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .paths import NOISY

__all__ = ["noise_lines", "settings_of", "write_json"]


def noise_lines(lines: Iterable[str | None], noisy: float = NOISY) -> list[str]:
    """The ``noisy:`` lines given (None: a quiet workload), or one ``quiet:`` line."""
    found = [line for line in lines if line is not None]
    return found or [f"quiet: other programs never used more than {noisy:.0%} of a CPU in a round"]


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write a suite's whole result (one object, indented) to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1) + "\n")


def settings_of(options: Any) -> dict[str, Any]:
    """An argparse namespace as JSON-friendly settings (paths as strings)."""
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(options).items()}
