"""`lmg token create --department --region` and `lmg token list`: supervisors' tokens."""

from __future__ import annotations

import orjson

from lmg.server.cli import main


def lmg(capsys, data, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main([*argv, "--data-dir", str(data)])
    out, err = capsys.readouterr()
    return code, out, err


def test_a_supervisors_token_has_a_department_and_a_region_and_the_list_shows_them(tmp_path, capsys):
    data = tmp_path / "data"
    code, out, _ = lmg(capsys, data, "token", "create", "--name", "zj-chengguan", "--scope", "read",
                       "--department", "住建", "--region", "620102")
    assert code == 0 and "住建 620102 城关区" in out and "lmg_" in out
    code, out, _ = lmg(capsys, data, "token", "create", "--name", "rs-lanzhou", "--scope", "read",
                       "--department", "labour", "--region", "620100", "--json")
    made = orjson.loads(out)
    assert code == 0 and (made["department"], made["region"]) == ("labour", "620100")
    assert lmg(capsys, data, "token", "create", "--name", "ops", "--scope", "read,write")[0] == 0

    code, out, _ = lmg(capsys, data, "token", "list", "--json")
    assert code == 0 and [(t["name"], t["department"], t["region"]) for t in orjson.loads(out)] == [
        ("ops", None, None), ("rs-lanzhou", "labour", "620100"), ("zj-chengguan", "construction", "620102")]
    code, out, _ = lmg(capsys, data, "token", "list")
    assert "construction  620102" in out
    assert out.splitlines()[0].split()[:4] == ["name", "scopes", "department", "region"]


def test_a_bad_department_or_region_is_a_usage_error_that_says_what_to_use(tmp_path, capsys):
    data = tmp_path / "data"
    code, _, err = lmg(capsys, data, "token", "create", "--name", "x", "--scope", "read", "--region", "610102")
    assert code == 2 and "not a region of Gansu" in err
    code, _, err = lmg(capsys, data, "token", "create", "--name", "x", "--scope", "read", "--department", "公安",
                       "--region", "620100")
    assert code == 2 and "construction (住建), labour (人社)" in err
    code, _, err = lmg(capsys, data, "token", "create", "--name", "x", "--scope", "read", "--department", "住建")
    assert code == 2 and "needs --region" in err
