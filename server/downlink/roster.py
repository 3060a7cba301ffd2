"""Roster sync planning: from roster versions and worker rows to the messages a terminal is sent.

Pure: no I/O, no clock. The glue reads the rows from the store (`roster_changes`), the
per-session machine (device.py) feeds them through here a page at a time, and
`plan_sync` puts the same pieces together in one call for a whole sync (the tests, and the
reference for what the machine sends). The rules (docs/downlink.md, "Roster sync"):

- **Kind of sync** (`sync_kind`): a terminal at the project's version is in sync; one at a
  version `v` with `roster_floor <= v < V` gets the **delta** from `v`; any other version
  (above `V`: a restored database, another platform's numbering; below the floor:
  tombstones older than it were pruned) gets a **full resync**: `REMOVE_ALL` (ROSTER_REMOVE
  of worker `000000000000000000` with `roster_version` 0, "remove every worker"), then the
  delta from 0.
- **Delta** from `v`: every worker row with `version > v`, in version order. A tombstone
  (`on_roster` false) becomes ROSTER_REMOVE. A row on the roster becomes ROSTER_ADD when
  the terminal may not hold the worker (`added_version > base`), ROSTER_UPDATE when it
  surely does. Each carries the row's `version` as `roster_version`. `base` is the version
  of the terminal's last complete sync, or `v` if lower: after a broken session the
  terminal reports the version of the last row it applied, but every row went at its
  latest version, so a worker added (or a face changed) at or below `v` whose row changed
  since may never have reached it; the state of its last complete sync surely did.
- **Faces**: ROSTER_ADD announces the worker's face whenever the worker has one (a terminal
  that did not hold the worker holds none of its face); ROSTER_UPDATE announces it only
  when it changed after `base` (`face_version > base`), and otherwise says `face_size` 0,
  "keep the current face". A worker whose face was taken away after `v` is sent ROSTER_ADD
  without a face, since ROSTER_UPDATE cannot say "no face" (`face_size` 0 keeps it). An
  announced face is followed by FACE_CHUNKs of `chunk_bytes` (the last one shorter),
  starting at the terminal's resume point for that face (0 unless a partial transfer
  was recorded).
- Text fields are str8 on the wire: a name or card number longer than 255 UTF-8 bytes is
  cut at a character boundary (the store bounds them well below; this keeps a frame
  buildable whatever a row holds).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple, Protocol

from lmg.protocol import FaceChunk, MessageType, RosterAdd, RosterRemove, RosterUpdate, WorkerRole
from lmg.protocol.posts import Post

REMOVE_ALL_WORKER_ID = "0" * 18  # not a valid ID number (check digit), so never a worker
NO_FACE = bytes(32)
STR8_BYTES = 255
# Bytes of a FACE_CHUNK frame besides its data: header 14, sha 32, total 4, offset 4, data
# length 2, CRC 4. A chunk of `face_chunk_bytes` must fit the frame size with these.
FACE_CHUNK_OVERHEAD = 60
MAX_FACE_CHUNK_BYTES = 65_535  # the data length is a u16


class WorkerRow(Protocol):
    """What a sync needs of a stored worker (`lmg.storage.Worker` has these fields)."""

    @property
    def worker_id(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def card_no(self) -> str: ...
    @property
    def post(self) -> str: ...
    @property
    def face_sha256(self) -> bytes | None: ...
    @property
    def on_roster(self) -> bool: ...
    @property
    def version(self) -> int: ...
    @property
    def added_version(self) -> int: ...
    @property
    def face_version(self) -> int: ...


class SyncKind(enum.Enum):
    IN_SYNC = "in_sync"
    DELTA = "delta"
    FULL = "full"


def sync_kind(device_version: int, project_version: int, floor: int) -> SyncKind:
    """What a terminal holding `device_version` needs to reach `project_version`."""
    if device_version == project_version:
        return SyncKind.IN_SYNC
    if floor <= device_version < project_version:
        return SyncKind.DELTA
    return SyncKind.FULL


class RemoveAll(NamedTuple):
    """Remove every worker: the first step of a full resync; the terminal is then at 0."""

    version: int = 0


class WorkerStep(NamedTuple):
    """One worker change: ROSTER_ADD, ROSTER_UPDATE or ROSTER_REMOVE at `version`.

    `face` is the SHA-256 of the face to announce and send (None: none). The terminal adopts
    `version` when the step is acknowledged, or, when it announces a face, once the face's
    last chunk is.
    """

    kind: MessageType
    version: int
    worker_id: str
    name: str
    card_no: str
    role: int
    face: bytes | None


class ChunkStep(NamedTuple):
    """One FACE_CHUNK: `length` bytes of face `sha256` from `offset`; `last` ends the face."""

    sha256: bytes
    total_size: int
    offset: int
    length: int
    last: bool


Step = RemoveAll | WorkerStep | ChunkStep


def _str8(text: str) -> str:
    """`text` cut to at most 255 UTF-8 bytes, at a character boundary."""
    data = text.encode("utf-8")
    if len(data) <= STR8_BYTES:
        return text
    return data[:STR8_BYTES].decode("utf-8", "ignore")


def wire_role(post: str) -> int:
    """The ROSTER_ADD/UPDATE `role` of a stored post code: key posts are on-site managers."""
    for candidate in Post:
        if candidate.code == post:
            return int(candidate.info.wire_role)
    return int(WorkerRole.WORKER)


def worker_step(row: WorkerRow, base_version: int) -> WorkerStep:
    """The step that brings a terminal holding `base_version` up to `row` (see the module rules)."""
    if not row.on_roster:
        return WorkerStep(MessageType.ROSTER_REMOVE, row.version, row.worker_id, "", "", 0, None)
    face = row.face_sha256 or None
    face_changed = row.face_version > base_version
    if row.added_version > base_version or (face is None and face_changed):
        kind, announce = MessageType.ROSTER_ADD, face
    else:
        kind, announce = MessageType.ROSTER_UPDATE, face if face_changed else None
    return WorkerStep(kind, row.version, row.worker_id, _str8(row.name), _str8(row.card_no), wire_role(row.post),
                      announce)


def worker_steps(rows: Iterable[WorkerRow], base_version: int) -> list[WorkerStep]:
    """The steps of a page of `roster_changes` rows (already in version order)."""
    return [worker_step(row, base_version) for row in rows]


def face_chunks(sha256: bytes, size: int, chunk_bytes: int, start: int = 0) -> list[ChunkStep]:
    """The FACE_CHUNKs of a `size`-byte face from `start` (a resume point outside 0..size-1,
    or not on a chunk boundary, starts again at 0)."""
    if not 0 < start < size or start % chunk_bytes:
        start = 0
    return [ChunkStep(sha256, size, offset, min(chunk_bytes, size - offset), offset + chunk_bytes >= size)
            for offset in range(start, size, chunk_bytes)]


def step_message(step: RemoveAll | WorkerStep, face_size: int = 0) -> Any:
    """The message of a roster step (seq 0), announcing a face of `face_size` bytes when the
    step has one (`face_size` 0: the face could not be read, sent without it)."""
    if isinstance(step, RemoveAll):
        return RosterRemove(step.version, REMOVE_ALL_WORKER_ID)
    if step.kind is MessageType.ROSTER_REMOVE:
        return RosterRemove(step.version, step.worker_id)
    cls = RosterAdd if step.kind is MessageType.ROSTER_ADD else RosterUpdate
    if step.face is not None and face_size:
        return cls(step.version, step.worker_id, step.name, step.card_no, step.role, face_size, step.face)
    return cls(step.version, step.worker_id, step.name, step.card_no, step.role, 0, NO_FACE)


def chunk_message(step: ChunkStep, face: bytes) -> FaceChunk:
    """The FACE_CHUNK (seq 0) of `step`, its data cut from the whole `face`."""
    return FaceChunk(step.sha256, step.total_size, step.offset, face[step.offset:step.offset + step.length])


def plan_sync(device_version: int, project_version: int, floor: int, changes: Sequence[WorkerRow], *,
              face_sizes: Mapping[bytes, int], chunk_bytes: int, synced: int | None = None,
              resume: Mapping[bytes, int] | None = None) -> list[Step]:
    """Every step of one sync, in order: an optional RemoveAll, then each worker change, each
    announced face followed by its chunks.

    `changes` are the project's rows, in version order (those at or below the terminal's
    version for a delta, or all for a full resync, are skipped); `synced` the version of the
    terminal's last complete sync (None: the reported version is one); `face_sizes` gives
    each announced face's size (a face missing from it is sent as none); `resume` the
    terminal's resume point per face.
    """
    kind = sync_kind(device_version, project_version, floor)
    if kind is SyncKind.IN_SYNC:
        return []
    after = device_version if kind is SyncKind.DELTA else 0
    base = min(device_version, device_version if synced is None else synced) if kind is SyncKind.DELTA else 0
    steps: list[Step] = [RemoveAll()] if kind is SyncKind.FULL else []
    for step in worker_steps((row for row in changes if row.version > after), base):
        size = face_sizes.get(step.face, 0) if step.face is not None else 0
        if step.face is not None and not size:
            step = step._replace(face=None)
        steps.append(step)
        if step.face is not None:
            steps += face_chunks(step.face, size, chunk_bytes, (resume or {}).get(step.face, 0))
    return steps
