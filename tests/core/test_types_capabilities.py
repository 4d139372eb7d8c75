"""Typed CAPA: the mapping and its helpers, and how odd real-world lines are read."""

from __future__ import annotations

import pytest

from aiopop._types import Capabilities, Expire, LoginDelay

DOVECOT = {
    "CAPA": [],
    "TOP": [],
    "UIDL": [],
    "RESP-CODES": [],
    "PIPELINING": [],
    "AUTH-RESP-CODE": [],
    "STLS": [],
    "USER": [],
    "SASL": ["PLAIN", "LOGIN", "SCRAM-SHA-256"],
}
GMAIL = {
    "USER": [],
    "RESP-CODES": [],
    "EXPIRE": ["0"],
    "LOGIN-DELAY": ["300"],
    "TOP": [],
    "UIDL": [],
    "X-GOOGLE-RICO": [],
    "SASL": ["PLAIN", "XOAUTH2", "OAUTHBEARER"],
}


def test_dovecot_like() -> None:
    caps = Capabilities(DOVECOT)
    assert caps.announced
    assert (caps.stls, caps.pipelining, caps.uidl, caps.top, caps.user) == (True,) * 5
    assert (caps.resp_codes, caps.auth_resp_code) == (True, True)
    assert caps.sasl == ("PLAIN", "LOGIN", "SCRAM-SHA-256")
    assert caps.expire is None
    assert caps.login_delay is None
    assert caps.implementation is None
    assert not caps.utf8
    assert not caps.lang


def test_gmail_like() -> None:
    caps = Capabilities(GMAIL)
    assert not caps.stls
    assert not caps.pipelining
    assert caps.expire == Expire(0)
    assert caps.login_delay == LoginDelay(300)
    assert caps.sasl == ("PLAIN", "XOAUTH2", "OAUTHBEARER")
    assert "X-GOOGLE-RICO" in caps


def test_mapping_behaviour() -> None:
    caps = Capabilities({"sasl": ["plain"], "TOP": []})
    assert dict(caps) == {"SASL": ["plain"], "TOP": []}
    assert caps["sasl"] == ["plain"]
    assert "top" in caps
    assert 3 not in caps  # type: ignore[comparison-overlap]
    assert len(caps) == 2
    caps["SASL"].append("X")  # a copy: the capabilities do not change
    assert caps["SASL"] == ["plain"]
    assert caps == Capabilities({"SASL": ["plain"], "top": []})
    assert caps == {"SASL": ["plain"], "TOP": []}
    assert caps != Capabilities({"SASL": ["plain"], "TOP": []}, announced=False)
    with pytest.raises(KeyError):
        caps["STLS"]


def test_not_announced() -> None:
    caps = Capabilities(announced=False)
    assert not caps.announced
    assert len(caps) == 0
    assert (caps.stls, caps.pipelining, caps.sasl) == (False, False, ())
    assert repr(caps) == "Capabilities(announced=False)"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["NEVER"], Expire(None)),
        (["never"], Expire(None)),
        (["0"], Expire(0)),
        (["30", "USER"], Expire(30, per_user=True)),
        (["60", "user"], Expire(60, per_user=True)),
        (["x"], None),
        (["-1"], None),
        ([], None),
        (["99999999999"], None),
    ],
)
def test_expire(args: list[str], expected: Expire | None) -> None:
    assert Capabilities({"EXPIRE": args}).expire == expected


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["900"], LoginDelay(900)),
        (["900", "USER"], LoginDelay(900, per_user=True)),
        (["soon"], None),
        ([], None),
    ],
)
def test_login_delay(args: list[str], expected: LoginDelay | None) -> None:
    assert Capabilities({"LOGIN-DELAY": args}).login_delay == expected


def test_implementation_utf8_lang_and_sasl_spelling() -> None:
    caps = Capabilities(
        {
            "IMPLEMENTATION": ["Courier", "Mail", "Server"],
            "UTF8": ["user"],
            "LANG": [],
            "SASL": ["plain", "Plain", "cram-md5"],
        }
    )
    assert caps.implementation == "Courier Mail Server"
    assert caps.utf8
    assert caps.utf8_arguments == ("USER",)
    assert caps.lang
    assert caps.sasl == ("PLAIN", "CRAM-MD5")
