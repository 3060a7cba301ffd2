"""protocol/ is sans-I/O: no sockets, event loops, clocks, logging set-up, storage or HTTP."""

from __future__ import annotations

import ast
import pathlib

PROTOCOL = pathlib.Path(__file__).resolve().parents[2] / "protocol"
FORBIDDEN = {
    "asyncio", "socket", "ssl", "selectors", "select", "uvloop", "threading", "subprocess",
    "time", "logging", "sqlite3", "aiosqlite", "asyncpg", "http", "urllib",
    "websockets", "server", "storage", "simulators", "random",
}


def root(module: str) -> str:
    """The top-level name of `module`; the project's own layers count by their name under
    the `lmg` namespace (`lmg.storage.api` -> `storage`)."""
    parts = module.split(".")
    return parts[1] if parts[0] == "lmg" and len(parts) > 1 else parts[0]


def imported_roots(path: pathlib.Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            roots |= {root(alias.name) for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(root(node.module))
        elif isinstance(node, ast.Call) and getattr(node.func, "id", "") == "__import__":
            if node.args and isinstance(node.args[0], ast.Constant):
                roots.add(root(str(node.args[0].value)))
    return roots


def test_protocol_imports_nothing_that_does_io():
    files = sorted(PROTOCOL.rglob("*.py"))
    assert files
    offenders = {str(p.relative_to(PROTOCOL)): sorted(imported_roots(p) & FORBIDDEN) for p in files}
    assert {k: v for k, v in offenders.items() if v} == {}


# datetime is allowed for its types (dates in roster files are data); reading the clock is not.
CLOCK_READS = {"now", "today", "utcnow", "time", "monotonic", "perf_counter"}


def clock_reads(path: pathlib.Path) -> list[str]:
    return [f"{path.name}:{node.lineno} {node.func.attr}()" for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in CLOCK_READS]


def test_protocol_reads_no_clock():
    assert [hit for p in sorted(PROTOCOL.rglob("*.py")) for hit in clock_reads(p)] == []


def test_a_clock_read_is_found(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("from datetime import date\n\ndef today():\n    return date.today()\n", encoding="utf-8")
    assert clock_reads(sample) == ["sample.py:4 today()"]


def test_project_imports_count_by_their_layer():
    assert root("lmg.storage.api") == "storage"
    assert root("lmg.server") == "server"
    assert root("os.path") == "os"
