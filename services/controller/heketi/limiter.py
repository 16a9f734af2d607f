"""Client-side throttling: how many mutating operations one backend runs at once.

Heketi runs at most a fixed number of mutating operations (8 by default) and answers 429
beyond that. Each operation holds one of the limiter's slots from its POST until its result
is read, so the driver queues on its own side instead of collecting 429s.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque


class OpLimiter:
    """Admits at most `limit` mutating operations; FIFO, with a front door for retries.

    The limit starts at the configured maximum. A 429 means Heketi holds fewer of our
    operations than we thought it could: the limit drops to the number Heketi is running
    for us (at least 1), and grows back by about one per `limit` requests Heketi accepts,
    up to the maximum. So a client configured above Heketi's own limit settles near it and
    sees a 429 only now and then, when it probes for more room.
    """

    def __init__(self, limit: int) -> None:
        self.max_limit = limit
        self._limit = float(limit)
        self.in_use = 0
        self.accepted = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def limit(self) -> int:
        return max(1, int(self._limit))

    async def acquire(self, *, front: bool = False) -> None:
        if not self._waiters and self.in_use < self.limit:
            self.in_use += 1
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if front:
            self._waiters.appendleft(fut)
        else:
            self._waiters.append(fut)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release()  # granted just as we were cancelled: hand the slot on
            else:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(fut)
            raise

    def release(self) -> None:
        self.in_use -= 1
        self._wake()

    def throttled(self) -> None:
        self._limit = float(max(1, min(self.limit, self.accepted)))

    def succeeded(self) -> None:
        if self._limit < self.max_limit:
            self._limit = min(float(self.max_limit), self._limit + 1.0 / self._limit)
            self._wake()

    def _wake(self) -> None:
        while self._waiters and self.in_use < self.limit:
            fut = self._waiters.popleft()
            if fut.done():
                continue
            self.in_use += 1
            fut.set_result(None)
