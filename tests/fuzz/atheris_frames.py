"""Coverage-guided fuzzing of the frame decoder with atheris (not part of CI).

    .venv/bin/pip install -e '.[fuzz]'
    .venv/bin/python tests/fuzz/atheris_frames.py -max_total_time=600 [corpus_dir]

The first input byte chooses how the rest is cut into reads. The harness fails on any
exception from `feed`, any item that is neither a message nor a documented error, a
buffer above the maximum, or a disagreement between `decode_frame` and the construct
reference on single frames.
"""

from __future__ import annotations

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))

import atheris  # noqa: E402

with atheris.instrument_imports():
    from lmg.protocol.codec import FrameDecoder, decode_frame, reference_decode_frame
    from lmg.protocol.errors import DOCUMENTED_ERRORS, ProtocolError
    from lmg.protocol.messages import MESSAGE_CLASSES

MAX_FRAME = 4096
MESSAGE_TYPES = tuple(MESSAGE_CLASSES.values())


def outcome(decode, data):
    try:
        return decode(data, max_frame_size=MAX_FRAME)
    except ProtocolError as exc:
        if not isinstance(exc, DOCUMENTED_ERRORS):
            raise
        return type(exc), exc.seq, exc.msg_type


def one_input(data: bytes) -> None:
    if not data:
        return
    step = data[0] + 1
    stream = data[1:]
    decoder = FrameDecoder(max_frame_size=MAX_FRAME)
    for start in range(0, len(stream), step):
        for item in decoder.feed(stream[start : start + step]):
            if not isinstance(item, MESSAGE_TYPES + DOCUMENTED_ERRORS):
                raise AssertionError(f"unexpected item {item!r}")
        if decoder.buffered >= MAX_FRAME:
            raise AssertionError(f"decoder holds {decoder.buffered} bytes")
    if outcome(decode_frame, stream) != outcome(reference_decode_frame, stream):
        raise AssertionError("fast and reference single-frame decoders disagree")


def main() -> None:
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
