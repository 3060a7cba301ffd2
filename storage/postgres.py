"""PostgreSQL store for scale-out (`postgresql://user@host:5432/db?schema=name`).

Several gateway nodes may share one database. What makes that safe:
- Punches: one statement per group-commit batch claims the keys in `punch_keys` (unnest
  of column arrays, sorted by key so two batches never lock the same keys in opposite
  orders), skips existing keys with ON CONFLICT DO NOTHING, stores the punches of exactly
  the keys it claimed in their month's partition and adds them to the outbox (RETURNING
  feeding INSERTs in the same statement; docs/storage.md, "Punches by month"). A key inserted
  concurrently by another node's uncommitted batch makes ours wait for it, then report
  DUPLICATE: stored once, whoever wins.
- Outbox claims lock candidate rows with FOR UPDATE SKIP LOCKED, so forwarders on
  different nodes never claim the same item at once, and keep per device only the
  leading run of rows they locked, so a device's items never split between claimers.
- Migrations run under a transaction-level advisory lock, so nodes starting together
  upgrade once.
- A roster change locks its project's row first, so the project's versions are handed
  out one transaction at a time; every writer of signals takes the signals table lock
  last, so signal ids commit in id order and a reader following them by cursor misses
  none (see _LOCK_SIGNALS).

The `schema` URL parameter puts every table in that schema (created if missing); each
pooled connection gets it as search_path. Network faults, a server that is down or
refusing writes, and timeouts (`pg_command_timeout_ms`) become StoreUnavailable; the
pool replaces broken connections, so the store works again once the server is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from datetime import date
from pathlib import Path
from typing import Any

import asyncpg
import orjson

from lmg.storage import postgres_partitions
from lmg.storage.api import (
    DUPLICATE, STORED, ApiToken, AuditEntry, Command, CommandState, Device, ImportResult, Outcome,
    OutboxItem, OutboxStatus, Presence, Project, Punch, PunchIn, PunchListing, PunchMonths, PunchOutcome,
    RejectedPunch, SessionEndReason, Signal, SignalKind, UpsertOutcome, Worker, WorkerIn,
    check_api_token_name, check_day, check_device_fields, check_limit, check_project_code,
    check_token_sha256, check_version, wall_clock_ms,
)
from lmg.storage.backend import (
    API_TOKEN_COLUMNS, COMMAND_COLUMNS, DEVICE_COLUMNS, NEW_COMMAND_COLUMNS, NEW_DEVICE_COLUMNS,
    PENDING, PROJECT_COLUMNS, PUNCH_COLUMNS, PUNCH_LISTING_SELECT, REJECTED_COLUMNS, SIGNAL_COLUMNS,
    WORKER_COLUMNS, WORKER_UPDATE, BackendStore, api_token, api_token_row, audit_filters, check_completion,
    check_face_sha, check_int, check_new_command, check_offset, check_roster_page, check_seq,
    checked_workers, command, command_filters, device_filters, missing_face, new_api_token,
    new_project, new_secret, project, project_filters, punch_filters, punch_listing, same_project,
    session_end_reason, scope_filter, signal, where, worker,
)
from lmg.storage.blobs import BlobStore, FileBlobStore
from lmg.storage.config import StoreConfig
from lmg.storage.errors import (
    DeviceExists, ProjectExists, StoreClosed, StoreUnavailable, TokenExists, UnknownDevice,
    UnknownProject,
)
from lmg.storage.group_commit import GroupCommit
from lmg.storage.migrations import POSTGRES_LEDGER, Migration, load_migrations, plan
from lmg.storage.postgres_blobs import PostgresBlobStore
from lmg.storage.postgres_console import PostgresConsole
from lmg.storage.postgres_supervision import PostgresSupervision
from lmg.storage.roster import RosterPlan, plan_dates, plan_import, plan_removal, prune_floor

# Any number works as long as every lmg uses the same one: "LMG" "mig" in ASCII.
_MIGRATION_LOCK = 0x4C4D47_6D6967

# SQLSTATE classes meaning "the database cannot do it now", not "the request is wrong":
# 08 connection, 40 rollback (serialization, deadlock), 53 insufficient resources (disk
# full), 57 operator intervention (shutdown), 58 system error (I/O); 25006 read-only.
_UNAVAILABLE_CLASSES = ("08", "40", "53", "57", "58")

_STORE_PUNCHES = f"""
WITH input AS (
    SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::bigint[], $5::integer[],
                         $6::integer[], $7::integer[], $8::bytea[], $9::bigint[])
        AS t(device_serial, record_no, worker_id, punch_time_ms, direction, verify_mode,
             temperature_dc, photo_sha256, photo_size)
), keyed AS (
    INSERT INTO punch_keys (device_serial, record_no)
    SELECT device_serial, record_no FROM input ORDER BY device_serial, record_no
    ON CONFLICT (device_serial, record_no) DO NOTHING
    RETURNING device_serial, record_no
), added AS (
    INSERT INTO punches ({PUNCH_COLUMNS})
    SELECT device_serial, record_no, worker_id, punch_time_ms, direction, verify_mode,
           temperature_dc, photo_sha256, photo_size, $10
    FROM input JOIN keyed USING (device_serial, record_no) ORDER BY device_serial, record_no
    RETURNING id, device_serial, record_no, punch_time_ms
), queued AS (
    INSERT INTO outbox (punch_id, punch_time_ms, device_serial, next_attempt_at_ms, created_at_ms)
    SELECT id, punch_time_ms, device_serial, $10, $10 FROM added ORDER BY id
)
SELECT device_serial, record_no FROM added
"""

_STORE_REJECTED = f"""
INSERT INTO rejected_punches ({REJECTED_COLUMNS})
SELECT *, $11 FROM unnest($1::text[], $2::bigint[], $3::text[], $4::bigint[], $5::integer[],
                          $6::integer[], $7::integer[], $8::bytea[], $9::bigint[], $10::integer[])
ORDER BY 1, 2
ON CONFLICT (device_serial, record_no) DO NOTHING
"""

_PUNCH_SELECT = f"SELECT {PUNCH_COLUMNS} FROM punches"
_INSERT_PHOTO = "INSERT INTO photos (sha256, size, stored_at_ms) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING"
# A batch of verified photos: bytes and records in one statement (so one transaction, one
# round trip); a hash already stored, or twice in the batch, is skipped (same bytes).
_STORE_PHOTOS = """
WITH blobs AS (
    INSERT INTO photo_blobs (sha256, data)
    SELECT sha, data FROM unnest($1::bytea[], $2::bytea[]) AS t(sha, data) ON CONFLICT DO NOTHING
)
INSERT INTO photos (sha256, size, stored_at_ms)
SELECT sha, size, $4 FROM unnest($1::bytea[], $3::bigint[]) AS t(sha, size) ON CONFLICT DO NOTHING
"""
# Photos per transaction: 64 x 30 KB is 2 MB of WAL, a few ms of a disk's sequential write.
PHOTO_BATCH_PHOTOS = 64
# Verified photos waiting for their transaction: the gateway lets photo_store_concurrency
# frames per process in at once, so this only bounds other callers (`lmg` tools, tests).
PHOTO_QUEUE_PHOTOS = 64 * 8
_OUTBOX_ITEM_COLUMNS = (
    "o.id, o.attempts, o.next_attempt_at_ms, o.last_error, o.created_at_ms, o.state, "
    "p.device_serial, p.record_no, p.worker_id, p.punch_time_ms, p.direction, p.verify_mode, "
    "p.temperature_dc, p.photo_sha256, p.photo_size, p.received_at_ms"
)
_CLAIM_CANDIDATES = """
WITH blocked AS (
    SELECT device_serial, min(id) AS first_id FROM outbox
    WHERE state = 'pending' AND next_attempt_at_ms > $1 GROUP BY device_serial)
SELECT o.id, o.device_serial FROM outbox o LEFT JOIN blocked b ON b.device_serial = o.device_serial
WHERE o.state = 'pending' AND o.next_attempt_at_ms <= $1 AND (b.first_id IS NULL OR o.id < b.first_id)
ORDER BY o.id LIMIT $2
"""


SIGNALS_CHANNEL = "lmg_signals"
_CHANNEL_BYTES = 63  # PostgreSQL identifiers (and so channel names) are at most 63 bytes
# Writers of signals take turns: SHARE ROW EXCLUSIVE conflicts with itself (and with the
# DELETE of prune), not with readers. Held to the commit, it makes ids commit in id order,
# so a reader's cursor never moves past an id whose transaction is still open. It is the
# last lock a transaction takes (after any device or project row), so its holder never
# waits for another lock and two writers cannot deadlock on it. Operators' actions and
# roster changes are rare; the punch path never takes it.
_LOCK_SIGNALS = "LOCK TABLE signals IN SHARE ROW EXCLUSIVE MODE"
# Worker rows as the roster calls write them (upserts; executemany pipelines them).
_UPSERT_WORKER = (f"INSERT INTO workers ({WORKER_COLUMNS}) VALUES "
                  f"($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15) "
                  f"ON CONFLICT (project_code, worker_id) DO UPDATE SET {WORKER_UPDATE}")
# Workers whose stored roster state $1 (today) contradicts.
_DUE_FOR_DATES = ("(NOT on_roster AND entry_date <= $1 AND (exit_date IS NULL OR exit_date > $1))"
                  " OR (on_roster AND (entry_date > $1 OR exit_date <= $1))")


def signals_channel(schema: str | None) -> str:
    """The NOTIFY channel of a store's signals: one per schema, so stores in two schemas of
    one database never hear each other. Without a schema (or in public), the plain name; a
    name past 63 bytes keeps a prefix of the schema and a hash of all of it."""
    if not schema or schema == "public":
        return SIGNALS_CHANNEL
    name = f"{SIGNALS_CHANNEL}_{schema}"
    if len(name.encode()) <= _CHANNEL_BYTES:
        return name
    digest = hashlib.blake2b(schema.encode(), digest_size=8).hexdigest()
    keep = _CHANNEL_BYTES - len(SIGNALS_CHANNEL) - 2 - len(digest)
    return f"{SIGNALS_CHANNEL}_{schema[:keep]}_{digest}"


def _is_unavailable(exc: BaseException) -> bool:
    if isinstance(exc, (OSError, asyncio.TimeoutError, asyncpg.exceptions.ConnectionDoesNotExistError)):
        return True
    if isinstance(exc, asyncpg.InterfaceError):
        return "closed" in str(exc) or "connection" in str(exc)
    if isinstance(exc, asyncpg.PostgresError):
        state = getattr(exc, "sqlstate", None) or ""
        return state[:2] in _UNAVAILABLE_CLASSES or state == "25006"
    return False


def _outbox_item(row: Any) -> OutboxItem:
    return OutboxItem(id=row[0], attempts=row[1], next_attempt_at_ms=row[2], last_error=row[3],
                      created_at_ms=row[4], dead=row[5] == "dead", punch=Punch(*row[6:]))


def _device(row: Any) -> Device:
    return Device(*row)


def _mark(n: int) -> str:
    return f"${n}"


# A command's region is its device's.
_COMMAND_REGION = "(SELECT d.region_code FROM devices d WHERE d.serial = commands.device_serial)"
# A region scope's codes, one bound JSON array (storage/backend.py scope_filter).
_CODES_IN = "(SELECT jsonb_array_elements_text({}::jsonb))"


_INSERT_PROJECT = (f"INSERT INTO projects ({PROJECT_COLUMNS}) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10) "
                   f"ON CONFLICT (code) DO NOTHING")


def _project_row(p: Project) -> tuple[Any, ...]:
    return (p.code, p.name, p.region_code, p.enterprise, p.enterprise_uscc, p.start_date, p.end_date,
            p.roster_version, p.created_at_ms, p.roster_floor)


def _count(status: str) -> int:
    """Rows affected, from a command tag such as 'UPDATE 3' or 'INSERT 0 1'."""
    return int(status.rsplit(" ", 1)[-1])


async def _keep_session(conn: asyncpg.Connection) -> None:
    """The pool's reset on release: nothing beyond what asyncpg always does (roll back an
    open transaction, drop listeners). Its default also sends "SELECT
    pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL", a round trip per store
    call that undoes nothing here: pooled connections take no session locks, cursors,
    LISTENs or SETs (the migration's lock and search_path are transaction-scoped, on a
    connection of its own). 1000 sequential get_device calls: 275 -> 154 µs each."""


class PostgresStore(PostgresSupervision, PostgresConsole, BackendStore):
    """The scale-out store. Open with `lmg.storage.open_store("postgresql://...")`. The
    supervision of key personnel's methods come from `PostgresSupervision`."""

    dialect = "postgres"

    def __init__(self, location: Any, *, data_dir: str | os.PathLike[str], config: StoreConfig,
                 clock_ms: Callable[[], int], blobs: BlobStore | None) -> None:
        if blobs is None:  # shared by every node of the database; files of before version 7 still read
            blobs = PostgresBlobStore(self._connection, fallback=FileBlobStore(Path(data_dir) / "photos"))
        super().__init__(data_dir=data_dir, config=config, clock_ms=clock_ms, blobs=blobs,
                         batches_in_flight=config.group_commit_batches_in_flight_postgres)
        self.location = location
        self.url = location.display
        self.schema = location.pg_schema
        self.signals_channel = signals_channel(self.schema)
        self._pool: asyncpg.Pool | None = None
        # The group commit's own connections (one per batch in flight), apart from `_pool`:
        # punches never queue behind photo, presence or admin reads. 10,000 terminals back
        # from an outage held all 8 shared connections with photo chunks; every batch timed
        # out waiting for one and no punch was acked for minutes, PostgreSQL idle.
        self._punch_pool: asyncpg.Pool | None = None
        # Verified photos, many per transaction (one WAL flush for up to 64 x 30 KB instead of
        # one each): one at a time, 8 uploads at once stored 284 photos/s in the outage run
        # (one core idle). Only when the blobs are this database's own table.
        self._photo_group: GroupCommit | None = None
        if isinstance(self.blobs, PostgresBlobStore):
            self._photo_group = GroupCommit(
                self._commit_photos, max_records=PHOTO_BATCH_PHOTOS, max_delay_ms=config.group_commit_max_delay_ms,
                max_queued_records=PHOTO_QUEUE_PHOTOS, enqueue_wait_ms=config.enqueue_wait_ms,
                in_flight=1, name="lmg-postgres-photo-commit")
        self._listeners: set[Callable[[], Awaitable[None]]] = set()  # their stop(), run at close

    @classmethod
    async def open(cls, location: Any, *, data_dir: str | os.PathLike[str],
                   config: StoreConfig | None = None, migrations: tuple[Migration, ...] | None = None,
                   clock_ms: Callable[[], int] = wall_clock_ms,
                   blobs: BlobStore | None = None) -> PostgresStore:
        """Connect, create the schema if missing, migrate, start the pool.

        Raises StoreUnavailable (server unreachable), SchemaTooNew.
        """
        config = config or StoreConfig()
        store = cls(location, data_dir=Path(data_dir), config=config, clock_ms=clock_ms, blobs=blobs)
        try:
            await store._migrate(migrations or load_migrations("postgres"))
            settings = {"search_path": f'"{store.schema}"'} if store.schema else {}
            punch_connections = config.group_commit_batches_in_flight_postgres
            pool_options = dict(command_timeout=config.pg_command_timeout_ms / 1000,
                                timeout=config.pg_connect_timeout_ms / 1000, server_settings=settings,
                                reset=_keep_session)
            store._punch_pool = await asyncpg.create_pool(
                location.pg_dsn, min_size=punch_connections, max_size=punch_connections, **pool_options)
            store._pool = await asyncpg.create_pool(
                location.pg_dsn, min_size=1, max_size=config.pg_pool_max - punch_connections, **pool_options)
        except BaseException as exc:
            await store.close()
            if _is_unavailable(exc):
                raise store._unavailable(exc, opening=True) from exc
            raise
        return store

    def _unavailable(self, exc: BaseException, opening: bool = False) -> StoreUnavailable:
        what = f"{type(exc).__name__}: {exc}".strip()
        if opening:
            return StoreUnavailable(
                f"cannot open the PostgreSQL store {self.url}: {what}; check that the server "
                f"runs and accepts this user (pg_ctlcluster <version> main start), or fix --store"
            )
        return StoreUnavailable(
            f"PostgreSQL store {self.url}: {what}; nothing of this call was stored; "
            f"devices will resend and the store reconnects by itself"
        )

    async def _migrate(self, migrations: tuple[Migration, ...]) -> None:
        conn = await asyncpg.connect(self.location.pg_dsn,
                                     timeout=self.config.pg_connect_timeout_ms / 1000)
        try:
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
                if self.schema:
                    await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
                    await conn.execute(f'SET LOCAL search_path TO "{self.schema}"')
                await conn.execute(POSTGRES_LEDGER)
                current = await conn.fetchval("SELECT coalesce(max(version), 0) FROM schema_migrations")
                for migration in plan(current, migrations, self.url):
                    await conn.execute(migration.sql)
                    await conn.execute(
                        "INSERT INTO schema_migrations (version, name, applied_at_ms) VALUES ($1, $2, $3)",
                        migration.version, migration.name, self.clock_ms())
        finally:
            await conn.close()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for stop in list(self._listeners):
            await stop()
        await self._close_group()
        if self._photo_group is not None:
            await self._photo_group.close()
        pools = (self._pool, self._punch_pool)
        self._pool = self._punch_pool = None
        for pool in pools:
            if pool is None:
                continue
            try:
                await asyncio.wait_for(pool.close(), self.config.pg_command_timeout_ms / 1000)
            except (asyncio.TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                pool.terminate()

    @asynccontextmanager
    async def _connection(self, punches: bool = False) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection (`punches`: one of the group commit's own); faults come out
        as StoreUnavailable."""
        pool = self._punch_pool if punches else self._pool
        if pool is None:  # closing still drains queued punches through the pool
            raise StoreClosed("the store is closed")
        try:
            async with pool.acquire(timeout=self.config.pg_connect_timeout_ms / 1000) as conn:
                yield conn
        except (StoreUnavailable, StoreClosed):
            raise
        except Exception as exc:
            if _is_unavailable(exc):
                raise self._unavailable(exc) from exc
            raise

    async def _fetch(self, sql: str, *args: Any) -> list:
        async with self._connection() as conn:
            return await conn.fetch(sql, *args)

    async def _execute(self, sql: str, *args: Any) -> str:
        async with self._connection() as conn:
            return await conn.execute(sql, *args)

    async def schema_version(self) -> int:
        rows = await self._fetch("SELECT coalesce(max(version), 0) FROM schema_migrations")
        return rows[0][0]

    # punches ------------------------------------------------------------------------
    async def _commit_punches(self, records: list[PunchIn]) -> list[PunchOutcome]:
        now = self.clock_ms()
        columns: list[list] = [[] for _ in range(9)]
        rejected: list[list] = [[] for _ in range(10)]
        first_seen: dict[tuple[str, int], int] = {}
        outcomes: list[PunchOutcome | None] = []
        for index, r in enumerate(records):
            if r.reject_reason is not None:
                outcomes.append(PunchOutcome(Outcome.REJECTED, r.reject_reason))
                for column, value in zip(rejected, (r.device_serial, r.record_no, r.worker_id,
                                                    r.punch_time_ms, r.direction, r.verify_mode,
                                                    r.temperature_dc, r.photo_sha256, r.photo_size,
                                                    r.reject_reason)):
                    column.append(value)
                continue
            key = (r.device_serial, r.record_no)
            if key in first_seen:
                outcomes.append(DUPLICATE)
                continue
            first_seen[key] = index
            outcomes.append(None)  # decided by what the INSERT returns
            for column, value in zip(columns, (r.device_serial, r.record_no, r.worker_id,
                                               r.punch_time_ms, r.direction, r.verify_mode,
                                               r.temperature_dc, r.photo_sha256, r.photo_size)):
                column.append(value)
        added: set = set()
        async with self._connection(punches=True) as conn:
            # Without rejections the one statement is its own transaction: one round trip
            # instead of BEGIN, the statement and COMMIT. On an event loop busy with 10,000
            # terminals each round trip waits for a loop turn: a third of a batch's time.
            async with conn.transaction() if rejected[0] else contextlib.nullcontext():
                if first_seen:
                    added = {(row[0], row[1]) for row in await conn.fetch(_STORE_PUNCHES, *columns, now)}
                if rejected[0]:
                    await conn.execute(_STORE_REJECTED, *rejected, now)
        for key, index in first_seen.items():
            outcomes[index] = STORED if key in added else DUPLICATE
        return outcomes  # type: ignore[return-value]

    async def count_punches(self, device_serial: str | None = None) -> int:
        if device_serial is None:
            rows = await self._fetch("SELECT count(*) FROM punches")
        else:
            rows = await self._fetch("SELECT count(*) FROM punches WHERE device_serial = $1", device_serial)
        return rows[0][0]

    async def get_punch(self, device_serial: str, record_no: int) -> Punch | None:
        rows = await self._fetch(f"{_PUNCH_SELECT} WHERE device_serial = $1 AND record_no = $2",
                                 device_serial, record_no)
        return Punch(*rows[0]) if rows else None

    async def iter_punches(self, device_serial: str | None = None) -> AsyncIterator[Punch]:
        page = 1000  # rows per round trip
        after: tuple[str, int] = ("", -1)
        while True:
            if device_serial is None:
                rows = await self._fetch(
                    f"{_PUNCH_SELECT} WHERE (device_serial, record_no) > ($1, $2) "
                    f"ORDER BY device_serial, record_no LIMIT {page}", *after)
            else:
                rows = await self._fetch(
                    f"{_PUNCH_SELECT} WHERE device_serial = $1 AND record_no > $2 "
                    f"ORDER BY record_no LIMIT {page}", device_serial, after[1])
            for row in rows:
                yield Punch(*row)
            if len(rows) < page:
                return
            after = (rows[-1][0], rows[-1][1])

    async def list_rejected_punches(self, *, limit: int = 100) -> list[RejectedPunch]:
        rows = await self._fetch(
            f"SELECT {REJECTED_COLUMNS} FROM rejected_punches ORDER BY id DESC LIMIT $1", limit)
        return [RejectedPunch(*row) for row in rows]

    async def list_punches(
        self, *, project_code: str | None = None, device_serial: str | None = None,
        worker_id: str | None = None, since_ms: int | None = None, until_ms: int | None = None,
        after_id: int = 0, limit: int = 1000, region_scope: str | None = None,
    ) -> list[PunchListing]:
        """See Store.list_punches.

        The time bounds read only the months they overlap (punches are partitioned by
        month, migration 9), and within them `worker_id` reads through the (worker_id, id)
        index: at province scale a month is tens of millions of rows, past
        `pg_command_timeout_ms` scanned (SQLite, a site's store, has no such index: it cost
        4-12% of its write rate, docs/storage.md). `device_serial`, and `project_code`
        through its devices, read those devices' punches through the (device_serial,
        record_no) index; with no filter but the cursor, rows are read in id order. A read
        that runs past `pg_command_timeout_ms` fails with StoreUnavailable."""
        conditions = punch_filters(project_code, device_serial, worker_id, since_ms, until_ms,
                                   after_id, limit)
        conditions.append(scope_filter(region_scope, _CODES_IN, "d.region_code"))
        clause, params = where(conditions, _mark)
        rows = await self._fetch(
            f"{PUNCH_LISTING_SELECT}{clause} ORDER BY p.id LIMIT ${len(params) + 1}", *params, limit)
        return [punch_listing(row) for row in rows]

    # devices ------------------------------------------------------------------------
    async def add_device(self, serial: str, *, project_code: str, region_code: str,
                         secret: bytes | None = None, firmware: str = "") -> Device:
        check_device_fields(serial, project_code, region_code)
        device = Device(serial, new_secret(secret), project_code, region_code, True, None, False,
                        firmware, 0, self.clock_ms())
        status = await self._execute(
            f"INSERT INTO devices ({NEW_DEVICE_COLUMNS}) VALUES ($1,$2,$3,$4,true,NULL,false,$5,0,$6) "
            f"ON CONFLICT (serial) DO NOTHING",
            device.serial, device.secret, project_code, region_code, firmware, device.created_at_ms)
        if _count(status) == 0:
            raise DeviceExists(serial)
        return device

    async def get_device(self, serial: str) -> Device | None:
        rows = await self._fetch(f"SELECT {DEVICE_COLUMNS} FROM devices WHERE serial = $1", serial)
        return self._live(_device(rows[0])) if rows else None

    async def get_devices(self, serials: Sequence[str]) -> dict[str, Device]:
        if not serials:
            return {}
        rows = await self._fetch(f"SELECT {DEVICE_COLUMNS} FROM devices WHERE serial = ANY($1::text[])",
                                 list(serials))
        return {row[0]: self._live(_device(row)) for row in rows}

    async def list_devices(
        self, *, after_serial: str = "", limit: int = 1000, project_code: str | None = None,
        region_code: str | None = None, online: bool | None = None, region_scope: str | None = None,
    ) -> list[Device]:
        clause, params = where(device_filters(after_serial, limit, project_code, region_code, online,
                                              self._seen_since_ms())
                               + [scope_filter(region_scope, _CODES_IN)], _mark)
        rows = await self._fetch(
            f"SELECT {DEVICE_COLUMNS} FROM devices{clause} ORDER BY serial LIMIT ${len(params) + 1}",
            *params, limit)
        return [self._live(_device(row)) for row in rows]

    async def set_device_enabled(self, serial: str, enabled: bool) -> None:
        if enabled:
            status = await self._execute("UPDATE devices SET enabled = true WHERE serial = $1", serial)
            if _count(status) == 0:
                raise UnknownDevice(serial)
            return
        await self._end_sessions(serial, SessionEndReason.DISABLED,
                                 "UPDATE devices SET enabled = false WHERE serial = $1", serial)

    async def rotate_device_secret(self, serial: str, secret: bytes | None = None) -> bytes:
        secret = new_secret(secret)
        await self._end_sessions(serial, SessionEndReason.SECRET_ROTATED,
                                 "UPDATE devices SET secret = $2 WHERE serial = $1", serial, secret)
        return secret

    async def _end_sessions(self, serial: str, reason: SessionEndReason, change: str | None,
                            *args: Any) -> int:
        """One transaction: `change` (an UPDATE of the device, $1 its serial) if given, and
        the SESSION_END signal with its NOTIFY (sent at the commit, so never for a
        rolled-back end); the signal's id. Raises UnknownDevice, rolling back, if there is
        no such device."""
        async with self._connection() as conn:
            async with conn.transaction():
                if change is not None:
                    if _count(await conn.execute(change, *args)) == 0:
                        raise UnknownDevice(serial)
                elif await conn.fetchval("SELECT 1 FROM devices WHERE serial = $1 FOR SHARE", serial) is None:
                    raise UnknownDevice(serial)
                return await self._signal(conn, SignalKind.SESSION_END, serial, reason.value)

    async def _signal(self, conn: asyncpg.Connection, kind: SignalKind, subject: str, detail: str) -> int:
        """Add a signal and its NOTIFY inside the caller's transaction, as its last lock; the id."""
        await conn.execute(_LOCK_SIGNALS)
        signal_id: int = await conn.fetchval(
            "INSERT INTO signals (kind, subject, detail, created_at_ms) VALUES ($1, $2, $3, $4) RETURNING id",
            kind.value, subject, detail, self.clock_ms())
        await conn.execute("SELECT pg_notify($1, $2)", self.signals_channel, f"{signal_id}:{kind.value}")
        return signal_id

    async def update_presence(self, updates: Sequence[Presence]) -> int:
        latest = {u.serial: u for u in updates}  # one row per device: the last heartbeat wins
        if not latest:
            return 0
        values = list(latest.values())
        serials = [u.serial for u in values]
        async with self._connection() as conn:
            async with conn.transaction():
                # Rows are locked in serial order first: the UPDATE's join locks them in
                # whatever order its plan visits them, and in a reconnect storm the flushes of
                # several `--workers` name the same devices (a terminal leaves one worker and
                # comes back on another), which deadlocked flush after flush.
                await conn.execute("SELECT 1 FROM devices WHERE serial = ANY($1::text[]) ORDER BY serial FOR UPDATE",
                                   serials)
                status = await conn.execute(
                    "UPDATE devices d SET last_seen_ms = u.last_seen_ms, online = u.online, "
                    "firmware = coalesce(u.firmware, d.firmware), "
                    "roster_version = coalesce(u.roster_version, d.roster_version), "
                    "last_address = coalesce(u.address, d.last_address) "
                    "FROM unnest($1::text[], $2::bigint[], $3::boolean[], $4::text[], $5::bigint[], "
                    "$6::text[]) "
                    "AS u(serial, last_seen_ms, online, firmware, roster_version, address) "
                    "WHERE d.serial = u.serial",
                    serials, [u.last_seen_ms for u in values], [u.online for u in values],
                    [u.firmware for u in values], [u.roster_version for u in values],
                    [u.address for u in values])
        return _count(status)

    async def set_device_roster_version(self, serial: str, version: int) -> None:
        check_version("roster version", version)
        if _count(await self._execute("UPDATE devices SET roster_version = $2 WHERE serial = $1",
                                      serial, version)) == 0:
            raise UnknownDevice(serial)

    async def devices_of_project(self, project_code: str) -> list[str]:
        rows = await self._fetch("SELECT serial FROM devices WHERE project_code = $1 ORDER BY serial",
                                 project_code)
        return [row[0] for row in rows]

    # signals ------------------------------------------------------------------------
    async def end_device_sessions(self, serial: str, reason: SessionEndReason) -> int:
        return await self._end_sessions(serial, session_end_reason(reason), None)

    async def adopt_local_photos(self, limit: int = 1000) -> int:
        blobs = self.blobs
        return await blobs.adopt_files(limit) if isinstance(blobs, PostgresBlobStore) else 0

    async def maintain_punch_months(self, now_ms: int) -> PunchMonths:
        check_int("now_ms", now_ms)
        async with self._connection() as conn:
            return await postgres_partitions.maintain(conn, now_ms, ahead=self.config.punch_partitions_ahead,
                                                      retention_days=self.config.punch_retention_days)

    async def _signal_takeover(self, detail: str) -> int:
        async with self._connection() as conn:
            async with conn.transaction():
                return await self._signal(conn, SignalKind.TAKEOVER, "", detail)

    async def _signals_after(self, after_id: int, limit: int, kinds: tuple[str, ...]) -> list[Signal]:
        rows = await self._fetch(f"SELECT {SIGNAL_COLUMNS} FROM signals WHERE id > $1 "
                                 f"AND kind = ANY($2::text[]) ORDER BY id LIMIT $3", after_id, list(kinds), limit)
        return [signal(row) for row in rows]

    async def _last_signal_id(self, kinds: tuple[str, ...]) -> int:
        rows = await self._fetch("SELECT coalesce(max(id), 0) FROM signals WHERE kind = ANY($1::text[])",
                                 list(kinds))
        return rows[0][0]

    async def _prune_signals(self, older_than_ms: int, kinds: tuple[str, ...]) -> int:
        return _count(await self._execute("DELETE FROM signals WHERE created_at_ms < $1 "
                                          "AND kind = ANY($2::text[])", older_than_ms, list(kinds)))

    async def _listen(self, on_signal: Callable[[int, str], None],
                      on_lost: Callable[[], None] | None) -> Callable[[], Awaitable[None]] | None:
        if self._pool is None:
            raise StoreClosed("the store is closed")
        channel = self.signals_channel
        try:
            conn = await asyncpg.connect(self.location.pg_dsn,
                                         timeout=self.config.pg_connect_timeout_ms / 1000)
        except Exception as exc:
            if _is_unavailable(exc):
                raise self._unavailable(exc, opening=True) from exc
            raise

        def heard(_conn: Any, _pid: int, _channel: str, payload: str) -> None:
            signal_id, _, kind = payload.partition(":")
            try:
                number = int(signal_id)
            except ValueError:
                return  # not sent by a store: nothing to act on
            on_signal(number, kind)

        def lost(_conn: Any) -> None:
            self._listeners.discard(stop)
            if on_lost is not None:
                on_lost()

        async def stop() -> None:
            """Stop listening and close the connection. Idempotent; on_lost is not called."""
            self._listeners.discard(stop)
            conn.remove_termination_listener(lost)
            if conn.is_closed():
                return
            try:
                await asyncio.wait_for(conn.close(), self.config.pg_command_timeout_ms / 1000)
            except (asyncio.TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                conn.terminate()

        try:
            await conn.add_listener(channel, heard)
        except BaseException as exc:
            conn.terminate()
            if _is_unavailable(exc):
                raise self._unavailable(exc) from exc
            raise
        conn.add_termination_listener(lost)
        self._listeners.add(stop)
        return stop

    # projects and the roster --------------------------------------------------------
    # Every roster change locks its project's row first (FOR UPDATE), so a project's
    # versions are handed out one transaction at a time and commit in order; calls that
    # change several projects lock them in code order, so two never deadlock.

    async def add_project(
        self, code: str, *, name: str, region_code: str, enterprise: str = "",
        enterprise_uscc: str = "", start_date: date | None = None, end_date: date | None = None,
    ) -> Project:
        made = new_project(code, name, region_code, enterprise, enterprise_uscc, start_date, end_date,
                           self.clock_ms())
        if _count(await self._execute(_INSERT_PROJECT, *_project_row(made))) == 0:
            raise ProjectExists(code)
        return made

    async def upsert_project(
        self, code: str, *, name: str, region_code: str, enterprise: str = "",
        enterprise_uscc: str = "", start_date: date | None = None, end_date: date | None = None,
    ) -> tuple[Project, UpsertOutcome]:
        made = new_project(code, name, region_code, enterprise, enterprise_uscc, start_date, end_date,
                           self.clock_ms())
        async with self._connection() as conn:
            async with conn.transaction():
                if _count(await conn.execute(_INSERT_PROJECT, *_project_row(made))) == 1:
                    return made, "added"
                stored = project(await conn.fetchrow(
                    f"SELECT {PROJECT_COLUMNS} FROM projects WHERE code = $1 FOR UPDATE", code))
                if same_project(stored, made):
                    return stored, "unchanged"
                row = await conn.fetchrow(
                    f"UPDATE projects SET name = $2, region_code = $3, enterprise = $4, enterprise_uscc = $5, "
                    f"start_date = $6, end_date = $7 WHERE code = $1 RETURNING {PROJECT_COLUMNS}",
                    code, name, region_code, enterprise, enterprise_uscc, start_date, end_date)
                return project(row), "updated"

    async def get_project(self, code: str) -> Project | None:
        rows = await self._fetch(f"SELECT {PROJECT_COLUMNS} FROM projects WHERE code = $1", code)
        return project(rows[0]) if rows else None

    async def list_projects(self, *, after_code: str = "", limit: int = 1000,
                            region_prefix: str = "", region_scope: str | None = None) -> list[Project]:
        clause, params = where(project_filters(after_code, limit, region_prefix)
                               + [scope_filter(region_scope, _CODES_IN)], _mark)
        rows = await self._fetch(f"SELECT {PROJECT_COLUMNS} FROM projects{clause} ORDER BY code "
                                 f"LIMIT ${len(params) + 1}", *params, limit)
        return [project(row) for row in rows]

    async def _roster_version(self, conn: asyncpg.Connection, project_code: str) -> int:
        """The project's version, its row locked to the end of the transaction."""
        version = await conn.fetchval("SELECT roster_version FROM projects WHERE code = $1 FOR UPDATE",
                                      project_code)
        if version is None:
            raise UnknownProject(project_code)
        return int(version)

    async def _write_plan(self, conn: asyncpg.Connection, project_code: str, before: int,
                          roster: RosterPlan) -> None:
        """Write the plan's rows; then the project's new version (its row is locked) and, as
        the last lock of the transaction, its ROSTER signal if it moved."""
        if roster.writes:
            await conn.executemany(_UPSERT_WORKER, [
                (w.project_code, w.worker_id, w.name, w.card_no, w.enterprise, w.team, w.post, w.entry_date,
                 w.exit_date, w.face_sha256, w.on_roster, w.version, w.added_version, w.face_version,
                 w.updated_at_ms) for w in roster.writes])
        if roster.version != before:
            await conn.execute("UPDATE projects SET roster_version = $2 WHERE code = $1", project_code,
                               roster.version)

    async def import_workers(self, project_code: str, rows: Sequence[WorkerIn], *,
                             today: date) -> ImportResult:
        check_project_code(project_code)
        check_day("today", today)
        checked = checked_workers(rows, self.config.roster_import_max_rows)
        faces = list({fields[8] for fields in checked if fields[8] is not None})
        async with self._connection() as conn:
            async with conn.transaction():
                version = await self._roster_version(conn, project_code)
                found = await conn.fetch("SELECT sha256 FROM faces WHERE sha256 = ANY($1::bytea[])", faces)
                missing_face(checked, {bytes(row[0]) for row in found})
                stored = {w.worker_id: w for w in map(worker, await conn.fetch(
                    f"SELECT {WORKER_COLUMNS} FROM workers WHERE project_code = $1 "
                    f"AND worker_id = ANY($2::text[])", project_code, [fields[0] for fields in checked]))}
                roster = plan_import(project_code, version, stored, checked, today, self.clock_ms())
                await self._write_plan(conn, project_code, version, roster)
                if roster.version != version:
                    await self._signal(conn, SignalKind.ROSTER, project_code, str(roster.version))
        return roster.result()

    async def remove_worker(self, project_code: str, worker_id: str, *, exit_date: date,
                            today: date) -> bool:
        check_day("exit_date", exit_date)
        check_day("today", today)
        async with self._connection() as conn:
            async with conn.transaction():
                version = await conn.fetchval(
                    "SELECT roster_version FROM projects WHERE code = $1 FOR UPDATE", project_code)
                row = await conn.fetchrow(f"SELECT {WORKER_COLUMNS} FROM workers WHERE project_code = $1 "
                                          f"AND worker_id = $2", project_code, worker_id)
                if version is None or row is None or not row[10]:  # on_roster
                    return False
                roster = plan_removal(version, worker(row), exit_date, today, self.clock_ms())
                await self._write_plan(conn, project_code, version, roster)
                if roster.version != version:
                    await self._signal(conn, SignalKind.ROSTER, project_code, str(roster.version))
        return True

    async def apply_roster_dates(self, today: date) -> list[str]:
        check_day("today", today)
        # Read first, outside a transaction: on most calls nothing is due.
        if not await self._fetch(f"SELECT 1 FROM workers WHERE {_DUE_FOR_DATES} LIMIT 1", today):
            return []
        now = self.clock_ms()
        async with self._connection() as conn:
            async with conn.transaction():
                projects = [row[0] for row in await conn.fetch(
                    f"SELECT DISTINCT project_code FROM workers WHERE {_DUE_FOR_DATES} ORDER BY 1", today)]
                changed: dict[str, int] = {}
                for project_code in projects:  # locked in code order
                    version = await self._roster_version(conn, project_code)
                    due = map(worker, await conn.fetch(
                        f"SELECT {WORKER_COLUMNS} FROM workers WHERE project_code = $2 AND ({_DUE_FOR_DATES}) "
                        f"ORDER BY worker_id", today, project_code))
                    roster = plan_dates(version, due, today, now)
                    await self._write_plan(conn, project_code, version, roster)
                    if roster.version != version:
                        changed[project_code] = roster.version
                for project_code, version in changed.items():
                    await self._signal(conn, SignalKind.ROSTER, project_code, str(version))
        return sorted(changed)

    async def roster_changes(self, project_code: str, *, after_version: int,
                             limit: int = 1000) -> list[Worker]:
        check_roster_page(project_code, limit)
        check_version("after_version", after_version)
        # `version > 0` names the condition of the workers_version index, so the planner can use it.
        rows = await self._fetch(
            f"SELECT {WORKER_COLUMNS} FROM workers WHERE project_code = $1 AND version > $2 "
            f"AND version > 0 ORDER BY version LIMIT $3", project_code, after_version, limit)
        return [worker(row) for row in rows]

    async def list_workers(self, project_code: str, *, on_roster_only: bool = True,
                           after_worker_id: str = "", limit: int = 1000) -> list[Worker]:
        check_roster_page(project_code, limit)
        only = " AND on_roster" if on_roster_only else ""
        rows = await self._fetch(
            f"SELECT {WORKER_COLUMNS} FROM workers WHERE project_code = $1 AND worker_id > $2{only} "
            f"ORDER BY worker_id LIMIT $3", project_code, after_worker_id, limit)
        return [worker(row) for row in rows]

    async def get_worker(self, project_code: str, worker_id: str) -> Worker | None:
        rows = await self._fetch(f"SELECT {WORKER_COLUMNS} FROM workers WHERE project_code = $1 "
                                 f"AND worker_id = $2", project_code, worker_id)
        return worker(rows[0]) if rows else None

    async def roster_floor(self, project_code: str) -> int:
        rows = await self._fetch("SELECT roster_floor FROM projects WHERE code = $1", project_code)
        return rows[0][0] if rows else 0

    async def prune_roster_tombstones(self, older_than_ms: int, *, today: date) -> int:
        check_int("older_than_ms", older_than_ms)
        check_day("today", today)
        async with self._connection() as conn:
            async with conn.transaction():
                rows = await conn.fetch(
                    "DELETE FROM workers WHERE NOT on_roster AND exit_date IS NOT NULL AND exit_date <= $1 "
                    "AND updated_at_ms < $2 RETURNING project_code, version", today, older_than_ms)
                pruned: dict[str, list[int]] = {}
                for project_code, version in rows:
                    pruned.setdefault(project_code, []).append(version)
                for project_code in sorted(pruned):
                    floor = await conn.fetchval("SELECT roster_floor FROM projects WHERE code = $1 FOR UPDATE",
                                                project_code)
                    if floor is not None:
                        await conn.execute("UPDATE projects SET roster_floor = $2 WHERE code = $1", project_code,
                                           prune_floor(floor, pruned[project_code]))
        return len(rows)

    # faces --------------------------------------------------------------------------
    async def _face_size(self, sha256: bytes) -> int | None:
        rows = await self._fetch("SELECT size FROM faces WHERE sha256 = $1", sha256)
        return rows[0][0] if rows else None

    async def _record_face(self, sha256: bytes, size: int, image_format: str) -> None:
        await self._execute("INSERT INTO faces (sha256, size, format, stored_at_ms) VALUES ($1, $2, $3, $4) "
                            "ON CONFLICT DO NOTHING", sha256, size, image_format, self.clock_ms())

    async def face_progress(self, serial: str, sha256: bytes) -> int:
        check_face_sha(sha256)
        rows = await self._fetch("SELECT next_offset FROM device_faces WHERE device_serial = $1 "
                                 "AND face_sha256 = $2", serial, sha256)
        return rows[0][0] if rows else 0

    async def set_face_progress(self, serial: str, sha256: bytes, offset: int) -> None:
        check_face_sha(sha256)
        check_offset(offset)
        await self._execute(
            "INSERT INTO device_faces (device_serial, face_sha256, next_offset, updated_at_ms) "
            "VALUES ($1, $2, $3, $4) ON CONFLICT (device_serial, face_sha256) DO UPDATE SET "
            "next_offset = excluded.next_offset, updated_at_ms = excluded.updated_at_ms",
            serial, sha256, offset, self.clock_ms())

    async def clear_face_progress(self, serial: str, sha256: bytes) -> None:
        check_face_sha(sha256)
        await self._execute("DELETE FROM device_faces WHERE device_serial = $1 AND face_sha256 = $2",
                            serial, sha256)

    # API tokens ---------------------------------------------------------------------
    async def create_api_token(
        self, name: str, token_sha256: bytes, scopes: Iterable[str], *,
        region_code: str | None = None, created_by: str = "", department: str | None = None,
    ) -> ApiToken:
        token, scopes_stored = new_api_token(name, token_sha256, scopes, region_code, created_by,
                                             self.clock_ms(), department)
        try:
            status = await self._execute(
                f"INSERT INTO api_tokens ({API_TOKEN_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) "
                f"ON CONFLICT (name) DO NOTHING", *api_token_row(token, scopes_stored))
        except asyncpg.UniqueViolationError as exc:  # the other unique key: the hash
            raise ValueError("token_sha256: another token has this hash; generate a new token") from exc
        if _count(status) == 0:
            raise TokenExists(name)
        return token

    async def get_api_token_by_hash(self, token_sha256: bytes) -> ApiToken | None:
        check_token_sha256(token_sha256)
        rows = await self._fetch(f"SELECT {API_TOKEN_COLUMNS} FROM api_tokens WHERE token_sha256 = $1",
                                 token_sha256)
        return api_token(rows[0]) if rows else None

    async def list_api_tokens(self) -> list[ApiToken]:
        rows = await self._fetch(f"SELECT {API_TOKEN_COLUMNS} FROM api_tokens ORDER BY name")
        return [api_token(row) for row in rows]

    async def revoke_api_token(self, name: str) -> bool:
        check_api_token_name(name)
        return _count(await self._execute(
            "UPDATE api_tokens SET revoked_at_ms = $1 WHERE name = $2 AND revoked_at_ms IS NULL",
            self.clock_ms(), name)) > 0

    async def count_active_api_tokens(self) -> int:
        return (await self._fetch("SELECT count(*) FROM api_tokens WHERE revoked_at_ms IS NULL"))[0][0]

    # photos -------------------------------------------------------------------------
    async def _photo_size(self, sha256: bytes) -> int | None:
        rows = await self._fetch("SELECT size FROM photos WHERE sha256 = $1", sha256)
        return rows[0][0] if rows else None

    async def _record_photo(self, sha256: bytes, size: int) -> None:
        await self._execute(_INSERT_PHOTO, sha256, size, self.clock_ms())

    async def _store_photo(self, sha256: bytes, content: bytes) -> None:
        """Bytes and record in one transaction shared with the other photos verified at the
        same moment (the photo group commit); a test's own BlobStore takes the plain path."""
        if self._photo_group is None:
            return await super()._store_photo(sha256, content)
        await self._photo_group.submit(((sha256, content),))

    async def _commit_photos(self, photos: list[tuple[bytes, bytes]]) -> list[None]:
        """One photo batch: every blob and every `photos` row in ONE transaction. A hash twice
        in a batch, or already stored, is a no-op (content-addressed: same bytes)."""
        shas = [sha for sha, _ in photos]
        async with self._connection() as conn:  # one statement: its own transaction, one round trip
            await conn.execute(_STORE_PHOTOS, shas, [content for _, content in photos],
                               [len(content) for _, content in photos], self.clock_ms())
        return [None] * len(photos)

    async def unforwarded_photos(self, stored_before_ms: int, limit: int) -> list[bytes]:
        rows = await self._fetch(
            "SELECT sha256 FROM photos WHERE forwarded_at_ms IS NULL AND stored_at_ms < $1 "
            "ORDER BY stored_at_ms LIMIT $2", stored_before_ms, max(0, int(limit)))
        return [bytes(row[0]) for row in rows]

    async def mark_photos_forwarded(self, sha256s: Sequence[bytes], now_ms: int) -> int:
        if not sha256s:
            return 0
        return _count(await self._execute(
            "UPDATE photos SET forwarded_at_ms = $1 WHERE sha256 = ANY($2::bytea[]) AND forwarded_at_ms IS NULL",
            now_ms, [bytes(s) for s in sha256s]))

    async def _purgeable_photos(self, forwarded_before_ms: int, limit: int) -> list[bytes]:
        rows = await self._fetch(
            "SELECT sha256 FROM photos ph WHERE forwarded_at_ms < $1 AND purged_at_ms IS NULL "
            "AND NOT EXISTS (SELECT 1 FROM faces f WHERE f.sha256 = ph.sha256) "
            "ORDER BY forwarded_at_ms LIMIT $2", forwarded_before_ms, limit)
        return [bytes(row[0]) for row in rows]

    async def _mark_photos_purged(self, sha256s: list[bytes], now_ms: int) -> None:
        await self._execute("UPDATE photos SET purged_at_ms = $1 WHERE sha256 = ANY($2::bytea[])",
                            now_ms, sha256s)

    async def _punch_photo_sha(self, device_serial: str, record_no: int) -> bytes | None:
        rows = await self._fetch(
            "SELECT p.photo_sha256 FROM punches p JOIN photos ph ON ph.sha256 = p.photo_sha256 "
            "WHERE p.device_serial = $1 AND p.record_no = $2", device_serial, record_no)
        return bytes(rows[0][0]) if rows else None

    # outbox -------------------------------------------------------------------------
    async def claim_outbox(self, limit: int, now_ms: int, lease_ms: int) -> list[OutboxItem]:
        if limit <= 0:
            return []
        async with self._connection() as conn:
            async with conn.transaction():
                candidates = await conn.fetch(_CLAIM_CANDIDATES, now_ms, limit)
                if not candidates:
                    return []
                # Locked by another claimer right now: skipped. The condition is checked
                # again on the newest row version, so rows another claimer leased and
                # committed since the candidate query are not due any more and drop out.
                locked = {row[0] for row in await conn.fetch(
                    "SELECT id FROM outbox WHERE id = ANY($1::bigint[]) AND state = 'pending' "
                    "AND next_attempt_at_ms <= $2 FOR UPDATE SKIP LOCKED",
                    [row[0] for row in candidates], now_ms)}
                keep: list[int] = []
                cut: set[str] = set()  # devices whose run of items another claimer broke
                for item_id, device in candidates:
                    if device in cut:
                        continue
                    if item_id in locked:
                        keep.append(item_id)
                    else:
                        cut.add(device)
                if not keep:
                    return []
                # The punches are read per claimed row, each in its month: a LATERAL
                # subquery with LIMIT 1 (its one punch; the limit keeps the planner from
                # flattening it into a join it may hash, which read every month in full:
                # 300,000 punches: 677 ms against 14-18 ms; `lmg bench punch-months`).
                rows = await conn.fetch(
                    f"WITH o AS (UPDATE outbox SET attempts = attempts + 1, next_attempt_at_ms = $2 "
                    f"WHERE id = ANY($1::bigint[]) RETURNING *) "
                    f"SELECT {_OUTBOX_ITEM_COLUMNS} FROM o CROSS JOIN LATERAL (SELECT * FROM punches "
                    f"WHERE id = o.punch_id AND punch_time_ms = o.punch_time_ms LIMIT 1) p", keep, now_ms + lease_ms)
        items = [_outbox_item(row) for row in rows]
        items.sort(key=lambda item: item.id)
        return items

    async def ack_outbox(self, ids: Sequence[int]) -> int:
        if not ids:
            return 0
        return _count(await self._execute("DELETE FROM outbox WHERE id = ANY($1::bigint[])",
                                          [int(i) for i in ids]))

    async def fail_outbox(self, ids: int | Sequence[int], error: str, next_attempt_at_ms: int) -> int:
        ids = [ids] if isinstance(ids, int) else [int(i) for i in ids]
        return _count(await self._execute(
            "UPDATE outbox SET last_error = $2, next_attempt_at_ms = $3 "
            "WHERE id = ANY($1::bigint[]) AND state = 'pending'", ids, error, next_attempt_at_ms))

    async def dead_letter(self, ids: Sequence[int], reason: str) -> int:
        return _count(await self._execute(
            "UPDATE outbox SET state = 'dead', last_error = $2 "
            "WHERE id = ANY($1::bigint[]) AND state = 'pending'", [int(i) for i in ids], reason))

    async def list_dead_letters(self, *, limit: int = 100, after_id: int = 0) -> list[OutboxItem]:
        rows = await self._fetch(
            f"SELECT {_OUTBOX_ITEM_COLUMNS} FROM outbox o CROSS JOIN LATERAL (SELECT * FROM punches "
            f"WHERE id = o.punch_id AND punch_time_ms = o.punch_time_ms LIMIT 1) p "  # as in claim_outbox
            f"WHERE o.state = 'dead' AND o.id > $2 ORDER BY o.id LIMIT $1", limit, after_id)
        return [_outbox_item(row) for row in rows]

    async def retry_dead_letters(self, ids: Sequence[int] | None = None) -> int:
        now = self.clock_ms()
        if ids is None:
            return _count(await self._execute(
                "UPDATE outbox SET state = 'pending', attempts = 0, next_attempt_at_ms = $1 "
                "WHERE state = 'dead'", now))
        return _count(await self._execute(
            "UPDATE outbox SET state = 'pending', attempts = 0, next_attempt_at_ms = $1 "
            "WHERE id = ANY($2::bigint[]) AND state = 'dead'", now, [int(i) for i in ids]))

    async def outbox_status(self, now_ms: int) -> OutboxStatus:
        rows = await self._fetch(
            "SELECT count(*) FILTER (WHERE state = 'pending'), "
            "min(created_at_ms) FILTER (WHERE state = 'pending'), "
            "count(*) FILTER (WHERE state = 'dead') FROM outbox")
        pending, oldest, dead = rows[0]
        age = max(0.0, (now_ms - oldest) / 1000.0) if oldest is not None else 0.0
        return OutboxStatus(pending=pending, oldest_age_s=age, dead_letters=dead)

    # operator commands --------------------------------------------------------------
    async def enqueue_command(self, serial: str, command_type: int, payload: bytes, *,
                              expires_at_ms: int | None = None, created_by: str = "") -> int:
        check_new_command(command_type, payload, expires_at_ms, created_by)
        async with self._connection() as conn:
            async with conn.transaction():
                command_id = await conn.fetchval(
                    f"INSERT INTO commands ({NEW_COMMAND_COLUMNS}) SELECT serial, $2, $3, $4, $5, $6 "
                    f"FROM devices WHERE serial = $1 RETURNING id",
                    serial, int(command_type), payload, self.clock_ms(), expires_at_ms, created_by)
                if command_id is None:
                    raise UnknownDevice(serial)
                await self._signal(conn, SignalKind.COMMAND, serial, str(command_id))
        return int(command_id)

    async def pending_commands(self, serial: str, limit: int = 16) -> list[Command]:
        check_limit(limit)
        rows = await self._fetch(
            f"SELECT {COMMAND_COLUMNS} FROM commands WHERE device_serial = $1 AND state IN {PENDING} "
            f"AND (expires_at_ms IS NULL OR expires_at_ms > $2) ORDER BY id LIMIT $3",
            serial, self.clock_ms(), limit)
        return [command(row) for row in rows]

    async def get_command(self, command_id: int) -> Command | None:
        rows = await self._fetch(f"SELECT {COMMAND_COLUMNS} FROM commands WHERE id = $1", command_id)
        return command(rows[0]) if rows else None

    async def list_commands(self, *, device_serial: str | None = None, state: CommandState | None = None,
                            after_id: int = 0, limit: int = 100,
                            region_scope: str | None = None) -> list[Command]:
        clause, params = where(command_filters(device_serial, state, after_id, limit)
                               + [scope_filter(region_scope, _CODES_IN, _COMMAND_REGION)], _mark)
        rows = await self._fetch(f"SELECT {COMMAND_COLUMNS} FROM commands{clause} ORDER BY id "
                                 f"LIMIT ${len(params) + 1}", *params, limit)
        return [command(row) for row in rows]

    async def count_commands_by_state(self) -> dict[CommandState, int]:
        rows = await self._fetch("SELECT state, count(*) FROM commands GROUP BY state")
        counts = dict.fromkeys(CommandState, 0)
        counts.update((CommandState(state), n) for state, n in rows)
        return counts

    async def mark_command_sent(self, command_id: int, seq: int, now_ms: int) -> bool:
        check_int("command_id", command_id)
        check_seq(seq)
        check_int("now_ms", now_ms)
        return _count(await self._execute(
            f"UPDATE commands SET state = 'sent', seq = $2, sent_at_ms = $3, attempts = attempts + 1 "
            f"WHERE id = $1 AND state IN {PENDING}", command_id, seq, now_ms)) > 0

    async def complete_command(self, command_id: int, result_code: int | None, *, failed: bool = False,
                               error: str | None = None, reply: bytes | None = None) -> bool:
        check_completion(command_id, result_code, error, reply)
        state = CommandState.FAILED if failed else CommandState.ACKED
        return _count(await self._execute(
            f"UPDATE commands SET state = $2, result_code = $3, error = $4, reply = $5, completed_at_ms = $6 "
            f"WHERE id = $1 AND state IN {PENDING}", command_id, state.value, result_code, error, reply,
            self.clock_ms())) > 0

    async def cancel_command(self, command_id: int) -> bool:
        check_int("command_id", command_id)
        return _count(await self._execute(
            f"UPDATE commands SET state = 'cancelled', completed_at_ms = $2 "
            f"WHERE id = $1 AND state IN {PENDING}", command_id, self.clock_ms())) > 0

    async def expire_commands(self, now_ms: int) -> int:
        check_int("now_ms", now_ms)
        return _count(await self._execute(
            f"UPDATE commands SET state = 'expired', completed_at_ms = $1 "
            f"WHERE state IN {PENDING} AND expires_at_ms <= $1", now_ms))

    # audit --------------------------------------------------------------------------
    async def audit(self, event: str, subject: str, detail: dict[str, Any] | None = None,
                    address: str | None = None) -> int:
        rows = await self._fetch(
            "INSERT INTO audit_log (at_ms, event, subject, detail, address) "
            "VALUES ($1, $2, $3, $4::jsonb, $5) RETURNING id",
            self.clock_ms(), event, subject, orjson.dumps(detail or {}).decode(), address)
        return rows[0][0]

    async def list_audit(
        self, *, limit: int = 100, event: str | None = None, subject: str | None = None,
        since_ms: int | None = None, until_ms: int | None = None, before_id: int | None = None,
    ) -> list[AuditEntry]:
        """See Store.list_audit. `event` and `subject` read through their (x, id) indexes;
        the time bounds alone walk the log newest first until `limit` match."""
        clause, params = where(audit_filters(limit, event, subject, since_ms, until_ms, before_id),
                               _mark)
        rows = await self._fetch(
            f"SELECT id, at_ms, event, subject, detail::text, address FROM audit_log{clause} "
            f"ORDER BY id DESC LIMIT ${len(params) + 1}", *params, limit)
        return [AuditEntry(r[0], r[1], r[2], r[3], orjson.loads(r[4]), r[5]) for r in rows]
