"""Micro-benchmarks of aiopop's sans-I/O core: seconds to run, no root, no server, no socket.

    .venv/bin/python -m pytest benchmarks/micro --benchmark-only

They need pytest-benchmark (in the ``bench`` extra). The normal test run
never collects them: ``testpaths = ["tests"]`` in pyproject.toml.
"""
