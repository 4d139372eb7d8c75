"""aiopop._protocol.POP3Protocol: bytes in, events out, as the throughput suite's parser runs.

The message shapes are the throughput suite's (benchmarks/harness/messages.py):
80-octet CRLF lines, one in ``dot_every`` starting with a dot.
"""

from __future__ import annotations

import pytest

from aiopop._protocol import Command, Data, End, ReplyShape
from benchmarks.harness.messages import REALISTIC_DOT_EVERY, build_message, stuffed_reply
from benchmarks.suites.throughput.parsing import logged_in

from .conftest import Benchmark

CHUNK = 64 * 1024
MIB = 1024 * 1024


def _retrieve(chunks: list[bytes], count: int) -> int:
    """Send ``count`` RETRs, feed the replies, count the octets of Data and the End events."""
    protocol = logged_in()
    for number in range(1, count + 1):
        protocol.send(Command("RETR", (str(number),), ReplyShape.DATA))
    octets = ends = 0
    for chunk in chunks:
        protocol.receive_data(chunk)
        while (event := protocol.next_event()) is not None:
            if type(event) is Data:
                octets += len(event.data)
            elif type(event) is End:
                ends += 1
    assert ends == count
    return octets


def _chunks(data: bytes) -> list[bytes]:
    return [data[i : i + CHUNK] for i in range(0, len(data), CHUNK)]


@pytest.mark.parametrize("dot_every", [0, REALISTIC_DOT_EVERY, 10, 1], ids=lambda n: f"dots-1in{n}")
def test_retr_5mb(benchmark: Benchmark, dot_every: int) -> None:
    """One 5 MB message, dot-stuffed, in 64 KiB chunks (the throughput suite's parser rows)."""
    message = build_message(1, 5 * MIB, dot_every)
    chunks = _chunks(stuffed_reply(message))
    assert benchmark(_retrieve, chunks, 1) == len(message)


def test_retr_pipelined_2000x8kb(benchmark: Benchmark) -> None:
    """2,000 pipelined RETRs of 8 KB, their replies in 64 KiB chunks."""
    messages = [build_message(n, 8 * 1024) for n in range(1, 2001)]
    chunks = _chunks(b"".join(stuffed_reply(message) for message in messages))
    assert benchmark(_retrieve, chunks, 2000) == sum(map(len, messages))


def test_encode_2000_retr(benchmark: Benchmark) -> None:
    """Queue and encode 2,000 RETR commands (what retr_many sends)."""
    commands = [Command("RETR", (str(n),), ReplyShape.DATA) for n in range(1, 2001)]

    def send_all() -> int:
        protocol = logged_in()
        return sum(len(protocol.send(command)) for command in commands)

    assert benchmark(send_all) > 2000 * len(b"RETR 1\r\n")
