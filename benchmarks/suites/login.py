"""What a login costs against the project's Dovecot, right password and wrong.

    .venv/bin/python -m benchmarks login      # about 2 minutes; writes results/login.json

Dovecot offers SCRAM-SHA-256, SCRAM-SHA-1, CRAM-MD5, APOP, PLAIN, LOGIN and
USER, and, with its defaults (``auth_failure_delay``, the anvil auth
penalty; the tests turn both off, this benchmark does not), delays each
failed login from one address longer than the last. Each case runs from
a loopback address of its own (127.0.23.x), so that no case pays for
another's failures, over POP3S:

* ``wrong password: login()``: what ``login()`` does now, at most two
  attempts (SCRAM-SHA-256, then PLAIN);
* ``wrong password: every method``: what ``login()`` did before: each
  method offered, strongest first, one after the other on one connection
  (seven attempts), each pinned with ``methods=[...]``;
* ``right password: login()``: the first login of a user whose stored
  hash Dovecot cannot use for SCRAM (one refusal, then PLAIN);
* ``right password: prefer=``: the same user, told the method that worked
  (what ``aiopop fetch``, ``watch()`` and ``check_many`` do after the first).

The attempts are counted on the wire (aiopop's debug log of the commands
it sent: AUTH with a mechanism, APOP, PASS); the seconds are wall time from
the first login command to the outcome, one run each. Timing lives here, not
in the tests (which count the attempts only).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import ssl
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiopop
from aiopop import AuthMethod
from benchmarks.harness.paths import RESULTS as RESULTS_DIRECTORY
from servers.dovecot import HOST, DovecotServer, MailUser

RESULTS = RESULTS_DIRECTORY / "login.json"
EVERY_METHOD: tuple[str, ...] = (
    "SCRAM-SHA-256",
    "SCRAM-SHA-1",
    "CRAM-MD5",
    "+APOP",
    "PLAIN",
    "LOGIN",
    "+USER",
)
RIGHT = MailUser("bench-right", "right-pw-1", (b"Subject: x\r\n\r\nbody\r\n",))
HASHED = MailUser("bench-hashed", "right-pw-2", (b"Subject: y\r\n\r\nbody\r\n",), "SSHA256")


class _Attempts(logging.Handler):
    """Counts the login commands aiopop's debug log says it sent."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if text.startswith(("C: APOP ", "C: PASS ")) or (
            text.startswith("C: AUTH ") and len(text.split(" ")) > 2
        ):
            self.count += 1


def _client(server: DovecotServer, address: str) -> aiopop.POP3_SSL:
    context = ssl.create_default_context()
    server.ca.configure_trust(context)
    return aiopop.POP3_SSL(
        HOST, server.pop3s_port, ssl_context=context, local_addr=(address, 0), timeout=120
    )


async def _case(
    server: DovecotServer, address: str, user: MailUser, password: str, how: str
) -> dict[str, Any]:
    counter = _Attempts()
    logger = logging.getLogger("aiopop")
    logger.addHandler(counter)
    logger.setLevel(logging.DEBUG)
    outcome = "logged in"
    client = _client(server, address)
    try:
        await client.connect()
        started = time.perf_counter()
        try:
            if how == "login":
                await client.login(user.name, password)
            elif how == "prefer":
                await client.login(user.name, password, prefer=AuthMethod.PLAIN)
            else:
                outcome = "refused"
                for method in EVERY_METHOD:  # the walk login() made before: one by one
                    try:
                        await client.login(user.name, password, methods=[method])
                    except aiopop.CredentialsError:
                        if not client.is_connected:
                            await client.connect()
                    else:
                        outcome = "logged in"
                        break
        except aiopop.CredentialsError:
            outcome = "refused"
        seconds = time.perf_counter() - started
    finally:
        await client.close()
        logger.removeHandler(counter)
    return {"attempts": counter.count, "seconds": round(seconds, 2), "outcome": outcome}


async def run() -> dict[str, Any]:
    with DovecotServer([RIGHT, HASHED], auth_penalty=True) as server:
        cases = {
            "wrong password: login()": (RIGHT, "wrong-pw", "login", "127.0.23.1"),
            "wrong password: every method": (RIGHT, "wrong-pw", "every", "127.0.23.2"),
            "right password: login()": (HASHED, HASHED.password, "login", "127.0.23.3"),
            "right password: prefer=": (HASHED, HASHED.password, "prefer", "127.0.23.4"),
        }
        results: dict[str, Any] = {}
        for name, (user, password, how, address) in cases.items():
            results[name] = await _case(server, address, user, password, how)
            print(f"{name:<32} {results[name]}", flush=True)
    old, new = results["wrong password: every method"], results["wrong password: login()"]
    return {
        "server": "Dovecot (Debian dovecot-pop3d), POP3S on loopback",
        "cases": results,
        "wrong password, every method against login()": round(
            old["seconds"] / max(new["seconds"], 1e-9), 1
        ),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks login", description=__doc__)
    parser.add_argument("--output", type=Path, default=RESULTS, help=f"default {RESULTS}")
    args = parser.parse_args(argv)
    report = asyncio.run(run())
    args.output.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
