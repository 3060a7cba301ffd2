"""The generated fast path is exactly as strict as the construct reference.

For any body bytes a fast decoder must return what construct returns, and fail exactly
when construct fails; for any frame bytes `decode_frame` must agree with
`reference_decode_frame`, down to the error type, seq and msg_type.
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from protocol.codec import (
    BODY_ENCODERS,
    FAST_CODECS,
    HOT_MESSAGE_TYPES,
    REFERENCE_DECODERS,
    decode_frame,
    encode,
    reference_decode_frame,
)
from protocol.codes import MessageType
from protocol.errors import DOCUMENTED_ERRORS, MalformedBody, ProtocolError
from protocol.messages import MESSAGE_CLASSES, PUNCH_RECORD_SIZE, Punch, PunchBatch, PunchRecord
from protocol.schema import HEADER_SIZE
from tests.protocol.strategies import message_strategy

HOT_CLASSES = [MESSAGE_CLASSES[int(t)] for t in HOT_MESSAGE_TYPES]


def outcome(decoder, body: bytes):
    try:
        return ("ok", decoder(body, 0, len(body), 7))
    except MalformedBody:
        return ("malformed", None)


def test_every_hot_message_has_a_generated_codec():
    assert set(FAST_CODECS) == {int(t) for t in HOT_MESSAGE_TYPES}
    for codec in FAST_CODECS.values():
        assert "_head_unpack" in codec.source  # generated from the schema, not the construct fallback


def mutated_body(cls):
    """Valid bodies, then truncated, extended or with bytes flipped."""

    def mutate(args):
        message, cut, extra, flips = args
        body = bytearray(BODY_ENCODERS[cls](message))
        for position, value in flips:
            if body:
                body[position % len(body)] = value
        if cut is not None:
            del body[cut % (len(body) + 1):]
        return bytes(body) + extra

    return st.tuples(
        message_strategy(cls),
        st.none() | st.integers(0, 10_000),
        st.binary(max_size=80),
        st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=4),
    ).map(mutate)


@pytest.mark.parametrize("cls", HOT_CLASSES, ids=lambda c: c.__name__)
@settings(max_examples=400, deadline=None)
@given(data=st.data())
def test_fast_body_decoder_matches_construct(cls, data):
    body = data.draw(st.one_of(st.binary(max_size=300), mutated_body(cls)))
    fast = FAST_CODECS[int(cls.msg_type)].decode
    reference = REFERENCE_DECODERS[int(cls.msg_type)]
    assert outcome(fast, body) == outcome(reference, body)


def batch_body(count: int, record_size: int, rows: bytes) -> bytes:
    return struct.pack(">HH", count, record_size) + rows


@pytest.mark.parametrize(
    "body",
    [
        batch_body(0, 0, b""),  # empty batch, any record size: both accept
        batch_body(0, 3, b"junk"),
        batch_body(1, PUNCH_RECORD_SIZE - 1, bytes(200)),  # rows shorter than a record
        batch_body(1, PUNCH_RECORD_SIZE + 10, bytes(PUNCH_RECORD_SIZE + 10)),  # newer, longer rows
        batch_body(2, PUNCH_RECORD_SIZE + 10, bytes(PUNCH_RECORD_SIZE + 10)),  # one row short
        batch_body(2, PUNCH_RECORD_SIZE, bytes(2 * PUNCH_RECORD_SIZE + 5)),  # trailing extension
        batch_body(65535, PUNCH_RECORD_SIZE, bytes(100)),
    ],
)
def test_batch_edge_cases_agree(body):
    fast = FAST_CODECS[MessageType.PUNCH_BATCH].decode
    reference = REFERENCE_DECODERS[MessageType.PUNCH_BATCH]
    assert outcome(fast, body) == outcome(reference, body)


def test_longer_rows_from_a_newer_peer_keep_the_known_fields():
    record = PunchRecord(5, 1_700_000_000_000, "11010519491231002X", 1, 1, 0, 0, bytes(32))
    row = BODY_ENCODERS[Punch](Punch.of(record))
    body = batch_body(2, len(row) + 4, (row + b"NEW!") * 2)
    result = FAST_CODECS[MessageType.PUNCH_BATCH].decode(body, 0, len(body), 1)
    assert result == PunchBatch((record, record), 1)


def frame_outcome(decoder, data: bytes):
    try:
        return ("ok", decoder(data))
    except ProtocolError as exc:
        assert isinstance(exc, DOCUMENTED_ERRORS)
        return ("error", exc)


frames = st.one_of(
    st.binary(max_size=120),
    st.builds(lambda m: encode(m), st.one_of([message_strategy(c) for c in HOT_CLASSES])),
)


@settings(max_examples=500, deadline=None)
@given(frame=frames, flips=st.lists(st.tuples(st.integers(0, 4000), st.integers(0, 255)), max_size=3), cut=st.none() | st.integers(0, 4000))
@example(frame=b"LM" + bytes(HEADER_SIZE), flips=[], cut=None)
def test_decode_frame_matches_reference(frame, flips, cut):
    data = bytearray(frame)
    for position, value in flips:
        if data:
            data[position % len(data)] = value
    if cut is not None:
        del data[cut % (len(data) + 1):]
    data = bytes(data)
    assert frame_outcome(decode_frame, data) == frame_outcome(reference_decode_frame, data)
