"""Group commit: many callers' punches, one transaction, one thread hop.

Callers `await submit(records)`; a single flusher task gathers what arrives within a
short window (`group_commit_max_delay_ms` after the oldest waiting record, or at once
when `group_commit_max_records` are waiting) and hands the whole batch to the backend's
`commit` coroutine, which must write it in ONE transaction and return one outcome per
record. Each caller is woken only after that commit returned, with its own slice of the
outcomes, or with the exception that failed the batch (`StoreUnavailable`).

Rules:
- A caller's records are never split across batches; a caller larger than the batch
  limit is committed alone.
- Records of a caller that was cancelled before its batch started are not written.
- The queue is bounded (`max_queued_records`); a caller waits at most `enqueue_wait_ms`
  for room, then gets StoreUnavailable so the server can nack instead of piling up.
- The flusher survives every failure of `commit`; one bad batch never wedges the next.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from storage.errors import StoreClosed, StoreError, StoreUnavailable

Record = TypeVar("Record")
Result = TypeVar("Result")

CommitBatch = Callable[[list], Awaitable[list]]


class _Entry:
    __slots__ = ("records", "future", "arrived")

    def __init__(self, records: Sequence, future: asyncio.Future, arrived: float) -> None:
        self.records = records
        self.future = future
        self.arrived = arrived


class GroupCommit(Generic[Record, Result]):
    """Batches `submit` calls from many tasks into few `commit(records)` calls.

    `commit` receives a list of records and returns a list of results of the same
    length, in the same order; it runs in the flusher task, at most `in_flight` at once.
    """

    def __init__(
        self,
        commit: Callable[[list[Record]], Awaitable[list[Result]]],
        *,
        max_records: int,
        max_delay_ms: float,
        max_queued_records: int,
        enqueue_wait_ms: int,
        in_flight: int = 1,
        name: str = "group-commit",
    ) -> None:
        self._commit = commit
        self._max_records = max_records
        self._max_delay_s = max_delay_ms / 1000.0
        self._max_queued = max_queued_records
        self._enqueue_wait_s = enqueue_wait_ms / 1000.0
        self._slots = asyncio.Semaphore(in_flight)
        self._entries: deque[_Entry] = deque()
        self._queued = 0  # records in self._entries
        self._wakeup = asyncio.Event()  # set when entries arrive for an idle flusher
        self._full: asyncio.Future | None = None  # resolved when a full batch is waiting
        self._room = asyncio.Event()
        self._room.set()
        self._closing = False
        self._batches: set[asyncio.Task] = set()
        self._flusher = asyncio.get_running_loop().create_task(self._run(), name=name)

    @property
    def queued_records(self) -> int:
        return self._queued

    async def submit(self, records: Sequence[Record]) -> list[Result]:
        """Queue records for the next batch; return their results after the commit.

        Raises what the batch's commit raised (StoreUnavailable), StoreUnavailable if
        no room frees up within enqueue_wait_ms, StoreClosed after close().
        """
        if self._closing:
            raise StoreClosed("the store is closed; reopen it before storing punches")
        if not records:
            return []
        count = len(records)
        if self._queued + count > self._max_queued and self._queued:
            await self._wait_for_room(count)
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._entries.append(_Entry(records, future, loop.time()))
        self._queued += count
        if self._queued >= self._max_queued:
            self._room.clear()
        if not self._wakeup.is_set():
            self._wakeup.set()
        full = self._full
        if full is not None and self._queued >= self._max_records and not full.done():
            full.set_result(None)
        return await future

    async def _wait_for_room(self, count: int) -> None:
        deadline = asyncio.get_running_loop().time() + self._enqueue_wait_s
        while self._queued + count > self._max_queued and self._queued:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                raise StoreUnavailable(
                    f"store overloaded: {self._queued} records already wait for the disk "
                    f"(limit max_queued_records={self._max_queued}); nack and let the device resend"
                )
            self._room.clear()
            try:
                await asyncio.wait_for(self._room.wait(), remaining)
            except TimeoutError:
                pass
            if self._closing:
                raise StoreClosed("the store is closed; reopen it before storing punches")

    async def close(self) -> None:
        """Stop accepting, commit everything queued, then stop the flusher."""
        if self._closing:
            return
        self._closing = True
        self._wakeup.set()
        full = self._full
        if full is not None and not full.done():
            full.set_result(None)
        await self._flusher

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._entries:
                if self._closing:
                    break
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            # Window: the oldest record waits at most max_delay for company.
            remaining = self._entries[0].arrived + self._max_delay_s - loop.time()
            if remaining > 0 and self._queued < self._max_records and not self._closing:
                self._full = loop.create_future()
                timer = loop.call_later(remaining, _resolve, self._full)
                await self._full
                timer.cancel()
                self._full = None
            await self._slots.acquire()
            # Taken as late as possible: while the previous batch committed, more arrived.
            batch = self._take_batch()
            if not batch:
                self._slots.release()
                continue
            task = loop.create_task(self._commit_batch(batch))
            self._batches.add(task)
            task.add_done_callback(self._batches.discard)
        if self._batches:
            await asyncio.gather(*self._batches, return_exceptions=True)

    def _take_batch(self) -> list[_Entry]:
        batch: list[_Entry] = []
        taken = 0
        entries = self._entries
        while entries:
            entry = entries[0]
            size = len(entry.records)
            if taken and taken + size > self._max_records:
                break
            entries.popleft()
            self._queued -= size
            if entry.future.cancelled():
                continue
            batch.append(entry)
            taken += size
        if self._queued < self._max_queued:
            self._room.set()
        return batch

    async def _commit_batch(self, batch: list[_Entry]) -> None:
        try:
            if len(batch) == 1:
                records = list(batch[0].records)
            else:
                records = [record for entry in batch for record in entry.records]
            try:
                results = await self._commit(records)
            except StoreError as exc:
                error: BaseException = exc
            except asyncio.CancelledError:
                error = StoreClosed("the store was closed while this batch was being written")
                raise
            except Exception as exc:  # a bug in the backend: every caller must hear of it
                error = exc
            else:
                if len(results) != len(records):
                    error = RuntimeError(
                        f"group commit: backend returned {len(results)} results for {len(records)} records"
                    )
                else:
                    start = 0
                    for entry in batch:
                        end = start + len(entry.records)
                        if not entry.future.done():
                            entry.future.set_result(results[start:end])
                        start = end
                    return
            for entry in batch:
                if not entry.future.done():
                    entry.future.set_exception(error)
        finally:
            for entry in batch:  # only reached with undone futures when cancelled
                if not entry.future.done():
                    entry.future.set_exception(
                        StoreClosed("the store was closed while this batch was being written")
                    )
            self._slots.release()


def _resolve(future: asyncio.Future) -> None:
    if not future.done():
        future.set_result(None)
