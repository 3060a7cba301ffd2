"""The benchmarks' scratch schemas on PostgreSQL: each run stores in a fresh schema of the
database it is given (`?schema=` on the store URL) and drops it at the end, whatever
happened, so a bench never leaves tables in a shared database."""

from __future__ import annotations


async def drop_schemas(dsn: str, *schemas: str) -> None:
    """DROP SCHEMA ... CASCADE for each of `schemas` on the database at `dsn` (a
    postgresql:// URL without `?schema=`); a schema already gone is no error."""
    import asyncpg

    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        for schema in schemas:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


def scratch_store(url: str | None, temp: str, prefix: str) -> tuple[str, str, str | None]:
    """(backend, store URL, schema) for a bench run: `url` None or sqlite: a file in `temp`
    (or the one named); a postgresql:// URL: a fresh schema `prefix`_xxxxxxxx of its
    database, for `drop_schemas` afterwards. UsageError (exit 2) for any other URL."""
    import uuid

    if url is None or url.startswith("sqlite"):
        return "sqlite", url or f"sqlite:///{temp}/lmg.db", None
    if url.startswith("postgres"):
        schema = f"{prefix}_{uuid.uuid4().hex[:8]}"
        return "postgres", f"{url.split('?', 1)[0]}?schema={schema}", schema
    from lmg.bench.cli import UsageError

    raise UsageError(f"--store {url}: use a sqlite:/// or postgresql:// URL")
