"""The server's end of terminal connections, for testing the simulators' device side before
the gateway sends commands: a loopback listener (TCP or WebSocket) whose connections a test
drives frame by frame. `accept_terminal` plays the handshake without checking the MAC.

Every wait is bounded by WAIT_S; a silent peer fails the test with the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator

from lmg.protocol import (
    MAX_FRAME_SIZE,
    Auth,
    AuthResult,
    Challenge,
    FrameDecoder,
    Hello,
    ProtocolError,
    ResultCode,
    decode_frame,
    encode,
)

from tests.server.conftest import HOST, WAIT_S


class ServerEnd:
    """One accepted terminal connection: `send` numbers frames in the server's sequence."""

    def __init__(self, transport: str, *, reader: asyncio.StreamReader | None = None,
                 writer: asyncio.StreamWriter | None = None, ws=None):
        self.transport = transport
        self.reader, self.writer, self.ws = reader, writer, ws
        self.decoder = FrameDecoder()
        self.items: list = []
        self.seq = 1000
        self.done = asyncio.Event()  # set by close(): the connection handler may return

    async def send(self, message) -> int:
        self.seq += 1
        await self.send_bytes(encode(message._replace(seq=self.seq)))
        return self.seq

    async def send_bytes(self, data: bytes) -> None:
        if self.ws is not None:
            await self.ws.send(data)
        else:
            assert self.writer is not None
            self.writer.write(data)
            await self.writer.drain()

    async def receive(self, timeout: float = WAIT_S):
        """The next frame (or ProtocolError) from the terminal; None once it closed."""
        while not self.items:
            if self.ws is not None:
                from websockets.exceptions import ConnectionClosed

                try:
                    data = await asyncio.wait_for(self.ws.recv(), timeout)
                except ConnectionClosed:
                    return None
                try:
                    self.items.append(decode_frame(data))
                except ProtocolError as exc:
                    self.items.append(exc)
            else:
                assert self.reader is not None
                try:
                    data = await asyncio.wait_for(self.reader.read(65536), timeout)
                except ConnectionError:  # a terminal that aborts (the fleet at the end of a run)
                    data = b""
                if not data:
                    return None
                self.items.extend(self.decoder.feed(data))
        return self.items.pop(0)

    async def expect(self, kind, timeout: float = WAIT_S):
        item = await self.receive(timeout)
        assert isinstance(item, kind), f"expected {kind.__name__}, got {item!r}"
        return item

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        if self.ws is not None:
            await self.ws.close()
        self.done.set()


async def accept_terminal(end: ServerEnd) -> Hello:
    """HELLO -> CHALLENGE -> AUTH -> AUTH_RESULT OK (any MAC is accepted)."""
    hello = await end.expect(Hello)
    now = time.time_ns() // 1_000_000
    await end.send(Challenge(os.urandom(16), now))
    await end.expect(Auth)
    await end.send(AuthResult(ResultCode.OK, 30, now, MAX_FRAME_SIZE, 500))
    return hello


@contextlib.asynccontextmanager
async def listener(transport: str = "tcp") -> AsyncIterator[tuple[int, asyncio.Queue[ServerEnd]]]:
    """(port, queue of accepted connections) of a loopback listener, closed afterwards."""
    accepted: asyncio.Queue[ServerEnd] = asyncio.Queue()
    ends: list[ServerEnd] = []

    async def keep(end: ServerEnd) -> None:
        ends.append(end)
        await accepted.put(end)
        await end.done.wait()  # a WebSocket handler that returns closes its connection

    if transport == "tcp":
        server = await asyncio.start_server(lambda r, w: keep(ServerEnd("tcp", reader=r, writer=w)), HOST, 0)
        try:
            yield server.sockets[0].getsockname()[1], accepted
        finally:
            for end in ends:
                await end.close()
            server.close()
    else:
        from websockets.asyncio.server import serve

        async with serve(lambda ws: keep(ServerEnd("ws", ws=ws)), HOST, 0, compression=None) as server:
            try:
                yield list(server.sockets)[0].getsockname()[1], accepted
            finally:
                for end in ends:
                    await end.close()
