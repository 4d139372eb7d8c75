"""Where fetch and watch deliver each account of a file, and by what policy: the keys."""

from __future__ import annotations

from pathlib import Path

import pytest

from aiopop import Account, AccountError
from aiopop._account_keys import parse_size
from aiopop._targets import FetchSettings, FetchTarget, default_state, load_fetch_targets

HEAD = '[[account]]\nname = "{name}"\nurl = "pops://{name}@pop.example.com"\npassword_env = "P"\n'


def write(tmp_path: Path, *tables: str) -> Path:
    path = tmp_path / "conf" / "accounts.toml"
    path.parent.mkdir(exist_ok=True)
    path.write_text("\n".join(tables), encoding="utf-8")
    return path


def account(name: str, *lines: str) -> str:
    return HEAD.format(name=name) + "".join(line + "\n" for line in lines)


def test_every_key_reaches_its_target_and_the_file_beats_the_defaults(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        account(
            "a", 'maildir = "~/Mail/a"', "delete_after_days = 7", 'skip_larger_than = "20M"',
            'filter = "spam-check --strict"',
        ),
        account(
            "b", 'command = ["rt-mailgate", "--queue", "q"]', 'state = "s.db"',
            "command_time_limit = 30", "delete = true", "delete_larger_than = 1000",
        ),
        account("c", 'command = "procmail -d c"'),
    )  # fmt: skip
    defaults = FetchSettings(new_only=True, delete_larger_than=5)
    a, b, c = load_fetch_targets(path, defaults)
    assert a.maildir == Path("~/Mail/a").expanduser()
    assert a.settings == FetchSettings(
        new_only=True,
        delete_larger_than=5,
        delete_after_days=7,
        skip_larger_than=20 * 2**20,
        filter=("spam-check", "--strict"),
    )
    assert a.state_path == a.maildir / "aiopop-uidl.sqlite3"
    assert b.command == ("rt-mailgate", "--queue", "q")
    assert b.state == tmp_path / "conf" / "s.db"  # relative to the file's folder
    assert b.state_path == b.state
    assert (b.settings.delete, b.settings.delete_larger_than) == (True, 1000)
    assert b.settings.command_time_limit == 30
    assert b.destination == "| rt-mailgate --queue q"
    assert c.command == ("procmail", "-d", "c")  # a string is split as a shell would
    assert c.state is None
    assert c.state_path == default_state()


@pytest.mark.parametrize(
    ("lines", "words"),
    [
        ([], "give maildir or command"),
        (['maildir = "M"', 'command = ["x"]'], "give maildir or command"),
        (['maildir = "M"', 'state = "s"'], "a Maildir keeps its own state"),
        (['maildir = "M"', "delete = 1"], "delete must be true or false"),
        (['maildir = "M"', "delete_after_days = -1"], "delete_after_days must be a number of days"),
        (['maildir = "M"', 'delete_after_days = "7"'], "delete_after_days must be a number"),
        (['maildir = "M"', 'skip_larger_than = "big"'], "skip_larger_than must be a size"),
        (['maildir = "M"', "delete_larger_than = true"], "delete_larger_than must be a size"),
        (['maildir = "M"', "filter = []"], "filter must be a command line"),
        (['command = ""'], "command must be a command line"),
        (['maildir = "M"', "command_time_limit = 0"], "command_time_limit must be a positive"),
    ],
)
def test_bad_keys_name_the_file_the_account_and_the_key(
    tmp_path: Path, lines: list[str], words: str
) -> None:
    path = write(tmp_path, account("ok", 'maildir = "M"'), account("bad", *lines))
    with pytest.raises(AccountError, match=r"account 2 \('bad'\)") as info:
        load_fetch_targets(path)
    assert words in str(info.value)


def test_one_mailbox_and_one_state_twice_is_refused(tmp_path: Path) -> None:
    """Two tables of one mailbox (pops://a@pop.example.com) and one (the default) state."""
    again = account("a", 'command = ["x"]').replace('name = "a"', 'name = "again"')
    path = write(tmp_path, account("a", 'command = ["y"]'), again)
    with pytest.raises(AccountError, match=r"account 2 \('again'\): the same mailbox"):
        load_fetch_targets(path)


def test_a_target_needs_one_destination_and_the_state_home_follows_xdg(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    who = Account(host="pop.example.com", user="u", password="p")
    with pytest.raises(ValueError, match="a maildir or a command"):
        FetchTarget(who)
    with pytest.raises(ValueError, match="a maildir or a command"):
        FetchTarget(who, maildir=tmp_path, command=("x",))
    assert FetchTarget(who, maildir=tmp_path).destination == str(tmp_path)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    assert default_state() == tmp_path / "xdg" / "aiopop" / "aiopop-uidl.sqlite3"
    monkeypatch.delenv("XDG_STATE_HOME")
    assert default_state() == Path("~/.local/state/aiopop/aiopop-uidl.sqlite3").expanduser()


@pytest.mark.parametrize(
    ("value", "octets"),
    [(0, None), ("0", None), (1000, 1000), ("100K", 102400), ("2m", 2 * 2**20), ("1G", 2**30)],
)
def test_sizes(value: object, octets: int | None) -> None:
    assert parse_size(value) == octets


@pytest.mark.parametrize("value", [-1, "-5K", "5T", "", True, 1.5, None])
def test_bad_sizes(value: object) -> None:
    with pytest.raises(ValueError, match="size"):
        parse_size(value)


def test_the_files_policy_is_the_whole_policy(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        account("days", 'maildir = "M"', "delete_after_days = 7"),
        account("keep", 'maildir = "N"', "delete = false"),
        account("asis", 'maildir = "O"'),
    )
    days, keep, asis = load_fetch_targets(path, FetchSettings(delete=True))
    assert (days.settings.delete, days.settings.delete_after_days) == (False, 7)
    assert (keep.settings.delete, keep.settings.delete_after_days) == (False, None)
    assert (asis.settings.delete, asis.settings.delete_after_days) == (True, None)
    _, keep, _ = load_fetch_targets(path, FetchSettings(delete_after_days=3))
    assert keep.settings.delete_after_days is None  # "delete = false" keeps, whatever


def test_a_table_giving_delete_and_delete_after_days_is_refused(tmp_path: Path) -> None:
    path = write(
        tmp_path, account("both", 'maildir = "M"', "delete = true", "delete_after_days = 7")
    )
    with pytest.raises(AccountError, match="give delete = true or delete_after_days, not both"):
        load_fetch_targets(path)


def test_commands_are_new_only_and_no_program_gets_the_files_secrets(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        account("a", 'command = ["x"]').replace('password_env = "P"', 'password_env = "A_PW"'),
        account("b", 'maildir = "M"').replace('password_env = "P"', 'oauth2_token_env = "B_TOKEN"'),
    )
    a, b = load_fetch_targets(path, FetchSettings(new_only=False))
    assert a.settings.new_only is True
    assert b.settings.new_only is False
    assert a.hidden == b.hidden == ("A_PW", "B_TOKEN")
