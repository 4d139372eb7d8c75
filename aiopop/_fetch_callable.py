"""One run of :func:`aiopop.fetch_into` to a delivery callable: retrieve, hand over, record.

The other destination of the one delivery engine (the Maildir's run is
:mod:`aiopop._fetch_run`). Messages are retrieved with pipelined RETRs
(:meth:`~aiopop.POP3.retr_each`, held to the memory budget as they arrive)
and handed over one at a time, in mailbox order, as a
:class:`~aiopop.NewMessage`. A message counts as delivered only when the
callable returns: then, in one transaction, its unique-id and size are
recorded (with the time of first delivery), and only then may a policy
delete it. The next message is handed over only after that, so a crash
loses nothing and delivers at most the message in hand twice.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING

from ._delivery_state import DeliveryState
from ._errors import DeliveryError
from ._fetch_run import Delivery, Undelivered, _each, _Work
from ._message import Deliver, NewMessage

if TYPE_CHECKING:
    from ._accounts import Account
    from ._client import POP3
    from ._stream import MessageStream

__all__: list[str] = []


class _Hand(_Work):
    """One run handing messages to ``deliver``."""

    def __init__(
        self,
        client: POP3,
        deliver: Deliver,
        state: DeliveryState,
        account: str,
        source: Account | None,
        max_size: int | None,
    ) -> None:
        super().__init__(client, state, account, max_size)
        self.deliver = deliver
        self.source = source

    async def retrieve(self, numbers: list[int], window: int, memory: int) -> None:
        """Retrieve ``numbers`` (pipelined) and hand each over once it is complete.

        A message that turns out larger than ``max_size`` as it arrives is
        read to its end and dropped (:attr:`~aiopop.FetchResult.oversized`);
        one the callable refuses with :class:`~aiopop.DeliveryError` is
        left on the server (:attr:`~aiopop.FetchResult.undelivered`). Any
        other exception from the callable stops the run: it propagates, and
        the messages handed over before it stay recorded.
        """
        most = sys.maxsize if self.max_size is None else self.max_size

        def pipelined(
            rest: list[int], most: int | None
        ) -> AsyncGenerator[tuple[int, MessageStream], None]:
            return self.client.retr_each(rest, window=most or window, memory=memory)

        items = _each(numbers, pipelined, self.refuse)
        async with contextlib.aclosing(items):
            async for number, stream in items:
                data = await stream.collect(most)
                if data is None:
                    self.too_big(number, stream.received)  # the rest is read and dropped
                    continue
                await self._hand(number, data)

    async def _hand(self, number: int, data: bytes) -> None:
        uid = self.uids.get(number)
        message = NewMessage(uid or "", number, data, self.source)
        try:
            await self.deliver(message)
        except DeliveryError as exc:
            if exc.uid is None:
                exc.uid = uid
            self.result.undelivered.append(Undelivered(number, uid, exc))
            return
        if uid is not None:
            await self.state.commit(self.account, handed=[(uid, self.sizes.get(number))])
        self.result.delivered.append(Delivery(number, uid, None, len(data)))
