"""protocol/ is sans-I/O: no sockets, event loops, clocks, logging set-up, storage or HTTP."""

from __future__ import annotations

import ast
import pathlib

PROTOCOL = pathlib.Path(__file__).resolve().parents[2] / "protocol"
FORBIDDEN = {
    "asyncio", "socket", "ssl", "selectors", "select", "uvloop", "threading", "subprocess",
    "time", "datetime", "logging", "sqlite3", "aiosqlite", "asyncpg", "http", "urllib",
    "websockets", "server", "storage", "simulators", "random",
}


def imported_roots(path: pathlib.Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
        elif isinstance(node, ast.Call) and getattr(node.func, "id", "") == "__import__":
            if node.args and isinstance(node.args[0], ast.Constant):
                roots.add(str(node.args[0].value).split(".")[0])
    return roots


def test_protocol_imports_nothing_that_does_io():
    files = sorted(PROTOCOL.rglob("*.py"))
    assert files
    offenders = {str(p.relative_to(PROTOCOL)): sorted(imported_roots(p) & FORBIDDEN) for p in files}
    assert {k: v for k, v in offenders.items() if v} == {}
