"""fetch_into's policies, size limits, filter and dry run, for a Maildir and a delivery callable.

What is fetched, left and deleted is decided by one engine for both
destinations, so most tests run twice (the ``destination`` fixture). Each
looks at the wire (which numbers got TOP, RETR and DELE, and whether QUIT
came), at the server's mailbox after the session, and at the disk: what
the destination holds and the rows of the state file, read with sqlite3.
The last test checks the decision against a simple model, for random
mixes of sizes, limits, verdicts, recorded rows and their ages.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any, Literal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import aiopop
from aiopop._delivery_state import STATE_FILE, DeliveryState
from aiopop._maildir import Maildir
from aiopop.testing import Faults, Mailbox, POP3TestServer
from aiopop.testing._mailbox import header_end
from tests.helpers.fetch import ACCOUNT, PASSWORD, USER, Hand, age, rows, run_into, serve, wire

DAY = 86400.0
MAIL = [b"Subject: %d\r\n\r\n" % n + b"x" * (10 * n) + b"\r\n" for n in (1, 2, 3, 4)]
"""Four messages of 26, 36, 46 and 56 octets."""
SIZES = [len(m) for m in MAIL]


@dataclasses.dataclass
class Destination:
    """A Maildir (kept with CRLF line ends, so that it holds the server's bytes) or a
    delivery callable with its state file; what it holds, whichever it is."""

    kind: Literal["maildir", "callable"]
    root: Path
    hand: Hand = dataclasses.field(default_factory=Hand)

    @property
    def box(self) -> Path:
        return self.root / "Maildir"

    @property
    def target(self) -> Maildir | Hand:
        return Maildir(self.box, keep_crlf=True) if self.kind == "maildir" else self.hand

    @property
    def state(self) -> Path:
        return self.box / STATE_FILE if self.kind == "maildir" else self.root / "state.sqlite3"

    def held(self) -> list[bytes]:
        """Every message delivered so far, by every run, sorted."""
        if self.kind == "callable":
            return sorted(message.data for message in self.hand.got)
        return sorted(
            (self.box / sub / name).read_bytes()
            for sub in ("new", "cur")
            if (self.box / sub).is_dir()
            for name in os.listdir(self.box / sub)
        )

    def files(self) -> dict[str, bytes]:
        """Every file under the root, by relative path, with its content."""
        return {
            str(path.relative_to(self.root)): path.read_bytes()
            for path in sorted(self.root.rglob("*"))
            if path.is_file()
        }

    async def run(self, server: POP3TestServer, **options: Any) -> aiopop.FetchResult:
        if self.kind == "callable":
            options.setdefault("state", self.state)
        return await run_into(server, self.target, **options)


@pytest.fixture(params=["maildir", "callable"])
def destination(request: pytest.FixtureRequest, tmp_path: Path) -> Destination:
    return Destination(request.param, tmp_path)


def uids_of(mailbox: Mailbox) -> list[str]:
    assert mailbox.uids is not None
    return list(mailbox.uids)


def numbers(entries: list[Any]) -> list[int]:
    return [entry.number for entry in entries]


# -- keep, delete ------------------------------------------------------------------------------


async def test_by_default_nothing_is_deleted(destination: Destination) -> None:
    mailbox, server = serve(*MAIL)
    async with server:
        first = await destination.run(server)
        assert wire(server) == [b"RETR 1", b"RETR 2", b"RETR 3", b"RETR 4", b"QUIT"]
        second = await destination.run(server)
        assert wire(server) == [b"QUIT"]
    assert (first.marked, second.marked, second.skipped) == ([], [], 4)
    assert mailbox.messages == MAIL
    assert destination.held() == sorted(MAIL)
    assert all(row.marked is None for row in rows(destination.state).values())


async def test_delete_deletes_what_is_delivered_now_and_what_was_before(
    destination: Destination,
) -> None:
    mailbox, server = serve(*MAIL[:2])
    async with server:
        await destination.run(server)
        mailbox.add(MAIL[2])
        result = await destination.run(server, delete=True)
        assert wire(server) == [b"RETR 3", b"DELE 1", b"DELE 2", b"DELE 3", b"QUIT"]
    assert numbers(result.delivered) == [3]
    assert result.marked == [1, 2, 3]
    assert mailbox.messages == []
    assert destination.held() == sorted(MAIL[:3])  # each once


async def test_delete_after_days_deletes_only_what_was_delivered_long_enough_ago(
    destination: Destination,
) -> None:
    mailbox, server = serve(*MAIL)
    uids = uids_of(mailbox)
    async with server:
        first = await destination.run(server, delete_after_days=7)
        assert wire(server, "DELE") == []  # first delivered now: not yet
        age(destination.state, [uids[0], uids[2]], 8)
        age(destination.state, [uids[1]], 6.9)
        second = await destination.run(server, delete_after_days=7)
        assert wire(server) == [b"DELE 1", b"DELE 3", b"QUIT"]
    assert (numbers(first.delivered), first.marked) == ([1, 2, 3, 4], [])
    assert (second.delivered, second.skipped, second.marked) == ([], 4, [1, 3])
    assert mailbox.messages == [MAIL[1], MAIL[3]]
    assert destination.held() == sorted(MAIL)
    left = rows(destination.state)
    assert [left[uids[1]].marked, left[uids[3]].marked] == [None, None]
    assert left[uids[0]].marked is not None  # DELE accepted, before QUIT committed it


async def test_a_unique_id_reused_at_another_size_is_not_taken_for_the_delivered_one(
    destination: Destination,
) -> None:
    mailbox, server = serve(*MAIL[:3])
    uids = uids_of(mailbox)
    other = b"Subject: another message under the same unique-id\r\n\r\nnew\r\n"
    async with server:
        await destination.run(server)
        age(destination.state, uids, 30)
        mailbox.messages[1] = other  # the server gives unique-id 2 to another message
        result = await destination.run(server, delete_after_days=7)
        assert wire(server) == [b"RETR 2", b"DELE 1", b"DELE 3", b"QUIT"]
    assert numbers(result.delivered) == [2]  # taken for a new message
    assert result.marked == [1, 3]
    assert mailbox.messages == [other]
    assert destination.held() == sorted([*MAIL[:3], other])
    row = rows(destination.state)[uids[1]]
    assert row.size == len(other)
    assert row.first_delivered > time.time() - 60  # its age starts now


async def test_a_pending_row_is_never_deleted(destination: Destination) -> None:
    mailbox, server = serve(*MAIL[:2])
    uids = uids_of(mailbox)
    async with server:
        await destination.run(server)
        age(destination.state, uids, 30)
        name = rows(destination.state)[uids[0]].name
        if name is not None:
            (destination.box / "new" / name).unlink()
        db = sqlite3.connect(destination.state)
        with db:
            # Message 1's row is pending; for a Maildir, its file is nowhere any more.
            db.execute("UPDATE messages SET delivered = 0, name = 'gone' WHERE uid = ?", uids[:1])
        db.close()
        result = await destination.run(server, delete_after_days=7)
        assert wire(server, "DELE") == [b"DELE 2"]
    assert mailbox.messages == [MAIL[0]]
    row = rows(destination.state)[uids[0]]
    assert destination.held() == MAIL[:2]
    if destination.kind == "maildir":
        # recover() dropped the row whose file was gone: fetched again, delivered now.
        assert numbers(result.delivered) == [1]
        assert (row.delivered, row.first_delivered > time.time() - 60) == (1, True)
    else:
        assert (result.delivered, row.delivered) == ([], 0)


def interrupt(destination: Destination, uid: str) -> None:
    """Put the Maildir back as a run killed between writing the row and the rename left it:
    the row pending, its file complete in ``tmp/``."""
    name = rows(destination.state)[uid].name
    assert name is not None
    os.rename(destination.box / "new" / name, destination.box / "tmp" / name)
    db = sqlite3.connect(destination.state)
    with db:
        db.execute("UPDATE messages SET delivered = 0 WHERE uid = ?", (uid,))
    db.close()


async def test_a_pending_row_that_recovery_finishes_is_due_from_its_first_delivery(
    tmp_path: Path,
) -> None:
    """Recovery runs first: the file reaches new/, the row is delivered, its age counts."""
    destination = Destination("maildir", tmp_path)
    mailbox, server = serve(*MAIL[:2])
    uids = uids_of(mailbox)
    async with server:
        await destination.run(server)
        age(destination.state, uids, 30)
        interrupt(destination, uids[0])
        result = await destination.run(server, delete_after_days=7)
        assert wire(server) == [b"DELE 1", b"DELE 2", b"QUIT"]
    assert (result.recovered, result.delivered, result.marked) == (1, [], [1, 2])
    assert mailbox.messages == []
    assert destination.held() == sorted(MAIL[:2])
    assert os.listdir(destination.box / "tmp") == []


# -- nothing is deleted early --------------------------------------------------------------------


async def test_a_session_closed_without_quit_deletes_nothing(destination: Destination) -> None:
    mailbox, server = serve(*MAIL[:3])
    async with server:
        result = await destination.run(server, delete=True, quit=False)
        assert wire(server, "DELE", "QUIT") == [b"DELE 1", b"DELE 2", b"DELE 3"]
        assert not server.sessions[-1].quit
        assert result.marked == [1, 2, 3]
        assert mailbox.messages == MAIL[:3]
        assert destination.held() == sorted(MAIL[:3])
        assert all(row.delivered for row in rows(destination.state).values())
        # The next session finishes the job, delivering nothing twice.
        again = await destination.run(server, delete=True)
        assert wire(server, "DELE", "QUIT") == [b"DELE 1", b"DELE 2", b"DELE 3", b"QUIT"]
    assert (again.delivered, again.marked) == ([], [1, 2, 3])
    assert mailbox.messages == []
    assert destination.held() == sorted(MAIL[:3])


@pytest.mark.parametrize("cut_at", ["DELE", "QUIT"])
async def test_a_connection_cut_before_quit_is_answered_deletes_nothing(
    destination: Destination, cut_at: str
) -> None:
    """The server vanishes when the first DELE, or the QUIT, arrives: nothing is deleted."""
    mailbox, server = serve(*MAIL[:3], faults=Faults(drop_at=cut_at))
    async with server:
        with pytest.raises(aiopop.ConnectionLostError):
            await destination.run(server, delete=True)
        assert server.sessions[-1].dropped
        assert not server.sessions[-1].quit
        assert mailbox.messages == MAIL[:3]
        assert destination.held() == sorted(MAIL[:3])  # delivered before the DELEs
        assert len(rows(destination.state)) == 3
        server.faults = Faults()
        again = await destination.run(server, delete=True)
    assert (again.delivered, again.marked) == ([], [1, 2, 3])
    assert mailbox.messages == []
    assert destination.held() == sorted(MAIL[:3])


# -- size limits --------------------------------------------------------------------------------


async def test_delete_larger_than_deletes_unread(destination: Destination) -> None:
    mailbox, server = serve(*MAIL)
    uids = uids_of(mailbox)
    async with server:
        result = await destination.run(server, delete_larger_than=40)
        assert wire(server) == [b"RETR 1", b"RETR 2", b"DELE 3", b"DELE 4", b"QUIT"]
    assert result.filtered == [
        aiopop.Filtered(3, uids[2], SIZES[2], "delete", "size"),
        aiopop.Filtered(4, uids[3], SIZES[3], "delete", "size"),
    ]
    assert (numbers(result.delivered), result.marked, result.oversized) == ([1, 2], [3, 4], [])
    assert mailbox.messages == MAIL[:2]  # deleted at QUIT...
    assert destination.held() == sorted(MAIL[:2])
    assert sorted(rows(destination.state)) == sorted(uids[:2])  # ...and never recorded


@pytest.mark.parametrize(
    ("max_size", "delete_larger_than", "deleted", "oversized"),
    [
        (30, 40, [3, 4], [2]),  # over both: deleted; between: left, oversized
        (40, 30, [2, 3, 4], []),  # over delete_larger_than: deleted, whatever max_size says
    ],
)
async def test_delete_larger_than_is_checked_before_max_size(
    destination: Destination,
    max_size: int,
    delete_larger_than: int,
    deleted: list[int],
    oversized: list[int],
) -> None:
    mailbox, server = serve(*MAIL)
    async with server:
        result = await destination.run(
            server, max_size=max_size, delete_larger_than=delete_larger_than
        )
        assert wire(server, "RETR", "DELE") == [b"RETR 1"] + [b"DELE %d" % n for n in deleted]
    assert [(f.number, f.verdict, f.by) for f in result.filtered] == [
        (n, "delete", "size") for n in deleted
    ]
    assert numbers(result.oversized) == oversized
    assert [o.size for o in result.oversized] == [SIZES[n - 1] for n in oversized]
    assert mailbox.messages == [m for n, m in enumerate(MAIL, 1) if n not in deleted]
    assert destination.held() == [MAIL[0]]


async def test_a_message_at_exactly_a_limit_is_under_it(destination: Destination) -> None:
    mailbox, server = serve(*MAIL[:2])
    async with server:
        result = await destination.run(server, max_size=SIZES[1], delete_larger_than=SIZES[1])
        assert wire(server) == [b"RETR 1", b"RETR 2", b"QUIT"]
    assert (numbers(result.delivered), result.filtered, result.oversized) == ([1, 2], [], [])
    assert mailbox.messages == MAIL[:2]


# -- the filter ------------------------------------------------------------------------------------

RICH = [
    b"From: a@example.com\r\nSubject: first\r\n\r\nbody\r\n",
    b"Received: from x\r\n\tby y\r\nSubject: folded\r\n\r\n.dot\r\nline\r\n",
    b"Subject: no body\r\n\r\n",
    b"Subject: fourth\r\n\r\nfour\r\n",
]


def verdicts(answers: dict[int, str], seen: list[aiopop.MessageHeaders] | None = None) -> Any:
    """A filter answering ``answers[number]`` (default "fetch"); "error" raises DeliveryError."""

    async def judge(headers: aiopop.MessageHeaders) -> aiopop.Verdict:
        if seen is not None:
            seen.append(headers)
        answer = answers.get(headers.number, "fetch")
        if answer == "error":
            raise aiopop.DeliveryError(f"cannot judge {headers.number}")
        return answer  # type: ignore[return-value]

    return judge


async def test_the_filter_is_given_each_header_section_its_size_and_uid(
    destination: Destination,
) -> None:
    mailbox, server = serve(*RICH)
    uids = uids_of(mailbox)
    seen: list[aiopop.MessageHeaders] = []
    async with server:
        account = aiopop.Account(host="127.0.0.1", user=USER, port=server.port)
        await destination.run(server, filter=verdicts({}, seen), account=account)
        assert wire(server, "TOP") == [b"TOP 1 0", b"TOP 2 0", b"TOP 3 0", b"TOP 4 0"]
    assert [(h.number, h.uid, h.size) for h in seen] == [
        (n, uids[n - 1], len(RICH[n - 1])) for n in (1, 2, 3, 4)
    ]
    assert [h.data for h in seen] == [m[: header_end(m)] for m in RICH]
    assert seen[1].data == b"Received: from x\r\n\tby y\r\nSubject: folded\r\n\r\n"
    assert all(h.account is account for h in seen)
    assert seen[1].message()["Subject"] == "folded"
    assert destination.held() == sorted(RICH)


async def test_the_filter_fetches_skips_or_deletes_unread(destination: Destination) -> None:
    mailbox, server = serve(*MAIL)
    uids = uids_of(mailbox)
    async with server:
        result = await destination.run(server, filter=verdicts({2: "skip", 3: "delete"}))
        assert wire(server) == [
            b"TOP 1 0", b"TOP 2 0", b"TOP 3 0", b"TOP 4 0",
            b"RETR 1", b"RETR 4", b"DELE 3", b"QUIT",
        ]  # fmt: skip
        assert result.filtered == [
            aiopop.Filtered(2, uids[1], SIZES[1], "skip", "filter"),
            aiopop.Filtered(3, uids[2], SIZES[2], "delete", "filter"),
        ]
        assert (numbers(result.delivered), result.marked) == ([1, 4], [3])
        assert mailbox.messages == [MAIL[0], MAIL[1], MAIL[3]]
        assert destination.held() == sorted([MAIL[0], MAIL[3]])
        assert sorted(rows(destination.state)) == sorted([uids[0], uids[3]])
        # A skipped message is judged again by the next run (it is number 2 still).
        seen: list[aiopop.MessageHeaders] = []
        again = await destination.run(server, filter=verdicts({}, seen))
        assert wire(server) == [b"TOP 2 0", b"RETR 2", b"QUIT"]
    assert [h.uid for h in seen] == [uids[1]]
    assert (numbers(again.delivered), again.skipped) == ([2], 2)
    assert destination.held() == sorted([MAIL[0], MAIL[1], MAIL[3]])


async def test_a_filters_delete_is_committed_only_at_quit(destination: Destination) -> None:
    mailbox, server = serve(*MAIL[:2])
    async with server:
        result = await destination.run(server, filter=verdicts({2: "delete"}), quit=False)
        assert wire(server, "RETR", "DELE", "QUIT") == [b"RETR 1", b"DELE 2"]
    assert result.marked == [2]
    assert mailbox.messages == MAIL[:2]
    assert destination.held() == [MAIL[0]]


async def test_a_filter_raising_delivery_error_leaves_the_message(
    destination: Destination,
) -> None:
    mailbox, server = serve(*MAIL[:3])
    uids = uids_of(mailbox)
    async with server:
        result = await destination.run(server, filter=verdicts({2: "error"}), delete=True)
        assert wire(server, "RETR", "DELE") == [b"RETR 1", b"RETR 3", b"DELE 1", b"DELE 3"]
    [undelivered] = result.undelivered
    assert (undelivered.number, undelivered.uid) == (2, uids[1])
    assert str(undelivered.error) == "cannot judge 2"
    assert mailbox.messages == [MAIL[1]]
    assert destination.held() == sorted([MAIL[0], MAIL[2]])
    assert uids[1] not in rows(destination.state)


async def test_a_filter_answering_anything_else_stops_the_run(destination: Destination) -> None:
    mailbox, server = serve(*MAIL[:3])
    async with server:
        with pytest.raises(ValueError, match="'fetch', 'skip' or 'delete', not 'maybe'"):
            await destination.run(server, filter=verdicts({2: "maybe"}), delete=True)
        assert not {"RETR", "DELE", "QUIT"} & set(server.sessions[-1].keywords)
    assert mailbox.messages == MAIL[:3]
    assert destination.held() == []
    assert rows(destination.state) == {}


async def test_a_top_refused_leaves_that_message(destination: Destination) -> None:
    mailbox, server = serve(*MAIL)
    uids = uids_of(mailbox)
    async with server:
        await destination.run(server, filter=verdicts({}), dry_run=True)  # a probe
        top = server.sessions[-1].lines.index(b"TOP 2 0") + 1
        server.faults = Faults(error_at=top)
        result = await destination.run(server, filter=verdicts({}), delete=True)
        assert wire(server, "RETR", "DELE") == [
            b"RETR 1", b"RETR 3", b"RETR 4", b"DELE 1", b"DELE 3", b"DELE 4",
        ]  # fmt: skip
    [refused] = result.refused
    assert (refused.number, refused.uid, refused.error.command) == (2, uids[1], "TOP")
    assert mailbox.messages == [MAIL[1]]
    assert destination.held() == sorted([MAIL[0], MAIL[2], MAIL[3]])


# -- the dry run -----------------------------------------------------------------------------------


async def test_a_dry_run_creates_nothing_and_retrieves_nothing(destination: Destination) -> None:
    mailbox, server = serve(*MAIL)
    uids = uids_of(mailbox)
    async with server:
        result = await destination.run(
            server,
            dry_run=True,
            delete=True,
            delete_larger_than=50,
            filter=verdicts({2: "delete", 3: "skip"}),
        )
        assert wire(server) == [b"TOP 1 0", b"TOP 2 0", b"TOP 3 0", b"QUIT"]
    assert result.plan == aiopop.Plan(
        fetch=[aiopop.Planned(1, uids[0], SIZES[0])],
        # What delete would delete once delivered (message 1) is not listed.
        delete=[aiopop.Planned(2, uids[1], SIZES[1]), aiopop.Planned(4, uids[3], SIZES[3])],
    )
    assert (result.delivered, result.marked) == ([], [])
    assert os.listdir(destination.root) == []  # no Maildir, no state file
    assert destination.held() == []
    assert mailbox.messages == MAIL


async def test_a_dry_run_plans_what_the_real_run_then_does(destination: Destination) -> None:
    mailbox, server = serve(*MAIL[:3])
    uids = uids_of(mailbox)
    options: dict[str, Any] = {
        "delete_after_days": 7,
        "delete_larger_than": 100,
        "max_size": 80,
        "filter": verdicts({7: "delete", 8: "skip"}),
    }
    added = [
        MAIL[3],  # 4: fetched
        b"x" * 120,  # 5: over delete_larger_than, deleted unread
        b"y" * 90,  # 6: over max_size only, left
        b"Subject: 7\r\n\r\n",  # 7: the filter deletes it
        b"Subject: 8\r\n\r\n",  # 8: the filter skips it
    ]
    async with server:
        await destination.run(server)
        age(destination.state, [uids[0], uids[2]], 8)  # 1 and 3 are due, 2 is not
        uids += [mailbox.add(data) for data in added]
        before = destination.files()
        dry = await destination.run(server, dry_run=True, **options)
        assert wire(server) == [b"TOP 4 0", b"TOP 7 0", b"TOP 8 0", b"QUIT"]
        assert destination.files() == before  # the state file and the Maildir, byte for byte
        real = await destination.run(server, **options)
        assert wire(server, "RETR", "DELE") == [
            b"RETR 4", b"DELE 1", b"DELE 3", b"DELE 5", b"DELE 7",
        ]  # fmt: skip
    assert dry.plan is not None
    assert [(p.number, p.uid) for p in dry.plan.fetch] == [(4, uids[3])]
    assert [(p.number, p.uid) for p in dry.plan.delete] == [(n, uids[n - 1]) for n in (1, 3, 5, 7)]
    assert [p.number for p in dry.plan.fetch] == numbers(real.delivered)
    assert [p.number for p in dry.plan.delete] == real.marked
    assert (dry.filtered, dry.oversized) == (real.filtered, real.oversized)
    assert numbers(real.oversized) == [6]
    assert mailbox.messages == [MAIL[1], MAIL[3], b"y" * 90 + b"\r\n", b"Subject: 8\r\n\r\n"]
    assert destination.held() == sorted(MAIL)


async def test_a_dry_run_sends_no_retr_after_a_session_that_ended_before_quit(
    tmp_path: Path,
) -> None:
    destination = Destination("maildir", tmp_path)
    _, server = serve(*MAIL[:2])
    async with server:
        await destination.run(server, delete=True, quit=False)  # marked, not deleted
        before = destination.files()
        dry = await destination.run(server, dry_run=True, delete=True)
        assert destination.files() == before
        assert dry.plan is not None
        assert [p.number for p in dry.plan.delete] == [1, 2]
        assert wire(server, "RETR", "DELE") == []


async def test_a_dry_runs_plan_deletes_imported_messages_as_the_real_run_does(
    destination: Destination,
) -> None:
    mailbox, server = serve(*MAIL[:2])
    await import_uids(destination, uids_of(mailbox))
    async with server:
        dry = await destination.run(server, dry_run=True, delete=True)
        real = await destination.run(server, delete=True)
    assert real.marked == [1, 2]
    assert dry.plan is not None
    assert [p.number for p in dry.plan.delete] == real.marked


@pytest.mark.parametrize("file", ["in tmp", "gone"])
async def test_a_dry_runs_plan_agrees_with_what_recovery_changes(tmp_path: Path, file: str) -> None:
    destination = Destination("maildir", tmp_path)
    mailbox, server = serve(*MAIL[:2])
    uids = uids_of(mailbox)
    async with server:
        await destination.run(server)
        age(destination.state, uids, 30)
        interrupt(destination, uids[0])
        if file == "gone":
            name = rows(destination.state)[uids[0]].name
            assert name is not None
            os.remove(destination.box / "tmp" / name)
        dry = await destination.run(server, dry_run=True, delete_after_days=7)
        real = await destination.run(server, delete_after_days=7)
    expected = ([], [1, 2]) if file == "in tmp" else ([1], [2])
    assert (numbers(real.delivered), real.marked) == expected
    assert dry.plan is not None
    assert ([p.number for p in dry.plan.fetch], [p.number for p in dry.plan.delete]) == expected


VERSION_1 = """
CREATE TABLE messages (
    account TEXT NOT NULL, uid TEXT NOT NULL, name TEXT NOT NULL UNIQUE, size INTEGER,
    delivered INTEGER NOT NULL DEFAULT 0, recorded REAL NOT NULL,
    PRIMARY KEY (account, uid)
);
CREATE INDEX pending ON messages (delivered) WHERE delivered = 0;
PRAGMA user_version = 1;
"""
"""The state file of aiopop's first release (as in test_delivery_state.py)."""


def version_1_maildir(box: Path, account: str, mailbox: Mailbox) -> None:
    """A Maildir holding every message of ``mailbox``, recorded in a version-1 state file."""
    for sub in ("tmp", "new", "cur"):
        (box / sub).mkdir(parents=True)
    db = sqlite3.connect(box / STATE_FILE)
    with db:
        db.executescript(VERSION_1)
        for index, (data, uid) in enumerate(zip(mailbox.messages, uids_of(mailbox), strict=True)):
            assert isinstance(data, bytes)
            (box / "new" / f"old{index}").write_bytes(data)
            db.execute(
                "INSERT INTO messages VALUES (?, ?, ?, ?, 1, 1000.0)",
                (account, uid, f"old{index}", len(data)),
            )
    db.close()


async def test_a_dry_run_leaves_an_old_state_file_as_it_was(tmp_path: Path) -> None:
    destination = Destination("maildir", tmp_path)
    mailbox, server = serve(*MAIL[:2])
    version_1_maildir(destination.box, ACCOUNT, mailbox)
    before = destination.state.read_bytes()
    async with server:
        dry = await destination.run(server, dry_run=True)
        assert wire(server, "RETR", "DELE") == []
    assert dry.plan == aiopop.Plan(fetch=[], delete=[])
    assert destination.state.read_bytes() == before


async def test_a_dry_run_on_a_non_standard_port_plans_as_the_real_run_does(
    tmp_path: Path,
) -> None:
    destination = Destination("maildir", tmp_path)
    mailbox, server = serve(*MAIL[:2])
    version_1_maildir(destination.box, "alice@127.0.0.1", mailbox)  # version 1: no port
    async with server:
        account = aiopop.Account(host="127.0.0.1", user=USER, port=server.port)
        dry = await destination.run(server, dry_run=True, account=account)
        real = await destination.run(server, account=account)
    assert (real.delivered, real.skipped) == ([], 2)
    assert dry.plan is not None
    assert dry.plan.fetch == []


async def test_a_dry_run_creates_no_lock_file(destination: Destination) -> None:
    _, server = serve(*MAIL[:2])
    async with server:
        await destination.run(server, account="someone@else")  # the state file exists
        before = destination.files()
        await destination.run(server, dry_run=True)
    assert destination.files() == before


# -- imported rows ---------------------------------------------------------------------------


def fetchids(destination: Destination, uids: list[str]) -> Path:
    """fetchmail's idfile naming ``uids`` for ACCOUNT; the state file's directory made."""
    destination.state.parent.mkdir(parents=True, exist_ok=True)
    ids = destination.root / "fetchids"
    ids.write_text("".join(f"alice@test {uid}\n" for uid in uids))
    return ids


async def import_uids(destination: Destination, uids: list[str]) -> None:
    """Record ``uids`` for ACCOUNT as an import from fetchmail does: delivered, no size."""
    ids = fetchids(destination, uids)
    result = await aiopop.import_state("fetchmail", ids, destination.state, user=USER, host="test")
    assert (result.mailbox, result.imported) == (ACCOUNT, len(uids))
    os.remove(ids)


async def test_imported_rows_get_their_list_size_and_age_from_the_import(
    destination: Destination,
) -> None:
    mailbox, server = serve(*MAIL[:3])
    uids = uids_of(mailbox)
    await import_uids(destination, uids[:2])
    imported = rows(destination.state)
    assert [row.size for row in imported.values()] == [None, None]
    async with server:
        first = await destination.run(server, delete_after_days=7)
        assert wire(server) == [b"RETR 3", b"QUIT"]
        learnt = rows(destination.state)
        assert [learnt[uid].size for uid in uids[:2]] == SIZES[:2]
        for uid in uids[:2]:  # the age still counts from the import
            assert learnt[uid].first_delivered == imported[uid].first_delivered
        age(destination.state, uids[:1], 8)
        second = await destination.run(server, delete_after_days=7)
        assert wire(server) == [b"DELE 1", b"QUIT"]
    assert (numbers(first.delivered), first.skipped, first.marked) == ([3], 2, [])
    assert (second.delivered, second.marked) == ([], [1])
    assert mailbox.messages == MAIL[1:3]
    assert destination.held() == [MAIL[2]]


# -- the model: which numbers get TOP, RETR and DELE ----------------------------------------------

RECORDS = st.sampled_from([None, None, "same", "other-size", "imported", "pending"])
AGES = st.sampled_from([0.0, 3.0, 8.0, 30.0])
POLICIES: dict[str, dict[str, Any]] = {
    "keep": {},
    "delete": {"delete": True},
    "after 0 days": {"delete_after_days": 0},
    "after 7 days": {"delete_after_days": 7},
}


@dataclasses.dataclass(frozen=True)
class Case:
    """One run: the mailbox, what the state holds of it, the options, the verdicts."""

    bodies: list[int]
    records: list[tuple[str | None, float]]
    policy: str
    new_only: bool
    max_size: int | None
    delete_larger_than: int | None
    answers: list[str] | None
    """The filter's answer per message ("error": DeliveryError); None: no filter."""
    refuse: list[bool]
    """Whether the callable refuses each message with DeliveryError."""
    dry_run: bool

    def messages(self) -> list[bytes]:
        return [
            b"Subject: m%d\r\n\r\n" % n + b"y" * body + b"\r\n"
            for n, body in enumerate(self.bodies, 1)
        ]


@st.composite
def cases(draw: st.DrawFn) -> Case:
    bodies = draw(st.lists(st.sampled_from([0, 20, 60, 120]), min_size=1, max_size=6))
    count = len(bodies)
    sizes = [len(b"Subject: m1\r\n\r\n\r\n") + body for body in bodies]
    limit = st.one_of(st.none(), st.sampled_from(sizes), st.sampled_from([s - 1 for s in sizes]))
    records = draw(st.lists(st.tuples(RECORDS, AGES), min_size=count, max_size=count))
    dry_run = draw(st.booleans())
    if dry_run:  # see test_a_dry_runs_plan_deletes_imported_messages_as_the_real_run_does
        records = [("same", days) if kind == "imported" else (kind, days) for kind, days in records]
    answers = st.lists(st.sampled_from(["fetch", "fetch", "skip", "delete", "error"]),
                       min_size=count, max_size=count)  # fmt: skip
    return Case(
        bodies=bodies,
        records=records,
        policy=draw(st.sampled_from(sorted(POLICIES))),
        new_only=draw(st.booleans()),
        max_size=draw(limit),
        delete_larger_than=draw(limit),
        answers=draw(st.one_of(st.none(), answers)),
        refuse=draw(st.lists(st.booleans(), min_size=count, max_size=count)),
        dry_run=dry_run,
    )


@dataclasses.dataclass
class Expected:
    top: list[int] = dataclasses.field(default_factory=list)
    retr: list[int] = dataclasses.field(default_factory=list)
    delivered: list[int] = dataclasses.field(default_factory=list)
    skipped: int = 0
    oversized: list[int] = dataclasses.field(default_factory=list)
    filtered: list[tuple[int, str, str]] = dataclasses.field(default_factory=list)
    undelivered: list[int] = dataclasses.field(default_factory=list)
    due: set[int] = dataclasses.field(default_factory=set)
    judged: set[int] = dataclasses.field(default_factory=set)
    dele: list[int] = dataclasses.field(default_factory=list)


def model(case: Case) -> Expected:
    """What fetch_into's docstring says the run does, computed the simple way."""
    sizes = [len(m) for m in case.messages()]
    after = {"keep": None, "delete": 0.0, "after 0 days": 0.0, "after 7 days": 7.0}[case.policy]
    expected = Expected()
    by_filter: list[tuple[int, str, str]] = []
    filter_errors: list[int] = []
    for number, ((kind, days), size) in enumerate(zip(case.records, sizes, strict=True), 1):
        # Recorded with this size ("imported" learns it now; "other-size" is another message).
        known = kind in ("same", "imported", "pending")
        if known and kind != "pending" and after is not None and days >= after:
            expected.due.add(number)
        if case.new_only and known:
            expected.skipped += 1
            continue
        if case.delete_larger_than is not None and size > case.delete_larger_than:
            expected.filtered.append((number, "delete", "size"))
            expected.judged.add(number)
            continue
        if case.max_size is not None and size > case.max_size:
            expected.oversized.append(number)
            continue
        if case.answers is not None:
            expected.top.append(number)
            answer = case.answers[number - 1]
            if answer == "error":
                filter_errors.append(number)
                continue
            if answer != "fetch":
                by_filter.append((number, answer, "filter"))
                if answer == "delete":
                    expected.judged.add(number)
                continue
        expected.retr.append(number)
    expected.filtered += by_filter
    if not case.dry_run:
        expected.delivered = [n for n in expected.retr if not case.refuse[n - 1]]
        refused = [n for n in expected.retr if case.refuse[n - 1]]
        expected.undelivered = filter_errors + refused
        now = set(expected.delivered) if after == 0 else set()
        expected.dele = sorted(expected.due | expected.judged | now)
    else:
        expected.undelivered = filter_errors
    return expected


async def play(case: Case, directory: Path) -> None:
    """Run ``case`` against a fresh server and state; check wire, server and state."""
    messages = case.messages()
    mailbox = Mailbox(PASSWORD, list(messages))
    uids = uids_of(mailbox)
    state = directory / "state.sqlite3"
    await (await DeliveryState.open(state)).close()
    start = time.time()
    db = sqlite3.connect(state)
    with db:
        for uid, data, (kind, days) in zip(uids, messages, case.records, strict=True):
            if kind is not None:
                size = {"other-size": len(data) + 7, "imported": None}.get(kind, len(data))
                db.execute(
                    "INSERT INTO messages (mailbox, uid, size, delivered, first_delivered)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (ACCOUNT, uid, size, int(kind != "pending"), start - days * DAY),
                )
    db.close()
    before = rows(state)
    before_bytes = state.read_bytes()
    expected = model(case)
    hand = Hand(refuse=[n for n, refuse in enumerate(case.refuse, 1) if refuse])
    options: dict[str, Any] = {
        **POLICIES[case.policy],
        "state": state,
        "new_only": case.new_only,
        "max_size": case.max_size,
        "delete_larger_than": case.delete_larger_than,
        "dry_run": case.dry_run,
    }
    if case.answers is not None:
        options["filter"] = verdicts(dict(enumerate(case.answers, 1)))
    async with POP3TestServer({USER: mailbox}) as server:
        result = await run_into(server, hand, **options)
    sent = wire(server)
    assert sent == [
        *(b"TOP %d 0" % n for n in expected.top),
        *(b"RETR %d" % n for n in expected.retr if not case.dry_run),
        *(b"DELE %d" % n for n in expected.dele),
        b"QUIT",
    ]
    assert hand.numbers == expected.delivered
    assert [m.data for m in hand.got] == [messages[n - 1] for n in expected.delivered]
    assert numbers(result.delivered) == expected.delivered
    assert result.skipped == expected.skipped
    assert numbers(result.oversized) == expected.oversized
    # In which order the judged and the undelivered are listed is left open.
    assert sorted((f.number, f.verdict, f.by) for f in result.filtered) == sorted(expected.filtered)
    assert sorted(numbers(result.undelivered)) == sorted(expected.undelivered)
    assert result.marked == expected.dele
    assert result.refused == []
    assert mailbox.messages == [m for n, m in enumerate(messages, 1) if n not in expected.dele]
    if case.dry_run:
        assert result.plan is not None
        assert numbers(result.plan.fetch) == expected.retr
        assert numbers(result.plan.delete) == sorted(expected.due | expected.judged)
        assert state.read_bytes() == before_bytes
        return
    after = rows(state)
    for number, uid in enumerate(uids, 1):
        kind, _ = case.records[number - 1]
        row, old = after.get(uid), before.get(uid)
        if number in expected.delivered:
            assert row is not None
            assert (row.size, row.delivered) == (len(messages[number - 1]), 1)
            if kind in ("same", "pending", "imported"):  # the same message again: age kept
                assert old is not None
                assert row.first_delivered == old.first_delivered
            else:
                assert row.first_delivered >= start
        elif old is None:
            assert row is None  # not delivered: not recorded
        else:
            assert row is not None
            learnt = len(messages[number - 1]) if kind == "imported" else old.size
            assert (row.size, row.delivered) == (learnt, old.delivered)
            assert row.first_delivered == old.first_delivered
        if row is not None:
            assert (row.marked is not None) == (number in expected.dele)


@settings(
    max_examples=50,
    deadline=None,
    derandomize=True,  # the same cases on every run
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(case=cases())
def test_the_engine_decides_as_the_model_says(case: Case) -> None:
    with tempfile.TemporaryDirectory(prefix="aiopop-policies-") as directory:
        asyncio.run(play(case, Path(directory)))
