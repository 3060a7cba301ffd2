"""Roster sync planning without a store: versions to the kind of sync, rows to steps, faces to chunks."""

from __future__ import annotations

import hashlib
from datetime import date

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lmg.protocol import FaceChunk, MessageType, RosterAdd, RosterRemove, RosterUpdate, WorkerRole, decode_frame, encode
from lmg.server.downlink.roster import (
    NO_FACE,
    REMOVE_ALL_WORKER_ID,
    ChunkStep,
    RemoveAll,
    SyncKind,
    WorkerStep,
    chunk_message,
    face_chunks,
    plan_sync,
    step_message,
    sync_kind,
    wire_role,
    worker_step,
)
from lmg.simulators.terminal import worker_id_for
from lmg.storage import Worker

FACE_A = b"\xff\xd8\xff" + b"a" * 40_000
FACE_B = b"\xff\xd8\xff" + b"b" * 1_500
SHA_A, SHA_B = hashlib.sha256(FACE_A).digest(), hashlib.sha256(FACE_B).digest()
SIZES = {SHA_A: len(FACE_A), SHA_B: len(FACE_B)}


def worker(n: int, version: int, *, added: int | None = None, face: bytes | None = None, face_version: int = 0,
           on_roster: bool = True, post: str = "worker", name: str = "张三") -> Worker:
    return Worker("P1", worker_id_for(n), name, f"C{n}", "", "", post, date(2025, 1, 1), None, face, on_roster,
                  version, version if added is None else added, face_version, 0)


@pytest.mark.parametrize(("device", "project", "floor", "kind"), [
    (7, 7, 0, SyncKind.IN_SYNC),
    (0, 0, 0, SyncKind.IN_SYNC),
    (3, 7, 0, SyncKind.DELTA),
    (0, 7, 0, SyncKind.DELTA),  # a new terminal: the delta from 0 is the whole roster
    (5, 7, 5, SyncKind.DELTA),  # at the floor: still diffable
    (4, 7, 5, SyncKind.FULL),  # below the floor: the tombstones it needs were pruned
    (9, 7, 0, SyncKind.FULL),  # above the project: a restored database, another platform
])
def test_sync_kind(device, project, floor, kind):
    assert sync_kind(device, project, floor) is kind


def test_a_worker_the_terminal_did_not_hold_is_added_with_the_face():
    step = worker_step(worker(1, 5, added=5, face=SHA_A, face_version=5), base_version=3)
    assert step == WorkerStep(MessageType.ROSTER_ADD, 5, worker_id_for(1), "张三", "C1", WorkerRole.WORKER, SHA_A)
    # it rejoined at 5 with a face last changed at 2: the terminal at 3 removed it (and its face) meanwhile
    assert worker_step(worker(1, 5, added=5, face=SHA_A, face_version=2), base_version=3).face == SHA_A


def test_a_worker_the_terminal_held_is_updated_with_the_face_only_if_it_changed():
    same_face = worker_step(worker(1, 6, added=2, face=SHA_A, face_version=2), base_version=3)
    assert (same_face.kind, same_face.face) == (MessageType.ROSTER_UPDATE, None)
    new_face = worker_step(worker(1, 6, added=2, face=SHA_B, face_version=6), base_version=3)
    assert (new_face.kind, new_face.face) == (MessageType.ROSTER_UPDATE, SHA_B)
    assert step_message(same_face) == RosterUpdate(6, worker_id_for(1), "张三", "C1", 1, 0, NO_FACE)


def test_a_face_taken_away_is_a_roster_add_without_one():
    step = worker_step(worker(1, 6, added=2, face=None, face_version=6), base_version=3)
    assert (step.kind, step.face) == (MessageType.ROSTER_ADD, None)
    assert step_message(step) == RosterAdd(6, worker_id_for(1), "张三", "C1", 1, 0, NO_FACE)


def test_a_tombstone_is_a_remove_and_remove_all_is_eighteen_zeros_at_version_0():
    step = worker_step(worker(1, 8, added=2, on_roster=False), base_version=3)
    assert step_message(step) == RosterRemove(8, worker_id_for(1))
    assert step_message(RemoveAll()) == RosterRemove(0, REMOVE_ALL_WORKER_ID) == RosterRemove(0, "0" * 18)


def test_key_posts_travel_as_managers():
    assert wire_role("worker") == wire_role("") == WorkerRole.WORKER
    assert wire_role("project-manager") == wire_role("chief-supervisor") == WorkerRole.MANAGER
    assert worker_step(worker(1, 1, post="safety-officer"), 0).role == WorkerRole.MANAGER


def test_long_text_is_cut_to_255_utf8_bytes_at_a_character_boundary():
    step = worker_step(worker(1, 1, name="张" * 100), 0)  # 300 bytes
    assert len(step.name.encode()) == 255 and step.name == "张" * 85
    assert decode_frame(encode(step_message(step)._replace(seq=1))).name == "张" * 85


def test_face_chunks_cover_the_face_from_the_resume_point():
    chunks = face_chunks(SHA_A, 40_003, 16_384)
    assert [(c.offset, c.length, c.last) for c in chunks] == [(0, 16_384, False), (16_384, 16_384, False),
                                                              (32_768, 7_235, True)]
    assert [c.offset for c in face_chunks(SHA_A, 40_003, 16_384, start=16_384)] == [16_384, 32_768]
    # a resume point off a chunk boundary, or outside the face, starts again
    assert face_chunks(SHA_A, 40_003, 16_384, start=100)[0].offset == 0
    assert face_chunks(SHA_A, 40_003, 16_384, start=40_003)[0].offset == 0
    assert face_chunks(SHA_B, 1_503, 16_384) == [ChunkStep(SHA_B, 1_503, 0, 1_503, True)]
    message = chunk_message(chunks[2], FACE_A)
    assert message == FaceChunk(SHA_A, 40_003, 32_768, FACE_A[32_768:])


def test_plan_a_delta_in_version_order_each_face_followed_by_its_chunks():
    changes = [worker(1, 4, added=1, face=SHA_A, face_version=1),  # update, face unchanged
               worker(2, 5, face=SHA_B, face_version=5),  # new, with a face
               worker(3, 6, added=1, on_roster=False)]  # left
    steps = plan_sync(3, 6, 0, changes, face_sizes=SIZES, chunk_bytes=16_384)
    assert [type(s).__name__ if isinstance(s, ChunkStep) else s.kind.name for s in steps] == [
        "ROSTER_UPDATE", "ROSTER_ADD", "ChunkStep", "ROSTER_REMOVE"]
    assert [s.version for s in steps if isinstance(s, WorkerStep)] == [4, 5, 6]
    assert step_message(steps[1], SIZES[SHA_B]).face_size == len(FACE_B)


def test_plan_a_full_resync_from_a_version_above_the_project():
    changes = [worker(1, 1, face=SHA_A, face_version=1), worker(2, 2, on_roster=False, added=1)]
    steps = plan_sync(9, 2, 0, changes, face_sizes=SIZES, chunk_bytes=16_384)
    assert steps[0] == RemoveAll()
    assert steps[1].kind is MessageType.ROSTER_ADD and steps[1].face == SHA_A
    assert [c.offset for c in steps[2:5]] == [0, 16_384, 32_768]
    assert steps[5].kind is MessageType.ROSTER_REMOVE


def test_plan_in_sync_is_empty_and_a_missing_face_is_sent_as_none():
    assert plan_sync(2, 2, 0, [worker(1, 1)], face_sizes={}, chunk_bytes=16_384) == []
    steps = plan_sync(0, 1, 0, [worker(1, 1, face=SHA_A, face_version=1)], face_sizes={}, chunk_bytes=16_384)
    assert steps == [worker_step(worker(1, 1), 0)._replace(name="张三")]  # no face, no chunks


def test_plan_resumes_a_face_where_the_terminal_left_it():
    steps = plan_sync(0, 1, 0, [worker(1, 1, face=SHA_A, face_version=1)], face_sizes=SIZES, chunk_bytes=16_384,
                      resume={SHA_A: 16_384})
    assert [s.offset for s in steps if isinstance(s, ChunkStep)] == [16_384, 32_768]


# --- the soundness of deltas ---------------------------------------------------------------------------


def apply(roster: dict, steps) -> dict:
    """A terminal applying steps (faces by their announcement)."""
    roster = dict(roster)
    for step in steps:
        if isinstance(step, RemoveAll):
            roster.clear()
        elif isinstance(step, WorkerStep):
            if step.kind is MessageType.ROSTER_REMOVE:
                roster.pop(step.worker_id, None)
            else:
                old_face = roster.get(step.worker_id, (None, None))[1]
                face = step.face if step.face is not None else (
                    old_face if step.kind is MessageType.ROSTER_UPDATE else None)
                roster[step.worker_id] = (step.name, face)
    return roster


def in_order(steps) -> int:
    """The version a terminal holds after applying `steps` (a face counts once its chunks are in)."""
    version = 0
    for n, step in enumerate(steps):
        if isinstance(step, RemoveAll):
            version = 0
        elif isinstance(step, WorkerStep) and step.face is None:
            version = step.version
        elif isinstance(step, ChunkStep) and step.last:
            version = next(s.version for s in reversed(steps[:n]) if isinstance(s, WorkerStep))
    return version


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.sampled_from(["join", "joinface", "leave", "rename", "face",
                                                              "noface"])), max_size=30))
def test_a_delta_from_any_earlier_version_reaches_the_current_roster(events):
    """Play changes against a model store (versions as the store contract gives them); a
    terminal at any version applying the planned steps ends with the roster of now, also
    after a first session that broke off part way (its rows then decided against the last
    complete sync, not the version the broken session reached)."""
    rows: dict[int, dict] = {}
    version = 0
    history = {0: {}}  # version -> the roster at that version

    def snapshot():
        return {worker_id_for(n): (r["name"], r["face"]) for n, r in rows.items() if r["on"]}

    for n, event in events:
        row = rows.get(n)
        if event in ("join", "joinface") and (row is None or not row["on"]):
            version += 1
            face = row["face"] if row else None
            if event == "joinface":
                face = hashlib.sha256(f"{n}-{version}".encode()).digest()
            rows[n] = {"on": True, "name": f"w{n}", "face": face, "version": version, "added": version,
                       "face_version": version if face else (row["face_version"] if row else 0)}
        elif row is None or not row["on"]:
            continue
        elif event in ("join", "joinface"):
            continue
        elif event == "leave":
            version += 1
            row.update(on=False, version=version)
        elif event == "rename":
            version += 1
            row.update(name=row["name"] + "'", version=version)
        elif event == "face":
            version += 1
            row.update(face=hashlib.sha256(f"{n}-{version}".encode()).digest(), version=version, face_version=version)
        elif event == "noface" and row["face"] is not None:
            version += 1
            row.update(face=None, version=version, face_version=version)
        else:
            continue
        history[version] = snapshot()
    everything = sorted((worker(n, r["version"], added=r["added"], face=r["face"], face_version=r["face_version"],
                                on_roster=r["on"], name=r["name"]) for n, r in rows.items()),
                        key=lambda w: w.version)
    sizes = {w.face_sha256: 2_000 for w in everything if w.face_sha256}
    for device_version in sorted(history):  # a terminal at every version the project had
        changes = [w for w in everything if w.version > device_version]
        steps = plan_sync(device_version, version, 0, changes, face_sizes=sizes, chunk_bytes=16_384)
        assert apply(history[device_version], steps) == history[version]
        for cut in range(len(steps) + 1):  # the session breaks after `cut` steps
            partial = apply(history[device_version], steps[:cut])
            reached = max(device_version, in_order(steps[:cut]))  # what the terminal then reports
            rest = [w for w in everything if w.version > reached]
            again = plan_sync(reached, version, 0, rest, face_sizes=sizes, chunk_bytes=16_384,
                              synced=device_version)
            assert apply(partial, again) == history[version]
    # and a full resync from anywhere, including a version the project never had
    full = plan_sync(version + 3, version, 0, everything, face_sizes=sizes, chunk_bytes=16_384)
    assert apply({"junk": ("x", None)}, full) == history[version]


def test_after_a_broken_session_a_renamed_worker_is_still_added_with_the_face():
    """Worker 1 joins with a face (v1), worker 2 joins (v2), worker 1 is renamed (v3). A delta
    from 0 sends worker 2 first; the session breaks there and the terminal reports 2. Decided
    against 2, worker 1 would go as ROSTER_UPDATE without a face (tests/simulators/
    test_device_properties.py); decided against the last complete sync (0), as ROSTER_ADD with it."""
    w1 = worker(1, 3, added=1, face=SHA_A, face_version=1, name="renamed")
    literal = plan_sync(2, 3, 0, [w1], face_sizes=SIZES, chunk_bytes=16_384)
    assert literal[0].kind is MessageType.ROSTER_UPDATE and literal[0].face is None  # what the design said
    steps = plan_sync(2, 3, 0, [w1], face_sizes=SIZES, chunk_bytes=16_384, synced=0)
    assert steps[0].kind is MessageType.ROSTER_ADD and steps[0].face == SHA_A
    assert apply({worker_id_for(2): ("张三", None)}, steps)[worker_id_for(1)] == ("renamed", SHA_A)
