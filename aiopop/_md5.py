"""MD5 message digest (RFC 1321) in pure Python.

Used only where :mod:`hashlib` refuses MD5 (FIPS-restricted builds), so that
APOP keeps working there. MD5 is broken as a general-purpose hash; nothing in
aiopop uses it for anything but the APOP digest that RFC 1939 mandates.
"""

from __future__ import annotations

import struct

__all__ = ["MD5", "md5_hexdigest"]

_MASK = 0xFFFFFFFF

# RFC 1321 section 3.3: initial values of the registers A, B, C, D.
_INIT = (0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476)

# RFC 1321 section 3.4: T[i] = int(4294967296 * abs(sin(i))), i = 1..64.
# Written out rather than computed so the result cannot depend on libm's sin().
_T = (
    0xD76AA478, 0xE8C7B756, 0x242070DB, 0xC1BDCEEE,
    0xF57C0FAF, 0x4787C62A, 0xA8304613, 0xFD469501,
    0x698098D8, 0x8B44F7AF, 0xFFFF5BB1, 0x895CD7BE,
    0x6B901122, 0xFD987193, 0xA679438E, 0x49B40821,
    0xF61E2562, 0xC040B340, 0x265E5A51, 0xE9B6C7AA,
    0xD62F105D, 0x02441453, 0xD8A1E681, 0xE7D3FBC8,
    0x21E1CDE6, 0xC33707D6, 0xF4D50D87, 0x455A14ED,
    0xA9E3E905, 0xFCEFA3F8, 0x676F02D9, 0x8D2A4C8A,
    0xFFFA3942, 0x8771F681, 0x6D9D6122, 0xFDE5380C,
    0xA4BEEA44, 0x4BDECFA9, 0xF6BB4B60, 0xBEBFBC70,
    0x289B7EC6, 0xEAA127FA, 0xD4EF3085, 0x04881D05,
    0xD9D4D039, 0xE6DB99E5, 0x1FA27CF8, 0xC4AC5665,
    0xF4292244, 0x432AFF97, 0xAB9423A7, 0xFC93A039,
    0x655B59C3, 0x8F0CCC92, 0xFFEFF47D, 0x85845DD1,
    0x6FA87E4F, 0xFE2CE6E0, 0xA3014314, 0x4E0811A1,
    0xF7537E82, 0xBD3AF235, 0x2AD7D2BB, 0xEB86D391,
)  # fmt: skip

# Per round: the shift amounts (cycling every four steps) and the order in
# which the 16 words of a block are used, as listed in RFC 1321 section 3.4.
_SHIFTS = ((7, 12, 17, 22), (5, 9, 14, 20), (4, 11, 16, 23), (6, 10, 15, 21))
_WORD_ORDER = (
    tuple(range(16)),
    tuple((1 + 5 * j) % 16 for j in range(16)),
    tuple((5 + 3 * j) % 16 for j in range(16)),
    tuple((7 * j) % 16 for j in range(16)),
)


def _schedule(r: int) -> tuple[tuple[int, int, int], ...]:
    """The (word index, shift, T constant) of each of round r's 16 steps."""
    return tuple((_WORD_ORDER[r][j], _SHIFTS[r][j % 4], _T[16 * r + j]) for j in range(16))


_ROUND1, _ROUND2, _ROUND3, _ROUND4 = (_schedule(r) for r in range(4))

_BLOCK = struct.Struct("<16I")


def _compress(state: tuple[int, int, int, int], block: bytes) -> tuple[int, int, int, int]:
    """Process one 64-byte block and return the new (A, B, C, D)."""
    x = _BLOCK.unpack(block)
    a, b, c, d = state
    # Each step updates one register and the roles rotate (ABCD, DABC, CDAB,
    # BCDA), so after computing the new value we shift the names by one.
    for k, s, t in _ROUND1:
        # F(b,c,d) = (b & c) | (~b & d), written without a complement.
        v = (a + (d ^ (b & (c ^ d))) + x[k] + t) & _MASK
        a, b, c, d = d, (b + ((v << s) | (v >> (32 - s)))) & _MASK, b, c
    for k, s, t in _ROUND2:
        # G(b,c,d) = (b & d) | (c & ~d).
        v = (a + (c ^ (d & (b ^ c))) + x[k] + t) & _MASK
        a, b, c, d = d, (b + ((v << s) | (v >> (32 - s)))) & _MASK, b, c
    for k, s, t in _ROUND3:
        v = (a + (b ^ c ^ d) + x[k] + t) & _MASK
        a, b, c, d = d, (b + ((v << s) | (v >> (32 - s)))) & _MASK, b, c
    for k, s, t in _ROUND4:
        v = (a + (c ^ (b | (d ^ _MASK))) + x[k] + t) & _MASK
        a, b, c, d = d, (b + ((v << s) | (v >> (32 - s)))) & _MASK, b, c
    a0, b0, c0, d0 = state
    return ((a0 + a) & _MASK, (b0 + b) & _MASK, (c0 + c) & _MASK, (d0 + d) & _MASK)


class MD5:
    """An incremental MD5 hash with the familiar ``update``/``digest`` methods."""

    __slots__ = ("_buffer", "_length", "_state")

    def __init__(self, data: bytes = b"") -> None:
        """Start a new hash, optionally feeding it ``data``."""
        self._state = _INIT
        self._buffer = b""
        self._length = 0
        if data:
            self.update(data)

    def update(self, data: bytes) -> None:
        """Feed more bytes into the hash."""
        self._length += len(data)
        buf = self._buffer + bytes(data)
        full = len(buf) - len(buf) % 64
        state = self._state
        for offset in range(0, full, 64):
            state = _compress(state, buf[offset : offset + 64])
        self._state = state
        self._buffer = buf[full:]

    def digest(self) -> bytes:
        """Return the 16-byte digest of everything fed so far."""
        # RFC 1321 sections 3.1 and 3.2: a 1 bit, zeros up to 56 mod 64 bytes,
        # then the message length in bits as a little-endian 64-bit number.
        pad_len = (55 - self._length) % 64
        tail = (
            self._buffer
            + b"\x80"
            + b"\x00" * pad_len
            + struct.pack("<Q", (self._length * 8) & 0xFFFFFFFFFFFFFFFF)
        )
        state = self._state
        for offset in range(0, len(tail), 64):
            state = _compress(state, tail[offset : offset + 64])
        return struct.pack("<4I", *state)

    def hexdigest(self) -> str:
        """Return the digest as 32 lowercase hexadecimal characters."""
        return self.digest().hex()

    def copy(self) -> MD5:
        """Return an independent copy of the current hash state."""
        other = MD5()
        other._state = self._state
        other._buffer = self._buffer
        other._length = self._length
        return other


def md5_hexdigest(data: bytes) -> str:
    """Return the MD5 digest of ``data`` as 32 lowercase hexadecimal characters."""
    return MD5(data).hexdigest()
