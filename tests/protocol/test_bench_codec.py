"""The codec benchmark's three decoders do the same work (no timing is asserted here)."""

from __future__ import annotations

from lmg.bench.codec import codec_decode, construct_decode, measure, punch_stream, struct_baseline


def test_the_three_decoders_agree_on_the_stream():
    stream = punch_stream(50)
    codec = codec_decode(stream)
    assert codec == construct_decode(stream)
    assert [tuple(m[:8]) for m in codec] == [
        (r[0], r[1], r[2].decode("latin-1"), *r[3:]) for r in struct_baseline(stream)
    ]


def test_measure_reports_every_figure():
    result = measure(frames=200, rounds=1)
    for key in ("construct_fps", "codec_fps", "struct_fps", "codec_vs_struct", "codec_vs_construct"):
        assert result[key] > 0


def test_codec_decode_with_pytest_benchmark(benchmark):
    stream = punch_stream(200)
    assert len(benchmark(codec_decode, stream)) == 200
