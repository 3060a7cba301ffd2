"""Lockout of repeated authentication failures: per (serial, address) and per address.

Pure (time is an argument). Two scopes, each with its own threshold (docs/protocol.md
section 5.2 gives the numbers to terminals, server/settings.py the reasons):

- **pair** (serial, source address): `pair_failures` failures in a row lock that serial *at
  that address* for `base_ms`, doubling with every further lockout of the pair up to
  `max_ms`; a success clears the pair. This is the lock a terminal with a mistyped secret
  meets. It never touches another serial at the same address (most sites put all their
  terminals behind one 4G/NAT address), nor the same serial at another address (so a
  stranger who read a serial off a device cannot keep that device locked out).
- **address**: `address_failures` failures from one address within `address_window_ms`
  (a fixed window, restarted by the first failure after it ends) lock the address, with
  the same doubling. This is the lock of a scan: many serials or secrets from one place.
  A success does not reset it (one valid credential must not buy an attacker unlimited
  guesses), and it spares the pairs that authenticated from that address before
  (`trusted`): a site's working terminals keep connecting even while a scanner behind the
  same NAT is locked out. A trusted pair still meets its own pair lock and still has to
  sign the challenge, so the exemption costs no security: it only spares a denial of
  service.

Failures while locked are not counted (`failed` is not called for LOCKED_OUT): a terminal
retrying during its lockout neither lengthens its own lock nor pushes its address towards
the address lock, so one terminal retrying for a minute adds at most a few failures to
its address.

Memory is bounded: at most `max_keys` records and `max_keys` trusted pairs are kept, the
quietest forgotten first (~150 B a record: 100,000 keys are ~15 MB); serials are truncated
to `SERIAL_KEY_CHARS` characters in keys, so a 255-byte serial costs no more than a real one.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import NamedTuple

# Provisioned serials are at most 64 characters (storage: check_device_fields); longer ones are junk
# and share a key once truncated.
SERIAL_KEY_CHARS = 64


@dataclass
class _Record:
    failures: int = 0
    lockouts: int = 0
    locked_until_ms: int = 0
    window_start_ms: int = 0  # address scope: when the current counting window began


class Lockout(NamedTuple):
    """A lock one failure started: for the audit log and the metric."""

    scope: str  # "pair" or "address"
    address: str
    serial: str  # the serial of the failure that locked (also for an address lock)
    until_ms: int
    failures: int  # failures that led to it


class AuthGuard:
    def __init__(
        self,
        pair_failures: int = 5,  # a terminal with a mistyped secret fails every reconnect; 5 is a handful of tries
        address_failures: int = 50,  # failures from one address per window: a scan, never one site's mistakes
        address_window_ms: int = 600_000,  # ten minutes
        base_ms: int = 60_000,  # first lockout: one minute
        max_ms: int = 3_600_000,  # never more than an hour, so a fixed device recovers the same shift
        max_keys: int = 100_000,
    ):
        if min(pair_failures, address_failures, address_window_ms, base_ms, max_keys) <= 0 or max_ms < base_ms:
            raise ValueError("lockout thresholds, windows and max_keys must be positive and max_ms >= base_ms")
        self.pair_failures = pair_failures
        self.address_failures = address_failures
        self.address_window_ms = address_window_ms
        self.base_ms = base_ms
        self.max_ms = max_ms
        self.max_keys = max_keys
        self._records: OrderedDict[tuple[str, ...], _Record] = OrderedDict()
        self._trusted: OrderedDict[tuple[str, str], None] = OrderedDict()  # (address, serial) that succeeded

    @staticmethod
    def _pair(address: str, serial: str) -> tuple[str, ...]:
        return ("pair", address, serial[:SERIAL_KEY_CHARS])

    @staticmethod
    def _address(address: str) -> tuple[str, ...]:
        return ("address", address)

    def locked_until(self, address: str, serial: str, now_ms: int) -> int:
        """0 when `serial` may try to authenticate from `address` at `now_ms`, else when
        the lock that stops it ends (ms)."""
        until = 0
        pair = self._records.get(self._pair(address, serial))
        if pair is not None and pair.locked_until_ms > now_ms:
            until = pair.locked_until_ms
        record = self._records.get(self._address(address))
        if (record is not None and record.locked_until_ms > now_ms
                and (address, serial[:SERIAL_KEY_CHARS]) not in self._trusted):
            until = max(until, record.locked_until_ms)
        return until

    def is_locked(self, address: str, serial: str, now_ms: int) -> bool:
        return self.locked_until(address, serial, now_ms) > 0

    def failed(self, address: str, serial: str, now_ms: int) -> list[Lockout]:
        """Record a failure (not a LOCKED_OUT refusal); return the locks it started."""
        started: list[Lockout] = []
        pair = self._touch(self._pair(address, serial))
        pair.failures += 1
        if pair.failures >= self.pair_failures:
            failures = pair.failures
            started.append(Lockout("pair", address, serial, self._lock(pair, now_ms), failures))
        record = self._touch(self._address(address))
        if now_ms - record.window_start_ms >= self.address_window_ms or record.failures == 0:
            record.window_start_ms, record.failures = now_ms, 0
        record.failures += 1
        if record.failures >= self.address_failures:
            failures = record.failures
            started.append(Lockout("address", address, serial, self._lock(record, now_ms), failures))
        while len(self._records) > self.max_keys:
            self._records.popitem(last=False)
        return started

    def succeeded(self, address: str, serial: str) -> None:
        """`serial` authenticated from `address`: its pair is cleared and trusted there."""
        key = self._pair(address, serial)
        record = self._records.get(key)
        if record is not None and record.lockouts == 0:
            del self._records[key]
        elif record is not None:
            record.failures = 0  # keeps its lockout count: the next lock of a flapping pair is longer
        trusted = (address, serial[:SERIAL_KEY_CHARS])
        self._trusted[trusted] = None
        self._trusted.move_to_end(trusted)
        while len(self._trusted) > self.max_keys:
            self._trusted.popitem(last=False)

    def _touch(self, key: tuple[str, ...]) -> _Record:
        record = self._records.pop(key, None) or _Record()
        self._records[key] = record  # most recently active last
        return record

    def _lock(self, record: _Record, now_ms: int) -> int:
        window = min(self.base_ms * (2 ** min(record.lockouts, 32)), self.max_ms)
        record.lockouts += 1
        record.failures = 0
        record.locked_until_ms = now_ms + window
        return record.locked_until_ms
