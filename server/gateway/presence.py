"""Presence: which devices are online and when each was last heard, written in batches.

A heartbeat does not write to the store. The gateway notes state changes (authenticated,
closed, a DEVICE_STATUS with a roster version) and the time each device was last heard,
and `take` hands all of it over at once for one store write every `presence_flush_s`. With
100,000 terminals on 30-s heartbeats that is ~3,300 heartbeats a second folded into one
write every 5 s. Rules:

- `seen` is called on every pass of every authenticated connection, so it only stores a
  time; the `Presence` rows are built in `take`.
- A device that went offline stays offline in the batch even if a later `seen` of the
  closing pass arrives; firmware and roster version not flushed yet are kept when a newer
  change of the same device comes in.
- A failed write gives its rows back (`give_back`) without overwriting newer ones.

Pure: no I/O, time is an argument.
"""

from __future__ import annotations

import dataclasses

from lmg.storage import Presence


class PresenceBook:
    def __init__(self) -> None:
        self._changes: dict[str, Presence] = {}  # state changes since the last take
        self._heard: dict[str, int] = {}  # serial -> ms last heard since the last take

    def __bool__(self) -> bool:
        return bool(self._changes or self._heard)

    def seen(self, serial: str, now_ms: int) -> None:
        """An authenticated terminal was heard at `now_ms`."""
        self._heard[serial] = now_ms

    def note(self, serial: str, now_ms: int, online: bool, firmware: str | None = None,
             roster_version: int | None = None, address: str | None = None) -> None:
        """A state change for the next take, keeping the firmware, roster version and
        address not taken yet."""
        pending = self._changes.get(serial)
        if pending is not None:
            firmware = pending.firmware if firmware is None else firmware
            roster_version = pending.roster_version if roster_version is None else roster_version
            address = pending.address if address is None else address
        self._changes[serial] = Presence(serial, now_ms, online, firmware, roster_version, address)

    def take(self) -> list[Presence]:
        """What the next write holds: the state changes, with the times terminals were heard
        since merged in; a device gone offline stays offline. Empties the book."""
        heard, self._heard = self._heard, {}
        pending, self._changes = self._changes, {}
        for serial, heard_ms in heard.items():
            change = pending.get(serial)
            if change is None:
                pending[serial] = Presence(serial, heard_ms, True)
            elif change.online and heard_ms > change.last_seen_ms:
                pending[serial] = dataclasses.replace(change, last_seen_ms=heard_ms)
        return list(pending.values())

    def give_back(self, batch: list[Presence]) -> None:
        """A write of `batch` failed: keep its rows for the next take unless newer ones came."""
        for item in batch:
            self._changes.setdefault(item.serial, item)
