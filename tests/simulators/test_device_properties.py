"""Properties of the device side of the downlink (simulators/device.py), with hypothesis.

- Any interleaving of repeated chunks yields the same face, every chunk ACKed.
- Whatever chunks arrive, in whatever order, the device never enrolls bytes that do not
  hash to the announced SHA-256, and never reports the face's version without the face.
- Roster sync is sound: a model of the gateway (docs/downlink.md: the delta from the version
  the terminal reports, faces resumed where the ACKs got to, restarted from 0 on NACK)
  brings the device to the gateway's roster whatever the history of changes, however often
  the connection breaks (mid-face included) and whether or not a power cut loses the
  partial face; provided ADD/UPDATE and the face announcement are decided against the
  version of the last *complete* sync, not the version reported after a broken one (see
  GatewayModel and the counterexample at the end).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lmg.protocol import Ack, FaceChunk, Nack, RosterAdd, RosterRemove, RosterUpdate, RosterVersionQuery
from lmg.simulators.device import TerminalDevice
from lmg.simulators.terminal import worker_id_for

NOW = 1_763_942_400_000
photos = st.binary(min_size=1, max_size=600)


def sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


@given(photo=photos, chunk=st.integers(1, 200), data=st.data())
def test_any_interleaving_of_repeated_chunks_yields_the_same_face(photo, chunk, data):
    device = TerminalDevice()
    assert isinstance(device.handle(RosterAdd(1, worker_id_for(1), "w", "", 1, len(photo), sha(photo), 1), NOW)[0], Ack)
    offsets = list(range(0, len(photo), chunk))
    seq = 1
    for index, offset in enumerate(offsets):
        # before each new chunk, the server may send again any chunk it sent already
        repeats = data.draw(st.lists(st.sampled_from(offsets[: index + 1]), max_size=3)) if index else []
        for at in [offset, *repeats]:
            seq += 1
            reply = device.handle(FaceChunk(sha(photo), len(photo), at, photo[at : at + chunk], seq), NOW)
            assert isinstance(reply[0], Ack) and reply[0].ref_seq == seq
    assert device.face_of(worker_id_for(1)) == photo and device.roster_version == 1


@given(photo=photos, data=st.data())
def test_no_schedule_of_chunks_enrolls_wrong_bytes_or_reports_a_missing_face(photo, data):
    device = TerminalDevice()
    device.handle(RosterAdd(1, worker_id_for(1), "w", "", 1, len(photo), sha(photo)), NOW)
    size = len(photo)
    for _ in range(data.draw(st.integers(1, 25))):
        offset = data.draw(st.integers(0, size))
        length = data.draw(st.integers(0, size - offset))
        honest = data.draw(st.booleans())
        chunk = photo[offset : offset + length] if honest else data.draw(st.binary(min_size=length, max_size=length))
        device.handle(FaceChunk(sha(photo), size, offset, chunk), NOW)
        enrolled = device.face_of(worker_id_for(1))
        assert enrolled in (None, photo)
        assert (device.roster_version == 1) == (enrolled == photo)


# --- a model of the gateway's roster sync --------------------------------------------------------


@dataclass
class Row:
    """A worker row of the store (docs/downlink.md, "What is stored")."""

    version: int
    added_version: int
    face_version: int
    name: str
    face: bytes | None
    on_roster: bool


class GatewayModel:
    """The roster of one project and the sync of one terminal, as docs/downlink.md designs it.

    The delta is every row above the version the terminal reports, in version order. With
    `rule="literal"` a row is ROSTER_UPDATE when `added_version <= reported` and announces its
    face when `face_version > reported`, as the document says. That is unsound after a broken
    session: the terminal reports the version of the last row it applied, but the delta sent
    each worker's *current* row, so a terminal at k need not hold a worker added at or below
    k whose row has changed since (test_the_literal_rule_loses_a_face_after_a_broken_session).
    With `rule="base"` (the default) ADD/UPDATE and the face are decided against `base`, the
    version at the end of the last session whose delta got through, which the terminal
    provably holds as a whole; and ROSTER_ADD announces the face whenever the worker has one
    (a worker who left and came back with the same face lost it on the terminal)."""

    def __init__(self, chunk: int, rule: str = "base"):
        self.rows: dict[str, Row] = {}
        self.version = 0
        self.chunk = chunk
        self.rule = rule
        self.base = 0  # the version at the end of the last complete sync
        self.progress: dict[bytes, int] = {}  # device_faces: how far the ACKs got, per face
        self.seq = 0

    # -- the roster changes (store side)
    def join(self, wid: str, name: str, face: bytes | None) -> None:
        row = self.rows.get(wid)
        if row is not None and row.on_roster:
            return self.update(wid, name, face)
        self.version += 1
        if row is not None and face is None:
            face = row.face  # None is "no photo given": the wire cannot take a face away either
        face_version = self.version if face is not None and (row is None or row.face != face) else \
            (row.face_version if row is not None else 0)
        self.rows[wid] = Row(self.version, self.version, face_version, name, face, True)

    def update(self, wid: str, name: str, face: bytes | None) -> None:
        row = self.rows.get(wid)
        if row is None or not row.on_roster:
            return self.join(wid, name, face)
        self.version += 1
        row.version, row.name = self.version, name
        if face is not None and face != row.face:
            row.face, row.face_version = face, self.version

    def leave(self, wid: str) -> None:
        row = self.rows.get(wid)
        if row is not None and row.on_roster:
            self.version += 1
            row.version, row.on_roster = self.version, False

    # -- the sync of one session
    def send(self, device: TerminalDevice, message):
        self.seq += 1
        replies = device.handle(message._replace(seq=self.seq), NOW)
        assert len(replies) == 1 and replies[0].ref_seq == self.seq
        return replies[0]

    def sync(self, device: TerminalDevice, budget: int | None) -> bool:
        """One session: the version query, then the delta. `budget` frames reach the device
        before the connection breaks (None: no break); the answer to the last one is lost.
        True when the session got through."""
        held = self.send(device, RosterVersionQuery()).roster_version
        assert self.base <= held <= self.version
        known = held if self.rule == "literal" else self.base  # what the terminal surely holds
        sent = 0

        def deliver(message):
            nonlocal sent
            sent += 1
            reply = self.send(device, message)
            return None if budget is not None and sent >= budget else reply

        for wid, row in sorted(self.rows.items(), key=lambda item: item[1].version):
            if row.version <= held:
                continue
            if not row.on_roster:
                if deliver(RosterRemove(row.version, wid)) is None:
                    return False
                continue
            add = row.added_version > known
            if self.rule == "literal":
                announce = row.face is not None and row.face_version > known
            else:
                announce = row.face is not None and (add or row.face_version > known)
            face = row.face if announce else None
            cls = RosterAdd if add else RosterUpdate
            message = cls(row.version, wid, row.name, "", 1, len(face or b""), sha(face) if face else bytes(32))
            reply = deliver(message)
            if reply is None:
                return False
            assert isinstance(reply, Ack), reply
            if face is None:
                continue
            offset, restarts = self.progress.get(sha(face), 0), 0
            while offset < len(face):
                reply = deliver(FaceChunk(sha(face), len(face), offset, face[offset : offset + self.chunk]))
                if reply is None:
                    return False
                if isinstance(reply, Nack):  # the terminal lost its partial face: from 0 again
                    offset, restarts = 0, restarts + 1
                    assert restarts <= 1, "a restart from 0 must succeed"
                else:
                    offset += len(face[offset : offset + self.chunk])
                self.progress[sha(face)] = offset
            self.progress.pop(sha(face), None)
        self.base = self.version
        return True


WORKERS = [worker_id_for(n) for n in range(4)]
FACES = [bytes([n]) * (50 + 37 * n) for n in range(3)]
changes = st.one_of(
    st.tuples(st.just("join"), st.sampled_from(WORKERS), st.sampled_from(["a", "b"]),
              st.one_of(st.none(), st.sampled_from(FACES))),
    st.tuples(st.just("update"), st.sampled_from(WORKERS), st.sampled_from(["c", "d"]),
              st.one_of(st.none(), st.sampled_from(FACES))),
    st.tuples(st.just("leave"), st.sampled_from(WORKERS), st.just(""), st.none()),
)
sessions = st.tuples(st.one_of(st.none(), st.integers(1, 12)), st.booleans())  # (break after, power cut)


@settings(max_examples=300, deadline=None)
@given(chunk=st.integers(16, 64), rounds=st.lists(st.tuples(st.lists(changes, max_size=6),
                                                           st.lists(sessions, max_size=4)), min_size=1, max_size=4))
def test_sync_from_the_reported_version_converges_whatever_breaks(chunk, rounds):
    gateway, device = GatewayModel(chunk), TerminalDevice()
    for history, sessions_of_round in rounds:
        for kind, wid, name, face in history:
            if kind == "leave":
                gateway.leave(wid)
            else:
                getattr(gateway, kind)(wid, name, face)
        for budget, power_cut in sessions_of_round:
            gateway.sync(device, budget)
            if power_cut:
                device.forget_partial_faces()
    assert gateway.sync(device, None)
    expected = {wid: (row.name, row.face and sha(row.face)) for wid, row in gateway.rows.items() if row.on_roster}
    held = {wid: (entry.name, entry.face_sha256) for wid, entry in device.workers.items()}
    assert held == expected
    assert device.roster_version == gateway.version
    assert device.pending_faces() == {}


# Two histories that the rule docs/downlink.md first proposed ("literal": ADD/UPDATE and the
# face decided against the version the terminal reports) loses a face on, found by this model.
# The gateway uses "base" (server/downlink/roster.py); each test shows the loss under the old
# rule and the fix under the new one, so neither half can pass by accident.


@pytest.mark.parametrize("rule", ["literal", "base"])
def test_a_broken_session_loses_a_renamed_worker_s_face_only_under_the_literal_rule(rule):
    """Worker 1 joins with a face (v1), worker 2 joins (v2), worker 1 is renamed (v3): worker
    1's row is now v3 with added_version and face_version 1. The delta from 0 sends worker 2
    (v2) first; the connection breaks before worker 1. The terminal reports 2, so the literal
    rule sends worker 1 as ROSTER_UPDATE without a face: the terminal never gets it."""
    gateway, device = GatewayModel(chunk=64, rule=rule), TerminalDevice()
    gateway.join(WORKERS[1], "a", FACES[0])
    gateway.join(WORKERS[2], "b", None)
    gateway.update(WORKERS[1], "c", None)
    assert not gateway.sync(device, budget=1)
    assert device.roster_version == 2 and WORKERS[1] not in device.workers
    delivered = gateway.sync(device, None) and WORKERS[1] in device.workers \
        and device.workers[WORKERS[1]].face_sha256 == sha(FACES[0])
    assert delivered == (rule == "base")


@pytest.mark.parametrize("rule", ["literal", "base"])
def test_a_worker_who_comes_back_gets_the_face_again_only_under_the_base_rule(rule):
    """A worker with a face (v1) leaves (v2: the terminal removes them and their face) and
    comes back with the same photo (v3: added_version 3, face_version still 1). The literal
    rule announces the face only when face_version is above the terminal's version (2): it is not."""
    gateway, device = GatewayModel(chunk=64, rule=rule), TerminalDevice()
    gateway.join(WORKERS[1], "a", FACES[0])
    assert gateway.sync(device, None)
    gateway.leave(WORKERS[1])
    assert gateway.sync(device, None)
    gateway.join(WORKERS[1], "a", FACES[0])
    assert gateway.rows[WORKERS[1]].face_version == 1
    synced = gateway.sync(device, None)
    delivered = synced and device.workers[WORKERS[1]].face_sha256 == sha(FACES[0])
    assert delivered == (rule == "base")
