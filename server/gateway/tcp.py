"""TCP transport: an asyncio.Protocol that is also the connection's TerminalLink.

One object per connection and no task: an idle terminal costs the transport, this
object, its Session and its FrameDecoder. Reading pauses while the link holds a full backlog
(see TerminalLink) and the kernel's receive window then pushes back on the terminal.
"""

from __future__ import annotations

import asyncio

from typing import TYPE_CHECKING, cast

from lmg.server.gateway.link import TerminalLink

if TYPE_CHECKING:
    from lmg.server.gateway.gateway import Gateway


class TcpLink(TerminalLink, asyncio.Protocol):
    transport: asyncio.Transport  # set by connection_made, before any other call
    transport_name = "tcp"

    def __init__(self, gateway: Gateway):  # TerminalLink.__init__ runs once the peer is known
        self.gateway = gateway
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport = cast(asyncio.Transport, transport)  # uvloop's or asyncio's stream
        peer = transport.get_extra_info("peername") or ("?", 0)
        refusal = self.gateway.admit(peer[0])
        if refusal is not None:
            self.closed = True
            transport.write(self.gateway.refusal(refusal))
            transport.close()
            return
        TerminalLink.__init__(self, self.gateway, peer[0], f"{peer[0]}:{peer[1]}")

    def data_received(self, data: bytes) -> None:
        if not self.closed:
            self.bytes_received(data)

    def eof_received(self):
        """The terminal half-closed after its last frame: keep our side open until what it
        sent is answered (its punches are stored: they must be acknowledged), then close."""
        if self.closed or not hasattr(self, "session") or self.transport.get_extra_info("sslcontext") is not None:
            return False  # close our side too (TLS cannot half-close: asyncio would only warn)
        self.peer_finished()
        return not self.closed

    def connection_lost(self, exc) -> None:
        if hasattr(self, "session"):
            self.transport_lost()

    # -- primitives ------------------------------------------------------------------------
    def write_frames(self, frames: list[bytes]) -> None:
        self.transport.write(frames[0] if len(frames) == 1 else b"".join(frames))

    def unsent_bytes(self) -> int:
        return self.transport.get_write_buffer_size()

    def close_transport(self, abort: bool = False) -> None:
        if abort:
            self.transport.abort()
        else:
            self.transport.close()

    def pause_reading(self) -> None:
        if not self._paused and not self.transport.is_closing():
            self._paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self._paused and not self.transport.is_closing():
            self._paused = False
            self.transport.resume_reading()
