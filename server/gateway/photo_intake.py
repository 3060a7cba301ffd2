"""Photo work one gateway process does at once: a bound, so photos never starve the rest.

Every photo chunk and query costs the store two to three round trips on the shared
connection pool (the announcing punch, the stored size, then bytes and record in one
transaction). When 10,000 terminals came back from an outage, about 3,000 uploads each had
a chunk waiting for that pool: presence flushes, signal reads and the forwarder timed out
behind them (issue 17). Rules:

- At most `concurrency` photo frames are in the store at once per process; the others wait
  their turn, first come first served.
- At most `waiting` more may wait; past that a chunk is refused at once (the link answers
  PHOTO_UPLOADS_BUSY, and the terminal tries later after its back-off, docs/protocol.md
  6.5): a refusal costs one small frame, a chunk that waits holds up to 64 KiB of memory.
- A turn is released whatever happens inside it (errors, cancellation).

Memory: at most `waiting` chunks, 512 x 32 KiB = 16 MiB by default.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class PhotoIntake:
    def __init__(self, concurrency: int, waiting: int) -> None:
        if concurrency < 1 or waiting < 0:
            raise ValueError(f"photo_store_concurrency must be at least 1 (got {concurrency}) and "
                             f"photo_chunks_waiting 0 or more (got {waiting})")
        self.concurrency = concurrency
        self.waiting_max = waiting
        self._turns = asyncio.Semaphore(concurrency)
        self._waiting = 0  # frames waiting for a turn
        self.in_store = 0  # frames holding a turn

    @property
    def waiting(self) -> int:
        return self._waiting

    def full(self) -> bool:
        """True when a new frame would be refused: every turn is taken and the queue is full."""
        return self.in_store >= self.concurrency and self._waiting >= self.waiting_max

    @asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        """Wait for a turn (the caller checked `full()` first), hold it for the body."""
        self._waiting += 1
        try:
            await self._turns.acquire()
        finally:
            self._waiting -= 1
        self.in_store += 1
        try:
            yield
        finally:
            self.in_store -= 1
            self._turns.release()
