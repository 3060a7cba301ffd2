"""The kit and the simulated firmware over a fake wire, in virtual time: no sockets, no sleep.

`run_virtual(examiner, core)` joins the kit's pure core (server/conformance/examiner.py)
and the simulated terminal's (simulators/firmware.py `FirmwareCore`) the way their asyncio
glue does, but with a virtual clock that jumps to the next deadline of either side (or
the next punch). Frames are delivered at once, in order; a close on either side is seen by
the other at once. So a whole examination with the document's own waits (15 s resends,
60 s lockouts, 30 s heartbeats: about ten minutes of terminal time) runs in about a second,
and the same seed gives the same run.
"""

from __future__ import annotations

import random
from collections import deque
from typing import Any

from lmg.server.conformance.examiner import Close, Done, Examiner, Say, Send
from lmg.server.conformance.wire import FrameSplitter
from lmg.simulators.firmware import Close as DeviceClose
from lmg.simulators.firmware import FirmwareCore, Phase, make_photo
from lmg.simulators.firmware import Send as DeviceSend

WALL0 = 1_763_942_400_000  # 2025-11-24 00:00 UTC, the protocol document's example day


class VirtualRun:
    """One kit, one device, one connection at a time, and a clock in ms from the kit's start."""

    def __init__(self, examiner: Examiner, core: FirmwareCore, *, punch_every_ms: int, photo_share: float,
                 photo_bytes: int, seed: int):
        self.examiner, self.core = examiner, core
        self.punch_every_ms, self.photo_share, self.photo_bytes = punch_every_ms, photo_share, photo_bytes
        self.rng = random.Random(seed)
        self.now = 0
        self.conn = 0  # the open connection's id, 0 when none
        self.splitter: FrameSplitter | None = None
        self.queue: deque[tuple[str, Any]] = deque()
        self.next_punch = punch_every_ms
        self.said: list[str] = []
        self.punches = 0

    def wall(self) -> int:
        return WALL0 + self.now

    def run(self, limit_ms: int) -> dict[str, Any]:
        while not self.examiner.done:
            self._deliver()
            if self.examiner.done:
                break
            if self.now >= limit_ms:
                self._kit(self.examiner.stop(self.now))
                break
            self.now = max(self.now, min(t for t in (self._device_due(), self._kit_due(), self.next_punch, limit_ms)
                                         if t is not None))
            if self.now >= self.next_punch:
                self.next_punch += self.punch_every_ms
                photo = None
                if self.rng.random() < self.photo_share:
                    photo = make_photo(self.rng, self.photo_bytes)
                self.punches += 1
                self._device(self.core.punch(self.wall(), self.punches % 20, photo))
            due = self._kit_due()
            if due is not None and due <= self.now:
                self._kit(self.examiner.tick(self.now))
            if self.core.phase is Phase.OFFLINE:
                if self.core.connect_due(self.wall()):
                    self._open()
            else:
                due = self._device_due()
                if due is not None and due <= self.now:
                    self._device(self.core.poll(self.wall()))
        return self.examiner.report()

    def _device_due(self) -> int | None:
        deadline = self.core.next_deadline_ms()
        return None if deadline is None else max(self.now, deadline - WALL0)

    def _kit_due(self) -> int | None:
        return self.examiner.next_deadline()

    def _open(self) -> None:
        self.conn += 1
        self.splitter = FrameSplitter(self.conn)
        conn = self.conn
        self._kit(self.examiner.opened(conn, self.now))
        if self.conn == conn and self.core.phase is Phase.OFFLINE:
            self._device(self.core.connected(self.wall()))

    def _drop(self, by: str) -> None:
        """The connection is gone; the other side learns it at once."""
        if not self.conn or self.splitter is None:
            return
        conn, self.splitter = self.conn, None
        self.queue.clear()
        if by == "kit":
            self.core.connection_lost(self.wall())
        else:
            self._kit(self.examiner.closed(conn, self.now))
            self.core.connection_lost(self.wall())

    def _kit(self, actions: list[Any]) -> None:
        for action in actions:
            if isinstance(action, Send) and action.conn == self.conn and self.splitter is not None:
                self.queue.append(("to_device", action.data))
            elif isinstance(action, Close) and action.conn == self.conn:
                self.queue.append(("kit_closes", None))
            elif isinstance(action, Say):
                self.said.append(action.text)
            elif isinstance(action, Done):
                pass

    def _device(self, actions: list[Any]) -> None:
        for action in actions:
            if isinstance(action, DeviceSend) and self.splitter is not None:
                self.queue.append(("to_kit", action.data))
            elif isinstance(action, DeviceClose):
                self.queue.append(("device_closes", None))

    def _deliver(self) -> None:
        while self.queue:
            kind, data = self.queue.popleft()
            if self.splitter is None:
                continue
            if kind == "to_kit":
                for frame in self.splitter.feed(data, self.now):
                    self._kit(self.examiner.received(frame, self.now))
            elif kind == "to_device":
                self._device(self.core.receive_bytes(data, self.wall()))
            elif kind == "kit_closes":
                self._drop("kit")
            else:
                self._drop("device")
