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

    def add(self, item, deadline_ms: int) -> None:
        """File `item` to be handed back by `due` once `deadline_ms` has passed."""
        bucket = -(-deadline_ms // self.resolution_ms)  # ceiling: never early
        self._buckets.setdefault(bucket, []).append(item)
        if self._next_bucket is None or bucket < self._next_bucket:
            self._next_bucket = bucket

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
