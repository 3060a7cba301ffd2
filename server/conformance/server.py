"""The kit's asyncio glue: listeners, one timer, and the examiner's actions carried out.

Thin by design: every decision is the examiner's (examiner.py). This module accepts TCP
connections (or WebSocket ones on path /terminal), cuts bytes into frames
(wire.FrameSplitter; over WebSocket one binary message is one frame), hands them to the
examiner with the kit's monotonic time in ms, writes what it returns, and arms one timer at
`next_deadline()`. It stops when the examiner is done or at the time limit, closes every
connection, and returns the report.

Bounds: one connection at a time is what a device under test opens (two during a takeover);
each holds at most one maximum frame (64 KiB) of unparsed input, and a WebSocket message
above the maximum frame size is refused by the library before it is buffered.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

from lmg.protocol import MAX_FRAME_SIZE
from lmg.server.conformance.examiner import Action, Close, Done, Examiner, Say, Send
from lmg.server.conformance.wire import FrameSplitter, whole_message

#: Bytes read from a TCP connection at once: one maximum frame.
READ_BYTES = MAX_FRAME_SIZE
WS_PATH = "/terminal"


class _Link(abc.ABC):
    """One connection's way out: `send` bytes in order, `close` (or abort)."""

    def __init__(self, conn: int):
        self.conn = conn
        self.closed = False

    @abc.abstractmethod
    def send(self, data: bytes) -> None: ...

    @abc.abstractmethod
    def close(self, abort: bool) -> None: ...


class _TcpLink(_Link):
    def __init__(self, conn: int, writer: asyncio.StreamWriter):
        super().__init__(conn)
        self.writer = writer

    def send(self, data: bytes) -> None:
        if not self.closed and not self.writer.is_closing():
            self.writer.write(data)

    def close(self, abort: bool) -> None:
        self.closed = True
        if abort:
            self.writer.transport.abort()
        else:
            self.writer.close()


class _WsLink(_Link):
    """Messages go out through one writer task, so they leave in the order sent."""

    def __init__(self, conn: int, ws: Any):
        super().__init__(conn)
        self.ws = ws
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.task = asyncio.get_running_loop().create_task(self._write())

    async def _write(self) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            while (data := await self.queue.get()) is not None:
                await self.ws.send(data)
            await self.ws.close()
        except ConnectionClosed:
            pass

    def send(self, data: bytes) -> None:
        if not self.closed:
            self.queue.put_nowait(data)

    def close(self, abort: bool) -> None:
        self.closed = True
        if abort:
            self.ws.transport.abort()
        self.queue.put_nowait(None)


class KitServer:
    """Runs one examination: `start()` binds and returns (host, port); `wait()` returns the
    report once the examiner is done or `time_limit_s` passed."""

    def __init__(self, examiner: Examiner, host: str, port: int, *, transport: str = "tcp",
                 time_limit_s: float = 3600.0, say: Callable[[str], None] = print):
        if transport not in ("tcp", "ws"):
            raise ValueError(f"transport must be tcp or ws, not {transport!r}")
        if time_limit_s <= 0:
            raise ValueError(f"the time limit must be above 0 s, got {time_limit_s}")
        self.examiner = examiner
        self.host, self.port, self.transport = host, port, transport
        self.time_limit_s = time_limit_s
        self.say = say
        self.links: dict[int, _Link] = {}
        self._next_conn = 0
        self._wake = asyncio.Event()
        self._done = asyncio.Event()
        self._server: Any = None
        self._timer: asyncio.Task | None = None
        self._tasks: set[asyncio.Task] = set()
        self._started = 0.0

    def now_ms(self) -> int:
        return int((time.monotonic() - self._started) * 1000)

    async def start(self) -> tuple[str, int]:
        self._started = time.monotonic()
        if self.transport == "tcp":
            self._server = await asyncio.start_server(self._tcp, self.host, self.port, limit=READ_BYTES)
            sockets = self._server.sockets
        else:
            from websockets.asyncio.server import serve

            self._server = await serve(self._ws, self.host, self.port, max_size=MAX_FRAME_SIZE, compression=None,
                                       ping_interval=None, process_request=_only_terminal_path)
            sockets = list(self._server.sockets)
        bound = sockets[0].getsockname()
        self._timer = asyncio.get_running_loop().create_task(self._clock())
        return bound[0], bound[1]

    async def wait(self) -> dict[str, Any]:
        await self._done.wait()
        if self._timer is not None:
            self._timer.cancel()
            await asyncio.gather(self._timer, return_exceptions=True)
        self._server.close()
        for link in list(self.links.values()):
            if not link.closed:
                link.close(abort=False)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), 2.0)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        return self.examiner.report()

    # -- the examiner's actions -------------------------------------------------------------------
    def _apply(self, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, Send):
                link = self.links.get(action.conn)
                if link is not None:
                    link.send(action.data)
            elif isinstance(action, Close):
                link = self.links.get(action.conn)
                if link is not None and not link.closed:
                    link.close(action.abort)
            elif isinstance(action, Say):
                self.say(f"[{self.now_ms() / 1000:7.1f} s] {action.text}")
            elif isinstance(action, Done):
                self._done.set()
        self._wake.set()

    async def _clock(self) -> None:
        limit_ms = int(self.time_limit_s * 1000)
        while not self._done.is_set():
            now = self.now_ms()
            if now >= limit_ms:
                self.say(f"time limit of {self.time_limit_s:g} s reached")
                self._apply(self.examiner.stop(now))
                self._done.set()
                return
            deadline = self.examiner.next_deadline()
            due = limit_ms if deadline is None else min(deadline, limit_ms)
            if due <= now:
                self._apply(self.examiner.tick(now))
                if self.examiner.done:
                    self._done.set()
                continue
            self._wake.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), (due - now) / 1000)

    def _open(self, link_of: Callable[[int], _Link]) -> _Link | None:
        if self._done.is_set():
            return None
        self._next_conn += 1
        link = link_of(self._next_conn)
        self.links[link.conn] = link
        self._apply(self.examiner.opened(link.conn, self.now_ms()))
        return link

    def _lost(self, link: _Link) -> None:
        if not self._done.is_set():
            self._apply(self.examiner.closed(link.conn, self.now_ms()))
        self.links.pop(link.conn, None)

    # -- transports -------------------------------------------------------------------------------
    async def _tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        link = self._open(lambda conn: _TcpLink(conn, writer))
        try:
            if link is None:
                writer.close()
                return
            splitter = FrameSplitter(link.conn)
            while not link.closed:
                data = await reader.read(READ_BYTES)
                if not data:
                    break
                for frame in splitter.feed(data, self.now_ms()):
                    self._apply(self.examiner.received(frame, self.now_ms()))
        except (ConnectionError, OSError):
            pass
        finally:
            if link is not None:
                self._lost(link)
            writer.close()
            if task is not None:
                self._tasks.discard(task)

    async def _ws(self, ws: Any) -> None:
        from websockets.exceptions import ConnectionClosed

        link = self._open(lambda conn: _WsLink(conn, ws))
        if link is None:
            await ws.close()
            return
        try:
            async for message in ws:
                if link.closed:
                    break
                if isinstance(message, str):
                    self._apply(self.examiner.note("ws_text", link.conn, self.now_ms()))
                    continue
                self._apply(self.examiner.received(whole_message(message, link.conn, self.now_ms()), self.now_ms()))
        except ConnectionClosed:
            pass
        finally:
            self._lost(link)


def _only_terminal_path(connection: Any, request: Any) -> Any:
    if request.path != WS_PATH:
        return connection.respond(404, f"the kit speaks WebSocket on {WS_PATH} only\n")
    return None
