"""Numbered schema migrations, one folder per SQL dialect.

Files are named `NNNN_what.sql` (version, then a word or two) in `sqlite/` and `postgres/`;
both folders hold the same versions, so a version means the same schema on either
backend. A store applies, at open, every migration newer than the database's version,
each in its own transaction together with its row in `schema_migrations`, so a crash
mid-upgrade leaves the database at the last whole version. A database whose version is
higher than the newest file here was written by a newer lmg and is refused with
`SchemaTooNew`, never touched. Migrations are append-only: never edit a released file,
add the next number.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

from lmg.storage.errors import SchemaTooNew

_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")

# schema_migrations itself is created outside the numbered set (it records them).
SQLITE_LEDGER = (
    "CREATE TABLE IF NOT EXISTS schema_migrations ("
    " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at_ms INTEGER NOT NULL)"
)
POSTGRES_LEDGER = (
    "CREATE TABLE IF NOT EXISTS schema_migrations ("
    " version integer PRIMARY KEY, name text NOT NULL, applied_at_ms bigint NOT NULL)"
)


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


def load_migrations(dialect: str) -> tuple[Migration, ...]:
    """The migrations of `dialect` ("sqlite" or "postgres"), ordered, numbered 1..N."""
    folder = resources.files(__package__).joinpath(dialect)
    found = []
    for entry in folder.iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), match.group(2), entry.read_text("utf-8")))
    found.sort(key=lambda m: m.version)
    for expected, migration in enumerate(found, start=1):
        if migration.version != expected:
            raise RuntimeError(
                f"storage/migrations/{dialect}: expected version {expected:04d}, found "
                f"{migration.version:04d}_{migration.name}.sql; versions must be 1..N without gaps"
            )
    return tuple(found)


def plan(current: int, migrations: tuple[Migration, ...], where: str) -> list[Migration]:
    """The migrations to apply on a database at `current`; raises SchemaTooNew."""
    known = migrations[-1].version if migrations else 0
    if current > known:
        raise SchemaTooNew(current, known, where)
    return [m for m in migrations if m.version > current]
