"""Feed bytes to a POP3Protocol whole, byte by byte and split at random points."""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Iterator, Sequence

from aiopop._protocol import Command, Data, Event, POP3Protocol

Outcome = tuple[list[Event], type[Exception] | None]


def splits(data: bytes, seed: int = 0) -> Iterator[list[bytes]]:
    """The three ways every parser test feeds its input: whole, byte by byte, random pieces."""
    yield [data]
    yield [data[i : i + 1] for i in range(len(data))]
    rng = random.Random(seed)
    for _ in range(5):
        cuts = sorted(rng.sample(range(1, len(data)), min(len(data) - 1, rng.randint(1, 8))))
        pieces, last = [], 0
        for cut in [*cuts, len(data)]:
            pieces.append(data[last:cut])
            last = cut
        yield pieces


def every_split(data: bytes, cuts: int = 1) -> Iterator[list[bytes]]:
    """Every way to cut ``data`` into ``cuts + 1`` non-empty pieces: for short inputs only."""
    for points in itertools.combinations(range(1, len(data)), cuts):
        bounds = [0, *points, len(data)]
        yield [data[a:b] for a, b in itertools.pairwise(bounds)]


def merge_data(events: Sequence[Event]) -> list[Event]:
    """Join neighbouring Data events: chunking is allowed to differ, content is not."""
    out: list[Event] = []
    for event in events:
        if isinstance(event, Data) and out and isinstance(out[-1], Data):
            out[-1] = Data(event.command, out[-1].data + event.data)
        else:
            out.append(event)
    return out


def run(
    pieces: Sequence[bytes],
    commands: Sequence[Command] = (),
    *,
    greeting: bytes | None = b"+OK ready\r\n",
    eof: bool = False,
    make: Callable[[], POP3Protocol] = POP3Protocol,
) -> Outcome:
    """Read ``greeting``, send ``commands`` (as a pipeline), then feed ``pieces``.

    With ``greeting=None`` the pieces themselves start with the greeting.
    Returns the events after the greeting (all of them when ``greeting`` is
    None) and the class of the error that ended the run, if any.
    """
    protocol = make()
    if greeting is not None:
        if protocol.greeting is None:
            protocol.receive_data(greeting)
            assert protocol.next_event() is not None
        for command in commands:
            protocol.send(command)
    events: list[Event] = []
    try:
        for piece in pieces:
            protocol.receive_data(piece)
            while (event := protocol.next_event()) is not None:
                events.append(event)
        if eof:
            protocol.receive_eof()
            while (event := protocol.next_event()) is not None:
                events.append(event)
    except Exception as exc:
        return merge_data(events), type(exc)
    return merge_data(events), None


def run_all_ways(
    data: bytes,
    commands: Sequence[Command] = (),
    *,
    greeting: bytes | None = b"+OK ready\r\n",
    eof: bool = False,
    make: Callable[[], POP3Protocol] = POP3Protocol,
) -> Outcome:
    """Run ``data`` every way of :func:`splits` and assert that all give the same outcome."""
    outcomes = [
        run(pieces, commands, greeting=greeting, eof=eof, make=make) for pieces in splits(data)
    ]
    first = outcomes[0]
    for other in outcomes[1:]:
        assert comparable(other) == comparable(first)
    return first


def comparable(outcome: Outcome) -> tuple[list[tuple[str, object]], object]:
    """What must not depend on the split: every event, and the error.

    A run that ends in an error may have handed out a different amount of a
    message before it, so there only the non-Data events count.
    """
    events, error = outcome
    if error is not None:
        events = [e for e in events if not isinstance(e, Data)]
    return [(type(e).__name__, _payload(e)) for e in events], error


def _payload(event: Event) -> object:
    for name in ("data", "status", "timestamp"):
        if hasattr(event, name):
            return getattr(event, name)
    return None
