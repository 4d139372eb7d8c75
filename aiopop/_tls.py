"""TLS on a connection's own byte stream: :class:`ssl.SSLObject` over two memory BIOs.

asyncio's TLS transport keeps a 256 KiB read buffer for every connection
(``asyncio.sslproto.SSLProtocol.max_size`` in CPython 3.11 and later,
zero-filled and therefore resident), twenty times what an idle POP3
session needs otherwise, and nothing lets a caller make it smaller. Here
ciphertext comes in as the plain transport's ``bytes`` and goes out as
``bytes``; between reads nothing is kept but OpenSSL's own state, whose
record buffers CPython releases while a connection is idle
(``SSL_MODE_RELEASE_BUFFERS``).

:class:`TLSSession` never awaits: the connection feeds it what the socket
read and writes out what it returns.
"""

from __future__ import annotations

import contextlib
import ssl

from ._errors import POP3Error
from ._parse import fingerprint_of, format_fingerprint

__all__ = ["FingerprintMismatchError", "TLSSession", "client_context"]

X509_V_ERR_APPLICATION_VERIFICATION = 50
"""OpenSSL's verify code for "application verification failure": a pin that does not match."""

READ_SIZE = 16 * 1024 + 1
"""Octets asked of each ``SSLObject.read``: one whole record (at most 2**14 octets of plaintext)."""


class FingerprintMismatchError(ssl.SSLCertVerificationError, POP3Error):
    """The server's certificate is not the one pinned with ``tls_fingerprint``.

    Raised right after the TLS handshake, before anything else is sent or
    read: no command, and so no credential, went to that server. An
    :class:`ssl.SSLCertVerificationError` (so an ``OSError``) and a
    :class:`~aiopop.POP3Error`. ``expected`` is the pinned fingerprint,
    ``offered`` the certificate's, both written ``SHA256:AB:CD:...``: when
    the server's certificate was renewed, check the new one by other means
    before pinning ``offered``.
    """

    def __init__(self, expected: str, offered: str) -> None:
        self.expected = expected
        self.offered = offered
        message = (
            f"the server's certificate has the fingerprint {offered}, not the pinned {expected}"
        )
        super().__init__(ssl.SSL_ERROR_SSL, message)  # as OpenSSL's own: str() is the message
        # As OpenSSL says it for a certificate refused by the application's own check.
        self.verify_code = X509_V_ERR_APPLICATION_VERIFICATION
        self.verify_message = message
        self.library = "SSL"
        self.reason = "CERTIFICATE_VERIFY_FAILED"

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.expected, self.offered))


def client_context(*, pinned: bool = False) -> ssl.SSLContext:
    """The default client context: CA and host name verified (:func:`ssl.create_default_context`).

    ``pinned``: neither is, because a certificate fingerprint will be
    compared instead (the case of a self-signed certificate).
    """
    context = ssl.create_default_context()
    if pinned:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        # The fingerprint is checked once, after the handshake: no second one (TLS 1.2
        # renegotiation) may bring another certificate in afterwards.
        context.options |= ssl.OP_NO_RENEGOTIATION
    return context


class TLSSession:
    """The client side of one TLS session, from ClientHello to close_notify.

    Raises :class:`ssl.SSLError` (an :class:`ssl.SSLCertVerificationError`
    for a certificate that does not verify) from :meth:`receive` when the
    handshake fails or a record is bad; the session is unusable after that.
    With ``fingerprint`` (a SHA-256 digest), the server's certificate must
    have it: else :class:`FingerprintMismatchError` is raised as the
    handshake completes, before the session's last handshake message (and
    anything after it) is handed out to be sent.
    """

    def __init__(
        self,
        context: ssl.SSLContext,
        server_hostname: str | None,
        fingerprint: bytes | None = None,
    ) -> None:
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._object = context.wrap_bio(
            self._incoming, self._outgoing, server_hostname=server_hostname
        )
        self._fingerprint = fingerprint
        self.established = False
        """True once the handshake has completed."""
        self.peer_closed = False
        """True once the server has sent close_notify: no more plaintext will come."""

    def start(self) -> bytes:
        """Begin the handshake; returns the ClientHello to send."""
        self._handshake()
        return self._outgoing.read()

    def receive(self, data: bytes) -> bytes:
        """Take ciphertext from the server; return the plaintext it completes (often ``b""``).

        Afterwards :meth:`to_send` holds what the session must send back
        (the rest of the handshake, or answers to post-handshake messages).
        """
        self._incoming.write(data)
        if not self.established and not self._handshake():
            return b""
        chunks: list[bytes] = []
        read = self._object.read
        try:
            while chunk := read(READ_SIZE):
                chunks.append(chunk)
            self.peer_closed = True  # read() returns b"" only after close_notify
        except ssl.SSLWantReadError:
            pass  # the rest of a record has not arrived yet
        except ssl.SSLZeroReturnError:
            self.peer_closed = True
        if len(chunks) == 1:
            return chunks[0]
        return b"".join(chunks)

    def to_send(self) -> bytes:
        """Ciphertext waiting to be sent: handshake messages, alerts."""
        return self._outgoing.read()

    def send(self, plaintext: bytes) -> bytes:
        """Encrypt ``plaintext``; returns the records to send."""
        self._object.write(plaintext)
        return self._outgoing.read()

    def close(self) -> bytes:
        """Returns the close_notify alert to send, or ``b""`` when none can be sent.

        The server's own close_notify is not waited for: RFC 8446 section
        6.1 does not ask the side that closes first to read it.
        """
        if self.established:
            # SSLWantReadError: ours is written, the server's has not come.
            with contextlib.suppress(ssl.SSLError):
                self._object.unwrap()
        return self._outgoing.read()

    def peer_certificate(self) -> bytes | None:
        """The server's certificate in DER form, once the handshake has completed."""
        if not self.established:
            return None
        return self._object.getpeercert(binary_form=True)

    def _handshake(self) -> bool:
        try:
            self._object.do_handshake()
        except ssl.SSLWantReadError:
            return False
        if self._fingerprint is not None:
            self._check_fingerprint(self._fingerprint)
        self.established = True
        return True

    def _check_fingerprint(self, expected: bytes) -> None:
        certificate = self._object.getpeercert(binary_form=True)
        offered = fingerprint_of(certificate) if certificate is not None else None
        if offered != expected:
            # What the handshake left to send (the client's Finished) stays unsent.
            self._outgoing.read()
            raise FingerprintMismatchError(
                format_fingerprint(expected),
                format_fingerprint(offered) if offered is not None else "(no certificate)",
            )
