"""The tables of docs/conformance.md, generated from the catalogue (one source of truth).

    python -m lmg.server.conformance.doc docs/conformance.md    rewrite the generated blocks

Blocks are delimited as in docs/protocol.md: `<!-- generated:NAME -->` ... `<!-- end
generated:NAME -->`; tests/server/conformance/test_doc.py fails when one is stale.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from lmg.server.conformance.catalogue import CATALOGUE, NOT_TESTED, KitTimings


def items_table() -> str:
    rows = ["| item | section | level | passes when |", "|---|---|---|---|"]
    rows += [f"| `{s.id}` | {s.section} | {s.level.value} | {s.checks} |" for s in CATALOGUE]
    return "\n".join(rows)


def not_tested_list() -> str:
    return "\n".join(f"- **{what}**: {why}." for what, why in NOT_TESTED)


def waits_table() -> str:
    from dataclasses import fields

    defaults = KitTimings()
    rows = ["| `--wait` name | default |", "|---|---:|"]
    rows += [f"| `{f.name}` | {getattr(defaults, f.name):g} |" for f in fields(KitTimings)]
    return "\n".join(rows)


BLOCKS = {"conformance-items": items_table, "conformance-not-tested": not_tested_list,
          "conformance-waits": waits_table}


def update_document(text: str) -> str:
    """`text` with every generated block rendered afresh."""
    def render(match: re.Match[str]) -> str:
        name = match.group(1)
        return f"<!-- generated:{name} -->\n{BLOCKS[name]()}\n<!-- end generated:{name} -->"

    return re.sub(r"<!-- generated:([\w-]+) -->\n.*?<!-- end generated:\1 -->", render, text, flags=re.S)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m lmg.server.conformance.doc docs/conformance.md", file=sys.stderr)
        return 2
    path = Path(argv[0])
    text = path.read_text(encoding="utf-8")
    path.write_text(update_document(text), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
