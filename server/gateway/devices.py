"""Device lookups for HELLO, gathered: the serials asked for while a read is under way
go to the store together, in one `Store.get_devices` call.

Why: every HELLO needs its device's secret and enabled flag. One `get_device` per HELLO
is one hop to a store reader thread (SQLite) or one pooled query (PostgreSQL) per
terminal; in a reconnect storm those hops were the largest part of the gateway's work
per authentication after decoding. Gathering them turns thousands of reads into tens.

Rules:
- No cache. Every answer comes from a read that started after the HELLO asking for it
  arrived, so a device disabled or given a new secret (`lmg device ...`, possibly from
  another process) is refused or checked against the new secret from the next HELLO on,
  exactly as with one `get_device` per HELLO.
- At most `max_in_flight` reads at once; serials that arrive meanwhile wait for a free
  slot and then go together. With no load a lookup starts on the next loop pass, so a
  lone HELLO waits one pass longer than before, not a batching delay.
- A read covers at most `max_batch` serials; more wait for the next slot.
- A store failure fails every lookup of that read with the same `StoreError`; the next
  read is tried afresh. A caller that stops waiting (its connection closed) is skipped.
"""

from __future__ import annotations

import asyncio
from typing import NamedTuple

from lmg.storage import Device, Store

# Reads in flight at once: SQLite has 2 reader threads by default (storage
# `sqlite_readers`) and one read of a few hundred primary-key lookups takes ~1 ms, so two
# keep both threads busy while the next batch gathers; more would only make batches smaller.
MAX_IN_FLIGHT = 2
# Serials per read: 1,000 primary-key lookups are ~2-3 ms of SQLite or PostgreSQL work and a
# ~20 KiB array parameter, short enough that a read never holds up a HELLO for long.
MAX_BATCH = 1000


class _Failed(NamedTuple):
    """What the callers of a failed read get: they raise `error` themselves."""

    error: Exception


class DeviceLookup:
    """`await lookup.get(serial)` -> the provisioned `Device` or None; raises StoreError.

    One per gateway process, used from its event loop only.
    """

    def __init__(self, store: Store, *, max_in_flight: int = MAX_IN_FLIGHT, max_batch: int = MAX_BATCH):
        if max_in_flight < 1 or max_batch < 1:
            raise ValueError("max_in_flight and max_batch must be at least 1")
        self.store = store
        self.max_in_flight = max_in_flight
        self.max_batch = max_batch
        self._waiting: dict[str, list[asyncio.Future]] = {}  # serial -> its callers, in arrival order
        self._in_flight = 0
        self._start_scheduled = False
        self._reads: set[asyncio.Task] = set()  # strong references until each read is done
        self.reads = 0  # store calls made (for tests and counters)

    async def get(self, serial: str) -> Device | None:
        future = asyncio.get_running_loop().create_future()
        waiting = self._waiting.get(serial)
        if waiting is None:
            self._waiting[serial] = [future]
        else:
            waiting.append(future)
        self._schedule()
        found = await future
        if type(found) is _Failed:
            # one exception object for a whole read: drop the frames earlier callers added
            raise found.error.with_traceback(None)
        return found

    def _schedule(self) -> None:
        if not self._start_scheduled and self._in_flight < self.max_in_flight and self._waiting:
            self._start_scheduled = True
            # on the next pass, so the HELLOs of this pass's reads join one read
            asyncio.get_running_loop().call_soon(self._start)

    def _start(self) -> None:
        self._start_scheduled = False
        loop = asyncio.get_running_loop()
        while self._waiting and self._in_flight < self.max_in_flight:
            waiting = self._waiting
            if len(waiting) <= self.max_batch:
                batch, self._waiting = waiting, {}
            else:
                serials = list(waiting)[: self.max_batch]
                batch = {serial: waiting.pop(serial) for serial in serials}
            self._in_flight += 1
            task = loop.create_task(self._read(batch))
            self._reads.add(task)
            task.add_done_callback(self._reads.discard)

    async def _read(self, batch: dict[str, list[asyncio.Future]]) -> None:
        self.reads += 1
        try:
            try:
                devices = await self.store.get_devices(list(batch))
            except Exception as exc:  # noqa: BLE001 - StoreError or a bug: each caller gets it
                failed = _Failed(exc)
                for futures in batch.values():
                    for future in futures:
                        if not future.done():
                            future.set_result(failed)
                return
            for serial, futures in batch.items():
                device = devices.get(serial)
                for future in futures:
                    if not future.done():
                        future.set_result(device)
        finally:
            self._in_flight -= 1
            self._schedule()
