"""One session's downlink as a sans-I/O state machine: commands and roster changes out, answers in.

`DeviceDownlink` is created by the glue (service.py) for an authenticated session that has
downlink work, and fed the terminal's answers, the store's loads and the clock; every
public method returns `Action`s for the glue to carry out (send this message, mark this
command sent, load this face, ...). Nothing here awaits, reads a clock or touches a socket
or the store, so every rule is tested without them (tests/server/downlink/test_device.py).
Messages are numbered by the session (`Session.send_command`, passed in as `number`): it
owns the connection's `seq`.

Rules (docs/downlink.md is the design):

- **The window**: at most `window` frames unanswered, operator commands and roster frames
  together; a queued operator command always goes before the next roster frame. An answer
  (ACK, NACK, CONFIG_REPLY, ROSTER_VERSION_REPLY) is matched to what it answers by
  `ref_seq` only, against every seq the frame was sent with (a late answer to the first
  send of a resent frame still counts); one that matches nothing is counted and dropped.
- **Timeouts**: a frame unanswered `timeout_ms` after it was sent is sent again, up to
  `max_sends` sends in all; then an operator command fails ("no answer") and a roster sync
  stops. An operator command's sends count across sessions (`Command.attempts`), so a
  command that a terminal never answers (or that makes it drop the connection) fails after
  `max_sends` however often the terminal reconnects. A command past its expiry is not sent
  (again); the store's sweep marks it expired.
- **Operator commands**: the reply named in `commands.COMMAND_TYPES` acks one; a NACK fails
  it with the terminal's result code; any other answer fails it (UNEXPECTED_MESSAGE).
  Arguments are checked again when the message is built; a stored row that fails the check
  fails without being sent. A ROSTER_VERSION_REPLY to an operator's query also tells the
  roster sync where the terminal stands.
- **Roster sync** (states in `ROSTER_TRANSITIONS`, a table; a move not in it is a bug):

      IDLE --start--> QUERYING --reply--> LOADING --behind--> SYNCING --done--> IN_SYNC
                         |                   |--in sync--------------------------^ |
                         |--failed--> FAILED <-------------- failed --|            |
      IN_SYNC / FAILED --start (a roster change)--> QUERYING;  --reply (an operator's query)--> LOADING

  A roster change while QUERYING, LOADING or SYNCING sets `again`: the sync queries once
  more when it ends. Rows come from the store a page (`ROSTER_PAGE_ROWS`) at a time, the
  next page asked for while the current one still has `window` steps to go.
- **Which rows, and how**: the delta holds the rows above the version the terminal reports;
  whether a row goes as ROSTER_ADD or ROSTER_UPDATE and whether it announces its face is
  decided against `base = min(reported, synced)`, where `synced` is the version of the
  terminal's last complete sync (`Device.roster_version`, given at construction). After a
  broken session the terminal reports the version of the last row it applied, but rows are
  sent at their latest version, so it need not hold a worker added (or a face changed) at or
  below that version whose row changed since; it surely holds the state of `synced`.
  `RosterAcked` says when a sync completed (or the terminal was found in sync): the glue
  records that version as the new `synced`; partial progress is not recorded (the next
  session asks the terminal anyway, and a lower `synced` only makes the next delta send
  more, never less).
- **Faces**: a face is loaded (`LoadFace`) before the step announcing it is sent, the next
  one while the current one is sent; at most two are held. Its FACE_CHUNKs follow the step
  and are sent only while the glue's `chunk_room` (bytes the connection may still queue,
  `downlink_max_unsent_bytes` minus what is unsent) is above 0. A face is a barrier: no
  roster step after it is sent until all its chunks are acknowledged, so a terminal whose
  face failed has nothing later in flight. NACK COMMAND_FAILED on a chunk (the terminal
  lost its partial face) starts the face again at offset 0, up to `max_sends` times in a
  sync; the first face of a sync resumes where the terminal's last session left it
  (`LoadFace.resume`), and `partial_face` says where this one stands when the session ends.
- NACK UNKNOWN_WORKER on a ROSTER_REMOVE means the worker is gone already: done. Any other
  NACK of a roster frame stops the sync (FAILED) until the next roster change or session.
"""

from __future__ import annotations

import enum
import json
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol, Union

from lmg.protocol import MessageType, ResultCode
from lmg.server.downlink import commands as command_table
from lmg.server.downlink.roster import (
    ChunkStep,
    RemoveAll,
    SyncKind,
    WorkerRow,
    WorkerStep,
    chunk_message,
    face_chunks,
    step_message,
    sync_kind,
    worker_steps,
)
from lmg.server.gateway.session import Send

# Worker rows asked of the store at a time: a page of ~100 rows is ~50 KB of Python objects
# per syncing terminal (10,000 terminals syncing at once: ~500 MB), and one indexed read.
ROSTER_PAGE_ROWS = 100
FACES_HELD = 2  # the face being sent and the next one (loaded ahead so the window stays full)
COMMAND_PAGE = 16  # pending commands read at a time (`Store.pending_commands` default)

_ACK, _NACK = int(MessageType.ACK), int(MessageType.NACK)
_REPLY = int(MessageType.ROSTER_VERSION_REPLY)
_QUERY_REPLY = MessageType.ROSTER_VERSION_REPLY


class CommandRow(Protocol):
    """What the machine needs of a stored command (`lmg.storage.Command`)."""

    @property
    def id(self) -> int: ...
    @property
    def command_type(self) -> int: ...
    @property
    def payload(self) -> bytes: ...
    @property
    def expires_at_ms(self) -> int | None: ...
    @property
    def attempts(self) -> int: ...


@dataclass(frozen=True)
class DownlinkLimits:
    """The downlink settings a machine needs, in its units (server/settings.py has their reasons)."""

    window: int = 4
    timeout_ms: int = 30_000
    max_sends: int = 3
    chunk_bytes: int = 16_384

    def __post_init__(self) -> None:
        for name in ("window", "timeout_ms", "max_sends", "chunk_bytes"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be greater than 0, got {getattr(self, name)!r}")


# --- actions: what the glue must do --------------------------------------------------------------


class MarkSent(NamedTuple):
    """`Store.mark_command_sent(command_id, seq, now_ms)`."""

    command_id: int
    seq: int
    now_ms: int


class CommandDone(NamedTuple):
    """`Store.complete_command`: acked (failed False) or failed with the terminal's code (None:
    no answer, or the command could not be built); `reply` the UTF-8 JSON of a reply that
    carries data (CONFIG_REPLY's values, ROSTER_VERSION_REPLY's version); `sends` how often
    it went out."""

    command_id: int
    type_name: str
    failed: bool
    result_code: int | None
    error: str | None
    reply: bytes | None
    sends: int


class LoadCommands(NamedTuple):
    """Read the device's pending commands; answer with `commands_loaded`."""

    limit: int


class LoadProject(NamedTuple):
    """Read the project's roster version and floor; answer with `project_loaded`. `sync` (in
    each roster load) names the sync that asked: an answer for an earlier one is dropped."""

    sync: int


class LoadChanges(NamedTuple):
    """Read `roster_changes(after_version, limit)`; answer with `changes_loaded`."""

    after_version: int
    limit: int
    sync: int


class LoadFace(NamedTuple):
    """Read face `sha256` (and with `resume`, the device's recorded progress on it); answer
    with `face_loaded`."""

    sha256: bytes
    resume: bool
    sync: int


class RosterAcked(NamedTuple):
    """A sync completed (or found the terminal in sync): the terminal holds the whole roster of
    `version`. The glue records it as the device's `roster_version` (the next session's `synced`)."""

    version: int


class FaceProgress(NamedTuple):
    """The terminal holds `offset` bytes of face `sha256` (0: forget the progress)."""

    sha256: bytes
    offset: int


@dataclass(frozen=True)
class SyncSummary:
    """One roster sync, for its log line: from/to versions, what went out, how long it took."""

    kind: str  # "delta" or "full"
    from_version: int
    to_version: int
    project_version: int
    steps: int
    faces: int
    face_bytes: int
    faces_missing: int
    face_restarts: int
    duration_ms: int


class SyncDone(NamedTuple):
    summary: SyncSummary


class SyncFailed(NamedTuple):
    summary: SyncSummary
    reason: str


# The closed set of actions (service.py handles each kind; a type checker proves it).
Action = Union[Send, MarkSent, CommandDone, LoadCommands, LoadProject, LoadChanges, LoadFace, RosterAcked,
               FaceProgress, SyncDone, SyncFailed]
Number = Callable[[Any], tuple[Send, int]]  # Session.send_command


# --- the roster sync's states --------------------------------------------------------------------


class RosterState(enum.Enum):
    IDLE = "idle"  # not started (the device's project has no roster here)
    QUERYING = "querying"  # ROSTER_VERSION_QUERY to send or awaiting its reply
    LOADING = "loading"  # the project's version and floor being read
    SYNCING = "syncing"  # steps and faces going out
    IN_SYNC = "in_sync"
    FAILED = "failed"  # stopped until the next roster change or session


class RosterEvent(enum.Enum):
    START = "start"  # the session started, or the project's roster changed
    REPLY = "reply"  # the terminal said which version it holds
    IN_SYNC = "in_sync"
    BEHIND = "behind"
    NO_PROJECT = "no_project"
    DONE = "done"
    FAILED = "failed"


_S, _E = RosterState, RosterEvent
ROSTER_TRANSITIONS: dict[tuple[RosterState, RosterEvent], RosterState] = {
    (_S.IDLE, _E.START): _S.QUERYING,
    (_S.IN_SYNC, _E.START): _S.QUERYING,
    (_S.FAILED, _E.START): _S.QUERYING,
    (_S.QUERYING, _E.REPLY): _S.LOADING,
    (_S.QUERYING, _E.FAILED): _S.FAILED,
    (_S.IN_SYNC, _E.REPLY): _S.LOADING,  # an operator's query found the terminal elsewhere
    (_S.FAILED, _E.REPLY): _S.LOADING,
    (_S.LOADING, _E.IN_SYNC): _S.IN_SYNC,
    (_S.LOADING, _E.BEHIND): _S.SYNCING,
    (_S.LOADING, _E.NO_PROJECT): _S.IDLE,
    (_S.LOADING, _E.FAILED): _S.FAILED,
    (_S.SYNCING, _E.DONE): _S.IN_SYNC,
    (_S.SYNCING, _E.FAILED): _S.FAILED,
}
_BUSY = frozenset({_S.QUERYING, _S.LOADING, _S.SYNCING})  # a START here sets `again`


class _Kind(enum.Enum):
    COMMAND = "command"
    QUERY = "query"  # the sync's own ROSTER_VERSION_QUERY
    STEP = "step"
    CHUNK = "chunk"


class _Face:
    """A face to send: its bytes (None: missing from the store), the worker step announcing it
    (once sent), the chunks not sent yet, and how far the terminal acknowledged it."""

    __slots__ = ("sha256", "data", "resume", "step", "chunks", "acked", "unacked")

    def __init__(self, sha256: bytes, data: bytes | None, resume: int):
        self.sha256 = sha256
        self.data = data
        self.resume = resume  # where the terminal's last session left it (0: from the start)
        self.step: WorkerStep | None = None
        self.chunks: deque[ChunkStep] = deque()
        self.acked = 0  # bytes acknowledged, from offset 0 or the resume point
        self.unacked = 0  # chunks in flight and not given up

    def done(self) -> bool:
        return not self.chunks and not self.unacked


class InFlight:
    """One frame sent and not answered yet (or given up and waiting only to be forgotten)."""

    __slots__ = ("kind", "message", "reply", "seqs", "deadline_ms", "sends", "command", "spec", "step", "face",
                 "completes", "dead")

    def __init__(self, kind: _Kind, message: Any, reply: MessageType, sends: int):
        self.kind = kind
        self.message = message  # seq 0; numbered anew at every send
        self.reply = reply
        self.seqs: list[int] = []
        self.deadline_ms = 0
        self.sends = sends
        self.command: CommandRow | None = None
        self.spec: command_table.CommandType | None = None
        self.step: RemoveAll | WorkerStep | ChunkStep | None = None
        self.face: _Face | None = None  # the face a chunk belongs to
        self.completes: int | None = None  # the roster version the terminal holds once this is acked
        self.dead = False  # its sync stopped or its face restarted: the answer is ignored


class DeviceDownlink:
    """The downlink of one authenticated session; `project` None: no roster here."""

    def __init__(self, limits: DownlinkLimits, now_ms: int, project: str | None = None, synced: int = 0):
        self.limits = limits
        self.project = project
        self.synced = synced  # the version of the terminal's last complete sync (see the module rules)
        self.created_ms = now_ms
        self.flight: list[InFlight] = []  # at most limits.window, in sending order
        self.by_seq: dict[int, InFlight] = {}
        self.commands: deque[CommandRow] = deque()
        self.known_commands: set[int] = set()  # ids queued, in flight or done in this session
        self.loading_commands = False
        self.more_commands = False  # the last load filled its page: read again when drained
        self.unmatched = 0  # answers that matched no frame in flight
        # roster
        self.roster = RosterState.IDLE
        self.again = False
        self.device_version: int | None = None  # what the terminal holds, as last known
        self.query_sent = False
        self.sync_id = 0  # names the current sync in its loads; a new or stopped sync moves it on
        self.loading = False  # a store read for the sync is out (project, changes)
        self.queue: deque[RemoveAll | WorkerStep] = deque()
        self.next_after = 0  # roster_changes are read after this version
        self.more_pages = False
        self.faces: dict[bytes, _Face] = {}  # loaded, not announced yet
        self.face_loading: bytes | None = None
        self.sending: _Face | None = None  # the face announced last, until its chunks are all acked
        self.first_face = True  # the next face loaded is the sync's first (it may resume)
        self._sync: dict[str, int] = {}
        self._sync_kind = SyncKind.DELTA
        self.ready = False  # `pump` may send something now: the link checks this on every pass

    # -- what the glue asks ----------------------------------------------------------------------
    def idle(self) -> bool:
        """Nothing queued, in flight, loading or to sync: the glue may forget this machine."""
        return (not self.flight and not self.commands and not self.loading_commands and not self.more_commands
                and self.roster in (_S.IDLE, _S.IN_SYNC, _S.FAILED) and not self.again)

    def deadline_ms(self) -> int | None:
        """When `tick` must next be called (the earliest answer due), None with nothing in flight."""
        return min((entry.deadline_ms for entry in self.flight), default=None)

    def partial_face(self) -> FaceProgress | None:
        """The face the terminal holds part of (for the store when the session ends), if any."""
        face = self.sending
        if face is None or face.data is None or not 0 < face.acked < len(face.data):
            return None
        return FaceProgress(face.sha256, face.acked)

    # -- input: the session and the store ---------------------------------------------------------
    def start_roster(self, now_ms: int) -> list[Action]:
        """The session started, or the project's roster changed: ask the terminal's version
        (or remember to ask again when the sync under way ends)."""
        if self.project is None:
            return []
        if self.roster in _BUSY:
            self.again = True
        else:
            self._move(_E.START)
            self.query_sent = False
        self._update()
        return []

    def want_commands(self) -> list[Action]:
        """The store may hold commands for this device (a session start, a signal)."""
        if self.loading_commands:
            self.more_commands = True  # read again after the load under way
            return []
        self.loading_commands = True
        self._update()
        return [LoadCommands(COMMAND_PAGE)]

    def commands_loaded(self, rows: Sequence[CommandRow], now_ms: int) -> list[Action]:
        """Answer to LoadCommands: the pending commands, oldest first (a full page: more may wait)."""
        self.loading_commands = False
        actions: list[Action] = []
        for row in rows:
            if row.id in self.known_commands:
                continue
            self.known_commands.add(row.id)
            self.commands.append(row)
        if len(rows) >= COMMAND_PAGE or self.more_commands:
            self.more_commands = True
        self._update()
        return actions

    def commands_failed_to_load(self) -> list[Action]:
        """The store could not be read; the next signal or session tries again."""
        self.loading_commands = False
        self._update()
        return []

    def project_loaded(self, exists: bool, version: int, floor: int, now_ms: int, *, sync: int) -> list[Action]:
        """Answer to LoadProject: whether the project exists, its roster version and floor."""
        if sync != self.sync_id:
            return []  # for a sync that stopped meanwhile
        self.loading = False
        if self.roster is not _S.LOADING:
            return []
        actions: list[Action] = []
        device = self.device_version if self.device_version is not None else 0
        kind = sync_kind(device, version, floor) if exists else SyncKind.IN_SYNC
        if not exists:
            self._move(_E.NO_PROJECT)
        elif kind is SyncKind.IN_SYNC:
            self._move(_E.IN_SYNC)
            self.synced = device  # at the project's version: every row at or below it applied
            actions.append(RosterAcked(device))
            actions += self._after_sync()
        else:
            self._move(_E.BEHIND)
            self._begin_sync(kind, device, version, now_ms)
            actions += self._prefetch()
        self._update()
        return actions

    def load_failed(self, reason: str, now_ms: int, *, sync: int) -> list[Action]:
        """A store read for the sync failed: the sync stops (the next change or session retries)."""
        if sync != self.sync_id:
            return []
        self.loading = False
        if self.roster in (_S.LOADING, _S.SYNCING):
            return self._fail(f"store read failed: {reason}", now_ms)
        return []

    def changes_loaded(self, rows: Sequence[WorkerRow], now_ms: int, *, sync: int) -> list[Action]:
        """Answer to LoadChanges: the next rows in version order (a short page is the last)."""
        if sync != self.sync_id:
            return []
        self.loading = False
        if self.roster is not _S.SYNCING:
            return []
        self.more_pages = len(rows) >= ROSTER_PAGE_ROWS
        if rows:
            self.next_after = rows[-1].version
            self.queue.extend(worker_steps(rows, self._sync["base"]))
        actions = self._maybe_finish(now_ms)
        if self.roster is _S.SYNCING:
            actions += self._prefetch()
        self._update()
        return actions

    def face_loaded(self, sha256: bytes, data: bytes | None, resume: int, now_ms: int, *, sync: int) -> list[Action]:
        """Answer to LoadFace: the face's bytes (None: not in the store) and the terminal's
        recorded progress on it (0 when none, or not asked)."""
        if sync != self.sync_id or self.face_loading != sha256:
            return []
        self.face_loading = None
        if self.roster is _S.SYNCING and sha256 not in self.faces:
            self.faces[sha256] = _Face(sha256, data, resume if data is not None and 0 < resume < len(data) else 0)
        actions = self._prefetch() if self.roster is _S.SYNCING else []
        self._update()
        return actions

    def answer(self, message: Any, now_ms: int) -> list[Action]:
        """An ACK, NACK, CONFIG_REPLY or ROSTER_VERSION_REPLY from the terminal."""
        entry = self.by_seq.get(message.ref_seq)
        if entry is None:
            self.unmatched += 1
            return []
        for seq in entry.seqs:
            self.by_seq.pop(seq, None)
        self.flight.remove(entry)
        actions: list[Action] = []
        if not entry.dead:
            if entry.kind is _Kind.COMMAND:
                actions = self._command_answered(entry, message, now_ms)
            elif entry.kind is _Kind.QUERY:
                actions = self._query_answered(entry, message, now_ms)
            else:
                actions = self._roster_answered(entry, message, now_ms)
        if self.roster is _S.SYNCING:
            actions += self._prefetch()  # the face just finished frees a slot for the next one
        self._update()
        return actions

    # -- time -----------------------------------------------------------------------------------
    def tick(self, now_ms: int, number: Number) -> list[Action]:
        """Resend what is overdue, give up on what was sent `max_sends` times."""
        actions: list[Action] = []
        for entry in [e for e in self.flight if now_ms >= e.deadline_ms]:
            if entry not in self.flight:
                continue  # dropped by a failure handled earlier in this loop
            command = entry.command
            expired = command is not None and command.expires_at_ms is not None and now_ms >= command.expires_at_ms
            if entry.dead or expired:
                self._forget(entry)  # the store's sweep marks an expired command
            elif entry.sends < self.limits.max_sends:
                if entry.spec is not None and command is not None:  # built anew: set-time carries now
                    entry.message = command_table.build_message(
                        entry.spec, command_table.decode_arguments(entry.spec, command.payload), now_ms)
                actions += self._transmit(entry, now_ms, number)
            else:
                self._forget(entry)
                sends = entry.sends
                if command is not None:
                    actions.append(CommandDone(command.id, entry.spec.name if entry.spec else "?", True, None,
                                               f"no answer after {sends} sends", None, sends))
                else:
                    what = "query" if entry.kind is _Kind.QUERY else type(entry.message).__name__
                    actions += self._fail(f"no answer to {what} after {sends} sends", now_ms)
        self._update()
        return actions

    # -- output ---------------------------------------------------------------------------------
    def pump(self, now_ms: int, number: Number, chunk_room: int) -> list[Action]:
        """Fill the window: operator commands first, then the roster sync's next frames.

        `number` is `Session.send_command`; `chunk_room` is how many bytes of FACE_CHUNK data
        may still be queued on the connection now (a chunk goes while it is above 0)."""
        actions: list[Action] = []
        window = self.limits.window
        while len(self.flight) < window:
            if self.commands:
                actions += self._send_command(self.commands.popleft(), now_ms, number)
                continue
            roster = self.roster
            if roster is _S.QUERYING and not self.query_sent:
                self.query_sent = True
                entry = InFlight(_Kind.QUERY, command_table.build_message("roster-version-query", {}, now_ms),
                                 _QUERY_REPLY, 0)
                actions += self._transmit(entry, now_ms, number)
                continue
            if roster is not _S.SYNCING:
                break
            sent = self._next_roster_frame(now_ms, number, chunk_room)
            if sent is None:
                break
            frame_actions, chunk_bytes = sent
            chunk_room -= chunk_bytes
            actions += frame_actions
        if self.roster is _S.SYNCING:
            actions += self._prefetch()
        if self.more_commands and not self.commands and not self.loading_commands:
            self.more_commands = False
            actions += self.want_commands()
        self._update()
        return actions

    # -- the roster sync ------------------------------------------------------------------------
    def _move(self, event: RosterEvent) -> None:
        target = ROSTER_TRANSITIONS.get((self.roster, event))
        if target is None:
            raise RuntimeError(f"roster sync: no move from {self.roster.value} on {event.value}")
        self.roster = target

    def _begin_sync(self, kind: SyncKind, device: int, project_version: int, now_ms: int) -> None:
        self._sync_kind = kind
        after = device if kind is SyncKind.DELTA else 0
        base = min(device, self.synced) if kind is SyncKind.DELTA else 0
        self._sync = {"base": base, "from": device, "project": project_version, "started": now_ms, "steps": 0,
                      "faces": 0, "face_bytes": 0, "missing": 0, "restarts": 0}
        self.queue.clear()
        self.faces.clear()
        self.face_loading = None
        self.sending = None
        self.first_face = True
        if kind is SyncKind.FULL:
            self.queue.append(RemoveAll())
        self.next_after = after
        self.more_pages = True  # the first page is read by _prefetch

    def _next_roster_frame(self, now_ms: int, number: Number, chunk_room: int) -> tuple[list[Action], int] | None:
        """Send the sync's next frame and say how many chunk bytes it took: the next chunk of
        the face announced last, else (once that face is all acknowledged: a face is a
        barrier) the next step, whose own face must be loaded first. None: nothing to send now."""
        face = self.sending
        if face is not None:
            if face.chunks:
                if chunk_room <= 0:
                    return None
                chunk = face.chunks.popleft()
                assert face.data is not None and face.step is not None
                entry = InFlight(_Kind.CHUNK, chunk_message(chunk, face.data), MessageType.ACK, 0)
                entry.step, entry.face = chunk, face
                entry.completes = face.step.version if chunk.last else None
                face.unacked += 1
                self._sync["face_bytes"] += chunk.length
                return self._transmit(entry, now_ms, number), chunk.length
            if face.unacked:
                return None
            self.sending = None
        if not self.queue:
            return None
        head = self.queue[0]
        face = None
        if isinstance(head, WorkerStep) and head.face is not None:
            face = self.faces.get(head.face)
            if face is None:
                return None  # being loaded (see _prefetch)
            del self.faces[head.face]
        self.queue.popleft()
        size = len(face.data) if face is not None and face.data is not None else 0
        entry = InFlight(_Kind.STEP, step_message(head, size), MessageType.ACK, 0)
        entry.step = head
        self._sync["steps"] += 1
        if face is not None and size and isinstance(head, WorkerStep):
            face.step = head
            face.chunks.extend(face_chunks(face.sha256, size, self.limits.chunk_bytes, face.resume))
            face.acked = face.chunks[0].offset
            self.sending = face
            self._sync["faces"] += 1
        else:
            if face is not None:
                self._sync["missing"] += 1
            entry.completes = head.version
        return self._transmit(entry, now_ms, number), 0

    def _prefetch(self) -> list[Action]:
        """Ask for the next page of rows and the next face before they are needed."""
        actions: list[Action] = []
        if self.more_pages and not self.loading and len(self.queue) < 2 * self.limits.window:
            self.loading = True
            actions.append(LoadChanges(self.next_after, ROSTER_PAGE_ROWS, self.sync_id))
        held = len(self.faces) + (self.sending is not None)
        if self.face_loading is None and held < FACES_HELD:
            for step in list(self.queue)[:2 * self.limits.window]:
                if isinstance(step, WorkerStep) and step.face is not None:
                    if step.face not in self.faces:
                        self.face_loading = step.face
                        actions.append(LoadFace(step.face, self.first_face, self.sync_id))
                        self.first_face = False
                    break
        return actions

    def _query_answered(self, entry: InFlight, message: Any, now_ms: int) -> list[Action]:
        if message.msg_type != _REPLY:
            code = message.result if message.msg_type == _NACK else int(ResultCode.UNEXPECTED_MESSAGE)
            return self._fail(f"roster version query answered with {_code_name(code)}", now_ms)
        return self._version_reported(message.roster_version, now_ms)

    def _version_reported(self, version: int, now_ms: int) -> list[Action]:
        self.device_version = version
        if self.roster in (_S.QUERYING, _S.IN_SYNC, _S.FAILED) and self.project is not None:
            self._move(_E.REPLY)
            self.sync_id += 1
            self.loading = True
            return [LoadProject(self.sync_id)]
        return []

    def _roster_answered(self, entry: InFlight, message: Any, now_ms: int) -> list[Action]:
        step, face = entry.step, entry.face
        if face is not None:
            face.unacked -= 1
        if message.msg_type == _NACK:
            code = message.result
            removing = isinstance(step, WorkerStep) and step.kind is MessageType.ROSTER_REMOVE
            if removing and code == ResultCode.UNKNOWN_WORKER:
                pass  # gone already: as good as removed
            elif face is not None and code == ResultCode.COMMAND_FAILED:
                return self._restart_face(face, now_ms)
            else:
                return self._fail(f"{type(entry.message).__name__} refused: {_code_name(code)}", now_ms)
        elif message.msg_type != _ACK:
            return self._fail(f"{type(entry.message).__name__} answered with {type(message).__name__}", now_ms)
        actions: list[Action] = []
        if isinstance(step, ChunkStep) and face is not None:
            face.acked = step.offset + step.length
            if step.last and face.resume:
                actions.append(FaceProgress(face.sha256, 0))  # the recorded partial transfer is complete
        if entry.completes is not None:
            self.device_version = entry.completes
        elif isinstance(step, RemoveAll):
            self.device_version = 0
        return actions + self._maybe_finish(now_ms)

    def _restart_face(self, face: _Face, now_ms: int) -> list[Action]:
        """The terminal lost its partial face (NACK COMMAND_FAILED): send it again from offset 0.
        Its other chunks in flight are forgotten (the terminal refuses them too)."""
        self._sync["restarts"] += 1
        if self._sync["restarts"] > self.limits.max_sends:
            return self._fail(f"face sent again from the start {self.limits.max_sends} times and still refused",
                              now_ms)
        for other in self.flight:
            if other.face is face:
                other.dead = True
        assert face.data is not None
        face.unacked = 0
        face.chunks = deque(face_chunks(face.sha256, len(face.data), self.limits.chunk_bytes, 0))
        face.acked = 0
        self.sending = face
        return []

    def _maybe_finish(self, now_ms: int) -> list[Action]:
        if self.roster is not _S.SYNCING:
            return []
        live = any(not e.dead and e.kind in (_Kind.STEP, _Kind.CHUNK) for e in self.flight)
        if self.queue or self.more_pages or self.loading or (self.sending and not self.sending.done()) or live:
            return []
        self._move(_E.DONE)
        summary = self._summary(now_ms)
        self._clear_sync()
        self.synced = self.device_version or 0
        actions: list[Action] = [RosterAcked(self.synced), SyncDone(summary)]
        return actions + self._after_sync()

    def _after_sync(self) -> list[Action]:
        if self.again:
            self.again = False
            self._move(_E.START)
            self.query_sent = False
        return []

    def _fail(self, reason: str, now_ms: int) -> list[Action]:
        if self.roster not in (_S.QUERYING, _S.LOADING, _S.SYNCING):
            return []
        summary = self._summary(now_ms)
        for entry in self.flight:
            if entry.kind is not _Kind.COMMAND:
                entry.dead = True
        self._move(_E.FAILED)
        self._clear_sync()
        actions: list[Action] = [SyncFailed(summary, reason)]
        if self.again:  # a change came in meanwhile: worth another try
            self.again = False
            self._move(_E.START)
            self.query_sent = False
        return actions

    def _clear_sync(self) -> None:
        self.sync_id += 1  # what it still has out in the store is dropped when it comes back
        self.queue.clear()
        self.faces.clear()
        self.face_loading = None
        self.sending = None
        self.more_pages = False
        self.loading = False

    def _summary(self, now_ms: int) -> SyncSummary:
        s = self._sync
        return SyncSummary(self._sync_kind.value, s.get("from", self.device_version or 0), self.device_version or 0,
                           s.get("project", 0), s.get("steps", 0), s.get("faces", 0), s.get("face_bytes", 0),
                           s.get("missing", 0), s.get("restarts", 0), now_ms - s.get("started", now_ms))

    # -- operator commands ------------------------------------------------------------------------
    def _send_command(self, row: CommandRow, now_ms: int, number: Number) -> list[Action]:
        if row.expires_at_ms is not None and now_ms >= row.expires_at_ms:
            return []  # the store's sweep marks it expired
        try:
            spec = command_table.get_command_type(row.command_type)
            message = command_table.build_message(spec, command_table.decode_arguments(spec, row.payload), now_ms)
        except ValueError as exc:
            return [CommandDone(row.id, command_table.type_name(row.command_type), True, None,
                                f"not sent: {exc}", None, row.attempts)]
        if row.attempts >= self.limits.max_sends:
            return [CommandDone(row.id, spec.name, True, None, f"no answer after {row.attempts} sends", None,
                                row.attempts)]
        entry = InFlight(_Kind.COMMAND, message, spec.reply, row.attempts)
        entry.command, entry.spec = row, spec
        return self._transmit(entry, now_ms, number)

    def _command_answered(self, entry: InFlight, message: Any, now_ms: int) -> list[Action]:
        command, spec = entry.command, entry.spec
        assert command is not None and spec is not None
        kind = message.msg_type
        if kind == _NACK:
            return [CommandDone(command.id, spec.name, True, message.result, None, None, entry.sends)]
        if kind != spec.reply:
            return [CommandDone(command.id, spec.name, True, int(ResultCode.UNEXPECTED_MESSAGE),
                                f"answered with {MessageType(kind).name}, expected {spec.reply.name}", None,
                                entry.sends)]
        actions: list[Action] = [CommandDone(command.id, spec.name, False, int(ResultCode.OK), None,
                                             reply_json(message), entry.sends)]
        if kind == _REPLY:
            actions += self._version_reported(message.roster_version, now_ms)
        return actions

    # -- sending -----------------------------------------------------------------------------------
    def _transmit(self, entry: InFlight, now_ms: int, number: Number) -> list[Action]:
        send, seq = number(entry.message)
        entry.seqs.append(seq)
        entry.sends += 1
        entry.deadline_ms = now_ms + self.limits.timeout_ms
        self.by_seq[seq] = entry
        if entry not in self.flight:
            self.flight.append(entry)
        actions: list[Action] = [send]
        if entry.command is not None:
            actions.append(MarkSent(entry.command.id, seq, now_ms))
        return actions

    def _forget(self, entry: InFlight) -> None:
        for seq in entry.seqs:
            self.by_seq.pop(seq, None)
        if entry in self.flight:
            self.flight.remove(entry)
        if entry.face is not None and not entry.dead:
            entry.face.unacked -= 1

    def _update(self) -> None:
        """Recompute `ready`, the flag the link reads on every pass: True only when `pump` would
        send something now (given room on the connection), so a blocked machine costs nothing."""
        if len(self.flight) >= self.limits.window:
            self.ready = False
        elif self.commands or (self.more_commands and not self.loading_commands):
            self.ready = True
        elif self.roster is _S.QUERYING:
            self.ready = not self.query_sent
        elif self.roster is _S.SYNCING:
            self.ready = self._roster_frame_due()
        else:
            self.ready = False

    def _roster_frame_due(self) -> bool:
        """A roster frame could go now (room on the connection aside): a chunk of the face
        being sent, or (past the face barrier) the next step with its face loaded."""
        face = self.sending
        if face is not None:
            if face.chunks:
                return True
            if face.unacked:
                return False
        if not self.queue:
            return False
        head = self.queue[0]
        return not (isinstance(head, WorkerStep) and head.face is not None and head.face not in self.faces)


def _code_name(code: int) -> str:
    try:
        return ResultCode(code).name
    except ValueError:
        return f"0x{code:04x}"


def reply_json(message: Any) -> bytes | None:
    """What a reply carries, as the UTF-8 JSON the store keeps (`Command.reply`): CONFIG_REPLY's
    values as an object in the order given, ROSTER_VERSION_REPLY's version and size; None
    for an ACK."""
    if message.msg_type == _REPLY:
        data: dict[str, Any] = {"roster_version": message.roster_version, "worker_count": message.worker_count}
    elif message.msg_type == int(MessageType.CONFIG_REPLY):
        data = {entry.key: entry.value for entry in message.entries}
    else:
        return None
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
