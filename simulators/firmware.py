"""`lmg sim device`: one long-lived simulated terminal that behaves as firmware should, or not.

A vendor reads this as a reference terminal; the conformance kit (server/conformance/) is
tested against it, well-behaved and with each misbehaviour of `MISBEHAVIOURS`. Two parts:

- `FirmwareCore`, pure: the terminal's flash (`Flash`: record counter, unanswered punches,
  photos to upload, clock offset) and one connection's state (handshake, frames waiting for
  an answer, heartbeat, photo upload, time sync). Time is the `now_ms` argument (the host's
  clock, Unix ms); randomness is an injected `random.Random`; it returns `Send`/`Close`
  actions and reports its next deadline (`next_deadline_ms`). No socket, no sleep.
- `SimulatedDevice`, the thin asyncio glue: it connects when the core says so, feeds it
  bytes, arms one timer at the core's deadline, writes what it returns, keeps the state
  file, and makes punches (`--punch-every`).

What it does, by docs/protocol.md (the §9 checklist and the MUSTs of §5-§6):

- §5 HELLO → CHALLENGE → AUTH → AUTH_RESULT within `auth_timeout_s` (10 s); nothing else
  before AUTH_RESULT OK; every refusal (AUTH_RESULT instead of CHALLENGE, GOODBYE before
  HELLO or after CHALLENGE) ends the attempt, and the next one waits what
  simulators/reconnect.py says for it (§5.2, §6.8: own back-off capped at 60 s before the
  jitter, `reconnect_after_s` and `retry_after_s` waited in full).
- §6.1 HEARTBEAT every `heartbeat_interval_s` of AUTH_RESULT; two unanswered in a row: the
  connection is given up and opened again.
- §6.2/§9.4 every punch stays in the flash (and the state file: "non-volatile storage")
  until an ACK row answers it; `record_no` comes from a counter that is saved before the
  record is sent and never goes back. At most `window` (8) frames wait for an answer; a
  record unanswered for `ack_timeout_s` (15 s), or NACKed with "try later", is resent in a
  new frame, and every unanswered record is resent after a reconnect. OK, DUPLICATE and a
  rejection all end a record's resends (a rejection is final, §6.2).
- §6.5 a punch's photo is uploaded after its ACK (OK or DUPLICATE), one photo at a time, in
  chunks of `photo_chunk_bytes` that keep each frame within `max_frame_size`; an upload cut
  by a disconnect resumes with PHOTO_QUERY at the server's `next_offset`.
- §6.6 TIME_SYNC_REQUEST in the first session after a start (or REBOOT) and every
  `time_sync_every_s` (24 h); SET_TIME moves the clock: every later frame carries the
  corrected time (HEARTBEAT, punches, ACK's `server_time_ms`).
- §6.7 every command is carried out and answered in order by `TerminalDevice`
  (simulators/device.py): roster with faces verified by SHA-256 (a bad FACE_CHUNK is NACK
  COMMAND_FAILED), kept across reconnects; REBOOT restarts the terminal after `delay_s`
  (GOODBYE TERMINAL_LEAVING, a `boot_s` pause, a new session).
- §8 unknown trailing bytes and flag bits are ignored; an unknown message is NACK
  UNSUPPORTED_MESSAGE.
- §6.8 a terminal that stops (end of `--duration`, Ctrl-C, REBOOT) sends GOODBYE
  TERMINAL_LEAVING first.

Misbehaviours (`--misbehave KIND`, `MISBEHAVIOURS`): each breaks exactly one rule, graded by
exactly one item of the kit, and leaves every other behaviour as above. Where a rule is a
wait, the misbehaving device reconnects after `MISBEHAVING_WAIT` of the back-off base (0.5 s
by default): shorter than any wait the server can name (whole seconds, at least 1) yet no
tight loop of connections.

Used from code (the kit's tests do this):

    device = SimulatedDevice(FirmwareConfig(serial, secret, ack_timeout_s=0.5), host, port,
                             punch_every_s=1.0, photo_share=0.5)
    task = asyncio.create_task(device.run())
    ...
    await device.stop()          # GOODBYE TERMINAL_LEAVING, state saved
"""

from __future__ import annotations

import asyncio
import base64
import enum
import hashlib
import logging
import os
import random
import ssl
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import orjson

from lmg.protocol import (
    MAX_FRAME_SIZE,
    Ack,
    Auth,
    AuthResult,
    Challenge,
    DeviceStatus,
    FrameDecoder,
    FrameTooLarge,
    Goodbye,
    Heartbeat,
    Hello,
    MessageType,
    Nack,
    PhotoChunk,
    PhotoStatus,
    ProtocolError,
    Punch,
    PunchBatch,
    PunchRecord,
    ResultCode,
    TimeSyncReply,
    TimeSyncRequest,
    UnsupportedMessage,
    decode_frame,
    encode,
)
from lmg.protocol.auth import auth_mac
from lmg.protocol.codes import Capability, FrameFlag
from lmg.protocol.fastpath import fixed_format
from lmg.protocol.messages import Message
from lmg.protocol.schema import FRAME_HEADER, FRAME_OVERHEAD, HEADER_SIZE, MAGIC
from lmg.simulators.device import COMMAND_TYPES, TerminalDevice
from lmg.simulators.photo_upload import PhotoUpload, Step, chunk_limit
from lmg.simulators.reconnect import LOST, BackoffPolicy, Ending, reconnect_wait_s
from lmg.simulators.terminal import make_punch

if TYPE_CHECKING:
    from websockets.asyncio.client import ClientConnection

log = logging.getLogger("lmg.simulators.firmware")

#: kind -> (conformance item id of server/conformance, what the device then does wrong).
#: The kit's tests run it against each kind: that item fails, and only that one.
MISBEHAVIOURS: dict[str, tuple[str, str]] = {
    "bad_hmac": ("auth.handshake", "signs every AUTH with a wrong HMAC (one bit flipped)"),
    "retry_bad_signature_at_once": ("auth.refusal.bad_signature",
                                    "after AUTH_RESULT BAD_SIGNATURE reconnects after half the back-off base (0.5 s) "
                                    "instead of the maximum interval"),
    "ignore_retry_after": ("auth.refusal.locked_out",
                           "after AUTH_RESULT LOCKED_OUT reconnects after half the back-off base, ignoring "
                           "retry_after_s"),
    "ignore_server_busy": ("auth.refusal.server_busy",
                           "after GOODBYE SERVER_BUSY (or RATE_LIMITED, SHUTTING_DOWN) before a session reconnects "
                           "after half the back-off base, ignoring reconnect_after_s"),
    "no_heartbeat": ("heartbeat.interval", "never sends HEARTBEAT"),
    "never_retransmit": ("punch.retransmit_timeout",
                         "never resends an unanswered record within a session (only after a reconnect)"),
    "forget_unacked_on_reconnect": ("punch.retransmit_reconnect",
                                    "drops the records still waiting for an ACK when the connection breaks"),
    "resend_duplicates": ("punch.duplicate",
                          "treats an ACK row DUPLICATE as no answer: keeps the record and resends it"),
    "no_photo_resume": ("photo.resume",
                        "after a reconnect restarts an interrupted photo at offset 0 without PHOTO_QUERY"),
    "ignore_set_time": ("time.set_time", "acknowledges SET_TIME without moving its clock"),
    "no_backoff": ("reconnect.goodbye_backoff",
                   "after a GOODBYE within a session reconnects after half the back-off base, ignoring "
                   "reconnect_after_s"),
    "no_unsupported_nack": ("command.unknown_message", "says nothing to a message type it does not know"),
    "reject_trailing_bytes": ("extension.unknown_trailing",
                              "answers a command with unknown trailing bytes or flag bits by NACK MALFORMED_BODY"),
    "accept_bad_face": ("roster.face_chunk_nack",
                        "ACKs every FACE_CHUNK and enrolls a face without checking its SHA-256"),
    "bad_crc": ("frame.format", "sends every DEVICE_STATUS with a wrong CRC-32"),
    "mute_door_open": ("command.door_open", "loses every DOOR_OPEN: neither opens the door nor answers"),
}


def misbehaviour_table() -> str:
    """The Markdown table of `MISBEHAVIOURS` that docs/sim-device.md holds (a test compares them)."""
    rows = ["| `--misbehave` | conformance item that fails | what the device does |", "|---|---|---|"]
    rows += [f"| `{kind}` | `{item}` | {what} |" for kind, (item, what) in MISBEHAVIOURS.items()]
    return "\n".join(rows) + "\n"


#: A misbehaving wait, as a share of the back-off base: 0.5 x 1 s, below any whole-second
#: wait a server names and below the shortest own back-off, yet two connections a second at
#: most, so a misbehaving device cannot flood the kit.
MISBEHAVING_WAIT = 0.5

#: Photos of a simulated punch start as a JPEG does (SOI, APP0) and end with EOI.
_JPEG_HEAD, _JPEG_TAIL = b"\xff\xd8\xff\xe0", b"\xff\xd9"
#: Answers to a PUNCH frame NACK that shrink the batch instead of waiting (§6.4).
_SHRINK = frozenset({ResultCode.BATCH_TOO_LARGE})
_GOODBYE_BEFORE_SESSION = frozenset({ResultCode.SERVER_BUSY, ResultCode.RATE_LIMITED, ResultCode.SHUTTING_DOWN})
_HEADER = struct.Struct(fixed_format(FRAME_HEADER))
STATE_FORMAT = 1


class StateError(ValueError):
    """A state file that cannot be used; the message says which file and why."""


@dataclass(frozen=True)
class FirmwareConfig:
    """Who the device is and its timing. Defaults are the document's numbers; a test or
    the kit shrinks the waits (`ack_timeout_s`, `backoff`)."""

    serial: str
    secret: bytes
    firmware: str = "sim-device-1.0"
    vendor: str = "simulator"
    model: str = "sim-device"
    misbehave: frozenset[str] = frozenset()
    ack_timeout_s: float = 15.0  # §6.2, §9.4: resend after 15 s without an answer
    auth_timeout_s: float = 10.0  # §5: the whole exchange within 10 s
    backoff: BackoffPolicy = field(default_factory=BackoffPolicy)
    window: int = 8  # §6.2: up to 8 frames waiting for an answer, heartbeats included
    batch_records: int = 50  # records per PUNCH_BATCH of a backlog: 3.5 KB, well within any frame limit
    photo_chunk_bytes: int = 16384  # §6.5: 16-32 KiB is a good choice on 4G
    time_sync_every_s: float = 86400.0  # §6.6: at least every 24 h
    status_every_s: float = 300.0  # DEVICE_STATUS: one per session and every 5 minutes
    heartbeat_misses: int = 2  # §6.1: no answer to two consecutive heartbeats -> reconnect
    boot_s: float = 1.0  # how long a REBOOT keeps the simulated terminal off the network

    def __post_init__(self) -> None:
        unknown = sorted(set(self.misbehave) - set(MISBEHAVIOURS))
        if unknown:
            raise ValueError(f"unknown misbehaviour {', '.join(unknown)}; known: {', '.join(MISBEHAVIOURS)}")
        if not 1 <= len(self.serial.encode()) <= 64:
            raise ValueError("serial must be 1-64 bytes")
        if len(self.secret) != 32:
            raise ValueError(f"secret must be 32 bytes (64 hex characters), got {len(self.secret)}")
        if self.ack_timeout_s <= 0 or self.auth_timeout_s <= 0:
            raise ValueError("ack_timeout_s and auth_timeout_s must be above 0")
        if not self.heartbeat_misses < self.window <= 1024 or not 1 <= self.batch_records <= 0xFFFF:
            raise ValueError("window must be above heartbeat_misses and at most 1024, batch_records 1-65535")
        if not 1 <= self.photo_chunk_bytes <= 0xFFFF:
            raise ValueError("photo_chunk_bytes must be 1-65535 (a u16 length)")

    def does(self, kind: str) -> bool:
        """True when the device misbehaves as `kind`."""
        return kind in self.misbehave


# --- the flash: what survives a restart ------------------------------------------------------


@dataclass
class Flash:
    """The terminal's non-volatile storage (§9.4). `records` are punches no ACK row answered
    yet; `photos` the snapshot of each punch that has one, until uploaded or refused;
    `uploads` the record numbers whose punch was acknowledged, in upload order; `started`
    the uploads that sent a chunk before their connection ended (resumed with PHOTO_QUERY)."""

    next_record_no: int = 1
    records: dict[int, PunchRecord] = field(default_factory=dict)
    photos: dict[int, bytes] = field(default_factory=dict)
    uploads: list[int] = field(default_factory=list)
    started: set[int] = field(default_factory=set)
    clock_offset_ms: int = 0

    def to_json(self, serial: str) -> dict:
        return {
            "format": STATE_FORMAT, "serial": serial, "next_record_no": self.next_record_no,
            "clock_offset_ms": self.clock_offset_ms,
            "records": [{**r._asdict(), "photo_sha256": r.photo_sha256.hex()} for r in self.records.values()],
            "photos": {str(no): base64.b64encode(data).decode() for no, data in self.photos.items()},
            "uploads": list(self.uploads), "started": sorted(self.started),
        }

    @classmethod
    def from_json(cls, data: dict, serial: str, where: str = "state") -> "Flash":
        """The flash saved by `to_json`; StateError naming `where` when it is not one, or is
        another device's."""
        try:
            if data.get("format") != STATE_FORMAT:
                raise StateError(f"{where}: format {data.get('format')!r}, expected {STATE_FORMAT}")
            if data["serial"] != serial:
                raise StateError(f"{where} belongs to serial {data['serial']!r}, not {serial!r}: "
                                 "give each device its own --state file")
            records = {}
            for row in data["records"]:
                record = PunchRecord(**{**row, "photo_sha256": bytes.fromhex(row["photo_sha256"])})
                records[record.record_no] = record
            return cls(int(data["next_record_no"]), records,
                       {int(no): base64.b64decode(text) for no, text in data["photos"].items()},
                       [int(no) for no in data["uploads"]], {int(no) for no in data["started"]},
                       int(data["clock_offset_ms"]))
        except StateError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise StateError(f"{where} is not a device state file ({type(exc).__name__}: {exc}); "
                             "delete it to start afresh") from None


def load_flash(path: Path, serial: str, first_record_no: int) -> Flash:
    """The flash in `path`, or a fresh one numbering from `first_record_no` when there is none."""
    try:
        text = path.read_bytes()
    except FileNotFoundError:
        return Flash(next_record_no=first_record_no)
    except OSError as exc:
        raise StateError(f"cannot read {path}: {exc.strerror}") from None
    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise StateError(f"{path} is not JSON ({exc}); delete it to start afresh") from None
    if not isinstance(data, dict):
        raise StateError(f"{path} is not a device state file")
    return Flash.from_json(data, serial, str(path))


def save_flash(path: Path, flash: Flash, serial: str) -> None:
    """Write the flash atomically (a temporary file renamed over the old one, after fsync),
    so a crash leaves the old state or the new one, never half of either."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(orjson.dumps(flash.to_json(serial)))
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


# --- the pure core ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Send:
    """Write these bytes (one whole frame) to the connection."""

    data: bytes


@dataclass(frozen=True)
class Close:
    """Close the connection; `why` is for the log."""

    why: str


Action = Send | Close


class Phase(enum.Enum):
    OFFLINE = "offline"  # no connection; `connect_at_ms` says when to open one
    HELLO_SENT = "hello sent"  # waiting for CHALLENGE (or a refusal)
    AUTH_SENT = "auth sent"  # waiting for AUTH_RESULT
    ONLINE = "online"  # authenticated
    CLOSING = "closing"  # Close returned; waiting for the glue to report the loss
    STOPPED = "stopped"


@dataclass
class _Frame:
    """A frame waiting for its answer: what it carried and when it left (host ms)."""

    kind: int
    sent_ms: int
    records: tuple[int, ...] = ()


@dataclass
class _Upload:
    """The photo being uploaded: its bytes, its `PhotoUpload` (simulators/photo_upload.py:
    the frames and what each PHOTO_STATUS means), and the timers around it."""

    data: bytes
    state: PhotoUpload
    waiting_since_ms: int | None = None  # a PHOTO_CHUNK/PHOTO_QUERY is unanswered since then
    retry_at_ms: int | None = None  # "try later" (STORE_UNAVAILABLE, PHOTO_UPLOADS_BUSY, NACK)
    sent_chunk: bool = False  # a chunk went on this connection: resume with PHOTO_QUERY next time


class FirmwareCore:
    """One terminal's behaviour, without I/O. The glue calls, with the host clock in ms:
    `connect_due` / `connected` when it opens a connection (`connect_failed` when it could
    not), `receive_bytes` (TCP) or `receive_message` (WebSocket) with what arrives, `poll`
    at `next_deadline_ms`, `connection_lost` once a connection is gone (after a `Close` too),
    `punch` when a worker passes, `stop` to leave. Each returns the actions to carry out in
    order. `flash` is the state to save when `dirty`."""

    def __init__(self, config: FirmwareConfig, flash: Flash | None = None, *, rng: random.Random | None = None,
                 device: TerminalDevice | None = None, now_ms: int = 0):
        self.config = config
        self.flash = flash if flash is not None else Flash()
        self.rng = rng if rng is not None else random.Random()
        self.device = device if device is not None else TerminalDevice()
        self.device.clock_offset_ms = self.flash.clock_offset_ms
        if config.does("accept_bad_face"):
            self.device.faults.accept_bad_faces = True
        if config.does("mute_door_open"):
            self.device.never_answer(MessageType.DOOR_OPEN)
        self.dirty = False
        self.phase = Phase.OFFLINE
        self.connect_at_ms = now_ms
        self.started_ms = now_ms
        self.failures = 0  # attempts since the last authenticated session (reconnect.py)
        self.ending: Ending | None = None  # why the current attempt ended, when the server said
        self.goodbye_in_session = False  # `ending` is a GOODBYE received after AUTH_RESULT OK
        self.last_wait_s: float | None = None  # the wait chosen after the last connection
        self.handshakes = 0
        self.sessions = 0
        self.next_sync_ms: int | None = now_ms  # None: a sync is waited for
        self.stopping = False
        self._rebooting = False
        self._reboot_at_ms: int | None = None
        self._reboots_seen = 0
        self.counters: dict[str, int] = {}
        self._sent_before: set[int] = set()  # records put on an earlier connection, unanswered
        self._new_connection()

    def _new_connection(self) -> None:
        self.seq = 0
        self.decoder = FrameDecoder()
        self._raw = bytearray()  # reject_trailing_bytes reads frames whole, see _frames_strict
        self.inflight: dict[int, _Frame] = {}
        self.record_sent_ms: dict[int, int] = {}  # record_no -> when last put on this connection
        self.auth_deadline_ms: int | None = None
        self.heartbeat_s = 30
        self.max_frame_size = MAX_FRAME_SIZE
        self.max_batch = self.config.batch_records
        self.next_heartbeat_ms: int | None = None
        self.heartbeat_seq: int | None = None  # the HEARTBEAT waiting for its ACK
        self.heartbeat_misses = 0
        self.next_status_ms: int | None = None
        self.sync_seq: int | None = None
        self.sync_t1 = 0
        self.upload: _Upload | None = None
        self.authenticated = False

    # -- what the glue and tests read ---------------------------------------------------------
    def clock_ms(self, now_ms: int) -> int:
        """The terminal's clock (host clock + the offset SET_TIME and TIME_SYNC set)."""
        return self.device.clock_ms(now_ms)

    @property
    def pending_records(self) -> int:
        return len(self.flash.records)

    @property
    def pending_photos(self) -> int:
        return len(self.flash.photos)

    def _count(self, name: str, n: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + n

    def next_deadline_ms(self) -> int | None:
        """The earliest host time at which `poll` (or, offline, `connect_due`) has work."""
        if self.phase is Phase.STOPPED or self.phase is Phase.CLOSING:
            return None
        if self.phase is Phase.OFFLINE:
            if self._reboot_at_ms is not None:
                return min(self.connect_at_ms, self._reboot_at_ms)
            return self.connect_at_ms
        if self.phase is not Phase.ONLINE:
            return self.auth_deadline_ms
        timeout = self._ms(self.config.ack_timeout_s)
        candidates = [self.next_heartbeat_ms, self._reboot_at_ms]
        candidates += [frame.sent_ms + timeout for frame in self.inflight.values()]
        if self.upload is not None and self.upload.waiting_since_ms is not None:
            candidates.append(self.upload.waiting_since_ms + timeout)
        if self._room():  # work that needs room in the window; a full one frees by answers or timeouts
            candidates += [self.next_status_ms, self.next_sync_ms]
            if not self.config.does("never_retransmit"):
                candidates += [sent + timeout for sent in self.record_sent_ms.values()]
            if self.upload is not None:
                candidates.append(self.upload.retry_at_ms)
        due = [c for c in candidates if c is not None]
        return min(due) if due else None

    # -- the wire -----------------------------------------------------------------------------
    def _send(self, message: Message, *, corrupt: bool = False) -> Send:
        self.seq = (self.seq + 1) & 0xFFFFFFFF
        frame = encode(message._replace(seq=self.seq), max_frame_size=self.max_frame_size)
        if corrupt:  # the last CRC byte flipped: a frame no receiver may accept (§2.1)
            frame = frame[:-1] + bytes([frame[-1] ^ 0xFF])
        return Send(frame)

    @staticmethod
    def _ms(seconds: float) -> int:
        return int(round(seconds * 1000))

    # -- connecting ---------------------------------------------------------------------------
    def connect_due(self, now_ms: int) -> bool:
        """Whether to open a connection now. A REBOOT acknowledged in a session that ended
        before its delay ran out restarts the terminal here: a fresh boot connects `boot_s`
        later, whatever wait the old session's end asked for."""
        if self.phase is not Phase.OFFLINE or self.stopping:
            return False
        if self._reboot_at_ms is not None and now_ms >= self._reboot_at_ms:
            self._reboot_at_ms = None
            self._count("reboots")
            self._booted(now_ms)
        return now_ms >= self.connect_at_ms

    def _booted(self, now_ms: int) -> None:
        self.failures = 0
        self.next_sync_ms = now_ms  # a terminal synchronises at start (§6.6)
        self.last_wait_s = self.config.boot_s
        self.connect_at_ms = now_ms + self._ms(self.config.boot_s)

    def connected(self, now_ms: int) -> list[Action]:
        """A connection is open: HELLO, and the authentication deadline (§5)."""
        if self.phase is not Phase.OFFLINE:
            raise RuntimeError(f"connected() while {self.phase.value}")
        self._new_connection()
        self.phase = Phase.HELLO_SENT
        self.ending = None
        self.goodbye_in_session = False
        self.auth_deadline_ms = now_ms + self._ms(self.config.auth_timeout_s)
        self.handshakes += 1
        capabilities = int(Capability.FACE | Capability.CARD | Capability.DOOR | Capability.PHOTO_UPLOAD)
        return [self._send(Hello(self.config.serial, self.config.vendor, self.config.model, self.config.firmware, 1,
                                 capabilities))]

    def connect_failed(self, now_ms: int) -> None:
        """The connection could not be opened (refused, unreachable, timed out)."""
        self.phase = Phase.CLOSING
        self.connection_lost(now_ms)

    def connection_lost(self, now_ms: int) -> None:
        """The connection is gone (the peer closed, it broke, or a `Close` was carried out):
        unanswered records are due again on the next one, and the next attempt is scheduled."""
        if self.phase in (Phase.OFFLINE, Phase.STOPPED):
            return
        config = self.config
        if self.authenticated and config.does("forget_unacked_on_reconnect"):
            for record_no in self.record_sent_ms:  # sent, unanswered: the misbehaviour drops them
                if self.flash.records.pop(record_no, None) is not None:
                    self.flash.photos.pop(record_no, None)
                    self._count("records_forgotten")
                    self.dirty = True
        upload = self.upload
        if upload is not None and (upload.sent_chunk or upload.state.offset > 0):
            self.flash.started.add(upload.state.record_no)  # resumed with PHOTO_QUERY next time
            self.dirty = True
        self.failures = 1 if self.authenticated else self.failures + 1
        self._sent_before.update(no for no in self.record_sent_ms if no in self.flash.records)
        self._new_connection()
        if self.stopping:
            self.phase = Phase.STOPPED
            return
        self.phase = Phase.OFFLINE
        if self._rebooting:
            self._rebooting = False
            self._booted(now_ms)
            return
        wait_s = self._wait_after(self.ending or LOST)
        self.last_wait_s = wait_s
        self.connect_at_ms = now_ms + self._ms(wait_s)

    def _wait_after(self, ending: Ending) -> float:
        """Seconds before the next attempt (reconnect.py), or the misbehaving shortcut."""
        config, code = self.config, ending.code
        in_session = self.goodbye_in_session
        misbehaving = (
            (config.does("no_backoff") and in_session)
            or (config.does("ignore_retry_after") and code == ResultCode.LOCKED_OUT)
            or (config.does("ignore_server_busy") and code in _GOODBYE_BEFORE_SESSION and not in_session)
            or (config.does("retry_bad_signature_at_once") and code == ResultCode.BAD_SIGNATURE)
        )
        if misbehaving:
            return config.backoff.base_s * MISBEHAVING_WAIT
        return reconnect_wait_s(config.backoff, max(1, self.failures), self.rng.random(), ending)

    # -- receiving ----------------------------------------------------------------------------
    def receive_bytes(self, data: bytes, now_ms: int) -> list[Action]:
        """Bytes from a TCP connection (any split)."""
        if self.config.does("reject_trailing_bytes"):
            self._raw += data
            items = self._frames_strict()
        else:
            items = [(item, False) for item in self.decoder.feed(data)]
        actions: list[Action] = []
        for item, extra in items:  # after a Close the phase is CLOSING: the rest is not read
            actions += self._receive(item, now_ms, extra)
        return actions

    def receive_message(self, data: bytes, now_ms: int) -> list[Action]:
        """One WebSocket binary message: exactly one frame (§1)."""
        item: Message | ProtocolError
        try:
            item = decode_frame(data)
        except ProtocolError as exc:
            item = exc
        return self._receive(item, now_ms, self._has_extra(data, item))

    def _frames_strict(self) -> list[tuple[Message | ProtocolError, bool]]:
        """reject_trailing_bytes only: whole frames cut by their header, each decoded alone,
        so the device sees each frame's flags and its length beyond the fields it knows."""
        out: list[tuple[Message | ProtocolError, bool]] = []
        buf = self._raw
        while len(buf) >= HEADER_SIZE:
            if not buf.startswith(MAGIC):
                del buf[:1]  # resynchronise at the next magic
                continue
            body_len = _HEADER.unpack_from(buf, 0)[5]
            size = body_len + FRAME_OVERHEAD
            if size > MAX_FRAME_SIZE:
                out.append((FrameTooLarge("frame too large"), False))
                buf.clear()
                break
            if len(buf) < size:
                break
            frame = bytes(buf[:size])
            del buf[:size]
            item: Message | ProtocolError
            try:
                item = decode_frame(frame)
            except ProtocolError as exc:
                item = exc
            out.append((item, self._has_extra(frame, item)))
        return out

    def _has_extra(self, frame: bytes, item: Message | ProtocolError) -> bool:
        """reject_trailing_bytes: the frame has bytes after its known fields, or reserved flag bits."""
        if not self.config.does("reject_trailing_bytes") or isinstance(item, ProtocolError):
            return False
        flags = frame[3] if len(frame) > 3 else 0
        return bool(flags & ~FrameFlag.REPLY) or len(encode(item)) != len(frame)

    def _receive(self, item: Message | ProtocolError, now_ms: int, extra: bool = False) -> list[Action]:
        if self.phase in (Phase.OFFLINE, Phase.CLOSING, Phase.STOPPED):
            return []
        if isinstance(item, ProtocolError) and item.fatal:
            return self._close("the server sent a frame above the maximum size")
        handler = _DISPATCH.get((self.phase, type(item)))
        if handler is not None:
            actions = handler(self, item, now_ms)
        elif self.phase is Phase.ONLINE:
            actions = self._command(item, now_ms, extra)
        else:
            return []  # §5: before AUTH_RESULT OK a terminal answers nothing
        return actions + self._pump(now_ms)

    def _goodbye(self, goodbye: Goodbye, now_ms: int) -> list[Action]:
        self.ending = Ending(goodbye.reason, goodbye.reconnect_after_s)
        self.goodbye_in_session = self.phase is Phase.ONLINE
        name = ResultCode(goodbye.reason).name if goodbye.reason in ResultCode._value2member_map_ else goodbye.reason
        self._count("goodbyes")
        return self._close(f"GOODBYE {name} (reconnect_after_s {goodbye.reconnect_after_s})")

    def _close(self, why: str) -> list[Action]:
        self.phase = Phase.CLOSING
        return [Close(why)]

    def _on_challenge(self, challenge: Challenge, now_ms: int) -> list[Action]:
        """§5: sign the nonce with the serial, firmware and protocol version sent in HELLO."""
        config = self.config
        mac = auth_mac(config.secret, challenge.nonce, config.serial, config.firmware, 1)
        if config.does("bad_hmac"):
            mac = bytes([mac[0] ^ 0x01]) + mac[1:]
        self.phase = Phase.AUTH_SENT
        return [self._send(Auth(mac))]

    def _on_auth_result(self, result: AuthResult, now_ms: int) -> list[Action]:
        """AUTH_RESULT ends the handshake: a refusal (instead of CHALLENGE too) ends the attempt."""
        if result.result != ResultCode.OK:
            self.ending = Ending(result.result, result.retry_after_s)
            name = ResultCode(result.result).name if result.result in ResultCode._value2member_map_ else result.result
            self._count("refusals")
            return self._close(f"AUTH_RESULT {name} (retry_after_s {result.retry_after_s})")
        if self.phase is not Phase.AUTH_SENT:
            return self._close("AUTH_RESULT OK before the challenge was answered")
        return self._authenticated(result, now_ms)

    def _authenticated(self, result: AuthResult, now_ms: int) -> list[Action]:
        self.phase = Phase.ONLINE
        self.authenticated = True
        self.failures = 0
        self.sessions += 1
        self.auth_deadline_ms = None
        self.heartbeat_s = max(1, result.heartbeat_interval_s)
        self.max_frame_size = min(MAX_FRAME_SIZE, max(FRAME_OVERHEAD + 256, result.max_frame_size))
        if result.max_batch_records:
            self.max_batch = min(self.config.batch_records, result.max_batch_records)
        self.next_heartbeat_ms = now_ms + self.heartbeat_s * 1000
        self.next_status_ms = now_ms
        actions: list[Action] = []
        if self.next_sync_ms is not None and self.next_sync_ms <= now_ms:
            actions += self._time_sync(now_ms)
        return actions + self._pump(now_ms)

    # -- answers to the terminal's own frames -------------------------------------------------
    def _on_ack(self, ack: Ack, now_ms: int) -> list[Action]:
        frame = self.inflight.pop(ack.ref_seq, None)
        if ack.ref_seq == self.heartbeat_seq:
            self.heartbeat_seq = None
            self.heartbeat_misses = 0
        for row in ack.results:  # rows answer records, whichever frame carried them (a late ACK too)
            self._answered(row.record_no, row.result, now_ms)
        if frame is not None and frame.records:
            answered = {row.record_no for row in ack.results}
            missing = [no for no in frame.records if no not in answered and no in self.flash.records]
            if missing:  # an ACK without a row for a record: resend it after the timeout
                self._count("rows_missing", len(missing))
        return []

    def _answered(self, record_no: int, result: int, now_ms: int) -> None:
        record = self.flash.records.get(record_no)
        if record is None:
            return  # answered before (a resend's second answer)
        if result == ResultCode.DUPLICATE and self.config.does("resend_duplicates"):
            self.record_sent_ms[record_no] = now_ms  # "no answer": resent after the timeout
            self._count("duplicates_kept")
            self._queue_photo(record_no)
            return
        del self.flash.records[record_no]
        self.record_sent_ms.pop(record_no, None)
        self._sent_before.discard(record_no)
        self.dirty = True
        if result in (ResultCode.OK, ResultCode.DUPLICATE):
            self._count("acked" if result == ResultCode.OK else "duplicates")
            self._queue_photo(record_no)
        else:  # a rejection is final (§6.2); an unknown code too (§8)
            self._count("rejected")
            self.flash.photos.pop(record_no, None)

    def _queue_photo(self, record_no: int) -> None:
        if record_no in self.flash.photos and record_no not in self.flash.uploads:
            self.flash.uploads.append(record_no)
            self.dirty = True

    def _on_nack(self, nack: Nack, now_ms: int) -> list[Action]:
        frame = self.inflight.pop(nack.ref_seq, None)
        if nack.ref_seq == self.heartbeat_seq:
            self.heartbeat_seq = None
        if frame is None:
            return []
        self._count("nacks")
        if frame.records:
            if nack.result in _SHRINK and self.max_batch > 1:
                self.max_batch = max(1, self.max_batch // 2)
                for record_no in frame.records:  # resend at once, in smaller frames
                    self.record_sent_ms.pop(record_no, None)
            # else: "nothing was stored, try later" (§6.2, and §8 for unknown codes): the
            # records keep their send time, so they go again after ack_timeout_s
        elif frame.kind in (MessageType.PHOTO_CHUNK, MessageType.PHOTO_QUERY) and self.upload is not None:
            self.upload.waiting_since_ms = None
            self.upload.retry_at_ms = now_ms + self._ms(self.config.ack_timeout_s)
        elif frame.kind == MessageType.TIME_SYNC_REQUEST:
            self.sync_seq = None
            self.next_sync_ms = now_ms + self._ms(self.config.ack_timeout_s)
        return []

    def _on_photo_status(self, status: PhotoStatus, now_ms: int) -> list[Action]:
        upload = self.upload
        if upload is None or status.photo_sha256 != upload.state.sha256:
            return []
        for seq, frame in list(self.inflight.items()):
            if frame.kind in (MessageType.PHOTO_CHUNK, MessageType.PHOTO_QUERY):
                del self.inflight[seq]
        upload.waiting_since_ms = None
        step = upload.state.on_status(status)
        if step is Step.DONE:
            self._count("photos_uploaded")
            self._photo_done(upload.state.record_no)
        elif step is Step.GIVE_UP:  # refused (too large, not announced) or its bytes are wrong
            self._count("photos_refused")
            self._photo_done(upload.state.record_no)
        elif step is Step.RETRY_LATER:  # STORE_UNAVAILABLE, PHOTO_UPLOADS_BUSY
            upload.retry_at_ms = now_ms + self._ms(self.config.ack_timeout_s)
        return []

    def _photo_done(self, record_no: int) -> None:
        self.flash.photos.pop(record_no, None)
        if record_no in self.flash.uploads:
            self.flash.uploads.remove(record_no)
        self.flash.started.discard(record_no)
        self.upload = None
        self.dirty = True

    def _time_sync(self, now_ms: int) -> list[Action]:
        self.sync_t1 = self.clock_ms(now_ms)
        self.next_sync_ms = None
        send = self._send(TimeSyncRequest(self.sync_t1))
        self.sync_seq = self.seq
        self.inflight[self.seq] = _Frame(MessageType.TIME_SYNC_REQUEST, now_ms)
        return [send]

    def _on_time_sync(self, reply: TimeSyncReply, now_ms: int) -> list[Action]:
        if self.sync_seq is None or reply.device_time_ms != self.sync_t1:
            return []  # a reply to no request of ours
        self.inflight.pop(self.sync_seq, None)
        self.sync_seq = None
        t4 = self.clock_ms(now_ms)
        # §6.6: offset = ((t2 - t1) + (t3 - t4)) / 2
        offset = ((reply.server_receive_ms - reply.device_time_ms) + (reply.server_send_ms - t4)) // 2
        self._set_clock_offset(self.device.clock_offset_ms + offset)
        self.next_sync_ms = now_ms + self._ms(self.config.time_sync_every_s)
        self._count("time_syncs")
        return []

    def _set_clock_offset(self, offset_ms: int) -> None:
        self.device.clock_offset_ms = offset_ms
        if self.flash.clock_offset_ms != offset_ms:
            self.flash.clock_offset_ms = offset_ms
            self.dirty = True

    # -- commands -----------------------------------------------------------------------------
    def _command(self, item: Message | ProtocolError, now_ms: int, extra: bool) -> list[Action]:
        """A frame the terminal does not wait for: a command of §4.5 (carried out by the
        device and answered at once), or anything else (answered as the device says)."""
        config = self.config
        if isinstance(item, UnsupportedMessage) and config.does("no_unsupported_nack"):
            self._count("unknown_ignored")
            return []
        if extra and not isinstance(item, ProtocolError) and item.msg_type in COMMAND_TYPES:
            self._count("trailing_rejected")
            return [self._send(Nack(item.seq, item.msg_type, ResultCode.MALFORMED_BODY))]
        offset = self.device.clock_offset_ms
        replies = self.device.handle(item, now_ms)
        if config.does("ignore_set_time"):
            self.device.clock_offset_ms = offset
        else:
            self._set_clock_offset(self.device.clock_offset_ms)
        if not isinstance(item, ProtocolError) and item.msg_type in COMMAND_TYPES:
            self._count("commands")
        if len(self.device.reboots) > self._reboots_seen:
            self._reboots_seen = len(self.device.reboots)
            self._reboot_at_ms = now_ms + self.device.reboots[-1] * 1000
        # The device's ACKs carry its clock in server_time_ms; answers keep the command's order.
        return [self._send(reply) for reply in replies]

    # -- the timer ----------------------------------------------------------------------------
    def poll(self, now_ms: int) -> list[Action]:
        """Work due by `now_ms`: authentication timeout, heartbeat, resends, photo retries,
        time sync, device status, a REBOOT's restart."""
        if self.phase in (Phase.HELLO_SENT, Phase.AUTH_SENT):
            if self.auth_deadline_ms is not None and now_ms >= self.auth_deadline_ms:
                return self._close(f"no AUTH_RESULT within {self.config.auth_timeout_s} s")
            return []
        if self.phase is not Phase.ONLINE:
            return []
        actions: list[Action] = []
        if self._reboot_at_ms is not None and now_ms >= self._reboot_at_ms:
            self._reboot_at_ms = None
            self._rebooting = True
            self._count("reboots")
            return [self._send(Goodbye(ResultCode.TERMINAL_LEAVING, 0))] + self._close("REBOOT")
        if self.next_heartbeat_ms is not None and now_ms >= self.next_heartbeat_ms:
            self.next_heartbeat_ms += self.heartbeat_s * 1000
            if self.next_heartbeat_ms <= now_ms:  # the loop stalled: no burst of catch-up beats
                self.next_heartbeat_ms = now_ms + self.heartbeat_s * 1000
            if not self.config.does("no_heartbeat"):
                if self.heartbeat_seq is not None:
                    self.heartbeat_misses += 1
                    limit = self.config.heartbeat_misses
                    if limit and self.heartbeat_misses >= limit:
                        return self._close(f"no answer to {self.heartbeat_misses} heartbeats")
                actions.append(self._send(Heartbeat(self.clock_ms(now_ms), self.pending_records,
                                                    self.pending_photos)))
                self.heartbeat_seq = self.seq
                self._count("heartbeats")
        if self.next_sync_ms is not None and now_ms >= self.next_sync_ms and self.sync_seq is None and self._room():
            actions += self._time_sync(now_ms)
        if self.next_status_ms is not None and now_ms >= self.next_status_ms and self._room():
            self.next_status_ms = now_ms + self._ms(self.config.status_every_s)
            actions += self._status(now_ms)
        timeout = self._ms(self.config.ack_timeout_s)
        for seq, frame in list(self.inflight.items()):  # no answer in time: the window slot is free
            if now_ms - frame.sent_ms >= timeout:
                del self.inflight[seq]
                self._count("answer_timeouts")
                if frame.kind == MessageType.TIME_SYNC_REQUEST:
                    self.sync_seq = None
                    self.next_sync_ms = now_ms
        upload = self.upload
        if upload is not None and upload.waiting_since_ms is not None and now_ms - upload.waiting_since_ms >= timeout:
            upload.waiting_since_ms = None  # no PHOTO_STATUS: ask where the server stands
            upload.state.restart()
        return actions + self._pump(now_ms)

    def _status(self, now_ms: int) -> list[Action]:
        device = self.device
        status = DeviceStatus(max(0, (now_ms - self.started_ms) // 1000), 1 << 20, self.pending_records,
                              self.pending_photos, device.roster_version, device.worker_count, 0, 0, 412)
        send = self._send(status, corrupt=self.config.does("bad_crc"))
        self.inflight[self.seq] = _Frame(MessageType.DEVICE_STATUS, now_ms)
        return [send]

    # -- sending ------------------------------------------------------------------------------
    def _due_records(self, now_ms: int) -> list[int]:
        """Records to put on the wire now: never sent on this connection, or unanswered for
        ack_timeout_s (unless the device never retransmits), oldest first."""
        timeout = self._ms(self.config.ack_timeout_s)
        never = self.config.does("never_retransmit")
        due = []
        for record_no in self.flash.records:
            sent = self.record_sent_ms.get(record_no)
            if sent is None or (not never and now_ms - sent >= timeout):
                due.append(record_no)
        return sorted(due)

    def _pump(self, now_ms: int) -> list[Action]:
        """Fill the window (§6.2): records first, then the one photo being uploaded."""
        if self.phase is not Phase.ONLINE:
            return []
        actions: list[Action] = []
        due = self._due_records(now_ms)
        while due and self._room():
            take, due = due[: self.max_batch], due[self.max_batch:]
            records = tuple(self.flash.records[no] for no in take)
            message: Message = Punch.of(records[0]) if len(records) == 1 else PunchBatch(records)
            actions.append(self._send(message))
            self.inflight[self.seq] = _Frame(message.msg_type, now_ms, tuple(take))
            for record_no in take:
                if record_no in self.record_sent_ms or record_no in self._sent_before:
                    self._count("resent")
                self.record_sent_ms[record_no] = now_ms
            self._count("records_sent", len(take))
        if self._room():
            actions += self._pump_photo(now_ms)
        return actions

    def _room(self) -> bool:
        """A data frame may go: the frames waiting for an answer, with the heartbeats that
        may be outstanding (up to `heartbeat_misses`) kept out of it, stay within the window
        of 8 (§6.2), so a heartbeat never has to wait for room."""
        reserved = max(1, self.config.heartbeat_misses)
        return len(self.inflight) + reserved < self.config.window

    def _pump_photo(self, now_ms: int) -> list[Action]:
        upload = self.upload
        if upload is None:
            upload = self._next_upload()
            if upload is None:
                return []
        if upload.waiting_since_ms is not None:
            return []  # one frame of one photo at a time
        if upload.retry_at_ms is not None:
            if now_ms < upload.retry_at_ms:
                return []
            upload.retry_at_ms = None
        upload.state.chunk_size = min(self.config.photo_chunk_bytes, chunk_limit(self.max_frame_size))
        message = upload.state.next_frame(upload.data)
        send = self._send(message)
        kind = MessageType.PHOTO_CHUNK if isinstance(message, PhotoChunk) else MessageType.PHOTO_QUERY
        self.inflight[self.seq] = _Frame(kind, now_ms)
        upload.waiting_since_ms = now_ms
        upload.sent_chunk = upload.sent_chunk or isinstance(message, PhotoChunk)
        return [send]

    def _next_upload(self) -> _Upload | None:
        flash = self.flash
        while flash.uploads:
            record_no = flash.uploads[0]
            data = flash.photos.get(record_no)
            if data is None:
                flash.uploads.pop(0)
                self.dirty = True
                continue
            state = PhotoUpload(record_no, hashlib.sha256(data).digest(), len(data), self.config.photo_chunk_bytes)
            if record_no in flash.started and not self.config.does("no_photo_resume"):
                state.restart()  # PHOTO_QUERY first: where does the server stand?
            self.upload = _Upload(data, state)
            if record_no in flash.started and self.config.does("no_photo_resume"):
                self._count("photo_restarted")
            return self.upload
        return None

    # -- the terminal's own events ------------------------------------------------------------
    def punch(self, now_ms: int, worker: int, photo: bytes | None = None) -> list[Action]:
        """A worker passed: a new record (the next record number, the terminal's clock) kept
        in the flash, and sent at once when a session is open. Returns what to send."""
        flash = self.flash
        record_no = flash.next_record_no
        if record_no > 0xFFFFFFFF:
            raise RuntimeError("record numbers are exhausted (u32): this device cannot punch again")
        flash.next_record_no = record_no + 1  # saved before the record can leave: never reused
        record = make_punch(record_no, worker, self.clock_ms(now_ms), photo)
        flash.records[record_no] = record
        if photo:
            flash.photos[record_no] = photo
        self.dirty = True
        self._count("punches")
        return self._pump(now_ms)

    def stop(self, now_ms: int) -> list[Action]:
        """Leave: GOODBYE TERMINAL_LEAVING when a session is open (§6.8), then close.
        Unanswered records stay in the flash for the next run."""
        self.stopping = True
        if self.phase is Phase.ONLINE:
            return [self._send(Goodbye(ResultCode.TERMINAL_LEAVING, 0))] + self._close("stopping")
        if self.phase in (Phase.HELLO_SENT, Phase.AUTH_SENT):
            return self._close("stopping")
        self.phase = Phase.STOPPED
        return []

    def summary(self) -> dict:
        return {"serial": self.config.serial, "phase": self.phase.value, "sessions": self.sessions,
                "handshakes": self.handshakes, "pending_records": self.pending_records,
                "pending_photos": self.pending_photos, "next_record_no": self.flash.next_record_no,
                "roster_version": self.device.roster_version, "workers": self.device.worker_count,
                "clock_offset_ms": self.device.clock_offset_ms, "misbehave": sorted(self.config.misbehave),
                **dict(sorted(self.counters.items()))}


_Handler = Callable[[FirmwareCore, Message, int], list[Action]]

#: (phase, message class) -> what the core does with it. GOODBYE ends the attempt in every
#: connected phase. A frame not listed is not answered before AUTH_RESULT OK (§5: a
#: terminal sends nothing but HELLO and AUTH then) and is a command after it (§6.7: carried
#: out by the device, or answered NACK UNSUPPORTED_MESSAGE when it is none).
_DISPATCH: dict[tuple[Phase, type], _Handler] = {
    **{(phase, Goodbye): FirmwareCore._goodbye for phase in (Phase.HELLO_SENT, Phase.AUTH_SENT, Phase.ONLINE)},
    (Phase.HELLO_SENT, Challenge): FirmwareCore._on_challenge,
    (Phase.HELLO_SENT, AuthResult): FirmwareCore._on_auth_result,
    (Phase.AUTH_SENT, AuthResult): FirmwareCore._on_auth_result,
    (Phase.ONLINE, Ack): FirmwareCore._on_ack,
    (Phase.ONLINE, Nack): FirmwareCore._on_nack,
    (Phase.ONLINE, PhotoStatus): FirmwareCore._on_photo_status,
    (Phase.ONLINE, TimeSyncReply): FirmwareCore._on_time_sync,
}


# --- the asyncio glue --------------------------------------------------------------------------


def make_photo(rng: random.Random, size: int) -> bytes:
    """A snapshot of `size` bytes (at least 6): JPEG markers around random bytes, so each is
    a new photo (photos are addressed by their SHA-256, §6.5)."""
    size = max(size, len(_JPEG_HEAD) + len(_JPEG_TAIL))
    middle = size - len(_JPEG_HEAD) - len(_JPEG_TAIL)
    return _JPEG_HEAD + rng.randbytes(middle) + _JPEG_TAIL


class SimulatedDevice:
    """`FirmwareCore` on real sockets: TCP (`transport="tcp"`) or WebSocket (`"ws"`, path
    /terminal), optionally TLS. `run()` connects, reconnects and punches until `stop()` or
    `duration_s`; it returns the core's summary. `state_path` keeps the flash across runs.

    Punches: every `punch_every_s` (0: only when `punch()` is called), a share
    `photo_share` of them with a `photo_bytes` snapshot; workers cycle through `workers`."""

    def __init__(self, config: FirmwareConfig, host: str, port: int, *, transport: str = "tcp",
                 tls: ssl.SSLContext | None = None, state_path: Path | None = None, first_record_no: int = 1,
                 punch_every_s: float = 0.0, photo_share: float = 0.0, photo_bytes: int = 24 * 1024,
                 workers: int = 20, rng: random.Random | None = None, clock_ms: Callable[[], int] | None = None):
        if transport not in ("tcp", "ws"):
            raise ValueError(f"transport must be tcp or ws, not {transport!r}")
        if not 0.0 <= photo_share <= 1.0:
            raise ValueError(f"photo share {photo_share} must be between 0 and 1")
        if punch_every_s < 0 or photo_bytes < 0 or workers < 1:
            raise ValueError("punch_every_s and photo_bytes must not be negative, workers at least 1")
        self.rng = rng if rng is not None else random.Random()
        self.clock_ms = clock_ms or (lambda: time.time_ns() // 1_000_000)
        self.state_path = state_path
        flash = load_flash(state_path, config.serial, first_record_no) if state_path else Flash(first_record_no)
        self.core = FirmwareCore(config, flash, rng=self.rng, now_ms=self.clock_ms())
        self.host, self.port, self.transport, self.tls = host, port, transport, tls
        self.punch_every_s, self.photo_share, self.photo_bytes, self.workers = (punch_every_s, photo_share,
                                                                                photo_bytes, workers)
        self._punched = 0
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._writer: asyncio.StreamWriter | None = None
        self._reader_stream: asyncio.StreamReader | None = None
        self._ws: ClientConnection | None = None
        self._closed = asyncio.Event()
        self._pending_sends: list[asyncio.Task] = []

    # -- driving --------------------------------------------------------------------------------
    def punch(self, worker: int | None = None, photo: bytes | None = None) -> int:
        """A worker passes now; returns the record number. Sent at once when online."""
        if worker is None:
            worker = self._punched % self.workers
        self._punched += 1
        record_no = self.core.flash.next_record_no
        self._apply(self.core.punch(self.clock_ms(), worker, photo))
        self._wake.set()
        return record_no

    async def stop(self) -> None:
        """Leave as firmware does (GOODBYE TERMINAL_LEAVING) and let `run` return."""
        self._stop.set()
        self._wake.set()

    async def run(self, duration_s: float | None = None) -> dict:
        loop = asyncio.get_running_loop()
        end = None if duration_s is None else loop.time() + duration_s
        puncher = loop.create_task(self._punches()) if self.punch_every_s > 0 else None
        try:
            while not self._stop.is_set():
                if end is not None and loop.time() >= end:
                    break
                now = self.clock_ms()
                if self.core.connect_due(now):
                    await self._session(end)
                    continue
                deadline = self.core.next_deadline_ms()
                wait = 3600.0 if deadline is None else max(0.0, (deadline - now) / 1000)
                if end is not None:
                    wait = min(wait, max(0.0, end - loop.time()))
                await self._sleep(wait)
        finally:
            if puncher is not None:
                puncher.cancel()
                await asyncio.gather(puncher, return_exceptions=True)
            self._apply(self.core.stop(self.clock_ms()))
            await self._close_transport()
            self.core.connection_lost(self.clock_ms())
            self._save()
        return self.core.summary()

    async def _sleep(self, seconds: float) -> None:
        self._wake.clear()
        try:
            await asyncio.wait_for(self._wake.wait(), seconds)
        except asyncio.TimeoutError:
            pass

    async def _punches(self) -> None:
        while True:
            await asyncio.sleep(self.punch_every_s)
            photo = None
            if self.photo_share and self.rng.random() < self.photo_share:
                photo = make_photo(self.rng, self.photo_bytes)
            self.punch(photo=photo)

    async def _session(self, end: float | None) -> None:
        """One connection, from opening to loss."""
        core, loop = self.core, asyncio.get_running_loop()
        self._closed = asyncio.Event()
        try:
            await asyncio.wait_for(self._open(), core.config.auth_timeout_s)
        except (OSError, asyncio.TimeoutError) as exc:
            log.info("device %s: cannot connect to %s:%s (%s)", core.config.serial, self.host, self.port,
                     type(exc).__name__)
            core.connect_failed(self.clock_ms())
            return
        reader = loop.create_task(self._read())
        try:
            self._apply(core.connected(self.clock_ms()))
            while not self._closed.is_set() and not self._stop.is_set():
                if end is not None and loop.time() >= end:
                    break
                now = self.clock_ms()
                deadline = core.next_deadline_ms()
                wait = 3600.0 if deadline is None else max(0.0, (deadline - now) / 1000)
                if end is not None:
                    wait = min(wait, max(0.0, end - loop.time()))
                if wait > 0:
                    await self._sleep(wait)
                self._apply(core.poll(self.clock_ms()))
        finally:
            if self._stop.is_set() or (end is not None and loop.time() >= end):
                self._apply(core.stop(self.clock_ms()))
            await self._close_transport()
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
            core.connection_lost(self.clock_ms())
            self._save()
            if core.last_wait_s is not None and not core.stopping:
                log.info("device %s: next connection in %.1f s", core.config.serial, core.last_wait_s)

    async def _open(self) -> None:
        if self.transport == "tcp":
            self._reader_stream, self._writer = await asyncio.open_connection(self.host, self.port, ssl=self.tls)
        else:
            from websockets.asyncio.client import connect

            scheme = "wss" if self.tls else "ws"
            self._ws = await connect(f"{scheme}://{self.host}:{self.port}/terminal", ssl=self.tls,
                                     max_size=MAX_FRAME_SIZE, ping_interval=None, compression=None)

    async def _read(self) -> None:
        core = self.core
        try:
            if self._ws is not None:
                from websockets.exceptions import ConnectionClosed

                try:
                    async for message in self._ws:
                        if isinstance(message, bytes):
                            self._apply(core.receive_message(message, self.clock_ms()))
                            self._wake.set()
                except ConnectionClosed:
                    pass
            else:
                assert self._reader_stream is not None  # opened by _open
                while True:
                    data = await self._reader_stream.read(65536)
                    if not data:
                        break
                    self._apply(core.receive_bytes(data, self.clock_ms()))
                    self._wake.set()
        except (ConnectionError, OSError):
            pass
        finally:
            self._closed.set()
            self._wake.set()

    def _apply(self, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, Send):
                if self._writer is not None and not self._writer.is_closing():
                    self._writer.write(action.data)
                elif self._ws is not None:
                    task = asyncio.get_running_loop().create_task(self._ws.send(action.data))
                    self._pending_sends.append(task)
                    task.add_done_callback(self._sent)
            else:
                log.info("device %s: closing the connection: %s", self.core.config.serial, action.why)
                self._closed.set()
        if self.core.dirty:
            self._save()

    def _sent(self, task: asyncio.Task) -> None:
        if task in self._pending_sends:
            self._pending_sends.remove(task)
        if not task.cancelled():
            task.exception()  # a send on a closing WebSocket: the reader reports the close

    def _save(self) -> None:
        if self.state_path is not None and self.core.dirty:
            save_flash(self.state_path, self.core.flash, self.core.config.serial)
        self.core.dirty = False

    async def _close_transport(self) -> None:
        if self._writer is not None:
            writer, self._writer = self._writer, None
            try:
                await asyncio.wait_for(writer.drain(), 1.0)
            except (ConnectionError, OSError, asyncio.TimeoutError):
                pass
            writer.close()
            try:
                await asyncio.wait_for(writer.wait_closed(), 1.0)
            except (ConnectionError, OSError, asyncio.TimeoutError):
                pass
        if self._ws is not None:
            ws, self._ws = self._ws, None
            if self._pending_sends:
                await asyncio.gather(*self._pending_sends, return_exceptions=True)
            try:
                await asyncio.wait_for(ws.close(), 1.0)
            except (ConnectionError, OSError, asyncio.TimeoutError):
                pass
