"""A mail bot: print the Subject of each new message, and stop after a few.

    python examples/bot.py [--count N]

It needs no mail server: it starts aiopop's embedded test server on
127.0.0.1 with two messages in the bot's mailbox, and a third arrives while
the bot watches. The bot remembers what it has handled in an SQLite file (in
a temporary directory here; a real bot keeps it), deletes each message once
it has been handled and recorded, and after ``--count`` messages
acknowledges the last one and stops.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import sys
import tempfile
from pathlib import Path

from aiopop import Account, SQLiteStore, watch
from aiopop.testing import Mailbox, POP3TestServer

INBOX = [
    b"From: alice@example.org\r\nSubject: Lunch on Friday?\r\n\r\nNoon, usual place.\r\n",
    b"From: ci@example.org\r\nSubject: Build 1939 passed\r\n\r\nAll green.\r\n",
]
ARRIVING = b"From: bob@example.org\r\nSubject: Re: Lunch on Friday?\r\n\r\nCount me in.\r\n"


async def main(count: int) -> int:
    password = secrets.token_urlsafe(12)
    mailbox = Mailbox(password, list(INBOX))
    async with POP3TestServer({"bot": mailbox}) as server:
        # The embedded server speaks plain POP3 on loopback; the bot logs in with APOP.
        account = Account(server.host, "bot", port=server.port, tls="none", password=password)
        handled = 0
        with tempfile.TemporaryDirectory() as directory:
            store = SQLiteStore(Path(directory) / "seen.db")
            async with watch(account, interval=0.1, store=store, delete=True) as messages:
                async for new in messages:
                    print(f"New mail: {new.message()['Subject']}")
                    handled += 1
                    if handled == count:
                        await messages.finish()  # acknowledge this one too, QUIT, stop
                    elif handled == len(INBOX):
                        # Only for the demonstration: new mail arrives on the server. The
                        # bot sees it at its next poll, after this session has ended.
                        mailbox.add(ARRIVING)
        print(f"{handled} handled, {len(mailbox.messages)} left on the server")
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=3, help="stop after this many (default 3)")
    arguments = parser.parse_args(argv)
    if not 1 <= arguments.count <= len(INBOX) + 1:
        parser.error(f"--count must be between 1 and {len(INBOX) + 1}")
    return arguments


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse_args().count)))
