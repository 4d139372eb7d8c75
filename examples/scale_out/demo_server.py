"""A POP3 server with many small mailboxes to try the scale-out example on (see README.md).

    python demo_server.py --accounts 200 --write accounts.txt

Serves user0..user199 (user N holds N % 7 messages), all with the password
``demo``, on 127.0.0.1 (port 1110 by default), and writes the accounts file
that ``check_accounts.py`` reads. Runs until interrupted; it is aiopop's
in-process test server, for trying things out only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from pathlib import Path

from aiopop.testing import GeneratedMessage, Mailbox, POP3TestServer

PASSWORD = "demo"


async def serve(accounts: int, port: int, write: Path | None) -> None:
    def messages(i: int) -> list[bytes | GeneratedMessage]:
        return [b"Subject: message %d\r\n\r\nHello, user%d.\r\n" % (n, i) for n in range(i % 7)]

    mailboxes = {f"user{i}": Mailbox(PASSWORD, messages(i)) for i in range(accounts)}
    async with POP3TestServer(mailboxes, host="127.0.0.1", port=port) as server:
        lines = [f"pop://{name}@{server.host}:{server.port}\n" for name in mailboxes]
        if write is not None:
            await asyncio.to_thread(write.write_text, "".join(lines), encoding="utf-8")
        print(
            f"Serving {accounts} mailboxes on {server.host}:{server.port}, password {PASSWORD!r}"
            + (f"; accounts in {write}" if write else ""),
            flush=True,
        )
        await asyncio.Event().wait()  # until Ctrl-C


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--accounts", type=int, default=200, help="how many mailboxes (200)")
    parser.add_argument("--port", type=int, default=1110, help="the port on 127.0.0.1 (1110)")
    parser.add_argument("--write", type=Path, help="write the accounts file here")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.accounts, args.port, args.write))


if __name__ == "__main__":
    main()
