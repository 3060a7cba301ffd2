"""The atheris corpus is seeded from every golden vector (tests/fuzz/seed_corpus.py)."""

from __future__ import annotations

import importlib.util
import pathlib

SEED = pathlib.Path(__file__).resolve().parents[1] / "fuzz" / "seed_corpus.py"


def _module():
    spec = importlib.util.spec_from_file_location("seed_corpus", SEED)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_corpus_holds_every_vector_whole_and_bytewise():
    module = _module()
    assert module.main(["--check"]) == 0, "run tests/fuzz/seed_corpus.py and commit tests/fuzz/corpus"
    vectors = sorted(p.stem for p in module.VECTORS.glob("*.json"))
    names = {p.name for p in module.CORPUS.glob("*")}
    for stem in vectors:
        assert {f"{stem}-whole", f"{stem}-bytewise"} <= names


def test_seeds_decode_as_the_harness_reads_them():
    from lmg.protocol.codec import FrameDecoder
    from lmg.protocol.messages import MESSAGE_CLASSES

    for name, data in _module().seeds().items():
        if name == "all-vectors-stream":
            continue
        decoder = FrameDecoder(max_frame_size=4096)
        step = data[0] + 1
        items = [item for start in range(1, len(data), step) for item in decoder.feed(data[start:start + step])]
        assert len(items) == 1 and isinstance(items[0], tuple(MESSAGE_CLASSES.values())), name
