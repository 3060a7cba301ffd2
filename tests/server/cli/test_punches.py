"""`lmg punches count|list|export`: filters as the API's, streamed pages, masked ID numbers
unless --pii (and then audited), files written whole or not at all, no store created."""

from __future__ import annotations

import asyncio
import csv
import io
import os
import stat
from argparse import Namespace
from pathlib import Path

import orjson
import pytest

from lmg.server.cli import main
from lmg.server.cli import punches as cli_punches
from lmg.storage import PunchIn, PunchListing, open_store

T0 = 1_795_478_400_000  # 2026-11-24T00:00:00Z
WORKERS = ("620102199001011234", "62010219850315002X", "620102197712240013")
PROJECT = "620102-2026-001"


def record(serial: str, n: int, *, worker: str | None = None, photo: bytes | None = None) -> PunchIn:
    return PunchIn(device_serial=serial, record_no=n, worker_id=worker or WORKERS[n % 3],
                   punch_time_ms=T0 + n * 60_000, direction=1 + n % 2, verify_mode=1 + n % 4,
                   temperature_dc=360 + n % 10, photo_sha256=photo, photo_size=len(photo or b"") * 1000)


@pytest.fixture
async def data_dir(tmp_path: Path) -> str:
    """A SQLite store with 50 punches of GS-A (project P) and 10 of GS-B (no device row)."""
    store = await open_store(None, data_dir=tmp_path)
    try:
        await store.add_device("GS-A", project_code=PROJECT, region_code="620000")
        await store.store_punches([record("GS-A", n, photo=b"\xab" * 32 if n == 3 else None) for n in range(1, 51)])
        await store.store_punches([record("GS-B", n) for n in range(1, 11)])
    finally:
        await store.close()
    return str(tmp_path)


async def lmg(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run `lmg ARGV` in a thread (it runs its own event loop); (status, stdout, stderr)."""
    capsys.readouterr()
    code = await asyncio.to_thread(main, list(argv))
    out, err = capsys.readouterr()
    return code, out, err


async def audit_entries(data_dir: str) -> list:
    store = await open_store(None, data_dir=data_dir)
    try:
        return [e for e in await store.list_audit(limit=100) if e.event == "punches_exported"]
    finally:
        await store.close()


async def test_count(data_dir, capsys):
    assert await lmg(capsys, "punches", "count", "--data-dir", data_dir) == (0, "60\n", "")
    code, out, _ = await lmg(capsys, "punches", "count", "--data-dir", data_dir, "--json")
    assert (code, orjson.loads(out)) == (0, {"punches": 60})


@pytest.mark.parametrize("fmt", ["csv", "json", "jsonl"])
async def test_export_streams_every_punch_over_many_pages_masked(data_dir, capsys, fmt):
    code, out, err = await lmg(capsys, "punches", "export", "--data-dir", data_dir, "--format", fmt,
                               "--page-size", "7")
    assert code == 0, err
    rows = parse(fmt, out)
    assert [r["id"] for r in rows] == list(range(1, 61))  # 60 rows in 9 pages, in the order stored
    assert list(rows[0]) == list(cli_punches.FIELDS)
    assert {r["worker_id"] for r in rows} == {"620102********1234", "620102********002X", "620102********0013"}
    assert not any(w in out for w in WORKERS)
    third = rows[2]
    assert (third["device"], third["project"], third["record_no"], third["punch_time_ms"]) == \
        ("GS-A", PROJECT, 3, T0 + 3 * 60_000)
    assert third["photo_sha256"] == "ab" * 32 and rows[0]["photo_sha256"] in (None, "")
    assert rows[-1]["device"] == "GS-B" and rows[-1]["project"] == ""  # no device row: no project
    assert await audit_entries(data_dir) == []  # masked: nothing to audit


def parse(fmt: str, text: str) -> list[dict]:
    """Rows of an export as dicts, numbers as ints."""
    if fmt == "json":
        return orjson.loads(text)
    if fmt == "jsonl":
        return [orjson.loads(line) for line in text.splitlines()]
    return [{k: int(v) if v.isdigit() else v for k, v in row.items()} for row in csv.DictReader(io.StringIO(text))]


async def test_export_of_nothing_is_valid_in_every_format(data_dir, capsys):
    for fmt, expected in (("csv", [cli_punches.FIELDS]), ("json", []), ("jsonl", [])):
        code, out, _ = await lmg(capsys, "punches", "export", "--data-dir", data_dir, "--format", fmt,
                                 "--device", "GS-NOBODY")
        assert code == 0
        assert (list(csv.reader(io.StringIO(out))) if fmt == "csv" else parse(fmt, out)) == \
            ([list(f) for f in expected] if fmt == "csv" else expected)


async def test_rows_are_written_as_pages_arrive_not_after_the_last():
    """Each page is written before the next is read, and no read asks for more than a page."""
    stream = io.StringIO()
    written_at_read: list[int] = []

    class PagedStore:
        async def list_punches(self, *, after_id: int, limit: int, **filters) -> list[PunchListing]:
            assert limit <= 5
            written_at_read.append(stream.getvalue().count("\n"))
            from lmg.storage import Punch

            ids = range(after_id + 1, min(after_id + limit, 23) + 1)
            return [PunchListing(i, Punch("GS-A", i, WORKERS[0], T0, 1, 1, 0, None, 0, T0), PROJECT) for i in ids]

    args = Namespace(format="jsonl", page_size=5, pii=False)
    count = await cli_punches._write(PagedStore(), cli_punches.Filters(), args, stream)  # type: ignore[arg-type]
    assert count == 23
    assert written_at_read == [0, 5, 10, 15, 20]  # page k is read after the k-1 pages before it were written


async def test_filters_are_the_apis(data_dir, capsys):
    base = ("punches", "export", "--data-dir", data_dir, "--format", "jsonl")

    async def ids(*extra: str) -> list[int]:
        code, out, err = await lmg(capsys, *base, *extra)
        assert code == 0, err
        return [r["id"] for r in parse("jsonl", out)]

    assert await ids("--device", "GS-B") == list(range(51, 61))
    assert await ids("--project", PROJECT) == list(range(1, 51))
    assert await ids("--worker", WORKERS[1], "--device", "GS-A") == [n for n in range(1, 51) if n % 3 == 1]
    # since inclusive, until exclusive; Unix ms and ISO 8601 with an offset are the same instant
    assert await ids("--since", str(T0 + 10 * 60_000), "--until", str(T0 + 13 * 60_000), "--device", "GS-A") == \
        [10, 11, 12]
    assert await ids("--since", "2026-11-24T08:10:00+08:00", "--until", "2026-11-24T00:13:00Z",
                     "--device", "GS-A") == [10, 11, 12]


@pytest.mark.parametrize("argv, complaint", [
    (["--worker", "620102********1234"], "full 18-character resident ID number"),
    (["--since", "2026-11-24"], "no UTC offset"),
    (["--since", "yesterday"], "Unix milliseconds"),
    (["--since", str(T0), "--until", str(T0)], "--until must be after --since"),
    (["--page-size", "0"], "--page-size must be 1 to 10000"),
])
async def test_bad_filters_are_usage_errors(data_dir, capsys, argv, complaint):
    code, out, err = await lmg(capsys, "punches", "export", "--data-dir", data_dir, *argv)
    assert code == 2 and out == "" and complaint in err


async def test_an_unknown_format_is_refused_by_the_parser(data_dir, capsys):
    with pytest.raises(SystemExit) as exited:
        await lmg(capsys, "punches", "export", "--data-dir", data_dir, "--format", "xml")
    assert exited.value.code == 2 and "invalid choice: 'xml'" in capsys.readouterr().err


async def test_list_shows_a_limited_table_and_says_how_to_go_on(data_dir, capsys):
    code, out, err = await lmg(capsys, "punches", "list", "--data-dir", data_dir, "--limit", "4")
    assert code == 0
    lines = out.splitlines()
    assert len(lines) == 5 and lines[0].split()[:3] == ["id", "device", "project"]
    assert "620102********1234" in out and WORKERS[0] not in out
    assert "--after 4" in err
    code, out, err = await lmg(capsys, "punches", "list", "--data-dir", data_dir, "--after", "4", "--limit", "0",
                               "--json")
    assert code == 0 and [r["id"] for r in parse("jsonl", out)] == list(range(5, 61)) and err == ""
    code, out, err = await lmg(capsys, "punches", "list", "--data-dir", data_dir, "--after", "56", "--limit", "4")
    assert code == 0 and len(out.splitlines()) == 5 and "--after" not in err  # exactly the last four


async def test_pii_shows_full_numbers_and_is_audited_before_the_rows(data_dir, capsys):
    code, out, err = await lmg(capsys, "punches", "export", "--data-dir", data_dir, "--pii", "--format", "jsonl",
                               "--worker", WORKERS[1], "--device", "GS-A")
    assert code == 0, err
    assert {r["worker_id"] for r in parse("jsonl", out)} == {WORKERS[1]}
    code, out, _ = await lmg(capsys, "punches", "list", "--data-dir", data_dir, "--pii", "--limit", "3")
    assert code == 0 and WORKERS[1] in out
    listed, exported = await audit_entries(data_dir)  # newest first
    assert exported.subject == "stdout"
    assert exported.detail["command"] == "export" and exported.detail["format"] == "jsonl"
    assert exported.detail["filters"] == {"device": "GS-A", "worker": "620102********002X"}  # masked in the log
    assert exported.detail["by"]
    assert listed.detail["command"] == "list" and listed.detail["filters"] == {}


async def test_pii_is_not_shown_when_the_audit_log_cannot_be_written(data_dir, capsys, monkeypatch):
    from lmg.storage import StoreUnavailable
    from lmg.storage.sqlite import SqliteStore

    async def refuse(self, *args, **kwargs):
        raise StoreUnavailable("disk full")

    monkeypatch.setattr(SqliteStore, "audit", refuse)
    code, out, err = await lmg(capsys, "punches", "export", "--data-dir", data_dir, "--pii")
    assert code == 1 and out == "" and "audit log" in err and "disk full" in err


async def test_out_file_is_owner_only_whole_and_never_overwritten(data_dir, capsys, tmp_path):
    target = tmp_path / "export" / "punches.csv"
    target.parent.mkdir()
    code, out, err = await lmg(capsys, "punches", "export", "--data-dir", data_dir, "--out", str(target),
                               "--page-size", "11")
    assert code == 0 and out == "" and f"60 punches written to {target}" in err
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o600
    assert len(parse("csv", target.read_text())) == 60
    assert sorted(os.listdir(target.parent)) == ["punches.csv"]  # no .partial left
    before = target.read_bytes()
    code, _, err = await lmg(capsys, "punches", "export", "--data-dir", data_dir, "--out", str(target))
    assert code == 2 and "exists" in err and target.read_bytes() == before
    code, _, err = await lmg(capsys, "punches", "export", "--data-dir", data_dir, "--out",
                             str(tmp_path / "missing" / "x.csv"))
    assert code == 2 and "does not exist" in err


async def test_an_export_that_fails_midway_leaves_no_file(data_dir, capsys, tmp_path, monkeypatch):
    from lmg.storage import StoreUnavailable
    from lmg.storage.sqlite import SqliteStore

    real = SqliteStore.list_punches
    calls = 0

    async def failing_third_page(self, **kwargs):
        nonlocal calls
        calls += 1
        if calls == 3:
            raise StoreUnavailable("the disk went away")
        return await real(self, **kwargs)

    monkeypatch.setattr(SqliteStore, "list_punches", failing_third_page)
    target = tmp_path / "out.jsonl"
    code, out, err = await lmg(capsys, "punches", "export", "--data-dir", data_dir, "--out", str(target),
                               "--format", "jsonl", "--page-size", "10")
    assert code == 1 and "the disk went away" in err and f"{target} was not written" in err
    assert not target.exists() and not Path(f"{target}.partial").exists()


async def test_without_a_database_nothing_is_created(tmp_path, capsys):
    missing = tmp_path / "typo"
    for command in (["count"], ["list"], ["export"], ["export", "--pii", "--out", str(tmp_path / "x.csv")]):
        code, out, err = await lmg(capsys, "punches", *command, "--data-dir", str(missing))
        assert code == 2 and out == "", command
        assert f"no database at {missing / 'lmg.db'}" in err and "--data-dir" in err
    assert sorted(os.listdir(tmp_path)) == []


def test_the_fields_are_the_apis():
    from lmg.server.admin.punches import PunchOut

    assert cli_punches.FIELDS == tuple(PunchOut.model_fields)


@pytest.mark.postgres
async def test_export_pages_through_a_postgresql_store(capsys):
    import uuid

    import asyncpg

    dsn = os.environ.get("LMG_TEST_PG_DSN", "postgresql://127.0.0.1:5432/test")
    try:
        conn = await asyncpg.connect(dsn, timeout=3)
    except Exception as exc:  # noqa: BLE001 - any reason it cannot be reached
        if os.environ.get("LMG_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"LMG_REQUIRE_POSTGRES=1 and PostgreSQL at {dsn} is unreachable: {exc}")
        pytest.skip(f"PostgreSQL at {dsn} is unreachable ({exc}); set LMG_TEST_PG_DSN or start it")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    url = f"{dsn}?schema={schema}"
    try:
        store = await open_store(url)
        try:
            await store.store_punches([record("GS-PG", n) for n in range(1, 31)])
        finally:
            await store.close()
        code, out, err = await lmg(capsys, "punches", "export", "--store", url, "--format", "json",
                                   "--page-size", "7", "--device", "GS-PG")
        assert code == 0, err
        rows = parse("json", out)
        assert [r["record_no"] for r in rows] == list(range(1, 31))
        assert [r["id"] for r in rows] == sorted(r["id"] for r in rows)
        assert not any(w in out for w in WORKERS)
    finally:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await conn.close()
