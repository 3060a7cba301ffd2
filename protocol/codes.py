"""Code tables of the terminal protocol: message types, result codes and field enums.

This is the one place these numbers live. `docs/protocol.md` carries the same tables,
and `tests/protocol/test_doc.py` fails when the two disagree. Each member's docstring-like
description (the `describe` tables below) is what the doc shows.
"""

from __future__ import annotations

from enum import IntEnum, IntFlag


class MessageType(IntEnum):
    """Frame header `msg_type` (u16). 0x00xx session, 0x01xx uplink data, 0x02xx commands."""

    HELLO = 0x0001
    CHALLENGE = 0x0002
    AUTH = 0x0003
    AUTH_RESULT = 0x0004
    HEARTBEAT = 0x0005
    GOODBYE = 0x0006
    TIME_SYNC_REQUEST = 0x0007
    TIME_SYNC_REPLY = 0x0008
    ACK = 0x0010
    NACK = 0x0011
    PUNCH = 0x0101
    PUNCH_BATCH = 0x0102
    PHOTO_CHUNK = 0x0103
    PHOTO_QUERY = 0x0104
    PHOTO_STATUS = 0x0105
    DEVICE_STATUS = 0x0106
    ROSTER_ADD = 0x0201
    ROSTER_UPDATE = 0x0202
    ROSTER_REMOVE = 0x0203
    FACE_CHUNK = 0x0204
    ROSTER_VERSION_QUERY = 0x0205
    ROSTER_VERSION_REPLY = 0x0206
    SET_TIME = 0x0207
    CONFIG_GET = 0x0208
    CONFIG_REPLY = 0x0209
    CONFIG_SET = 0x020A
    REBOOT = 0x020B
    DOOR_OPEN = 0x020C


class ResultCode(IntEnum):
    """Result and reason codes (u16) used in ACK records, NACK, AUTH_RESULT, GOODBYE."""

    OK = 0x0000
    DUPLICATE = 0x0001
    # authentication
    UNKNOWN_DEVICE = 0x0010
    BAD_SIGNATURE = 0x0011
    DEVICE_DISABLED = 0x0012
    LOCKED_OUT = 0x0013
    AUTH_REQUIRED = 0x0014
    AUTH_TIMEOUT = 0x0015
    UNSUPPORTED_VERSION = 0x0016
    # record validation
    INVALID_WORKER_ID = 0x0020
    TIME_IN_FUTURE = 0x0021
    TIME_TOO_OLD = 0x0022
    INVALID_DIRECTION = 0x0023
    INVALID_VERIFY_MODE = 0x0024
    INVALID_TEMPERATURE = 0x0025
    PHOTO_HASH_MISMATCH = 0x0026
    PHOTO_OFFSET_MISMATCH = 0x0027
    PHOTO_TOO_LARGE = 0x0028
    BATCH_TOO_LARGE = 0x0029
    PHOTO_NOT_ANNOUNCED = 0x002A
    PHOTO_UPLOADS_BUSY = 0x002B
    # framing and session
    UNSUPPORTED_MESSAGE = 0x0030
    MALFORMED_BODY = 0x0031
    FRAME_TOO_LARGE = 0x0032
    BAD_CHECKSUM = 0x0033
    RATE_LIMITED = 0x0034
    UNEXPECTED_MESSAGE = 0x0035
    # server side
    STORE_UNAVAILABLE = 0x0040
    SERVER_BUSY = 0x0041
    SHUTTING_DOWN = 0x0042
    # session end reasons (GOODBYE)
    TAKEOVER = 0x0050
    HEARTBEAT_TIMEOUT = 0x0051
    TOO_MANY_ERRORS = 0x0052
    CREDENTIALS_CHANGED = 0x0053
    CLOSED_BY_OPERATOR = 0x0054
    TERMINAL_LEAVING = 0x0055
    # device answers to commands
    COMMAND_FAILED = 0x0060
    UNKNOWN_WORKER = 0x0061
    DEVICE_STORAGE_FULL = 0x0062
    UNKNOWN_CONFIG_KEY = 0x0063


class Direction(IntEnum):
    """PUNCH `direction` (u8): which way the worker passed."""

    IN = 1
    OUT = 2


class VerifyMode(IntEnum):
    """PUNCH `verify_mode` (u8): how the terminal identified the worker."""

    FACE = 1
    CARD = 2
    ID_CARD = 3
    FINGERPRINT = 4


class WorkerRole(IntEnum):
    """ROSTER_ADD/UPDATE `role` (u8)."""

    WORKER = 1
    MANAGER = 2  # 现场管理人员: their attendance drives the tiered warnings


class Capability(IntFlag):
    """HELLO `capabilities` (u32 bit set): what the terminal can do."""

    FACE = 1 << 0
    CARD = 1 << 1
    ID_CARD = 1 << 2
    FINGERPRINT = 1 << 3
    TEMPERATURE = 1 << 4
    DOOR = 1 << 5
    PHOTO_UPLOAD = 1 << 6


class FrameFlag(IntFlag):
    """Frame header `flags` (u8). Senders set unknown bits to 0; receivers ignore them."""

    REPLY = 1 << 0  # the frame answers a request of the peer (informative)


MESSAGE_DESCRIPTIONS: dict[MessageType, tuple[str, str]] = {
    # type: (direction, meaning)
    MessageType.HELLO: ("T→S", "first frame of a session: who the terminal is; asks for a challenge"),
    MessageType.CHALLENGE: ("S→T", "server nonce the terminal must sign"),
    MessageType.AUTH: ("T→S", "HMAC-SHA256 answer to the challenge"),
    MessageType.AUTH_RESULT: ("S→T", "outcome of authentication and the session parameters"),
    MessageType.HEARTBEAT: ("T→S", "keeps the session alive; answered by ACK"),
    MessageType.GOODBYE: ("both", "the sender is closing the session, with a reason"),
    MessageType.TIME_SYNC_REQUEST: ("T→S", "terminal asks for the server time"),
    MessageType.TIME_SYNC_REPLY: ("S→T", "server time for the terminal's clock (NTP-style)"),
    MessageType.ACK: ("both", "positive answer, with per-record results"),
    MessageType.NACK: ("both", "negative answer to a whole frame, with a result code"),
    MessageType.PUNCH: ("T→S", "one attendance record; answered by ACK"),
    MessageType.PUNCH_BATCH: ("T→S", "many attendance records (offline backlog); answered by ACK"),
    MessageType.PHOTO_CHUNK: ("T→S", "a piece of a punch's face snapshot; answered by PHOTO_STATUS"),
    MessageType.PHOTO_QUERY: ("T→S", "where to resume a photo upload; answered by PHOTO_STATUS"),
    MessageType.PHOTO_STATUS: ("S→T", "how much of a photo the server holds"),
    MessageType.DEVICE_STATUS: ("T→S", "terminal health and counters; answered by ACK"),
    MessageType.ROSTER_ADD: ("S→T", "add a worker to the terminal's roster"),
    MessageType.ROSTER_UPDATE: ("S→T", "change a worker already on the roster"),
    MessageType.ROSTER_REMOVE: ("S→T", "remove a worker from the roster"),
    MessageType.FACE_CHUNK: ("S→T", "a piece of a worker's face photo"),
    MessageType.ROSTER_VERSION_QUERY: ("S→T", "ask which roster version the terminal holds"),
    MessageType.ROSTER_VERSION_REPLY: ("T→S", "the terminal's roster version and size"),
    MessageType.SET_TIME: ("S→T", "set the terminal clock"),
    MessageType.CONFIG_GET: ("S→T", "read configuration keys"),
    MessageType.CONFIG_REPLY: ("T→S", "configuration values"),
    MessageType.CONFIG_SET: ("S→T", "write configuration keys"),
    MessageType.REBOOT: ("S→T", "restart the terminal"),
    MessageType.DOOR_OPEN: ("S→T", "open a door or turnstile remotely"),
}

RESULT_DESCRIPTIONS: dict[ResultCode, str] = {
    ResultCode.OK: "accepted (stored, for records)",
    ResultCode.DUPLICATE: "record already stored earlier: treat as acknowledged, stop resending",
    ResultCode.UNKNOWN_DEVICE: "serial not provisioned on this platform; session closed",
    ResultCode.BAD_SIGNATURE: "AUTH mac does not match; session closed",
    ResultCode.DEVICE_DISABLED: "device disabled by an operator; session closed",
    ResultCode.LOCKED_OUT: "too many failed authentications; retry after the lockout window",
    ResultCode.AUTH_REQUIRED: "message not allowed before authentication",
    ResultCode.AUTH_TIMEOUT: "authentication not completed in time; session closed",
    ResultCode.UNSUPPORTED_VERSION: "frame or protocol version not supported",
    ResultCode.INVALID_WORKER_ID: "worker ID is not an 18-character ID number with a valid GB 11643 check digit",
    ResultCode.TIME_IN_FUTURE: "punch time ahead of the server clock by more than the allowed skew",
    ResultCode.TIME_TOO_OLD: "punch time older than the accepted backlog age",
    ResultCode.INVALID_DIRECTION: "direction is not 1 (in) or 2 (out)",
    ResultCode.INVALID_VERIFY_MODE: "verify_mode is not one of the listed modes",
    ResultCode.INVALID_TEMPERATURE: "temperature outside 30.0–45.0 °C (and not 0 = not measured)",
    ResultCode.PHOTO_HASH_MISMATCH: "assembled photo does not match its SHA-256; upload again from offset 0",
    ResultCode.PHOTO_OFFSET_MISMATCH: "chunk offset is not where the server expects; resume at next_offset",
    ResultCode.PHOTO_TOO_LARGE: "photo larger than the server accepts (2 MiB by default): as a record's result, "
                                "the punch is refused; for a chunk or query, do not upload that photo",
    ResultCode.BATCH_TOO_LARGE: "more records in one PUNCH_BATCH than the session allows",
    ResultCode.PHOTO_NOT_ANNOUNCED: "no acknowledged punch of this device announces this photo (record_no, "
                                    "photo_sha256 and total_size must match its photo fields); do not upload it",
    ResultCode.PHOTO_UPLOADS_BUSY: "the device has too many photo uploads in progress; finish one, then resend",
    ResultCode.UNSUPPORTED_MESSAGE: "message type unknown to the receiver (not fatal)",
    ResultCode.MALFORMED_BODY: "body shorter than its fields or with invalid text encoding",
    ResultCode.FRAME_TOO_LARGE: "declared body length above the maximum frame size; session closed",
    ResultCode.BAD_CHECKSUM: "frame checksum wrong; resend the frame",
    ResultCode.RATE_LIMITED: "new connections arrive faster than the server's accept rate (GOODBYE before HELLO); "
                             "reconnect after reconnect_after_s",
    ResultCode.UNEXPECTED_MESSAGE: "message valid but not expected in this session state",
    ResultCode.STORE_UNAVAILABLE: "server could not store the records now; resend later",
    ResultCode.SERVER_BUSY: "server overloaded; reconnect later",
    ResultCode.SHUTTING_DOWN: "server is going away; reconnect later",
    ResultCode.TAKEOVER: "a newer session of the same device replaced this one",
    ResultCode.HEARTBEAT_TIMEOUT: "nothing received for 3 heartbeat intervals",
    ResultCode.TOO_MANY_ERRORS: "too many malformed frames in this session",
    ResultCode.CREDENTIALS_CHANGED: "the device's secret was rotated; reconnect with the new secret",
    ResultCode.CLOSED_BY_OPERATOR: "an operator closed the session; reconnect when ready",
    ResultCode.TERMINAL_LEAVING: "GOODBYE from a terminal: it is closing the session itself (restart, power-down, "
                                 "new settings); the server answers nothing and closes",
    ResultCode.COMMAND_FAILED: "terminal could not carry out the command",
    ResultCode.UNKNOWN_WORKER: "worker not on the terminal's roster",
    ResultCode.DEVICE_STORAGE_FULL: "terminal storage full",
    ResultCode.UNKNOWN_CONFIG_KEY: "configuration key unknown to the terminal",
}
