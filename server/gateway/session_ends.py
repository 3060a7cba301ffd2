"""Ending a device's open session at once when an operator disables it, rotates its secret
or closes the session, whichever process or node the operator acted through.

The store records each such change as a session end, in the same transaction as the
change itself (storage: `session_ends`). Every gateway process follows that record:
`SessionEnds.poll` reads the ends after the last one it saw, every `session_end_poll_s`
(one indexed query; on SQLite, where `lmg device disable` is another process, this is
the only signal), and on PostgreSQL a LISTEN on the store's channel wakes it at once, so
other nodes close within milliseconds. A process that made the change itself (the admin
API) also ends its local session directly, without waiting. Ending a session that is not
here, or is gone already, does nothing; seeing the same end twice is harmless. Only a
session that connected before the end was recorded is ended: a device that reconnected
since (with its new secret, or after an operator closed its session) keeps its new
session. (Nodes' clocks are assumed within a second of each other, as NTP keeps them.)

Reasons map to the GOODBYE the device gets (docs/protocol.md, session end).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from lmg.protocol import ResultCode
from lmg.storage import SessionEndReason, Store, StoreError

log = logging.getLogger("lmg.gateway")

GOODBYE_REASONS = {
    SessionEndReason.DISABLED: ResultCode.DEVICE_DISABLED,
    SessionEndReason.SECRET_ROTATED: ResultCode.CREDENTIALS_CHANGED,
    SessionEndReason.CLOSED_BY_OPERATOR: ResultCode.CLOSED_BY_OPERATOR,
}


class SessionEnds:
    """Follows the store's session ends for one gateway process.

    `end(serial, reason, at_ms) -> bool` is the gateway's: it ends the local session of
    `serial` if there is one that connected before `at_ms` (True); it is called for every
    end read.
    """

    def __init__(self, store: Store, end: Callable[[str, SessionEndReason, int], bool], poll_s: float):
        self.store = store
        self.end = end
        self.poll_s = poll_s
        self.last_id = 0
        self._wake = asyncio.Event()
        self._stop_listening: Callable[[], object] | None = None

    async def start(self) -> None:
        """Remember where the record stands now (older ends are not ours to act on) and
        listen for notifications where the store has them."""
        self.last_id = await self.store.last_session_end_id()
        try:
            self._stop_listening = await self.store.listen_session_ends(lambda _id: self._wake.set())
        except StoreError as exc:
            log.warning("cannot listen for session ends (%s); polling every %.1f s instead", exc, self.poll_s)

    async def run(self) -> None:
        """Poll (and wake on notifications) until cancelled."""
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), self.poll_s)
            except asyncio.TimeoutError:
                pass
            self._wake.clear()
            await self.poll()

    async def poll(self) -> int:
        """Act on every end recorded since the last poll; returns how many sessions ended here."""
        ended = 0
        while True:
            try:
                batch = await self.store.session_ends_after(self.last_id)
            except StoreError as exc:
                log.warning("reading session ends failed: %s", exc)
                return ended
            for item in batch:
                self.last_id = max(self.last_id, item.id)
                ended += self.end(item.device_serial, item.reason, item.created_at_ms)
            if len(batch) < 1000:
                return ended

    async def close(self) -> None:
        if self._stop_listening is not None:
            stop, self._stop_listening = self._stop_listening, None
            result = stop()
            if asyncio.iscoroutine(result):
                await result
