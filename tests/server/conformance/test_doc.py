"""docs/conformance.md and the README agree with the kit's catalogue."""

from __future__ import annotations

from pathlib import Path

from lmg.server.conformance.catalogue import CATALOGUE, NOT_TESTED
from lmg.server.conformance.doc import BLOCKS, update_document
from lmg.server.conformance.examiner import TEST_WORKERS

REPO = Path(__file__).resolve().parents[3]
DOC = REPO / "docs" / "conformance.md"


def test_the_generated_tables_are_up_to_date():
    text = DOC.read_text(encoding="utf-8")
    assert update_document(text) == text, (
        "docs/conformance.md is stale: run `python -m lmg.server.conformance.doc docs/conformance.md`")
    for name in BLOCKS:
        assert f"<!-- generated:{name} -->" in text


def test_the_doc_lists_every_item_and_what_is_not_tested():
    text = DOC.read_text(encoding="utf-8")
    for spec in CATALOGUE:
        assert f"| `{spec.id}` | {spec.section} | {spec.level.value} |" in text
    for what, _ in NOT_TESTED:
        assert what in text


def test_the_doc_names_the_workers_the_kit_puts_on_a_terminal():
    text = DOC.read_text(encoding="utf-8")
    assert all(f"`{worker}`" in text for worker in TEST_WORKERS)


def test_the_readme_tells_vendors_how_to_run_the_kit():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("## For terminal vendors", 1)[1].split("\n## ", 1)[0]
    assert "lmg conformance serve" in section and "docs/conformance.md" in section
    assert "report.html" in section
