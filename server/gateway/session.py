"""One terminal session as a sans-I/O state machine: frames and results in, actions out.

The asyncio glue (`lmg.server.gateway.link`) feeds it decoded items from the `FrameDecoder`,
the answers of the store, and the clock; it returns `Action`s for the glue to carry out
(send a message, load a device, store punches, close). Nothing here awaits, reads a
clock or touches a socket, so every rule is tested without sockets
(tests/server/test_session.py).

States (the table `TRANSITIONS` is the whole of what is allowed):

    AWAIT_HELLO --HELLO--> AWAIT_DEVICE --device loaded, ok--> AWAIT_AUTH --AUTH ok--> AUTHENTICATED
                              |                                   |
                              +-- unknown/disabled/locked --------+-- bad mac ---------> CLOSED
    any state --GOODBYE / fatal frame error / deadline / takeover / shutdown--> CLOSED

A message that is valid but not in the table for the current state is handled in one
place (`_unexpected`): NACK AUTH_REQUIRED before authentication, NACK UNEXPECTED_MESSAGE
after. While an action that needs an answer is outstanding (device lookup, store, photo),
the glue holds further frames back, so answers go out in the order frames came in.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import NamedTuple

from lmg.protocol import (
    Ack,
    Auth,
    AuthResult,
    Challenge,
    DeviceStatus,
    Goodbye,
    Heartbeat,
    Hello,
    MessageType,
    Nack,
    PhotoChunk,
    PhotoQuery,
    PhotoStatus,
    ProtocolError,
    Punch,
    PunchBatch,
    PunchRecord,
    RecordResult,
    ResultCode,
    TimeSyncReply,
    TimeSyncRequest,
)
from lmg.protocol.auth import verify_auth
from lmg.protocol.codes import Direction, VerifyMode
from lmg.protocol.identity import is_valid_id_number
from lmg.protocol.schema import MAX_FRAME_SIZE, PROTOCOL_VERSION

SEQ_MASK = 0xFFFFFFFF


class State(enum.Enum):
    AWAIT_HELLO = "await_hello"
    AWAIT_DEVICE = "await_device"
    AWAIT_AUTH = "await_auth"
    AUTHENTICATED = "authenticated"
    CLOSED = "closed"


@dataclass(frozen=True)
class SessionLimits:
    """Per-session rules, with the defaults docs/protocol.md promises terminals."""

    auth_timeout_ms: int = 10_000  # HELLO..AUTH_RESULT; a real terminal needs < 1 s on a slow link
    heartbeat_interval_s: int = 30  # told to the device in AUTH_RESULT
    heartbeat_misses: int = 3  # silence for this many intervals closes the session
    max_frame_size: int = MAX_FRAME_SIZE
    max_batch_records: int = 500  # 500 x 70 B = 35 KB, well inside a 64 KiB frame
    max_future_skew_ms: int = 5 * 60_000  # a punch ahead of our clock by more is refused
    max_punch_age_ms: int = 30 * 86_400_000  # backlogs after a long outage can be weeks old
    malformed_limit: int = 20  # malformed frames tolerated per window before closing
    malformed_window_ms: int = 60_000
    goodbye_reconnect_s: int = 5  # told to terminals when the server shuts down
    min_temperature_dc: int = 300  # 30.0 °C
    max_temperature_dc: int = 450  # 45.0 °C


# --- actions: what the glue must do ----------------------------------------------------


class Send(NamedTuple):
    message: object  # a protocol message with its seq already assigned


class Close(NamedTuple):
    reason: ResultCode
    detail: str  # for logs only; the peer never sees it


class LoadDevice(NamedTuple):
    """Look the serial up (and check lockouts); answer with `Session.device_loaded`."""

    serial: str


class AuthFailed(NamedTuple):
    """For the audit log and the lockout guard."""

    serial: str
    reason: ResultCode


class Authenticated(NamedTuple):
    """The glue registers the session (closing an older one: takeover) and marks it online."""

    serial: str
    firmware: str


class StorePunches(NamedTuple):
    """Store these records durably, then call `Session.punches_stored` or `store_failed`."""

    ref_seq: int
    ref_type: int
    records: tuple  # of (PunchRecord, reject_reason: ResultCode | None)


class AppendPhoto(NamedTuple):
    """Apply a photo chunk; answer with `Session.photo_result`."""

    chunk: PhotoChunk


class QueryPhoto(NamedTuple):
    query: PhotoQuery


class StatusReported(NamedTuple):
    status: DeviceStatus


class DeviceView(NamedTuple):
    """What the session needs of a provisioned device."""

    serial: str
    secret: bytes
    enabled: bool


# --- the machine -----------------------------------------------------------------------


def _validate(record: PunchRecord, now_ms: int, limits: SessionLimits) -> ResultCode | None:
    """The reason a record must be refused, or None. Checked in the order the doc lists."""
    if not is_valid_id_number(record.worker_id):
        return ResultCode.INVALID_WORKER_ID
    if record.punch_time_ms > now_ms + limits.max_future_skew_ms:
        return ResultCode.TIME_IN_FUTURE
    if record.punch_time_ms < now_ms - limits.max_punch_age_ms:
        return ResultCode.TIME_TOO_OLD
    if record.direction not in _DIRECTIONS:
        return ResultCode.INVALID_DIRECTION
    if record.verify_mode not in _VERIFY_MODES:
        return ResultCode.INVALID_VERIFY_MODE
    t = record.temperature_dc
    if t and not limits.min_temperature_dc <= t <= limits.max_temperature_dc:
        return ResultCode.INVALID_TEMPERATURE
    return None


_DIRECTIONS = frozenset(int(d) for d in Direction)
_VERIFY_MODES = frozenset(int(v) for v in VerifyMode)


@dataclass
class Session:
    """State of one connection. `nonce` is 16 random bytes chosen by the glue."""

    peer: str
    nonce: bytes
    connected_ms: int
    limits: SessionLimits = field(default_factory=SessionLimits)
    state: State = State.AWAIT_HELLO
    hello: Hello | None = None
    device: DeviceView | None = None
    last_heard_ms: int = 0
    out_seq: int = 0
    malformed: list = field(default_factory=list)  # times (ms) of recent malformed frames
    close_reason: ResultCode | None = None

    def __post_init__(self) -> None:
        self.last_heard_ms = self.connected_ms

    # -- time ---------------------------------------------------------------------------
    @property
    def serial(self) -> str | None:
        return self.hello.serial if self.hello else None

    def deadline_ms(self) -> int:
        """When `tick` must next be called: end of the auth window or of the heartbeat grace."""
        if self.state is State.AUTHENTICATED:
            return self.last_heard_ms + self.limits.heartbeat_interval_s * 1000 * self.limits.heartbeat_misses
        return self.connected_ms + self.limits.auth_timeout_ms

    def tick(self, now_ms: int) -> list:
        if self.state is State.CLOSED or now_ms < self.deadline_ms():
            return []
        if self.state is State.AUTHENTICATED:
            return self._goodbye(ResultCode.HEARTBEAT_TIMEOUT, f"silent since {self.last_heard_ms}")
        return self._goodbye(ResultCode.AUTH_TIMEOUT, "authentication not completed in time")

    # -- input --------------------------------------------------------------------------
    def receive(self, item, now_ms: int) -> list:
        """Handle one item from the decoder: a message or a ProtocolError value."""
        if self.state is State.CLOSED:
            return []
        self.last_heard_ms = now_ms
        if isinstance(item, ProtocolError):
            return self._frame_error(item, now_ms)
        handler = TRANSITIONS.get((self.state, item.msg_type))
        if handler is None:
            return self._unexpected(item)
        return handler(self, item, now_ms)

    def stores(self, item) -> bool:
        """True when `receive(item)` would return exactly one StorePunches and nothing else.

        The glue gathers such items into one store call; any other item must wait until
        the answers before it were sent, because `receive` numbers its answers at once.
        """
        if self.state is not State.AUTHENTICATED:
            return False
        kind = type(item)
        return kind is Punch or (kind is PunchBatch and 0 < len(item.records) <= self.limits.max_batch_records)

    def device_loaded(self, device: DeviceView | None, locked_out: bool, now_ms: int) -> list:
        """Answer to LoadDevice: the device (None if unknown) and whether it is locked out."""
        if self.state is not State.AWAIT_DEVICE:
            return []
        if locked_out:
            return self._refuse(ResultCode.LOCKED_OUT, now_ms)
        if device is None:
            return self._refuse(ResultCode.UNKNOWN_DEVICE, now_ms)
        if not device.enabled:
            return self._refuse(ResultCode.DEVICE_DISABLED, now_ms)
        self.device = device
        self.state = State.AWAIT_AUTH
        return [self._send(Challenge(self.nonce, now_ms))]

    def punches_stored(self, request: StorePunches, results: list, now_ms: int) -> list:
        """Answer to StorePunches: one result code (ResultCode or its int) per record, in
        order (OK, DUPLICATE, a rejection)."""
        rows = tuple([tuple.__new__(RecordResult, (rec.record_no, code)) for (rec, _), code in zip(request.records, results)])
        return [self._send(Ack(request.ref_seq, request.ref_type, now_ms, rows))]

    def store_failed(self, request: StorePunches) -> list:
        """The store could not commit: nothing is acknowledged, the device resends later."""
        return [self._send(Nack(request.ref_seq, request.ref_type, ResultCode.STORE_UNAVAILABLE))]

    def photo_result(self, sha256: bytes, result: ResultCode, next_offset: int) -> list:
        return [self._send(PhotoStatus(sha256, int(result), next_offset))]

    def taken_over(self) -> list:
        """A newer session of the same device authenticated: this one ends."""
        return self._goodbye(ResultCode.TAKEOVER, "a newer session of this device authenticated")

    def shutdown(self) -> list:
        return self._goodbye(ResultCode.SHUTTING_DOWN, "server shutting down")

    def too_slow_reader(self) -> list:
        """The glue found the peer not reading its answers (send buffer over its limit)."""
        return self._close(ResultCode.SERVER_BUSY, "peer does not read; unsent output over the limit")

    # -- handlers (the table) -------------------------------------------------------------
    def _on_hello(self, hello: Hello, now_ms: int) -> list:
        self.hello = hello
        if hello.protocol_version != PROTOCOL_VERSION:
            return self._refuse(ResultCode.UNSUPPORTED_VERSION, now_ms)
        self.state = State.AWAIT_DEVICE
        return [LoadDevice(hello.serial)]

    def _on_auth(self, auth: Auth, now_ms: int) -> list:
        assert self.device is not None and self.hello is not None
        if not verify_auth(self.device.secret, self.nonce, self.hello, auth.mac):
            return self._refuse(ResultCode.BAD_SIGNATURE, now_ms)
        self.state = State.AUTHENTICATED
        limits = self.limits
        return [
            self._send(
                AuthResult(ResultCode.OK, limits.heartbeat_interval_s, now_ms, limits.max_frame_size, limits.max_batch_records)
            ),
            Authenticated(self.hello.serial, self.hello.firmware),
        ]

    def _on_heartbeat(self, heartbeat: Heartbeat, now_ms: int) -> list:
        return [self._send(Ack(heartbeat.seq, MessageType.HEARTBEAT, now_ms, ()))]

    def _on_time_sync(self, request: TimeSyncRequest, now_ms: int) -> list:
        return [self._send(TimeSyncReply(request.device_time_ms, now_ms, now_ms))]

    def _on_punch(self, punch: Punch, now_ms: int) -> list:
        record = punch.record
        return [StorePunches(punch.seq, MessageType.PUNCH, ((record, _validate(record, now_ms, self.limits)),))]

    def _on_batch(self, batch: PunchBatch, now_ms: int) -> list:
        if len(batch.records) > self.limits.max_batch_records:
            return [self._send(Nack(batch.seq, MessageType.PUNCH_BATCH, ResultCode.BATCH_TOO_LARGE))]
        if not batch.records:
            return [self._send(Ack(batch.seq, MessageType.PUNCH_BATCH, now_ms, ()))]
        limits = self.limits
        return [
            StorePunches(batch.seq, MessageType.PUNCH_BATCH, tuple((r, _validate(r, now_ms, limits)) for r in batch.records))
        ]

    def _on_photo_chunk(self, chunk: PhotoChunk, now_ms: int) -> list:
        return [AppendPhoto(chunk)]

    def _on_photo_query(self, query: PhotoQuery, now_ms: int) -> list:
        return [QueryPhoto(query)]

    def _on_status(self, status: DeviceStatus, now_ms: int) -> list:
        return [StatusReported(status), self._send(Ack(status.seq, MessageType.DEVICE_STATUS, now_ms, ()))]

    def _on_device_answer(self, answer, now_ms: int) -> list:
        return []  # answers to downlink commands; command delivery is not part of this server yet

    def _on_goodbye(self, goodbye: Goodbye, now_ms: int) -> list:
        return self._close(ResultCode(goodbye.reason) if goodbye.reason in _RESULT_VALUES else ResultCode.OK, "device said goodbye")

    # -- the one place for everything not in the table ---------------------------------
    def _unexpected(self, message) -> list:
        code = ResultCode.AUTH_REQUIRED if self.state is not State.AUTHENTICATED else ResultCode.UNEXPECTED_MESSAGE
        return [self._send(Nack(message.seq, message.msg_type, code))]

    def _frame_error(self, error: ProtocolError, now_ms: int) -> list:
        actions = [self._send(Nack(error.seq or 0, error.msg_type or 0, error.result_code))]
        if error.fatal:
            return actions + self._close(error.result_code, str(error))
        if error.result_code is ResultCode.UNSUPPORTED_MESSAGE:
            return actions  # extension rule: never a reason to disconnect
        window_start = now_ms - self.limits.malformed_window_ms
        self.malformed = [t for t in self.malformed if t > window_start] + [now_ms]
        if len(self.malformed) > self.limits.malformed_limit:
            return actions + self._goodbye(ResultCode.TOO_MANY_ERRORS, f"{len(self.malformed)} malformed frames")
        return actions

    # -- output helpers ---------------------------------------------------------------
    def _send(self, message) -> Send:
        self.out_seq = seq = (self.out_seq + 1) & SEQ_MASK
        # seq is every message's last field; tuple.__new__ skips _replace's generic path
        # (a third of the cost of answering a punch).
        return Send(tuple.__new__(type(message), message[:-1] + (seq,)))

    def _refuse(self, reason: ResultCode, now_ms: int) -> list:
        serial = self.hello.serial if self.hello else ""
        actions = [self._send(AuthResult(reason, 0, now_ms, self.limits.max_frame_size, 0))]
        if reason is not ResultCode.UNSUPPORTED_VERSION:
            actions.append(AuthFailed(serial, reason))
        return actions + self._close(reason, f"authentication refused: {reason.name}")

    def _goodbye(self, reason: ResultCode, detail: str) -> list:
        if self.state is State.CLOSED:
            return []
        reconnect = self.limits.goodbye_reconnect_s if reason is ResultCode.SHUTTING_DOWN else 0
        return [self._send(Goodbye(reason, reconnect))] + self._close(reason, detail)

    def _close(self, reason: ResultCode, detail: str) -> list:
        if self.state is State.CLOSED:
            return []
        self.state = State.CLOSED
        self.close_reason = reason
        return [Close(reason, detail)]


_RESULT_VALUES = frozenset(int(c) for c in ResultCode)

_A = State.AUTHENTICATED
TRANSITIONS = {
    (State.AWAIT_HELLO, MessageType.HELLO): Session._on_hello,
    (State.AWAIT_AUTH, MessageType.AUTH): Session._on_auth,
    (_A, MessageType.HEARTBEAT): Session._on_heartbeat,
    (_A, MessageType.TIME_SYNC_REQUEST): Session._on_time_sync,
    (_A, MessageType.PUNCH): Session._on_punch,
    (_A, MessageType.PUNCH_BATCH): Session._on_batch,
    (_A, MessageType.PHOTO_CHUNK): Session._on_photo_chunk,
    (_A, MessageType.PHOTO_QUERY): Session._on_photo_query,
    (_A, MessageType.DEVICE_STATUS): Session._on_status,
    (_A, MessageType.ACK): Session._on_device_answer,
    (_A, MessageType.NACK): Session._on_device_answer,
    (_A, MessageType.ROSTER_VERSION_REPLY): Session._on_device_answer,
    (_A, MessageType.CONFIG_REPLY): Session._on_device_answer,
    **{(state, MessageType.GOODBYE): Session._on_goodbye for state in State if state is not State.CLOSED},
}
