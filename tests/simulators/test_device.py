"""The device side of the downlink (simulators/device.py), pure: commands in, answers out.

Every command's answer, roster deltas and the remove-all convention, face assembly, resume and
verification, the version a terminal reports while a face is incomplete, and each failure
injection. The golden vectors drive the first tests, so the device reads what the server sends.
"""

from __future__ import annotations

import ast
import hashlib
import json
import pathlib

import pytest

from lmg.protocol import (
    Ack,
    ConfigEntry,
    ConfigGet,
    ConfigKey,
    ConfigSet,
    DoorOpen,
    FaceChunk,
    FrameTooLarge,
    Goodbye,
    MalformedBody,
    MessageType,
    Nack,
    Punch,
    Reboot,
    ResultCode,
    RosterAdd,
    RosterRemove,
    RosterUpdate,
    RosterVersionQuery,
    RosterVersionReply,
    SetTime,
    UnsupportedMessage,
)
from lmg.protocol.jsonform import from_jsonable
from lmg.simulators.device import COMMAND_TYPES, DEFAULT_CONFIG, REMOVE_ALL_WORKER_ID, Handled, TerminalDevice
from lmg.simulators.terminal import make_punch, worker_id_for

VECTORS = pathlib.Path(__file__).resolve().parents[1] / "vectors"
DEVICE_PY = pathlib.Path(__file__).resolve().parents[2] / "simulators" / "device.py"
CHUNK = 16384  # the gateway's default face_chunk_bytes (docs/downlink.md)
NOW = 1_763_942_400_000


def vector(name: str):
    return from_jsonable(json.loads((VECTORS / f"{name}.json").read_text(encoding="utf-8"))["message"])


def face(n: int, size: int = 40_000) -> bytes:
    """A fake JPEG of `size` bytes, different for each `n`."""
    body = hashlib.sha256(str(n).encode()).digest() * (size // 32 + 1)
    return (b"\xff\xd8\xff\xe0" + body)[:size]


class Push:
    """The server's end, as far as a test needs it: numbered commands, the device's answers."""

    def __init__(self, device: TerminalDevice | None = None):
        self.device = device or TerminalDevice()
        self.seq = 100

    def send(self, message):
        self.seq += 1
        replies = self.device.handle(message._replace(seq=self.seq), NOW)
        for reply in replies:
            assert reply.seq == 0  # numbered by the connection that writes it
        return replies

    def one(self, message):
        replies = self.send(message)
        assert len(replies) == 1, replies
        reply = replies[0]
        assert reply.ref_seq == self.seq
        if isinstance(reply, (Ack, Nack)):
            assert reply.ref_type == message.msg_type
        return reply

    def ok(self, message) -> None:
        reply = self.one(message)
        assert isinstance(reply, Ack), reply
        assert reply.results == ()

    def nack(self, message) -> int:
        reply = self.one(message)
        assert isinstance(reply, Nack), reply
        return reply.result

    def add(self, version: int, n: int, photo: bytes | None = None, *, name: str = "", update: bool = False):
        cls = RosterUpdate if update else RosterAdd
        sha = hashlib.sha256(photo).digest() if photo else bytes(32)
        return cls(version, worker_id_for(n), name or f"worker {n}", f"C{n:04d}", 1, len(photo or b""), sha)

    def chunks(self, photo: bytes, start: int = 0, size: int = CHUNK):
        sha = hashlib.sha256(photo).digest()
        return [FaceChunk(sha, len(photo), offset, photo[offset : offset + size])
                for offset in range(start, len(photo), size)]

    def enroll(self, version: int, n: int, photo: bytes, *, update: bool = False) -> None:
        """ROSTER_ADD (or UPDATE) with a face, then every chunk: all ACKed."""
        self.ok(self.add(version, n, photo, update=update))
        for chunk in self.chunks(photo):
            self.ok(chunk)

    def version(self) -> tuple[int, int]:
        reply = self.one(RosterVersionQuery())
        assert isinstance(reply, RosterVersionReply)
        return reply.roster_version, reply.worker_count


# --- the golden vectors -------------------------------------------------------------------------


def test_vectors_add_a_worker_whose_face_arrives_in_one_chunk():
    device = TerminalDevice()
    add, chunk, query = vector("roster_add"), vector("face_chunk"), vector("roster_version_query")
    assert device.handle(add, NOW) == [Ack(add.seq, MessageType.ROSTER_ADD, NOW, ())]
    assert device.handle(query, NOW) == [RosterVersionReply(query.seq, 0, 1)]  # face not yet here
    assert device.handle(chunk, NOW) == [Ack(chunk.seq, MessageType.FACE_CHUNK, NOW, ())]
    assert device.handle(query, NOW) == [RosterVersionReply(query.seq, 43, 1)]
    assert device.face_of(add.worker_id) == chunk.data
    update = vector("roster_update")  # role 2, face_size 0: keeps the face
    device.handle(update, NOW)
    entry = device.workers[add.worker_id]
    assert (entry.role, entry.version, device.face_of(add.worker_id)) == (2, 44, chunk.data)
    device.handle(vector("roster_remove"), NOW)  # another worker: absent, so OK
    assert (device.roster_version, device.worker_count) == (45, 1)


def test_vector_config_get_is_answered_with_the_vector_config_reply():
    get, reply = vector("config_get"), vector("config_reply")
    assert TerminalDevice().handle(get, NOW) == [reply._replace(seq=0)]


def test_every_command_type_has_a_handler():
    commands = {t for t in MessageType if 0x0201 <= t <= 0x020C} - {MessageType.ROSTER_VERSION_REPLY,
                                                                     MessageType.CONFIG_REPLY}
    assert COMMAND_TYPES == commands


# --- deltas ---------------------------------------------------------------------------------------


def test_deltas_add_update_and_remove_follow_the_version():
    push = Push()
    for n in range(1, 4):
        push.ok(push.add(n, n))
    assert push.version() == (3, 3)
    push.ok(push.add(4, 2, name="renamed", update=True))
    push.ok(RosterRemove(5, worker_id_for(1)))
    assert push.version() == (5, 2)
    assert {e.worker_id: (e.name, e.version) for e in push.device.workers.values()} == {
        worker_id_for(2): ("renamed", 4), worker_id_for(3): ("worker 3", 3)}


def test_commands_are_idempotent():
    push = Push()
    push.ok(push.add(1, 1))
    push.ok(push.add(2, 1, name="again"))  # ADD of a present worker updates them
    push.ok(RosterRemove(3, worker_id_for(9)))  # REMOVE of an absent worker is OK
    push.ok(push.add(4, 2, update=True))  # UPDATE of an absent worker adds them
    assert push.version() == (4, 2)
    assert push.device.workers[worker_id_for(1)].name == "again"


def test_a_change_older_than_the_workers_is_acked_and_not_applied():
    push = Push()
    push.ok(push.add(5, 1, name="new"))
    push.ok(push.add(3, 1, name="old"))  # a resend that arrives late
    push.ok(RosterRemove(4, worker_id_for(1)))
    assert push.device.workers[worker_id_for(1)].name == "new" and push.version() == (5, 1)


def test_remove_all_clears_the_roster_faces_and_partial_faces_then_a_delta_from_zero_applies():
    push = Push()
    push.enroll(1, 1, face(1))
    push.ok(push.add(2, 2, face(2)))
    push.ok(push.chunks(face(2))[0])  # a partial face
    push.ok(RosterRemove(0, REMOVE_ALL_WORKER_ID))
    assert push.version() == (0, 0)
    assert push.device.face_of(worker_id_for(1)) is None and push.device.pending_faces() == {}
    assert push.device.face_progress(hashlib.sha256(face(2)).digest()) is None
    assert push.nack(push.chunks(face(2))[1]) == ResultCode.COMMAND_FAILED  # nothing announced now
    push.enroll(7, 3, face(3))
    assert push.version() == (7, 1)


# --- faces ----------------------------------------------------------------------------------------


def test_the_version_of_a_face_is_adopted_only_once_the_face_is_verified():
    push = Push()
    push.ok(push.add(1, 1))
    photo = face(2)
    push.ok(push.add(2, 2, photo))
    chunks = push.chunks(photo)
    assert len(chunks) == 3
    for chunk in chunks[:-1]:
        push.ok(chunk)
        assert push.version() == (1, 2)  # the worker is on the roster, the version is not
    push.ok(RosterRemove(3, worker_id_for(1)))  # applied, but held back behind the face
    push.ok(push.add(4, 3))
    assert push.version() == (1, 2)
    assert push.device.face_progress(hashlib.sha256(photo).digest()) == 2 * CHUNK
    push.ok(chunks[-1])
    assert push.version() == (4, 2)
    assert push.device.face_of(worker_id_for(2)) == photo and push.device.pending_faces() == {}


def test_a_new_face_replaces_the_old_one_only_when_verified():
    push = Push()
    push.enroll(1, 1, face(1))
    push.ok(push.add(2, 1, face(2), update=True))
    push.ok(push.chunks(face(2))[0])
    assert push.device.face_of(worker_id_for(1)) == face(1)
    for chunk in push.chunks(face(2))[1:]:
        push.ok(chunk)
    assert push.device.face_of(worker_id_for(1)) == face(2) and push.version() == (2, 1)


def test_repeated_and_overlapping_chunks_are_acked_and_the_face_is_the_same():
    push = Push()
    photo = face(1)
    push.ok(push.add(1, 1, photo))
    first, second, third = push.chunks(photo)
    push.ok(first)
    push.ok(first)  # its ACK was lost: sent again
    push.ok(second)
    push.ok(FaceChunk(first.face_sha256, len(photo), 10, photo[10 : 3 * CHUNK - 100]))  # overlaps: the tail appends
    push.ok(third)
    push.ok(third)  # after the face is enrolled: still ACKed
    assert push.device.face_of(worker_id_for(1)) == photo and push.version() == (1, 1)


def test_a_gap_is_nacked_and_the_face_starts_again_from_zero():
    push = Push()
    photo = face(1)
    push.ok(push.add(1, 1, photo))
    first, second, third = push.chunks(photo)
    push.ok(first)
    assert push.nack(third) == ResultCode.COMMAND_FAILED
    assert push.device.face_progress(first.face_sha256) == 0  # the partial face is dropped
    assert push.nack(second) == ResultCode.COMMAND_FAILED
    for chunk in (first, second, third):  # the server restarts at offset 0 (section 6.7)
        push.ok(chunk)
    assert push.version() == (1, 1)


def test_a_face_that_does_not_match_its_hash_is_refused_and_not_enrolled():
    push = Push()
    photo = face(1)
    push.ok(push.add(1, 1, photo))
    first, second, third = push.chunks(photo)
    push.ok(first)
    push.ok(second)
    assert push.nack(third._replace(data=b"\x00" + third.data[1:])) == ResultCode.COMMAND_FAILED
    assert push.device.face_of(worker_id_for(1)) is None and push.version() == (0, 1)
    assert push.device.face_progress(first.face_sha256) == 0
    for chunk in (first, second, third):
        push.ok(chunk)
    assert push.device.face_of(worker_id_for(1)) == photo and push.version() == (1, 1)


def test_chunks_that_do_not_fit_the_announcement_are_refused():
    push = Push()
    photo = face(1)
    push.ok(push.add(1, 1, photo))
    first = push.chunks(photo)[0]
    assert push.nack(first._replace(total_size=len(photo) + 1)) == ResultCode.COMMAND_FAILED
    assert push.nack(FaceChunk(first.face_sha256, len(photo), len(photo) - 10, bytes(20))) == ResultCode.COMMAND_FAILED
    assert push.nack(FaceChunk(hashlib.sha256(b"x").digest(), 1, 0, b"x")) == ResultCode.COMMAND_FAILED  # unannounced
    assert push.nack(push.add(2, 2, bytes(3 << 20))) == ResultCode.COMMAND_FAILED  # above MAX_FACE_BYTES
    assert push.version() == (0, 1)


def test_a_power_cut_loses_the_partial_face_and_the_resumed_chunk_is_nacked():
    push = Push()
    photo = face(1)
    push.ok(push.add(1, 1, photo))
    first, second, third = push.chunks(photo)
    push.ok(first)
    push.device.forget_partial_faces()
    assert push.version() == (0, 1)  # what the device reports after the reconnect
    assert push.nack(second) == ResultCode.COMMAND_FAILED  # the server resumed where the ACKs got to
    for chunk in (first, second, third):
        push.ok(chunk)
    assert push.version() == (1, 1)


def test_an_announcement_of_the_same_face_keeps_the_partial_face_and_its_first_version():
    push = Push()
    photo = face(1)
    push.ok(push.add(3, 1, photo))
    first, second, third = push.chunks(photo)
    push.ok(first)
    push.ok(push.add(5, 1, photo, name="renamed", update=True))  # the worker changed again, same face
    assert push.device.pending_faces() == {worker_id_for(1): (3, first.face_sha256)}
    push.ok(second)  # the resume point still holds
    push.ok(third)
    assert push.version() == (5, 1) and push.device.workers[worker_id_for(1)].name == "renamed"


def test_a_different_face_supersedes_one_still_arriving():
    push = Push()
    push.ok(push.add(1, 1, face(1)))
    push.ok(push.chunks(face(1))[0])
    push.ok(push.add(2, 2))
    push.ok(push.add(3, 1, face(2), update=True))
    assert push.device.face_progress(hashlib.sha256(face(1)).digest()) is None
    assert push.version() == (2, 2)  # the worker's face now dates from 3
    for chunk in push.chunks(face(2)):
        push.ok(chunk)
    assert push.version() == (3, 2) and push.device.face_of(worker_id_for(1)) == face(2)


def test_removing_a_worker_whose_face_is_arriving_releases_the_version():
    push = Push()
    push.ok(push.add(1, 1, face(1)))
    push.ok(push.chunks(face(1))[0])
    push.ok(push.add(2, 2))
    assert push.version() == (0, 2)
    push.ok(RosterRemove(3, worker_id_for(1)))
    assert push.version() == (3, 1)


def test_a_device_that_keeps_no_face_bytes_still_verifies_and_enrolls():
    push = Push(TerminalDevice(keep_faces=False, history_limit=0))
    push.enroll(1, 1, face(1))
    assert push.device.face_of(worker_id_for(1)) is None
    assert push.device.workers[worker_id_for(1)].face_sha256 == hashlib.sha256(face(1)).digest()
    assert push.version() == (1, 1) and len(push.device.history) == 0


# --- the other commands ---------------------------------------------------------------------------


def test_set_time_moves_the_clock_that_acks_carry():
    device = TerminalDevice()
    assert device.handle(SetTime(NOW + 5000, 7), NOW) == [Ack(7, MessageType.SET_TIME, NOW + 5000, ())]
    assert device.clock_offset_ms == 5000 and device.clock_ms(NOW + 10) == NOW + 5010
    assert device.handle(Reboot(0, 8), NOW + 1000) == [Ack(8, MessageType.REBOOT, NOW + 6000, ())]


def test_config_get_answers_known_keys_only_and_config_set_applies_all_or_nothing():
    push = Push()
    reply = push.one(ConfigGet((ConfigKey("language"), ConfigKey("nonsense"), ConfigKey("volume"))))
    assert reply.entries == (ConfigEntry("language", "zh-CN"), ConfigEntry("volume", "7"))
    assert push.one(ConfigGet(())).entries == ()
    push.ok(ConfigSet((ConfigEntry("volume", "3"), ConfigEntry("relay_ms", "1500"))))
    assert push.nack(ConfigSet((ConfigEntry("volume", "9"), ConfigEntry("nonsense", "1")))) == \
        ResultCode.UNKNOWN_CONFIG_KEY
    assert push.device.config == {**DEFAULT_CONFIG, "volume": "3", "relay_ms": "1500"}


def test_reboot_and_door_open_are_acked_and_recorded():
    push = Push()
    push.ok(Reboot(10))
    push.ok(DoorOpen(2, 5))
    assert push.nack(DoorOpen(0, 5)) == ResultCode.COMMAND_FAILED  # lanes count from 1
    assert push.nack(DoorOpen(9, 5)) == ResultCode.COMMAND_FAILED  # this turnstile has 4
    assert push.device.reboots == [10] and push.device.door_opens == [(2, 5)]


def test_what_is_no_command_is_answered_as_section_6_9_says():
    device = TerminalDevice()
    assert device.handle(Ack(3, MessageType.PUNCH, NOW, ()), NOW) == []  # answers are never answered
    assert device.handle(Goodbye(ResultCode.SHUTTING_DOWN, 5), NOW) == []
    punch = Punch.of(make_punch(1, 1, NOW), 4)
    assert device.handle(punch, NOW) == [Nack(4, MessageType.PUNCH, ResultCode.UNSUPPORTED_MESSAGE)]
    assert device.handle(UnsupportedMessage("type 0x0777", seq=5, msg_type=0x0777), NOW) == [
        Nack(5, 0x0777, ResultCode.UNSUPPORTED_MESSAGE)]
    assert device.handle(MalformedBody("short", seq=6, msg_type=MessageType.ROSTER_ADD), NOW) == [
        Nack(6, MessageType.ROSTER_ADD, ResultCode.MALFORMED_BODY)]
    assert device.handle(MalformedBody("unreadable"), NOW) == []  # no seq to name
    assert device.handle(FrameTooLarge("big", seq=7, msg_type=1), NOW) == []  # the stream is lost


def test_history_records_each_command_and_its_result():
    push = Push()
    push.device.never_answer(MessageType.REBOOT, times=1)
    push.ok(push.add(1, 1))
    push.nack(DoorOpen(0, 1))
    push.send(Reboot(1))
    assert list(push.device.history) == [
        Handled(MessageType.ROSTER_ADD, 101, ResultCode.OK), Handled(MessageType.DOOR_OPEN, 102, ResultCode.COMMAND_FAILED),
        Handled(MessageType.REBOOT, 103, None)]


# --- failure injection ----------------------------------------------------------------------------


def test_unknown_workers_are_nacked_only_when_asked():
    push = Push()
    push.device.faults.nack_unknown_workers = True
    assert push.nack(push.add(1, 1, update=True)) == ResultCode.UNKNOWN_WORKER
    assert push.nack(RosterRemove(2, worker_id_for(2))) == ResultCode.UNKNOWN_WORKER
    push.ok(push.add(3, 3))  # ADD is never UNKNOWN_WORKER
    push.ok(push.add(4, 3, update=True))
    assert push.version() == (0, 1)  # versions 1 and 2 were refused: not held
    push.device.faults.nack_unknown_workers = False
    push.ok(push.add(5, 1, update=True))  # supersedes the refused change of worker 1
    assert push.version() == (0, 2)  # worker 2's refused removal (version 2) still holds it back
    push.ok(RosterRemove(6, worker_id_for(2)))
    assert push.version() == (6, 2)


def test_a_full_device_refuses_new_workers_and_holds_its_version_below_them():
    push = Push()
    push.device.faults.roster_capacity = 2
    push.ok(push.add(1, 1))
    push.ok(push.add(2, 2))
    assert push.nack(push.add(3, 3, face(3))) == ResultCode.DEVICE_STORAGE_FULL
    assert push.nack(push.chunks(face(3))[0]) == ResultCode.COMMAND_FAILED  # no face to receive
    push.ok(push.add(4, 1, name="still updatable"))
    assert push.version() == (2, 2)
    push.ok(RosterRemove(5, worker_id_for(2)))
    assert push.version() == (2, 1)  # room now, but worker 3 is still owed
    push.enroll(6, 3, face(3))
    assert push.version() == (6, 2)


def test_chosen_commands_fail_with_command_failed_or_a_chosen_code():
    push = Push()
    push.device.fail(MessageType.REBOOT, MessageType.ROSTER_ADD, times=1)
    push.device.fail(MessageType.DOOR_OPEN, code=ResultCode.UNSUPPORTED_MESSAGE)
    assert push.nack(Reboot(1)) == ResultCode.COMMAND_FAILED
    push.ok(Reboot(1))
    assert push.nack(push.add(1, 1)) == ResultCode.COMMAND_FAILED
    assert push.device.worker_count == 0 and push.version() == (0, 0)
    for _ in range(3):
        assert push.nack(DoorOpen(1, 1)) == ResultCode.UNSUPPORTED_MESSAGE
    assert push.device.reboots == [1] and push.device.door_opens == []
    push.device.clear_faults()
    push.ok(DoorOpen(1, 1))


def test_a_failed_chunk_drops_the_partial_face():
    push = Push()
    photo = face(1)
    push.ok(push.add(1, 1, photo))
    first, second, third = push.chunks(photo)
    push.ok(first)
    push.device.fail(MessageType.FACE_CHUNK, times=1)
    assert push.nack(second) == ResultCode.COMMAND_FAILED
    assert push.device.face_progress(first.face_sha256) == 0
    for chunk in (first, second, third):
        push.ok(chunk)
    assert push.version() == (1, 1)


def test_commands_never_answered_are_lost_then_answered_when_sent_again():
    push = Push()
    push.device.never_answer(MessageType.ROSTER_ADD, MessageType.SET_TIME, times=2)
    add = push.add(1, 1)
    assert push.send(add) == [] and push.send(add) == []
    assert push.device.worker_count == 0  # not carried out
    push.ok(add)  # the third send
    assert push.send(SetTime(NOW)) == [] and push.send(SetTime(NOW)) == []
    push.ok(SetTime(NOW + 1))
    push.device.never_answer(MessageType.ROSTER_VERSION_QUERY)
    for _ in range(5):
        assert push.send(RosterVersionQuery()) == []


def test_the_device_module_is_pure():
    forbidden = {"asyncio", "socket", "ssl", "time", "datetime", "random", "threading", "selectors", "logging"}
    imported = set()
    for node in ast.walk(ast.parse(DEVICE_PY.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert imported & forbidden == set()


@pytest.mark.parametrize("worker_id", [REMOVE_ALL_WORKER_ID])
def test_the_remove_all_worker_id_is_no_valid_id_number(worker_id):
    from lmg.protocol import is_valid_id_number

    assert not is_valid_id_number(worker_id)
