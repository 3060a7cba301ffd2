"""One session's downlink machine without sockets or a store: the window, answers, timeouts and the
roster sync, against the simulator's terminal (simulators/device.py) over a fake wire."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import date

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lmg.protocol import (
    Ack,
    ConfigReply,
    ConfigEntry,
    FaceChunk,
    MessageType,
    Nack,
    ResultCode,
    RosterAdd,
    RosterRemove,
    RosterUpdate,
    RosterVersionQuery,
    RosterVersionReply,
    SetTime,
)
from lmg.server.downlink.commands import COMMAND_TYPES, encode_arguments, parse_arguments
from lmg.server.downlink.device import (
    COMMAND_PAGE,
    ROSTER_PAGE_ROWS,
    ROSTER_TRANSITIONS,
    CommandDone,
    DeviceDownlink,
    DownlinkLimits,
    FaceProgress,
    LoadChanges,
    LoadCommands,
    LoadFace,
    LoadProject,
    MarkSent,
    RosterAcked,
    RosterEvent,
    RosterState,
    SyncDone,
    SyncFailed,
)
from lmg.server.gateway.session import Send
from lmg.simulators.device import TerminalDevice
from lmg.simulators.terminal import worker_id_for
from lmg.storage import Command, CommandState, Worker

T0 = 1_763_942_400_000
LIMITS = DownlinkLimits(window=4, timeout_ms=30_000, max_sends=3, chunk_bytes=16_384)
INF = 1 << 40


def face(n: int, size: int = 30_000) -> bytes:
    return (b"\xff\xd8\xff" + f"face-{n}-".encode() * size)[:size]


def sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def command(id_: int, name: str, *words: str, expires: int | None = None, attempts: int = 0) -> Command:
    spec = COMMAND_TYPES[name]
    return Command(id_, "GS-1", int(spec.message_type), encode_arguments(parse_arguments(name, words)),
                   CommandState.QUEUED, None, None, T0, None, None, expires, attempts)


def worker(n: int, version: int, *, added: int | None = None, face_sha: bytes | None = None, face_version: int = 0,
           on_roster: bool = True, name: str | None = None) -> Worker:
    return Worker("P1", worker_id_for(n), name or f"w{n}", "", "", "", "worker", date(2025, 1, 1), None, face_sha,
                  on_roster, version, version if added is None else added, face_version, 0)


@dataclass
class Store:
    """The rows a machine's loads read."""

    rows: list[Worker] = field(default_factory=list)
    faces: dict[bytes, bytes] = field(default_factory=dict)
    progress: dict[bytes, int] = field(default_factory=dict)
    commands: list[Command] = field(default_factory=list)
    floor: int = 0
    exists: bool = True

    @property
    def version(self) -> int:
        return max((w.version for w in self.rows), default=0)

    def add(self, *rows: Worker) -> None:
        for row in rows:
            self.rows = [w for w in self.rows if w.worker_id != row.worker_id] + [row]
            if row.face_sha256 is not None and row.face_sha256 not in self.faces:
                raise AssertionError("add the face first")


class Harness:
    """A machine, a terminal and a store, wired without sockets. `run` pumps, delivers every
    frame to the terminal, feeds its answers back and answers every load, until quiet."""

    def __init__(self, store: Store | None = None, limits: DownlinkLimits = LIMITS, device: TerminalDevice | None = None,
                 project: str | None = "P1", synced: int = 0):
        self.store = store or Store()
        self.device = device or TerminalDevice()
        self.machine = DeviceDownlink(limits, T0, project, synced)
        self.now = T0
        self.seq = 100
        self.wire: list = []  # frames sent, in order
        self.actions: list = []  # every action but Send
        self.window_seen = 0
        self.chunk_room = INF
        self.answers: list = []
        self.delivered: set[int] = set()

    def number(self, message):
        self.seq += 1
        numbered = message._replace(seq=self.seq)
        return Send(numbered), self.seq

    def carry_out(self, actions) -> None:
        pending = list(actions)
        while pending:
            action = pending.pop(0)
            if isinstance(action, Send):
                self.wire.append(action.message)
                continue
            self.actions.append(action)
            m, now = self.machine, self.now
            if isinstance(action, LoadCommands):
                pending += m.commands_loaded(self.store.commands[:action.limit], now)
            elif isinstance(action, LoadProject):
                pending += m.project_loaded(self.store.exists, self.store.version, self.store.floor, now,
                                            sync=action.sync)
            elif isinstance(action, LoadChanges):
                rows = sorted((w for w in self.store.rows if w.version > action.after_version), key=lambda w: w.version)
                pending += m.changes_loaded(rows[:action.limit], now, sync=action.sync)
            elif isinstance(action, LoadFace):
                resume = self.store.progress.get(action.sha256, 0) if action.resume else 0
                pending += m.face_loaded(action.sha256, self.store.faces.get(action.sha256), resume, now,
                                         sync=action.sync)
            elif isinstance(action, CommandDone):
                self.store.commands = [c for c in self.store.commands if c.id != action.command_id]

    def pump(self) -> list:
        before = len(self.wire)
        self.carry_out(self.machine.pump(self.now, self.number, self.chunk_room))
        self.window_seen = max(self.window_seen, len(self.machine.flight))
        return self.wire[before:]

    def deliver(self, frames) -> list:
        """The terminal carries out `frames` (each once); returns its answers."""
        answers = []
        for frame in frames:
            if frame.seq not in self.delivered:
                self.delivered.add(frame.seq)
                answers += self.device.handle(frame, self.now)
        return answers

    def answer(self, answers) -> None:
        for answer in answers:
            self.carry_out(self.machine.answer(answer, self.now))

    def run(self, rounds: int = 100_000) -> None:
        """Deliver every frame sent and not delivered yet, answer, pump; until nothing moves."""
        for _ in range(rounds):
            self.pump()
            answers = self.deliver(self.wire)
            if not answers and not [f for f in self.wire if f.seq not in self.delivered]:
                if not self.pump():
                    return
                continue
            self.answer(answers)
        raise AssertionError("the machine never went quiet")

    def tick(self, advance_ms: int) -> list:
        self.now += advance_ms
        before = len(self.wire)
        self.carry_out(self.machine.tick(self.now, self.number))
        return self.wire[before:]

    def of(self, kind) -> list:
        return [a for a in self.actions if isinstance(a, kind)]


def roster_of(device: TerminalDevice) -> dict:
    return {wid: (e.name, e.face_sha256) for wid, e in device.workers.items()}


def expected(store: Store) -> dict:
    return {w.worker_id: (w.name, w.face_sha256) for w in store.rows if w.on_roster}


# --- operator commands ----------------------------------------------------------------------------


def test_commands_fill_the_window_in_order_and_each_reply_completes_its_own():
    h = Harness(project=None)
    h.store.commands = [command(i, "door-open", f"door={1 + i % 4}") for i in range(1, 7)]
    h.carry_out(h.machine.want_commands())
    frames = h.pump()
    assert [f.door for f in frames] == [2, 3, 4, 1]  # four: the window
    assert [a.command_id for a in h.of(MarkSent)] == [1, 2, 3, 4]
    assert h.pump() == []
    h.answer(h.deliver(frames[1:2]))  # the second answered first
    assert [(d.command_id, d.failed) for d in h.of(CommandDone)] == [(2, False)]
    assert [f.door for f in h.pump()] == [2]  # command 5 takes the free slot
    h.run()
    assert sorted(d.command_id for d in h.of(CommandDone)) == [1, 2, 3, 4, 5, 6]
    assert sorted(h.device.door_opens) == [(1, 5), (2, 5), (2, 5), (3, 5), (3, 5), (4, 5)]
    assert h.window_seen == 4 and h.machine.idle()


def test_a_nack_fails_with_the_terminal_s_code_and_a_wrong_reply_fails_too():
    h = Harness(project=None)
    h.store.commands = [command(1, "reboot"), command(2, "config-get", "keys=volume"), command(3, "reboot")]
    h.carry_out(h.machine.want_commands())
    reboot, config_get, reboot2 = h.pump()
    h.answer([Nack(reboot.seq, MessageType.REBOOT, ResultCode.COMMAND_FAILED, seq=1),
              Ack(config_get.seq, MessageType.CONFIG_GET, T0, (), seq=2),
              Ack(reboot2.seq, MessageType.REBOOT, T0, (), seq=3)])
    done = {d.command_id: d for d in h.of(CommandDone)}
    assert (done[1].failed, done[1].result_code, done[1].error) == (True, ResultCode.COMMAND_FAILED, None)
    assert (done[2].failed, done[2].result_code) == (True, ResultCode.UNEXPECTED_MESSAGE)
    assert done[2].error == "answered with ACK, expected CONFIG_REPLY"
    assert (done[3].failed, done[3].result_code, done[3].reply, done[3].sends) == (False, ResultCode.OK, None, 1)


def test_replies_with_data_are_kept_as_json():
    h = Harness(project=None)
    h.store.commands = [command(1, "config-get", "keys=volume,nonsense,relay_ms")]
    h.carry_out(h.machine.want_commands())
    h.run()
    (done,) = h.of(CommandDone)
    assert not done.failed and json.loads(done.reply) == {"volume": "7", "relay_ms": "3000"}
    h.answer([ConfigReply(999, (ConfigEntry("x", "y"),), seq=9)])  # matches nothing
    assert h.machine.unmatched == 1


def test_no_answer_is_sent_again_then_fails_after_max_sends():
    h = Harness(project=None)
    h.device.never_answer(MessageType.DOOR_OPEN)
    h.store.commands = [command(1, "door-open")]
    h.carry_out(h.machine.want_commands())
    h.run()
    (first,) = h.wire
    assert h.machine.deadline_ms() == T0 + 30_000
    assert h.tick(29_999) == []  # not yet
    second = h.tick(1)
    assert [type(f) for f in second] == [type(first)] and second[0].seq != first.seq
    assert [m.seq for m in h.of(MarkSent)] == [first.seq, second[0].seq]
    third = h.tick(30_000)
    assert len(third) == 1 and h.of(CommandDone) == []
    assert h.tick(30_000) == []
    (done,) = h.of(CommandDone)
    assert (done.failed, done.result_code, done.error, done.sends) == (True, None, "no answer after 3 sends", 3)
    assert h.machine.idle()


def test_a_late_answer_to_the_first_send_of_a_resent_command_completes_it():
    h = Harness(project=None)
    h.store.commands = [command(1, "reboot")]
    h.carry_out(h.machine.want_commands())
    (first,) = h.pump()
    h.tick(30_000)  # sent again
    h.answer([Ack(first.seq, MessageType.REBOOT, T0, (), seq=5)])
    (done,) = h.of(CommandDone)
    assert not done.failed and done.sends == 2
    h.answer([Ack(h.wire[-1].seq, MessageType.REBOOT, T0, (), seq=6)])  # the second send's answer: nothing left
    assert len(h.of(CommandDone)) == 1 and h.machine.unmatched == 1


def test_sends_count_across_sessions():
    h = Harness(project=None)
    h.store.commands = [command(1, "reboot", attempts=2), command(2, "reboot", attempts=3)]
    h.carry_out(h.machine.want_commands())
    (frame,) = h.pump()  # attempt 3 of command 1; command 2 used all of its sends already
    done = h.of(CommandDone)
    assert [(d.command_id, d.error) for d in done] == [(2, "no answer after 3 sends")]
    h.device.never_answer(MessageType.REBOOT)
    h.tick(30_000)
    assert h.of(CommandDone)[-1].command_id == 1 and h.of(CommandDone)[-1].error == "no answer after 3 sends"


def test_an_expired_command_is_neither_sent_nor_sent_again():
    h = Harness(project=None)
    h.store.commands = [command(1, "reboot", expires=T0), command(2, "reboot", expires=T0 + 40_000)]
    h.carry_out(h.machine.want_commands())
    (frame,) = h.pump()
    assert [m.command_id for m in h.of(MarkSent)] == [2]
    h.tick(45_000)  # past its expiry: forgotten, not resent, not failed (the store's sweep expires it)
    assert h.wire == [frame] and h.of(CommandDone) == [] and h.machine.idle()


def test_set_time_is_built_at_each_send():
    h = Harness(project=None)
    h.store.commands = [command(1, "set-time")]
    h.carry_out(h.machine.want_commands())
    (first,) = h.pump()
    assert first == SetTime(T0, seq=first.seq)
    (again,) = h.tick(30_000)
    assert again.server_time_ms == T0 + 30_000


def test_a_stored_row_that_fails_the_check_fails_without_being_sent():
    h = Harness(project=None)
    bad = Command(1, "GS-1", int(MessageType.REBOOT), b'{"delay_s": -5}', CommandState.QUEUED, None, None, T0,
                  None, None, None, 0)
    h.store.commands = [bad, Command(2, "GS-1", 0x0201, b"{}", CommandState.QUEUED, None, None, T0, None, None, None)]
    h.carry_out(h.machine.want_commands())
    assert h.pump() == []
    errors = [(d.command_id, d.type_name, d.error) for d in h.of(CommandDone)]
    assert errors[0][:2] == (1, "reboot") and "delay_s = -5 is out of range" in errors[0][2]
    assert errors[1][:2] == (2, "roster-add") and "unknown command type" in errors[1][2]


def test_loads_are_not_repeated_and_a_full_page_asks_for_more():
    h = Harness(project=None)
    h.store.commands = [command(i, "door-open") for i in range(1, COMMAND_PAGE + 3)]
    assert h.machine.want_commands() == [LoadCommands(COMMAND_PAGE)]
    assert h.machine.want_commands() == []  # one load at a time
    h.carry_out(h.machine.commands_loaded(h.store.commands[:COMMAND_PAGE], h.now))
    h.carry_out(h.machine.commands_loaded(h.store.commands[:2], h.now))  # the same rows again: ignored
    h.run()
    assert sorted(d.command_id for d in h.of(CommandDone)) == list(range(1, COMMAND_PAGE + 3))


# --- the roster sync ----------------------------------------------------------------------------------


def roster_store(workers: int = 5, *, faces: bool = True, size: int = 30_000) -> Store:
    store = Store()
    for n in range(1, workers + 1):
        data = face(n, size) if faces else None
        if data:
            store.faces[sha(data)] = data
        store.add(worker(n, n, face_sha=sha(data) if data else None, face_version=n if data else 0))
    return store


def test_a_terminal_at_the_project_s_version_is_in_sync_after_one_query():
    h = Harness(roster_store(faces=False))
    h.carry_out(h.machine.start_roster(h.now))
    assert h.machine.roster is RosterState.QUERYING and h.machine.ready
    (query,) = h.pump()
    assert query == RosterVersionQuery(seq=query.seq)
    h.answer([RosterVersionReply(query.seq, 5, 5, seq=1)])
    assert h.of(LoadProject) == [LoadProject(1)] and h.machine.roster is RosterState.IN_SYNC
    assert h.of(RosterAcked) == [RosterAcked(5)] and h.machine.idle()


def test_a_new_terminal_gets_every_worker_and_face_in_version_order():
    store = roster_store(5)
    h = Harness(store)
    h.carry_out(h.machine.start_roster(h.now))
    h.run()
    assert roster_of(h.device) == expected(store) and h.device.roster_version == 5
    assert h.machine.roster is RosterState.IN_SYNC and h.machine.idle()
    kinds = [type(f).__name__ for f in h.wire]
    assert kinds == ["RosterVersionQuery"] + ["RosterAdd", "FaceChunk", "FaceChunk"] * 5
    (done,) = h.of(SyncDone)
    s = done.summary
    assert (s.kind, s.from_version, s.to_version, s.steps, s.faces, s.face_bytes) == ("delta", 0, 5, 5, 5, 150_000)
    assert h.of(RosterAcked) == [RosterAcked(5)] and h.machine.synced == 5  # recorded once, complete
    assert h.window_seen <= 4


def test_a_delta_after_reconnect_sends_only_the_changes():
    store = roster_store(5)
    first = Harness(store)
    first.carry_out(first.machine.start_roster(first.now))
    first.run()
    new_face = face(99)
    store.faces[sha(new_face)] = new_face
    store.add(worker(2, 6, added=2, name="w2-renamed", face_sha=sha(face(2)), face_version=2),
              worker(3, 7, added=3, on_roster=False),
              worker(4, 8, added=4, face_sha=sha(new_face), face_version=8),
              worker(6, 9))
    h = Harness(store, device=first.device, synced=first.machine.synced)
    h.carry_out(h.machine.start_roster(h.now))
    h.run()
    assert roster_of(h.device) == expected(store) and h.device.roster_version == 9
    assert [type(f).__name__ for f in h.wire] == ["RosterVersionQuery", "RosterUpdate", "RosterRemove",
                                                  "RosterUpdate", "FaceChunk", "FaceChunk", "RosterAdd"]
    assert h.wire[1].face_size == 0 and h.wire[3].face_sha256 == sha(new_face)


@pytest.mark.parametrize("device_version, floor", [(50, 0), (2, 3)])
def test_a_version_above_the_project_or_below_the_floor_is_a_full_resync(device_version, floor):
    store = roster_store(5, faces=False)
    store.floor = floor
    device = TerminalDevice()
    device.handle(RosterAdd(device_version, worker_id_for(77), "stale", "", 1, 0, bytes(32), seq=1))
    assert device.roster_version == device_version
    h = Harness(store, device=device)
    h.carry_out(h.machine.start_roster(h.now))
    h.run()
    assert h.wire[1] == RosterRemove(0, "0" * 18, seq=h.wire[1].seq)
    assert roster_of(device) == expected(store) and device.roster_version == 5
    assert h.of(SyncDone)[0].summary.kind == "full"
    assert h.of(RosterAcked) == [RosterAcked(5)]


def test_rows_are_read_a_page_at_a_time():
    store = roster_store(ROSTER_PAGE_ROWS * 2 + 5, faces=False)
    h = Harness(store)
    h.carry_out(h.machine.start_roster(h.now))
    h.run()
    assert [a.after_version for a in h.of(LoadChanges)] == [0, ROSTER_PAGE_ROWS, 2 * ROSTER_PAGE_ROWS]
    assert h.device.roster_version == 2 * ROSTER_PAGE_ROWS + 5 and len(h.device.workers) == 2 * ROSTER_PAGE_ROWS + 5


def test_chunks_wait_for_room_on_the_connection_but_commands_do_not():
    store = roster_store(1)
    h = Harness(store)
    h.carry_out(h.machine.start_roster(h.now))
    h.answer(h.deliver(h.pump()))  # query and reply
    h.chunk_room = 0
    frames = h.pump()
    assert [type(f) for f in frames] == [RosterAdd]  # the announcement, no chunk
    h.store.commands = [command(1, "door-open")]
    h.carry_out(h.machine.want_commands())
    assert [type(f).__name__ for f in h.pump()] == ["DoorOpen"]
    h.chunk_room = 1  # any room takes one chunk (whole chunks only)
    assert [type(f) for f in h.pump()] == [FaceChunk]
    h.chunk_room = INF
    h.answer(h.deliver(h.wire))
    h.run()
    assert h.device.roster_version == 1


def test_a_face_is_a_barrier_for_the_steps_after_it():
    store = roster_store(2)
    h = Harness(store)
    h.carry_out(h.machine.start_roster(h.now))
    h.answer(h.deliver(h.pump()))
    frames = h.pump()
    assert [type(f) for f in frames] == [RosterAdd, FaceChunk, FaceChunk]  # not the next worker
    assert h.pump() == []
    h.answer(h.deliver(frames[:2]))
    assert h.pump() == []  # one chunk still unanswered
    h.answer(h.deliver(frames[2:]))
    assert [type(f) for f in h.pump()] == [RosterAdd, FaceChunk, FaceChunk]


def test_a_terminal_that_lost_its_partial_face_gets_it_again_from_offset_0():
    store = roster_store(1, size=40_000)
    h = Harness(store)
    h.carry_out(h.machine.start_roster(h.now))
    h.answer(h.deliver(h.pump()))
    add, c0, c1, c2 = h.pump()
    h.answer(h.deliver([add, c0]))
    h.device.forget_partial_faces()  # a power cut on the terminal
    h.answer(h.deliver([c1, c2]))  # both NACK COMMAND_FAILED: a gap
    h.run()
    assert [f.offset for f in h.wire if isinstance(f, FaceChunk)] == [0, 16_384, 32_768, 0, 16_384, 32_768]
    assert h.device.roster_version == 1 and h.of(SyncDone)[0].summary.face_restarts == 1


def test_a_face_refused_every_time_stops_the_sync():
    store = roster_store(1)
    h = Harness(store)
    h.device.fail(MessageType.FACE_CHUNK, code=ResultCode.COMMAND_FAILED)
    h.carry_out(h.machine.start_roster(h.now))
    h.run()
    (failed,) = h.of(SyncFailed)
    assert "face sent again from the start 3 times" in failed.reason
    assert h.machine.roster is RosterState.FAILED and h.machine.idle()


def test_a_session_that_ends_mid_face_says_where_and_the_next_resumes_there():
    store = roster_store(2, size=40_000)
    h = Harness(store)
    h.carry_out(h.machine.start_roster(h.now))
    h.answer(h.deliver(h.pump()))  # the query
    add, c0, c1, c2 = h.pump()  # the first worker's announcement and chunks in flight
    h.answer(h.deliver([add, c0, c1]))  # the connection drops before the last chunk
    progress = h.machine.partial_face()
    assert progress == FaceProgress(sha(face(1, 40_000)), 32_768)
    store.progress[progress.sha256] = progress.offset
    # the next session: the terminal still holds 32 KiB of the face, and version 0
    again = Harness(store, device=h.device)
    again.carry_out(again.machine.start_roster(again.now))
    again.run()
    assert again.of(LoadFace)[0] == LoadFace(progress.sha256, True, again.of(LoadProject)[0].sync)
    assert not any(f.resume for f in again.of(LoadFace)[1:])  # only the sync's first face may resume
    assert [f.offset for f in again.wire if isinstance(f, FaceChunk)][:1] == [32_768]
    assert FaceProgress(progress.sha256, 0) in again.actions  # the recorded progress is done with
    assert again.device.roster_version == 2 and roster_of(again.device) == expected(store)


def test_a_remove_of_an_absent_worker_refused_as_unknown_counts_as_done():
    store = roster_store(2, faces=False)
    store.add(worker(9, 3, added=1, on_roster=False))
    device = TerminalDevice()
    device.faults.nack_unknown_workers = True
    h = Harness(store, device=device)
    h.carry_out(h.machine.start_roster(h.now))
    h.run()
    assert any(isinstance(f, RosterRemove) for f in h.wire)
    assert h.of(SyncDone) and h.of(RosterAcked)[-1] == RosterAcked(3)


def test_any_other_refusal_stops_the_sync_where_it_stood():
    store = roster_store(3, faces=False)
    device = TerminalDevice()
    device.faults.roster_capacity = 2
    h = Harness(store, device=device)
    h.carry_out(h.machine.start_roster(h.now))
    h.run()
    (failed,) = h.of(SyncFailed)
    assert failed.reason == "RosterAdd refused: DEVICE_STORAGE_FULL"
    assert failed.summary.to_version == 2 and h.machine.roster is RosterState.FAILED


def test_a_query_the_terminal_does_not_support_stops_the_sync():
    h = Harness(roster_store(1))
    h.device.fail(MessageType.ROSTER_VERSION_QUERY, code=ResultCode.UNSUPPORTED_MESSAGE)
    h.carry_out(h.machine.start_roster(h.now))
    h.run()
    assert h.of(SyncFailed)[0].reason == "roster version query answered with UNSUPPORTED_MESSAGE"


def test_a_roster_frame_without_answer_is_sent_again_and_then_the_sync_stops():
    store = roster_store(1, faces=False)
    h = Harness(store)
    h.device.never_answer(MessageType.ROSTER_ADD)
    h.carry_out(h.machine.start_roster(h.now))
    h.run()
    assert [type(f) for f in h.tick(30_000)] == [RosterAdd]
    h.tick(30_000)
    h.tick(30_000)
    assert h.of(SyncFailed)[0].reason == "no answer to RosterAdd after 3 sends"


def test_a_roster_change_during_a_sync_asks_again_when_it_ends():
    store = roster_store(2, faces=False)
    h = Harness(store)
    h.carry_out(h.machine.start_roster(h.now))
    h.answer(h.deliver(h.pump()))
    frames = h.pump()
    store.add(worker(3, 3))
    h.carry_out(h.machine.start_roster(h.now))  # the signal: busy, so `again`
    assert h.machine.again and h.machine.roster is RosterState.SYNCING
    h.answer(h.deliver(frames))
    h.run()
    assert [type(f).__name__ for f in h.wire].count("RosterVersionQuery") == 2
    assert h.device.roster_version == 3 and not h.machine.again and h.machine.roster is RosterState.IN_SYNC


def test_an_operator_query_that_finds_the_terminal_behind_brings_it_up_to_date():
    store = roster_store(2, faces=False)
    h = Harness(store)
    h.carry_out(h.machine.start_roster(h.now))
    h.run()
    store.add(worker(3, 3))
    h.store.commands = [command(1, "roster-version-query")]
    h.carry_out(h.machine.want_commands())
    h.run()
    (done,) = h.of(CommandDone)
    assert json.loads(done.reply) == {"roster_version": 2, "worker_count": 2}
    assert h.device.roster_version == 3


def test_a_project_that_does_not_exist_leaves_the_sync_idle():
    store = Store(exists=False)
    h = Harness(store)
    h.carry_out(h.machine.start_roster(h.now))
    h.run()
    assert h.machine.roster is RosterState.IDLE and h.machine.idle()


def test_a_missing_face_is_sent_as_none_and_counted():
    store = roster_store(1)
    store.faces.clear()
    h = Harness(store)
    h.carry_out(h.machine.start_roster(h.now))
    h.run()
    assert h.wire[1].face_size == 0 and h.of(SyncDone)[0].summary.faces_missing == 1
    assert h.device.roster_version == 1


def test_a_failed_store_read_stops_the_sync():
    h = Harness(roster_store(1))
    h.carry_out(h.machine.start_roster(h.now))
    (query,) = h.pump()
    (load,) = h.machine.answer(RosterVersionReply(query.seq, 0, 0, seq=1), h.now)  # not carried out: it fails
    assert h.machine.roster is RosterState.LOADING
    h.carry_out(h.machine.load_failed("disk on fire", h.now, sync=load.sync))
    assert h.of(SyncFailed)[0].reason == "store read failed: disk on fire"


# --- the table ----------------------------------------------------------------------------------------


def test_the_roster_table_names_real_states_and_events_and_refuses_the_rest():
    machine = DeviceDownlink(LIMITS, T0, "P1")
    for state in RosterState:
        for event in RosterEvent:
            machine.roster = state
            if (state, event) in ROSTER_TRANSITIONS:
                machine._move(event)
                assert machine.roster is ROSTER_TRANSITIONS[(state, event)]
            else:
                with pytest.raises(RuntimeError, match=f"no move from {state.value} on {event.value}"):
                    machine._move(event)
    reachable = {RosterState.IDLE} | set(ROSTER_TRANSITIONS.values())
    assert reachable == set(RosterState)


# --- any mix, a perfect terminal -----------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(workers=st.integers(0, 12), faces=st.lists(st.integers(1, 40_000), max_size=12),
       commands=st.lists(st.sampled_from(["reboot", "door-open", "config-get", "set-time", "roster-version-query"]),
                         max_size=10), window=st.integers(1, 6), chunk=st.integers(1_000, 20_000),
       order=st.randoms(use_true_random=False))
def test_any_roster_and_commands_reach_a_conforming_terminal_within_the_window(workers, faces, commands, window,
                                                                               chunk, order):
    store = Store()
    for n in range(1, workers + 1):
        data = face(n, faces[n - 1]) if n <= len(faces) and faces[n - 1] >= 3 else None
        if data:
            store.faces[sha(data)] = data
        store.add(worker(n, n, face_sha=sha(data) if data else None, face_version=n if data else 0))
    store.commands = [command(i, name, *(["keys=volume"] if name == "config-get" else []))
                      for i, name in enumerate(commands, 1)]
    h = Harness(store, DownlinkLimits(window=window, timeout_ms=30_000, max_sends=3, chunk_bytes=chunk))
    h.carry_out(h.machine.start_roster(h.now))
    h.carry_out(h.machine.want_commands())
    for _ in range(10_000):
        frames = h.pump()
        if not frames and not h.answers:
            break
        h.answers += h.deliver(frames)
        order.shuffle(h.answers)  # answers of a pass may come back in any order within the window
        take = h.answers[:order.randint(1, max(1, len(h.answers)))]
        h.answers = h.answers[len(take):]
        h.answer(take)
    assert h.window_seen <= window
    assert roster_of(h.device) == expected(store) and h.device.roster_version == store.version
    assert sorted(d.command_id for d in h.of(CommandDone)) == list(range(1, len(commands) + 1))
    assert all(not d.failed for d in h.of(CommandDone))
    assert h.machine.idle()


def test_a_store_read_that_comes_back_after_its_sync_stopped_is_dropped():
    store = roster_store(3, faces=False)
    h = Harness(store)
    h.carry_out(h.machine.start_roster(h.now))
    (query,) = h.pump()
    (load_project,) = h.machine.answer(RosterVersionReply(query.seq, 0, 0, seq=1), h.now)
    actions = h.machine.project_loaded(True, 3, 0, h.now, sync=load_project.sync)
    (load_changes,) = [a for a in actions if isinstance(a, LoadChanges)]
    h.carry_out(h.machine.load_failed("a blip", h.now, sync=load_changes.sync))  # the sync stops
    h.carry_out(h.machine.start_roster(h.now))  # a roster change: a new sync
    h.run()
    rows = sorted(store.rows, key=lambda w: w.version)
    assert h.machine.changes_loaded(rows, h.now, sync=load_changes.sync) == []  # the first sync's page, late
    assert h.machine.face_loaded(b"x" * 32, b"y", 0, h.now, sync=load_changes.sync) == []
    assert roster_of(h.device) == expected(store) and len(h.machine.queue) == 0
    assert [type(f).__name__ for f in h.wire].count("RosterAdd") == 3  # each worker once


def test_after_a_broken_session_rows_are_decided_against_the_last_complete_sync():
    """Worker 1 joins with a face (v1), worker 2 joins (v2), worker 1 is renamed (v3). A new
    terminal's first session breaks after worker 2: it reports 2 and has no worker 1. The
    next delta (rows above 2) must still add worker 1 with its face: it is decided against
    the last complete sync (none: 0), not against the 2 reported (tests/simulators/
    test_device_properties.py found the literal rule loses the face)."""
    face1 = face(1, 2_000)
    store = Store(faces={sha(face1): face1})
    store.add(worker(1, 3, added=1, face_sha=sha(face1), face_version=1, name="renamed"), worker(2, 2))
    first = Harness(store)
    first.carry_out(first.machine.start_roster(first.now))
    first.answer(first.deliver(first.pump()))  # the query: at 0
    frames = first.pump()  # worker 2 (v2) goes first, then worker 1 (v3) and its face
    assert frames[0].worker_id == worker_id_for(2)
    first.answer(first.deliver(frames[:1]))  # worker 2 arrives, then the connection breaks
    assert first.device.roster_version == 2 and worker_id_for(1) not in first.device.workers
    assert first.of(RosterAcked) == [] and first.machine.partial_face() is None  # nothing complete recorded
    again = Harness(store, device=first.device, synced=first.machine.synced)  # synced: still 0
    again.carry_out(again.machine.start_roster(again.now))
    again.run()
    assert [type(f).__name__ for f in again.wire] == ["RosterVersionQuery", "RosterAdd", "FaceChunk"]
    assert again.device.workers[worker_id_for(1)].face_sha256 == sha(face1)
    assert again.of(RosterAcked) == [RosterAcked(3)]
