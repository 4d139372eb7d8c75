"""Fixtures for the integration tests against a private Dovecot (see servers/dovecot.py).

When Dovecot cannot be started the tests that need it are skipped, except on
CI (``CI=true``), where that is a failure: CI must run them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import NoReturn

import pytest

from servers.dovecot import CLASSIC_MECHANISMS, STANDARD_USERS, DovecotError, DovecotServer


def _serve(server: DovecotServer) -> Iterator[DovecotServer]:
    failure = None
    try:
        server.start()
    except DovecotError as exc:
        failure = str(exc)
    if failure is not None:
        _unavailable(failure)  # outside the except: its report needs no chained traceback
    try:
        yield server
    finally:
        server.stop()


def _unavailable(reason: str) -> NoReturn:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"Dovecot is required on CI but could not be started: {reason}", pytrace=False)
    pytest.skip(f"Dovecot could not be started: {reason}")


@pytest.fixture(scope="session")
def dovecot() -> Iterator[DovecotServer]:
    """The private Dovecot serving ``servers.dovecot.STANDARD_USERS``, for the whole session."""
    yield from _serve(DovecotServer(STANDARD_USERS))


@pytest.fixture(scope="session")
def dovecot_classic() -> Iterator[DovecotServer]:
    """A second private Dovecot offering only APOP, USER/PASS and SASL PLAIN and LOGIN.

    Dovecot as many servers are set up: no SCRAM, no CRAM-MD5, so that APOP
    is the strongest method on offer. The same users as ``dovecot``.
    """
    yield from _serve(DovecotServer(STANDARD_USERS, mechanisms=CLASSIC_MECHANISMS))


@pytest.fixture(scope="session")
def dovecot_wrong_name() -> Iterator[DovecotServer]:
    """A second private Dovecot, whose certificate names only ``mail.example.invalid``."""
    yield from _serve(DovecotServer(cert_names=("mail.example.invalid",)))
