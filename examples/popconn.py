"""Say how many messages a mailbox holds, changing nothing: poplib's classic, awaited.

    python examples/popconn.py HOST USER [--port N] [--plain] [--cafile CA.pem]

The password is asked for with getpass (or taken from $POP3_PASSWORD, for
scripts). POP3S with a verified certificate is the default; --plain uses
unencrypted POP3 for servers without TLS. Exits 1 with the server's
explanation when the login fails.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import ssl
import sys
from collections.abc import Callable, Coroutine
from typing import NoReturn

import aiopop


def make_client(args: argparse.Namespace) -> aiopop.POP3:
    if args.plain:
        return aiopop.POP3(args.host, args.port, timeout=args.timeout)
    context = ssl.create_default_context(cafile=args.cafile)
    return aiopop.POP3_SSL(args.host, args.port, ssl_context=context, timeout=args.timeout)


async def main(args: argparse.Namespace, password: str) -> int:
    async with make_client(args) as client:
        try:
            await client.user(args.user)
            await client.pass_(password)
        except aiopop.error_proto as exc:
            print(f"Login failed: {exc}", file=sys.stderr)
            await client.quit()
            return 1
        count, size = await client.stat()
        print(f"You have {count} messages totaling {size} bytes")
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("host")
    parser.add_argument("user")
    parser.add_argument("--port", type=int, help="default: 995, or 110 with --plain")
    parser.add_argument("--plain", action="store_true", help="POP3 without TLS")
    parser.add_argument("--cafile", help="trust this CA instead of the system's")
    parser.add_argument("--timeout", type=float, default=30.0)
    return parser.parse_args(argv)


def run(main: Callable[[argparse.Namespace, str], Coroutine[None, None, int]]) -> NoReturn:
    """Parse the options, get the password, run ``main`` and exit with its status."""
    arguments = parse_args()
    secret = os.environ.get("POP3_PASSWORD") or getpass.getpass(f"Password for {arguments.user}: ")
    try:
        sys.exit(asyncio.run(main(arguments, secret)))
    except (aiopop.POP3Error, OSError) as error:
        print(f"Error: {error}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    run(main)
