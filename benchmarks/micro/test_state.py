"""aiopop._state: the checks every command goes through, and the pipelining decision."""

from __future__ import annotations

from aiopop._state import Pipelining, Session, State

from .conftest import Benchmark

VERBS = ["STAT", "LIST", "UIDL", "RETR", "TOP", "DELE", "NOOP", "RSET"] * 250


def _transaction() -> Session:
    session = Session()
    session.greeted(True)
    session.replied("USER", True)
    session.replied("PASS", True)
    return session


def test_check_and_reply(benchmark: Benchmark) -> None:
    """2,000 TRANSACTION commands: may each be sent behind the last, then its +OK."""
    session = _transaction()

    def run() -> int:
        refused = 0
        last = None
        for verb in VERBS:
            refused += session.check(verb, last) is not None
            session.replied(verb, True)
            last = verb
        return refused

    assert benchmark(run) == 0
    assert session.state is State.TRANSACTION


def test_pipelining_decision(benchmark: Benchmark) -> None:
    """2,000 times: may this RETR go out with that many in flight (CAPA said PIPELINING)."""
    pipelining = Pipelining(None, 100)
    pipelining.learned(State.TRANSACTION, True)

    def run() -> int:
        return sum(
            pipelining.may_send(State.TRANSACTION, n % 150, "RETR", "RETR") for n in range(2000)
        )

    assert benchmark(run) == sum(n % 150 < 100 for n in range(2000))
