"""SASL mechanisms on their own: RFC test vectors, cancelling, no secrets in repr()."""

from __future__ import annotations

import base64
from collections.abc import Callable

import pytest
import scramp

from aiopop import sasl


def test_plain() -> None:
    mechanism = sasl.Plain("tim", "tanstaaf")
    assert mechanism.initial_response() == b"\0tim\0tanstaaf"
    assert mechanism.respond(b"") == b"\0tim\0tanstaaf"  # after an empty challenge
    with pytest.raises(sasl.SASLError):
        mechanism.respond(b"unexpected")
    assert sasl.Plain("u", "p", authzid="admin").initial_response() == b"admin\0u\0p"
    assert (
        sasl.Plain("j\u00fcrgen", "p\u00e4ss").initial_response()
        == "\0j\u00fcrgen\0p\u00e4ss".encode()
    )
    with pytest.raises(ValueError, match="NUL"):
        sasl.Plain("a\0b", "p")
    assert mechanism.sends_secret_in_clear


def test_login_answers_in_order_whatever_the_prompts() -> None:
    mechanism = sasl.Login("tim", "tanstaaf")
    assert mechanism.initial_response() is None
    assert mechanism.respond(b"Username:") == b"tim"
    assert mechanism.respond(b"Password:") == b"tanstaaf"
    with pytest.raises(sasl.SASLError, match="more than two"):
        mechanism.respond(b"Again:")


def test_cram_md5_rfc_2195_example() -> None:
    mechanism = sasl.CramMD5("tim", "tanstaaftanstaaf")
    assert mechanism.initial_response() is None
    challenge = base64.b64decode("PDE4OTYuNjk3MTcwOTUyQHBvc3RvZmZpY2UucmVzdG9uLm1jaS5uZXQ+")
    assert challenge == b"<1896.697170952@postoffice.reston.mci.net>"
    response = mechanism.respond(challenge)
    assert response == b"tim b913a602c7eda7a495b4e6e7334d3890"
    assert base64.b64encode(response) == b"dGltIGI5MTNhNjAyYzdlZGE3YTQ5NWI0ZTZlNzMzNGQzODkw"
    with pytest.raises(sasl.SASLError):
        mechanism.respond(challenge)
    with pytest.raises(sasl.SASLError, match="empty"):
        sasl.CramMD5("tim", "x").respond(b"")


def scram(cls: type[sasl.ScramSHA1] | type[sasl.ScramSHA256], nonce: str) -> sasl.Mechanism:
    """The mechanism with a fixed client nonce, as in the RFC examples."""
    mechanism = cls("user", "pencil")
    mechanism._client = scramp.ScramClient([cls.name], "user", "pencil", c_nonce=nonce)
    return mechanism


def test_scram_sha_1_rfc_5802_example() -> None:
    mechanism = scram(sasl.ScramSHA1, "fyko+d2lbbFgONRv9qkxdawL")
    assert mechanism.initial_response() == b"n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL"
    server_first = b"r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096"
    assert mechanism.respond(server_first) == (
        b"c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts="
    )
    with pytest.raises(sasl.SASLError, match="signature"):
        mechanism.verify()  # +OK before the server proved itself is not a login
    assert mechanism.respond(b"v=rmF9pqV8S7suAoZWja4dJRkFsKQ=") == b""
    mechanism.verify()
    with pytest.raises(sasl.SASLError, match="after the server's final"):
        mechanism.respond(b"v=again")


def test_scram_sha_256_rfc_7677_example() -> None:
    mechanism = scram(sasl.ScramSHA256, "rOprNGfwEbeRWgbNEkqO")
    assert mechanism.initial_response() == b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO"
    server_first = (
        b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
    )
    assert mechanism.respond(server_first) == (
        b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
        b"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
    )
    assert mechanism.respond(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=") == b""
    mechanism.verify()


def test_scram_refuses_a_forged_server_signature() -> None:
    mechanism = scram(sasl.ScramSHA256, "rOprNGfwEbeRWgbNEkqO")
    mechanism.initial_response()
    mechanism.respond(
        b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
    )
    forged = b"v=" + base64.b64encode(b"\0" * 32)
    with pytest.raises(sasl.SASLError):
        mechanism.respond(forged)
    with pytest.raises(sasl.SASLError):
        mechanism.verify()


@pytest.mark.parametrize(
    "server_first",
    [
        b"r=someone-elses-nonce,s=QSXCR+Q6sek8bf92,i=4096",  # the nonce must extend ours
        b"garbage",
        b"\xff\xfe",
    ],
)
def test_scram_refuses_a_malformed_server_first(server_first: bytes) -> None:
    mechanism = scram(sasl.ScramSHA1, "fyko+d2lbbFgONRv9qkxdawL")
    mechanism.initial_response()
    with pytest.raises(sasl.SASLError):
        mechanism.respond(server_first)


def test_scram_after_an_empty_challenge() -> None:
    mechanism = scram(sasl.ScramSHA1, "fyko+d2lbbFgONRv9qkxdawL")
    # AUTH without an initial response: the server's empty challenge asks for it.
    assert mechanism.respond(b"") == b"n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL"
    fresh = scram(sasl.ScramSHA1, "fyko+d2lbbFgONRv9qkxdawL")
    with pytest.raises(sasl.SASLError, match="spoke first"):
        fresh.respond(b"r=x")


def test_xoauth2_and_its_error_continuation() -> None:
    mechanism = sasl.XOAuth2(
        "someuser@example.com", "ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg"
    )
    token = b"ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg"
    assert mechanism.initial_response() == (
        b"user=someuser@example.com\x01auth=Bearer " + token + b"\x01\x01"
    )
    error = b'{"status":"401","schemes":"bearer","scope":"https://mail.google.com/"}'
    assert mechanism.respond(error) == b""
    assert mechanism.error == error
    with pytest.raises(sasl.SASLError):
        mechanism.respond(error)


def test_oauthbearer_rfc_7628_and_the_dummy_reply() -> None:
    mechanism = sasl.OAuthBearer(
        "user@example.com",
        "vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg==",
        host="server.example.com",
        port=143,
    )
    # RFC 7628 section 4.1's example (with the port of its IMAP example).
    assert mechanism.initial_response() == (
        b"n,a=user@example.com,\x01host=server.example.com\x01port=143\x01"
        b"auth=Bearer vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg==\x01\x01"
    )
    error = b'{"status":"invalid_token","scope":"example_scope"}'
    assert mechanism.respond(error) == b"\x01"
    assert mechanism.error == error
    odd = sasl.OAuthBearer("a,b=c", "t")
    assert odd.initial_response() == b"n,a=a=2Cb=3Dc,\x01auth=Bearer t\x01\x01"


@pytest.mark.parametrize("cls", [sasl.XOAuth2, sasl.OAuthBearer])
def test_oauth_refuses_control_characters_and_empty_tokens(cls: type[sasl.XOAuth2]) -> None:
    with pytest.raises(ValueError, match="control"):
        cls("user", "tok\x01en")
    with pytest.raises(ValueError, match="control"):
        cls("us\ner", "token")
    with pytest.raises(ValueError, match="empty token"):
        cls("user", "")


@pytest.mark.parametrize("cls", [sasl.XOAuth2, sasl.OAuthBearer])
def test_oauth_error_names_the_mechanism_and_the_field(cls: type[sasl.XOAuth2]) -> None:
    name = cls.name
    with pytest.raises(ValueError, match=f"^{name}: a control character in the token$"):
        cls("user", "tok\x7fen")  # DEL is a control character too
    with pytest.raises(ValueError, match=f"^{name}: a control character in the user name$"):
        cls("us\x1fer", "token")
    cls("a user", "a token")  # a space is not one
    cls("us\x80er", "token\u00e9")  # nor is anything above DEL


@pytest.mark.parametrize(
    ("arguments", "what"),
    [
        (("u\0", "p", ""), "user name"),
        (("u", "p\0", ""), "password"),
        (("u", "p", "z\0"), "authzid"),
    ],
)
def test_plain_names_the_field_with_a_nul(arguments: tuple[str, str, str], what: str) -> None:
    user, password, authzid = arguments
    with pytest.raises(ValueError, match=f"^PLAIN: NUL in the {what}$"):
        sasl.Plain(user, password, authzid=authzid)


def _challenged(mechanism: sasl.Mechanism, *challenges: bytes) -> None:
    for challenge in challenges:
        mechanism.respond(challenge)


@pytest.mark.parametrize(
    ("make", "challenges", "message"),
    [
        (lambda: sasl.Plain("u", "p"), [b"x"], "PLAIN expects only an empty challenge"),
        (lambda: sasl.Login("u", "p"), [b"a", b"b", b"c"], "LOGIN: more than two challenges"),
        (
            lambda: sasl.CramMD5("u", "p"),
            [b"<1@x>", b"<2@x>"],
            "CRAM-MD5: more than one challenge",
        ),
        (lambda: sasl.CramMD5("u", "p"), [b""], "CRAM-MD5: an empty challenge"),
        (lambda: sasl.XOAuth2("u", "t"), [b"{}", b"{}"], "XOAUTH2: a second challenge"),
        (lambda: sasl.OAuthBearer("u", "t"), [b"{}", b"{}"], "OAUTHBEARER: a second challenge"),
        (lambda: sasl.External(), [b"x"], "EXTERNAL expects only an empty challenge"),
        (
            lambda: sasl.ScramSHA256("u", "p"),
            [b"\xff"],
            "SCRAM-SHA-256: the challenge is not UTF-8",
        ),
    ],
)
def test_a_challenge_out_of_turn_is_a_sasl_error_that_says_so(
    make: Callable[[], sasl.Mechanism], challenges: list[bytes], message: str
) -> None:
    mechanism = make()  # a fresh one each run: mechanisms keep state
    mechanism.initial_response()
    with pytest.raises(sasl.SASLError, match=f"^{message}$"):
        _challenged(mechanism, *challenges)


def test_external() -> None:
    assert sasl.External().initial_response() == b""
    assert sasl.External("admin").initial_response() == b"admin"
    assert sasl.External().respond(b"") == b""
    with pytest.raises(sasl.SASLError):
        sasl.External().respond(b"x")


def test_a_user_mechanism_only_needs_name_and_respond() -> None:
    class Echo(sasl.Mechanism):
        name = "X-ECHO"

        def respond(self, challenge: bytes) -> bytes:
            return challenge[::-1]

    echo = Echo()
    assert echo.initial_response() is None
    assert echo.respond(b"abc") == b"cba"
    echo.verify()
    with pytest.raises(sasl.SASLError):
        sasl.Mechanism().respond(b"")


@pytest.mark.parametrize(
    "mechanism",
    [
        sasl.Plain("u", "hunter2"),
        sasl.Login("u", "hunter2"),
        sasl.CramMD5("u", "hunter2"),
        sasl.ScramSHA256("u", "hunter2"),
        sasl.XOAuth2("u", "hunter2"),
        sasl.OAuthBearer("u", "hunter2"),
    ],
)
def test_no_secret_in_repr(mechanism: sasl.Mechanism) -> None:
    assert "hunter2" not in repr(mechanism)
    assert "hunter2" not in str(mechanism)
