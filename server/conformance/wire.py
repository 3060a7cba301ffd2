"""The kit's view of the wire: whole frames with their bytes, for grading and for the wirelog.

The gateway's `FrameDecoder` hands over messages only; the kit also needs each frame's
bytes (the report shows them in hex) and its flags (reserved bits must be 0). So
`FrameSplitter` cuts a TCP byte stream into frames by the header alone (magic, `body_len`)
and hands each candidate to the protocol's own `decode_frame`, the one source of truth for
what a valid frame is. What it cannot use becomes a `WireFrame` whose `error` is the
protocol's `ProtocolError`: garbage skipped while resynchronising is `NotAFrame`, a wrong
CRC `BadChecksum`, and so on. Like the gateway's decoder it never buffers more than one
maximum frame, and rejects an oversize `body_len` as soon as the header is in.

`kit_frame` builds frames the protocol's encoder refuses to: unknown message types,
trailing body bytes and reserved flag bits, which the kit sends on purpose (§8).

Personal data: `describe` masks resident ID numbers (`worker_id`, and their bytes in the
hex) and cuts photo and face data to their first bytes; a report can be mailed to a vendor
without the test cards' owners in it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

from lmg.protocol import MAX_FRAME_SIZE, MessageType, NotAFrame, ProtocolError, decode_frame
from lmg.protocol.identity import mask_id_number
from lmg.protocol.jsonform import to_jsonable
from lmg.protocol.messages import Message
from lmg.protocol.schema import FRAME_OVERHEAD, FRAME_VERSION, HEADER_SIZE, MAGIC, frame_checksum

_HEADER = struct.Struct(">2sBBHII")
#: Flag bits a sender must leave 0 (§2: only bit 0, REPLY, is defined).
RESERVED_FLAGS = 0xFE
#: Bytes of photo or face data kept in a decoded wirelog entry, and of a frame's hex.
DATA_SHOWN = 16
HEX_SHOWN = 512


@dataclass(frozen=True)
class WireFrame:
    """One frame (or one unusable run of bytes) on one connection.

    `direction` is "device" (sent by the terminal) or "kit"; `message` is the decoded
    message, or None when `error` says why the bytes are unusable; `flags` is the header's
    flags byte (None when no header could be read)."""

    conn: int
    direction: str
    at_ms: int
    raw: bytes
    message: Message | None
    error: ProtocolError | None = None
    flags: int | None = None

    @property
    def msg_type(self) -> int | None:
        if self.message is not None:
            return int(self.message.msg_type)
        return self.error.msg_type if self.error is not None else None


def header_flags(raw: bytes) -> int | None:
    return raw[3] if len(raw) >= HEADER_SIZE and raw.startswith(MAGIC) else None


class FrameSplitter:
    """Cut a byte stream into `WireFrame`s: `feed(data, now_ms)` returns what is whole.

    Holds at most one frame of `max_frame_size` bytes between calls. A header declaring
    more is an error at once (its bytes are skipped from the next magic on)."""

    def __init__(self, conn: int, max_frame_size: int = MAX_FRAME_SIZE):
        self.conn = conn
        self.max_frame_size = max_frame_size
        self._buf = bytearray()

    def feed(self, data: bytes, now_ms: int) -> list[WireFrame]:
        buf = self._buf
        buf += data
        out: list[WireFrame] = []
        while True:
            start = buf.find(MAGIC)
            if start != 0:
                keep = 1 if start < 0 and buf.endswith(MAGIC[:1]) else 0
                cut = len(buf) - keep if start < 0 else start
                if cut > 0:
                    garbage = bytes(buf[:cut])
                    del buf[:cut]
                    out.append(WireFrame(self.conn, "device", now_ms, garbage, None,
                                         NotAFrame(f"{len(garbage)} bytes that are not a frame (no magic)")))
                if start < 0:
                    return out
            if len(buf) < HEADER_SIZE:
                return out
            _magic, _version, flags, msg_type, seq, body_len = _HEADER.unpack_from(buf, 0)
            size = body_len + FRAME_OVERHEAD
            if size > self.max_frame_size:
                header = bytes(buf[:HEADER_SIZE])
                del buf[:1]  # resynchronise after this magic, as a receiver must (§2)
                out.append(WireFrame(self.conn, "device", now_ms, header, None, _too_large(seq, msg_type, size,
                                                                                         self.max_frame_size), flags))
                continue
            if len(buf) < size:
                return out
            raw = bytes(buf[:size])
            try:
                message = decode_frame(raw, max_frame_size=self.max_frame_size)
            except ProtocolError as exc:
                if exc.result_code.name == "BAD_CHECKSUM":
                    del buf[:1]  # its length cannot be trusted: look for the next magic
                    out.append(WireFrame(self.conn, "device", now_ms, raw[:HEADER_SIZE], None, exc, flags))
                    continue
                del buf[:size]
                out.append(WireFrame(self.conn, "device", now_ms, raw, None, exc, flags))
                continue
            del buf[:size]
            out.append(WireFrame(self.conn, "device", now_ms, raw, message, None, flags))


def _too_large(seq: int, msg_type: int, size: int, limit: int) -> ProtocolError:
    from lmg.protocol import FrameTooLarge

    return FrameTooLarge(f"declared frame of {size} bytes exceeds {limit}", seq=seq, msg_type=msg_type)


def whole_message(raw: bytes, conn: int, now_ms: int, max_frame_size: int = MAX_FRAME_SIZE) -> WireFrame:
    """One WebSocket binary message, which must hold exactly one frame (§1)."""
    try:
        message = decode_frame(raw, max_frame_size=max_frame_size)
    except ProtocolError as exc:
        return WireFrame(conn, "device", now_ms, raw, None, exc, header_flags(raw))
    return WireFrame(conn, "device", now_ms, raw, message, None, header_flags(raw))


def kit_frame(msg_type: int, seq: int, body: bytes, *, flags: int = 0) -> bytes:
    """A frame built by hand: any type, any body, any flags (the encoder allows only what
    the schemas know; the kit sends the unknown on purpose)."""
    header = _HEADER.pack(MAGIC, FRAME_VERSION, flags, msg_type, seq, len(body))
    return header + body + struct.pack(">I", frame_checksum(header + body))


# --- the report's view ---------------------------------------------------------------------

_MASKED_TEXT = ("worker_id",)
_CUT_DATA = ("data",)


def _masked_fields(message: Message) -> dict[str, Any]:
    fields = to_jsonable(message)["fields"]
    for name in _MASKED_TEXT:
        if isinstance(fields.get(name), str):
            fields[name] = mask_id_number(fields[name])
    for name in _CUT_DATA:
        if isinstance(fields.get(name), str) and len(fields[name]) > DATA_SHOWN * 2:
            fields[name] = f"{fields[name][:DATA_SHOWN * 2]}… ({len(fields[name]) // 2} bytes)"
    for row in fields.get("records", ()):
        row["worker_id"] = mask_id_number(row["worker_id"])
    return fields


def _masked_hex(frame: WireFrame) -> str:
    raw = bytearray(frame.raw[:HEX_SHOWN])
    message = frame.message
    ids: list[str] = []
    if message is not None:
        if isinstance(getattr(message, "worker_id", None), str):
            ids.append(message.worker_id)
        ids += [r.worker_id for r in getattr(message, "records", ()) if hasattr(r, "worker_id")]
    text = raw.hex(" ")
    for worker_id in ids:
        plain = worker_id.encode("latin-1", "replace").hex(" ")
        masked = mask_id_number(worker_id).encode("latin-1", "replace").hex(" ").replace("2a", "**")
        text = text.replace(plain, masked)
    if len(frame.raw) > HEX_SHOWN:
        text += f" … ({len(frame.raw)} bytes)"
    return text


def describe(frame: WireFrame) -> dict[str, Any]:
    """A wirelog entry: who sent it, when (ms since the kit started), hex and decoded form."""
    entry: dict[str, Any] = {"conn": frame.conn, "from": frame.direction, "at_ms": frame.at_ms,
                             "hex": _masked_hex(frame)}
    if frame.message is not None:
        entry["type"] = frame.message.msg_type.name
        entry["seq"] = frame.message.seq
        entry["fields"] = _masked_fields(frame.message)
    else:
        kind = frame.msg_type
        if kind is None:
            entry["type"] = "?"
        else:
            entry["type"] = MessageType(kind).name if kind in MessageType._value2member_map_ else f"0x{kind:04X}"
        entry["error"] = f"{type(frame.error).__name__}: {frame.error}" if frame.error else "undecoded"
    if frame.flags is not None:
        entry["flags"] = frame.flags
    return entry
