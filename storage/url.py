"""Choosing and opening a store from a URL.

    sqlite:///var/lib/lmg/lmg.db     absolute: the third slash starts the path (as file:///)
    sqlite:data/lmg.db               relative to the working directory (sqlite://data/lmg.db too)
    postgresql://user@host:5432/db?schema=name   (postgres:// is accepted too)

No URL means SQLite at `<data dir>/lmg.db`; the data directory (default `./lmg-data`)
also holds photos. The `schema` parameter of a PostgreSQL URL puts every table in that
schema (created if missing) and is removed before the DSN reaches asyncpg.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from lmg.storage.api import Store, wall_clock_ms
from lmg.storage.blobs import BlobStore
from lmg.storage.config import StoreConfig
from lmg.storage.errors import StoreUrlError

DEFAULT_DATA_DIR = "lmg-data"
DEFAULT_SQLITE_NAME = "lmg.db"
_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


@dataclass(frozen=True, slots=True)
class StoreLocation:
    """A parsed store URL: which backend, and where."""

    dialect: str  # "sqlite" or "postgres"
    sqlite_path: Path | None = None
    pg_dsn: str | None = None  # without the schema parameter
    pg_schema: str | None = None

    @property
    def display(self) -> str:
        """For logs: the path, or the DSN with any password masked."""
        if self.dialect == "sqlite":
            return f"sqlite:///{self.sqlite_path}"
        parts = urlsplit(self.pg_dsn or "")
        netloc = parts.netloc
        if "@" in netloc:
            user, host = netloc.rsplit("@", 1)
            netloc = f"{user.split(':', 1)[0]}:***@{host}" if ":" in user else netloc
        shown = urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))
        return shown + (f" (schema {self.pg_schema})" if self.pg_schema else "")


def parse_store_url(url: str | None, data_dir: str | os.PathLike[str] | None = None) -> StoreLocation:
    """Parse a `--store` URL; raises StoreUrlError saying what a valid one looks like."""
    data_dir = Path(data_dir if data_dir is not None else DEFAULT_DATA_DIR)
    if not url:
        return StoreLocation("sqlite", sqlite_path=data_dir / DEFAULT_SQLITE_NAME)
    scheme = url.split(":", 1)[0].lower()
    if scheme == "sqlite":
        rest = url[len("sqlite:"):]
        if rest.startswith("///"):  # the third slash starts an absolute path, as in file:///
            path = "/" + rest.lstrip("/")  # sqlite:////abs (SQLAlchemy's habit) means the same
        elif rest.startswith("//"):
            path = rest[2:]  # sqlite://relative/lmg.db
        else:
            path = rest  # sqlite:relative/lmg.db
        path = path.split("?", 1)[0]
        if not path or path.endswith("/"):
            raise StoreUrlError(
                f"store URL {url!r} names no database file: use sqlite:///absolute/path/lmg.db "
                f"or sqlite:relative/path/lmg.db"
            )
        return StoreLocation("sqlite", sqlite_path=Path(path))
    if scheme in ("postgresql", "postgres"):
        parts = urlsplit(url)
        query = parse_qsl(parts.query, keep_blank_values=True)
        schema = None
        kept = []
        for key, value in query:
            if key == "schema":
                schema = value
            else:
                kept.append((key, value))
        if schema is not None and not _SCHEMA_NAME.match(schema):
            raise StoreUrlError(
                f"schema {schema!r} in the store URL: use lowercase letters, digits and _, "
                f"starting with a letter or _, at most 63 characters"
            )
        dsn = urlunsplit(("postgresql", parts.netloc, parts.path, urlencode(kept), parts.fragment))
        return StoreLocation("postgres", pg_dsn=dsn, pg_schema=schema)
    raise StoreUrlError(
        f"store URL {url!r}: expected sqlite:///path/to/lmg.db or "
        f"postgresql://user@host:5432/database[?schema=name]"
    )


async def open_store(
    url: str | None = None, *, data_dir: str | os.PathLike[str] | None = None,
    config: StoreConfig | None = None, clock_ms: Callable[[], int] = wall_clock_ms,
    blobs: BlobStore | None = None, create: bool = True,
) -> Store:
    """Open the store named by `url` (default: SQLite in the data directory), migrated.

    `create=False` is for commands that work on an existing store (the operator's CLI):
    a SQLite file that does not exist raises StoreNotFound, and nothing (no directory,
    no file) is created. PostgreSQL ignores it (the database exists or cannot be reached;
    its tables are created as ever).

    Raises StoreUrlError, StoreNotFound, SchemaTooNew, StoreUnavailable (cannot reach or
    create it).
    """
    location = parse_store_url(url, data_dir)
    data_dir = Path(data_dir if data_dir is not None else DEFAULT_DATA_DIR)
    if location.dialect == "sqlite":
        from lmg.storage.sqlite import SqliteStore

        assert location.sqlite_path is not None  # parse_store_url sets it for every sqlite URL
        return await SqliteStore.open(location.sqlite_path, data_dir=data_dir, config=config,
                                      clock_ms=clock_ms, blobs=blobs, create=create)
    from lmg.storage.postgres import PostgresStore  # asyncpg is imported only when used

    return await PostgresStore.open(location, data_dir=data_dir, config=config,
                                    clock_ms=clock_ms, blobs=blobs)
