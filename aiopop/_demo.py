"""``aiopop demo``: read a sample mailbox on the embedded test server.

Starts :class:`aiopop.testing.POP3TestServer` on a free loopback port with a
small sample mailbox and runs the classic flow against it: connect, log in
(APOP, with USER/PASS as the fallback), STAT, LIST, UIDL, the first
message's headers and every message in one pipelined batch, then QUIT
without deleting anything.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
from pathlib import Path

from . import POP3
from ._parse import escape
from ._targets import FetchSettings, FetchTarget
from .testing import Mailbox, POP3TestServer

DEMO_USER = "demo"
DEMO_PASSWORD = "correct horse"  # noqa: S105 - the embedded server's sample account
PASSWORD_VARIABLE = "AIOPOP_DEMO_PASSWORD"  # noqa: S105 - a variable's name

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
        await command_tour(server)
    return 0


async def command_tour(server: POP3TestServer) -> None:
    """The ``aiopop`` commands against the same server, each shown as it would be typed."""
    # Imported here: the command line is the demo's second half, not a dependency of it.
    from . import _cli_fetch, _cli_run
    from ._accounts import Account

    os.environ.setdefault(PASSWORD_VARIABLE, DEMO_PASSWORD)
    # No TLS on the embedded server: "if-offered" logs in with APOP, which
    # keeps the password off the wire, and would upgrade if STLS were offered.
    account = Account(
        server.host,
        DEMO_USER,
        port=server.port,
        tls="if-offered",
        password=os.environ[PASSWORD_VARIABLE],
        timeout=10,
    )
    where = f"{server.host} {DEMO_USER} --port {server.port} --tls if-offered"
    secret = f"--password-env {PASSWORD_VARIABLE}"
    print()
    print("The same mailbox through the aiopop command:")
    for command in ("stat", "list", "uidl"):
        print(f"$ aiopop {command} {where} {secret}")
        runner = {"stat": _cli_run.run_stat, "list": _cli_run.run_list, "uidl": _cli_run.run_uidl}[
            command
        ]
        await runner(account, False, sys.stdout)
    with tempfile.TemporaryDirectory(prefix="aiopop-demo-") as directory:
        maildir = os.path.join(directory, "Mail")
        for _ in range(2):
            print(f"$ aiopop fetch {where} {secret} --maildir {maildir} --new-only")
            target = FetchTarget(
                account,
                maildir=Path(maildir),
                settings=FetchSettings(new_only=True, skip_larger_than=None),
            )
            await _cli_fetch.run_fetch(target, as_json=False, out=sys.stdout, err=sys.stderr)
        accounts = os.path.join(directory, "accounts.toml")
        text = "".join(
            f'[[account]]\nname = "{user}"\n'
            f'url = "pop://{user}@{server.host}:{server.port}"\n'
            f'tls = "if-offered"\npassword_env = "{PASSWORD_VARIABLE}"\n\n'
            for user in (DEMO_USER, "nobody")
        )
        await asyncio.to_thread(Path(accounts).write_text, text, encoding="utf-8")
        print(f"$ aiopop check {accounts}")
        await _cli_run.run_check(
            accounts,
            concurrency=10,
            per_host=2,
            deadline=10,
            cafile=None,
            as_json=False,
            out=sys.stdout,
        )
