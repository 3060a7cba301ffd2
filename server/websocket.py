"""WebSocket transport: path /terminal, one protocol frame per binary message.

Built on the `websockets` library's asyncio server (the choice and its measurements are
in docs/websocket-choice.md). Back-pressure: `max_queue` bounds messages the library
buffers before it stops reading the socket, and while the link is busy with the store
this handler does not take the next message, so reading stops the same way as on TCP.
Text messages are refused (close code 1003), as the spec says.
"""

from __future__ import annotations

import asyncio
import functools
import logging

from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed

from server.link import TerminalLink

log = logging.getLogger("lmg.websocket")
PATH = "/terminal"
MAX_QUEUE = 16  # messages buffered per connection before the library stops reading


class WebSocketLink(TerminalLink):
    def __init__(self, gateway, connection, peer):
        self.connection = connection
        self._resume = asyncio.Event()
        self._resume.set()
        super().__init__(gateway, peer[0], f"{peer[0]}:{peer[1]}")

    def write(self, data: bytes) -> None:
        transport = self.connection.transport
        if not transport.is_closing():
            self.gateway.spawn(self._send_frame(data))

    async def _send_frame(self, data: bytes) -> None:
        try:
            await self.connection.send(data)
        except ConnectionClosed:
            pass

    def unsent_bytes(self) -> int:
        return self.connection.transport.get_write_buffer_size()

    def close_transport(self, abort: bool = False) -> None:
        self._resume.set()  # a handler paused while the link was busy must wake up, see the close and return
        if abort:
            self.connection.transport.abort()
        else:
            self.gateway.spawn(self.connection.close(1000))

    def pause_reading(self) -> None:
        self._resume.clear()

    def resume_reading(self) -> None:
        self._resume.set()


async def start_websocket(gateway, host: str, port: int, ssl_context):
    async def handler(connection) -> None:
        if connection.request.path != PATH:
            await connection.close(1008, f"use the path {PATH}")
            return
        peer = connection.remote_address or ("?", 0)
        refusal = gateway.admit(peer[0])
        if refusal is not None:
            await connection.send(gateway.refusal(refusal))
            await connection.close(1013, "try again later")
            return
        link = WebSocketLink(gateway, connection, peer)
        try:
            async for message in connection:
                if isinstance(message, str):
                    await connection.close(1003, "binary frames only")
                    break
                link.frame_received(message)
                if link.closed:
                    break
                await link._resume.wait()
                if link.closed:
                    break
        except ConnectionClosed:
            pass
        finally:
            link.transport_lost()

    server = await serve(
        handler,
        host,
        port,
        ssl=ssl_context,
        max_size=gateway.config.max_frame_size,
        max_queue=MAX_QUEUE,
        ping_interval=None,  # HEARTBEAT is the liveness check; protocol pings would double it
        compression=None,  # frames are small binary; deflate costs CPU and memory per connection
    )
    # Gateway.shutdown closes the listeners first, then sends the ACKs of commits in flight,
    # then GOODBYE SHUTTING_DOWN. The library's default close would end every connection
    # with 1001 at once and lose those ACKs and the GOODBYE: stop accepting only.
    server.close = functools.partial(server.close, close_connections=False)
    return server
