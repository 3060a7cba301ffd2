"""The kit's conductor driven by hand, frame by frame: its plan and its answers, no sockets."""

from __future__ import annotations

import pytest

from lmg.protocol import (
    Auth,
    AuthResult,
    Challenge,
    Goodbye,
    Heartbeat,
    Hello,
    Nack,
    PhotoChunk,
    PhotoStatus,
    ResultCode,
    RosterVersionQuery,
    decode_frame,
    encode,
)
from lmg.protocol.auth import auth_mac
from lmg.server.conformance.catalogue import KitTimings
from lmg.server.conformance.examiner import NEXT_PHASE, Close, Examiner, Phase, Send
from lmg.server.conformance.wire import WireFrame

SECRET = bytes(range(32))
HELLO = Hello("GS-1", "v", "m", "fw", 1, 0x53, seq=1)


class Wire:
    """The device's end: frames in, the kit's answers decoded."""

    def __init__(self):
        self.kit = Examiner(KitTimings(), secret=SECRET, serial="GS-1", wall_at_start_ms=1_763_942_400_000,
                            entropy=lambda n: bytes(n))
        self.conn = 0
        self.seq = 0

    def open(self, at: int):
        self.conn += 1
        self.seq = 0
        return self.answers(self.kit.opened(self.conn, at))

    def send(self, message, at: int):
        self.seq += 1
        message = message._replace(seq=self.seq)
        frame = WireFrame(self.conn, "device", at, encode(message), message, None, 0)
        return self.answers(self.kit.received(frame, at))

    @staticmethod
    def answers(actions):
        out = []
        for action in actions:
            if isinstance(action, Send):
                out.append(decode_frame(action.data))
            elif isinstance(action, Close):
                out.append("close")
        return out

    def mac(self, nonce: bytes) -> bytes:
        return auth_mac(SECRET, nonce, HELLO.serial, HELLO.firmware, 1)


def test_the_first_five_connections_are_refused_in_order_then_a_session_gets_commands():
    wire = Wire()
    assert wire.open(0) == []
    challenge, goodbye, close = wire.send(HELLO, 10)
    assert isinstance(challenge, Challenge) and goodbye == Goodbye(ResultCode.AUTH_TIMEOUT, 0, seq=2)
    assert close == "close"

    assert wire.open(2_000) == [Goodbye(ResultCode.SERVER_BUSY, 10, seq=1), "close"]

    wire.open(14_000)
    result, close = wire.send(HELLO, 14_010)
    assert (result.result, result.retry_after_s, close) == (ResultCode.LOCKED_OUT, 60, "close")

    wire.open(80_000)
    result, close = wire.send(HELLO, 80_010)
    assert result.result == ResultCode.UNKNOWN_DEVICE and close == "close"

    wire.open(150_000)
    (challenge,) = wire.send(HELLO, 150_010)
    result, close = wire.send(Auth(wire.mac(challenge.nonce)), 150_020)
    assert result.result == ResultCode.BAD_SIGNATURE and close == "close"

    wire.open(220_000)
    (challenge,) = wire.send(HELLO, 220_010)
    result, query = wire.send(Auth(wire.mac(challenge.nonce)), 220_020)
    assert isinstance(result, AuthResult) and result.result == ResultCode.OK and result.heartbeat_interval_s == 30
    assert isinstance(query, RosterVersionQuery)
    assert wire.kit.phase is Phase.SESSION
    verdicts = {i: wire.kit.items[i].verdict.value for i in ("auth.refusal.auth_timeout", "auth.refusal.server_busy",
                                                            "auth.refusal.locked_out", "auth.refusal.unknown_device",
                                                            "auth.refusal.bad_signature")}
    assert set(verdicts.values()) == {"pass"}


def test_before_authentication_only_hello_and_auth_are_taken():
    wire = Wire()
    wire.open(0)
    (nack,) = wire.send(Heartbeat(0, 0, 0), 5)
    assert nack == Nack(1, 0x0005, ResultCode.AUTH_REQUIRED, seq=1)
    assert wire.kit.items["auth.before_ok"].verdict.value == "fail"


@pytest.mark.parametrize("record_no, size, code", [(1, 3 << 20, ResultCode.PHOTO_TOO_LARGE),
                                                   (2, 1000, ResultCode.PHOTO_NOT_ANNOUNCED)])
def test_a_photo_too_large_or_not_announced_is_refused_before_any_byte_is_held(record_no, size, code):
    wire = Wire()
    wire.kit.roles.clear()
    wire.open(0)
    (challenge,) = wire.send(HELLO, 1)
    wire.send(Auth(wire.mac(challenge.nonce)), 2)
    status = [m for m in wire.send(PhotoChunk(record_no, bytes(32), size, 0, b"x" * 100), 3)
              if isinstance(m, PhotoStatus)]
    assert status[0].result == code and wire.kit.photos == {}


def test_the_plan_is_a_chain_from_the_refusals_to_done_and_refuses_any_other_move():
    phase, seen = Phase.REFUSALS, []
    while phase in NEXT_PHASE:
        seen.append(phase)
        phase = NEXT_PHASE[phase][0]
    assert phase is Phase.DONE and set(seen) | {Phase.DONE} == set(Phase)
    kit = Examiner(KitTimings())
    with pytest.raises(RuntimeError, match="no move from refusals to probes"):
        kit._enter(Phase.PROBES)


def test_the_time_limit_ends_the_run_with_what_was_never_reached():
    wire = Wire()
    wire.open(0)
    wire.kit.stop(5_000)
    report = wire.kit.report()
    assert wire.kit.done and report["summary"]["verdict"] == "does not conform"
    assert "punch.ack" in report["summary"]["not_reached"]
    assert wire.kit.received(WireFrame(1, "device", 6_000, b"", HELLO), 6_000) == []  # closed: ignored
