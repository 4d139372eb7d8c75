"""Log in with APOP when the server offers it, else with USER/PASS; then STAT.

    python examples/apop_fallback.py HOST USER [--port N] [--plain] [--cafile CA.pem]

The seed's second stanza written out step by step. ``client.login()`` goes
further: STLS when offered, SCRAM and CRAM-MD5 before APOP, and no cleartext
password unless over TLS or told it may. The password comes from getpass
(or $POP3_PASSWORD); the options are popconn.py's.
"""

from __future__ import annotations

import argparse
import sys

from popconn import make_client, run  # the same options and set-up as popconn.py

import aiopop


async def authenticate(client: aiopop.POP3, user: str, password: str) -> str:
    """APOP first; USER/PASS if the greeting offers no APOP or the server refuses it."""
    try:
        await client.apop(user, password)
        return "APOP"
    except aiopop.APOPNotOfferedError:
        pass  # No timestamp in the greeting: the server does not do APOP.
    except aiopop.AuthenticationError as exc:
        if exc.is_temporary:  # [IN-USE], [LOGIN-DELAY], [SYS/TEMP]: USER/PASS would fail too.
            raise
    await client.user(user)
    await client.pass_(password)
    return "USER/PASS"


async def main(args: argparse.Namespace, password: str) -> int:
    async with make_client(args) as client:
        try:
            method = await authenticate(client, args.user, password)
        except aiopop.error_proto as exc:
            print(f"Login failed: {exc}", file=sys.stderr)
            await client.quit()
            return 1
        count, size = await client.stat()
        print(f"Logged in with {method}")
        print(f"You have {count} messages totaling {size} bytes")
    return 0


if __name__ == "__main__":
    run(main)
