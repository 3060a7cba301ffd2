"""One terminal session as a sans-I/O state machine: frames and results in, actions out.

The asyncio glue (`lmg.server.gateway.link`) feeds it decoded items from the `FrameDecoder`,
the answers of the store, and the clock; it returns `Action`s for the glue to carry out
(send a message, load a device, store punches, close). Nothing here awaits, reads a
clock or touches a socket, so every rule is tested without sockets
(tests/server/gateway/test_session.py).

States (the table `TRANSITIONS` is the whole of what is allowed):

    AWAIT_HELLO --HELLO--> AWAIT_DEVICE --device loaded, ok--> AWAIT_AUTH --AUTH ok--> AUTHENTICATED
                              |                                   |
                              +-- unknown/disabled/locked --------+-- bad mac ---------> CLOSED
    any state --GOODBYE / fatal frame error / deadline / takeover / shutdown--> CLOSED

A message that is valid but not in the table for the current state is handled in one
place (`_unexpected`): NACK AUTH_REQUIRED before authentication, NACK UNEXPECTED_MESSAGE
after. Until authenticated, the glue's decoder takes frames of at most
`PRE_AUTH_MAX_FRAME_SIZE` (the largest HELLO) and raises it to `max_frame_size` once
`Authenticated` comes (`Session.max_frame_size` says which applies now). docs/protocol.md
section 5.1 is generated from this machine (session_doc.py). While an action that needs an answer is outstanding (device lookup, store, photo),
the glue holds further frames back, so answers go out in the order frames came in.

The downlink (server/downlink) sends commands through the session too: `send_command`
numbers a server-initiated message in the session's one outgoing sequence (only once
authenticated), and the terminal's answers to them (ACK, NACK, ROSTER_VERSION_REPLY,
CONFIG_REPLY) come back from `receive` as `DeviceAnswer` actions, which the glue hands to
the downlink: the session itself never answers an answer.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Callable, NamedTuple, Union

from lmg.protocol import (
    PUNCH_RECORD_SIZE,
    Ack,
    Auth,
    AuthResult,
    Challenge,
    ConfigReply,
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
    RosterVersionReply,
    TimeSyncReply,
    TimeSyncRequest,
    encode,
)
from lmg.protocol.auth import verify_auth
from lmg.protocol.codes import Direction, VerifyMode
from lmg.protocol.identity import is_valid_id_number
from lmg.protocol.schema import MAX_FRAME_SIZE, PROTOCOL_VERSION

# Bytes of a PUNCH_BATCH frame besides its records (header, record count, checksum): 22.
BATCH_OVERHEAD = len(encode(PunchBatch(records=())))

# The largest frame taken before AUTH_RESULT OK: the largest HELLO the schema allows (four
# str8 of 255 bytes, the version and capabilities: 1,047 bytes; AUTH is 50). A connection
# that never authenticates thus makes the server hold at most this much of a half-sent
# frame, not a whole 64 KiB one (4,900 such connections held 313 MiB before).
PRE_AUTH_MAX_FRAME_SIZE = len(encode(Hello("s" * 255, "v" * 255, "m" * 255, "f" * 255, 1, 0)))

SEQ_MASK = 0xFFFFFFFF


class State(enum.Enum):
    AWAIT_HELLO = "await_hello"
    AWAIT_DEVICE = "await_device"
    AWAIT_AUTH = "await_auth"
    AUTHENTICATED = "authenticated"
    CLOSED = "closed"


def key(default: Any, why: str) -> Any:
    """A settings key of this section: its default and the reason for it."""
    return field(default=default, metadata={"why": why})


@dataclass(frozen=True)
class SessionLimits:
    """Per-session rules, with the defaults docs/protocol.md promises terminals.

    Each field given to the constructor is a key of the gateway's settings under the same
    name (server/settings.py); its `why` is the help text. The `_ms` fields are derived
    once, here, for the session's hot path. Construction raises ValueError naming the key.
    """

    auth_timeout_s: float = key(10.0, "seconds from connecting to AUTH_RESULT; a real terminal needs < 1 s on a "
                                      "slow link")
    heartbeat_interval_s: int = key(30, "seconds between heartbeats, told to terminals in AUTH_RESULT")
    heartbeat_misses: int = key(3, "silence for this many heartbeat intervals closes a session (docs/protocol.md)")
    max_frame_size: int = key(MAX_FRAME_SIZE, "bytes of the largest frame taken, told to terminals; larger frames "
                                              "are refused (1024..16777216)")
    max_batch_records: int = key(500, "records in one PUNCH_BATCH: 500 x 70 B = 35 KB, well inside a 64 KiB frame")
    max_future_skew_s: int = key(300, "a punch ahead of the server's clock by more seconds is refused: terminal "
                                      "clocks drift, 5 min is generous for NTP-less devices")
    max_punch_age_days: int = key(30, "older punches are refused; an outage of weeks must still upload its backlog")
    malformed_limit: int = key(20, "malformed frames tolerated per malformed_window_s before a session is closed")
    malformed_window_s: int = key(60, "seconds over which malformed frames are counted")
    goodbye_reconnect_s: int = key(5, "seconds terminals are told to wait before reconnecting when the server "
                                      "shuts down")
    min_temperature_dc: int = key(300, "lowest body temperature taken, in 0.1 °C (30.0 °C); 0 means not measured")
    max_temperature_dc: int = key(450, "highest body temperature taken, in 0.1 °C (45.0 °C)")

    # Derived in __post_init__, in the session's unit (ms).
    auth_timeout_ms: int = field(init=False, repr=False)
    heartbeat_grace_ms: int = field(init=False, repr=False)
    max_future_skew_ms: int = field(init=False, repr=False)
    max_punch_age_ms: int = field(init=False, repr=False)
    malformed_window_ms: int = field(init=False, repr=False)

    def __post_init__(self) -> None:
        positive = ("auth_timeout_s", "heartbeat_interval_s", "heartbeat_misses", "max_batch_records",
                    "malformed_limit", "malformed_window_s")
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be greater than 0, got {getattr(self, name)!r}")
        if not 1024 <= self.max_frame_size <= 1 << 24:
            raise ValueError(f"max_frame_size must be between 1024 and 16777216 bytes, got {self.max_frame_size}")
        if self.max_batch_records * PUNCH_RECORD_SIZE + BATCH_OVERHEAD > self.max_frame_size:
            raise ValueError(
                f"max_batch_records = {self.max_batch_records} cannot fit in max_frame_size = {self.max_frame_size}: "
                "lower the batch size or raise the frame size"
            )
        if self.max_future_skew_s < 0 or self.max_punch_age_days < 0 or self.goodbye_reconnect_s < 0:
            raise ValueError("max_future_skew_s, max_punch_age_days and goodbye_reconnect_s must not be negative")
        if not 0 < self.min_temperature_dc <= self.max_temperature_dc:
            raise ValueError("min_temperature_dc must be above 0 and not above max_temperature_dc")
        derived = {
            "auth_timeout_ms": int(self.auth_timeout_s * 1000),
            "heartbeat_grace_ms": self.heartbeat_interval_s * 1000 * self.heartbeat_misses,
            "max_future_skew_ms": self.max_future_skew_s * 1000,
            "max_punch_age_ms": self.max_punch_age_days * 86_400_000,
            "malformed_window_ms": self.malformed_window_s * 1000,
        }
        for name, value in derived.items():
            object.__setattr__(self, name, value)


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
    records: tuple[tuple[PunchRecord, ResultCode | None], ...]  # each with the reason to refuse it, or None


class AppendPhoto(NamedTuple):
    """Apply a photo chunk; answer with `Session.photo_result`."""

    chunk: PhotoChunk


class QueryPhoto(NamedTuple):
    query: PhotoQuery


class StatusReported(NamedTuple):
    status: DeviceStatus


class DeviceAnswer(NamedTuple):
    """The terminal answered a command (ACK, NACK, ROSTER_VERSION_REPLY, CONFIG_REPLY): for the
    downlink, which matches it to the command by `ref_seq`."""

    answer: Ack | Nack | RosterVersionReply | ConfigReply


class Count(NamedTuple):
    """An event for the gateway's counters (server/metrics), e.g. photo_refused_photo_too_large."""

    name: str


# The closed set of actions: the glue handles each kind and a type checker proves it
# (server/gateway/link.py ends its dispatch with assert_never).
Action = Union[Send, Close, LoadDevice, AuthFailed, Authenticated, StorePunches, AppendPhoto, QueryPhoto,
               StatusReported, DeviceAnswer, Count]


class DeviceView(NamedTuple):
    """What the session needs of a provisioned device. Its repr (and so the session's)
    never shows the secret: a debug line printing either must not leak it."""

    serial: str
    secret: bytes
    enabled: bool

    def __repr__(self) -> str:
        return f"DeviceView(serial={self.serial!r}, secret=<hidden>, enabled={self.enabled!r})"


# --- the machine -----------------------------------------------------------------------


def _validate(record: PunchRecord, now_ms: int, limits: SessionLimits, max_photo_bytes: int) -> ResultCode | None:
    """The reason a record must be refused, or None. Checked in the order the doc lists."""
    if record.photo_size > max_photo_bytes:
        # a photo the server would refuse at its first chunk: refused here, where the
        # terminal learns it once, instead of a punch whose photo can never arrive
        return ResultCode.PHOTO_TOO_LARGE
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
    """State of one connection. `nonce` is 16 random bytes chosen by the glue.

    The glue reads the fields but never assigns them: everything that changes the state
    goes through a public method, and each returns the actions to carry out.
    """

    peer: str
    nonce: bytes
    connected_ms: int
    limits: SessionLimits = field(default_factory=SessionLimits)
    state: State = State.AWAIT_HELLO
    hello: Hello | None = None
    device: DeviceView | None = None
    last_heard_ms: int = 0
    out_seq: int = 0
    malformed: list[int] = field(default_factory=list)  # times (ms) of recent malformed frames
    close_reason: ResultCode | None = None
    max_photo_bytes: int = 2 * 1024 * 1024  # the store's photo_max_bytes (storage/config.py), given by the glue

    def __post_init__(self) -> None:
        self.last_heard_ms = self.connected_ms

    @property
    def serial(self) -> str | None:
        return self.hello.serial if self.hello else None

    @property
    def max_frame_size(self) -> int:
        """The largest frame to take from the peer now: PRE_AUTH_MAX_FRAME_SIZE until
        authenticated (only HELLO and AUTH are of use), then the session's limit. The glue
        applies it to its decoder when the state changes."""
        return self.limits.max_frame_size if self.state is State.AUTHENTICATED else PRE_AUTH_MAX_FRAME_SIZE

    # -- time ---------------------------------------------------------------------------
    def deadline_ms(self) -> int:
        """When `tick` must next be called: end of the auth window or of the heartbeat grace."""
        if self.state is State.AUTHENTICATED:
            return self.last_heard_ms + self.limits.heartbeat_grace_ms
        return self.connected_ms + self.limits.auth_timeout_ms

    def tick(self, now_ms: int) -> list[Action]:
        if self.state is State.CLOSED or now_ms < self.deadline_ms():
            return []
        if self.state is State.AUTHENTICATED:
            return self._goodbye(ResultCode.HEARTBEAT_TIMEOUT, f"silent since {self.last_heard_ms}")
        return self._goodbye(ResultCode.AUTH_TIMEOUT, "authentication not completed in time")

    # -- input --------------------------------------------------------------------------
    def receive(self, item: Any, now_ms: int) -> list[Action]:
        """Handle one item from the decoder: a message or a ProtocolError value."""
        if self.state is State.CLOSED:
            return []
        self.last_heard_ms = now_ms
        if isinstance(item, ProtocolError):
            return self._frame_error(item, now_ms)
        handler = TRANSITIONS.get((self.state, item.msg_type))
        if handler is None:
            return self._unexpected(item, now_ms)
        return handler(self, item, now_ms)

    def records_to_store(self, item: Any) -> int:
        """How many records `store_request(item)` would store; 0 when the item is not one
        for the store (then `receive` answers it, and its answer numbers at once).

        The one place deciding which frames go to the store: the glue gathers the items
        counted here into one store call, and holds any other item until the answers
        before it were sent.
        """
        if self.state is not State.AUTHENTICATED:
            return 0
        kind = type(item)
        if kind is Punch:
            return 1
        if kind is PunchBatch and self._batch_fits(len(item.records)):
            return len(item.records)
        return 0

    def store_request(self, item: Punch | PunchBatch, now_ms: int) -> StorePunches:
        """What `receive` does with an item `records_to_store` counted: the records, each
        with the reason it must be refused (or None), for the store."""
        self.last_heard_ms = now_ms
        limits = self.limits
        photo_max = self.max_photo_bytes
        if isinstance(item, Punch):
            record = item.record
            return StorePunches(item.seq, MessageType.PUNCH, ((record, _validate(record, now_ms, limits, photo_max)),))
        records = tuple((r, _validate(r, now_ms, limits, photo_max)) for r in item.records)
        return StorePunches(item.seq, MessageType.PUNCH_BATCH, records)

    def device_loaded(self, device: DeviceView | None, locked_until_ms: int, now_ms: int) -> list[Action]:
        """Answer to LoadDevice: the device (None if unknown) and when the lockout of this
        serial at this address ends (0: not locked out). A locked-out terminal is told in
        AUTH_RESULT's `retry_after_s` how many seconds are left (rounded up)."""
        if self.state is not State.AWAIT_DEVICE:
            return []
        if locked_until_ms > now_ms:
            retry_after_s = min(0xFFFF, -(-(locked_until_ms - now_ms) // 1000))
            return self._refuse(ResultCode.LOCKED_OUT, now_ms, retry_after_s)
        if device is None:
            return self._refuse(ResultCode.UNKNOWN_DEVICE, now_ms)
        if not device.enabled:
            return self._refuse(ResultCode.DEVICE_DISABLED, now_ms)
        self.device = device
        self.state = State.AWAIT_AUTH
        return [self._send(Challenge(self.nonce, now_ms))]

    def punches_stored(self, request: StorePunches, results: list[int], now_ms: int) -> list[Action]:
        """Answer to StorePunches: one result code (ResultCode or its int) per record, in
        order (OK, DUPLICATE, a rejection)."""
        new = tuple.__new__
        rows = tuple([new(RecordResult, (rec.record_no, code)) for (rec, _), code in zip(request.records, results)])
        return [self._send(Ack(request.ref_seq, request.ref_type, now_ms, rows))]

    def store_failed(self, request: StorePunches) -> list[Action]:
        """The store could not commit: nothing is acknowledged, the device resends later."""
        return [self._send(Nack(request.ref_seq, request.ref_type, ResultCode.STORE_UNAVAILABLE))]

    def photo_result(self, sha256: bytes, result: ResultCode, next_offset: int) -> list[Action]:
        return [self._send(PhotoStatus(sha256, int(result), next_offset))]

    def send_command(self, message: Any) -> tuple[Send, int]:
        """Number a server-initiated command (a §4.5 message, seq 0) in this session's outgoing
        sequence: its Send action and the seq it goes out with, which its answer's `ref_seq`
        names. Only an authenticated session takes commands: RuntimeError otherwise (the glue
        checks `state` first; a command for a closed session stays in the store)."""
        if self.state is not State.AUTHENTICATED:
            raise RuntimeError(f"a command for a session in state {self.state.value}")
        return self._send(message), self.out_seq

    def taken_over(self) -> list[Action]:
        """A newer session of the same device authenticated: this one ends."""
        return self._goodbye(ResultCode.TAKEOVER, "a newer session of this device authenticated")

    def shutdown(self) -> list[Action]:
        return self._goodbye(ResultCode.SHUTTING_DOWN, "server shutting down")

    def revoked(self, reason: ResultCode) -> list[Action]:
        """The device was disabled (DEVICE_DISABLED), its secret rotated (CREDENTIALS_CHANGED)
        or an operator closed the session (CLOSED_BY_OPERATOR): GOODBYE with that reason."""
        return self._goodbye(reason, f"ended by an operator: {reason.name}")

    def too_slow_reader(self) -> list[Action]:
        """The glue found the peer not reading its answers (send buffer over its limit)."""
        return self.abort(ResultCode.SERVER_BUSY, "peer does not read; unsent output over the limit")

    def abort(self, reason: ResultCode, detail: str) -> list[Action]:
        """End the session without a GOODBYE (the store failed a lookup, an internal
        error): a Close for the glue, or nothing if it was already closed."""
        if self.state is State.CLOSED:
            return []
        self.state = State.CLOSED
        self.close_reason = reason
        return [Close(reason, detail)]

    def connection_lost(self) -> None:
        """The transport is gone (the peer closed, or the glue closed it): nothing more is
        sent or handled. `close_reason` keeps the reason if the session ended first."""
        self.state = State.CLOSED

    # -- handlers (the table) -------------------------------------------------------------
    def _on_hello(self, hello: Hello, now_ms: int) -> list[Action]:
        self.hello = hello
        if hello.protocol_version != PROTOCOL_VERSION:
            return self._refuse(ResultCode.UNSUPPORTED_VERSION, now_ms)
        self.state = State.AWAIT_DEVICE
        return [LoadDevice(hello.serial)]

    def _on_auth(self, auth: Auth, now_ms: int) -> list[Action]:
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

    def _on_heartbeat(self, heartbeat: Heartbeat, now_ms: int) -> list[Action]:
        return [self._send(Ack(heartbeat.seq, MessageType.HEARTBEAT, now_ms, ()))]

    def _on_time_sync(self, request: TimeSyncRequest, now_ms: int) -> list[Action]:
        return [self._send(TimeSyncReply(request.device_time_ms, now_ms, now_ms))]

    def _on_punch(self, punch: Punch, now_ms: int) -> list[Action]:
        return [self.store_request(punch, now_ms)]

    def _on_batch(self, batch: PunchBatch, now_ms: int) -> list[Action]:
        if self._batch_fits(len(batch.records)):
            return [self.store_request(batch, now_ms)]
        if batch.records:
            return [self._send(Nack(batch.seq, MessageType.PUNCH_BATCH, ResultCode.BATCH_TOO_LARGE))]
        return [self._send(Ack(batch.seq, MessageType.PUNCH_BATCH, now_ms, ()))]

    def _batch_fits(self, count: int) -> bool:
        """The batch bounds: an empty batch is answered at once, a larger one refused."""
        return 0 < count <= self.limits.max_batch_records

    def _on_photo_chunk(self, chunk: PhotoChunk, now_ms: int) -> list[Action]:
        if not 0 < chunk.total_size <= self.max_photo_bytes:
            return self._photo_too_large(chunk.photo_sha256)
        return [AppendPhoto(chunk)]

    def _on_photo_query(self, query: PhotoQuery, now_ms: int) -> list[Action]:
        if not 0 < query.total_size <= self.max_photo_bytes:
            return self._photo_too_large(query.photo_sha256)
        return [QueryPhoto(query)]

    def _photo_too_large(self, sha256: bytes) -> list[Action]:
        """Above the store's photo_max_bytes (or empty): refused here, before the store."""
        return [*self.photo_result(sha256, ResultCode.PHOTO_TOO_LARGE, 0), Count("photo_refused_photo_too_large")]

    def _on_status(self, status: DeviceStatus, now_ms: int) -> list[Action]:
        return [StatusReported(status), self._send(Ack(status.seq, MessageType.DEVICE_STATUS, now_ms, ()))]

    def _on_device_answer(self, answer: Ack | Nack | RosterVersionReply | ConfigReply, now_ms: int) -> list[Action]:
        return [DeviceAnswer(answer)]

    def _on_goodbye(self, goodbye: Goodbye, now_ms: int) -> list[Action]:
        reason = ResultCode(goodbye.reason) if goodbye.reason in _RESULT_VALUES else ResultCode.OK
        return self.abort(reason, "device said goodbye")

    # -- the one place for everything not in the table ---------------------------------
    def _unexpected(self, message: Any, now_ms: int) -> list[Action]:
        if self.state is State.AUTHENTICATED:
            return [self._send(Nack(message.seq, message.msg_type, ResultCode.UNEXPECTED_MESSAGE))]
        # Before authentication only HELLO and AUTH are of use: anything else counts as a
        # malformed frame too, so a peer that never authenticates is closed after
        # `malformed_limit` of them instead of being answered until its auth timeout.
        actions: list[Action] = [self._send(Nack(message.seq, message.msg_type, ResultCode.AUTH_REQUIRED))]
        return actions + self._count_error(now_ms)

    def _frame_error(self, error: ProtocolError, now_ms: int) -> list[Action]:
        actions: list[Action] = [self._send(Nack(error.seq or 0, error.msg_type or 0, error.result_code))]
        if error.fatal:
            return actions + self.abort(error.result_code, str(error))
        if error.result_code is ResultCode.UNSUPPORTED_MESSAGE:
            return actions  # extension rule: never a reason to disconnect
        return actions + self._count_error(now_ms)

    def _count_error(self, now_ms: int) -> list[Action]:
        """One more malformed (or, before authentication, unexpected) frame: GOODBYE
        TOO_MANY_ERRORS past `malformed_limit` within `malformed_window_ms`."""
        window_start = now_ms - self.limits.malformed_window_ms
        self.malformed = [t for t in self.malformed if t > window_start] + [now_ms]
        if len(self.malformed) > self.limits.malformed_limit:
            return self._goodbye(ResultCode.TOO_MANY_ERRORS, f"{len(self.malformed)} malformed frames")
        return []

    # -- output helpers ---------------------------------------------------------------
    def _send(self, message: Any) -> Send:
        self.out_seq = seq = (self.out_seq + 1) & SEQ_MASK
        # seq is every message's last field; tuple.__new__ skips _replace's generic path
        # (a third of the cost of answering a punch).
        return Send(tuple.__new__(type(message), message[:-1] + (seq,)))

    def _refuse(self, reason: ResultCode, now_ms: int, retry_after_s: int = 0) -> list[Action]:
        serial = self.hello.serial if self.hello else ""
        actions: list[Action] = [self._send(AuthResult(reason, 0, now_ms, self.limits.max_frame_size, 0,
                                                       retry_after_s))]
        if reason is not ResultCode.UNSUPPORTED_VERSION:
            actions.append(AuthFailed(serial, reason))
        return actions + self.abort(reason, f"authentication refused: {reason.name}")

    def _goodbye(self, reason: ResultCode, detail: str) -> list[Action]:
        if self.state is State.CLOSED:
            return []
        reconnect = self.limits.goodbye_reconnect_s if reason is ResultCode.SHUTTING_DOWN else 0
        return [self._send(Goodbye(reason, reconnect)), *self.abort(reason, detail)]


_RESULT_VALUES = frozenset(int(c) for c in ResultCode)

_A = State.AUTHENTICATED
Handler = Callable[[Session, Any, int], list[Action]]
TRANSITIONS: dict[tuple[State, int], Handler] = {
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
