"""Each grader on its own, fed scripted events: no sockets, no examiner, time given by hand."""

from __future__ import annotations

import hashlib

import pytest

from lmg.protocol import (
    Ack,
    Auth,
    AuthResult,
    Challenge,
    ConfigEntry,
    ConfigReply,
    Heartbeat,
    Hello,
    Nack,
    PhotoChunk,
    PhotoQuery,
    PhotoStatus,
    Punch,
    PunchBatch,
    ResultCode,
    RosterVersionReply,
    TimeSyncRequest,
    encode,
)
from lmg.protocol.auth import auth_mac
from lmg.server.conformance.catalogue import KitTimings, Verdict
from lmg.server.conformance.examiner import default_validator
from lmg.server.conformance.items import (
    Closed,
    Context,
    Expect,
    Frame,
    Note,
    Opened,
    Tick,
    build_items,
)
from lmg.server.conformance.wire import FrameSplitter, WireFrame
from lmg.simulators.terminal import make_punch

WALL0 = 1_763_942_400_000
SECRET = bytes(range(32))
T = KitTimings(retransmit_wait_s=15, heartbeat_interval_s=30, slack_s=0.25)


def items(secret: bytes | None = SECRET):
    return build_items(Context(T, secret, "GS-1", WALL0), default_validator())


def dev(message, at: int, conn: int = 1, flags: int | None = 0) -> Frame:
    return Frame(WireFrame(conn, "device", at, encode(message), message, None, flags))


def kit(message, at: int, conn: int = 1) -> Frame:
    return Frame(WireFrame(conn, "kit", at, encode(message), message, None, 1))


def feed(item, *events):
    verdict = None
    for event in events:
        at = getattr(event, "at_ms", None)
        if at is None:
            at = event.frame.at_ms
        verdict = item.observe(event, at)
        if verdict is not None:
            return verdict
    return verdict


def punch(record_no: int, at: int = 0, photo: bytes | None = None, seq: int = 5) -> Punch:
    return Punch.of(make_punch(record_no, 3, WALL0 + at, photo), seq)


def ok_session(conn: int = 1, at: int = 0) -> Frame:
    return kit(AuthResult(0, 30, WALL0, 65536, 500), at, conn)


# --- frames and handshake ----------------------------------------------------------------------


def test_frame_format_passes_good_frames_and_fails_a_bad_checksum():
    item = items()["frame.format"]
    assert feed(item, dev(Heartbeat(WALL0, 0, 0, seq=1), 10)) is None
    item.finish(20)
    assert item.verdict is Verdict.PASS

    item = items()["frame.format"]
    raw = bytearray(encode(Heartbeat(WALL0, 0, 0, seq=2)))
    raw[-1] ^= 0xFF
    bad = FrameSplitter(1).feed(bytes(raw), 5)[0]  # then the rest, skipped while resynchronising
    assert feed(item, Frame(bad)) is Verdict.FAIL
    assert "BadChecksum" in item.detail


def test_frame_format_fails_reserved_flag_bits_and_websocket_text():
    item = items()["frame.format"]
    assert feed(item, dev(Heartbeat(WALL0, 0, 0, seq=1), 10, flags=0x04)) is Verdict.FAIL
    item = items()["frame.format"]
    assert feed(item, Note("ws_text", 1, 3)) is Verdict.FAIL


def handshake(mac: bytes, took_ms: int = 40, conn: int = 1):
    hello = Hello("GS-1", "v", "m", "fw", 1, 0, seq=1)
    nonce = bytes(range(16))
    return [Opened(conn, 0), dev(hello, 5, conn), kit(Challenge(nonce, WALL0), 6, conn),
            dev(Auth(mac, seq=2), took_ms, conn)]


def good_mac() -> bytes:
    return auth_mac(SECRET, bytes(range(16)), "GS-1", "fw", 1)


def test_auth_handshake_passes_the_right_mac_and_fails_a_wrong_one():
    item = items()["auth.handshake"]
    assert feed(item, *handshake(good_mac())) is None
    item.finish(100)
    assert item.verdict is Verdict.PASS
    item = items()["auth.handshake"]
    assert feed(item, *handshake(bytes(32))) is Verdict.FAIL
    assert "HMAC" in item.detail


def test_auth_handshake_fails_a_slow_exchange_and_is_not_run_without_the_secret():
    item = items()["auth.handshake"]
    assert feed(item, *handshake(good_mac(), took_ms=10_500)) is Verdict.FAIL
    item = items(secret=None)["auth.handshake"]
    feed(item, *handshake(good_mac()))
    item.finish(100)
    assert item.verdict is Verdict.NOT_RUN and "--secret" in item.detail


def test_auth_before_ok_fails_a_punch_before_auth_result_ok():
    item = items()["auth.before_ok"]
    assert feed(item, dev(Hello("GS-1", "v", "m", "fw", 1, 0, seq=1), 1), dev(punch(1), 2)) is Verdict.FAIL
    item = items()["auth.before_ok"]
    assert feed(item, ok_session(at=1), dev(punch(1), 2)) is None
    item.finish(3)
    assert item.verdict is Verdict.PASS


@pytest.mark.parametrize("gap, verdict", [(10_000, Verdict.PASS), (9_000, Verdict.FAIL)])
def test_reconnect_wait_grades_the_gap_before_the_next_connection(gap, verdict):
    item = items()["auth.refusal.server_busy"]
    note = Note("server_busy", 1, 100, {"min_ms": 10_000, "what": "GOODBYE SERVER_BUSY"})
    assert feed(item, note, Opened(2, 100 + gap)) is verdict


def test_reconnect_wait_fails_a_device_that_never_comes_back():
    item = items()["auth.refusal.locked_out"]
    feed(item, Note("locked_out", 1, 0, {"min_ms": 60_000, "what": "LOCKED_OUT"}))
    assert item.deadline_ms is not None
    assert feed(item, Tick(item.deadline_ms)) is Verdict.FAIL


def test_takeover_is_informational_whatever_the_wait():
    item = items()["reconnect.takeover"]
    assert feed(item, Note("takeover", 1, 0, {"min_ms": 30_000}), Opened(2, 50)) is Verdict.INFORMATIONAL
    assert "came back after 0.05 s" in item.detail


def probes(gaps: list[int]):
    events, at = [], 0
    for conn, gap in enumerate(gaps, start=2):
        events += [Note("probe_abort", conn - 1, at), Opened(conn, at + gap)]
        at += gap
    return events


def test_backoff_passes_growing_waits_and_is_non_strict_for_flat_ones():
    item = items()["reconnect.backoff"]
    assert feed(item, *probes([2_000, 4_100, 7_500, 16_200])) is Verdict.PASS
    item = items()["reconnect.backoff"]
    assert feed(item, *probes([1_000, 1_200, 900, 1_100])) is Verdict.NON_STRICT  # a SHOULD


# --- session -----------------------------------------------------------------------------------


def test_heartbeat_interval_passes_regular_heartbeats_and_fails_a_long_silence():
    item = items()["heartbeat.interval"]
    beats = [dev(Heartbeat(WALL0, 0, 0, seq=n), 30_000 * n) for n in (1, 2, 3)]
    assert feed(item, ok_session(at=0), *beats) is Verdict.PASS

    item = items()["heartbeat.interval"]
    feed(item, ok_session(at=0), dev(Heartbeat(WALL0, 0, 0, seq=1), 30_000))
    assert item.deadline_ms == 30_000 + 45_000 + 250
    assert feed(item, Tick(item.deadline_ms)) is Verdict.FAIL


def test_heartbeat_gap_counts_per_connection_and_stops_at_its_close():
    item = items()["heartbeat.interval"]
    feed(item, ok_session(at=0), Closed(1, 10_000, "kit"))
    assert item.deadline_ms is None


def test_session_window_fails_a_ninth_frame_waiting():
    item = items()["session.window"]
    frames = [dev(Heartbeat(WALL0, 0, 0, seq=n), n) for n in range(1, 10)]
    assert feed(item, *frames[:8]) is None
    assert feed(item, frames[8]) is Verdict.FAIL
    item = items()["session.window"]
    answered = []
    for n in range(1, 10):
        answered += [dev(Heartbeat(WALL0, 0, 0, seq=n), n), kit(Ack(n, 5, WALL0, ()), n)]
    assert feed(item, *answered) is None


# --- punches -----------------------------------------------------------------------------------


def test_punch_ack_fails_an_invalid_worker_id_and_a_reused_record_number():
    item = items()["punch.ack"]
    bad = punch(7)._replace(worker_id="620102198503124517")  # wrong check digit
    assert feed(item, dev(bad, 10)) is Verdict.FAIL and "INVALID_WORKER_ID" in item.detail
    item = items()["punch.ack"]
    first = punch(7)
    assert feed(item, dev(first, 10), dev(first._replace(seq=9), 20)) is None  # a resend is fine
    assert feed(item, dev(first._replace(direction=3 - first.direction, seq=10), 30)) is Verdict.FAIL


def answered(treatment: str, codes: dict[int, int], at: int = 100) -> Note:
    return Note("answered", 1, at, {"treatment": treatment, "codes": codes, "treated": codes, "photos": {}})


def test_duplicate_passes_when_the_record_is_not_resent_and_fails_a_resend():
    item = items()["punch.duplicate"]
    feed(item, answered("duplicate", {8: ResultCode.DUPLICATE}))
    assert feed(item, dev(punch(9), 200)) is None
    assert feed(item, Tick(item.deadline_ms)) is Verdict.PASS
    item = items()["punch.duplicate"]
    feed(item, answered("duplicate", {8: ResultCode.DUPLICATE}))
    assert feed(item, dev(punch(8, seq=12), 15_100)) is Verdict.FAIL


def test_batch_fails_a_resent_rejected_row_and_a_batch_above_the_limit():
    item = items()["punch.batch"]
    feed(item, answered("batch", {10: ResultCode.TIME_TOO_OLD, 11: ResultCode.OK}))
    batch = PunchBatch((punch(10).record, punch(12).record), seq=4)
    assert feed(item, dev(batch, 300)) is Verdict.FAIL and "TIME_TOO_OLD" in item.detail
    item = items()["punch.batch"]
    big = PunchBatch(tuple(punch(n).record for n in range(1, 502)), seq=4)
    assert feed(item, dev(big, 10)) is Verdict.FAIL


def test_unknown_result_code_is_final():
    item = items()["extension.unknown_result_code"]
    feed(item, answered("unknown_code", {20: 0x00EE}))
    assert feed(item, dev(punch(20, seq=30), 16_000)) is Verdict.FAIL


def withheld(mode: str, record_no: int, seq: int = 5, at: int = 0) -> Note:
    frame = dev(punch(record_no, seq=seq), at).frame
    return Note("withheld", 1, at, {"mode": mode, "records": [record_no], "seq": seq, "frame": frame})


def test_retransmit_timeout_passes_a_resend_after_the_wait():
    item = items()["punch.retransmit_timeout"]
    assert feed(item, withheld("timeout", 3), dev(punch(3, seq=9), 15_050)) is Verdict.PASS


@pytest.mark.parametrize("at, seq", [(500, 9), (15_050, 5)], ids=["too early", "same seq"])
def test_retransmit_timeout_fails_an_early_resend_or_the_same_frame(at, seq):
    item = items()["punch.retransmit_timeout"]
    assert feed(item, withheld("timeout", 3), dev(punch(3, seq=seq), at)) is Verdict.FAIL


def test_retransmit_timeout_fails_no_resend_and_rearms_after_a_broken_connection():
    item = items()["punch.retransmit_timeout"]
    feed(item, withheld("timeout", 3))
    assert feed(item, Tick(item.deadline_ms)) is Verdict.FAIL
    item = items()["punch.retransmit_timeout"]
    feed(item, withheld("timeout", 3), Closed(1, 100, "device"))
    assert not item.armed and item.verdict is None


def test_retransmit_reconnect_needs_the_record_in_a_later_session():
    item = items()["punch.retransmit_reconnect"]
    assert feed(item, withheld("reconnect", 4), dev(punch(4, seq=2), 3_000, conn=2)) is Verdict.PASS
    item = items()["punch.retransmit_reconnect"]
    feed(item, withheld("reconnect", 4), dev(punch(5, seq=2), 3_000, conn=2))
    assert feed(item, Tick(item.deadline_ms)) is Verdict.FAIL


# --- photos ------------------------------------------------------------------------------------

PHOTO = b"\xff\xd8" + bytes(range(256)) * 4 + b"\xff\xd9"
SHA = hashlib.sha256(PHOTO).digest()


def photo_acked(record_no: int = 30) -> Note:
    return Note("answered", 1, 10, {"treatment": "ack", "codes": {record_no: 0}, "treated": {record_no: 0},
                                    "photos": {record_no: (SHA, len(PHOTO))}})


def chunk(offset: int, size: int, record_no: int = 30, sha: bytes = SHA) -> PhotoChunk:
    return PhotoChunk(record_no, sha, len(PHOTO), offset, PHOTO[offset:offset + size], seq=offset + 1)


def test_photo_upload_passes_a_whole_photo_after_the_ack():
    item = items()["photo.upload"]
    events = [photo_acked(), dev(chunk(0, 600), 20), kit(PhotoStatus(SHA, 0, 600), 21),
              dev(chunk(600, 1000), 22), kit(PhotoStatus(SHA, 0, len(PHOTO)), 23)]
    assert feed(item, *events) is Verdict.PASS


def test_photo_upload_fails_a_chunk_before_the_ack_or_off_the_servers_offset():
    item = items()["photo.upload"]
    assert feed(item, dev(chunk(0, 600), 20)) is Verdict.FAIL and "before the punch" in item.detail
    item = items()["photo.upload"]
    events = [photo_acked(), dev(chunk(0, 600), 20), kit(PhotoStatus(SHA, 0, 600), 21), dev(chunk(500, 100), 22)]
    assert feed(item, *events) is Verdict.FAIL and "offset 500" in item.detail


def test_photo_upload_fails_two_photos_at_once():
    other = hashlib.sha256(b"other").digest()
    item = items()["photo.upload"]
    second = Note("answered", 1, 11, {"treatment": "ack", "codes": {31: 0}, "treated": {31: 0},
                                       "photos": {31: (other, len(PHOTO))}})
    events = [photo_acked(), second, dev(chunk(0, 600), 20), kit(PhotoStatus(SHA, 0, 600), 21),
              dev(chunk(0, 600, record_no=31, sha=other), 22)]
    assert feed(item, *events) is Verdict.FAIL and "one photo at a time" in item.detail


def cut(held: int = 300) -> Note:
    return Note("photo_cut", 1, 30, {"sha": SHA, "held": held, "frame": dev(chunk(0, 600), 30).frame})


def test_photo_resume_passes_query_then_the_servers_offset():
    item = items()["photo.resume"]
    events = [cut(), dev(PhotoQuery(30, SHA, len(PHOTO), seq=3), 900, conn=2),
              kit(PhotoStatus(SHA, 0, 300), 901, conn=2), dev(chunk(300, 2000), 902, conn=2),
              kit(PhotoStatus(SHA, 0, len(PHOTO)), 903, conn=2)]
    assert feed(item, *events) is Verdict.PASS


def test_photo_resume_fails_a_restart_without_query_or_at_its_own_offset():
    item = items()["photo.resume"]
    assert feed(item, cut(), dev(chunk(0, 600), 900, conn=2)) is Verdict.FAIL
    item = items()["photo.resume"]
    events = [cut(), dev(PhotoQuery(30, SHA, len(PHOTO), seq=3), 900, conn=2),
              kit(PhotoStatus(SHA, 0, 300), 901, conn=2), dev(chunk(600, 100), 902, conn=2)]
    assert feed(item, *events) is Verdict.FAIL and "PHOTO_STATUS said 300" in item.detail


# --- time and commands -------------------------------------------------------------------------


def test_time_sync_is_a_should():
    item = items()["time.sync"]
    assert feed(item, ok_session(), dev(TimeSyncRequest(WALL0, seq=2), 5)) is Verdict.PASS
    item = items()["time.sync"]
    feed(item, ok_session())
    item.finish(10)
    assert item.verdict is Verdict.NON_STRICT


def expect(item_id: str, seq: int, e: Expect, at: int = 0, conn: int = 1) -> Note:
    frame = kit(Nack(0, 0, 0, seq=seq), at, conn).frame  # stands for the command's frame in the wirelog
    return Note("expect", conn, at, {"item": item_id, "seq": seq, "expect": e, "frame": frame})


def test_reply_item_passes_right_answers_in_order():
    item = items()["command.roster_version_query"]
    feed(item, expect("command.roster_version_query", 4, Expect("rvr", version=7, what="RVQ")),
         dev(RosterVersionReply(4, 7, 2, seq=9), 10))
    item.finish(20)
    assert item.verdict is Verdict.PASS


@pytest.mark.parametrize("answer, problem", [
    (RosterVersionReply(4, 6, 2, seq=9), "reports roster version 6, 7 expected"),
    (Nack(4, 0x0205, ResultCode.COMMAND_FAILED, seq=9), "answered NACK COMMAND_FAILED"),
    (Ack(4, 0x0205, WALL0, (), seq=9), "answered ACK"),
])
def test_reply_item_fails_a_wrong_answer(answer, problem):
    item = items()["command.roster_version_query"]
    assert feed(item, expect("command.roster_version_query", 4, Expect("rvr", version=7, what="RVQ")),
                dev(answer, 10)) is Verdict.FAIL
    assert problem in item.detail


def test_reply_item_fails_a_command_skipped_or_unanswered():
    item = items()["command.door_open"]
    feed(item, expect("command.door_open", 4, Expect("ack", what="DOOR_OPEN")))
    assert feed(item, dev(Ack(5, 0x0208, WALL0, (), seq=9), 10)) is Verdict.FAIL
    assert "in order" in item.detail
    item = items()["command.door_open"]
    feed(item, expect("command.door_open", 4, Expect("ack", what="DOOR_OPEN")))
    assert feed(item, Note("expect_timeout", 1, 30_000, {"seq": 4, "item": "command.door_open"})) is Verdict.FAIL


def test_reply_item_forgets_commands_of_a_closed_connection():
    item = items()["command.door_open"]
    feed(item, expect("command.door_open", 4, Expect("ack", what="DOOR_OPEN")), Closed(1, 5, "kit"))
    item.finish(10)
    assert item.verdict is Verdict.NOT_RUN


def test_config_get_fails_an_unknown_key_answered_and_keys_out_of_order():
    e = Expect("config_reply", keys=("volume", "relay_ms", "x"), unknown_keys=("x",), what="CONFIG_GET")
    for entries, problem in [((ConfigEntry("x", "1"),), "unknown key"),
                             ((ConfigEntry("relay_ms", "1"), ConfigEntry("volume", "2")), "not in the order")]:
        item = items()["command.config_get"]
        assert feed(item, expect("command.config_get", 3, e), dev(ConfigReply(3, entries, seq=4), 5)) is Verdict.FAIL
        assert problem in item.detail


def set_time_events(device_ms: int):
    return [expect("time.set_time", 6, Expect("ack", what="SET_TIME")),
            Note("set_time", 1, 0, {"seq": 6, "value_ms": WALL0 + 120_000}),
            dev(Ack(6, 0x0207, WALL0 + 120_000, (), seq=8), 10),
            dev(Heartbeat(device_ms, 0, 0, seq=9), 20_000)]


def test_set_time_passes_when_the_next_heartbeat_carries_the_time_set():
    assert feed(items()["time.set_time"], *set_time_events(WALL0 + 140_300)) is Verdict.PASS


def test_set_time_fails_a_clock_that_did_not_move():
    item = items()["time.set_time"]
    assert feed(item, *set_time_events(WALL0 + 20_000)) is Verdict.FAIL
    assert "-120.0 s off" in item.detail


def test_unknown_message_fails_a_device_that_hangs_up():
    item = items()["command.unknown_message"]
    e = Expect("nack", codes=(ResultCode.UNSUPPORTED_MESSAGE,), ref_type=0x0777, what="unknown type")
    assert feed(item, expect("command.unknown_message", 7, e), Closed(1, 5, "device")) is Verdict.FAIL
    item = items()["command.unknown_message"]
    assert feed(item, expect("command.unknown_message", 7, e),
                dev(Nack(7, 0x0776, ResultCode.UNSUPPORTED_MESSAGE, seq=3), 5)) is Verdict.FAIL  # names another type


@pytest.mark.parametrize("capabilities, verdict", [(0, Verdict.INFORMATIONAL), (1 << 6, Verdict.NOT_RUN)])
def test_photo_items_do_not_apply_to_a_terminal_without_photo_upload(capabilities, verdict):
    for item_id in ("photo.upload", "photo.resume"):
        item = items()[item_id]
        feed(item, dev(Hello("GS-1", "v", "m", "fw", 1, capabilities, seq=1), 1))
        item.finish(10)
        assert item.verdict is verdict


def test_a_record_older_than_the_backlog_is_the_servers_policy_not_a_fault():
    item = items()["punch.ack"]
    old = punch(7)._replace(punch_time_ms=WALL0 - 40 * 86_400_000)
    assert feed(item, dev(old, 10)) is None
    item.finish(20)
    assert item.verdict is Verdict.PASS and "TIME_TOO_OLD" in item.detail
    item = items()["punch.ack"]
    ahead = punch(8)._replace(punch_time_ms=WALL0 + 600_000)  # 10 minutes ahead: the clock is wrong
    assert feed(item, dev(ahead, 10)) is Verdict.FAIL and "TIME_IN_FUTURE" in item.detail
