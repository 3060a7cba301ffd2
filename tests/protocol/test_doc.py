"""docs/protocol.md, the vectors and the code agree."""

from __future__ import annotations

import pathlib
import re

from lmg.protocol.codes import MessageType
from lmg.protocol.spec_tables import generated_block_names, update_document
from tests.protocol.test_vectors import VECTORS

DOC = pathlib.Path(__file__).resolve().parents[2] / "docs" / "protocol.md"


def doc_text() -> str:
    return DOC.read_text(encoding="utf-8")


def test_generated_tables_are_up_to_date():
    text = doc_text()
    assert update_document(text, VECTORS) == text, (
        "docs/protocol.md is stale: run `python -m lmg.protocol.spec_tables docs/protocol.md` and review the diff"
    )


def test_every_message_type_in_the_code_has_a_section_in_the_doc():
    names = set(generated_block_names(doc_text()))
    for msg_type in MessageType:
        assert f"message:{msg_type.name}" in names
        assert f"`0x{msg_type:04X}` {msg_type.name}" in doc_text()


def test_every_hex_example_in_the_doc_is_a_vector():
    vector_frames = {bytes.fromhex(v["hex"]) for v in VECTORS.values()}
    examples = re.findall(r"Example `(\w+)`.*?```hex\n(.*?)```", doc_text(), re.S)
    assert len(examples) >= len(MessageType)
    for name, hex_text in examples:
        frame = bytes.fromhex(hex_text.replace(" ", "").replace("\n", ""))
        assert frame in vector_frames, f"hex example {name} in the doc is not a golden vector"
        assert bytes.fromhex(VECTORS[name]["hex"]) == frame


def test_every_vector_is_shown_in_the_doc():
    for name in VECTORS:
        assert f"Example `{name}`" in doc_text()
