"""The months of PostgreSQL's punches: partitions created ahead, months past their
retention dropped (storage/migrations/postgres/0009_punch_partitions.sql; docs/storage.md,
"Punches by month").

Rules this module keeps:
- Creating is `lmg_punch_partitions(now_ms, ahead)` in the database: a month that exists
  is left alone, so every node may run it every hour; rows the default partition holds for
  a new month move into it in the same transaction.
- A month is dropped only when it ended more than `punch_retention_days` before `now_ms`
  and no outbox row, pending or dead, names a punch in it: every punch in it was confirmed
  by the province. The check runs after the month is detached, under the lock that keeps
  new punches out of it, so none slips in between.
- Locks on `punches` are short and bounded: the detach waits at most LOCK_TIMEOUT_MS for
  queries on the table (else the month is tried again next hour), and the long part,
  deleting the month's dedup keys, runs after it, on the detached table, in batches that
  never lock `punches`. A detached month is renamed `punches_dropping_*` first, so a crash
  midway leaves a table the next run finishes.
"""

from __future__ import annotations

import re
from datetime import date
from typing import Any

import asyncpg

from lmg.storage.api import PunchMonths

# A detach waits for every query on punches (an attendance aggregate may read for
# seconds) and, waiting, holds up the inserts queued behind it: 1 s of delayed ACKs at
# most, once an hour; the month is tried again next hour if it could not get the lock.
LOCK_TIMEOUT_MS = 1_000
# Keys deleted per statement: bounded work (50,000 index entries of ~100 bytes, 5 MB) far
# under pg_command_timeout_ms (10 s), and a row lock set no other transaction wants
# (these keys are months old). A 60-million-row month takes 1,200 statements.
KEY_BATCH = 50_000
_MONTH = re.compile(r"^punches_y(\d{4})m(\d{2})$")
_DROPPING = re.compile(r"^punches_dropping_y(\d{4})m(\d{2})$")

_PARTITIONS = """
SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
WHERE i.inhparent = 'punches'::regclass ORDER BY c.relname
"""


def month_of(name: str, pattern: re.Pattern[str] = _MONTH) -> date | None:
    """The first day of the month a partition named `name` holds, None for another name."""
    match = pattern.match(name)
    return date(int(match.group(1)), int(match.group(2)), 1) if match else None


async def maintain(conn: Any, now_ms: int, *, ahead: int, retention_days: int) -> PunchMonths:
    """Create the months ahead, finish drops a crash interrupted, drop the months past
    retention whose punches were all forwarded. `conn` is a pooled asyncpg connection
    with the store's search_path."""
    try:  # creating a month locks punches (and punches_default when rows move) briefly
        async with conn.transaction():
            await conn.execute(f"SET LOCAL lock_timeout = {LOCK_TIMEOUT_MS}")
            created = int(await conn.fetchval("SELECT lmg_punch_partitions($1, $2)", now_ms, ahead))
    except asyncpg.LockNotAvailableError:
        created = 0  # queries held the table for over a second: next hour (months are made 3 ahead)
    for name in await _detached(conn):
        await _drop_detached(conn, name)
    dropped: list[date] = []
    held: list[date] = []
    if retention_days:
        cutoff_ms = now_ms - retention_days * 86_400_000
        for name in [row[0] for row in await conn.fetch(_PARTITIONS)]:
            first = month_of(name)
            if first is None:
                continue
            low, high = await conn.fetchrow("SELECT lmg_month_start_ms($1), "
                                            "lmg_month_start_ms(($1 + interval '1 month')::date)", first)
            if high > cutoff_ms:
                continue
            outcome = await _detach_if_forwarded(conn, name, low, high)
            if outcome == "detached":
                await _drop_detached(conn, f"punches_dropping_{name[len('punches_'):]}")
                dropped.append(first)
            elif outcome == "held":
                held.append(first)  # "busy": queries held the table past the lock timeout; next hour
    return PunchMonths(created, tuple(dropped), tuple(held))


async def _detached(conn: Any) -> list[str]:
    rows = await conn.fetch("SELECT c.relname FROM pg_class c WHERE c.relkind = 'r' "
                            "AND c.relnamespace = (SELECT relnamespace FROM pg_class WHERE oid = 'punches'::regclass) "
                            "AND c.relname LIKE 'punches\\_dropping\\_%' ORDER BY c.relname")
    return [row[0] for row in rows if month_of(row[0], _DROPPING) is not None]


async def _detach_if_forwarded(conn: Any, name: str, low: int, high: int) -> str:
    """Detach the month `name` and rename it punches_dropping_* if no outbox row names a
    punch in [low, high): "detached"; else nothing changes: "held" (an outbox row names
    one) or "busy" (the lock was not had within LOCK_TIMEOUT_MS)."""
    if await conn.fetchval("SELECT EXISTS (SELECT 1 FROM outbox WHERE punch_time_ms >= $1 AND punch_time_ms < $2)",
                           low, high):
        return "held"  # checked again below, under the lock; this spares taking it
    try:
        async with conn.transaction():
            await conn.execute(f"SET LOCAL lock_timeout = {LOCK_TIMEOUT_MS}")
            await conn.execute(f'ALTER TABLE punches DETACH PARTITION "{name}"')
            if await conn.fetchval("SELECT EXISTS (SELECT 1 FROM outbox WHERE punch_time_ms >= $1 "
                                   "AND punch_time_ms < $2)", low, high):
                raise _Held()
            await conn.execute(f'ALTER TABLE "{name}" RENAME TO "punches_dropping_{name[len("punches_"):]}"')
    except _Held:
        return "held"
    except asyncpg.LockNotAvailableError:
        return "busy"
    return "detached"


class _Held(Exception):
    """A punch of the month is still in the outbox: roll the detach back."""


async def _drop_detached(conn: Any, name: str) -> None:
    """Delete the dedup keys of the detached month `name` batch by batch, then the table."""
    while True:
        status = await conn.execute(
            f'WITH gone AS (DELETE FROM "{name}" WHERE ctid = ANY(ARRAY(SELECT ctid FROM "{name}" LIMIT {KEY_BATCH})) '
            f"RETURNING device_serial, record_no) "
            f"DELETE FROM punch_keys k USING gone WHERE k.device_serial = gone.device_serial "
            f"AND k.record_no = gone.record_no")
        if int(status.rsplit(" ", 1)[-1]) == 0 and not await conn.fetchval(f'SELECT EXISTS (SELECT 1 FROM "{name}")'):
            break
    await conn.execute(f'DROP TABLE "{name}"')
