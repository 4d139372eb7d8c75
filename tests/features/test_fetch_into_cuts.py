"""fetch_into to a command, with the policies: the connection cut at every step, and the
command failing, hanging or killed, lose nothing and delete nothing early.

The trust issue's fault tests (test_fetch_cuts.py) for the other destination
and the policies: after each fault the server's mailbox, the messages the
command filed and the state file are read; a rerun finishes the job with
each message delivered once.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import sys
from pathlib import Path
from typing import Any

import pytest

import aiopop
from aiopop import CommandDelivery
from tests.helpers.cutting import HOW, Cut, CuttingProxy
from tests.helpers.fetch import ACCOUNT, PASSWORD, USER, Hand, age, rows, serve

MESSAGES = [b"Subject: %d\r\n\r\nbody %d\r\n.dot\r\n" % (n, n) for n in range(1, 5)]

# Files each message under its unique-id, and logs each run (so a duplicate shows). A
# unique-id listed in OUT/kill makes it kill itself with SIGKILL, one in OUT/hang sleep.
FILE = r"""
import os, sys, time, signal
out, uid = sys.argv[1], os.environ["AIOPOP_UID"]
def listed(name):
    path = os.path.join(out, name)
    return os.path.exists(path) and uid in open(path).read().split()
data = sys.stdin.buffer.read()
if listed("kill"):
    os.kill(os.getpid(), signal.SIGKILL)
if listed("hang"):
    time.sleep(60)
open(os.path.join(out, uid), "wb").write(data)
with open(os.path.join(out, "log"), "a") as log:
    log.write(uid + "\n")
"""


def command(tmp_path: Path) -> tuple[CommandDelivery, Path]:
    out = tmp_path / "out"
    out.mkdir(parents=True, exist_ok=True)
    script = tmp_path / "file.py"
    script.write_text(FILE, encoding="utf-8")
    return CommandDelivery([sys.executable, str(script), str(out)], time_limit=5, grace=0.5), out


def filed(out: Path) -> collections.Counter[str]:
    log = out / "log"
    return collections.Counter(log.read_text().split() if log.exists() else [])


async def run(port: int, deliver: CommandDelivery, state: Path, **options: Any) -> None:
    async with aiopop.POP3("127.0.0.1", port, timeout=5) as client:
        await client.login(USER, PASSWORD)
        await aiopop.fetch_into(client, deliver, account=ACCOUNT, state=state, **options)


async def commands_of_a_run(tmp_path: Path, **options: Any) -> int:
    _, server = serve(*MESSAGES)
    deliver, _ = command(tmp_path)
    async with server, CuttingProxy(server.port) as proxy:
        await run(proxy.port, deliver, tmp_path / "state", **options)
    assert proxy.commands[-1] == b"QUIT"
    return len(proxy.commands)


def cut_points(commands: int) -> list[Cut]:
    points = [Cut(0, "whole")]
    for reply in range(1, commands + 1):
        points += [Cut(reply, how) for how in HOW]  # type: ignore[arg-type]
    return points


@pytest.mark.parametrize("policy", [{"delete": True}, {"delete_after_days": 0}])
async def test_a_cut_at_every_step_delivers_each_message_once_and_loses_none(
    tmp_path: Path, policy: dict[str, Any]
) -> None:
    points = cut_points(await commands_of_a_run(tmp_path / "probe", **policy))
    assert len(points) >= 25
    for index, cut in enumerate(points):
        where = tmp_path / f"{index}-{cut}"
        mailbox, server = serve(*MESSAGES)
        deliver, out = command(where)
        state = where / "state"
        async with server:
            async with CuttingProxy(server.port, cut) as proxy:
                with contextlib.suppress(aiopop.POP3Error, OSError):
                    await run(proxy.port, deliver, state, **policy)
                await server.wait_idle()
            assert proxy.cuts == 1, f"{cut} was never reached"
            assert mailbox.uids is not None
            counts = filed(out)
            recorded = set(rows(state)) if state.exists() else set()  # cut before it opened
            assert max(counts.values(), default=1) == 1, f"after {cut}: filed twice"
            every = recorded | set(mailbox.uids) | set(counts)
            assert len(every) == len(MESSAGES)
            gone = every - set(mailbox.uids)
            assert gone <= set(counts) & recorded, f"after {cut}: deleted before it was filed"
            assert every <= set(mailbox.uids) | set(counts), f"after {cut}: a message lost"
            await run(server.port, deliver, state, **policy)
            await server.wait_idle()
        assert mailbox.messages == [], f"after {cut}: the rerun did not finish"
        assert sorted(filed(out).values()) == [1, 1, 1, 1], f"after {cut}: not each once"


async def test_a_command_killed_by_a_signal_loses_nothing_and_deletes_nothing(
    tmp_path: Path,
) -> None:
    mailbox, server = serve(*MESSAGES)
    deliver, out = command(tmp_path)
    state = tmp_path / "state"
    async with server:
        assert mailbox.uids is not None
        killed = mailbox.uids[1]
        (out / "kill").write_text(killed)
        await run(server.port, deliver, state, delete=True)
        await server.wait_idle()
        assert killed not in filed(out)
        assert killed not in rows(state)
        assert mailbox.uids == [killed]  # the three others filed and deleted at QUIT
        (out / "kill").unlink()
        await run(server.port, deliver, state, delete=True)
        await server.wait_idle()
    assert mailbox.messages == []
    assert sorted(filed(out).values()) == [1, 1, 1, 1]


async def test_a_run_cancelled_while_the_command_hangs_deletes_nothing(tmp_path: Path) -> None:
    """As the daemon's SIGTERM does: the command is stopped, the session ends without QUIT."""
    mailbox, server = serve(*MESSAGES)
    deliver, out = command(tmp_path)
    state = tmp_path / "state"
    async with server:
        assert mailbox.uids is not None
        (out / "hang").write_text(mailbox.uids[2])
        task = asyncio.create_task(run(server.port, deliver, state, delete=True))
        while len(filed(out)) < 2:  # noqa: ASYNC110 - the command's files
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.3)  # the third is hanging now
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await server.wait_idle()
        assert len(mailbox.messages) == 4  # no QUIT: nothing deleted
        assert set(rows(state)) == set(mailbox.uids[:2])
        (out / "hang").unlink()
        await run(server.port, deliver, state, delete=True)
        await server.wait_idle()
    assert mailbox.messages == []
    assert sorted(filed(out).values()) == [1, 1, 1, 1]  # the two recorded were not filed again


async def aged_run(where: Path, cut: Cut | None) -> tuple[int, list[str], list[str], Path]:
    """Deliver four messages, age two rows by 8 days, then run with ``delete_after_days=7``
    through a proxy cutting at ``cut`` (None: no cut) and run again. Returns the commands
    of the cut run, the unique-ids on the server after the cut and after the rerun, and
    the command's folder."""
    mailbox, server = serve(*MESSAGES)
    deliver, out = command(where)
    state = where / "state"
    async with server:
        async with aiopop.POP3("127.0.0.1", server.port, timeout=5) as client:
            await client.login(USER, PASSWORD)
            await aiopop.fetch_into(client, Hand(), account=ACCOUNT, state=state)
        assert mailbox.uids is not None
        age(state, mailbox.uids[:2], 8)
        async with CuttingProxy(server.port, cut) as proxy:
            with contextlib.suppress(aiopop.POP3Error, OSError):
                await run(proxy.port, deliver, state, delete_after_days=7)
            await server.wait_idle()
        assert proxy.cuts == (cut is not None), f"{cut} was never reached"
        after_cut = list(mailbox.uids)
        await run(server.port, deliver, state, delete_after_days=7)
        await server.wait_idle()
    return len(proxy.commands), after_cut, list(mailbox.uids), out


async def test_delete_after_days_deletes_nothing_early_whatever_is_cut(tmp_path: Path) -> None:
    """Two rows aged 8 days, two young: a cut at any step of the run that deletes the old
    ones never deletes a young one, and the rerun deletes exactly the old ones."""
    commands, _, left, _ = await aged_run(tmp_path / "probe", None)
    young = set(left)
    assert len(young) == 2
    for index, cut in enumerate(cut_points(commands)):
        _, after_cut, after_rerun, out = await aged_run(tmp_path / f"{index}-{cut}", cut)
        assert young <= set(after_cut), f"after {cut}: a young message deleted"
        assert set(after_rerun) == young, f"after {cut}: the rerun did not finish"
        assert filed(out) == collections.Counter()  # all delivered before: none again
