"""WebSocket transport: path /terminal, one protocol frame per binary message.

Built on picows (the choice and its measurements are in docs/websocket-choice.md). As in
`lmg.server.gateway.tcp`, one object per connection is both the library's listener and the
connection's `TerminalLink`, and there is no task: picows calls `on_ws_frame`
synchronously for every WebSocket frame it parses from a read. Rules kept here:

- Only `/terminal` is upgraded; any other path gets HTTP 404 and no session.
- Admission (`Gateway.admit`) is checked once the upgrade is done: a refused connection
  gets `Gateway.refusal` as one binary message, then close 1013, and no session.
- One binary message is one protocol frame. A message fragmented into several WebSocket
  frames is put back together first; one holding several frames gets a NACK per frame
  (`TerminalLink.frame_received`). Text messages are closed with 1003.
- A message above the maximum frame size is closed with 1009 as soon as its length is
  known, and the terminal gets no NACK (docs/protocol.md section 1). picows checks each
  WebSocket frame's length in its header against the listener's `max_frame_size`, before the
  payload is buffered; this module checks each frame against the session's limit (1,047
  bytes before authentication) and the running length of a fragmented message before
  joining the next part. Input held per connection thus stays within two maximum frames (a
  fragmented message being joined and the WebSocket frame being read), plus what arrives in
  the 10 ms picows waits between its close frame and closing the socket. (picows' limit is
  per listener: an unauthenticated WebSocket peer can still make it buffer one frame of up
  to `max_frame_size` before this module sees it and closes with 1009.)
- Back-pressure as on TCP: reading pauses through the underlying asyncio transport. Frames
  picows had already parsed from the read in progress are still delivered after a pause;
  they wait in the link's backlog. Output is bounded by `TerminalLink` through
  `unsent_bytes()`, so picows' pause_writing/resume_writing notices need no action.
- `Gateway.shutdown` closes the listener first and the links later: closing the server
  (an `asyncio.Server`) only stops accepting, so in-flight ACKs and the GOODBYE still go out.
"""

from __future__ import annotations

import logging

from typing import TYPE_CHECKING, Any

from picows import WSCloseCode, WSListener, WSMsgType, WSTransport, ws_create_server

from lmg.server.gateway.link import TerminalLink
from lmg.server.logs import RepeatedWarnings

if TYPE_CHECKING:
    from lmg.server.gateway.gateway import Gateway

PATH = b"/terminal"  # picows hands the request path over as bytes

# picows' read buffer is allocated when a connection is accepted and doubles whenever a read
# does not fit. Our frames are 30-300 bytes, so 1 KiB holds several; the 16 KiB default cost
# about 14 KiB more per idle connection in bench/websocket_libs.py (8.2 KiB in all with 1 KiB).
READ_BUFFER_INIT_BYTES = 1024
# The same as the websockets server's open_timeout that was in force before picows: a
# client that has not sent a complete upgrade request in 10 s is dropped.
HANDSHAKE_TIMEOUT_S = 10.0
LISTEN_BACKLOG = 4096  # as the TCP listener: thousands of terminals reconnect at once after an outage

_BINARY = WSMsgType.BINARY
_CONTINUATION = WSMsgType.CONTINUATION
_TEXT = WSMsgType.TEXT
_CLOSE = WSMsgType.CLOSE


# A peer's WebSocket protocol errors (a bad opcode, an unmasked frame, ...) are logged by
# picows at ERROR, one line each: anyone could flood the log before authenticating. They
# are the peer's fault, not ours: at most one line per interval, at INFO, saying how many
# were left out.
PEER_ERROR_LOG_S = 10.0
_PEER_ERRORS = RepeatedWarnings(PEER_ERROR_LOG_S)


class _PicowsLog(logging.LoggerAdapter):
    """picows' log, under `lmg.websocket.picows`, with its per-connection INFO lines
    (accepted, disconnected) moved to DEBUG: at 10,000 terminals they would be most of the
    log, and the TCP listener does not log connections either. Its `error` lines (the
    peer's protocol errors) are rate-limited at INFO (`_PEER_ERRORS`); `exception` lines
    (a bug of ours in a callback) stay at ERROR. Being an adapter rather than a
    `logging.Logger` also stops picows from creating one child Logger per connection
    (0.5 KiB of RSS per idle connection, measured against `lmg serve`)."""

    def info(self, msg, *args, **kwargs):
        self.debug(msg, *args, **kwargs)

    def error(self, msg, *args, **kwargs):
        _PEER_ERRORS.log(self.logger, logging.INFO, "websocket_peer_error", "WebSocket peer error: " + msg, *args)


_PICOWS_LOG = _PicowsLog(logging.getLogger("lmg.websocket.picows"), {})


class WebSocketLink(TerminalLink, WSListener):
    """One WebSocket connection. Created by the router before the upgrade is answered;
    `TerminalLink.__init__` runs in `on_ws_connected`, once the connection is admitted."""

    # A fragmented binary message being put back together. Class default: an idle
    # connection pays nothing for it; terminals send one WebSocket frame per message.
    _message: bytearray | None = None

    transport: WSTransport  # set by on_ws_connected, before any other call
    transport_name = "ws"

    def __init__(self, gateway: Gateway):
        self.gateway = gateway
        self.closed = False

    # -- picows callbacks ---------------------------------------------------------------
    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport
        peer = transport.underlying_transport.get_extra_info("peername") or ("?", 0)
        refusal = self.gateway.admit(peer[0])
        if refusal is not None:
            self.closed = True
            transport.send(_BINARY, self.gateway.refusal(refusal))
            transport.send_close(WSCloseCode.TRY_AGAIN_LATER)
            transport.disconnect()
            return
        TerminalLink.__init__(self, self.gateway, peer[0], f"{peer[0]}:{peer[1]}")

    def on_ws_frame(self, transport, frame) -> None:
        if self.closed:
            return  # the rest of a read that arrived with a refusal or a close
        kind = frame.msg_type
        if frame.rsv1 or frame.rsv2 or frame.rsv3:
            kind = None  # no extension is negotiated, so these bits must be 0 (RFC 6455 5.2)
        if kind == _BINARY and frame.payload_size > self.decoder.max_frame_size:
            # above the session's limit (small before authentication): 1009, as picows does
            # above the listener's
            self._message = None
            self._fail(WSCloseCode.MESSAGE_TOO_BIG)
            return
        if kind == _BINARY and frame.fin and self._message is None:
            self.frame_received(frame.get_payload_as_bytes())
        elif kind == _BINARY and self._message is None:
            self._message = bytearray(frame.get_payload_as_memoryview())  # picows bounded this frame
        elif kind == _CONTINUATION and self._message is not None:
            if len(self._message) + frame.payload_size > self.decoder.max_frame_size:
                self._message = None
                self._fail(WSCloseCode.MESSAGE_TOO_BIG)
                return
            self._message += frame.get_payload_as_memoryview()
            if frame.fin:
                message, self._message = bytes(self._message), None
                self.frame_received(message)
        elif kind == _TEXT:
            self._fail(WSCloseCode.UNSUPPORTED_DATA)
        elif kind == _CLOSE:
            self._fail(WSCloseCode.OK)  # the peer's close, answered after the output in flight
        elif kind in (_BINARY, _CONTINUATION, None):
            # A new message inside a fragmented one, a continuation of nothing (RFC 6455 5.4)
            # or reserved bits set.
            self._fail(WSCloseCode.PROTOCOL_ERROR)
        # PING is answered by picows (auto-pong); PONG needs nothing.

    def on_ws_disconnected(self, transport) -> None:
        if hasattr(self, "session"):
            self.transport_lost()

    def pause_writing(self) -> None:
        """Above the transport's high-water mark. `TerminalLink._flush` closes a peer whose
        unsent output passes `max_unsent_bytes`; nothing to do here (the override only
        keeps picows from logging a warning at every crossing)."""

    def resume_writing(self) -> None:
        """Below the low-water mark again; see `pause_writing`."""

    def _fail(self, code: WSCloseCode) -> None:
        """Close with `code` after the output already queued; the session ends now. Any
        code but OK (the peer's own close) is a message that was not a frame: counted as a
        decode error and the close reason `websocket_<code>`."""
        self.transport.send_close(code)
        self.transport.disconnect()
        if code == WSCloseCode.OK:
            self.transport_lost()
            return
        reason = "websocket_" + code.name.lower()
        self.gateway.count("decode_error_" + reason)
        self.transport_lost(reason, f"closed with WebSocket code {code.value}")

    # -- primitives ------------------------------------------------------------------------
    def write_frames(self, frames: list[bytes]) -> None:
        send = self.transport.send
        for frame in frames:  # one WebSocket message per frame
            send(_BINARY, frame)  # queued in the transport; ignored once closing

    def unsent_bytes(self) -> int:
        return self.transport.underlying_transport.get_write_buffer_size()

    def close_transport(self, abort: bool = False) -> None:
        if abort:
            self.transport.disconnect(graceful=False)
        else:
            self.transport.send_close(WSCloseCode.OK)
            self.transport.disconnect()  # the transport closes once the output is flushed

    def pause_reading(self) -> None:
        underlying = self.transport.underlying_transport
        if not self._paused and not underlying.is_closing():
            self._paused = True
            underlying.pause_reading()

    def resume_reading(self) -> None:
        underlying = self.transport.underlying_transport
        if self._paused and not underlying.is_closing():
            self._paused = False
            underlying.resume_reading()


async def start_websocket(gateway: Gateway, host: str, port: int, ssl_context: Any) -> Any:
    """Listen for terminals on ws(s)://host:port/terminal; returns the `asyncio.Server`
    (`.sockets`, `.close()` which only stops accepting, `.wait_closed()`, `.is_serving()`)."""

    def route(request):
        return WebSocketLink(gateway) if request.path == PATH else None  # None: HTTP 404

    return await ws_create_server(
        route,
        host,
        port,
        ssl=ssl_context,
        backlog=LISTEN_BACKLOG,
        reuse_port=gateway.reuse_port,  # `lmg serve --workers`: the workers share the port
        max_frame_size=gateway.limits.max_frame_size,
        read_buffer_init_size=READ_BUFFER_INIT_BYTES,
        # uvloop's own transport, as TCP uses; aiofastnet's costs about 5.6 KiB more per connection
        use_aiofastnet=False,
        enable_auto_ping=False,  # HEARTBEAT is the liveness check; pings would double it
        websocket_handshake_timeout=HANDSHAKE_TIMEOUT_S,
        logger_name=_PICOWS_LOG,
    )
