"""The incremental FrameDecoder: splits, coalesced frames, oversize, garbage, bounds."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lmg.protocol.codec import FrameDecoder, encode
from lmg.protocol.codes import MessageType, ResultCode
from lmg.protocol.errors import BadChecksum, FrameTooLarge, MalformedBody, ProtocolError, UnsupportedMessage, UnsupportedVersion
from lmg.protocol.messages import Ack, Heartbeat, Punch, PunchRecord
from lmg.protocol.schema import FRAME_OVERHEAD, HEADER_SIZE, MAGIC, MAX_FRAME_SIZE, frame_checksum

RECORD = PunchRecord(7, 1_700_000_000_000, "11010519491231002X", 1, 1, 365, 0, bytes(32))


def raw_frame(msg_type: int, seq: int, body: bytes, version: int = 1) -> bytes:
    header = struct.pack(">2sBBHII", MAGIC, version, 0, msg_type, seq, len(body))
    return header + body + struct.pack(">I", frame_checksum(header + body))


def messages(n: int) -> list:
    return [Punch.of(RECORD._replace(record_no=i), seq=i) for i in range(n)]


def test_many_frames_in_one_read():
    wanted = messages(50)
    assert FrameDecoder().feed(b"".join(encode(m) for m in wanted)) == wanted


def test_byte_by_byte():
    wanted = messages(3)
    decoder = FrameDecoder()
    got = []
    for byte in b"".join(encode(m) for m in wanted):
        got += decoder.feed(bytes([byte]))
        assert decoder.buffered < MAX_FRAME_SIZE
    assert got == wanted
    assert decoder.skipped_bytes == 0


@settings(max_examples=100, deadline=None)
@given(cuts=st.lists(st.integers(0, 2000), max_size=20))
def test_any_split_gives_the_same_messages(cuts):
    wanted = messages(10)
    stream = b"".join(encode(m) for m in wanted)
    decoder = FrameDecoder()
    got = []
    last = 0
    for cut in sorted(c % (len(stream) + 1) for c in cuts) + [len(stream)]:
        got += decoder.feed(stream[last:cut])
        last = cut
    assert got == wanted


def test_oversize_declared_length_is_rejected_before_the_body_arrives():
    decoder = FrameDecoder(max_frame_size=1024)
    header = struct.pack(">2sBBHII", MAGIC, 1, 0, MessageType.PUNCH, 9, 1_000_000)
    out = decoder.feed(header)  # only the header: nothing of the body has been sent
    assert out == [FrameTooLarge("declared body of 1000000 bytes exceeds 1006", seq=9, msg_type=MessageType.PUNCH)]
    assert out[0].fatal and out[0].result_code == ResultCode.FRAME_TOO_LARGE
    assert decoder.buffered < HEADER_SIZE


def test_frame_of_exactly_the_maximum_is_accepted():
    body = bytes(1024 - FRAME_OVERHEAD)
    frame = raw_frame(MessageType.PHOTO_CHUNK, 1, body)
    out = FrameDecoder(max_frame_size=1024).feed(frame)
    assert [type(m).__name__ for m in out] == ["PhotoChunk"]  # zeros parse; the rest is ignored
    out = FrameDecoder(max_frame_size=1023).feed(frame)
    assert isinstance(out[0], FrameTooLarge)


def test_garbage_before_between_and_after_frames_is_skipped_and_counted():
    a, b = messages(2)
    decoder = FrameDecoder()
    out = decoder.feed(b"\x00junk" + encode(a) + b"LXnoise" + encode(b) + b"tail")
    assert out == [a, b]
    assert decoder.skipped_bytes == 5 + 7 + 4
    assert decoder.buffered == 0


def test_bad_checksum_is_reported_and_the_next_frame_still_decodes():
    a, b = messages(2)
    broken = bytearray(encode(a))
    broken[-1] ^= 0xFF
    out = FrameDecoder().feed(bytes(broken) + encode(b))
    assert isinstance(out[0], BadChecksum) and out[0].seq == a.seq
    assert out[1:] == [b]


def test_unknown_message_type_is_a_value_not_a_disconnect():
    out = FrameDecoder().feed(raw_frame(0x7777, 5, b"abc") + encode(Heartbeat(1, 2, 3, 6)))
    assert out[0] == UnsupportedMessage("unknown message type 0x7777", seq=5, msg_type=0x7777)
    assert out[0].result_code == ResultCode.UNSUPPORTED_MESSAGE and not out[0].fatal
    assert out[1] == Heartbeat(1, 2, 3, 6)


def test_unknown_frame_version_is_consumed_whole():
    out = FrameDecoder().feed(raw_frame(MessageType.HEARTBEAT, 5, bytes(16), version=2) + encode(Heartbeat(1, 2, 3, 6)))
    assert isinstance(out[0], UnsupportedVersion)
    assert out[1] == Heartbeat(1, 2, 3, 6)


def test_short_body_is_malformed_with_its_seq():
    out = FrameDecoder().feed(raw_frame(MessageType.PUNCH, 11, bytes(10)))
    assert isinstance(out[0], MalformedBody) and out[0].seq == 11 and out[0].msg_type == MessageType.PUNCH


def test_trailing_fields_from_a_newer_peer_are_ignored():
    body = struct.pack(">QII", 5, 6, 7) + b"future fields"
    assert FrameDecoder().feed(raw_frame(MessageType.HEARTBEAT, 1, body)) == [Heartbeat(5, 6, 7, 1)]


def test_sequence_numbers_wrap():
    last = Ack(1, 2, 3, (), seq=0xFFFFFFFF)
    first = Ack(1, 2, 3, (), seq=0)
    assert FrameDecoder().feed(encode(last) + encode(first)) == [last, first]


def test_rejections_are_counted():
    decoder = FrameDecoder()
    decoder.feed(raw_frame(0x7777, 1, b"") + encode(Heartbeat(1, 2, 3)))
    assert (decoder.frames, decoder.rejected) == (2, 1)


@pytest.mark.parametrize("size", [0, 5, FRAME_OVERHEAD - 1, 1 << 32])
def test_impossible_maximum_is_refused(size):
    with pytest.raises(ValueError, match="max_frame_size"):
        FrameDecoder(max_frame_size=size)


def test_results_are_documented_errors_or_messages():
    out = FrameDecoder().feed(b"LM" + bytes(40) + encode(Heartbeat(1, 2, 3)))
    assert all(isinstance(item, (ProtocolError, Heartbeat)) for item in out)
    assert out[-1] == Heartbeat(1, 2, 3)
