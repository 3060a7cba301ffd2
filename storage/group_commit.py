"""Group commit: many callers' punches, one transaction, one trip to the writer.

Callers `await submit(records)`. What arrives within a short window
(`group_commit_max_delay_ms` after the oldest waiting record, or at once when
`group_commit_max_records` are waiting) becomes one batch, handed to the backend's
`commit` coroutine, which must write it in ONE transaction (one request to the SQLite writer process)
and return one outcome per record. Each caller is woken only after that commit returned, with its own slice of the
outcomes, or with the exception that failed the batch (`StoreUnavailable`).

Rules:
- A caller's records are never split across batches; a caller larger than the batch
  limit is committed alone.
- Records of a caller that was cancelled before its batch started are not written.
- The queue is bounded (`max_queued_records`); a caller waits at most `enqueue_wait_ms`
  for room, then gets StoreUnavailable so the server can nack instead of piling up.
- The queue is bounded in time too (`max_queue_age_ms`): while its oldest record has waited
  longer than that, new records are refused at once with StoreUnavailable. A record count
  is seconds of backlog on a fast disk and minutes on a slow one; a terminal resends what
  is not answered within 15 s (docs/protocol.md §6.2), so a record answered later than that
  was written for nothing and its resend queues behind it: the backlog feeds itself (seen
  in the outage benchmark on a loaded PostgreSQL, issue 17). A refusal costs the terminal
  one back-off; a late answer costs the store the record twice.
- Every failure of `commit` reaches exactly the callers of that batch; the next batch
  starts as if nothing happened, so one bad batch never wedges the store.
- Observability costs the hot path nothing it did not ask for: `observer` (set by the
  store's owner, None by default) is called once per committed batch with its size and
  commit time; `queued_records` and `batches_in_flight` are plain attribute reads.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from lmg.storage.errors import StoreClosed, StoreUnavailable

Record = TypeVar("Record")
Result = TypeVar("Result")

CommitBatch = Callable[[list], Awaitable[list]]
# Called once per committed batch: (records in the batch, seconds its commit took).
BatchObserver = Callable[[int, float], None]


# A waiting caller: (records, future, loop time it arrived). A tuple, not a class: one
# is made per store_punches call, up to ~100 000 a second.
_RECORDS, _FUTURE, _ARRIVED = 0, 1, 2


class GroupCommit(Generic[Record, Result]):
    """Batches `submit` calls from many tasks into few `commit(records)` calls.

    `commit` receives a list of records and returns a list of results of the same
    length, in the same order; at most `in_flight` commits run at once. `clock`: monotonic
    seconds that waits are measured by (the loop's time by default); a clock that does not
    advance keeps a window open, so a test that injects one sets `max_delay_ms` 0.

    There is no flusher task: a batch starts from `submit` (batch full), from a timer
    (window over) or from the end of the previous commit. The next batch is started
    BEFORE the finished batch's callers are woken, so the writer already works
    on it while the event loop runs those callers (measured: without this the writer
    sat idle half the time, 3 ms of every 6.5 ms batch at 1000 producers).
    """

    def __init__(
        self,
        commit: Callable[[list[Record]], Awaitable[list[Result]]],
        *,
        max_records: int,
        max_delay_ms: float,
        max_queued_records: int,
        enqueue_wait_ms: int,
        max_queue_age_ms: int | None = None,
        in_flight: int = 1,
        name: str = "group-commit",
        clock: Callable[[], float] | None = None,
    ) -> None:
        self._commit = commit
        self._max_records = max_records
        self._max_delay_s = max_delay_ms / 1000.0
        self._max_queued = max_queued_records
        self._enqueue_wait_s = enqueue_wait_ms / 1000.0
        self._max_age_s = None if max_queue_age_ms is None else max_queue_age_ms / 1000.0
        self._max_in_flight = in_flight
        self._name = name
        self._loop = asyncio.get_running_loop()
        # what "waited" is measured with (seconds); tests pass their own, timers use the loop's
        self._clock = clock or self._loop.time
        self._entries: deque[tuple] = deque()
        self._queued = 0  # records in self._entries
        self._in_flight = 0
        self._timer: asyncio.TimerHandle | None = None
        self._room = asyncio.Event()  # set while the queue has room
        self._room.set()
        self._drained: asyncio.Future | None = None  # close() waits on it
        self._closing = False
        self._tasks: set[asyncio.Task] = set()
        # Set by the store's owner (the gateway's metrics); must be cheap and must not raise.
        self.observer: BatchObserver | None = None

    @property
    def queued_records(self) -> int:
        """Records waiting for a batch (not yet handed to `commit`)."""
        return self._queued

    @property
    def batches_in_flight(self) -> int:
        """Batches handed to `commit` and not yet returned."""
        return self._in_flight

    async def submit(self, records: Sequence[Record]) -> list[Result]:
        """Queue records for the next batch; return their results after the commit.

        Raises what the batch's commit raised (StoreUnavailable), StoreUnavailable if
        no room frees up within enqueue_wait_ms, StoreClosed after close().
        """
        return await self.enqueue(records)

    def enqueue(self, records: Sequence[Record]) -> asyncio.Future:
        """`submit` without a coroutine: a future of the records' results, with the same
        outcomes and errors (set on the future, never raised here).

        For callers that would otherwise create a task per call (the gateway stores tens of
        thousands of small groups a second). Cancelling the future before its batch started
        keeps its records out of the batch, as cancelling `submit` does.
        """
        loop = self._loop
        count = len(records)
        now = self._clock()
        entries = self._entries
        if entries and self._max_age_s is not None and now - entries[0][_ARRIVED] > self._max_age_s:
            refused = loop.create_future()
            refused.set_exception(StoreUnavailable(
                f"store behind: the oldest queued record has waited {now - entries[0][_ARRIVED]:.1f} s for the "
                f"disk (limit max_queue_age_ms={self._max_age_s * 1000:.0f}); nack and let the device resend later"))
            return refused
        if self._closing or not count or (self._queued + count > self._max_queued and self._queued):
            return asyncio.ensure_future(self._submit_slowly(records))
        future = loop.create_future()
        entries.append((records, future, now))
        queued = self._queued = self._queued + count
        if queued >= self._max_queued:
            self._room.clear()
        if self._in_flight < self._max_in_flight:
            if queued >= self._max_records or self._max_delay_s <= 0:
                self._start_batches()
            elif self._timer is None:
                self._timer = loop.call_later(self._entries[0][_ARRIVED] + self._max_delay_s - now,
                                              self._on_timer)
        return future

    async def _submit_slowly(self, records: Sequence[Record]) -> list[Result]:
        """The rare cases of `enqueue`: closed, nothing to store, or waiting for room."""
        if self._closing:
            raise StoreClosed("the store is closed; reopen it before storing punches")
        if not records:
            return []
        await self._wait_for_room(len(records))
        return await self.enqueue(records)

    async def _wait_for_room(self, count: int) -> None:
        deadline = self._loop.time() + self._enqueue_wait_s
        while self._queued + count > self._max_queued and self._queued:
            remaining = deadline - self._loop.time()
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
        """Stop accepting, commit everything queued, wait for it. Idempotent."""
        self._closing = True
        if self._drained is None:
            self._drained = self._loop.create_future()
        self._start_batches()
        await asyncio.shield(self._drained)

    def _on_timer(self) -> None:
        self._timer = None
        self._start_batches()

    def _start_batches(self) -> None:
        """Start as many batches as slots allow and windows have closed (synchronous)."""
        loop = self._loop
        while self._entries and self._in_flight < self._max_in_flight:
            if not self._closing and self._queued < self._max_records:
                wait = self._entries[0][_ARRIVED] + self._max_delay_s - self._clock()
                if wait > 0:
                    if self._timer is None:
                        self._timer = loop.call_later(wait, self._on_timer)
                    return
            batch = self._take_batch()
            if not batch:
                continue
            self._in_flight += 1
            task = loop.create_task(self._commit_batch(batch), name=self._name)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        if self._timer is not None and (not self._entries or self._in_flight >= self._max_in_flight):
            self._timer.cancel()  # re-armed when a slot frees up
            self._timer = None
        if self._drained is not None and not self._entries and not self._in_flight:
            if not self._drained.done():
                self._drained.set_result(None)

    def _take_batch(self) -> list[tuple]:
        batch: list[tuple] = []
        taken = 0
        entries = self._entries
        while entries:
            entry = entries[0]
            size = len(entry[_RECORDS])
            if taken and taken + size > self._max_records:
                break
            entries.popleft()
            self._queued -= size
            if entry[_FUTURE].cancelled():
                continue
            batch.append(entry)
            taken += size
        if self._queued < self._max_queued:
            self._room.set()
        return batch

    async def _commit_batch(self, batch: list[tuple]) -> None:
        error: BaseException | None = None
        results: list = []
        try:
            if len(batch) == 1:
                records = list(batch[0][_RECORDS])
            else:
                records = [record for entry in batch for record in entry[_RECORDS]]
            observer = self.observer
            started = self._loop.time() if observer is not None else 0.0
            try:
                results = await self._commit(records)
            except asyncio.CancelledError:
                error = StoreClosed("the store was closed while this batch was being written")
                raise
            except Exception as exc:  # StoreUnavailable, or a backend bug every caller must hear of
                error = exc
            else:
                if len(results) != len(records):
                    error = RuntimeError(
                        f"group commit: backend returned {len(results)} results for {len(records)} records"
                    )
                elif observer is not None:
                    try:
                        observer(len(records), self._loop.time() - started)
                    except Exception:  # noqa: BLE001 - a broken metric must not fail a commit
                        pass
        finally:
            self._in_flight -= 1
            self._start_batches()  # first: the writer gets the next batch before callers run
            start = 0
            for records, future, _ in batch:
                end = start + len(records)
                if not future.done():
                    if error is None:
                        future.set_result(results[start:end])
                    else:
                        future.set_exception(error)
                start = end
