"""The layout holds: one `lmg` namespace, dependencies pointing one way, lean start-up.

- Every folder with an __init__.py under a layer is a package listed in pyproject.toml,
  and a wheel built from the repository holds them (and the SQL migrations, and no
  tests) and imports from where it was unpacked.
- Nothing imports a layer by its bare folder name (`import server`): with the repository
  on sys.path that would load a second copy of a module beside its `lmg.` one.
- protocol/ and storage/ import nothing of the server; the simulators and benchmarks use
  only the server's public entry points (package roots), never its modules.
- `lmg serve` loads neither the simulators nor the benchmarks nor their libraries.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import tomllib
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LAYERS = ("protocol", "storage", "server", "simulators", "bench")
SERVER_ENTRY_POINTS = {"lmg.server.gateway", "lmg.server.forwarding", "lmg.server.supervision"}


def packages_on_disk() -> set[str]:
    found = set()
    for layer in LAYERS:
        for init in (REPO / layer).rglob("__init__.py"):
            parts = init.parent.relative_to(REPO).parts
            found.add(".".join(("lmg", *parts)))
    return found


def imports_of(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module) of every import in `path`, `from x import y` as `x.y` too."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.lineno, node.module))
            out += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
    return out


def python_files(*layers: str) -> list[Path]:
    return [p for layer in layers for p in sorted((REPO / layer).rglob("*.py"))]


def test_every_package_is_listed_in_pyproject():
    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    assert listed == packages_on_disk()


def test_nothing_imports_a_layer_by_its_folder_name():
    offenders = [f"{p.relative_to(REPO)}:{line}: {name}" for p in python_files(*LAYERS, "tests")
                 for line, name in imports_of(p) if name.split(".")[0] in LAYERS]
    assert offenders == []


def test_protocol_and_storage_import_nothing_of_the_layers_above():
    above = ("lmg.server", "lmg.simulators", "lmg.bench")
    offenders = [f"{p.relative_to(REPO)}:{line}: {name}" for p in python_files("protocol", "storage")
                 for line, name in imports_of(p) if name.startswith(above)]
    assert offenders == []


def test_simulators_and_benchmarks_use_only_the_servers_public_entry_points():
    offenders = []
    for path in python_files("simulators", "bench"):
        for line, name in imports_of(path):
            if not name.startswith("lmg.server"):
                continue
            # `from lmg.server.gateway import tune_collector` yields the module and the name
            root = name if name in SERVER_ENTRY_POINTS else name.rpartition(".")[0]
            if root not in SERVER_ENTRY_POINTS:
                offenders.append(f"{path.relative_to(REPO)}:{line}: {name}")
    assert offenders == []


def test_a_built_wheel_holds_the_namespace_and_imports_from_where_it_is_unpacked(tmp_path):
    # built from a copy: setuptools builds in the source tree's build/
    source = tmp_path / "source"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(".git", ".venv", "build", "*.egg-info", "__pycache__",
                                                                 ".mypy_cache", ".pytest_cache", ".hypothesis", "lmg-data"))
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                           "-w", str(tmp_path / "dist"), str(source)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        archive.extractall(tmp_path / "site")
    tops = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert tops == {"lmg"}
    assert any(name.startswith("lmg/storage/migrations/sqlite/") and name.endswith(".sql") for name in names)
    assert {"lmg/protocol/data/gansu-divisions.csv", "lmg/protocol/data/README.md"} <= set(names)  # and its attribution
    assert {name.split("/")[1] for name in names if name.startswith("lmg/")} == set(LAYERS)
    assert not any("/tests/" in name or name.startswith("tests/") for name in names)
    modules = sorted(packages_on_disk())
    check = ("import importlib, json, sys\n"
             f"mods = {modules!r}\n"
             "print(json.dumps({m: importlib.import_module(m).__file__ for m in mods}))")
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site")}
    done = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, cwd=tmp_path, env=env,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    files = json.loads(done.stdout)
    assert all(path.startswith(str(tmp_path / "site")) for path in files.values()), files


MODULES_AT_EXIT = """
import atexit, json, sys
atexit.register(lambda: open(sys.argv[1], "w").write(json.dumps(sorted(sys.modules))))
from lmg.server.cli import main
sys.exit(main(sys.argv[2:]))
"""


def test_lmg_serve_loads_no_simulator_benchmark_or_their_libraries(tmp_path):
    # Run from outside the repository, as an installed gateway is: the SQLite writer process
    # was once started with `from storage.sqlite_writer import main`, which worked only
    # with the repository as the working directory.
    out, ready = tmp_path / "modules.json", tmp_path / "ready.json"
    proc = subprocess.Popen([sys.executable, "-c", MODULES_AT_EXIT, str(out), "serve", "--data-dir",
                             str(tmp_path / "data"), "--tcp", "127.0.0.1:0", "--ws", "127.0.0.1:0", "--admin",
                             "127.0.0.1:0", "--ready-file", str(ready)], cwd=tmp_path)
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert proc.poll() is None, "lmg serve exited before it was ready"
            assert time.monotonic() < deadline, "lmg serve did not become ready in 60 s"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    loaded = json.loads(out.read_text())
    assert "lmg.server.gateway.gateway" in loaded  # it did serve
    forbidden = ("lmg.simulators", "lmg.bench", "rich", "websockets")
    assert [m for m in loaded if m.split(".")[0] in forbidden or m.startswith(forbidden)] == []


@pytest.mark.parametrize("command", [["device", "list"], ["punches", "count"]])
def test_store_commands_load_only_their_group(tmp_path, command):
    out = tmp_path / "modules.json"
    subprocess.run([sys.executable, "-c", MODULES_AT_EXIT, str(out), *command, "--data-dir", str(tmp_path)],
                   capture_output=True, timeout=60, cwd=tmp_path)
    loaded = json.loads(out.read_text())
    assert not [m for m in loaded if m.startswith(("lmg.simulators", "lmg.bench", "lmg.server.gateway.gateway"))]
