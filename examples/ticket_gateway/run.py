"""New mail on a POP3 mailbox becomes tickets: aiopop feeding a ticket system's mail gateway.

    python examples/ticket_gateway/run.py

It needs no mail server and no ticket system. It starts aiopop's embedded
test server on 127.0.0.1 with three messages for "support", copies
gateway.py and accounts.toml into a temporary working folder, and there runs
what you would run from cron:

    aiopop fetch accounts.toml --new-only

three times: while the tickets database is locked (gateway.py exits 75, so
every message stays on the server), once it is free (three tickets filed),
and once more (nothing new, so nothing is filed twice). Then it prints the
tickets.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import sqlite3
import sys
import tempfile
from pathlib import Path

from aiopop.testing import Mailbox, POP3TestServer

HERE = Path(__file__).resolve().parent
INBOX = [
    b"From: Ann <ann@example.com>\r\nSubject: Printer on floor 3 is jammed again\r\n"
    b"Message-ID: <printer@example.com>\r\n\r\nSince this morning.\r\n",
    b"From: Bo <bo@example.com>\r\nSubject: VPN drops every ten minutes\r\n"
    b"Message-ID: <vpn@example.com>\r\n\r\nFrom home, on Wi-Fi.\r\n",
    b"From: Cy <cy@example.com>\r\nSubject: Access to the finance share, please\r\n"
    b"Message-ID: <share@example.com>\r\n\r\nFor the audit.\r\n",
]


def working_folder(folder: Path, port: int) -> None:
    """gateway.py and accounts.toml in ``folder``: the server's port, and this Python."""
    shutil.copy(HERE / "gateway.py", folder)
    text = (HERE / "accounts.toml").read_text(encoding="utf-8")
    text = text.replace("127.0.0.1:1110", f"127.0.0.1:{port}")
    text = text.replace('"python3"', json.dumps(sys.executable))
    (folder / "accounts.toml").write_text(text, encoding="utf-8")


async def aiopop_fetch(folder: Path, password: str) -> None:
    """``aiopop fetch accounts.toml --new-only`` in ``folder``, its output shown."""
    print("$ aiopop fetch accounts.toml --new-only")
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "aiopop", "fetch", "accounts.toml", "--new-only",
        cwd=folder,
        env={**os.environ, "SUPPORT_PASSWORD": password},
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output, _ = await process.communicate()
    print(output.decode().rstrip())
    print(f"(exit status {process.returncode})")


def tickets(database: Path) -> list[tuple[int, str, str, str]]:
    """The tickets gateway.py filed: number, queue, requester, subject."""
    connection = sqlite3.connect(database)
    try:
        query = "SELECT id, queue, requester, subject FROM tickets ORDER BY id"
        return connection.execute(query).fetchall()
    except sqlite3.OperationalError:  # no ticket yet: gateway.py creates the table
        return []
    finally:
        connection.close()


async def main() -> int:
    password = secrets.token_urlsafe(12)
    mailbox = Mailbox(password, list(INBOX))
    async with POP3TestServer({"support": mailbox}) as server:
        with tempfile.TemporaryDirectory(prefix="ticket-gateway-") as directory:
            folder = Path(directory)
            working_folder(folder, server.port)
            database = folder / "tickets.sqlite3"

            print("# The ticket system is busy: its database is locked (gateway.py exits 75).")
            lock = sqlite3.connect(database, isolation_level=None)
            lock.execute("BEGIN EXCLUSIVE")
            await aiopop_fetch(folder, password)
            lock.rollback()
            lock.close()
            print(f"tickets filed: {len(tickets(database))}\n")

            print("# The database is free again: the messages left on the server are filed.")
            await aiopop_fetch(folder, password)
            print(f"tickets filed: {len(tickets(database))}\n")
            print("# Nothing new on the server: nothing is filed twice.")
            await aiopop_fetch(folder, password)
            print(f"tickets filed: {len(tickets(database))}\n")

            for number, queue, requester, subject in tickets(database):
                print(f"#{number} [{queue}] {subject} (from {requester})")
        print(f"still on the server: {len(mailbox.messages)} messages (kept 7 days after filing)")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
