"""Every message of the terminal protocol: a typed class beside the construct schema of its body.

Message classes are immutable `NamedTuple`s: a punch batch of 500 records is built 500
times per frame, and a NamedTuple costs about a third of a frozen dataclass to build
(~0.4 us vs ~1.3 us here), while staying immutable, typed and named. `@message` makes
equality type-aware (a plain tuple would call two different messages with the same
values equal) and checks at import that the class fields match the schema's fields, so
the schema stays the one description of the wire.

`seq` is the last field of every message: the frame header's sequence number, filled in
by the decoder and written by `encode`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple, TypeAlias

from construct import Bytes, Construct, Rebuild, Struct

from lmg.protocol.codes import MessageType
from lmg.protocol.schema import (
    U8,
    U16,
    U32,
    U64,
    I16,
    Blob,
    FixedText,
    Row,
    Text,
    counted_rows,
    unwrap,
    sized_rows,
)

#: A protocol message: an instance of one of the classes below. `Any` to the type checker:
#: @message gives each class a `msg_type` attribute, and a NamedTuple cannot declare one
#: (every name annotated in its body becomes a field), so no precise type exists for
#: "any message". Code that needs one message's fields narrows with isinstance.
Message: TypeAlias = Any

#: msg_type -> message class; filled by @message.
MESSAGE_CLASSES: dict[int, type[Message]] = {}
#: message class -> construct Struct of its body.
BODY_SCHEMAS: dict[type, Struct] = {}
#: Types whose frames carry the REPLY flag.
REPLY_TYPES: frozenset[int] = frozenset(
    {
        MessageType.CHALLENGE,
        MessageType.AUTH_RESULT,
        MessageType.TIME_SYNC_REPLY,
        MessageType.ACK,
        MessageType.NACK,
        MessageType.PHOTO_STATUS,
        MessageType.ROSTER_VERSION_REPLY,
        MessageType.CONFIG_REPLY,
    }
)


def _typed_eq(self: tuple[Any, ...], other: object) -> bool:
    return type(self) is type(other) and tuple.__eq__(self, other)


def _typed_ne(self: tuple[Any, ...], other: object) -> bool:
    return not _typed_eq(self, other)


def _typed_hash(self: tuple[Any, ...]) -> int:
    return hash((type(self).__name__, tuple(self)))


def data_field_names(schema: Struct) -> list[str]:
    """Schema fields a caller supplies: everything except counts/sizes rebuilt from data."""
    return [sc.name for sc in schema.subcons if not isinstance(unwrap(sc), Rebuild)]


def message(msg_type: MessageType, *fields: Construct) -> Callable[[type[Message]], type[Message]]:
    """Register a NamedTuple class as the message of `msg_type` with body `Struct(*fields)`."""

    schema = Struct(*fields)

    def register(cls: type[Message]) -> type[Message]:
        expected = data_field_names(schema) + ["seq"]
        if list(cls._fields) != expected:
            raise TypeError(f"{cls.__name__} fields {cls._fields} do not match its schema {expected}")
        if msg_type in MESSAGE_CLASSES:
            raise TypeError(f"message type {msg_type!r} registered twice")
        cls.msg_type = MessageType(msg_type)
        # functions stored on the class become its methods (self first), which mypy cannot follow
        cls.__eq__, cls.__ne__, cls.__hash__ = _typed_eq, _typed_ne, _typed_hash  # type: ignore[assignment]
        MESSAGE_CLASSES[int(msg_type)] = cls
        BODY_SCHEMAS[cls] = schema
        return cls

    return register


# --- rows (records nested inside messages) ----------------------------------------------


class PunchRecord(NamedTuple):
    """One attendance record (打卡). Validation happens in the session, per record."""

    record_no: int
    punch_time_ms: int
    worker_id: str
    direction: int
    verify_mode: int
    temperature_dc: int
    photo_size: int
    photo_sha256: bytes


PUNCH_RECORD = Row(
    PunchRecord,
    Struct(
        "record_no" / U32 * "record number, unique per device, increasing; the idempotency key",
        "punch_time_ms" / U64 * "time of the punch, Unix milliseconds UTC",
        "worker_id" / FixedText(18) * "resident ID number (GB 11643): 17 digits + check digit 0-9 or X",
        "direction" / U8 * "1 in (进), 2 out (出)",
        "verify_mode" / U8 * "1 face, 2 IC card, 3 ID card, 4 fingerprint",
        "temperature_dc" / U16 * "body temperature in 0.1 °C (365 = 36.5 °C); 0 = not measured",
        "photo_size" / U32 * "size of the face snapshot in bytes; 0 = no photo",
        "photo_sha256" / Bytes(32) * "SHA-256 of the snapshot (links PHOTO_CHUNKs); zeros when no photo",
    ),
)
PUNCH_RECORD_SIZE: int = PUNCH_RECORD.sizeof()


class RecordResult(NamedTuple):
    record_no: int
    result: int


RECORD_RESULT = Row(
    RecordResult,
    Struct(
        "record_no" / U32 * "record number being answered",
        "result" / U16 * "result code for that record (OK, DUPLICATE or a rejection)",
    ),
)


class ConfigEntry(NamedTuple):
    key: str
    value: str


CONFIG_ENTRY = Row(
    ConfigEntry,
    Struct(
        "key" / Text(1) * "configuration key, UTF-8",
        "value" / Text(2) * "value as text, UTF-8",
    ),
)


class ConfigKey(NamedTuple):
    key: str


CONFIG_KEY = Row(ConfigKey, Struct("key" / Text(1) * "configuration key, UTF-8"))


# --- session ---------------------------------------------------------------------------


@message(
    MessageType.HELLO,
    "serial" / Text(1) * "device serial number as provisioned, 1-32 characters",
    "vendor" / Text(1) * "manufacturer name (free text)",
    "model" / Text(1) * "model name (free text)",
    "firmware" / Text(1) * "firmware version (free text, signed in AUTH)",
    "protocol_version" / U8 * "application protocol version, 1",
    "capabilities" / U32 * "bit set: 0 face, 1 card, 2 ID card, 3 fingerprint, 4 temperature, 5 door, 6 photo upload",
)
class Hello(NamedTuple):
    serial: str
    vendor: str
    model: str
    firmware: str
    protocol_version: int
    capabilities: int
    seq: int = 0


@message(
    MessageType.CHALLENGE,
    "nonce" / Bytes(16) * "random server nonce, new for every session",
    "server_time_ms" / U64 * "server clock, Unix ms UTC",
)
class Challenge(NamedTuple):
    nonce: bytes
    server_time_ms: int
    seq: int = 0


@message(
    MessageType.AUTH,
    "mac" / Bytes(32) * "HMAC-SHA256(secret, nonce ‖ serial ‖ firmware ‖ protocol_version), see Authentication",
)
class Auth(NamedTuple):
    mac: bytes
    seq: int = 0


@message(
    MessageType.AUTH_RESULT,
    "result" / U16 * "OK, or UNKNOWN_DEVICE / BAD_SIGNATURE / DEVICE_DISABLED / LOCKED_OUT / UNSUPPORTED_VERSION",
    "heartbeat_interval_s" / U16 * "seconds between HEARTBEATs; silence for 3 intervals closes the session",
    "server_time_ms" / U64 * "server clock, Unix ms UTC",
    "max_frame_size" / U32 * "largest frame the server accepts, bytes",
    "max_batch_records" / U16 * "most records the server accepts in one PUNCH_BATCH",
    # Appended under section 8's extension rules: a terminal written against the 18-byte
    # body reads the fields it knows and ignores this one.
    "retry_after_s" / U16 * "seconds to wait before reconnecting after this refusal (LOCKED_OUT: until the lock "
                            "ends); 0 = use own back-off. Appended in this edition: a reader of the older 18-byte "
                            "body ignores it",
)
class AuthResult(NamedTuple):
    result: int
    heartbeat_interval_s: int
    server_time_ms: int
    max_frame_size: int
    max_batch_records: int
    retry_after_s: int = 0
    seq: int = 0


@message(
    MessageType.HEARTBEAT,
    "device_time_ms" / U64 * "terminal clock, Unix ms UTC",
    "pending_records" / U32 * "punches stored on the terminal and not yet acknowledged",
    "pending_photos" / U32 * "photos stored on the terminal and not yet uploaded",
)
class Heartbeat(NamedTuple):
    device_time_ms: int
    pending_records: int
    pending_photos: int
    seq: int = 0


@message(
    MessageType.GOODBYE,
    "reason" / U16 * "result code: SHUTTING_DOWN, TAKEOVER, HEARTBEAT_TIMEOUT, TOO_MANY_ERRORS, …; from a "
                     "terminal: TERMINAL_LEAVING",
    "reconnect_after_s" / U16 * "seconds to wait before reconnecting; 0 = use own backoff",
)
class Goodbye(NamedTuple):
    reason: int
    reconnect_after_s: int
    seq: int = 0


@message(
    MessageType.TIME_SYNC_REQUEST,
    "device_time_ms" / U64 * "terminal clock when sent (t1), Unix ms UTC",
)
class TimeSyncRequest(NamedTuple):
    device_time_ms: int
    seq: int = 0


@message(
    MessageType.TIME_SYNC_REPLY,
    "device_time_ms" / U64 * "t1 echoed from the request",
    "server_receive_ms" / U64 * "server clock when the request arrived (t2)",
    "server_send_ms" / U64 * "server clock when this reply left (t3)",
)
class TimeSyncReply(NamedTuple):
    device_time_ms: int
    server_receive_ms: int
    server_send_ms: int
    seq: int = 0


# --- generic answers -------------------------------------------------------------------


@message(
    MessageType.ACK,
    "ref_seq" / U32 * "seq of the frame being acknowledged",
    "ref_type" / U16 * "msg_type of the frame being acknowledged",
    "server_time_ms" / U64 * "sender's clock, Unix ms UTC (lets a terminal notice drift)",
    *counted_rows("results", "result_count", U16, RECORD_RESULT, "one row per record answered (empty for non-record frames)"),
)
class Ack(NamedTuple):
    ref_seq: int
    ref_type: int
    server_time_ms: int
    results: tuple[RecordResult, ...]
    seq: int = 0


@message(
    MessageType.NACK,
    "ref_seq" / U32 * "seq of the refused frame (0 when it could not be read)",
    "ref_type" / U16 * "msg_type of the refused frame (0 when it could not be read)",
    "result" / U16 * "why (result code table)",
)
class Nack(NamedTuple):
    ref_seq: int
    ref_type: int
    result: int
    seq: int = 0


# --- uplink data -----------------------------------------------------------------------


@message(MessageType.PUNCH, *PUNCH_RECORD.subcon.subcons)
class Punch(NamedTuple):
    """One punch record on its own; the body is exactly the punch record's fields.

    Flat rather than wrapping a PunchRecord: the hot path builds one object per frame
    instead of two. `record` gives the PunchRecord view; `Punch.of(record, seq)` builds one.
    """

    record_no: int
    punch_time_ms: int
    worker_id: str
    direction: int
    verify_mode: int
    temperature_dc: int
    photo_size: int
    photo_sha256: bytes
    seq: int = 0

    @property
    def record(self) -> PunchRecord:
        return PunchRecord._make(self[:-1])

    @classmethod
    def of(cls, record: PunchRecord, seq: int = 0) -> "Punch":
        return cls(*record, seq)


@message(
    MessageType.PUNCH_BATCH,
    *sized_rows("records", "record_count", "record_size", PUNCH_RECORD, "punch records (table: punch record)"),
)
class PunchBatch(NamedTuple):
    records: tuple[PunchRecord, ...]
    seq: int = 0


@message(
    MessageType.PHOTO_CHUNK,
    "record_no" / U32 * "punch record the photo belongs to",
    "photo_sha256" / Bytes(32) * "SHA-256 of the whole photo (as in the punch record)",
    "total_size" / U32 * "size of the whole photo, bytes",
    "offset" / U32 * "where this chunk starts in the photo, bytes",
    "data" / Blob() * "chunk bytes (u16 length + bytes); any length that keeps the frame within the maximum "
                      "frame size (section 6.5)",
)
class PhotoChunk(NamedTuple):
    record_no: int
    photo_sha256: bytes
    total_size: int
    offset: int
    data: bytes
    seq: int = 0


@message(
    MessageType.PHOTO_QUERY,
    "record_no" / U32 * "punch record the photo belongs to",
    "photo_sha256" / Bytes(32) * "SHA-256 of the whole photo",
    "total_size" / U32 * "size of the whole photo, bytes",
)
class PhotoQuery(NamedTuple):
    record_no: int
    photo_sha256: bytes
    total_size: int
    seq: int = 0


@message(
    MessageType.PHOTO_STATUS,
    "photo_sha256" / Bytes(32) * "which photo",
    "result" / U16 * "OK, PHOTO_OFFSET_MISMATCH, PHOTO_HASH_MISMATCH, PHOTO_TOO_LARGE, STORE_UNAVAILABLE",
    "next_offset" / U32 * "bytes the server holds contiguously; send from here (= total_size when complete)",
)
class PhotoStatus(NamedTuple):
    photo_sha256: bytes
    result: int
    next_offset: int
    seq: int = 0


@message(
    MessageType.DEVICE_STATUS,
    "uptime_s" / U32 * "seconds since the terminal started",
    "storage_free_kib" / U32 * "free local storage, KiB",
    "pending_records" / U32 * "punches not yet acknowledged",
    "pending_photos" / U32 * "photos not yet uploaded",
    "roster_version" / U32 * "roster version the terminal holds",
    "roster_count" / U32 * "workers on the terminal's roster",
    "door_state" / U8 * "0 closed, 1 open, 2 unknown",
    "tamper" / U8 * "0 normal, 1 tamper switch open",
    "board_temp_dc" / I16 * "board temperature, 0.1 °C, signed",
)
class DeviceStatus(NamedTuple):
    uptime_s: int
    storage_free_kib: int
    pending_records: int
    pending_photos: int
    roster_version: int
    roster_count: int
    door_state: int
    tamper: int
    board_temp_dc: int
    seq: int = 0


# --- downlink commands and their replies -----------------------------------------------

_WORKER_FIELDS = (
    "roster_version" / U32 * "roster version after this change",
    "worker_id" / FixedText(18) * "resident ID number (GB 11643)",
    "name" / Text(1) * "worker name, UTF-8",
    "card_no" / Text(1) * "IC card number, empty when none",
    "role" / U8 * "1 worker, 2 on-site manager (现场管理人员)",
    "face_size" / U32 * "size of the face photo sent in FACE_CHUNKs, bytes; 0 = none",
    "face_sha256" / Bytes(32) * "SHA-256 of the face photo; zeros when none",
)


@message(MessageType.ROSTER_ADD, *_WORKER_FIELDS)
class RosterAdd(NamedTuple):
    roster_version: int
    worker_id: str
    name: str
    card_no: str
    role: int
    face_size: int
    face_sha256: bytes
    seq: int = 0


@message(MessageType.ROSTER_UPDATE, *_WORKER_FIELDS)
class RosterUpdate(NamedTuple):
    roster_version: int
    worker_id: str
    name: str
    card_no: str
    role: int
    face_size: int
    face_sha256: bytes
    seq: int = 0


@message(
    MessageType.ROSTER_REMOVE,
    "roster_version" / U32 * "roster version after this change",
    "worker_id" / FixedText(18) * "resident ID number to remove",
)
class RosterRemove(NamedTuple):
    roster_version: int
    worker_id: str
    seq: int = 0


@message(
    MessageType.FACE_CHUNK,
    "face_sha256" / Bytes(32) * "SHA-256 of the whole face photo (as in ROSTER_ADD/UPDATE)",
    "total_size" / U32 * "size of the whole photo, bytes",
    "offset" / U32 * "where this chunk starts, bytes",
    "data" / Blob() * "chunk bytes (u16 length + bytes)",
)
class FaceChunk(NamedTuple):
    face_sha256: bytes
    total_size: int
    offset: int
    data: bytes
    seq: int = 0


@message(MessageType.ROSTER_VERSION_QUERY)
class RosterVersionQuery(NamedTuple):
    seq: int = 0


@message(
    MessageType.ROSTER_VERSION_REPLY,
    "ref_seq" / U32 * "seq of the ROSTER_VERSION_QUERY",
    "roster_version" / U32 * "roster version the terminal holds",
    "worker_count" / U32 * "workers on the roster",
)
class RosterVersionReply(NamedTuple):
    ref_seq: int
    roster_version: int
    worker_count: int
    seq: int = 0


@message(MessageType.SET_TIME, "server_time_ms" / U64 * "set the terminal clock to this, Unix ms UTC")
class SetTime(NamedTuple):
    server_time_ms: int
    seq: int = 0


@message(MessageType.CONFIG_GET, *counted_rows("keys", "key_count", U8, CONFIG_KEY, "keys to read"))
class ConfigGet(NamedTuple):
    keys: tuple[ConfigKey, ...]
    seq: int = 0


@message(
    MessageType.CONFIG_REPLY,
    "ref_seq" / U32 * "seq of the CONFIG_GET",
    *counted_rows("entries", "entry_count", U8, CONFIG_ENTRY, "keys and their values; unknown keys are left out"),
)
class ConfigReply(NamedTuple):
    ref_seq: int
    entries: tuple[ConfigEntry, ...]
    seq: int = 0


@message(MessageType.CONFIG_SET, *counted_rows("entries", "entry_count", U8, CONFIG_ENTRY, "keys and the values to set"))
class ConfigSet(NamedTuple):
    entries: tuple[ConfigEntry, ...]
    seq: int = 0


@message(MessageType.REBOOT, "delay_s" / U16 * "seconds to wait before restarting")
class Reboot(NamedTuple):
    delay_s: int
    seq: int = 0


@message(
    MessageType.DOOR_OPEN,
    "door" / U8 * "door or lane number, from 1",
    "duration_s" / U16 * "seconds to keep it open",
)
class DoorOpen(NamedTuple):
    door: int
    duration_s: int
    seq: int = 0


#: What `from lmg.protocol.messages import *` gives (lmg.protocol re-exports it). Written
#: out, in registration order, so the type checker sees it; the check below fails at import
#: when a registered class is missing.
__all__ = [
    # session
    "Hello", "Challenge", "Auth", "AuthResult", "Heartbeat", "Goodbye", "TimeSyncRequest", "TimeSyncReply",
    # generic answers
    "Ack", "Nack",
    # uplink data
    "Punch", "PunchBatch", "PhotoChunk", "PhotoQuery", "PhotoStatus", "DeviceStatus",
    # downlink commands and their replies
    "RosterAdd", "RosterUpdate", "RosterRemove", "FaceChunk", "RosterVersionQuery", "RosterVersionReply",
    "SetTime", "ConfigGet", "ConfigReply", "ConfigSet", "Reboot", "DoorOpen",
    # rows and tables
    "PunchRecord", "RecordResult", "ConfigEntry", "ConfigKey", "MESSAGE_CLASSES", "BODY_SCHEMAS",
    "PUNCH_RECORD_SIZE",
]


def _check_every_type_has_a_class() -> None:
    missing = [t.name for t in MessageType if int(t) not in MESSAGE_CLASSES]
    if missing:
        raise TypeError(f"message types without a class: {missing}")
    unexported = [cls.__name__ for cls in MESSAGE_CLASSES.values() if cls.__name__ not in __all__]
    if unexported:
        raise TypeError(f"message classes missing from __all__: {unexported}")


_check_every_type_has_a_class()
