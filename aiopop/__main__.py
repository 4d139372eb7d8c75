"""``python -m aiopop``: the same as the ``aiopop`` command (see :mod:`aiopop._cli`)."""

from __future__ import annotations

from ._cli import main, run

__all__ = ["main", "run"]

if __name__ == "__main__":
    run()
