"""The device side of the downlink: a terminal's roster, faces, clock and settings, as pure code.

`TerminalDevice.handle(message, now_ms)` takes one command the server sent (docs/protocol.md
§4.5) and returns the frames the terminal answers with, as §6.7 asks: ROSTER_VERSION_QUERY
with ROSTER_VERSION_REPLY, CONFIG_GET with CONFIG_REPLY, every other command with ACK (no
results) or NACK. Each answer names the command in `ref_seq`/`ref_type` and leaves `seq` 0:
the connection that writes it numbers it in its own sequence (the terminal's side of the
header, §2). Nothing here does I/O, reads a clock or sleeps; time is the `now_ms` argument.
One object is one terminal's flash: it outlives connections, so a roster, its version and a
half-received face survive a reconnect. simulators/terminal.py and simulators/fleet.py drive
it; tests call `handle` directly.

Rules it keeps (docs/downlink.md, "Roster sync"):

- `roster_version` is the version a terminal reports: every change at or below it is fully
  applied. A change that announces a face (`face_size` > 0) is applied at once (name, card,
  role, answered by ACK) but its version is adopted only once the face is assembled and its
  SHA-256 verified, so a terminal that loses its connection mid-face reports the version
  before it and is sent the worker again. Changes after it are applied and held back until
  then (`roster_version` never passes an incomplete change). The same holds for a change the
  device refused (any NACK): its version is not adopted until a later change of the same
  worker supersedes it, since the device does not hold what that change said.
- ROSTER_REMOVE of worker `000000000000000000` (not a valid ID number, so never a worker)
  removes every worker, every face and every partial face, and sets the version to the
  message's `roster_version` (0 by the convention).
- Commands are idempotent (§6.7): ROSTER_ADD of a present worker updates them; ROSTER_REMOVE
  of an absent worker is OK; a change older than the worker's current one (a resend) is
  acknowledged and not applied. ROSTER_UPDATE of an absent worker adds them (unless the
  test asks for NACK UNKNOWN_WORKER). `face_size` 0 keeps the worker's current face.
- Faces are assembled by offset: a chunk at the expected offset appends; a chunk that was
  already applied (a resend) is ACKed again; a chunk past the expected offset (a gap: the
  device lost its partial face, or the server resumed wrong), a `total_size` other than
  announced, or a face whose SHA-256 does not match is NACK COMMAND_FAILED, and the partial
  face is dropped while the announcement is kept, so the server can start again at offset 0
  (§6.7). A chunk of a face the worker already holds is ACKed (a resend of the last chunk
  whose ACK was lost). A chunk of a face nobody announced is NACK COMMAND_FAILED.
- CONFIG_GET answers the known keys asked, in the order asked, leaving unknown keys out;
  CONFIG_SET applies all its entries or none (NACK UNKNOWN_CONFIG_KEY naming nothing).

Failure injection, set by a test: `faults` (NACK UNKNOWN_WORKER, a roster capacity past
which ROSTER_ADD is NACK DEVICE_STORAGE_FULL, faces enrolled unverified), `fail(type, code=...)` (NACK chosen commands),
`never_answer(type)` (the command is lost: no effect, no answer, to test the server's resend
after `command_timeout_s` and its giving up), `forget_partial_faces()` (a power cut).

Memory: a face being received holds its bytes (`keep_faces`) or only a running SHA-256 (the
load fleet: 20 devices x 500 workers x 30 KB would be 300 MB of faces it never looks at).
"""

from __future__ import annotations

import hashlib
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType

from lmg.protocol import (
    Ack,
    ConfigEntry,
    ConfigGet,
    ConfigReply,
    ConfigSet,
    DoorOpen,
    FaceChunk,
    MessageType,
    Nack,
    ProtocolError,
    Reboot,
    ResultCode,
    RosterAdd,
    RosterRemove,
    RosterUpdate,
    RosterVersionQuery,
    RosterVersionReply,
    SetTime,
)
from lmg.protocol.messages import REPLY_TYPES, Message

#: ROSTER_REMOVE of this worker_id means "remove every worker" (docs/downlink.md).
REMOVE_ALL_WORKER_ID = "0" * 18

#: Settings a simulated terminal knows, with their values out of the box. `volume` and
#: `relay_ms` are the keys of the protocol's examples (tests/vectors/config_get.json).
DEFAULT_CONFIG: Mapping[str, str] = {
    "volume": "7",
    "relay_ms": "3000",
    "language": "zh-CN",
    "recognition_threshold": "80",
    "liveness": "on",
}

#: Largest face a device accepts, bytes: the store's own limit (StoreConfig.face_max_bytes,
#: 2 MiB), so the gateway never sends one larger. An announcement above it is refused
#: (NACK COMMAND_FAILED) before any byte is buffered: `face_size` is a u32, up to 4 GiB.
MAX_FACE_BYTES = 2 << 20

#: Commands kept in `history` by default: ~100 bytes each, so 1 MB; a 500-worker roster with
#: 30 KB faces in 16 KiB chunks is ~1,500 commands.
HISTORY_LIMIT = 10_000

#: Door or lane numbers a simulated turnstile has (DOOR_OPEN `door`, from 1).
DOORS = 4

_ROSTER_CHANGES = frozenset({MessageType.ROSTER_ADD, MessageType.ROSTER_UPDATE, MessageType.ROSTER_REMOVE})
#: Types the terminal never answers: answers themselves and GOODBYE (§6.2).
_UNANSWERED = frozenset(REPLY_TYPES | {MessageType.GOODBYE})


@dataclass(frozen=True, slots=True)
class RosterEntry:
    """One worker on the terminal's roster. `face_sha256` is the enrolled (verified) face,
    None when the worker has none yet; `version` is the roster version of their last change."""

    worker_id: str
    name: str
    card_no: str
    role: int
    version: int
    face_sha256: bytes | None = None


@dataclass(frozen=True, slots=True)
class Handled:
    """One command the device received: its type, its seq, and the result code it answered
    (OK for ACK and for the data replies, the NACK's code), or None when it did not answer."""

    msg_type: int
    seq: int
    result: int | None


@dataclass
class Faults:
    """What a test asks the device to get wrong. Counts in `fail`/`never_answer` are how many
    more commands of that type are hit; None means every one."""

    #: NACK UNKNOWN_WORKER for ROSTER_UPDATE or ROSTER_REMOVE of a worker the device does not
    #: hold. Off by default: §6.7 makes removing an absent worker OK, and an update of an
    #: absent worker adds them.
    nack_unknown_workers: bool = False
    #: Workers the device can hold; ROSTER_ADD (or an update that adds) of a new worker past
    #: it is NACK DEVICE_STORAGE_FULL. None: no limit.
    roster_capacity: int | None = None
    #: msg_type -> (result code, remaining count or None): NACK these commands with that code.
    fail: dict[int, tuple[int, int | None]] = field(default_factory=dict)
    #: msg_type -> remaining count or None: drop these commands, unanswered and not carried out.
    never_answer: dict[int, int | None] = field(default_factory=dict)
    #: ACK every FACE_CHUNK and enroll a face without checking its SHA-256 or its offsets: the
    #: firmware bug §6.7 forbids ("must verify the SHA-256 ... before enrolling it").
    accept_bad_faces: bool = False


@dataclass(slots=True)
class _Gap:
    """Why a worker's latest change is not (yet) fully held: the lowest version of a refused
    change not superseded since, and the version whose announced face is not enrolled yet."""

    record: int | None = None
    face: int | None = None
    face_sha256: bytes | None = None

    def floor(self) -> int | None:
        versions = [v for v in (self.record, self.face) if v is not None]
        return min(versions) if versions else None


class _Assembly:
    """A face being received: how many bytes arrived, their running SHA-256, and the bytes
    themselves when the device keeps faces."""

    __slots__ = ("size", "received", "hasher", "data", "keep")
    received: int
    data: bytearray | None

    def __init__(self, size: int, keep: bool):
        self.size = size
        self.keep = keep
        self.reset()

    def reset(self) -> None:
        self.received = 0
        self.hasher = hashlib.sha256()
        self.data = bytearray() if self.keep else None

    def append(self, data: bytes) -> None:
        self.received += len(data)
        self.hasher.update(data)
        if self.data is not None:
            self.data += data


_Handler = Callable[["TerminalDevice", Message, int], list[Message]]


class TerminalDevice:
    """One simulated terminal's downlink state. Call `handle` with each command in the order
    received; send what it returns, in order, numbered by the connection.

    `config` replaces DEFAULT_CONFIG (the keys the device knows); `keep_faces` False keeps
    only hashes (no face bytes, `face_of` returns None); `history_limit` bounds `history`
    (0 keeps none); `doors` is how many lanes DOOR_OPEN may name."""

    def __init__(self, *, config: Mapping[str, str] | None = None, keep_faces: bool = True,
                 history_limit: int = HISTORY_LIMIT, doors: int = DOORS, max_face_bytes: int = MAX_FACE_BYTES):
        self.faults = Faults()
        self.config: dict[str, str] = dict(DEFAULT_CONFIG if config is None else config)
        self.keep_faces = keep_faces
        self.doors = doors
        self.max_face_bytes = max_face_bytes
        self.clock_offset_ms = 0  # added to the host clock; set by SET_TIME
        self.reboots: list[int] = []  # delay_s of each REBOOT carried out
        self.door_opens: list[tuple[int, int]] = []  # (door, duration_s) of each DOOR_OPEN carried out
        self.history: deque[Handled] = deque(maxlen=history_limit)
        self._workers: dict[str, RosterEntry] = {}
        self._faces: dict[bytes, bytes] = {}  # sha256 -> bytes, when keep_faces
        self._face_refs: Counter[bytes] = Counter()  # sha256 -> workers enrolled with it
        self._assemblies: dict[bytes, _Assembly] = {}
        self._gaps: dict[str, _Gap] = {}
        self._version = 0
        self._held_back: list[int] = []  # versions applied but above an incomplete change

    # -- what a test reads -------------------------------------------------------------------
    @property
    def roster_version(self) -> int:
        """The version this device reports: every change at or below it is fully applied."""
        return self._version

    @property
    def worker_count(self) -> int:
        return len(self._workers)

    @property
    def workers(self) -> Mapping[str, RosterEntry]:
        """The roster by worker_id (a read-only view)."""
        return MappingProxyType(self._workers)

    def face_of(self, worker_id: str) -> bytes | None:
        """The enrolled face photo of a worker; None if none, or if the device keeps no bytes."""
        entry = self._workers.get(worker_id)
        if entry is None or entry.face_sha256 is None:
            return None
        return self._faces.get(entry.face_sha256)

    def face_progress(self, face_sha256: bytes) -> int | None:
        """Bytes received so far of a face being assembled; None when none is."""
        assembly = self._assemblies.get(face_sha256)
        return None if assembly is None else assembly.received

    def pending_faces(self) -> dict[str, tuple[int, bytes]]:
        """worker_id -> (version, sha256) of every announced face not enrolled yet."""
        return {wid: (gap.face, gap.face_sha256) for wid, gap in self._gaps.items()
                if gap.face is not None and gap.face_sha256 is not None}

    def clock_ms(self, now_ms: int) -> int:
        """The terminal's clock, Unix ms, when the host's clock reads `now_ms`."""
        return max(0, now_ms + self.clock_offset_ms)

    # -- what a test sets --------------------------------------------------------------------
    def fail(self, *types: int, code: int = ResultCode.COMMAND_FAILED, times: int | None = None) -> None:
        """NACK the next `times` commands (None: all) of these types with `code`, without
        carrying them out. UNSUPPORTED_MESSAGE here plays a terminal without that feature."""
        for kind in types:
            self.faults.fail[int(kind)] = (int(code), times)

    def never_answer(self, *types: int, times: int | None = None) -> None:
        """Lose the next `times` commands (None: all) of these types: no effect, no answer."""
        for kind in types:
            self.faults.never_answer[int(kind)] = times

    def clear_faults(self) -> None:
        self.faults = Faults()

    def forget_partial_faces(self) -> None:
        """A power cut: every face being received loses its bytes (announcements are kept),
        so the server's next chunk is a gap and is NACKed."""
        for assembly in self._assemblies.values():
            assembly.reset()

    # -- driving -----------------------------------------------------------------------------
    def handle(self, message: Message | ProtocolError, now_ms: int = 0) -> list[Message]:
        """Carry out one frame the server sent; return the answers to send, in order (seq 0).

        A `ProtocolError` from the decoder is answered with NACK of its result code when its
        seq could be read and it is not fatal (§6.9). Answers (ACK, NACK, replies) and GOODBYE
        are never answered; a message that is no command is NACK UNSUPPORTED_MESSAGE."""
        if isinstance(message, ProtocolError):
            if message.fatal or message.seq is None:
                return []
            return [Nack(message.seq, message.msg_type or 0, message.result_code)]
        kind = message.msg_type
        if kind in _UNANSWERED:
            return []
        handler = _HANDLERS.get(kind)
        if handler is None:
            replies: list[Message] = [_nack(message, ResultCode.UNSUPPORTED_MESSAGE)]
        elif self._take(self.faults.never_answer, kind):
            replies = []
        elif (code := self._take_failure(kind)) is not None:
            self._refused(message)
            replies = [_nack(message, code)]
        else:
            replies = handler(self, message, now_ms)
        self._record(message, replies)
        return replies

    def _record(self, message: Message, replies: list[Message]) -> None:
        if self.history.maxlen == 0:
            return
        if not replies:
            result = None
        elif isinstance(replies[0], Nack):
            result = replies[0].result
        else:
            result = ResultCode.OK
        self.history.append(Handled(message.msg_type, message.seq, result))

    @staticmethod
    def _take(table: dict[int, int | None], kind: int) -> bool:
        if kind not in table:
            return False
        left = table[kind]
        if left is not None:
            if left <= 1:
                del table[kind]
            else:
                table[kind] = left - 1
        return True

    def _take_failure(self, kind: int) -> int | None:
        entry = self.faults.fail.get(kind)
        if entry is None:
            return None
        code, left = entry
        if left is not None:
            if left <= 1:
                del self.faults.fail[kind]
            else:
                self.faults.fail[kind] = (code, left - 1)
        return code

    def _ack(self, message: Message, now_ms: int) -> list[Message]:
        return [Ack(message.seq, message.msg_type, self.clock_ms(now_ms), ())]

    # -- the roster --------------------------------------------------------------------------
    def _on_worker(self, message: RosterAdd | RosterUpdate, now_ms: int) -> list[Message]:
        worker_id, version = message.worker_id, message.roster_version
        current = self._workers.get(worker_id)
        if current is not None and current.version > version:
            return self._ack(message, now_ms)  # a resend of a change this device has gone past
        code: int | None = None
        if message.face_size > self.max_face_bytes:
            code = ResultCode.COMMAND_FAILED
        elif current is None:
            capacity = self.faults.roster_capacity
            if isinstance(message, RosterUpdate) and self.faults.nack_unknown_workers:
                code = ResultCode.UNKNOWN_WORKER
            elif capacity is not None and len(self._workers) >= capacity:
                code = ResultCode.DEVICE_STORAGE_FULL
        if code is not None:
            self._refused(message)
            return [_nack(message, code)]
        face = current.face_sha256 if current is not None else None
        self._workers[worker_id] = RosterEntry(worker_id, message.name, message.card_no, message.role, version, face)
        gap = self._gaps.get(worker_id)
        if gap is not None:
            gap.record = None  # ADD and UPDATE carry the whole record: an earlier refusal is moot
        if message.face_size:
            sha = message.face_sha256
            if face == sha:
                if gap is not None:  # the worker holds the face announced: an older one is moot
                    self._owe_face(gap, None, 0)
            else:
                self._owe_face(self._gaps.setdefault(worker_id, _Gap()), sha, version)
                assembly = self._assemblies.get(sha)
                if assembly is None or assembly.size != message.face_size:
                    self._assemblies[sha] = _Assembly(message.face_size, self.keep_faces)
        self._drop_gap_if_closed(worker_id)
        self._applied(version)
        return self._ack(message, now_ms)

    def _on_remove(self, message: RosterRemove, now_ms: int) -> list[Message]:
        worker_id, version = message.worker_id, message.roster_version
        if worker_id == REMOVE_ALL_WORKER_ID:
            self._workers.clear()
            self._faces.clear()
            self._face_refs.clear()
            self._assemblies.clear()
            self._gaps.clear()
            self._held_back.clear()
            self._version = version
            return self._ack(message, now_ms)
        current = self._workers.get(worker_id)
        if current is not None and current.version > version:
            return self._ack(message, now_ms)  # a resend of a change this device has gone past
        if current is None and self.faults.nack_unknown_workers:
            self._refused(message)
            return [_nack(message, ResultCode.UNKNOWN_WORKER)]
        if current is not None:
            del self._workers[worker_id]
            self._unref_face(current.face_sha256)
        gap = self._gaps.pop(worker_id, None)
        if gap is not None and gap.face_sha256 is not None:
            self._release_assembly(gap.face_sha256)
        self._applied(version)
        return self._ack(message, now_ms)

    def _refused(self, message: Message) -> None:
        """A roster change answered with NACK: its version is not held until superseded."""
        if message.msg_type not in _ROSTER_CHANGES or message.worker_id == REMOVE_ALL_WORKER_ID:
            if isinstance(message, FaceChunk):
                assembly = self._assemblies.get(message.face_sha256)
                if assembly is not None:
                    assembly.reset()  # the server starts this face again from offset 0
            return
        gap = self._gaps.setdefault(message.worker_id, _Gap())
        version = message.roster_version
        gap.record = version if gap.record is None else min(gap.record, version)
        if isinstance(message, (RosterAdd, RosterUpdate)) and message.face_size:
            current = self._workers.get(message.worker_id)
            if current is None or current.face_sha256 != message.face_sha256:
                self._owe_face(gap, message.face_sha256, version)  # no assembly: nobody to enroll

    def _owe_face(self, gap: _Gap, sha: bytes | None, version: int) -> None:
        """The worker of `gap` is owed face `sha` since `version` (None: owed no face)."""
        if sha is not None and gap.face_sha256 == sha and gap.face is not None:
            gap.face = min(gap.face, version)  # the same face again: owed since the first time
            return
        old = gap.face_sha256
        gap.face, gap.face_sha256 = (None, None) if sha is None else (version, sha)
        if old is not None and old != sha:
            self._release_assembly(old)

    def _drop_gap_if_closed(self, worker_id: str) -> None:
        gap = self._gaps.get(worker_id)
        if gap is not None and gap.record is None and gap.face is None:
            del self._gaps[worker_id]

    def _floor(self) -> int | None:
        floors = [f for gap in self._gaps.values() if (f := gap.floor()) is not None]
        return min(floors) if floors else None

    def _applied(self, version: int) -> None:
        """`version` is applied: adopt it, unless an older change is still incomplete."""
        self._held_back.append(version)
        self._settle()

    def _settle(self) -> None:
        """Adopt every applied version below the lowest incomplete change (all, if none is)."""
        if not self._held_back:
            return
        floor = self._floor()
        adopt = self._held_back if floor is None else [v for v in self._held_back if v < floor]
        if adopt:
            self._version = max(self._version, *adopt)
            self._held_back = [] if floor is None else [v for v in self._held_back if v >= floor]

    # -- faces -------------------------------------------------------------------------------
    def _on_face_chunk(self, message: FaceChunk, now_ms: int) -> list[Message]:
        sha, offset, data = message.face_sha256, message.offset, message.data
        assembly = self._assemblies.get(sha)
        careless = self.faults.accept_bad_faces
        if assembly is None:
            if self._face_refs.get(sha) or careless:
                return self._ack(message, now_ms)  # the face is enrolled: a resent chunk
            return [_nack(message, ResultCode.COMMAND_FAILED)]  # announced never, or dropped
        end = offset + len(data)
        if message.total_size != assembly.size or offset > assembly.received or end > assembly.size:
            if careless:
                return self._ack(message, now_ms)
            assembly.reset()
            return [_nack(message, ResultCode.COMMAND_FAILED)]
        if end <= assembly.received:
            return self._ack(message, now_ms)  # applied already
        assembly.append(data[assembly.received - offset:])
        if assembly.received < assembly.size:
            return self._ack(message, now_ms)
        if assembly.hasher.digest() != sha and not careless:
            assembly.reset()
            return [_nack(message, ResultCode.COMMAND_FAILED)]
        self._enroll(sha, bytes(assembly.data) if assembly.data is not None else None)
        return self._ack(message, now_ms)

    def _enroll(self, sha: bytes, data: bytes | None) -> None:
        """A face arrived whole and verified: every present worker waiting for it gets it."""
        del self._assemblies[sha]
        if data is not None:
            self._faces[sha] = data
        for worker_id, gap in list(self._gaps.items()):
            if gap.face_sha256 != sha:
                continue
            current = self._workers.get(worker_id)
            if current is None:
                continue  # refused, not on the roster: the face is still owed to them
            old = current.face_sha256
            self._workers[worker_id] = replace(current, face_sha256=sha)
            self._face_refs[sha] += 1
            self._unref_face(old)
            gap.face = gap.face_sha256 = None
            self._drop_gap_if_closed(worker_id)
        if not self._face_refs.get(sha):
            self._faces.pop(sha, None)
        self._settle()

    def _unref_face(self, sha: bytes | None) -> None:
        if sha is None:
            return
        self._face_refs[sha] -= 1
        if self._face_refs[sha] <= 0:
            del self._face_refs[sha]
            self._faces.pop(sha, None)

    def _release_assembly(self, sha: bytes) -> None:
        """Drop a face being received once no worker waits for it any more."""
        if not any(gap.face_sha256 == sha for gap in self._gaps.values()):
            self._assemblies.pop(sha, None)
        self._settle()

    # -- the other commands ------------------------------------------------------------------
    def _on_version_query(self, message: RosterVersionQuery, now_ms: int) -> list[Message]:
        return [RosterVersionReply(message.seq, self._version, len(self._workers))]

    def _on_set_time(self, message: SetTime, now_ms: int) -> list[Message]:
        self.clock_offset_ms = message.server_time_ms - now_ms
        return self._ack(message, now_ms)

    def _on_config_get(self, message: ConfigGet, now_ms: int) -> list[Message]:
        entries = tuple(ConfigEntry(row.key, self.config[row.key]) for row in message.keys if row.key in self.config)
        return [ConfigReply(message.seq, entries)]

    def _on_config_set(self, message: ConfigSet, now_ms: int) -> list[Message]:
        if any(row.key not in self.config for row in message.entries):
            return [_nack(message, ResultCode.UNKNOWN_CONFIG_KEY)]
        for row in message.entries:
            self.config[row.key] = row.value
        return self._ack(message, now_ms)

    def _on_reboot(self, message: Reboot, now_ms: int) -> list[Message]:
        self.reboots.append(message.delay_s)
        return self._ack(message, now_ms)

    def _on_door_open(self, message: DoorOpen, now_ms: int) -> list[Message]:
        if not 1 <= message.door <= self.doors:
            return [_nack(message, ResultCode.COMMAND_FAILED)]
        self.door_opens.append((message.door, message.duration_s))
        return self._ack(message, now_ms)


def _nack(message: Message, code: int) -> Nack:
    return Nack(message.seq, message.msg_type, code)


#: The commands a terminal carries out (every S→T type of §4.5), by msg_type.
_HANDLERS: dict[int, _Handler] = {
    MessageType.ROSTER_ADD: TerminalDevice._on_worker,
    MessageType.ROSTER_UPDATE: TerminalDevice._on_worker,
    MessageType.ROSTER_REMOVE: TerminalDevice._on_remove,
    MessageType.FACE_CHUNK: TerminalDevice._on_face_chunk,
    MessageType.ROSTER_VERSION_QUERY: TerminalDevice._on_version_query,
    MessageType.SET_TIME: TerminalDevice._on_set_time,
    MessageType.CONFIG_GET: TerminalDevice._on_config_get,
    MessageType.CONFIG_SET: TerminalDevice._on_config_set,
    MessageType.REBOOT: TerminalDevice._on_reboot,
    MessageType.DOOR_OPEN: TerminalDevice._on_door_open,
}

#: msg_type of every command the server may send a terminal; a connection hands frames of
#: these types (and undecodable frames) to `TerminalDevice.handle`. A set: one hash lookup.
COMMAND_TYPES: frozenset[int] = frozenset(_HANDLERS)
