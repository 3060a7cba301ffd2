"""Several gateway nodes on one PostgreSQL database: two stores, one schema."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from lmg.storage import Outcome, StoreConfig, StoreUnavailable, open_store
from test_store_contract import punch

pytestmark = pytest.mark.postgres

T0 = 1_700_000_000_000


async def test_two_nodes_storing_the_same_records_store_each_once(pg_urls, tmp_path):
    url = pg_urls()
    a = await open_store(url, data_dir=tmp_path)
    b = await open_store(url, data_dir=tmp_path)
    try:
        records = [punch(f"DEV{n % 7}", n) for n in range(400)]
        results = await asyncio.gather(*(
            node.store_punches(records[k::5]) for node in (a, b, a, b) for k in range(5)))
        stored = sum(o.status is Outcome.STORED for outs in results for o in outs)
        assert stored == 400
        assert all(o.acknowledged for outs in results for o in outs)
        assert await a.count_punches() == 400
        assert (await b.outbox_status(T0)).pending == 400
    finally:
        await a.close()
        await b.close()


async def test_forwarders_on_two_nodes_never_claim_the_same_item(pg_urls, tmp_path):
    url = pg_urls()
    a = await open_store(url, data_dir=tmp_path)
    b = await open_store(url, data_dir=tmp_path)
    try:
        await a.store_punches([punch(f"DEV{n % 40}", n) for n in range(2000)])
        now = T0 * 2
        claimed: dict[str, list[int]] = {"a": [], "b": []}
        order: dict[str, list[int]] = {}

        async def forwarder(name, store):
            while True:
                items = await store.claim_outbox(37, now, lease_ms=600_000)
                if not items:
                    if (await store.outbox_status(now)).pending == 0:
                        return
                    await asyncio.sleep(0.005)
                    continue
                claimed[name].extend(item.id for item in items)
                for item in items:
                    order.setdefault(item.punch.device_serial, []).append(item.punch.record_no)
                await store.ack_outbox([item.id for item in items])

        await asyncio.wait_for(asyncio.gather(forwarder("a", a), forwarder("b", b)), 60)
        assert not set(claimed["a"]) & set(claimed["b"])
        assert len(claimed["a"]) + len(claimed["b"]) == 2000
        assert claimed["a"] and claimed["b"]  # both really took part
        for device, record_nos in order.items():
            assert record_nos == sorted(record_nos), f"{device} forwarded out of order"
    finally:
        await a.close()
        await b.close()


async def test_presence_flushes_of_two_nodes_over_the_same_devices_never_deadlock(pg_urls, tmp_path):
    """A reconnect storm moves terminals between `lmg serve --workers` processes, so two
    workers' flushes name the same devices; each used to lock rows in its own order."""
    from lmg.storage import Presence, StoreUnavailable

    url = pg_urls()
    a = await open_store(url, data_dir=tmp_path)
    b = await open_store(url, data_dir=tmp_path)
    try:
        serials = [f"DEV{n:04d}" for n in range(400)]
        for serial in serials:
            await a.add_device(serial, project_code="P", region_code="620100")
        forward = [Presence(s, T0, True, address=f"10.0.{n // 250}.{n % 250}:4000")
                   for n, s in enumerate(serials)]
        backward = [Presence(s, T0 + 1, False, address="10.9.9.9:4000") for s in reversed(serials)]
        for _ in range(10):
            results = await asyncio.gather(*(
                node.update_presence(updates) for node, updates in ((a, forward), (b, backward)) * 3),
                return_exceptions=True)
            assert [r for r in results if isinstance(r, StoreUnavailable)] == []
            assert results == [400] * 6
        assert {d.last_address for d in await a.list_devices()} <= {"10.9.9.9:4000"} | {
            u.address for u in forward}
    finally:
        await a.close()
        await b.close()


async def test_handing_a_connection_back_to_the_pool_costs_no_query(pg_urls, tmp_path):
    # asyncpg's default reset sent "SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *;
    # RESET ALL" on every release: a round trip per store call for state we never set.
    store = await open_store(pg_urls(), data_dir=tmp_path)
    try:
        queries: list[str] = []
        async with store._pool.acquire() as conn:
            conn.add_query_logger(lambda record: queries.append(record.query))
            assert await conn.fetchval("SELECT 1") == 1
        async with store._pool.acquire() as conn:  # released, reset, taken again
            assert await conn.fetchval("SELECT 2") == 2
        assert queries == ["SELECT 1", "SELECT 2"]
        async with store._pool.acquire() as conn:  # a transaction left open is still rolled back
            await conn.execute("BEGIN")
            await conn.execute("CREATE TEMP TABLE left_open (x int)")
        async with store._pool.acquire() as conn:
            assert not conn.is_in_transaction()
            assert await conn.fetchval("SELECT to_regclass('pg_temp.left_open')") is None
    finally:
        await store.close()


async def test_a_reader_following_session_ends_by_cursor_misses_none(pg_urls, tmp_path):
    """Ids come from a sequence when a row is inserted, not when it commits: without the
    writers taking turns, a reader could see id 11 committed, move its cursor past 10,
    and never see 10 commit. A gateway would then keep a disabled device's session."""
    from lmg.storage import SessionEndReason

    url = pg_urls()
    a = await open_store(url, data_dir=tmp_path)
    b = await open_store(url, data_dir=tmp_path)
    reader = await open_store(url, data_dir=tmp_path)
    try:
        serials = [f"DEV{n:02d}" for n in range(12)]
        for serial in serials:
            await a.add_device(serial, project_code="P", region_code="620100")
        read: list[int] = []
        done = asyncio.Event()

        async def operator(node, serials_of_mine):
            for round_ in range(8):
                for serial in serials_of_mine:
                    if round_ % 3 == 0:
                        await node.disable_device(serial)
                    elif round_ % 3 == 1:
                        await node.rotate_device_secret(serial)
                    else:
                        await node.end_device_sessions(serial, SessionEndReason.CLOSED_BY_OPERATOR)

        async def follow():
            cursor = 0
            while True:
                finished = done.is_set()
                page = await reader.session_ends_after(cursor, limit=7)
                read.extend(end.id for end in page)
                cursor = page[-1].id if page else cursor
                if finished and not page:
                    return
                await asyncio.sleep(0)

        follower = asyncio.ensure_future(follow())
        await asyncio.gather(*(operator(node, serials[k::4]) for k, node in enumerate((a, b, a, b))))
        done.set()
        await asyncio.wait_for(follower, 30)
        everything = [end.id for end in await reader.session_ends_after(0, limit=10_000)]
        assert len(everything) == 8 * len(serials)
        assert read == everything  # every id, once, in order
    finally:
        for store in (a, b, reader):
            await store.close()


async def test_punches_commit_while_every_shared_connection_is_held(pg_urls, tmp_path):
    """The group commit has connections of its own: photos and reads holding the whole
    shared pool (10,000 terminals back from an outage did) must not stop the acks."""
    config = StoreConfig(pg_pool_max=4, group_commit_batches_in_flight_postgres=2, pg_connect_timeout_ms=300)
    store = await open_store(pg_urls(), data_dir=tmp_path, config=config)
    try:
        async with contextlib.AsyncExitStack() as held:
            for _ in range(config.pg_pool_max - config.group_commit_batches_in_flight_postgres):
                await held.enter_async_context(store._connection())
            with pytest.raises(StoreUnavailable):  # the shared pool is really exhausted
                await store.count_punches()
            outcomes = await store.store_punches([punch("DEV1", n) for n in range(50)])
            assert [o.status for o in outcomes] == [Outcome.STORED] * 50
        assert await store.count_punches() == 50
    finally:
        await store.close()


def test_pool_leaves_room_for_reads_beside_the_punch_connections():
    with pytest.raises(ValueError, match="pg_pool_max=3"):
        StoreConfig(pg_pool_max=3, group_commit_batches_in_flight_postgres=2)
    StoreConfig(pg_pool_max=4, group_commit_batches_in_flight_postgres=2)
