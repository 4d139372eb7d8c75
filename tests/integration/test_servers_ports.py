"""The test servers' port helpers: free ports, and starting again after a port clash."""

from __future__ import annotations

import socket

import pytest

from servers.ports import PORT_ATTEMPTS, free_ports, start_on_free_ports


class StartFailed(Exception):
    pass


def test_free_ports_are_distinct_and_bindable() -> None:
    ports = free_ports("127.0.0.1", "127.0.0.1", "127.0.0.1")
    assert len(set(ports)) == 3
    for port in ports:
        with socket.create_server(("127.0.0.1", port)):
            pass


@pytest.mark.parametrize(
    ("logs", "attempts", "raises"),
    [
        ([], 1, False),  # started at once
        (["bind: Address already in use"], 2, False),  # a clash: started again
        (["bind: Address already in use"] * PORT_ATTEMPTS, PORT_ATTEMPTS, True),  # gave up
        (["fatal: bad configuration"], 1, True),  # not a clash: no second try
    ],
)
def test_start_on_free_ports_tries_again_only_after_a_port_clash(
    logs: list[str], attempts: int, raises: bool
) -> None:
    calls: list[str] = []
    terminated: list[int] = []

    def attempt() -> None:
        calls.append("attempt")
        if len(calls) <= len(logs):
            raise StartFailed

    def log_tail() -> str:
        return logs[len(calls) - 1]

    def terminate() -> None:
        terminated.append(len(calls))

    if raises:
        with pytest.raises(StartFailed):
            start_on_free_ports(
                attempt, failure=StartFailed, log_tail=log_tail, terminate=terminate
            )
    else:
        start_on_free_ports(attempt, failure=StartFailed, log_tail=log_tail, terminate=terminate)
    assert len(calls) == attempts
    assert terminated == list(range(1, min(len(logs), attempts) + 1))
