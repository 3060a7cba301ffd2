"""Following the store's signals: what another process, node or operator changed that a running
gateway must act on at once, wherever the device's session lives.

The store writes a signal in the same transaction as the change it announces (storage:
`signals`), one kind per reason:

| kind | subject | detail | the gateway |
|---|---|---|---|
| `session_end` | serial | a SessionEndReason | ends the device's session with the GOODBYE for the reason (`GOODBYE_REASONS`), if it connected before the signal |
| `command` | serial | the command id | has the device's session (if here) read its pending commands and send them |
| `roster` | project code | the new roster version | asks every terminal of the project connected here for its roster version and syncs it |
| `takeover` | (empty) | JSON {serial: [session token, authenticated at ms]} from another process | ends with GOODBYE TAKEOVER each listed device's session here that connected before that time and is not that token (the announcing process's own) |

Every gateway process follows all of them: `SignalFollower.poll` reads the signals after the
last one it handled, every `signal_poll_s` (one indexed read; on SQLite, where `lmg device
disable` or `lmg command send` is another process, this is the only signal), and on
PostgreSQL a LISTEN on the store's channel wakes it at once, so other nodes act within
milliseconds. A listener that is lost is started again at the next poll (the poll covers the
gap). What was signalled before the gateway started is not its to act on (`start` begins at
the last id): a session that starts afterwards reads the device's commands and roster
version itself. Handling a signal for a device or project with no session here does
nothing; seeing one twice is harmless. Only a session that connected before a session end
was recorded is ended: a device that reconnected since (with its new secret, or after an
operator closed its session) keeps its new session. (Nodes' clocks are assumed within a
second of each other, as NTP keeps them.)
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import orjson

from lmg.protocol import ResultCode
from lmg.storage import SessionEndReason, Signal, SignalKind, Store, StoreError

log = logging.getLogger("lmg.gateway")

GOODBYE_REASONS = {
    SessionEndReason.DISABLED: ResultCode.DEVICE_DISABLED,
    SessionEndReason.SECRET_ROTATED: ResultCode.CREDENTIALS_CHANGED,
    SessionEndReason.CLOSED_BY_OPERATOR: ResultCode.CLOSED_BY_OPERATOR,
}
PAGE = 1000  # signals read per call; a full page is followed by the next at once


@dataclass(frozen=True)
class SignalHandlers:
    """What the gateway does with each kind; each returns quickly (no awaiting)."""

    session_end: Callable[[str, SessionEndReason, int], object]  # (serial, reason, signalled at ms)
    command: Callable[[str], object]  # (serial)
    roster: Callable[[str, int], object]  # (project code, its new roster version)
    takeover: Callable[[dict[str, list], int], object] | None = None  # ({serial: [token, auth ms]}, signalled at)


class SignalFollower:
    """Follows the store's signals for one gateway process."""

    def __init__(self, store: Store, handlers: SignalHandlers, poll_s: float):
        self.store = store
        self.handlers = handlers
        self.poll_s = poll_s
        self.last_id = 0
        self.handled = 0
        self._wake = asyncio.Event()
        self._stop_listening: Callable[[], Awaitable[None]] | None = None
        self._can_listen = False  # the store has notifications (PostgreSQL); SQLite only polls
        self._listen_failures = 0

    async def start(self) -> None:
        """Remember where the signals stand now (older ones are not ours to act on) and
        listen for notifications where the store has them."""
        self.last_id = await self.store.last_signal_id()
        await self._listen()

    async def _listen(self) -> None:
        try:
            self._stop_listening = await self.store.listen_signals(lambda _id: self._wake.set(), on_lost=self._lost)
        except StoreError as exc:
            self._can_listen = True  # try again after the next poll
            self._listen_failures += 1
            level = logging.WARNING if self._listen_failures == 1 else logging.DEBUG  # once per outage
            log.log(level, "cannot listen for signals (%s); polling every %.1f s meanwhile", exc, self.poll_s)
            return
        self._can_listen = self._stop_listening is not None
        self._listen_failures = 0

    def _lost(self) -> None:
        """The store's listener connection is gone: poll now, listen again after the poll."""
        self._stop_listening = None
        self._wake.set()

    async def run(self) -> None:
        """Poll (and wake on notifications) until cancelled."""
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), self.poll_s)
            except asyncio.TimeoutError:
                pass
            self._wake.clear()
            await self.poll()
            if self._can_listen and self._stop_listening is None:
                await self._listen()

    async def poll(self) -> int:
        """Act on every signal recorded since the last poll; returns how many were read."""
        read = 0
        while True:
            try:
                batch = await self.store.signals_after(self.last_id, PAGE)
            except StoreError as exc:
                log.warning("reading signals failed: %s", exc)
                return read
            for signal in batch:
                self.last_id = max(self.last_id, signal.id)
                self._dispatch(signal)
            read += len(batch)
            if len(batch) < PAGE:
                return read

    def _dispatch(self, signal: Signal) -> None:
        handlers = self.handlers
        try:
            if signal.kind is SignalKind.SESSION_END:
                handlers.session_end(signal.subject, SessionEndReason(signal.detail), signal.created_at_ms)
            elif signal.kind is SignalKind.COMMAND:
                handlers.command(signal.subject)
            elif signal.kind is SignalKind.ROSTER:
                handlers.roster(signal.subject, int(signal.detail))
            elif signal.kind is SignalKind.TAKEOVER and handlers.takeover is not None:
                handlers.takeover(orjson.loads(signal.detail), signal.created_at_ms)
            self.handled += 1
        except Exception:  # noqa: BLE001 - one bad signal must not stop the rest
            log.exception("handling signal %d (%s %s) failed", signal.id, signal.kind, signal.subject)

    async def close(self) -> None:
        if self._stop_listening is not None:
            stop, self._stop_listening = self._stop_listening, None
            await stop()
