"""Store URLs and the `lmg punches count` command."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from lmg.storage import StoreUrlError, open_store, parse_store_url
from test_store_contract import punch

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("url, path", [
    ("sqlite:///var/lib/lmg/lmg.db", "/var/lib/lmg/lmg.db"),
    ("sqlite:////var/lib/lmg/lmg.db", "/var/lib/lmg/lmg.db"),
    ("sqlite:data/lmg.db", "data/lmg.db"),
    ("sqlite://data/lmg.db", "data/lmg.db"),
])
def test_sqlite_urls(url, path):
    location = parse_store_url(url)
    assert (location.dialect, location.sqlite_path) == ("sqlite", Path(path))


def test_default_is_sqlite_in_the_data_dir():
    assert parse_store_url(None).sqlite_path == Path("lmg-data/lmg.db")
    assert parse_store_url(None, "/srv/x").sqlite_path == Path("/srv/x/lmg.db")


def test_postgres_url_schema_is_taken_out_of_the_dsn_and_password_masked():
    location = parse_store_url("postgresql://gw:s3cret@db:5432/lmg?schema=site_7&sslmode=require")
    assert location.pg_schema == "site_7"
    assert location.pg_dsn == "postgresql://gw:s3cret@db:5432/lmg?sslmode=require"
    assert "s3cret" not in location.display and "site_7" in location.display


@pytest.mark.parametrize("url, complaint", [
    ("mysql://x/y", "expected sqlite:///"),
    ("sqlite:///", "names no database file"),
    ("postgresql://h/db?schema=Robert');DROP", "schema"),
])
def test_bad_urls_say_what_a_good_one_looks_like(url, complaint):
    with pytest.raises(StoreUrlError, match=complaint):
        parse_store_url(url)


def _lmg(*args: str) -> subprocess.CompletedProcess:
    code = "import sys; from server.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          cwd=REPO, timeout=60)


async def test_lmg_punches_count(tmp_path):
    store = await open_store(None, data_dir=tmp_path)
    await store.store_punches([punch(record_no=n) for n in range(7)])
    await store.close()
    done = _lmg("punches", "count", "--data-dir", str(tmp_path))
    assert (done.returncode, done.stdout.strip()) == (0, "7"), done.stderr
    done = _lmg("punches", "count", "--store", f"sqlite:///{tmp_path}/lmg.db")
    assert done.stdout.strip() == "7", done.stderr


def test_lmg_punches_count_without_a_database_says_where_it_looked(tmp_path):
    done = _lmg("punches", "count", "--data-dir", str(tmp_path / "empty"))
    assert done.returncode == 2
    assert "no database at" in done.stderr and not (tmp_path / "empty").exists()
