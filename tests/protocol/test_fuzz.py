"""Fuzzing the stream decoder: random and mutated streams, cut into random reads.

Whatever arrives, `feed` returns only messages and documented `ProtocolError` values,
raises nothing, never holds a whole maximum frame between calls, and gives the same
answer however the stream was cut into reads.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lmg.protocol.codec import FrameDecoder, encode
from lmg.protocol.errors import DOCUMENTED_ERRORS, ProtocolError
from lmg.protocol.messages import MESSAGE_CLASSES
from tests.protocol.strategies import any_message

MAX_FRAME = 2048  # small maximum so oversize paths are hit often


def valid_frames():
    def safe_encode(message):
        try:
            return encode(message, max_frame_size=MAX_FRAME)
        except Exception:  # noqa: BLE001 - too large for this small maximum: use a stub
            return b"LM"

    return st.lists(any_message.map(safe_encode), max_size=6).map(b"".join)


def mutate(stream: bytes, flips, inserts, cut):
    data = bytearray(stream)
    for position, value in flips:
        if data:
            data[position % len(data)] = value
    for position, blob in inserts:
        position = position % (len(data) + 1)
        data[position:position] = blob
    if cut is not None and data:
        del data[cut % len(data):]
    return bytes(data)


streams = st.one_of(
    st.binary(max_size=3000),
    st.builds(
        mutate,
        valid_frames(),
        st.lists(st.tuples(st.integers(0, 1 << 16), st.integers(0, 255)), max_size=5),
        st.lists(st.tuples(st.integers(0, 1 << 16), st.binary(max_size=30) | st.just(b"LM\x01")), max_size=3),
        st.none() | st.integers(0, 1 << 16),
    ),
)


def feed_in_chunks(stream: bytes, cuts: list[int]):
    decoder = FrameDecoder(max_frame_size=MAX_FRAME)
    out = []
    last = 0
    for cut in sorted(c % (len(stream) + 1) for c in cuts) + [len(stream)]:
        out += decoder.feed(stream[last:cut])
        assert decoder.buffered < MAX_FRAME
        last = cut
    return decoder, out


@settings(max_examples=int(__import__("os").environ.get("LMG_FUZZ_EXAMPLES", "600")), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stream=streams, cuts=st.lists(st.integers(0, 1 << 16), max_size=12))
def test_any_stream_in_any_chunking(stream, cuts):
    whole_decoder, whole = feed_in_chunks(stream, [])
    chunked_decoder, chunked = feed_in_chunks(stream, cuts)
    message_classes = tuple(MESSAGE_CLASSES.values())
    for item in chunked:
        if isinstance(item, ProtocolError):
            assert isinstance(item, DOCUMENTED_ERRORS)
        else:
            assert isinstance(item, message_classes)
    assert chunked == whole
    assert chunked_decoder.skipped_bytes == whole_decoder.skipped_bytes
    assert chunked_decoder.buffered == whole_decoder.buffered
