"""The supervision core is sans-I/O: no event loop, socket, store, logging set-up, randomness or clock.

The one module of the folder that does I/O is the glue, `service.py` (the store, the
schedule); it is named here so that a new module is pure unless it is added to GLUE.
"""

from __future__ import annotations

import ast
import pathlib

CORE = pathlib.Path(__file__).resolve().parents[3] / "server" / "supervision"
FORBIDDEN = {
    "asyncio", "socket", "ssl", "selectors", "select", "uvloop", "threading", "subprocess", "multiprocessing",
    "time", "logging", "sqlite3", "asyncpg", "aiohttp", "http", "urllib", "websockets", "random", "os",
    "lmg.storage", "lmg.simulators", "lmg.bench", "lmg.server.gateway", "lmg.server.cli", "lmg.server.admin",
}
GLUE = {"service.py"}
CLOCK_CALLS = {"now", "today", "utcnow", "time", "time_ns", "monotonic", "perf_counter"}


def imported(path: pathlib.Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def forbidden(name: str) -> bool:
    return any(name == f or name.startswith(f + ".") for f in FORBIDDEN)


def test_the_core_imports_nothing_that_does_io():
    files = sorted(p for p in CORE.glob("*.py") if p.name not in GLUE)
    assert len(files) >= 6
    offenders = {p.name: sorted(n for n in imported(p) if forbidden(n)) for p in files}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_core_reads_no_clock():
    calls = []
    for path in sorted(p for p in CORE.glob("*.py") if p.name not in GLUE):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in CLOCK_CALLS:
                calls.append(f"{path.name}:{node.lineno}: .{node.func.attr}()")
    assert calls == []


def test_the_check_sees_a_forbidden_import():
    assert forbidden("lmg.storage.api") and forbidden("time") and not forbidden("timeit") and not forbidden("datetime")
