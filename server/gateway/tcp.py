"""TCP transport: an asyncio.Protocol that is also the connection's TerminalLink.

One object per connection and no task: an idle terminal costs the transport, this
object, its Session and its FrameDecoder. Reading pauses while the link holds a full backlog
(see TerminalLink) and the kernel's receive window then pushes back on the terminal.

With `tcp_proxy_protocol` the connection starts with a PROXY header (proxy_header.py):
admission, the session and everything after use the terminal's address from it. Until the
header is complete the bytes are held (at most 1 KiB) and no TerminalLink exists; a
connection that sends something else, or nothing within `auth_timeout_s`, is closed and
counted as refused (`proxy_header`).
"""

from __future__ import annotations

import asyncio

from typing import TYPE_CHECKING, cast

from lmg.server.gateway.link import TerminalLink
from lmg.server.gateway.proxy_header import ProxyHeaderError, read_proxy_header

if TYPE_CHECKING:
    from lmg.server.gateway.gateway import Gateway


class TcpLink(TerminalLink, asyncio.Protocol):
    transport: asyncio.Transport  # set by connection_made, before any other call
    transport_name = "tcp"

    def __init__(self, gateway: Gateway):  # TerminalLink.__init__ runs once the peer is known
        self.gateway = gateway
        self.closed = False
        self._header: bytearray | None = None  # PROXY header bytes so far, while one is awaited
        self._header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport = cast(asyncio.Transport, transport)  # uvloop's or asyncio's stream
        peer = transport.get_extra_info("peername") or ("?", 0)
        if self.gateway.settings.gateway.tcp_proxy_protocol:
            self._header = bytearray()
            self._header_timer = asyncio.get_running_loop().call_later(
                self.gateway.limits.auth_timeout_s, self._no_proxy_header, "no PROXY header in time")
            return
        self._open(peer)

    def _open(self, peer: tuple) -> None:
        refusal = self.gateway.admit(peer[0])
        if refusal is not None:
            self.closed = True
            self.transport.write(self.gateway.refusal(refusal))
            self.transport.close()
            return
        TerminalLink.__init__(self, self.gateway, peer[0], f"{peer[0]}:{peer[1]}")

    def data_received(self, data: bytes) -> None:
        if self._header is not None:
            self._header_received(data)
        elif not self.closed:
            self.bytes_received(data)

    def _header_received(self, data: bytes) -> None:
        header = self._header
        assert header is not None
        header += data
        try:
            found = read_proxy_header(bytes(header))
        except ProxyHeaderError as exc:
            self._no_proxy_header(str(exc))
            return
        if found is None:
            return  # NEED_MORE
        rest = bytes(header[found.length:])
        self._stop_header_wait()
        self._open(found.address or self.transport.get_extra_info("peername") or ("?", 0))
        if rest and not self.closed:
            self.bytes_received(rest)

    def _no_proxy_header(self, why: str) -> None:
        """Not a balancer's connection (or a silent one): close it, count it, log it once in a while."""
        if self._header is None or self.closed:
            return
        self._stop_header_wait()
        self.closed = True
        peer = self.transport.get_extra_info("peername") or ("?", 0)
        self.gateway.proxy_header_refused(f"{peer[0]}:{peer[1]}", why)
        self.transport.abort()

    def eof_received(self):
        """The terminal half-closed after its last frame: keep our side open until what it
        sent is answered (its punches are stored: they must be acknowledged), then close."""
        if self.closed or not hasattr(self, "session") or self.transport.get_extra_info("sslcontext") is not None:
            return False  # close our side too (TLS cannot half-close: asyncio would only warn)
        self.peer_finished()
        return not self.closed

    def _stop_header_wait(self) -> None:
        """No PROXY header is awaited any more (it came, it was refused, or the peer left)."""
        self._header = None
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def connection_lost(self, exc) -> None:
        self._stop_header_wait()  # gone before its header was complete, if it was awaited
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
