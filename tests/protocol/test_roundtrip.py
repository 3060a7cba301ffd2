"""Every message survives encode -> decode, and the fast and reference codecs agree."""

from __future__ import annotations

import pytest
from hypothesis import given, settings

from lmg.protocol.codec import FrameDecoder, decode_frame, encode, reference_decode_frame, reference_encode
from lmg.protocol.errors import EncodeError
from lmg.protocol.messages import MESSAGE_CLASSES, Ack, Punch, PunchBatch, PunchRecord, RecordResult
from lmg.protocol.schema import MAX_FRAME_SIZE
from tests.protocol.strategies import message_strategy


@pytest.mark.parametrize("cls", list(MESSAGE_CLASSES.values()), ids=lambda c: c.__name__)
@settings(max_examples=60, deadline=None)
@given(data=__import__("hypothesis").strategies.data())
def test_round_trip_every_message(cls, data):
    message = data.draw(message_strategy(cls))
    try:
        frame = encode(message)
    except EncodeError:
        # only legitimately too-large frames may refuse to encode
        assert len(reference_body_size(message)) > MAX_FRAME_SIZE - 18
        return
    assert reference_encode(message) == frame
    assert decode_frame(frame) == message
    assert reference_decode_frame(frame) == message
    assert FrameDecoder().feed(frame) == [message]


def reference_body_size(message):
    from lmg.protocol.codec import REFERENCE_ENCODERS

    return REFERENCE_ENCODERS[type(message)](message)


def test_message_equality_is_type_aware():
    a = Ack(1, 2, 3, (), 0)
    assert a == Ack(1, 2, 3, (), 0)
    assert a != tuple(a)
    assert hash(a) == hash(Ack(1, 2, 3, (), 0))


@pytest.mark.parametrize(
    "bad",
    [
        Punch.of(PunchRecord(1, 2, "short", 1, 1, 0, 0, bytes(32))),  # worker id not 18 chars
        Punch.of(PunchRecord(1, 2, "1" * 18, 1, 1, 0, 0, bytes(31))),  # sha not 32 bytes
        Punch.of(PunchRecord(-1, 2, "1" * 18, 1, 1, 0, 0, bytes(32))),  # negative u32
        Punch.of(PunchRecord(1, 2, "身" * 18, 1, 1, 0, 0, bytes(32))),  # not single-byte text
        Ack(1, 2, 3, (RecordResult(1, 1 << 16),)),  # result over u16
        Ack(1, 2, 3, (), seq=1 << 32),  # seq over u32
    ],
)
def test_encode_refuses_what_cannot_go_on_the_wire(bad):
    with pytest.raises(EncodeError):
        encode(bad)
    with pytest.raises(EncodeError):
        reference_encode(bad)


def test_batch_too_large_for_a_frame_is_refused_with_advice():
    record = PunchRecord(1, 2, "1" * 18, 1, 1, 0, 0, bytes(32))
    with pytest.raises(EncodeError, match="split"):
        encode(PunchBatch((record,) * 1000))
