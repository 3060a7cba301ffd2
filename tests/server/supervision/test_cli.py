"""`lmg supervision evaluate|report|leave|stop-work|pause-day` on both backends: exit codes,
the CSV (BOM, masking, figures, warnings by rule) and the audit of `--pii`."""

from __future__ import annotations

import asyncio
import csv
import io
import uuid

import orjson
import pytest

from lmg.protocol.identity import mask_id_number
from lmg.server.cli import main
from lmg.storage import open_store
from tests.server.supervision.conftest import Clock
from tests.server.supervision.test_service import PM, SAFETY, site
from tests.storage.conftest import BACKENDS, PG_DSN, drop_schema, require_postgres


@pytest.fixture(params=BACKENDS)
def url(request, tmp_path):
    """A store holding test_service's site (P1 in 城关区, March 2026), by URL."""
    if request.param == "sqlite":
        made = f"sqlite:///{tmp_path / 'lmg.db'}"
    else:
        require_postgres()
        made = f"{PG_DSN}?schema=t_{uuid.uuid4().hex[:12]}"

    async def setup() -> None:
        store = await open_store(made, data_dir=tmp_path, clock_ms=Clock(0))
        try:
            await site(store, store.clock_ms)
        finally:
            await store.close()

    asyncio.run(setup())
    yield made
    if request.param == "postgres":
        asyncio.run(drop_schema(made.rsplit("schema=", 1)[1]))


def lmg(capsys, url: str, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(["supervision", *argv, "--store", url])
    out, err = capsys.readouterr()
    return code, out, err


def test_evaluate_a_month_then_report_it(url, capsys, tmp_path):
    code, out, _ = lmg(capsys, url, "evaluate", "--month", "2026-03", "--json")
    assert code == 0
    (run,) = orjson.loads(out)
    assert (run["month"], run["as_of"], run["by_rule"]) == ("2026-03", None,
                                                            {"consecutive-absence": 1, "low-presence": 1})
    assert run["applied"]["opened"] == 2
    code, out, _ = lmg(capsys, url, "evaluate", "--month", "2026-03")
    assert code == 0 and "unchanged 2" in out

    report = tmp_path / "report.csv"
    code, out, _ = lmg(capsys, url, "report", "--month", "2026-03", "--region", "620100", "--out", str(report))
    assert code == 0 and "2 rows" in out
    raw = report.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")  # the BOM Excel needs
    rows = list(csv.DictReader(io.StringIO(raw.decode("utf-8-sig"))))
    by_post = {r["post"]: r for r in rows}
    assert set(by_post) == {"project-manager", "safety-officer"}
    safety = by_post["safety-officer"]
    assert (safety["post_name"], safety["name"], safety["id_number"]) == ("安全员", "李安全", mask_id_number(SAFETY))
    assert (safety["valid_days"], safety["construction_days"], safety["rate"], safety["required_share"]) == (
        "20", "31", "0.6452", "0.8")
    assert (safety["low-presence"], safety["consecutive-absence"], safety["committed-absent"]) == ("1", "1", "0")
    manager = by_post["project-manager"]
    assert (manager["valid_days"], manager["rate"], manager["low-presence"]) == ("31", "1.0", "0")
    assert PM not in raw.decode("utf-8-sig") and SAFETY not in raw.decode("utf-8-sig")


def test_the_report_with_pii_is_audited(url, capsys):
    code, out, _ = lmg(capsys, url, "report", "--month", "2026-03", "--region", "620102", "--pii")
    assert code == 0 and out.startswith("\ufeff") and SAFETY in out

    async def audited() -> list:
        store = await open_store(url, create=False)
        try:
            return await store.list_audit(event="supervision_report_pii")
        finally:
            await store.close()

    (entry,) = asyncio.run(audited())
    assert entry.subject == "620102" and entry.detail["rows"] == 2


def test_another_countys_report_is_empty(url, capsys):
    code, out, _ = lmg(capsys, url, "report", "--month", "2026-03", "--region", "620103", "--json")
    assert code == 0 and orjson.loads(out) == []


@pytest.mark.parametrize(("argv", "says"), [
    (("report", "--month", "2026-3", "--region", "620102"), "YYYY-MM"),
    (("report", "--month", "2026-03", "--region", "990000"), "--region 990000"),
    (("evaluate", "--month", "2099-01"), "nothing of it is over yet"),
    (("evaluate", "--date", "2026-03-32"), "YYYY-MM-DD"),
    (("leave", "add", "NOPE", PM, "2026-03-01", "2026-03-02", "--reference", "x"), "NOPE"),
    (("leave", "remove", "999"), "no leave 999"),
])
def test_mistakes_exit_2_and_say_what_to_do(url, capsys, argv, says):
    if argv[0] == "report" and argv[2] == "2026-3" or argv[1] == "--date":
        with pytest.raises(SystemExit) as exited:  # argparse's own usage error
            lmg(capsys, url, *argv)
        assert exited.value.code == 2 and says in capsys.readouterr().err
        return
    code, _, err = lmg(capsys, url, *argv)
    assert code == 2 and says in err


def test_leave_stop_work_and_pause_days_change_the_evaluation(url, capsys):
    # the safety officer's 10-20 March: leave for 10-15 (6 days, the monthly cap), a stop-work 16-18, a pause day 19
    code, out, _ = lmg(capsys, url, "leave", "add", "P1", SAFETY, "2026-03-10", "2026-03-15", "--reference", "请假-1",
                       "--json")
    assert code == 0
    leave_id = orjson.loads(out)["id"]
    assert lmg(capsys, url, "stop-work", "add", "P1", "2026-03-16", "2026-03-18", "--reference", "停工-1")[0] == 0
    assert lmg(capsys, url, "pause-day", "add", "2026-03-19", "--reason", "沙尘")[0] == 0
    code, out, _ = lmg(capsys, url, "leave", "list", "--from", "2026-03-01", "--to", "2026-03-31", "--json")
    assert code == 0 and [(r["id"], r["id_number"]) for r in orjson.loads(out)] == [(leave_id, mask_id_number(SAFETY))]
    code, out, _ = lmg(capsys, url, "pause-day", "list", "--from", "2026-03-01", "--to", "2026-03-31", "--json")
    assert orjson.loads(out) == [{"day": "2026-03-19", "reason": "沙尘"}]
    code, out, _ = lmg(capsys, url, "evaluate", "--month", "2026-03", "--json")
    # 20 March alone is left: 20 valid days of 21 construction days, no run of 5
    assert code == 0 and orjson.loads(out)[0]["by_rule"] == {}
    assert lmg(capsys, url, "leave", "remove", str(leave_id))[0] == 0
    code, out, _ = lmg(capsys, url, "stop-work", "list", "--project", "P1", "--from", "2026-03-01", "--json")
    stop_id = orjson.loads(out)[0]["id"]
    assert lmg(capsys, url, "stop-work", "remove", str(stop_id))[0] == 0
    assert lmg(capsys, url, "pause-day", "remove", "2026-03-19")[0] == 0
    code, out, _ = lmg(capsys, url, "evaluate", "--month", "2026-03", "--json")
    assert orjson.loads(out)[0]["by_rule"] == {"consecutive-absence": 1, "low-presence": 1}


def test_evaluate_by_day_decides_only_the_daily_rules(url, capsys):
    code, out, _ = lmg(capsys, url, "evaluate", "--date", "2026-03-16", "--json")
    assert code == 0 and orjson.loads(out)[0]["by_rule"] == {"consecutive-absence": 1}
