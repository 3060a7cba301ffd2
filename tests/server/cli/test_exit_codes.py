"""What every `lmg` command shares: `--version`; the store named the same way everywhere
(flags, LMG_* variables, --config); no store created by a command that needs one to
exist; exit 2 when the command must change, 1 when the work failed."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

from lmg.server.cli import build_parser, main
from lmg.storage import PunchIn, StoreUnavailable, open_store

from tests.server.conftest import LMG, REPO

UNREACHABLE = "postgresql://127.0.0.1:1/test"  # nothing listens on port 1: refused at once

# Every command that needs an existing store, with the arguments it needs besides it.
NEEDS_A_STORE = [
    ["punches", "count"], ["punches", "list"], ["punches", "export"],
    ["device", "list"], ["device", "disable", "GS-X"], ["device", "enable", "GS-X"],
    ["device", "rotate-secret", "GS-X"],
    ["forward", "status"], ["forward", "dead-letters"], ["forward", "retry", "--all"],
    ["token", "list"], ["token", "revoke", "ops"],
]


def run(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_version_prints_the_installed_distribution_and_loads_no_command(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out == f"lmg {version('longminggong-gateway')}\n"
    assert build_parser(["--version"])[1] == []  # no group imported to print a version


@pytest.mark.parametrize("command", NEEDS_A_STORE, ids=" ".join)
def test_a_command_needing_a_store_never_creates_one(capsys, tmp_path, command):
    missing = tmp_path / "typo"
    code, out, err = run(capsys, [*command, "--data-dir", str(missing)])
    assert (code, out) == (2, "")
    assert err.startswith(f"lmg: no database at {missing / 'lmg.db'}") and "--data-dir" in err
    assert not missing.exists()


@pytest.mark.parametrize("command", NEEDS_A_STORE + [["device", "add", "GS-X", "--project", "P"]], ids=" ".join)
def test_an_unreachable_store_is_a_failure(capsys, command):
    code, out, err = run(capsys, [*command, "--store", UNREACHABLE])
    assert (code, out) == (1, "")
    assert err.startswith("lmg: cannot open the store:") and "127.0.0.1:1" in err


@pytest.fixture
async def data_dir(tmp_path: Path) -> Path:
    store = await open_store(None, data_dir=tmp_path)
    await store.add_device("GS-X", project_code="P", region_code="620000")
    await store.store_punches([PunchIn("GS-X", n, "620102199001011234", 1_795_478_400_000 + n, 1, 1, 0, None, 0)
                               for n in range(1, 3001)])
    await store.close()
    return tmp_path


@pytest.mark.parametrize("how", ["flag", "environment", "config file"])
async def test_every_store_command_finds_the_store_the_same_way(capsys, monkeypatch, data_dir, tmp_path, how):
    for name in ("LMG_DATA_DIR", "LMG_STORE", "LMG_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # the default ./lmg-data is not it
    extra: list[str] = []
    if how == "flag":
        extra = ["--data-dir", str(data_dir)]
    elif how == "environment":
        monkeypatch.setenv("LMG_DATA_DIR", str(data_dir))
    else:
        config = tmp_path / "lmg.toml"
        config.write_text(f'store = "sqlite:///{data_dir}/lmg.db"\n')
        extra = ["--config", str(config)]
    for command in NEEDS_A_STORE:
        capsys.readouterr()
        code = await asyncio.to_thread(main, [*command, *extra])
        out, err = capsys.readouterr()
        assert "no database" not in err, (command, err)
        assert code in (0, 2), (command, code, err)  # 2: no token named ops, for `token revoke`
    assert not (tmp_path / "lmg-data").exists()


async def test_a_store_failing_while_a_command_runs_is_a_failure(capsys, monkeypatch, data_dir):
    from lmg.storage.sqlite import SqliteStore

    async def unavailable(self, *args, **kwargs):
        raise StoreUnavailable("database disk image is malformed")

    for name in ("count_punches", "list_devices", "outbox_status"):
        monkeypatch.setattr(SqliteStore, name, unavailable)
    for command in (["punches", "count"], ["device", "list"], ["forward", "status"]):
        code, out, err = await asyncio.to_thread(run, capsys, [*command, "--data-dir", str(data_dir)])
        assert (code, out) == (1, ""), command
        assert err == "lmg: the store failed: database disk image is malformed\n"


def test_serve_on_an_unreachable_store_exits_1_without_a_traceback(tmp_path):
    done = subprocess.run([LMG, "serve", "--store", UNREACHABLE, "--tcp", "127.0.0.1:0", "--ws", "",
                           "--admin", "", "--log-format", "text"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert done.returncode == 1
    assert "lmg: cannot start: cannot open the PostgreSQL store" in done.stderr and "Traceback" not in done.stderr


def test_a_reader_that_goes_away_ends_the_export_quietly(data_dir):
    with subprocess.Popen([sys.executable, "-m", "lmg.server.cli", "punches", "export", "--data-dir", str(data_dir),
                           "--page-size", "100"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        assert proc.stdout.readline().startswith(b"id,device,")
        proc.stdout.close()  # as `| head -1` does
        err = proc.stderr.read()
        assert proc.wait(timeout=60) == 1
    assert err == b""
