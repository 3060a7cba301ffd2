"""`lmg project`, `lmg roster` and `lmg command` against a store: imports, reports, masking, exits."""

from __future__ import annotations

import asyncio
import hashlib
import os

import orjson
import pytest

from lmg.server.cli import main
from lmg.simulators.terminal import worker_id_for
from lmg.storage import open_store

A, B, C = worker_id_for(11), worker_id_for(12), worker_id_for(13)
JPEG = b"\xff\xd8\xff\xe0" + os.urandom(4000)


def lmg(capsys, data, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main([*argv, "--data-dir", str(data)])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def site(tmp_path, capsys):
    """A store with one project and one device."""
    data = tmp_path / "data"

    async def provision() -> None:
        store = await open_store(None, data_dir=data)
        try:
            await store.add_device("GS-ROSTER-01", project_code="620102-2026-001", region_code="620102")
        finally:
            await store.close()

    asyncio.run(provision())
    code, _, err = lmg(capsys, data, "project", "add", "620102-2026-001", "--name", "兰州某住宅楼", "--region", "620102")
    assert code == 0, err
    return data


def test_projects_import_is_idempotent_and_names_bad_rows(tmp_path, capsys):
    data = tmp_path / "data"
    csv = tmp_path / "projects.csv"
    csv.write_text("code,name,region\nP-1,一号楼,620102\nP-2,二号楼,6201\nP-3,三号楼,620103\n", encoding="utf-8")
    code, out, err = lmg(capsys, data, "project", "import", str(csv))
    assert code == 1 and out.startswith("2 added") and "projects.csv:line 3: region" in err
    code, out, _ = lmg(capsys, data, "project", "import", str(csv), "--json")
    body = orjson.loads(out)
    assert (body["added"], body["unchanged"], [r["line"] for r in body["refused"]]) == (0, 2, [3])
    code, out, _ = lmg(capsys, data, "project", "list", "--region", "620103", "--json")
    assert [p["code"] for p in orjson.loads(out)] == ["P-3"]


def test_project_list_by_region_follows_the_tree_not_the_code_prefix(tmp_path, capsys):
    data = tmp_path / "data"
    csv = tmp_path / "projects.csv"
    # 兰州新区 620171 starts with 6201 but is not 兰州市's: a prefix match would list it under 620100
    csv.write_text("code,name,region\nP-CG,城关,620102\nP-XQ,新区,620171\nP-TS,天水,620502\n", encoding="utf-8")
    assert lmg(capsys, data, "project", "import", str(csv))[0] == 0
    listed = {region: [p["code"] for p in orjson.loads(lmg(capsys, data, "project", "list", "--region", region,
                                                           "--json")[1])]
              for region in ("620100", "620171", "620000")}
    assert listed == {"620100": ["P-CG"], "620171": ["P-XQ"], "620000": ["P-CG", "P-TS", "P-XQ"]}
    code, _, err = lmg(capsys, data, "project", "list", "--region", "6201")
    assert code == 2 and "not a region" in err


def test_roster_import_with_photos_then_again_changes_nothing(site, tmp_path, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / f"{A}.jpg").write_bytes(JPEG)
    (photos / f"{B}.png").write_bytes(b"not an image at all, just text, long enough to pass any size floor" * 20)
    csv = tmp_path / "workers.csv"
    csv.write_text("id_number,name,team,post,entry_date\n"
                   f"{A},张三,钢筋班,,2026-01-01\n"
                   f"{B},李四,,,2026-01-01\n"                # bad photo: refused
                   f"{C},王五,,项目经理,2026-01-01\n"
                   f"{C[:-1]}Q,赵六,,,2026-01-01\n", encoding="utf-8")   # bad ID
    code, out, err = lmg(capsys, site, "roster", "import", "620102-2026-001", str(csv), "--photos", str(photos), "--json")
    report = orjson.loads(out)
    assert code == 1 and (report["added"], report["faces"]) == (2, 1)
    refused = [(r["line"], r["reason"]) for r in report["refused"]]
    assert [line for line, _ in refused] == [3, 5]
    assert refused[0][1].startswith(f"photo {B}.png: ") and refused[1][1].startswith("id_number ")
    version = report["roster_version"]
    code, out, _ = lmg(capsys, site, "roster", "import", "620102-2026-001", str(csv), "--photos", str(photos), "--json")
    again = orjson.loads(out)
    assert (again["added"], again["updated"], again["unchanged"], again["roster_version"]) == (0, 0, 2, version)
    code, out, _ = lmg(capsys, site, "roster", "show", "620102-2026-001", "--json")
    shown = orjson.loads(out)
    assert [w["id_number"] for w in shown["workers"]] == sorted([A[:6] + "********" + A[-4:],
                                                                 C[:6] + "********" + C[-4:]])
    by_name = {w["name"]: w for w in shown["workers"]}
    assert by_name["张三"]["face_sha256"] == hashlib.sha256(JPEG).hexdigest()
    assert by_name["王五"]["post"] == "project-manager"
    assert A not in out  # masked without --pii
    code, out, _ = lmg(capsys, site, "roster", "show", "620102-2026-001", "--json", "--pii")
    assert A in out


def test_roster_remove_and_unknown_project(site, tmp_path, capsys):
    csv = tmp_path / "workers.csv"
    csv.write_text(f"id_number,name,entry_date\n{A},张三,2026-01-01\n", encoding="utf-8")
    assert lmg(capsys, site, "roster", "import", "620102-2026-001", str(csv))[0] == 0
    code, out, _ = lmg(capsys, site, "roster", "remove", "620102-2026-001", A)
    assert code == 0 and A not in out
    code, out, _ = lmg(capsys, site, "roster", "show", "620102-2026-001", "--json")
    assert orjson.loads(out)["workers"] == []
    code, out, _ = lmg(capsys, site, "roster", "show", "620102-2026-001", "--json", "--all")
    assert [w["on_roster"] for w in orjson.loads(out)["workers"]] == [False]
    assert lmg(capsys, site, "roster", "remove", "620102-2026-001", A)[0] == 2  # not on it any more
    code, _, err = lmg(capsys, site, "roster", "import", "NO-SUCH", str(csv))
    assert code == 2 and "no project NO-SUCH" in err


def test_commands_are_queued_listed_shown_and_cancelled(site, capsys):
    code, out, err = lmg(capsys, site, "command", "send", "GS-ROSTER-01", "reboot", "delay_s=10", "--json")
    assert code == 0, err
    command_id = orjson.loads(out)["id"]
    code, out, _ = lmg(capsys, site, "command", "show", str(command_id), "--json")
    shown = orjson.loads(out)
    assert (shown["type"], shown["status"], shown["arguments"]) == ("reboot", "queued", {"delay_s": 10})
    assert lmg(capsys, site, "command", "send", "GS-ROSTER-01", "reboot", "delay=10")[0] == 2
    assert lmg(capsys, site, "command", "send", "GS-NOPE", "reboot")[0] == 2
    code, out, _ = lmg(capsys, site, "command", "list", "--device", "GS-ROSTER-01", "--status", "queued", "--json")
    assert [c["id"] for c in orjson.loads(out)] == [command_id]
    assert lmg(capsys, site, "command", "cancel", str(command_id))[0] == 0
    code, _, err = lmg(capsys, site, "command", "cancel", str(command_id))
    assert code == 2 and "cancelled already" in err
