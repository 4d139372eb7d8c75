"""``aiopop fetch ACCOUNTS.toml``: every account of a file, each into its own Maildir.

The main paths run the real command (a subprocess) against in-process
servers on the loopback; the branches are reached in this process too.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from aiopop import _cli
from aiopop._targets import FetchSettings
from aiopop.testing import Faults, Mailbox, POP3TestServer
from tests.helpers.cli import PASSWORD, Run, aiopop_command

ENV = {"AIOPOP_TEST_PASSWORD": PASSWORD, "AIOPOP_WRONG_PASSWORD": "not-the-password"}


def letters(user: str, count: int = 2) -> list[bytes]:
    """Messages no other mailbox has, so a Maildir shows where each one came from."""
    return [f"Subject: {user} {n}\r\n\r\nfor {user}\r\n".encode() for n in range(count)]


def table(
    server: POP3TestServer | None,
    user: str,
    maildir: str | None,
    *,
    port: int | None = None,
    password_env: str = "AIOPOP_TEST_PASSWORD",
    name: str | None = None,
) -> str:
    """One [[account]] table for a cleartext loopback server (or a port nobody serves)."""
    host, port = ("127.0.0.1", port) if server is None else (server.host, server.port)
    lines = [
        "[[account]]",
        f'name = "{name or user}"',
        f'url = "pop://{user}@{host}:{port}"',
        'tls = "none"',
        "allow_cleartext = true",
        f'password_env = "{password_env}"',
    ]
    if maildir is not None:
        lines.append(f'maildir = "{maildir}"')
    return "\n".join(lines) + "\n\n"


def stored(maildir: Path) -> list[bytes]:
    return sorted(path.read_bytes() for path in (maildir / "new").iterdir())


def saved_form(messages: Sequence[bytes]) -> list[bytes]:
    return sorted(message.replace(b"\r\n", b"\n") for message in messages)


def free_port() -> int:
    """A loopback port that takes no connection: the server is down."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def fetch(path: Path, *more: str) -> Run:
    return await aiopop_command("fetch", str(path), *more, env=ENV)


async def test_three_accounts_on_two_servers_into_two_maildirs(tmp_path: Path) -> None:
    boxes = {"ann": letters("ann"), "bob": letters("bob", 3), "cy": letters("cy", 1)}
    one = POP3TestServer({user: Mailbox(PASSWORD, list(boxes[user])) for user in ("ann", "bob")})
    two = POP3TestServer({"cy": Mailbox(PASSWORD, list(boxes["cy"]))})
    async with one, two:
        path = tmp_path / "accounts.toml"
        # Relative paths: relative to the accounts file's folder, not the command's.
        path.write_text(
            table(one, "ann", "Shared") + table(one, "bob", "Shared") + table(two, "cy", "Cy"),
            encoding="utf-8",
        )
        first = await fetch(path, "--new-only")
        again = await fetch(path, "--new-only", "--json")
    assert (first.status, first.err) == (0, "")
    rows = [line.split() for line in first.out.splitlines()]
    assert rows[0] == [
        "ACCOUNT",
        "FETCHED",
        "SIZE",
        "DELETED",
        "OVERSIZED",
        "REFUSED",
        "UNDELIVERED",
        "RECOVERED",
        "RESULT",
    ]
    sizes = {user: sum(map(len, messages)) for user, messages in boxes.items()}
    assert rows[1] == ["ann", "2", str(sizes["ann"]), "bytes", "0", "0", "0", "0", "0", "ok"]
    assert rows[2] == ["bob", "3", str(sizes["bob"]), "bytes", "0", "0", "0", "0", "0", "ok"]
    assert rows[3] == ["cy", "1", str(sizes["cy"]), "bytes", "0", "0", "0", "0", "0", "ok"]
    assert first.out.splitlines()[-1] == "3 accounts fetched, 0 failed"
    # Each message once, in its account's Maildir; nothing again with --new-only.
    assert stored(tmp_path / "Shared") == saved_form(boxes["ann"] + boxes["bob"])
    assert stored(tmp_path / "Cy") == saved_form(boxes["cy"])
    assert again.status == 0, again.err
    report = json.loads(again.out)
    assert report["failed"] == 0
    assert [(r["account"], r["ok"], r["fetched"], r["skipped"]) for r in report["accounts"]] == [
        ("ann", True, [], 2),
        ("bob", True, [], 3),
        ("cy", True, [], 1),
    ]
    assert report["accounts"][0]["maildir"] == str(tmp_path / "Shared")
    assert all(record.quit for record in one.sessions + two.sessions)
    assert len(one.mailboxes["bob"].messages) == 3  # kept on the server without --delete


async def test_a_wrong_password_and_a_server_down_stop_only_their_accounts(
    tmp_path: Path,
) -> None:
    boxes = {user: Mailbox(PASSWORD, list(letters(user))) for user in ("ann", "bob", "dee")}
    async with POP3TestServer(boxes) as server:
        path = tmp_path / "accounts.toml"
        path.write_text(
            table(server, "ann", "M")
            + table(server, "bob", "M", password_env="AIOPOP_WRONG_PASSWORD")
            + table(None, "cy", "M", port=free_port())
            + table(server, "dee", "Other"),
            encoding="utf-8",
        )
        run = await fetch(path)
        as_json = await fetch(path, "--json")
    # The documented rule: 1 (EXIT_FAILED) when any account failed.
    assert run.status == as_json.status == _cli.EXIT_FAILED
    lines = run.out.splitlines()
    assert lines[1].split()[:2] == ["ann", "2"]
    assert lines[2].startswith("bob ")
    assert "credentials: login refused" in lines[2]
    assert lines[3].startswith("cy ")
    assert "connection: cannot reach the server" in lines[3]
    assert lines[4].split()[:2] == ["dee", "2"]
    assert lines[-1] == "4 accounts fetched, 2 failed"
    report = json.loads(as_json.out)
    assert report["failed"] == 2
    reasons = {r["account"]: r.get("reason") for r in report["accounts"]}
    assert reasons == {"ann": None, "bob": "credentials", "cy": "connection", "dee": None}
    assert "fetched" not in report["accounts"][1]
    assert "not-the-password" not in run.out + run.err + as_json.out
    assert stored(tmp_path / "M") == saved_form(letters("ann") * 2)  # ann, on both runs
    assert stored(tmp_path / "Other") == saved_form(letters("dee") * 2)


@contextlib.asynccontextmanager
async def peak_sessions(servers: Sequence[POP3TestServer]) -> AsyncIterator[list[int]]:
    """The most sessions the servers held at once, together (sampled every ms)."""
    peak = [0]

    async def sample() -> None:
        while True:
            active = sum(not r.closed and not r.quit for s in servers for r in s.sessions)
            peak[0] = max(peak[0], active)
            await asyncio.sleep(0.001)

    sampler = asyncio.create_task(sample())
    try:
        yield peak
    finally:
        sampler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampler


async def test_the_per_host_limit_holds(tmp_path: Path) -> None:
    users = [f"u{n}" for n in range(5)]
    # One host (127.0.0.1), two ports: one limit. Each reply waits 20 ms, so every
    # session lasts long enough to overlap the others if the limit let it.
    one = POP3TestServer({u: Mailbox(PASSWORD, list(letters(u, 1))) for u in users})
    two = POP3TestServer({u: Mailbox(PASSWORD, list(letters(u, 1))) for u in users})
    one.faults = two.faults = Faults(latency=0.02)
    async with one, two:
        path = tmp_path / "accounts.toml"
        path.write_text(
            "".join(
                table(s, u, f"M{n}", name=f"{u}-{n}")
                for n, s in enumerate((one, two))
                for u in users
            ),
            encoding="utf-8",
        )
        async with peak_sessions([one, two]) as peak:
            run = await fetch(path, "--per-host", "2", "--concurrency", "10")
    assert run.status == 0, run.err
    assert run.out.splitlines()[-1] == "10 accounts fetched, 0 failed"
    assert peak[0] == 2  # never more than the limit, and the limit was used
    assert len(one.sessions) == len(two.sessions) == 5


async def test_an_account_without_maildir_fetches_nothing_at_all(tmp_path: Path) -> None:
    async with POP3TestServer({"ann": Mailbox(PASSWORD, list(letters("ann")))}) as server:
        path = tmp_path / "accounts.toml"
        path.write_text(
            table(server, "ann", "M") + table(server, "ann", None, name="no place"),
            encoding="utf-8",
        )
        run = await fetch(path)
        twice = tmp_path / "twice.toml"
        twice.write_text(
            table(server, "ann", "M") + table(server, "ann", "./M/../M", name="same"),
            encoding="utf-8",
        )
        duplicate = await fetch(twice)
        assert server.sessions == []  # no connection at all
    assert run.status == _cli.EXIT_USAGE
    assert run.out == ""
    assert f"{path}: account 2 ('no place'): give maildir or command" in run.err
    assert duplicate.status == _cli.EXIT_USAGE
    assert "account 2 ('same'): the same mailbox (ann@127.0.0.1:" in duplicate.err
    assert not (tmp_path / "M").exists()


async def test_delete_deletes_only_what_each_account_saved(tmp_path: Path) -> None:
    good = POP3TestServer(
        {
            "ann": Mailbox(PASSWORD, list(letters("ann"))),
            "bob": Mailbox(PASSWORD, list(letters("bob"))),
        }
    )
    blocked = POP3TestServer({"cy": Mailbox(PASSWORD, list(letters("cy")))})
    cut = POP3TestServer({"dee": Mailbox(PASSWORD, list(letters("dee")))})
    cut.faults = Faults(drop_at="QUIT")  # the server vanishes at QUIT: DELEs roll back
    (tmp_path / "not-a-folder").write_text("a file where cy's Maildir should be")
    async with good, blocked, cut:
        path = tmp_path / "accounts.toml"
        path.write_text(
            table(good, "ann", "M")
            + table(good, "bob", "M")
            + table(blocked, "cy", "not-a-folder/M")
            + table(cut, "dee", "Dee"),
            encoding="utf-8",
        )
        run = await fetch(path, "--delete", "--json")
        remaining = {
            user: len(server.mailboxes[user].messages)
            for server, user in ((good, "ann"), (good, "bob"), (blocked, "cy"), (cut, "dee"))
        }
    assert run.status == _cli.EXIT_FAILED, run.err
    report = {r["account"]: r for r in json.loads(run.out)["accounts"]}
    assert [len(report[u]["deleted"]) for u in ("ann", "bob")] == [2, 2]
    assert report["cy"]["reason"] == "local"
    assert report["dee"]["reason"] == "connection"
    assert (report["dee"]["deleted"], report["dee"]["not_deleted"]) == ([], [1, 2])
    assert "rolled back" in report["dee"]["error"]
    # Deleted on the server exactly where the messages are durably in the Maildir.
    assert remaining == {"ann": 0, "bob": 0, "cy": 2, "dee": 2}
    assert stored(tmp_path / "M") == saved_form(letters("ann") + letters("bob"))
    assert stored(tmp_path / "Dee") == saved_form(letters("dee"))
    assert [r.keywords.count("DELE") for r in blocked.sessions] == [0]


@pytest.mark.parametrize(
    ("options", "words"),
    [
        (["--port", "110"], "--port: not with a file of accounts"),
        (["--maildir", "M"], "--maildir: not with a file of accounts"),
        (["--proxy", "socks5://127.0.0.1:1080"], "--proxy: not with a file of accounts"),
        (["--password-env", "X", "--tls", "none"], "--tls, --password-env: not with a file"),
    ],
)
def test_options_of_one_mailbox_are_refused_with_a_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, options: list[str], words: str
) -> None:
    path = tmp_path / "accounts.toml"
    path.write_text(table(None, "ann", "M", port=9), encoding="utf-8")
    assert _cli.main(["fetch", str(path), *options]) == _cli.EXIT_USAGE
    assert words in capsys.readouterr().err


def test_host_user_still_needs_a_maildir(capsys: pytest.CaptureFixture[str]) -> None:
    assert _cli.main(["fetch", "pop.example.com", "u"]) == _cli.EXIT_USAGE
    assert "give --maildir DIR or --command PROGRAM" in capsys.readouterr().err


def test_a_missing_file_of_accounts(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert _cli.main(["fetch", str(tmp_path / "nothing.toml")]) == _cli.EXIT_USAGE
    assert "no such file of accounts" in capsys.readouterr().err


# -- in this process: the branches ----------------------------------------------------------------


def test_in_process_table_json_and_what_stays_on_the_server(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.cli.test_cli_inprocess import serving

    monkeypatch.setenv("AIOPOP_TEST_PASSWORD", PASSWORD)
    big = [b"Subject: big\r\n\r\n" + b"x" * 400 + b"\r\n", *letters("ann", 1)]
    with serving(mailboxes={"ann": Mailbox(PASSWORD, list(big))}) as server:
        path = tmp_path / "a.toml"
        path.write_text(table(server, "ann", "~/M"), encoding="utf-8")
        monkeypatch.setenv("HOME", str(tmp_path / "home"))
        status = _cli.main(["fetch", str(path), "--max-size", "100", "--timeout", "5"])
        out = capsys.readouterr().out
        # A message over --max-size stays on the server: 1, as the single fetch says.
        assert status == _cli.EXIT_FAILED
        row = out.splitlines()[1].split()
        assert (row[:2], row[4:]) == (["ann", "1"], ["0", "1", "0", "0", "0", "ok"])
        assert len(stored(tmp_path / "home" / "M")) == 1
        server.faults = Faults(drop_at="QUIT")
        status = _cli.main(["fetch", str(path), "--delete", "--new-only", "--json"])
        report = json.loads(capsys.readouterr().out)["accounts"][0]
    assert status == _cli.EXIT_FAILED
    assert report["reason"] == "connection"
    # 1 saved now (no --max-size this time), 2 on the first run: both DELEs rolled back.
    assert (report["skipped"], len(report["fetched"]), report["not_deleted"]) == (1, 1, [1, 2])
    assert "rolled back" in report["error"]


def test_the_terminal_table_with_a_progress_bar(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import io

    from aiopop import _cli_fetch

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setenv("AIOPOP_TEST_PASSWORD", PASSWORD)
    path = tmp_path / "a.toml"
    path.write_text(table(None, "ann", "M", port=free_port()), encoding="utf-8")
    out = Terminal()
    status = asyncio.run(
        _cli_fetch.run_fetch_many(
            str(path),
            concurrency=1,
            per_host=1,
            cafile=None,
            defaults=FetchSettings(skip_larger_than=None),
            as_json=False,
            out=out,
        )
    )
    assert status == _cli.EXIT_FAILED
    assert "1 account" in out.getvalue()  # the rich table's title
    assert "fetching" in out.getvalue()  # the progress bar


async def test_a_fetch_cancelled_from_inside_is_its_accounts_result(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import io

    from aiopop import _cli_fetch

    async def cancelled(*_: object, **__: object) -> None:
        raise asyncio.CancelledError

    monkeypatch.setattr(_cli_fetch, "fetch_account", cancelled)
    path = tmp_path / "a.toml"
    path.write_text(table(None, "ann", "M", port=9), encoding="utf-8")
    out = io.StringIO()
    status = await _cli_fetch.run_fetch_many(
        str(path),
        concurrency=1,
        per_host=1,
        cafile=None,
        defaults=FetchSettings(skip_larger_than=None),
        as_json=True,
        out=out,
    )
    assert status == _cli.EXIT_FAILED
    assert json.loads(out.getvalue())["accounts"][0]["reason"] == "cancelled"


def test_maildir_paths_of_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from aiopop import AccountError
    from aiopop._targets import load_fetch_targets

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir("/")
    folder = tmp_path / "conf"
    folder.mkdir()
    path = folder / "a.toml"
    path.write_text(
        table(None, "ann", "~/Mail", port=9)
        + table(None, "bob", "Mail", port=9)
        + table(None, "cy", str(tmp_path / "abs"), port=9)
        + table(None, "dee", "Mail", port=9),  # another mailbox may share a Maildir
        encoding="utf-8",
    )
    targets = load_fetch_targets(path)
    assert [t.maildir for t in targets] == [
        tmp_path / "home" / "Mail",
        folder / "Mail",
        tmp_path / "abs",
        folder / "Mail",
    ]
    assert [t.account.user for t in targets] == ["ann", "bob", "cy", "dee"]
    path.write_text(table(None, "ann", "", port=9), encoding="utf-8")
    with pytest.raises(AccountError, match="maildir must be a non-empty string"):
        load_fetch_targets(path)
    path.write_text(table(None, "ann", "M", port=9) + table(None, "bob", None, port=9))
    with pytest.raises(AccountError, match=r"account 2 \('bob'\): give maildir or command"):
        load_fetch_targets(path)
    path.write_text(table(None, "ann", "M", port=9) + table(None, "ann", f"{folder}/M", port=9))
    with pytest.raises(AccountError, match=r"account 2 \('ann'\): the same mailbox"):
        load_fetch_targets(path)
    # check reads the same file, and leaves maildir to fetch.
    from aiopop._accounts import load_accounts

    path.write_text(table(None, "ann", "M", port=9), encoding="utf-8")
    assert [account.user for account in load_accounts(path)] == ["ann"]
