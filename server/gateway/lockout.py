"""Lockout of repeated authentication failures, per source address and per serial.

Pure (time is an argument). After `threshold` failures in a row for one key, the key is
locked for `base_ms`, doubling with every further lockout up to `max_ms`; a success
clears the key's failures. Memory is bounded: at most `max_keys` keys are tracked and
the ones that have gone quiet longest are forgotten first, so a scan from many
addresses cannot grow this without limit.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass


@dataclass
class _Record:
    failures: int = 0
    lockouts: int = 0
    locked_until_ms: int = 0
    last_ms: int = 0


class AuthGuard:
    def __init__(
        self,
        threshold: int = 5,  # a terminal with a mistyped secret fails every reconnect; 5 is a handful of tries
        base_ms: int = 60_000,  # first lockout: one minute
        max_ms: int = 3_600_000,  # never more than an hour, so a fixed device recovers the same shift
        max_keys: int = 100_000,  # ~100 B each: ~10 MB at most
    ):
        self.threshold = threshold
        self.base_ms = base_ms
        self.max_ms = max_ms
        self.max_keys = max_keys
        self._records: OrderedDict[str, _Record] = OrderedDict()

    def _keys(self, address: str, serial: str) -> list[str]:
        keys = [f"addr:{address}"]
        if serial:
            keys.append(f"serial:{serial}")
        return keys

    def locked_until(self, address: str, serial: str, now_ms: int) -> int:
        """0 when neither the address nor the serial is locked at `now_ms`, else when it ends."""
        until = 0
        for key in self._keys(address, serial):
            record = self._records.get(key)
            if record and record.locked_until_ms > now_ms:
                until = max(until, record.locked_until_ms)
        return until

    def is_locked(self, address: str, serial: str, now_ms: int) -> bool:
        return self.locked_until(address, serial, now_ms) > 0

    def failed(self, address: str, serial: str, now_ms: int) -> list[tuple[str, int]]:
        """Record a failure; return the keys this failure locked, with the lock's end (ms)."""
        locked = []
        for key in self._keys(address, serial):
            record = self._records.pop(key, None) or _Record()
            self._records[key] = record  # most recently active last
            record.failures += 1
            record.last_ms = now_ms
            if record.failures >= self.threshold:
                window = min(self.base_ms * (2**record.lockouts), self.max_ms)
                record.lockouts += 1
                record.failures = 0
                record.locked_until_ms = now_ms + window
                locked.append((key, record.locked_until_ms))
        while len(self._records) > self.max_keys:
            self._records.popitem(last=False)
        return locked

    def succeeded(self, address: str, serial: str) -> None:
        for key in self._keys(address, serial):
            record = self._records.get(key)
            if record is not None and record.locked_until_ms == 0:
                del self._records[key]
            elif record is not None:
                record.failures = 0
