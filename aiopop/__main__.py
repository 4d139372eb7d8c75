"""``python -m aiopop demo``: read a sample mailbox on the embedded test server.

Starts :class:`aiopop.testing.POP3TestServer` on a free loopback port with a
small sample mailbox and runs the classic flow against it: connect, log in
(APOP, with USER/PASS as the fallback), STAT, LIST, UIDL, the first
message's headers and every message in one pipelined batch, then QUIT
without deleting anything.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from . import POP3, POP3Error
from ._parse import escape
from .testing import Mailbox, POP3TestServer

DEMO_USER = "demo"
DEMO_PASSWORD = "correct horse"  # noqa: S105 - the embedded server's sample account

SAMPLE_MESSAGES = [
    b"From: Alice <alice@example.org>\n"
    b"To: demo@example.org\n"
    b"Subject: Welcome to aiopop\n"
    b"Date: Thu, 26 Nov 2026 09:00:00 +0000\n"
    b"Message-ID: <welcome@example.org>\n"
    b"\n"
    b"This message came from aiopop's embedded POP3 server.\n",
    b"From: Bob <bob@example.org>\n"
    b"To: demo@example.org\n"
    b"Subject: Dots and long lines\n"
    b"Date: Thu, 26 Nov 2026 09:05:00 +0000\n"
    b"\n"
    b".A line that starts with a dot travels dot-stuffed and comes back as it was.\n"
    b"." + b"x" * 4000 + b"\n",
    b"From: Carol <carol@example.org>\n"
    b"To: demo@example.org\n"
    b"Subject: Nothing is deleted\n"
    b"\n"
    b"The demo only reads: QUIT commits no deletion.\n",
]


async def demo() -> int:
    """Run the demo, printing as it goes; returns the process exit status."""
    mailbox = Mailbox(DEMO_PASSWORD, list(SAMPLE_MESSAGES))
    async with POP3TestServer({DEMO_USER: mailbox}) as server:
        print(f"Embedded POP3 server listening on {server.host}:{server.port}")
        async with POP3(server.host, server.port, timeout=10) as client:
            print(f"Greeting: {escape(client.getwelcome())}")
            # Loopback to our own server: a cleartext fallback is acceptable here.
            method = await client.login(DEMO_USER, DEMO_PASSWORD, allow_cleartext=True)
            print(f"Logged in as {DEMO_USER!r} with {method}")
            print("You have %d messages totaling %d bytes" % await client.stat())
            for entry, uid in zip(await client.list(), await client.uidl(), strict=True):
                print(f"  #{entry.number}: {entry.size} bytes, uid {uid.uid}")
            headers = await client.top(1, 0)
            print("Headers of message 1:")
            for line in headers.decode("utf-8", "replace").splitlines():
                if line:
                    print(f"  {escape(line)}")
            numbers = range(1, len(mailbox.messages) + 1)
            fetched = [message async for _, message in client.retr_many(numbers)]
            pipelined = len(server.sessions[-1].pipelined)
            print(
                f"Fetched all {len(fetched)} messages ({sum(map(len, fetched))} bytes) with "
                f"retr_many: {pipelined} RETRs went out before the reply to the one before"
            )
        print(f"Mailbox unchanged: {len(mailbox.messages)} messages on the server")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """The ``python -m aiopop`` command line."""
    parser = argparse.ArgumentParser(prog="python -m aiopop", description="aiopop tools")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("demo", help="read a sample mailbox on the embedded test server")
    args = parser.parse_args(argv)
    if args.command == "demo":
        try:
            return asyncio.run(demo())
        except (POP3Error, OSError) as exc:
            print(f"demo failed: {exc}", file=sys.stderr)
            return 1
    return 2  # pragma: no cover - argparse rejects other commands


if __name__ == "__main__":
    sys.exit(main())
