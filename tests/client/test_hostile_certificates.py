"""Certificates are verified by default (RFC 8314; poplib's cpython#91826)."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from pathlib import Path

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

import aiopop
from aiopop.testing import (
    Expect,
    ScriptedServer,
    Send,
    StartTLS,
    Step,
    WaitForClose,
)
from tests.helpers.hostile import CAPA_STLS, GREETING, client_closed
from tests.helpers.scripted import client_for
from tests.helpers.tls import client_context, server_context

# -- certificates: verified by default (RFC 8314; poplib's cpython#91826) -------------------------


def self_signed_context(directory: Path) -> ssl.SSLContext:
    """A server context whose certificate, for 127.0.0.1 and localhost, signs itself."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "self-signed.pem", directory / "self-signed.key"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    return context


# What the server presents, whether the client trusts the CA that issued it,
# the name the client verifies (None: the address it connects to) and
# OpenSSL's verdict: 18 self-signed, 20 unknown issuer, 62 wrong name, 64 wrong address.
CERTIFICATES: dict[str, tuple[str, bool, str | None, int]] = {
    "self-signed": ("self-signed", False, None, 18),
    "untrusted-ca": ("127.0.0.1", False, None, 20),
    "another-address": ("mail.example.org", True, None, 64),
    "another-name": ("mail.example.org", True, "pop.example.net", 62),
}


def bad_certificate(
    kind: str, ca: trustme.CA, directory: Path
) -> tuple[ssl.SSLContext, ssl.SSLContext | None, str | None, int]:
    """The server's context, the client's (None: the default), its server_hostname, the code."""
    name, trusted, hostname, code = CERTIFICATES[kind]
    server = self_signed_context(directory) if kind == "self-signed" else server_context(ca, name)
    return server, client_context(ca) if trusted else None, hostname, code


@pytest.mark.parametrize("kind", CERTIFICATES)
async def test_pop3_ssl_refuses_a_bad_certificate_by_default(
    kind: str, ca: trustme.CA, tmp_path: Path
) -> None:
    tls, client_tls, hostname, code = bad_certificate(kind, ca, tmp_path)
    async with ScriptedServer([Send(GREETING), WaitForClose()], ssl_context=tls) as server:
        client = aiopop.POP3_SSL(
            server.host, server.port, ssl_context=client_tls, server_hostname=hostname, timeout=3
        )
        with pytest.raises(ssl.SSLCertVerificationError) as info:
            await client.connect()
        assert isinstance(info.value, OSError)
        assert info.value.verify_code == code
        assert not client.is_connected
        with pytest.raises(aiopop.POP3Error):
            await client.login("u", "p")
    assert server.received == []


@pytest.mark.parametrize("entry", ["stls", "connect-required", "login-if-offered"])
@pytest.mark.parametrize("kind", CERTIFICATES)
async def test_stls_refuses_a_bad_certificate_by_default(
    kind: str, entry: str, ca: trustme.CA, tmp_path: Path
) -> None:
    tls, client_tls, hostname, code = bad_certificate(kind, ca, tmp_path)
    script: list[Step] = [
        Send(GREETING),
        Expect(b"CAPA"),
        Send(CAPA_STLS),
        Expect(b"STLS"),
        Send(b"+OK begin TLS\r\n"),
        StartTLS(tls),
        WaitForClose(),
    ]
    async with ScriptedServer(script) as server:
        policy = "starttls" if entry == "connect-required" else "if-offered"
        client = client_for(
            server, timeout=3, tls=policy, ssl_context=client_tls, server_hostname=hostname
        )
        with pytest.raises(ssl.SSLCertVerificationError) as info:  # noqa: PT012 - the entry
            await client.connect()
            if entry == "stls":
                await client.capa()
                await client.stls()
            else:
                await client.login("u", "p", allow_cleartext=True)
        assert info.value.verify_code == code
        assert not client.is_tls
        assert not client.is_connected
        await client_closed(server)
    # Not one line after STLS, and no cleartext retry on a new connection.
    assert server.received == [b"CAPA", b"STLS"]
    assert server.connections == 1
