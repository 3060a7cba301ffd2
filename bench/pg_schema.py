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
