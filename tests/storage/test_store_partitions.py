"""PostgreSQL's punches by month (migration 9, storage/postgres_partitions.py): months
created ahead, rows of the default partition moved into a month made for them, dedup of
(device, record_no) exact across months, a version-8 table converted with its data, and
retention dropping only months whose every punch the province confirmed."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import asyncpg
import pytest

from lmg.storage import Outcome, StoreConfig
from lmg.storage.migrations import load_migrations
from lmg.storage.postgres import PostgresStore
from lmg.storage.url import parse_store_url
from test_store_contract import punch
from test_store_migrations import PG_DSN, store_punches_as_before_9

pytestmark = pytest.mark.postgres

CHINA = timezone(timedelta(hours=8))
DAY_MS = 86_400_000
NOW_MS = int(datetime(2026, 11, 15, 12, tzinfo=CHINA).timestamp() * 1000)


def at(year: int, month: int, day: int = 10) -> int:
    """Noon China time of that day, in ms."""
    return int(datetime(year, month, day, 12, tzinfo=CHINA).timestamp() * 1000)


class Clock:
    def __init__(self, now_ms: int) -> None:
        self.now_ms = now_ms

    def __call__(self) -> int:
        return self.now_ms


async def months(url: str) -> dict[str, int]:
    """Partition name -> rows, read beside the store."""
    conn = await asyncpg.connect(PG_DSN)
    try:
        await conn.execute(f'SET search_path TO "{url.rsplit("schema=", 1)[1]}"')
        names = [r[0] for r in await conn.fetch(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = 'punches'::regclass")]
        return {name: await conn.fetchval(f'SELECT count(*) FROM "{name}"') for name in names}
    finally:
        await conn.close()


async def open_at(pg_urls_url: str, tmp_path, clock: Clock, **config) -> PostgresStore:
    store = await PostgresStore.open(parse_store_url(pg_urls_url), data_dir=tmp_path, clock_ms=clock,
                                     config=StoreConfig(**config))
    return store


async def test_months_are_created_ahead_and_rows_of_the_default_partition_move_into_theirs(pg_urls, tmp_path):
    url = pg_urls()
    clock = Clock(NOW_MS)
    store = await open_at(url, tmp_path, clock)
    try:
        await store.add_device("LMG0001", project_code="P", region_code="620102")
        await store.maintain_punch_months(NOW_MS)
        have = await months(url)
        assert {"punches_y2026m11", "punches_y2026m12", "punches_y2027m01", "punches_y2027m02"} <= set(have)
        assert "punches_y2027m04" not in have
        # A clock a few months ahead, and one reset to 2000: the default partition takes them.
        assert [o.status for o in await store.store_punches(
            [punch(record_no=1, punch_time_ms=at(2027, 4)), punch(record_no=2, punch_time_ms=at(2000, 1, 1)),
             punch(record_no=3, punch_time_ms=at(2026, 11, 30))])] == [Outcome.STORED] * 3
        assert (await months(url))["punches_default"] == 2
        # Months later the month of record 1 is created; its row moves in, still found by key.
        done = await store.maintain_punch_months(at(2027, 2))
        assert done.created == 3 and done.dropped == () and done.held == ()  # March to May 2027
        have = await months(url)
        assert have["punches_y2027m04"] == 1 and have["punches_default"] == 1
        assert (await store.get_punch("LMG0001", 1)).punch_time_ms == at(2027, 4)
        assert (await store.maintain_punch_months(at(2027, 2))).created == 0  # every node may run it
        # 2026-11-30 20:00 China time is still November there (12:00 UTC); month edges are China's.
        assert have["punches_y2026m11"] == 1
        assert (await store.get_punch("LMG0001", 3)).record_no == 3
    finally:
        await store.close()


async def test_dedup_is_exact_across_months(pg_urls, tmp_path):
    url = pg_urls()
    store = await open_at(url, tmp_path, Clock(NOW_MS))
    try:
        await store.add_device("LMG0001", project_code="P", region_code="620102")
        first = await store.store_punches([punch(record_no=7, punch_time_ms=at(2026, 11))])
        # The same record resent with a time in another month (a clock corrected between
        # the two): the unique key of a partitioned table would not see it, punch_keys does.
        again = await store.store_punches([punch(record_no=7, punch_time_ms=at(2026, 12)),
                                           punch(record_no=7, punch_time_ms=at(2000, 1))])
        assert [o.status for o in first + again] == [Outcome.STORED, Outcome.DUPLICATE, Outcome.DUPLICATE]
        assert await store.count_punches("LMG0001") == 1
        assert (await store.outbox_status(2**62)).pending == 1
        assert [i.punch.punch_time_ms for i in await store.claim_outbox(10, 2**62, 1000)] == [at(2026, 11)]
    finally:
        await store.close()


async def test_a_version_8_table_is_converted_with_its_data_ids_and_outbox(pg_urls, tmp_path):
    url = pg_urls()

    class AsBackend:  # what store_punches_as_before_9 needs of a backend
        name, data_dir = "postgres", tmp_path

    AsBackend.url = url
    old = await PostgresStore.open(parse_store_url(url), data_dir=tmp_path, migrations=load_migrations("postgres")[:8])
    await old.add_device("LMG0001", project_code="P", region_code="620102")
    times = [at(2026, 9), at(2026, 10), at(2026, 11), at(2000, 1, 1)]
    await store_punches_as_before_9(AsBackend, old, [punch(record_no=n, punch_time_ms=t) for n, t in enumerate(times)])
    await old.close()

    store = await open_at(url, tmp_path, Clock(NOW_MS))
    try:
        assert await store.schema_version() >= 9
        assert [p.punch_time_ms async for p in store.iter_punches("LMG0001")] == times
        have = await months(url)
        assert have["punches_default"] == 1  # 2000-01-01: a reset clock, outside every month made
        assert sum(have.values()) == 4
        items = await store.claim_outbox(10, 2**62, 1000)
        assert [(i.punch.record_no, i.punch.punch_time_ms) for i in items] == list(enumerate(times))
        assert (await store.store_punches([punch(record_no=2, punch_time_ms=at(2026, 11))]))[0].status \
            is Outcome.DUPLICATE
        added = await store.store_punches([punch(record_no=9, punch_time_ms=at(2026, 11))])
        assert added[0].status is Outcome.STORED
        listed = await store.list_punches(device_serial="LMG0001")
        assert listed[-1].punch.record_no == 9 and listed[-1].id > max(p.id for p in listed[:-1])  # ids go on
    finally:
        await store.close()


async def test_retention_drops_only_months_whose_punches_the_province_confirmed(pg_urls, tmp_path):
    url = pg_urls()
    clock = Clock(at(2025, 12))
    store = await open_at(url, tmp_path, clock, punch_retention_days=90)
    try:
        await store.maintain_punch_months(at(2025, 12))  # months Dec 2025 .. Mar 2026
        await store.add_device("LMG0001", project_code="P", region_code="620102")
        await store.store_punches([punch(record_no=1, punch_time_ms=at(2025, 12)),
                                   punch(record_no=2, punch_time_ms=at(2026, 1)),
                                   punch(record_no=3, punch_time_ms=at(2026, 11))])
        items = await store.claim_outbox(10, 2**62, 1000)
        await store.ack_outbox([i.id for i in items if i.punch.record_no != 2])  # January still unconfirmed
        [january] = [i.id for i in items if i.punch.record_no == 2]

        # 2026-04-15: December ended 105 days ago, January 74: only December is old enough.
        done = await store.maintain_punch_months(at(2026, 4, 15))
        assert done.dropped == (date(2025, 12, 1),) and done.held == ()
        assert await store.get_punch("LMG0001", 1) is None and "punches_y2025m12" not in await months(url)
        # Its key went with it: a resend of a record that old is stored again (hence >= 90 days).
        assert (await store.store_punches([punch(record_no=1, punch_time_ms=at(2025, 12))]))[0].status \
            is Outcome.STORED
        await store.ack_outbox([i.id for i in await store.claim_outbox(10, 2**63 - 2000, 1000)
                                if i.punch.record_no == 1])

        # 2026-06-01: January is past retention but its punch is in the outbox: held.
        done = await store.maintain_punch_months(at(2026, 6, 1))
        assert date(2026, 1, 1) in done.held and date(2026, 1, 1) not in done.dropped
        assert (await store.get_punch("LMG0001", 2)).record_no == 2
        assert await store.dead_letter([january], "refused") == 1
        assert date(2026, 1, 1) in (await store.maintain_punch_months(at(2026, 6, 1))).held  # dead is not confirmed
        assert await store.ack_outbox([january]) == 1
        assert date(2026, 1, 1) in (await store.maintain_punch_months(at(2026, 6, 1))).dropped
        assert (await store.get_punch("LMG0001", 3)).record_no == 3  # November is young
    finally:
        await store.close()


async def test_a_drop_a_crash_interrupted_is_finished_by_the_next_run(pg_urls, tmp_path):
    url = pg_urls()
    store = await open_at(url, tmp_path, Clock(at(2025, 12)), punch_retention_days=90)
    try:
        await store.maintain_punch_months(at(2025, 12))
        await store.add_device("LMG0001", project_code="P", region_code="620102")
        await store.store_punches([punch(record_no=1, punch_time_ms=at(2025, 12))])
        await store.ack_outbox([i.id for i in await store.claim_outbox(10, 2**62, 1000)])
        conn = await asyncpg.connect(PG_DSN)  # the first half of a drop, then the crash
        try:
            await conn.execute(f'SET search_path TO "{url.rsplit("schema=", 1)[1]}"')
            await conn.execute("ALTER TABLE punches DETACH PARTITION punches_y2025m12")
            await conn.execute("ALTER TABLE punches_y2025m12 RENAME TO punches_dropping_y2025m12")
        finally:
            await conn.close()
        await store.maintain_punch_months(at(2025, 12))  # within retention: only the unfinished drop
        assert (await store.store_punches([punch(record_no=1, punch_time_ms=at(2025, 12))]))[0].status \
            is Outcome.STORED  # its key was deleted with it
    finally:
        await store.close()


def test_a_punch_retention_under_90_days_is_refused():
    with pytest.raises(ValueError, match="punch_retention_days must be 0 .* or at least 90"):
        StoreConfig(punch_retention_days=30)
    assert StoreConfig().punch_retention_days == 0


async def test_a_busy_table_puts_the_maintenance_off_without_failing(pg_urls, tmp_path):
    # A query holding punches (an aggregate reading for seconds) must not make the hourly
    # maintenance wait long or fail: the lock is waited for 1 s, then tried next hour.
    url = pg_urls()
    store = await open_at(url, tmp_path, Clock(at(2025, 12)), punch_retention_days=90)
    try:
        await store.maintain_punch_months(at(2025, 12))
        await store.add_device("LMG0001", project_code="P", region_code="620102")
        await store.store_punches([punch(record_no=1, punch_time_ms=at(2025, 12))])
        await store.ack_outbox([i.id for i in await store.claim_outbox(10, 2**62, 1000)])
        reader = await asyncpg.connect(PG_DSN)
        try:
            await reader.execute(f'SET search_path TO "{url.rsplit("schema=", 1)[1]}"')
            async with reader.transaction():
                await reader.fetchval("SELECT count(*) FROM punches")  # holds its lock to the commit
                busy = await store.maintain_punch_months(at(2026, 6, 1))
            assert (busy.created, busy.dropped, busy.held) == (0, (), ())
        finally:
            await reader.close()
        done = await store.maintain_punch_months(at(2026, 6, 1))
        assert done.created > 0 and date(2025, 12, 1) in done.dropped
    finally:
        await store.close()
