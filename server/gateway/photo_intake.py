"""Photo work one gateway process does at once: a bound, so photos never starve the rest.

Every photo chunk and query costs the store two quick reads on the shared connection pool
(the announcing punch, the stored size) and then a share of one photo transaction. When
10,000 terminals came back from an outage, about 3,000 uploads each had a chunk waiting for
that pool: presence flushes, signal reads and the forwarder timed out behind them (issue
17). Rules:

- At most `concurrency` photo frames are in the store at once per process; the others wait
  their turn, first come first served.
- A frame is refused at once (the link answers PHOTO_UPLOADS_BUSY, and the terminal tries
  later after its back-off, docs/protocol.md 6.2) when every turn is taken and either
  `waiting` frames already wait (memory: a waiting chunk holds up to 64 KiB) or the oldest
  of them has waited `max_wait_s` (an answer later than the terminal's 15-s timeout makes
  it send the chunk again: the same bound in time as the punches' `max_queue_age_ms`).
  A refused chunk costs the terminal its bytes again, so the count is generous and the
  time is what bounds the wait.
- A turn is released whatever happens inside it (errors, cancellation).
- `clock`: seconds, monotonic (the loop's time by default; tests pass their own).
"""

from __future__ import annotations

import asyncio
import itertools
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager


class PhotoIntake:
    def __init__(self, concurrency: int, waiting: int, max_wait_s: float,
                 clock: Callable[[], float] | None = None) -> None:
        if concurrency < 1 or waiting < 0 or max_wait_s <= 0:
            raise ValueError(f"photo_store_concurrency must be at least 1 (got {concurrency}), photo_chunks_waiting "
                             f"0 or more (got {waiting}) and photo_chunk_max_wait_s above 0 (got {max_wait_s})")
        self.concurrency = concurrency
        self.waiting_max = waiting
        self.max_wait_s = max_wait_s
        self._clock = clock
        self._turns = asyncio.Semaphore(concurrency)
        self._arrived: OrderedDict[int, float] = OrderedDict()  # waiting frames' arrival times, oldest first
        self._tokens = itertools.count()
        self.in_store = 0  # frames holding a turn

    def _now(self) -> float:
        return self._clock() if self._clock is not None else asyncio.get_running_loop().time()

    @property
    def waiting(self) -> int:
        return len(self._arrived)

    def oldest_wait_s(self) -> float:
        """Seconds the longest-waiting frame has waited (0 when none waits)."""
        if not self._arrived:
            return 0.0
        return self._now() - next(iter(self._arrived.values()))

    def full(self) -> bool:
        """True when a new frame would be refused: every turn is taken and the queue is
        full in count or in time."""
        if self.in_store < self.concurrency:
            return False
        return len(self._arrived) >= self.waiting_max or self.oldest_wait_s() >= self.max_wait_s

    @asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        """Wait for a turn (the caller checked `full()` first), hold it for the body."""
        token = next(self._tokens)
        self._arrived[token] = self._now()
        try:
            await self._turns.acquire()
        finally:
            del self._arrived[token]
        self.in_store += 1
        try:
            yield
        finally:
            self.in_store -= 1
            self._turns.release()
