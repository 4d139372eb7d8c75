"""The README's bot and its test, run exactly as printed, as a user would run them."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def python_block(first_line: str) -> str:
    """The README's ```python block that starts with ``first_line``."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.DOTALL)
    found = [block for block in blocks if block.startswith(first_line + "\n")]
    assert len(found) == 1, f"expected one README block starting with {first_line!r}"
    return str(found[0])


async def test_the_readme_bot_and_its_test(tmp_path: Path) -> None:
    (tmp_path / "bot.py").write_text(python_block("# bot.py"), encoding="utf-8")
    (tmp_path / "test_bot.py").write_text(python_block("# test_bot.py"), encoding="utf-8")
    # A user's project: pytest-asyncio in auto mode, aiopop's plugin from its entry point.
    (tmp_path / "pytest.ini").write_text("[pytest]\nasyncio_mode = auto\n", encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    env.pop("PYTEST_ADDOPTS", None)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "-p",
        "no:cov",
        str(tmp_path / "test_bot.py"),
        cwd=tmp_path,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(process.communicate(), 90)
    text = out.decode()
    assert process.returncode == 0, text
    assert "1 passed" in text
