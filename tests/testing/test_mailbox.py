"""aiopop.testing's mailboxes and messages: Mailbox, the message helpers, dot-stuffing."""

from __future__ import annotations

import re

import pytest

from aiopop.testing import Mailbox
from aiopop.testing._mailbox import header_end, normalise, top_of
from aiopop.testing._saslprep import saslprep
from tests.helpers.server import FIRST, FIRST_CRLF, SECOND

# -- Mailbox and message helpers ------------------------------------------------


def test_normalise_line_ends() -> None:
    assert normalise(b"a\nb\r\nc") == b"a\r\nb\r\nc\r\n"
    assert normalise(b"") == b""
    assert normalise(b"a\rb\n") == b"a\rb\r\n"  # a CR ending no line is content


def test_mailbox_stores_crlf_and_derives_valid_stable_uids() -> None:
    box = Mailbox("pw", [FIRST, SECOND, SECOND])
    assert box.messages == [FIRST_CRLF, SECOND, SECOND]
    assert box.uids is not None
    assert len(set(box.uids)) == 3  # equal messages still get distinct ids
    for uid in box.uids:
        assert 1 <= len(uid) <= 70
        assert re.fullmatch(r"[\x21-\x7e]+", uid)
    assert Mailbox("other", [FIRST, SECOND, SECOND]).uids == box.uids


def test_mailbox_explicit_uids_are_checked() -> None:
    assert Mailbox("pw", [SECOND], uids=["id-1"]).uids == ["id-1"]
    with pytest.raises(ValueError, match="2 unique-ids given for 1 messages"):
        Mailbox("pw", [SECOND], uids=["a", "b"])
    for bad in ["", "has space", "x" * 71, "caf\u00e9"]:
        with pytest.raises(ValueError, match="unique-id"):
            Mailbox("pw", [SECOND], uids=[bad])


def test_mailbox_add_normalises_and_never_reuses_uids() -> None:
    box = Mailbox("pw", [SECOND])
    assert box.uids is not None
    first_uid = box.uids[0]
    box._expunge([0])
    uid = box.add(SECOND)
    assert uid != first_uid
    assert box.add(b"a\nb", uid="mine") == "mine"
    assert box.messages == [SECOND, b"a\r\nb\r\n"]
    assert box.uids == [uid, "mine"]
    with pytest.raises(ValueError, match="unique-id"):
        box.add(SECOND, uid="bad id")


def test_mailbox_repr_hides_password_and_checks_it() -> None:
    assert "hunter2" not in repr(Mailbox("hunter2", [SECOND]))
    with pytest.raises(ValueError, match="prohibited"):
        Mailbox("bell\x07")


def test_mailbox_open_syncs_messages_appended_directly() -> None:
    box = Mailbox("pw", [SECOND])
    box.messages.append(b"Subject: raw\n\nx\n")
    box.uids = None
    entries = box._open()
    assert [m for m, _ in entries] == [SECOND, b"Subject: raw\r\n\r\nx\r\n"]
    assert len({uid for _, uid in entries}) == 2


def test_header_end_and_top_of() -> None:
    assert header_end(b"\r\nbody\r\n") == 2
    assert header_end(b"A: b\r\nC: d\r\n") == 12  # no blank line: all header
    message = b"A: b\r\n\r\n1\r\n2\r\n3\r\n"
    assert top_of(message, 0) == b"A: b\r\n\r\n"
    assert top_of(message, 2) == b"A: b\r\n\r\n1\r\n2\r\n"
    assert top_of(message, 10) == message
    assert top_of(b"A: b\r\n", 3) == b"A: b\r\n"


@pytest.mark.parametrize(
    ("text", "prepared"),
    [
        ("I\u00adX", "IX"),
        ("user", "user"),
        ("USER", "USER"),
        ("\u00aa", "a"),
        ("\u2168", "IX"),
        ("a\u00a0b", "a b"),
        ("\u0627\u0628", "\u0627\u0628"),
    ],
)
def test_saslprep_rfc4013_examples(text: str, prepared: str) -> None:
    assert saslprep(text) == prepared


@pytest.mark.parametrize("text", ["\u0007", "\u0627\u0031", "\u0627a\u0628", "\ue000"])
def test_saslprep_refuses(text: str) -> None:
    with pytest.raises(ValueError, match=r"prohibited|right-to-left"):
        saslprep(text)


def test_saslprep_allows_code_points_newer_than_unicode_3_2() -> None:
    assert saslprep("pw\U0001f642") == "pw\U0001f642"
    assert Mailbox("pw\U0001f642").password == "pw\U0001f642"
