"""CommandDelivery and FilterCommand, against real programs (no mock of subprocess).

Each program records what it was given (its standard input, environment
and arguments, its pid and its child's) in files under tmp_path, and the
tests read them there. A process counts as gone when ``os.kill(pid, 0)``
finds nothing or finds a zombie: a killed grandchild is reparented to
init, and reaping it is init's job (in some containers init never does).
"""

from __future__ import annotations

import asyncio
import json
import os
import pickle
import signal
import sys
import time
import tracemalloc
from collections.abc import Sequence
from pathlib import Path

import pytest

import aiopop
from aiopop import (
    Account,
    CommandDelivery,
    DeliveryError,
    FailureKind,
    FilterCommand,
    MessageHeaders,
    NewMessage,
)

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX process groups")

# Records its standard input, environment and arguments in the directory argv[1], then exits
# with the status argv[2] (0 when not given).
RECORD = r"""
import json, os, sys
out = sys.argv[1]
data = sys.stdin.buffer.read()
with open(os.path.join(out, "stdin"), "wb") as f:
    f.write(data)
with open(os.path.join(out, "env.json"), "w") as f:
    json.dump(dict(os.environ), f)
with open(os.path.join(out, "argv.json"), "w") as f:
    json.dump(sys.argv[1:], f)
sys.exit(int(sys.argv[2]) if len(sys.argv) > 2 else 0)
"""

MESSAGE = (
    b"From: a@example.com\r\nSubject: =?utf-8?q?caf=C3=A9?=\r\n\r\n"
    b"line one\r\n.a line that began with two dots\r\nbare\rcarriage return\r\n"
    b"\xff\xfe not UTF-8\r\n"
)
BIG = 1 << 20  # more than a pipe holds


def record(out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-c", RECORD, str(out), *extra]


def shell(tmp_path: Path, body: str, *args: str) -> list[str]:
    """A /bin/sh script written to tmp_path: the test's own, run as a program, not via a shell."""
    script = tmp_path / f"script{len(list(tmp_path.glob('script*')))}.sh"
    script.write_text(body)
    return ["/bin/sh", str(script), *args]


def message(data: bytes = MESSAGE, *, account: Account | None = None) -> NewMessage:
    return NewMessage("uid-1", 3, data, account)


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rpartition(")")[2].split()[0] == "Z"  # dead, not yet reaped by init


async def all_gone(pids: Sequence[int], within: float = 3.0) -> bool:
    deadline = time.monotonic() + within
    while not all(gone(pid) for pid in pids):
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


def pids_in(path: Path) -> list[int]:
    return [int(line) for line in path.read_text().split()] if path.exists() else []


async def pids_written(path: Path, count: int = 2, within: float = 10.0) -> list[int]:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        pids = pids_in(path)
        if len(pids) >= count:
            return pids[:count]
        await asyncio.sleep(0.02)
    raise AssertionError(f"{path} never held {count} pids")


async def appears(path: Path, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if path.exists():  # noqa: ASYNC240 (one stat, a test's poll)
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{path} never appeared")


# A program that writes its pid and a child's to argv[1], never reads its input, and waits.
PARENT_AND_CHILD = """
sleep 60 &
echo $$ > "$1"
echo $! >> "$1"
wait
"""

# The same, but neither it nor its child gives way to SIGTERM; it notes SIGTERM in argv[2].
STUBBORN = """
trap 'echo term >> "$2"' TERM
sh -c 'trap "" TERM; exec sleep 60' &
echo $$ > "$1"
echo $! >> "$1"
while :; do wait; done
"""


# -- delivered ------------------------------------------------------------------------------


async def test_exit_0_delivers_the_exact_bytes_with_lf_line_ends(tmp_path: Path) -> None:
    delivery = CommandDelivery(record(tmp_path))
    await delivery(message())
    received = (tmp_path / "stdin").read_bytes()
    assert received == MESSAGE.replace(b"\r\n", b"\n")
    assert b"\r\n" not in received
    assert b"bare\rcarriage" in received  # only CRLF pairs change
    assert b"\n.a line" in received  # dots as the server meant them, no stuffing


@pytest.mark.parametrize("size", [0, 3 * BIG])
async def test_an_empty_and_a_large_message_arrive_whole(tmp_path: Path, size: int) -> None:
    data = (b"x" * 77 + b"\r\n") * (size // 79)
    await CommandDelivery(record(tmp_path))(message(data))
    assert (tmp_path / "stdin").read_bytes() == data.replace(b"\r\n", b"\n")


async def test_the_environment_names_the_account_and_the_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("INHERITED", "yes")
    monkeypatch.setenv("AIOPOP_UID", "stale")  # from an outer run: never passed on as is
    account = Account("POP.example.com", "alice", port=1100, label="work")
    delivery = CommandDelivery(record(tmp_path), env={"EXTRA": "1", "INHERITED": "overridden"})
    await delivery(message(account=account))
    env = json.loads((tmp_path / "env.json").read_text())
    assert env["AIOPOP_ACCOUNT"] == "work"
    assert env["AIOPOP_MAILBOX"] == "alice@pop.example.com:1100"
    assert env["AIOPOP_HOST"] == "POP.example.com"
    assert env["AIOPOP_USER"] == "alice"
    assert env["AIOPOP_UID"] == "uid-1"
    assert env["AIOPOP_NUMBER"] == "3"
    assert env["AIOPOP_SIZE"] == str(len(MESSAGE))  # the network form, CRLF included
    assert int(env["AIOPOP_SIZE"]) > len((tmp_path / "stdin").read_bytes())
    assert (env["EXTRA"], env["INHERITED"]) == ("1", "overridden")
    assert env["PATH"] == os.environ["PATH"]


async def test_without_an_account_no_account_variable_is_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIOPOP_HOST", "stale.example.com")
    await CommandDelivery(record(tmp_path))(message())
    env = json.loads((tmp_path / "env.json").read_text())
    assert not {"AIOPOP_ACCOUNT", "AIOPOP_MAILBOX", "AIOPOP_HOST", "AIOPOP_USER"} & set(env)
    assert (env["AIOPOP_UID"], env["AIOPOP_NUMBER"]) == ("uid-1", "3")


async def test_a_message_without_a_unique_id_gets_no_aiopop_uid(tmp_path: Path) -> None:
    # fetch_into hands "" as the uid of a message from a server without UIDL.
    await CommandDelivery(record(tmp_path))(NewMessage("", 4, MESSAGE))
    env = json.loads((tmp_path / "env.json").read_text())
    assert "AIOPOP_UID" not in env
    assert env["AIOPOP_NUMBER"] == "4"
    with pytest.raises(DeliveryError) as caught:
        await CommandDelivery(record(tmp_path, "1"))(NewMessage("", 4, MESSAGE))
    assert caught.value.uid is None  # for the engine to fill in, not ""


async def test_no_shell_sees_the_arguments(tmp_path: Path) -> None:
    hostile = [f"; touch {tmp_path}/semicolon", f"$(touch {tmp_path}/substituted)", "`id`", "*"]
    await CommandDelivery(record(tmp_path, "0", *hostile))(message())
    assert json.loads((tmp_path / "argv.json").read_text()) == [str(tmp_path), "0", *hostile]
    assert not (tmp_path / "semicolon").exists()
    assert not (tmp_path / "substituted").exists()


async def test_the_program_runs_in_cwd(tmp_path: Path) -> None:
    where = tmp_path / "here"
    where.mkdir()
    await CommandDelivery(shell(tmp_path, "pwd > where\n"), cwd=where)(message())
    assert (where / "where").read_text().strip() == str(where.resolve())


@pytest.mark.parametrize("reads", ["head -c 10 > part", "true"], ids=["part", "none"])
async def test_exit_0_after_reading_part_of_the_input_delivers(tmp_path: Path, reads: str) -> None:
    data = b"0123456789" + b"y" * BIG
    await CommandDelivery(shell(tmp_path, f"cd {tmp_path}\n{reads}\n"))(message(data))
    if reads.startswith("head"):
        assert (tmp_path / "part").read_bytes() == b"0123456789"


async def test_a_child_left_holding_stderr_does_not_delay_the_verdict(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    body = f"sleep 60 &\necho $! > {pids}\necho delivered >&2\nexit 0\n"
    try:
        await CommandDelivery(shell(tmp_path, body), time_limit=20)(message())
    finally:
        os.kill(int(pids.read_text()), signal.SIGKILL)


# -- not delivered --------------------------------------------------------------------------


@pytest.mark.parametrize("status", [1, 75])
async def test_a_non_zero_exit_is_a_delivery_error_with_stderr(tmp_path: Path, status: int) -> None:
    body = f"echo 'procmail: Quota exceeded' >&2\necho 'second line' >&2\nexit {status}\n"
    argv = shell(tmp_path, body)
    with pytest.raises(DeliveryError) as caught:
        await CommandDelivery(argv)(message(b"x" * BIG))
    error = caught.value
    assert error.uid == "uid-1"
    assert error.reason == (
        f"/bin/sh exited with status {status}; stderr: procmail: Quota exceeded / second line"
    )
    assert str(error) == error.reason


async def test_death_by_a_signal_names_it(tmp_path: Path) -> None:
    argv = [sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"]
    with pytest.raises(DeliveryError, match=r"killed by signal 9 \(SIGKILL\)$"):
        await CommandDelivery(argv)(message())


async def test_a_program_that_never_reads_is_killed_with_its_child(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    delivery = CommandDelivery(shell(tmp_path, PARENT_AND_CHILD, str(pids)), time_limit=0.5)
    started = time.monotonic()
    with pytest.raises(DeliveryError, match=r"gave no answer within 0\.5 s: killed$"):
        await delivery(message(b"z" * BIG))
    assert time.monotonic() - started < 0.5 + delivery.grace + 3
    leader, child = await pids_written(pids)
    with pytest.raises(ProcessLookupError):
        os.kill(leader, 0)  # reaped before the error
    assert await all_gone([child])


async def test_a_program_that_ignores_sigterm_is_killed_after_grace(tmp_path: Path) -> None:
    pids, log = tmp_path / "pids", tmp_path / "log"
    argv = shell(tmp_path, STUBBORN, str(pids), str(log))
    delivery = CommandDelivery(argv, time_limit=0.5, grace=0.5)
    started = time.monotonic()
    with pytest.raises(DeliveryError, match=r"no answer within 0\.5 s"):
        await delivery(message(b"z" * BIG))
    elapsed = time.monotonic() - started
    assert 0.5 + 0.5 * 0.9 <= elapsed < 0.5 + 0.5 + 3  # SIGKILL came after the grace
    assert log.read_text().split() == ["term"]  # SIGTERM came first
    leader, child = await pids_written(pids)
    with pytest.raises(ProcessLookupError):
        os.kill(leader, 0)
    assert await all_gone([child])


async def test_a_chatty_stderr_neither_blocks_nor_is_kept_whole(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "sys.stderr.buffer.write(b'noise ' * ((10 << 20) // 6))\n"
        "sys.stderr.buffer.write(b'\\nTHE END\\n')\n"
        "sys.exit(int(sys.argv[1]))\n"
    )
    # It does not read its input, and writes 10 MiB: both pipes are served at once.
    await CommandDelivery([sys.executable, "-c", code, "0"], time_limit=60)(message(b"i" * BIG))
    tracemalloc.start()
    try:
        with pytest.raises(DeliveryError) as caught:
            await CommandDelivery([sys.executable, "-c", code, "1"], time_limit=60)(message())
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20  # a tail kept, not the 10 MiB
    reason = caught.value.reason
    assert reason.endswith("noise / THE END")
    assert "exited with status 1; stderr: ..." in reason
    assert len(reason) < 700


async def test_control_characters_on_stderr_are_escaped(tmp_path: Path) -> None:
    argv = shell(tmp_path, r"printf 'bad \033[31mred\007\n' >&2; exit 1" + "\n")
    with pytest.raises(DeliveryError) as caught:
        await CommandDelivery(argv)(message())
    assert caught.value.reason.endswith(r"stderr: bad \x1b[31mred\x07")
    assert "\x1b" not in str(caught.value)


# -- a program that cannot be started -------------------------------------------------------


async def test_a_missing_program_is_an_oserror_not_a_delivery_error(tmp_path: Path) -> None:
    missing = str(tmp_path / "no-such-mda")
    with pytest.raises(FileNotFoundError) as caught:
        await CommandDelivery([missing])(message())
    assert not isinstance(caught.value, DeliveryError)
    assert caught.value.filename == missing
    assert aiopop.diagnose(caught.value).kind is FailureKind.LOCAL


async def test_a_program_that_is_not_executable_or_a_missing_cwd(tmp_path: Path) -> None:
    script = tmp_path / "mda"
    script.write_text("#!/bin/sh\nexit 0\n")
    script.chmod(0o644)
    with pytest.raises(PermissionError):
        await CommandDelivery([str(script)])(message())
    with pytest.raises(FileNotFoundError):
        await CommandDelivery(["/bin/sh", "-c", "exit 0"], cwd=tmp_path / "nowhere")(message())


async def test_no_descriptor_is_left_open(tmp_path: Path) -> None:
    def open_fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    failing = CommandDelivery(shell(tmp_path, "echo no >&2; exit 1\n"))
    missing = CommandDelivery([str(tmp_path / "missing")])
    before = open_fds()
    for _ in range(5):
        await CommandDelivery(["/bin/sh", "-c", "cat > /dev/null"])(message())
        with pytest.raises(DeliveryError):
            await failing(message(b"x" * BIG))
        with pytest.raises(FileNotFoundError):
            await missing(message())
    assert open_fds() == before


# -- cancellation ---------------------------------------------------------------------------


async def test_cancelling_stops_the_program_and_its_child(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    delivery = CommandDelivery(shell(tmp_path, PARENT_AND_CHILD, str(pids)), grace=0.5)
    task = asyncio.create_task(delivery(message(b"z" * BIG)))
    leader, child = await pids_written(pids)
    cancelled = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert time.monotonic() - cancelled < delivery.grace + 3
    with pytest.raises(ProcessLookupError):
        os.kill(leader, 0)  # reaped before the cancellation went on
    assert await all_gone([child])


async def test_a_second_cancellation_does_not_cut_the_cleanup_short(tmp_path: Path) -> None:
    pids, log = tmp_path / "pids", tmp_path / "log"
    delivery = CommandDelivery(shell(tmp_path, STUBBORN, str(pids), str(log)), grace=1.0)
    task = asyncio.create_task(delivery(message()))
    leader, child = await pids_written(pids)
    task.cancel()
    await asyncio.sleep(0.2)
    assert not task.done()  # waiting out the grace of a program that ignores SIGTERM
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert log.read_text().split() == ["term"]
    with pytest.raises(ProcessLookupError):
        os.kill(leader, 0)
    assert await all_gone([child])


async def test_a_cancellation_while_stopping_a_late_program_still_stops_it(
    tmp_path: Path,
) -> None:
    pids, log = tmp_path / "pids", tmp_path / "log"
    argv = shell(tmp_path, STUBBORN, str(pids), str(log))
    delivery = CommandDelivery(argv, time_limit=0.3, grace=1.0)
    task = asyncio.create_task(delivery(message()))
    leader, child = await pids_written(pids)
    await appears(log)  # the time limit passed: SIGTERM was sent, and the grace runs
    task.cancel()
    with pytest.raises(asyncio.CancelledError):  # not a DeliveryError: the run is stopping
        await task
    with pytest.raises(ProcessLookupError):
        os.kill(leader, 0)
    assert await all_gone([child])


# -- FilterCommand --------------------------------------------------------------------------

HEADERS = b"From: a@example.com\r\nSubject: hi\r\n\r\n"


def headers(uid: str | None = "uid-7") -> MessageHeaders:
    return MessageHeaders(7, uid, 123456, HEADERS, Account("pop.example.com", "bob"))


@pytest.mark.parametrize(("status", "verdict"), [(0, "fetch"), (1, "delete"), (2, "skip")])
async def test_a_filter_answers_by_its_exit_status(
    tmp_path: Path, status: int, verdict: str
) -> None:
    filter_command: aiopop.Filter = FilterCommand(record(tmp_path, str(status)))
    assert await filter_command(headers()) == verdict
    assert (tmp_path / "stdin").read_bytes() == b"From: a@example.com\nSubject: hi\n\n"
    env = json.loads((tmp_path / "env.json").read_text())
    assert env["AIOPOP_SIZE"] == "123456"  # the LIST size, not that of the headers
    assert (env["AIOPOP_UID"], env["AIOPOP_NUMBER"]) == ("uid-7", "7")
    assert env["AIOPOP_MAILBOX"] == "bob@pop.example.com"


async def test_a_filter_without_a_uid_gets_no_aiopop_uid(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIOPOP_UID", "stale")
    assert await FilterCommand(record(tmp_path))(headers(uid=None)) == "fetch"
    assert "AIOPOP_UID" not in json.loads((tmp_path / "env.json").read_text())


async def test_a_broken_filter_is_a_delivery_error_never_a_verdict(tmp_path: Path) -> None:
    with pytest.raises(DeliveryError) as caught:
        await FilterCommand(shell(tmp_path, "echo confused >&2\nexit 3\n"))(headers())
    assert caught.value.uid == "uid-7"
    assert caught.value.reason == (
        "the filter /bin/sh exited with status 3 (a filter answers 0: fetch, 1: delete,"
        " 2: skip); stderr: confused"
    )
    argv = [sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGTERM)"]
    with pytest.raises(DeliveryError, match=r"killed by signal 15 \(SIGTERM\)"):
        await FilterCommand(argv)(headers())
    pids = tmp_path / "pids"
    slow = FilterCommand(shell(tmp_path, PARENT_AND_CHILD, str(pids)), time_limit=0.5)
    with pytest.raises(DeliveryError, match=r"the filter /bin/sh gave no answer within 0\.5 s"):
        await slow(headers())
    assert await all_gone(await pids_written(pids))


# -- with the delivery engine ---------------------------------------------------------------

# Files each message under argv[1] by its unique-id; refuses (exit 75) the one named "bad".
FILE_BY_UID = """
test "$AIOPOP_UID" = bad && { echo "mailbox full" >&2; exit 75; }
cat > "$1/$AIOPOP_UID"
"""
# Deletes (exit 1) a message whose headers say spam; fetches the others.
SPAM_FILTER = "grep -q '^Subject: spam' && exit 1\nexit 0\n"


async def test_fetch_into_a_command_with_a_filter_command(tmp_path: Path) -> None:
    from aiopop.testing import Mailbox, POP3TestServer

    messages = [
        b"Subject: one\r\n\r\nfirst\r\n",
        b"Subject: spam\r\n\r\nbuy\r\n",
        b"Subject: three\r\n\r\nrefused\r\n",
    ]
    mailbox = Mailbox("secret", list(messages), uids=["good", "spam", "bad"])
    box = tmp_path / "box"
    box.mkdir()
    account = Account("127.0.0.1", "alice", tls="none", allow_cleartext=True)
    async with POP3TestServer({"alice": mailbox}) as server:
        client = aiopop.POP3("127.0.0.1", server.port, timeout=5)
        async with client:
            await client.login("alice", "secret", allow_cleartext=True)
            result = await aiopop.fetch_into(
                client,
                CommandDelivery(shell(tmp_path, FILE_BY_UID, str(box))),
                account=account,
                state=tmp_path / "state.db",
                delete=True,
                filter=FilterCommand(shell(tmp_path, SPAM_FILTER)),
            )
            await client.quit()
    assert [d.uid for d in result.delivered] == ["good"]
    assert (box / "good").read_bytes() == b"Subject: one\n\nfirst\n"
    assert [(f.uid, f.verdict) for f in result.filtered] == [("spam", "delete")]
    [undelivered] = result.undelivered
    assert undelivered.uid == "bad"
    assert isinstance(undelivered.error, DeliveryError)
    assert undelivered.error.reason == "/bin/sh exited with status 75; stderr: mailbox full"
    assert mailbox.messages == [messages[2]]  # only the refused one stays on the server


# -- the constructor ------------------------------------------------------------------------


def test_a_command_line_as_one_string_is_refused_naming_the_fix() -> None:
    with pytest.raises(ValueError, match=r"argv must be a list.*not a string.*shlex\.split"):
        CommandDelivery("procmail -d me")  # a str is a Sequence[str]: only run time can tell
    with pytest.raises(ValueError, match="argv must be a list"):
        FilterCommand(b"spamcheck")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "argv", [[], [""], ["ok", 3], ["ok", None], [Path("/bin/true")], ["a\0b"], None, 5]
)
def test_argv_must_be_a_list_of_strings(argv: object) -> None:
    with pytest.raises(ValueError, match="argv"):
        CommandDelivery(argv)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "options",
    [
        {"time_limit": 0},
        {"time_limit": -1},
        {"time_limit": float("inf")},
        {"time_limit": float("nan")},
        {"time_limit": True},
        {"time_limit": "5"},
        {"grace": -0.1},
        {"grace": float("inf")},
        {"env": {"A=B": "x"}},
        {"env": {"A": 1}},
        {"env": {"A": "x\0y"}},
        {"env": ["A"]},
    ],
    ids=repr,
)
def test_the_options_are_checked(options: dict[str, object]) -> None:
    name = next(iter(options))
    with pytest.raises(ValueError, match=name):
        CommandDelivery(["true"], **options)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=name):
        FilterCommand(["true"], **options)  # type: ignore[arg-type]


def test_the_defaults_and_the_repr() -> None:
    delivery = CommandDelivery(("procmail", "-d", "me"), grace=0)
    assert delivery.argv == ("procmail", "-d", "me")
    assert (delivery.time_limit, delivery.grace) == (120, 0)
    assert repr(delivery) == "CommandDelivery(['procmail', '-d', 'me'], time_limit=120)"
    check = FilterCommand(["spamcheck"], env={"SECRET": "x"})
    assert (check.time_limit, check.grace) == (60, 2)
    assert repr(check) == "FilterCommand(['spamcheck'], time_limit=60)"  # env is not shown
    deliver: aiopop.Deliver = delivery
    assert callable(deliver)


# -- the error, as the rest of aiopop sees it -----------------------------------------------


async def test_the_delivery_error_is_local_retryable_and_pickles(tmp_path: Path) -> None:
    with pytest.raises(DeliveryError) as caught:
        await CommandDelivery(shell(tmp_path, "echo full >&2; exit 75\n"))(message())
    failure = aiopop.diagnose(caught.value)
    assert failure.kind is FailureKind.DELIVERY
    assert (failure.reason, failure.retryable, failure.local) == ("delivery", True, True)
    copy = pickle.loads(pickle.dumps(caught.value))
    assert type(copy) is DeliveryError
    assert (copy.uid, copy.reason, str(copy)) == (
        caught.value.uid,
        caught.value.reason,
        str(caught.value),
    )
