"""Certificate pinning: ``tls_fingerprint`` replaces the CA and host name checks.

A server with a certificate that no CA vouches for (self-signed, or from an
untrusted CA for another name) is reached by its SHA-256 fingerprint; a
certificate with another fingerprint is refused right after the handshake,
before any command, and so before any credential, reaches the server.
"""

from __future__ import annotations

import hashlib
import pickle
import ssl
from pathlib import Path

import pytest
import trustme

import aiopop
from aiopop import _errors
from aiopop._parse import format_fingerprint, parse_fingerprint
from aiopop.testing import Mailbox, POP3TestServer, ScriptedServer, Send, WaitForClose
from tests.client.test_hostile_certificates import self_signed_context
from tests.helpers.hostile import GREETING, client_closed
from tests.helpers.login import MESSAGE, PASSWORD

SECRET_VERBS = {b"USER", b"PASS", b"AUTH", b"APOP"}


def pinned_server(names: tuple[str, ...] = ("mail.example.org",)) -> tuple[ssl.SSLContext, str]:
    """A server context with a certificate from a CA nobody trusts, for ``names``; its
    fingerprint as ``SHA256:AB:...``."""
    ca = trustme.CA()
    leaf = ca.issue_cert(*names)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    leaf.configure_cert(context)
    der = ssl.PEM_cert_to_DER_cert(leaf.cert_chain_pems[0].bytes().decode())
    return context, format_fingerprint(hashlib.sha256(der).digest())


def other_fingerprint(fingerprint: str) -> str:
    digest = bytearray(parse_fingerprint(fingerprint))
    digest[-1] ^= 1
    return format_fingerprint(bytes(digest))


def mailboxes() -> dict[str, Mailbox]:
    return {"mrose": Mailbox(PASSWORD, [MESSAGE])}


def verbs(record_lines: list[bytes]) -> set[bytes]:
    return {line.split(b" ")[0].upper() for line in record_lines}


# -- the spellings of a fingerprint ---------------------------------------------------------------

DIGEST = hashlib.sha256(b"a certificate").digest()
HEX = DIGEST.hex()
PAIRS = ":".join(HEX[i : i + 2] for i in range(0, 64, 2))


@pytest.mark.parametrize(
    "text",
    [
        HEX,
        HEX.upper(),
        PAIRS,
        PAIRS.upper(),
        "sha256:" + PAIRS,
        "SHA256:" + HEX.upper(),
        "SHA-256:" + PAIRS,
        "  sha256:" + PAIRS + "\n",
        format_fingerprint(DIGEST),
    ],
)
def test_the_usual_spellings_are_accepted(text: str) -> None:
    assert parse_fingerprint(text) == DIGEST
    client = aiopop.POP3_SSL("127.0.0.1", tls_fingerprint=text)
    assert client.tls_fingerprint == "SHA256:" + PAIRS.upper()


@pytest.mark.parametrize(
    "text",
    [
        "",
        "sha256:",
        HEX[:-2],
        HEX + "00",
        PAIRS + ":",
        PAIRS.replace(":", "-"),
        "g" + HEX[1:],
        "sha1:" + HEX[:40],
        HEX[:40],  # a SHA-1 fingerprint
        "md5:" + HEX[:32],
        "sha512:" + HEX,
        "AB:CD",
    ],
)
def test_anything_else_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="SHA-256"):
        parse_fingerprint(text)
    with pytest.raises(ValueError, match="SHA-256"):
        aiopop.POP3_SSL("127.0.0.1", tls_fingerprint=text)
    with pytest.raises(aiopop.AccountError, match="tls_fingerprint"):
        aiopop.Account("h.test", "u", tls_fingerprint=text)


def test_a_pin_requires_tls() -> None:
    assert aiopop.POP3("127.0.0.1", tls_fingerprint=HEX).tls == "starttls"
    assert aiopop.POP3("127.0.0.1", tls="starttls", tls_fingerprint=HEX).tls == "starttls"
    for policy in ("if-offered", "none"):
        with pytest.raises(ValueError, match="starttls"):
            aiopop.POP3("127.0.0.1", tls=policy, tls_fingerprint=HEX)
        with pytest.raises(aiopop.AccountError, match="needs TLS"):
            aiopop.Account("h.test", "u", tls=policy, tls_fingerprint=HEX)
    assert aiopop.POP3("127.0.0.1").tls_fingerprint is None


# -- implicit TLS ---------------------------------------------------------------------------------


async def test_a_pinned_certificate_replaces_the_ca_and_name_checks() -> None:
    context, fingerprint = pinned_server()
    async with POP3TestServer(mailboxes(), ssl_context=context) as server:
        # Without the pin: an unknown CA, and a certificate for another name.
        with pytest.raises(ssl.SSLCertVerificationError):
            await aiopop.POP3_SSL(server.host, server.port, timeout=5).connect()
        spelled = fingerprint.removeprefix("SHA256:").replace(":", "").lower()
        async with aiopop.POP3_SSL(
            server.host, server.port, tls_fingerprint=spelled, timeout=5
        ) as client:
            assert client.certificate_fingerprint == fingerprint
            await client.login("mrose", PASSWORD)
            assert (await client.stat()).count == 1
    assert server.sessions[-1].quit


async def test_a_self_signed_certificate_is_reached_by_its_fingerprint(tmp_path: Path) -> None:
    context = self_signed_context(tmp_path)
    pem = (tmp_path / "self-signed.pem").read_text()
    fingerprint = format_fingerprint(hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem)).digest())
    async with POP3TestServer(mailboxes(), ssl_context=context) as server:
        with pytest.raises(ssl.SSLCertVerificationError):
            await aiopop.POP3_SSL(server.host, server.port, timeout=5).connect()
        account = aiopop.Account(
            server.host, "mrose", port=server.port, password=PASSWORD, tls_fingerprint=fingerprint
        )
        async with account.session() as client:
            assert (await client.stat()).count == 1


async def test_a_wrong_fingerprint_is_refused_before_anything_is_sent() -> None:
    context, fingerprint = pinned_server(("127.0.0.1",))
    wrong = other_fingerprint(fingerprint)
    async with ScriptedServer([Send(GREETING), WaitForClose()], ssl_context=context) as server:
        client = aiopop.POP3_SSL(server.host, server.port, tls_fingerprint=wrong, timeout=5)
        with pytest.raises(aiopop.FingerprintMismatchError) as info:
            await client.connect()
        error = info.value
        assert (error.expected, error.offered) == (wrong, fingerprint)
        assert wrong in str(error)
        assert fingerprint in str(error)
        # An ssl certificate error, an OSError, and one of aiopop's.
        assert isinstance(error, ssl.SSLCertVerificationError)
        assert isinstance(error, OSError)
        assert isinstance(error, aiopop.POP3Error)
        assert error.verify_message == str(error)
        assert not client.is_connected
        with pytest.raises(aiopop.POP3Error):
            await client.login("u", "p")
        await client_closed(server)
    assert server.received == []


async def test_a_wrong_fingerprint_sends_no_credential_from_an_account() -> None:
    context, fingerprint = pinned_server()
    async with POP3TestServer(mailboxes(), ssl_context=context) as server:
        account = aiopop.Account(
            server.host,
            "mrose",
            port=server.port,
            password=PASSWORD,
            tls_fingerprint=other_fingerprint(fingerprint),
        )
        with pytest.raises(aiopop.FingerprintMismatchError):
            async with account.session():
                pytest.fail("logged in")  # pragma: no cover
    # The server never saw the end of the handshake: no session began, nothing was read.
    assert all(record.lines == [] for record in server.sessions)


async def test_a_ca_context_given_as_well_still_checks_the_ca() -> None:
    context, fingerprint = pinned_server()
    async with POP3TestServer(mailboxes(), ssl_context=context) as server:
        client = aiopop.POP3_SSL(
            server.host,
            server.port,
            ssl_context=ssl.create_default_context(),
            tls_fingerprint=fingerprint,
            timeout=5,
        )
        with pytest.raises(ssl.SSLCertVerificationError) as info:
            await client.connect()
        assert not isinstance(info.value, aiopop.FingerprintMismatchError)


# -- STLS -----------------------------------------------------------------------------------------


async def test_stls_with_a_pinned_certificate() -> None:
    context, fingerprint = pinned_server()
    async with POP3TestServer(mailboxes(), starttls_context=context) as server:
        client = aiopop.POP3(server.host, server.port, tls_fingerprint=fingerprint)
        async with client:
            assert client.is_tls  # "starttls" by default with a pin: upgraded on connecting
            assert client.certificate_fingerprint == fingerprint
            await client.login("mrose", PASSWORD)
            assert (await client.stat()).count == 1
    assert server.sessions[0].quit


async def test_stls_with_a_wrong_fingerprint_sends_nothing_after_the_handshake() -> None:
    context, fingerprint = pinned_server()
    async with POP3TestServer(mailboxes(), starttls_context=context) as server:
        client = aiopop.POP3(
            server.host, server.port, tls_fingerprint=other_fingerprint(fingerprint), timeout=5
        )
        with pytest.raises(aiopop.FingerprintMismatchError) as info:
            await client.connect()
        assert info.value.offered == fingerprint
        assert not client.is_connected
        with pytest.raises(aiopop.POP3Error):
            await client.login("mrose", PASSWORD)
        account = aiopop.Account(
            server.host,
            "mrose",
            port=server.port,
            tls="starttls",
            password=PASSWORD,
            tls_fingerprint=other_fingerprint(fingerprint),
        )
        with pytest.raises(aiopop.FingerprintMismatchError):
            async with account.session():
                pytest.fail("logged in")  # pragma: no cover
    for record in server.sessions:
        assert record.lines == [b"CAPA", b"STLS"]
        assert not verbs(record.lines) & SECRET_VERBS


async def test_an_explicit_stls_checks_the_pin_too() -> None:
    context, fingerprint = pinned_server()
    async with POP3TestServer(mailboxes(), starttls_context=context) as server:
        client = aiopop.POP3(
            server.host, server.port, tls="starttls", tls_fingerprint=fingerprint, timeout=5
        )
        async with client:
            assert client.is_tls
            with pytest.raises(aiopop.CommandStateError):
                await client.stls()
        wrong = aiopop.POP3(
            server.host, server.port, tls="starttls", tls_fingerprint=other_fingerprint(fingerprint)
        )
        wrong.tls = "none"  # connect in the clear; stls() by hand must still check the pin
        await wrong.connect()
        with pytest.raises(aiopop.FingerprintMismatchError):
            await wrong.stls()
        assert not wrong.is_connected
    assert server.sessions[-1].lines == [b"STLS"]


# -- what the error is ----------------------------------------------------------------------------


def test_the_mismatch_is_a_tls_failure_with_both_fingerprints_in_its_hint() -> None:
    error = aiopop.FingerprintMismatchError(format_fingerprint(DIGEST), "SHA256:00")
    failure = aiopop.diagnose(error)
    assert failure.kind is aiopop.FailureKind.FINGERPRINT
    assert (failure.reason, failure.exit_status, failure.retryable) == ("tls", 4, False)
    assert failure.hint is not None
    assert format_fingerprint(DIGEST) in failure.hint
    assert "SHA256:00" in failure.hint
    assert "--fingerprint" in failure.hint
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is aiopop.FingerprintMismatchError
    assert (copy.expected, copy.offered, str(copy)) == (error.expected, "SHA256:00", str(error))
    # Without its fingerprints (a subclass built otherwise), the table's hint.
    assert any(row.kind is aiopop.FailureKind.FINGERPRINT for _, row in _errors.FAILURES)


# -- accounts -------------------------------------------------------------------------------------


def test_an_account_keeps_its_pin_in_one_spelling(tmp_path: Path) -> None:
    account = aiopop.Account("h.test", "u", tls_fingerprint="sha256:" + HEX)
    assert account.tls_fingerprint == format_fingerprint(DIGEST)
    assert account.client().tls_fingerprint == format_fingerprint(DIGEST)
    assert aiopop.Account("h.test", "u").client().tls_fingerprint is None
    path = tmp_path / "accounts.toml"
    path.write_text(
        f'[[account]]\nurl = "pops://u@h.test"\npassword_env = "P"\ntls_fingerprint = "{PAIRS}"\n'
    )
    (loaded,) = aiopop.load_accounts(path)
    assert loaded.tls_fingerprint == format_fingerprint(DIGEST)
    for value in ('"sha1:00"', "42", '"' + HEX[:40] + '"'):
        path.write_text(
            f'[[account]]\nurl = "pops://u@h.test"\npassword_env = "P"\ntls_fingerprint = {value}\n'
        )
        with pytest.raises(aiopop.AccountError, match="tls_fingerprint must be a SHA-256"):
            aiopop.load_accounts(path)


def test_the_pinned_default_context_checks_no_ca_and_refuses_renegotiation() -> None:
    context = aiopop.POP3_SSL("127.0.0.1", tls_fingerprint=HEX).ssl_context
    assert context is not None
    assert context.verify_mode is ssl.CERT_NONE
    assert not context.check_hostname
    assert context.options & ssl.OP_NO_RENEGOTIATION  # one certificate, checked once
    verified = aiopop.POP3_SSL("127.0.0.1").ssl_context
    assert verified is not None
    assert verified.verify_mode is ssl.CERT_REQUIRED
