"""A stand-in for a ticket system's mail gateway: one message in, one ticket out.

    python gateway.py [--db FILE] [--queue NAME] < message

It reads one message on its standard input and files it as a ticket: a row
of the SQLite database FILE (default: $TICKETS_DB). It answers as a mail
gateway such as Request Tracker's rt-mailgate does, by its exit status:

* 0: the ticket is filed. A message filed before (the same Message-ID, or
  without one the same mailbox and unique-id that aiopop gives in
  AIOPOP_MAILBOX and AIOPOP_UID) is not filed twice, and is answered 0 too.
* 75 (EX_TEMPFAIL in sysexits.h, the "try again later" of sendmail and
  rt-mailgate): the database is locked or cannot be opened.

aiopop counts a message as delivered only when this program exits 0; on
any other status the message stays on the server for the next run.
"""

from __future__ import annotations

import argparse
import email
import email.policy
import os
import sqlite3
import sys

EX_TEMPFAIL = 75
BUSY_WAIT = 1.0
"""Seconds to wait for a database that another program has locked."""

SCHEMA = """
CREATE TABLE IF NOT EXISTS tickets (
    id INTEGER PRIMARY KEY,
    queue TEXT NOT NULL,
    requester TEXT NOT NULL,
    subject TEXT NOT NULL,
    body TEXT NOT NULL,
    source TEXT NOT NULL UNIQUE
)
"""


def read_message() -> tuple[str, str, str, str]:
    """The requester, subject, plain-text body and identity of the message on stdin."""
    message = email.message_from_binary_file(sys.stdin.buffer, policy=email.policy.default)
    requester = str(message["From"] or "unknown")
    subject = str(message["Subject"] or "(no subject)")
    part = message.get_body(preferencelist=("plain",))
    body = part.get_content() if part is not None else ""
    source = str(message["Message-ID"] or "")
    if not source:
        source = f"{os.environ.get('AIOPOP_MAILBOX', '')} {os.environ.get('AIOPOP_UID', '')}"
    return requester, subject, body, source


def file_ticket(db: str, queue: str) -> int:
    requester, subject, body, source = read_message()
    try:
        connection = sqlite3.connect(db, timeout=BUSY_WAIT)
        try:
            with connection:  # one transaction: committed, or rolled back on an error
                connection.execute(SCHEMA)
                connection.execute(
                    "INSERT OR IGNORE INTO tickets (queue, requester, subject, body, source)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (queue, requester, subject, body, source),
                )
        finally:
            connection.close()
    except sqlite3.OperationalError as exc:  # locked, or cannot be opened
        print(f"gateway: {db}: {exc}; try again later", file=sys.stderr)
        return EX_TEMPFAIL
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", default=os.environ.get("TICKETS_DB"), help="the tickets database")
    parser.add_argument("--queue", default="general", help="the queue to file tickets in")
    arguments = parser.parse_args()
    if not arguments.db:
        parser.error("give --db FILE or set TICKETS_DB")
    return file_ticket(arguments.db, arguments.queue)


if __name__ == "__main__":
    sys.exit(main())
