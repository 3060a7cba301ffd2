"""Coarse deadline buckets: one timer for all sessions instead of one per connection.

With 100,000 terminals a `loop.call_later` per session costs a TimerHandle (~200 B) and a
heap operation at every heartbeat. Here a session is filed under the bucket (default one
second) its deadline falls in, and a heartbeat only updates the session's own deadline:
when the bucket comes due, the glue asks the session whether it really expired and files
it again under its new deadline if not (the idea of mosquitto's keepalive buckets). Each
session is thus refiled at most once per heartbeat grace period, not once per heartbeat.
Pure: time is an argument.
"""

from __future__ import annotations


class DeadlineWheel:
    def __init__(self, resolution_ms: int = 1000):
        self.resolution_ms = resolution_ms
        self._buckets: dict[int, list] = {}
        self._next_bucket: int | None = None  # lowest bucket not yet handed out

    def __len__(self) -> int:
        return sum(len(b) for b in self._buckets.values())

    def add(self, item, deadline_ms: int) -> int:
        """File `item` to be handed back by `due` once `deadline_ms` has passed; return the
        bucket it went into (for `discard`)."""
        bucket = -(-deadline_ms // self.resolution_ms)  # ceiling: never early
        self._buckets.setdefault(bucket, []).append(item)
        if self._next_bucket is None or bucket < self._next_bucket:
            self._next_bucket = bucket
        return bucket

    def discard(self, item, bucket: int) -> None:
        """Take `item` out of `bucket` if it is still there (a closed session must not be
        held until its deadline: 1.5-2.3 KiB each). A bucket holds about connections / 90
        items (heartbeat grace 90 s, 1 s buckets), so the identity scan is short."""
        items = self._buckets.get(bucket)
        if items is None:
            return
        for i, held in enumerate(items):
            if held is item:
                del items[i]
                break
        if not items:
            del self._buckets[bucket]
            if bucket == self._next_bucket:
                self._next_bucket = min(self._buckets) if self._buckets else None

    def current_bucket(self, now_ms: int) -> int:
        """The last bucket `due(now_ms)` empties."""
        return now_ms // self.resolution_ms

    def due(self, now_ms: int) -> list:
        """Every item whose bucket ended at or before `now_ms` (each handed out once)."""
        if self._next_bucket is None:
            return []
        current = now_ms // self.resolution_ms
        out: list = []
        if current - self._next_bucket > len(self._buckets):
            keys = sorted(k for k in self._buckets if k <= current)  # long pause: fewer dict probes
        else:
            keys = [k for k in range(self._next_bucket, current + 1) if k in self._buckets]
        for key in keys:
            out.extend(self._buckets.pop(key))
        self._next_bucket = min(self._buckets) if self._buckets else None
        return out
