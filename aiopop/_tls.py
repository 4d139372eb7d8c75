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

__all__ = ["TLSSession"]

READ_SIZE = 16 * 1024 + 1
"""Octets asked of each ``SSLObject.read``: one whole record (at most 2**14 octets of plaintext)."""


class TLSSession:
    """The client side of one TLS session, from ClientHello to close_notify.

    Raises :class:`ssl.SSLError` (an :class:`ssl.SSLCertVerificationError`
    for a certificate that does not verify) from :meth:`receive` when the
    handshake fails or a record is bad; the session is unusable after that.
    """

    def __init__(self, context: ssl.SSLContext, server_hostname: str | None) -> None:
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._object = context.wrap_bio(
            self._incoming, self._outgoing, server_hostname=server_hostname
        )
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

    def _handshake(self) -> bool:
        try:
            self._object.do_handshake()
        except ssl.SSLWantReadError:
            return False
        self.established = True
        return True
