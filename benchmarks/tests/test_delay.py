"""The delay proxy (benchmarks/harness/delay.py): its delay, order, throughput and end of stream.

Not part of ``tests/`` (aiopop's own suite): run with
``python -m pytest benchmarks/tests``. Loopback only; a few seconds.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from benchmarks.harness.delay import DelayProxy, DelayRoute, self_check
from benchmarks.harness.endpoint import Endpoint


async def _echo_server() -> tuple[asyncio.Server, Endpoint]:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    return server, Endpoint("127.0.0.1", int(server.sockets[0].getsockname()[1]))


@pytest.mark.parametrize("rtt_ms", [0.0, 20.0, 100.0])
def test_self_check_passes(rtt_ms: float) -> None:
    """The proxy process's echo RTT is the one asked (±10 %), and 10 MB go through quickly."""
    check = self_check(rtt_ms)
    assert check.rtt_ok, check.line()
    assert check.throughput_ok, check.line()


async def test_order_and_contents_kept_and_eof_forwarded() -> None:
    """In-process proxy, 40 ms RTT: 5 MB of numbered chunks come back intact, in order, then EOF."""
    server, target = await _echo_server()
    proxy = DelayProxy(0.020, [target], limit=256 * 1024)  # a small limit: backpressure is used
    (through,) = await proxy.start()
    try:
        reader, writer = await asyncio.open_connection(through.host, through.port)
        payload = b"".join(b"%08d" % i for i in range(640_000))  # 5.12 MB

        async def send() -> None:
            for start in range(0, len(payload), 8192):
                writer.write(payload[start : start + 8192])
                await writer.drain()
            writer.write_eof()

        began = time.perf_counter()
        sender = asyncio.create_task(send())
        received = await asyncio.wait_for(reader.read(-1), 30)  # to EOF: the close came through
        took = time.perf_counter() - began
        await sender
        writer.close()
        assert received == payload
        assert took >= 0.040 * 0.9  # at least the round trip
    finally:
        proxy.close()
        server.close()


async def test_delay_is_per_chunk_not_cumulative() -> None:
    """Ten chunks 10 ms apart arrive 10 ms apart, each one RTT after it left: no serial sleeps."""
    server, target = await _echo_server()
    proxy = DelayProxy(0.025, [target])
    (through,) = await proxy.start()
    try:
        reader, writer = await asyncio.open_connection(through.host, through.port)
        writer.write(b"w")
        await reader.readexactly(1)  # the upstream connection is up
        sent: list[float] = []
        for _ in range(10):
            sent.append(time.perf_counter())
            writer.write(b"x")
            await asyncio.sleep(0.010)
        arrived = []
        for _ in range(10):
            await reader.readexactly(1)
            arrived.append(time.perf_counter())
        writer.close()
        delays = [a - s for a, s in zip(arrived, sent, strict=True)]
        # The later ones were read after the loop, so they can only be late by the reading order;
        # the last one, read last, bounds the drift.
        assert min(delays) >= 0.050 * 0.9
        assert delays[-1] <= 0.050 + 0.015
    finally:
        proxy.close()
        server.close()


def test_route_at_zero_is_direct() -> None:
    target = Endpoint("127.0.0.1", 9)
    with DelayRoute(0) as route:
        assert route.endpoint(target) == target
        assert route.processes == []
