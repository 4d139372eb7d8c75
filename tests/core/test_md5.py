"""Tests for the pure-Python MD5 and the APOP digest with its hashlib fallback."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aiopop import _apop, _md5
from aiopop._apop import apop_digest
from aiopop._md5 import MD5, md5_hexdigest

# RFC 1321 appendix A.5, the "MD5 test suite".
RFC1321_VECTORS = [
    (b"", "d41d8cd98f00b204e9800998ecf8427e"),
    (b"a", "0cc175b9c0f1b6a831c399e269772661"),
    (b"abc", "900150983cd24fb0d6963f7d28e17f72"),
    (b"message digest", "f96b697d7cb7938d525a2f31aaf161d0"),
    (b"abcdefghijklmnopqrstuvwxyz", "c3fcd3d76192e4007dfb496cca67e13b"),
    (
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
        "d174ab98d277d9f5a5611c2c9f419d9f",
    ),
    (b"1234567890" * 8, "57edf4a22be3c955ac49da2e2107b67a"),
]

# RFC 1939 section 7.
RFC1939_TIMESTAMP = b"<1896.697170952@dbc.mtview.ca.us>"
RFC1939_SECRET = b"tanstaaf"
RFC1939_DIGEST = "c4c9334bac560ecc979e58001b3e22fb"


def _reference(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


@pytest.mark.parametrize(("data", "expected"), RFC1321_VECTORS)
def test_rfc1321_suite(data: bytes, expected: str) -> None:
    assert md5_hexdigest(data) == expected


@pytest.mark.parametrize(("data", "expected"), RFC1321_VECTORS)
def test_rfc1321_suite_matches_hashlib(data: bytes, expected: str) -> None:
    assert _reference(data) == expected


def test_t_table_matches_rfc_definition() -> None:
    from_sine = tuple(int(4294967296 * abs(math.sin(i))) for i in range(1, 65))
    assert from_sine == _md5._T


@pytest.mark.parametrize("length", range(131))
def test_boundary_lengths(length: int) -> None:
    data = bytes((7 * i + 3) % 256 for i in range(length))
    assert md5_hexdigest(data) == _reference(data)


def test_multi_block() -> None:
    data = bytes(range(256)) * 40 + b"tail"
    assert md5_hexdigest(data) == _reference(data)


def test_incremental_matches_one_shot() -> None:
    data = bytes(range(256)) * 3
    for step in (1, 7, 55, 56, 63, 64, 65, 200):
        h = MD5()
        for i in range(0, len(data), step):
            h.update(data[i : i + step])
        assert h.hexdigest() == _reference(data), step


def test_digest_does_not_finalise_and_copy_is_independent() -> None:
    h = MD5(b"hello ")
    assert h.hexdigest() == _reference(b"hello ")
    snapshot = h.copy()
    h.update(b"world")
    assert h.digest() == hashlib.md5(b"hello world", usedforsecurity=False).digest()
    assert snapshot.hexdigest() == _reference(b"hello ")


@given(st.binary(max_size=400))
def test_matches_hashlib(data: bytes) -> None:
    assert md5_hexdigest(data) == _reference(data)


@given(st.lists(st.binary(max_size=150), max_size=8))
def test_chunked_updates_match_hashlib(chunks: list[bytes]) -> None:
    h = MD5()
    for chunk in chunks:
        h.update(chunk)
    assert h.hexdigest() == _reference(b"".join(chunks))


@pytest.fixture
def fresh_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make _apop choose its MD5 implementation again, and forget it afterwards."""
    monkeypatch.setattr(_apop, "_selected", None)


def _fips_md5(*args: Any, **kwargs: Any) -> Any:
    raise ValueError("[digital envelope routines] unsupported")


def _spy(calls: list[bytes], inner: Callable[[bytes], str]) -> Callable[[bytes], str]:
    def wrapper(data: bytes) -> str:
        calls.append(data)
        return inner(data)

    return wrapper


def test_apop_rfc1939_example_hashlib(fresh_choice: None) -> None:
    assert _apop._hashlib_md5() is not None
    assert apop_digest(RFC1939_TIMESTAMP, RFC1939_SECRET) == RFC1939_DIGEST
    assert _apop._selected is _apop._hashlib_hexdigest


def test_apop_rfc1939_example_fallback(fresh_choice: None, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[bytes] = []
    monkeypatch.setattr(hashlib, "md5", _fips_md5)
    monkeypatch.setattr(_apop, "md5_hexdigest", _spy(calls, md5_hexdigest))
    assert _apop._hashlib_md5() is None
    assert apop_digest(RFC1939_TIMESTAMP, RFC1939_SECRET) == RFC1939_DIGEST
    assert calls == [RFC1939_TIMESTAMP + RFC1939_SECRET]


def test_fips_hashlib_is_used_for_apop(fresh_choice: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """A FIPS build refuses MD5 for security use only: APOP says it is not, and keeps hashlib."""
    real_md5 = hashlib.md5
    calls: list[bytes] = []

    def fips_md5(data: bytes = b"", *, usedforsecurity: bool = True) -> Any:
        if usedforsecurity:
            raise ValueError("[digital envelope routines] unsupported")
        calls.append(data)
        return real_md5(data, usedforsecurity=False)

    monkeypatch.setattr(hashlib, "md5", fips_md5)
    monkeypatch.setattr(_apop, "md5_hexdigest", _fips_md5)  # the fallback must not be used
    assert apop_digest(RFC1939_TIMESTAMP, RFC1939_SECRET) == RFC1939_DIGEST
    assert _apop._selected is _apop._hashlib_hexdigest
    assert calls[-1] == RFC1939_TIMESTAMP + RFC1939_SECRET


def test_fallback_when_hashlib_has_no_md5(
    fresh_choice: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delattr(hashlib, "md5")
    assert _apop._hashlib_md5() is None
    assert apop_digest(RFC1939_TIMESTAMP, RFC1939_SECRET) == RFC1939_DIGEST
    assert _apop._selected is md5_hexdigest


def test_choice_is_made_once(fresh_choice: None, monkeypatch: pytest.MonkeyPatch) -> None:
    probes: list[bool] = []
    real_probe = _apop._hashlib_md5

    def counting_probe() -> Callable[[bytes], str] | None:
        probes.append(True)
        return real_probe()

    monkeypatch.setattr(_apop, "_hashlib_md5", counting_probe)
    first = apop_digest(b"<1@x>", b"a")
    second = apop_digest(b"<2@x>", b"b")
    assert probes == [True]
    assert first == _reference(b"<1@x>a")
    assert second == _reference(b"<2@x>b")


def test_apop_digest_is_lowercase_hex(fresh_choice: None) -> None:
    digest = apop_digest(b"<x@y>", b"secret")
    assert len(digest) == 32
    assert set(digest) <= set("0123456789abcdef")
