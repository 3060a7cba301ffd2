"""Encoding and decoding of whole frames: the sans-I/O core the gateway and simulators use.

Two stages, as the spec describes: a bounded incremental framer finds whole, checksum-
verified frames; only then is a body parsed. "Need more bytes" and "malformed" are never
confused: the framer waits for bytes only while a frame's declared length is within the
maximum, and everything it cannot use is either skipped as garbage (counted) or reported
as a `ProtocolError` value.

Public entry points:
- `encode(message) -> bytes`: a whole frame, seq from `message.seq`.
- `FrameDecoder(max_frame_size).feed(data) -> list[Message | ProtocolError]` for TCP.
- `decode_frame(data)` for transports that keep message boundaries (WebSocket): exactly
  one frame, returns the message or raises a `ProtocolError`.
- `reference_decode_frame(data)`: the same contract, done by construct alone; the fast
  path is tested against it and it is the benchmark's baseline.
"""

from __future__ import annotations

import struct
import zlib
from typing import TYPE_CHECKING

from construct import ChecksumError, ConstError, ConstructError, ListContainer, Struct

from lmg.protocol.codes import FrameFlag, MessageType
from lmg.protocol.errors import (
    BadChecksum,
    EncodeError,
    FrameTooLarge,
    MalformedBody,
    NotAFrame,
    ProtocolError,
    UnsupportedMessage,
    UnsupportedVersion,
)
from lmg.protocol.fastpath import FastCodec, compile_codec, fixed_format
from lmg.protocol.messages import BODY_SCHEMAS, MESSAGE_CLASSES, REPLY_TYPES, Message, data_field_names
from lmg.protocol.schema import (
    CHECKSUM,
    CHECKSUM_SIZE,
    FRAME,
    FRAME_HEADER,
    FRAME_OVERHEAD,
    FRAME_VERSION,
    HEADER_SIZE,
    MAGIC,
    MAX_FRAME_SIZE,
)

if TYPE_CHECKING:
    from lmg.protocol.fastpath import BodyDecoder, BodyEncoder, Buffer

#: Messages decoded and encoded by generated struct code; everything else by construct.
#: The handshake is here too: a reconnect storm is thousands of HELLO/CHALLENGE/AUTH/
#: AUTH_RESULT exchanges a second, and construct spent ~25% of the gateway's time on them.
HOT_MESSAGE_TYPES = (MessageType.HEARTBEAT, MessageType.PUNCH, MessageType.PUNCH_BATCH, MessageType.ACK,
                     MessageType.HELLO, MessageType.CHALLENGE, MessageType.AUTH, MessageType.AUTH_RESULT)

_HEADER = struct.Struct(fixed_format(FRAME_HEADER))
_CHECKSUM = struct.Struct(fixed_format(__import__("construct").Struct("c" / CHECKSUM)))
_crc32 = zlib.crc32
_MAGIC_FIRST = MAGIC[0]
_DETAIL_LIMIT = 160  # characters of a construct error kept for logs; never sent to the peer


def _short(exc: Exception) -> str:
    text = str(exc).replace("\n", " ")
    return text if len(text) <= _DETAIL_LIMIT else text[: _DETAIL_LIMIT - 1] + "…"


def _freeze(value: object) -> object:
    return tuple(value) if isinstance(value, ListContainer) else value


def _construct_body_codec(cls: type[Message], schema: Struct) -> tuple[BodyDecoder, BodyEncoder]:
    """Body codec interpreted by construct: the reference, and the path for cold messages."""
    names = data_field_names(schema)
    label = cls.msg_type.name

    def decode(buf: Buffer, start: int, end: int, seq: int) -> Message:
        try:
            parsed = schema.parse(bytes(buf[start:end]))
        except ConstructError as exc:
            raise MalformedBody(f"{label} body: {_short(exc)}") from None
        return cls(*[_freeze(parsed[name]) for name in names], seq)

    def encode(message: Message) -> bytes:
        try:
            body: bytes = schema.build(dict(zip(names, message)))
        except (ConstructError, TypeError, AttributeError, UnicodeError, ValueError) as exc:
            raise EncodeError(f"{label}: {_short(exc)}") from None
        return body

    return decode, encode


REFERENCE_DECODERS: dict[int, BodyDecoder] = {}
REFERENCE_ENCODERS: dict[type, BodyEncoder] = {}
BODY_DECODERS: dict[int, BodyDecoder] = {}
BODY_ENCODERS: dict[type, BodyEncoder] = {}
FAST_CODECS: dict[int, FastCodec] = {}

for _type, _cls in MESSAGE_CLASSES.items():
    _decode, _encode = _construct_body_codec(_cls, BODY_SCHEMAS[_cls])
    REFERENCE_DECODERS[_type], REFERENCE_ENCODERS[_cls] = _decode, _encode
    if _type in HOT_MESSAGE_TYPES:
        FAST_CODECS[_type] = compile_codec(_cls, BODY_SCHEMAS[_cls])
        _decode, _encode = FAST_CODECS[_type].decode, FAST_CODECS[_type].encode
    BODY_DECODERS[_type], BODY_ENCODERS[_cls] = _decode, _encode


def _frame(msg_type: int, seq: int, body: bytes, max_frame_size: int) -> bytes:
    if len(body) + FRAME_OVERHEAD > max_frame_size:
        raise EncodeError(
            f"{MessageType(msg_type).name} frame would be {len(body) + FRAME_OVERHEAD} bytes, "
            f"above the maximum of {max_frame_size}: split it (fewer records or smaller chunks)"
        )
    flags = FrameFlag.REPLY if msg_type in REPLY_TYPES else 0
    try:
        header = _HEADER.pack(MAGIC, FRAME_VERSION, flags, msg_type, seq, len(body))
    except struct.error:
        raise EncodeError(f"seq {seq!r} is not a u32 (0..0xFFFFFFFF)") from None
    return header + body + _CHECKSUM.pack(_crc32(body, _crc32(header)))


def encode(message: Message, *, max_frame_size: int = MAX_FRAME_SIZE) -> bytes:
    """The whole frame for `message` (header, body, CRC-32), using `message.seq`.

    Raises `EncodeError` when a field is out of range or the frame would exceed
    `max_frame_size` bytes.
    """
    try:
        body_encoder = BODY_ENCODERS[type(message)]
    except KeyError:
        raise EncodeError(f"{type(message).__name__} is not a protocol message") from None
    return _frame(message.msg_type, message[-1], body_encoder(message), max_frame_size)


def reference_encode(message: Message, *, max_frame_size: int = MAX_FRAME_SIZE) -> bytes:
    """`encode` done by construct alone (bodies); must produce the same bytes."""
    try:
        body_encoder = REFERENCE_ENCODERS[type(message)]
    except KeyError:
        raise EncodeError(f"{type(message).__name__} is not a protocol message") from None
    return _frame(message.msg_type, message[-1], body_encoder(message), max_frame_size)


def _max_body(max_frame_size: int) -> int:
    if not FRAME_OVERHEAD <= max_frame_size <= 0xFFFFFFFF:
        raise ValueError(f"max_frame_size must be between {FRAME_OVERHEAD} and 2**32-1 bytes, got {max_frame_size}")
    return max_frame_size - FRAME_OVERHEAD


def _body(seq: int, msg_type: int, version: int, buf: Buffer, start: int, end: int,
          decoders: dict[int, BodyDecoder]) -> Message | ProtocolError:
    """Decode a checksum-verified body; returns the message or a ProtocolError value."""
    if version != FRAME_VERSION:
        return UnsupportedVersion(f"frame version {version} (this server speaks {FRAME_VERSION})", seq=seq, msg_type=msg_type)
    decoder = decoders.get(msg_type)
    if decoder is None:
        return UnsupportedMessage(f"unknown message type 0x{msg_type:04X}", seq=seq, msg_type=msg_type)
    try:
        return decoder(buf, start, end, seq)
    except ProtocolError as exc:
        exc.seq, exc.msg_type = seq, msg_type
        return exc


def decode_frame(data: bytes, *, max_frame_size: int = MAX_FRAME_SIZE) -> Message:
    """Decode `data` holding exactly one frame (a WebSocket binary message).

    Returns the message; raises a `ProtocolError` subclass (and nothing else) when `data`
    is not exactly one valid frame of a known type.
    """
    result = _decode_one(data, max_frame_size, BODY_DECODERS)
    if isinstance(result, ProtocolError):
        raise result
    return result


def _decode_one(data: Buffer, max_frame_size: int, decoders: dict[int, BodyDecoder]) -> Message | ProtocolError:
    max_body = _max_body(max_frame_size)
    size = len(data)
    if size < HEADER_SIZE:
        return NotAFrame(f"{size} bytes is shorter than a frame header ({HEADER_SIZE})")
    magic, version, _flags, msg_type, seq, body_len = _HEADER.unpack_from(data, 0)
    if magic != MAGIC:
        return NotAFrame(f"does not start with the magic {MAGIC!r}")
    if body_len > max_body:
        return FrameTooLarge(f"declared body of {body_len} bytes exceeds {max_body}", seq=seq, msg_type=msg_type)
    end = HEADER_SIZE + body_len
    if size != end + CHECKSUM_SIZE:
        return NotAFrame(f"message is {size} bytes but its header declares {end + CHECKSUM_SIZE}", seq=seq, msg_type=msg_type)
    if _crc32(memoryview(data)[:end]) != _CHECKSUM.unpack_from(data, end)[0]:
        return BadChecksum("CRC-32 mismatch", seq=seq, msg_type=msg_type)
    return _body(seq, msg_type, version, data, HEADER_SIZE, end, decoders)


def reference_decode_frame(data: bytes, *, max_frame_size: int = MAX_FRAME_SIZE) -> Message:
    """`decode_frame` done by construct: the frame and the body parsed from the schemas."""
    max_body = _max_body(max_frame_size)
    data = bytes(data)
    if len(data) < HEADER_SIZE:  # the same order of checks as the fast path
        raise NotAFrame(f"{len(data)} bytes is shorter than a frame header ({HEADER_SIZE})")
    try:
        header = FRAME_HEADER.parse(data)
    except ConstError:
        raise NotAFrame(f"does not start with the magic {MAGIC!r}") from None
    seq, msg_type = header.seq, header.msg_type
    if header.body_len > max_body:
        raise FrameTooLarge(f"declared body of {header.body_len} bytes exceeds {max_body}", seq=seq, msg_type=msg_type)
    expected = HEADER_SIZE + header.body_len + CHECKSUM_SIZE
    if len(data) != expected:
        raise NotAFrame(f"message is {len(data)} bytes but its header declares {expected}", seq=seq, msg_type=msg_type)
    try:
        frame = FRAME.parse(data)
    except ChecksumError:
        raise BadChecksum("CRC-32 mismatch", seq=seq, msg_type=msg_type) from None
    body = frame.signed.value.body
    result = _body(seq, msg_type, header.version, body, 0, len(body), REFERENCE_DECODERS)
    if isinstance(result, ProtocolError):
        raise result
    return result


class FrameDecoder:
    """Incremental sans-I/O decoder for a byte stream (TCP).

    `feed(data)` returns, in arrival order, every complete message and a `ProtocolError`
    value for every frame that could not be used; it raises nothing. Guarantees:
    - frames split across reads and many frames in one read both work;
    - a declared body length above the maximum is rejected as soon as the header is
      in, never buffered (`FrameTooLarge`, fatal: the session should close);
    - after garbage it resynchronises at the next magic and counts the bytes it skipped
      in `skipped_bytes`; a frame with a bad checksum is skipped the same way, since its
      length field cannot be trusted;
    - between calls it holds less than `max_frame_size` bytes.
    """

    __slots__ = ("_buf", "_max_body", "max_frame_size", "skipped_bytes", "frames", "rejected")

    def __init__(self, max_frame_size: int = MAX_FRAME_SIZE):
        self._max_body = _max_body(max_frame_size)
        self.max_frame_size = max_frame_size
        self._buf = bytearray()
        self.skipped_bytes = 0  # garbage discarded while resynchronising
        self.frames = 0  # frames whose checksum verified
        self.rejected = 0  # ProtocolError values returned

    def _resync(self, buf: bytearray, pos: int, size: int) -> int:
        """Skip garbage from `pos` to the next possible magic; count what was skipped."""
        found = buf.find(MAGIC, pos + 1)
        if found < 0:  # keep a trailing first magic byte, drop the rest
            found = size - 1 if buf[size - 1] == _MAGIC_FIRST and size - 1 > pos else size
        self.skipped_bytes += found - pos
        return found

    def set_max_frame_size(self, max_frame_size: int) -> None:
        """Take frames of up to `max_frame_size` bytes from the next `feed` on (the gateway
        raises its small pre-authentication limit once a session is authenticated)."""
        self._max_body = _max_body(max_frame_size)
        self.max_frame_size = max_frame_size

    @property
    def buffered(self) -> int:
        """Bytes held waiting for the rest of a frame."""
        return len(self._buf)

    def feed(self, data: Buffer) -> list[Message | ProtocolError]:
        buf = self._buf
        buf += data
        out: list[Message | ProtocolError] = []
        size = len(buf)
        pos = 0
        header_unpack = _HEADER.unpack_from
        checksum_unpack = _CHECKSUM.unpack_from
        max_body = self._max_body
        decoders = BODY_DECODERS
        magic_bytes, frame_version, header_size, checksum_size = MAGIC, FRAME_VERSION, HEADER_SIZE, CHECKSUM_SIZE
        frames = 0
        while size - pos >= header_size:
            magic, version, _flags, msg_type, seq, body_len = header_unpack(buf, pos)
            if magic != magic_bytes:
                pos = self._resync(buf, pos, size)
                continue
            if body_len > max_body:
                out.append(FrameTooLarge(f"declared body of {body_len} bytes exceeds {max_body}", seq=seq, msg_type=msg_type))
                self.rejected += 1
                self.skipped_bytes += 1
                pos += 1  # treat the magic as garbage and look for the next one
                continue
            body_start = pos + header_size
            body_end = body_start + body_len
            if body_end + checksum_size > size:
                break  # wait for the rest of this frame
            if _crc32(buf[pos:body_end]) != checksum_unpack(buf, body_end)[0]:
                out.append(BadChecksum("CRC-32 mismatch", seq=seq, msg_type=msg_type))
                self.rejected += 1
                self.skipped_bytes += 1
                pos += 1
                continue
            frames += 1
            pos = body_end + checksum_size
            decoder = decoders.get(msg_type) if version == frame_version else None
            if decoder is not None:
                try:
                    out.append(decoder(buf, body_start, body_end, seq))
                    continue
                except ProtocolError as exc:
                    exc.seq, exc.msg_type = seq, msg_type
                    out.append(exc)
            else:  # unknown version or type
                out.append(_body(seq, msg_type, version, buf, body_start, body_end, decoders))
            self.rejected += 1
        while pos < size and not buf.startswith(MAGIC, pos):  # a partial header must begin with the magic
            if pos == size - 1 and buf[pos] == _MAGIC_FIRST:
                break  # a lone first magic byte: wait for the next one
            pos = self._resync(buf, pos, size)
        self.frames += frames
        if pos:
            del buf[:pos]
        return out
