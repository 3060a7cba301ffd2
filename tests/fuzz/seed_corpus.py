"""Seed the atheris corpus (tests/fuzz/corpus/) from the golden vectors (tests/vectors/).

    .venv/bin/python tests/fuzz/seed_corpus.py            # rewrite the corpus
    .venv/bin/python tests/fuzz/seed_corpus.py --check    # exit 1 if it is stale

The harness reads its first byte as the read size minus one, so each vector is seeded
twice: whole (0xff: reads of 256 bytes) and byte by byte (0x00), the two ends of how a
socket can cut a frame. One more input holds every vector back to back, as a session's
stream would. File names are the vectors' names, so the corpus diffs readably.
tests/protocol/test_fuzz_corpus.py runs the check, so a new vector cannot be forgotten.
"""

from __future__ import annotations

import json
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
VECTORS = ROOT / "tests" / "vectors"
CORPUS = ROOT / "tests" / "fuzz" / "corpus"


def seeds() -> dict[str, bytes]:
    """File name → corpus input, for every golden vector."""
    out: dict[str, bytes] = {}
    stream = b""
    for path in sorted(VECTORS.glob("*.json")):
        frame = bytes.fromhex(json.loads(path.read_text(encoding="utf-8"))["hex"])
        out[f"{path.stem}-whole"] = b"\xff" + frame
        out[f"{path.stem}-bytewise"] = b"\x00" + frame
        stream += frame
    out["all-vectors-stream"] = b"\x3f" + stream  # reads of 64 bytes
    return out


def main(argv: list[str]) -> int:
    wanted = seeds()
    if "--check" in argv:
        present = {p.name: p.read_bytes() for p in CORPUS.glob("*")} if CORPUS.is_dir() else {}
        if present != wanted:
            print("tests/fuzz/corpus is stale: run tests/fuzz/seed_corpus.py", file=sys.stderr)
            return 1
        return 0
    CORPUS.mkdir(exist_ok=True)
    for old in CORPUS.glob("*"):
        old.unlink()
    for name, data in wanted.items():
        (CORPUS / name).write_bytes(data)
    print(f"{len(wanted)} inputs in {CORPUS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
