"""`lmg bench codec`: decode rate of a stream of PUNCH frames, three ways, in one run.

(a) construct: the schemas interpreted by construct, frame by frame (the reference);
(b) codec: the project's `FrameDecoder` (generated struct fast path, typed messages);
(c) struct: a hand-written loop doing the same checks (magic, maximum length, CRC-32,
    body length) with `struct.unpack_from` and returning plain tuples: about the limit
    of pure Python for this work.
Every figure is the median of several rounds, and the verdict is a ratio between rates
measured in this same process, so a busy machine moves all three together.
Targets: codec >= 0.5 x struct and >= 10 x construct.
"""

from __future__ import annotations

import json
import platform
import statistics
import struct
import time
import zlib

from lmg.protocol.codec import FrameDecoder, encode, reference_decode_frame
from lmg.protocol.messages import PUNCH_RECORD_SIZE, Punch, PunchRecord
from lmg.protocol.schema import FRAME_OVERHEAD, HEADER_SIZE, MAGIC, MAX_FRAME_SIZE

NAME = "codec"
HELP = "frame decode rate: construct vs the project's codec vs a hand-written struct loop"
TARGET_VS_STRUCT = 0.5
TARGET_VS_CONSTRUCT = 10.0


def add_arguments(parser) -> None:
    parser.add_argument("--frames", type=int, default=20_000, help="PUNCH frames in the stream (default 20000)")
    parser.add_argument("--rounds", type=int, default=7, help="rounds per method; the median is reported (default 7)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def punch_stream(count: int) -> bytes:
    frames = []
    for i in range(count):
        record = PunchRecord(i, 1_763_942_400_000 + i * 1000, "620102198503124516", 1 + i % 2, 1, 365, 0, bytes(32))
        frames.append(encode(Punch.of(record, seq=i)))
    return b"".join(frames)


_HEADER = struct.Struct(">2sBBHII")
_RECORD = struct.Struct(">IQ18sBBHI32s")
_CRC = struct.Struct(">I")


def struct_baseline(stream: bytes) -> list[tuple]:
    """Hand-written decoder: same checks as the codec, plain tuples out."""
    out: list[tuple] = []
    append = out.append
    header, record, crc_field, crc32 = _HEADER.unpack_from, _RECORD.unpack_from, _CRC.unpack_from, zlib.crc32
    max_body = MAX_FRAME_SIZE - FRAME_OVERHEAD
    pos, size = 0, len(stream)
    while size - pos >= HEADER_SIZE:
        magic, _version, _flags, _msg_type, _seq, body_len = header(stream, pos)
        if magic != MAGIC or body_len > max_body:
            raise ValueError("bad frame")
        end = pos + HEADER_SIZE + body_len
        if end + 4 > size:
            break
        if crc32(stream[pos:end]) != crc_field(stream, end)[0]:
            raise ValueError("bad checksum")
        if body_len < PUNCH_RECORD_SIZE:
            raise ValueError("short body")
        append(record(stream, pos + HEADER_SIZE))
        pos = end + 4
    return out


def codec_decode(stream: bytes) -> list:
    return FrameDecoder().feed(stream)


def construct_decode(stream: bytes) -> list:
    out = []
    pos = 0
    while pos < len(stream):
        body_len = struct.unpack_from(">I", stream, pos + 10)[0]
        end = pos + FRAME_OVERHEAD + body_len
        out.append(reference_decode_frame(stream[pos:end]))
        pos = end
    return out


def _one_rate(fn, stream: bytes, frames: int) -> float:
    start = time.perf_counter()
    decoded = fn(stream)
    elapsed = time.perf_counter() - start
    if len(decoded) != frames:
        raise AssertionError(f"{fn.__name__} decoded {len(decoded)} of {frames} frames")
    return frames / elapsed


def measure(frames: int = 20_000, rounds: int = 7) -> dict:
    """Rates and ratios; the three methods alternate within each round so that load from
    elsewhere on the machine hits them alike, and ratios are medians of per-round ratios."""
    stream = punch_stream(frames)
    small = max(frames // 20, 100)  # construct is slow: a shorter stream, same per-frame work
    small_stream = punch_stream(small)
    rates: dict[str, list[float]] = {"struct": [], "codec": [], "construct": []}
    for _ in range(rounds):
        rates["struct"].append(_one_rate(struct_baseline, stream, frames))
        rates["codec"].append(_one_rate(codec_decode, stream, frames))
        rates["construct"].append(_one_rate(construct_decode, small_stream, small))
    vs_struct = statistics.median(c / s for c, s in zip(rates["codec"], rates["struct"]))
    vs_construct = statistics.median(c / k for c, k in zip(rates["codec"], rates["construct"]))
    return {
        "construct_fps": round(statistics.median(rates["construct"])),
        "codec_fps": round(statistics.median(rates["codec"])),
        "struct_fps": round(statistics.median(rates["struct"])),
        "codec_vs_struct": round(vs_struct, 3),
        "codec_vs_construct": round(vs_construct, 1),
        "target_codec_vs_struct": TARGET_VS_STRUCT,
        "target_codec_vs_construct": TARGET_VS_CONSTRUCT,
        "met": vs_struct >= TARGET_VS_STRUCT and vs_construct >= TARGET_VS_CONSTRUCT,
        "frames": frames,
        "rounds": rounds,
        "python": platform.python_version(),
        "machine": f"{platform.machine()}, {_cpus()} CPUs (shared; compare ratios, not absolutes)",
    }


def _cpus() -> int:
    import os

    return os.cpu_count() or 0


def run(args) -> int:
    result = measure(args.frames, args.rounds)
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"PUNCH frames decoded per second (median of {result['rounds']} rounds, {result['machine']})")
    print(f"  construct (reference)   {result['construct_fps']:>12,}")
    print(f"  codec (FrameDecoder)    {result['codec_fps']:>12,}   {result['codec_vs_construct']}x construct")
    print(f"  struct (hand-written)   {result['struct_fps']:>12,}   codec = {result['codec_vs_struct']}x of this")
    print(
        f"targets: codec >= {TARGET_VS_STRUCT}x struct and >= {TARGET_VS_CONSTRUCT}x construct: "
        + ("met" if result["met"] else "NOT met")
    )
    return 0
