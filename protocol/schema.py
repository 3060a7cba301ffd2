"""Wire building blocks: the construct vocabulary every message schema is written in.

The construct schemas in `lmg.protocol.messages` (bodies) and here (frame) are the single source
of truth for the wire format. Everything else is derived from them: the fast struct codec
(`lmg.protocol.fastpath`), the field tables in docs/protocol.md (`lmg.protocol.spec_tables`) and
the size constants below. All integers are big-endian (network order).
"""

from __future__ import annotations

import zlib
from typing import Any, NamedTuple

from construct import (
    Adapter,
    Array,
    Bytes,
    Checksum,
    Const,
    Construct,
    FixedSized,
    Int8ub,
    Int16sb,
    Int16ub,
    Int32ub,
    Int64ub,
    Prefixed,
    Renamed,
    GreedyBytes,
    RawCopy,
    Rebuild,
    StringError,
    Struct,
    len_,
    this,
)

MAGIC = b"LM"
#: Frame format version this code speaks (header byte 2).
FRAME_VERSION = 1
#: Application protocol version a terminal announces in HELLO.
PROTOCOL_VERSION = 1
#: Default and spec maximum for a whole frame (header + body + checksum), in bytes.
#: 64 KiB holds a 32 KiB photo chunk or a PUNCH_BATCH of 900 records with room to spare,
#: and bounds what one connection can make the server buffer (TLS records are 16 KiB,
#: websockets' default max message is 1 MiB: we stay well below both).
MAX_FRAME_SIZE = 65536

U8, U16, U32, U64, I16 = Int8ub, Int16ub, Int32ub, Int64ub, Int16sb


def unwrap(subcon: Construct) -> Construct:
    """Strip the Renamed layers that names and `* "doc"` put around a field."""
    while isinstance(subcon, Renamed):
        subcon = subcon.subcon
    return subcon


def row_of_array(subcon: Construct) -> Row | None:
    """The Row inside an `Array(..., Row)` or `Array(..., FixedSized(..., Row))` field."""
    inner = unwrap(subcon)
    if not isinstance(inner, Array):
        return None
    element = unwrap(inner.subcon)
    if isinstance(element, FixedSized):
        element = unwrap(element.subcon)
    return element if isinstance(element, Row) else None


# construct ships no type information, so mypy sees its classes as Any; the adapters below
# subclass one all the same (that is how construct is extended).


class FixedText(Adapter):  # type: ignore[misc]  # Adapter is Any (see above)
    """Exactly `length` bytes of text, decoded one byte per character (ISO-8859-1).

    Used for the 18-character resident ID number: any bytes decode, so a wrong ID is
    answered per record (INVALID_WORKER_ID) instead of failing the whole frame.
    """

    def __init__(self, length: int):
        super().__init__(Bytes(length))
        self.length = length

    def _decode(self, obj: bytes, context: Any, path: str) -> str:
        return obj.decode("latin-1")

    def _encode(self, obj: str, context: Any, path: str) -> bytes:
        try:
            raw = obj.encode("latin-1")
        except UnicodeEncodeError as exc:
            raise StringError(f"{obj!r} is not single-byte text", path=path) from exc
        if len(raw) != self.length:
            raise StringError(f"needs exactly {self.length} characters, got {len(raw)}", path=path)
        return raw


class Text(Adapter):  # type: ignore[misc]  # Adapter is Any (see above)
    """UTF-8 text after an unsigned length prefix of `prefix_size` bytes (1 or 2)."""

    def __init__(self, prefix_size: int = 1):
        self.prefix_size = prefix_size
        super().__init__(Prefixed(U8 if prefix_size == 1 else U16, GreedyBytes))

    def _decode(self, obj: bytes, context: Any, path: str) -> str:
        try:
            return obj.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise StringError(f"text is not valid UTF-8 ({exc.reason})", path=path) from exc

    def _encode(self, obj: str, context: Any, path: str) -> bytes:
        return obj.encode("utf-8")


class Blob(Adapter):  # type: ignore[misc]  # Adapter is Any (see above)
    """Raw bytes after an unsigned 16-bit length prefix (photo and face chunks)."""

    def __init__(self) -> None:
        super().__init__(Prefixed(U16, GreedyBytes))

    def _decode(self, obj: bytes, context: Any, path: str) -> bytes:
        return bytes(obj)

    def _encode(self, obj: bytes, context: Any, path: str) -> bytes:
        return bytes(obj)


class Row(Adapter):  # type: ignore[misc]  # Adapter is Any (see above)
    """A nested fixed record decoded straight into a NamedTuple class `row_class`."""

    def __init__(self, row_class: type[NamedTuple], subcon: Struct):
        super().__init__(subcon)
        self.row_class = row_class

    def _decode(self, obj: Any, context: Any, path: str) -> NamedTuple:
        return self.row_class(*[obj[name] for name in self.row_class._fields])

    def _encode(self, obj: NamedTuple, context: Any, path: str) -> dict[str, Any]:
        return dict(zip(self.row_class._fields, obj))


def counted_rows(name: str, count_name: str, count_type: Construct, row: Row,
                 doc: str) -> tuple[Construct, Construct]:
    """`count_name` (rebuilt from the list) followed by that many `row`s named `name`."""
    return (
        count_name / Rebuild(count_type, len_(this[name])) * f"number of `{name}` rows that follow",
        name / Array(this[count_name], row) * doc,
    )


def sized_rows(name: str, count_name: str, size_name: str, row: Row,
               doc: str) -> tuple[Construct, Construct, Construct]:
    """Count, per-row size, then rows of that size: rows may grow in later versions.

    A receiver reads the fields it knows from the start of each row and skips the rest,
    so an older peer ignores trailing fields it does not know.
    """
    return (
        count_name / Rebuild(U16, len_(this[name])) * f"number of `{name}` rows that follow",
        size_name / Rebuild(U16, row.sizeof())
        * f"bytes per row: {row.sizeof()} in V1; read the fields you know, skip the rest of each row",
        name / Array(this[count_name], FixedSized(this[size_name], row)) * doc,
    )


# --- the frame --------------------------------------------------------------------------

FRAME_HEADER = Struct(
    "magic" / Const(MAGIC) * 'ASCII "LM" (0x4C 0x4D); a receiver resynchronises on it',
    "version" / U8 * "frame format version, 1",
    "flags" / U8 * "bit 0 REPLY (informative); other bits 0 when sending, ignored when receiving",
    "msg_type" / U16 * "message type (table below)",
    "seq" / U32 * "sender's sequence number: per direction, +1 per frame, wraps 0xFFFFFFFF → 0",
    "body_len" / U32 * "body length in bytes; at most MAX_FRAME_SIZE − 18",
)
HEADER_SIZE: int = FRAME_HEADER.sizeof()
CHECKSUM = U32
CHECKSUM_SIZE: int = CHECKSUM.sizeof()
FRAME_OVERHEAD = HEADER_SIZE + CHECKSUM_SIZE


def frame_checksum(data: bytes) -> int:
    """CRC-32/ISO-HDLC (the zlib/PNG/Ethernet CRC) of header and body."""
    return zlib.crc32(data)


#: The whole frame as construct sees it: the reference parser the fast codec is checked against.
FRAME = Struct(
    "signed"
    / RawCopy(
        Struct(
            *FRAME_HEADER.subcons,
            "body" / Bytes(this.body_len),
        )
    ),
    "checksum" / Checksum(CHECKSUM, frame_checksum, this.signed.data),
)
