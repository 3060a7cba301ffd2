"""The generated fast path is exactly as strict as the construct reference.

For any body bytes a fast decoder must return what construct returns, and fail exactly
when construct fails; for any frame bytes `decode_frame` must agree with
`reference_decode_frame`, down to the error type, seq and msg_type.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

import pytest
from construct import ConstructError, Struct
from hypothesis import example, given, settings
from hypothesis import strategies as st

from lmg.protocol.codec import (
    BODY_ENCODERS,
    REFERENCE_ENCODERS,
    FAST_CODECS,
    HOT_MESSAGE_TYPES,
    REFERENCE_DECODERS,
    decode_frame,
    encode,
    reference_decode_frame,
)
from lmg.protocol.auth import SIGNED_AUTH_MESSAGE, auth_message
from lmg.protocol.codes import MessageType
from lmg.protocol.errors import DOCUMENTED_ERRORS, EncodeError, MalformedBody, ProtocolError
from lmg.protocol.fastpath import NotFastPathable, compile_codec
from lmg.protocol.messages import MESSAGE_CLASSES, PUNCH_RECORD_SIZE, Hello, Punch, PunchBatch, PunchRecord
from lmg.protocol.schema import HEADER_SIZE, U8, U16, Row, Text, counted_rows
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
        assert "unpack" in codec.source  # generated struct code, not the construct fallback


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


def text_field(prefix: int, n: int, payload: bytes) -> bytes:
    return n.to_bytes(prefix, "big") + payload


HELLO_TAIL = bytes([1]) + (5).to_bytes(4, "big")  # protocol_version, capabilities


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"\x00" * 4 + HELLO_TAIL,  # four empty texts
        b"\x00" * 4 + HELLO_TAIL[:-1],  # capabilities one byte short
        b"\x00" * 4 + HELLO_TAIL + b"newer field",  # trailing bytes are an extension
        text_field(1, 5, b"GS-01") + b"\x00" * 3 + HELLO_TAIL,
        text_field(1, 6, b"GS-01") + b"\x00" * 3 + HELLO_TAIL,  # length past the body's end
        text_field(1, 255, b"x" * 10),
        text_field(1, 2, b"\xc3\xa9") + b"\x00" * 3 + HELLO_TAIL,  # "é"
        text_field(1, 1, b"\xc3") + b"\x00" * 3 + HELLO_TAIL,  # cut UTF-8 sequence
        text_field(1, 3, b"\xed\xa0\x80") + b"\x00" * 3 + HELLO_TAIL,  # an encoded surrogate
        text_field(1, 2, b"\xc0\xaf") + b"\x00" * 3 + HELLO_TAIL,  # overlong encoding
        b"\x00" * 3 + text_field(1, 2, b"\xff\xfe") + HELLO_TAIL,  # bad UTF-8 in the last text
    ],
)
def test_hello_edge_cases_agree(body):
    fast = FAST_CODECS[MessageType.HELLO].decode
    reference = REFERENCE_DECODERS[MessageType.HELLO]
    assert outcome(fast, body) == outcome(reference, body)
    padded = b"junk" + body + b"more"  # the decoder reads only between start and end
    assert outcome(lambda b, s, e, q: fast(padded, 4, 4 + len(body), q), body) == outcome(reference, body)


def encode_outcome(encoder, message):
    try:
        return ("ok", encoder(message))
    except EncodeError:
        return ("refused", None)


any_text = st.text(st.characters(blacklist_categories=()), max_size=90)  # surrogates and > 255 bytes too
odd_value = st.one_of(st.integers(-2, 1 << 33), st.binary(max_size=40), any_text, st.none())


@settings(max_examples=400, deadline=None)
@given(texts=st.lists(st.one_of(any_text, odd_value), min_size=4, max_size=4),
       version=odd_value, capabilities=odd_value)
def test_fast_hello_encoder_matches_construct(texts, version, capabilities):
    message = Hello(*texts, version, capabilities, 1)
    assert encode_outcome(BODY_ENCODERS[Hello], message) == encode_outcome(REFERENCE_ENCODERS[Hello], message)


@pytest.mark.parametrize("cls", HOT_CLASSES, ids=lambda c: c.__name__)
@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_fast_encoder_matches_construct_on_valid_messages(cls, data):
    message = data.draw(message_strategy(cls))
    assert encode_outcome(BODY_ENCODERS[cls], message) == encode_outcome(REFERENCE_ENCODERS[cls], message)


def build_outcome(build, values):
    try:
        return ("ok", build(values))
    except (EncodeError, ConstructError, TypeError, AttributeError, UnicodeError, ValueError):
        return ("refused", None)


@settings(max_examples=400, deadline=None)
@given(nonce=st.one_of(st.binary(min_size=16, max_size=16), st.binary(max_size=20)),  # construct takes ints as bytes: not ours to copy
       serial=st.one_of(any_text, odd_value), firmware=st.one_of(any_text, odd_value), version=odd_value)
def test_signed_auth_message_matches_its_construct_schema(nonce, serial, firmware, version):
    values = (nonce, serial, firmware, version)
    names = [sc.name for sc in SIGNED_AUTH_MESSAGE.subcons]
    reference = build_outcome(lambda v: SIGNED_AUTH_MESSAGE.build(dict(zip(names, v))), values)
    assert build_outcome(lambda v: auth_message(*v), values) == reference


def test_generator_refuses_text_before_an_array_of_rows():
    class Entry(NamedTuple):
        value: int

    class Odd(NamedTuple):
        name: str
        entries: tuple
        seq: int = 0

    Odd.msg_type = MessageType.CONFIG_SET
    schema = Struct("name" / Text(1), *counted_rows("entries", "entry_count", U8, Row(Entry, Struct("value" / U16)), "rows"))
    with pytest.raises(NotFastPathable, match="text"):
        compile_codec(Odd, schema)


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
