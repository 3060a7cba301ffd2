"""SQLite store: the embedded default (`sqlite:///path/to/lmg.db`).

Processes, threads and connections:
- ONE writer process (storage/sqlite_writer.py) owns the only write connection (plain
  `sqlite3`, autocommit mode, explicit BEGIN IMMEDIATE / COMMIT). Every write is one
  request to it: a whole group-commit batch (multi-row INSERT OR IGNORE, outbox rows,
  COMMIT) is one round trip, never one per statement. It is a process rather than a
  thread because a writer thread shares the GIL with the event loop, and each of its
  SQLite calls had to win the GIL back from a busy loop (see that module).
- `sqlite_readers` read threads in this process, each with its own connection (PRAGMA
  query_only): in WAL mode readers see the last commit and never block the writer, nor
  it them.

Durability: journal_mode=WAL and synchronous=FULL (configurable) by default, so COMMIT
returns after the WAL is fsynced; a caller is answered only after that.

Faults: an sqlite3.OperationalError or DatabaseError in a write (disk full, I/O error,
read-only file, locked) rolls the transaction back, closes the connection and raises
StoreUnavailable to every caller of that call/batch; the next call reopens the
connection (or restarts the writer process if it died), so the store heals by itself
once the fault clears. `WriterFaults` lets tests inject such errors at COMMIT or reopen
the writer read-only (URI mode=ro).

One process writes a database file at a time; a second gateway on the same file is not
supported (use PostgreSQL to scale out).
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import orjson

from lmg.storage.api import (
    DUPLICATE, STORED, ApiToken, AuditEntry, Command, CommandState, Device, Outcome,
    OutboxItem, OutboxStatus, Presence, Punch, PunchIn, PunchListing, PunchOutcome, RejectedPunch,
    SessionEnd, SessionEndReason, check_api_token_name, check_device_fields, check_limit,
    check_token_sha256, wall_clock_ms,
)
from lmg.storage.backend import (
    API_TOKEN_COLUMNS, AUDIT_COLUMNS, COMMAND_COLUMNS, DEVICE_COLUMNS, NEW_DEVICE_COLUMNS,
    PUNCH_COLUMNS, PUNCH_LISTING_SELECT, REJECTED_COLUMNS, SESSION_END_COLUMNS, BackendStore,
    api_token, audit_filters, check_int, device_filters, new_api_token, new_secret, punch_filters,
    punch_listing, session_end, session_end_reason, where,
)
from lmg.storage.blobs import BlobStore
from lmg.storage.config import StoreConfig
from lmg.storage.errors import (
    DeviceExists, StoreClosed, StoreNotFound, StoreUnavailable, TokenExists, UnknownDevice,
)
from lmg.storage.migrations import SQLITE_LEDGER, Migration, load_migrations, plan
from lmg.storage.sqlite_writer import ROWS_PER_STATEMENT, WriterFaults, WriterProcess, is_environmental, unavailable

_INSERT_REJECTED = (f"INSERT OR IGNORE INTO rejected_punches ({REJECTED_COLUMNS}) "
                    f"VALUES (?,?,?,?,?,?,?,?,?,?,?)")
_ROWS_PER_STATEMENT = ROWS_PER_STATEMENT  # the writer sizes its statement cache for these
_PUNCH_FIELDS = 10
_VALUES_ROW = "(?,?,?,?,?,?,?,?,?,?)"
_INSERT_SQL: dict[int, str] = {}  # rows per statement -> its SQL text, built once
# Every punch with an id above the batch's watermark was added by this batch. (A trigger
# would do this per row; measured 1.5-2 ms slower per 500-row batch than this statement.)
_OUTBOX_FROM_WATERMARK = (
    "INSERT INTO outbox (punch_id, device_serial, next_attempt_at_ms, created_at_ms) "
    "SELECT id, device_serial, ?, ? FROM punches WHERE id > ? ORDER BY id"
)
_PUNCH_SELECT = f"SELECT {PUNCH_COLUMNS} FROM punches"
_OUTBOX_ITEM_SELECT = (
    "SELECT o.id, o.attempts, o.next_attempt_at_ms, o.last_error, o.created_at_ms, o.state, "
    "p.device_serial, p.record_no, p.worker_id, p.punch_time_ms, p.direction, p.verify_mode, "
    "p.temperature_dc, p.photo_sha256, p.photo_size, p.received_at_ms "
    "FROM outbox o JOIN punches p ON p.id = o.punch_id"
)
# Claimable: pending, due, and no earlier item of the same device leased or backing off
# (those are the pending items not due yet), so a device's punches leave in order.
_CLAIM = (
    "WITH blocked AS (SELECT device_serial, min(id) AS first_id FROM outbox"
    " WHERE state = 'pending' AND next_attempt_at_ms > :now GROUP BY device_serial) "
    + _OUTBOX_ITEM_SELECT
    + " LEFT JOIN blocked b ON b.device_serial = o.device_serial"
    # The unary + keeps SQLite off the outbox_due index here: walking the primary key in id
    # order stops at LIMIT, while the index made it read and sort every due row first
    # (measured at 200k pending: 50 ms per claim with the index, 4.3 ms without).
    " WHERE +o.state = 'pending' AND +o.next_attempt_at_ms <= :now"
    " AND (b.first_id IS NULL OR o.id < b.first_id) ORDER BY o.id LIMIT :limit"
)


class _Readers:
    """Read connections, one per read thread, opened on first use."""

    def __init__(self, path: Path, config: StoreConfig, threads: int,
                 name: str = "lmg-sqlite-read") -> None:
        self.path = path
        self.config = config
        self._executor = ThreadPoolExecutor(threads, thread_name_prefix=name)
        self._local = threading.local()
        self._lock = threading.Lock()
        self._all: list[sqlite3.Connection] = []

    def _call(self, fn: Callable[..., Any], args: tuple) -> Any:
        conn = getattr(self._local, "conn", None)
        try:
            if conn is None:
                conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
                conn.execute(f"PRAGMA busy_timeout={int(self.config.sqlite_busy_timeout_ms)}")
                conn.execute("PRAGMA query_only=ON")
                self._local.conn = conn
                with self._lock:
                    self._all.append(conn)
            return fn(conn, *args)
        except sqlite3.Error as exc:
            if is_environmental(exc):
                self._local.conn = None
                if conn is not None:
                    with self._lock:
                        if conn in self._all:
                            self._all.remove(conn)
                    conn.close()
                raise unavailable(self.path, exc) from exc
            raise

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._call, fn, args)

    async def close(self) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self._executor.shutdown, True)
        with self._lock:
            for conn in self._all:
                conn.close()
            self._all.clear()


# ----------------------------------------------------------------- writer-process work
# Module-level functions `fn(conn, *args)`: requests name them by reference (pickle).

# Punches reach the writer process as plain PunchIn field tuples (see _write_punches) and
# are read there by these positions, taken from the type rather than written as numbers:
# the reject reason, the identity, and the row (PunchIn's fields before the reject reason
# are the punches-table columns in order, tests/storage/test_punch_in.py checks it).
_REJECT_REASON = PunchIn._fields.index("reject_reason")
_ROW_END = _REJECT_REASON
_SERIAL, _RECORD_NO = PunchIn._fields.index("device_serial"), PunchIn._fields.index("record_no")


def _write_punches(conn: sqlite3.Connection, records: list[tuple], now_ms: int) -> list[PunchOutcome]:
    """One group-commit batch, inside the writer's transaction; one outcome per record.

    `records` are PunchIn field tuples, plain: a PunchIn costs ten times as much to
    pickle (its checked constructor runs again on the way in). The common case (no
    duplicates, nothing rejected) does one pass building the flat parameter list and
    works out per-record outcomes only when the counts say something was skipped.
    """
    params: list = []
    extend = params.extend
    rejected: list[tuple] = []
    append = params.append
    reason_at, row_end = _REJECT_REASON, _ROW_END
    for r in records:
        if r[reason_at] is None:
            extend(r[:row_end])
            append(now_ms)
        else:
            rejected.append((*r, now_ms))  # every PunchIn field is a rejected_punches column, in order
    accepted = len(params) // _PUNCH_FIELDS
    inserted = 0
    watermark = 0
    if accepted:
        # The single writer makes this exact: SQLite gives each new row max(id) + 1, so
        # the rows this batch added are exactly those above the watermark; they and only
        # they enter the outbox, in this transaction.
        watermark = conn.execute("SELECT coalesce(max(id), 0) FROM punches").fetchone()[0]
        inserted = _insert_punches(conn, params, accepted)
        if inserted:
            conn.execute(_OUTBOX_FROM_WATERMARK, (now_ms, now_ms, watermark))
    if rejected:
        conn.executemany(_INSERT_REJECTED, rejected)
    if inserted == len(records):
        return [STORED] * inserted  # no rejects and no duplicate, not even within the batch
    added = None
    if inserted != accepted:
        added = set(conn.execute(
            "SELECT device_serial, record_no FROM punches WHERE id > ?", (watermark,)))
    outcomes: list[PunchOutcome] = []
    seen: set[tuple[str, int]] = set()
    for r in records:
        if r[_REJECT_REASON] is not None:
            outcomes.append(PunchOutcome(Outcome.REJECTED, r[_REJECT_REASON]))
            continue
        key = (r[_SERIAL], r[_RECORD_NO])
        if key in seen or (added is not None and key not in added):
            outcomes.append(DUPLICATE)
        else:
            outcomes.append(STORED)
        seen.add(key)
    return outcomes


def _insert_punches(conn: sqlite3.Connection, params: list, rows: int) -> int:
    """INSERT OR IGNORE `rows` rows from the flat `params`; return how many were added.

    Not executemany: it returns to Python after every row (a bind, a step, a reset); a
    multi-row statement is one sqlite3_step for up to _ROWS_PER_STATEMENT rows.
    """
    added = 0
    for first in range(0, rows, _ROWS_PER_STATEMENT):
        count = min(_ROWS_PER_STATEMENT, rows - first)
        sql = _INSERT_SQL.get(count)
        if sql is None:
            sql = _INSERT_SQL[count] = (f"INSERT OR IGNORE INTO punches ({PUNCH_COLUMNS}) VALUES "
                                        + ",".join([_VALUES_ROW] * count))
        chunk = params[first * _PUNCH_FIELDS:(first + count) * _PUNCH_FIELDS]
        added += conn.execute(sql, chunk).rowcount
    return added


def _rowcount(conn: sqlite3.Connection, sql: str, params: Sequence[Any]) -> int:
    return conn.execute(sql, params).rowcount


def _rowcount_many(conn: sqlite3.Connection, sql: str, rows: Sequence[Sequence[Any]]) -> int:
    return conn.executemany(sql, rows).rowcount


def _lastrowid(conn: sqlite3.Connection, sql: str, params: Sequence[Any]) -> int:
    rowid = conn.execute(sql, params).lastrowid
    if rowid is None:  # sqlite3 gives None only for a statement that is not an INSERT
        raise RuntimeError(f"not an INSERT: {sql}")
    return rowid


def _scalar(conn: sqlite3.Connection, sql: str, params: Sequence[Any] = ()) -> Any:
    """The first column of the first row (PRAGMAs in tests, for instance)."""
    row = conn.execute(sql, params).fetchone()
    return row[0] if row is not None else None


def _insert_device(conn: sqlite3.Connection, row: tuple) -> None:
    try:
        conn.execute(f"INSERT INTO devices ({NEW_DEVICE_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?)", row)
    except sqlite3.IntegrityError as exc:
        raise DeviceExists(row[0]) from exc


_INSERT_SESSION_END = ("INSERT INTO session_ends (device_serial, reason, created_at_ms) "
                       "VALUES (?, ?, ?) RETURNING id")


def _change_device_ending_sessions(conn: sqlite3.Connection, sql: str, params: Sequence[Any],
                                   serial: str, reason: str, now_ms: int) -> int:
    """Change a device and add its session end, in the writer's one transaction; the id.
    Raises UnknownDevice (rolling back) if `sql` changed no row."""
    if not conn.execute(sql, params).rowcount:
        raise UnknownDevice(serial)
    return conn.execute(_INSERT_SESSION_END, (serial, reason, now_ms)).fetchone()[0]


def _end_sessions(conn: sqlite3.Connection, serial: str, reason: str, now_ms: int) -> int:
    row = conn.execute("INSERT INTO session_ends (device_serial, reason, created_at_ms) "
                       "SELECT serial, ?, ? FROM devices WHERE serial = ? RETURNING id",
                       (reason, now_ms, serial)).fetchone()
    if row is None:
        raise UnknownDevice(serial)
    return row[0]


def _insert_api_token(conn: sqlite3.Connection, row: tuple) -> None:
    # Looked up first, in the same transaction, to tell a taken name from a taken hash.
    if conn.execute("SELECT 1 FROM api_tokens WHERE name = ?", (row[0],)).fetchone() is not None:
        raise TokenExists(row[0])
    try:
        conn.execute(f"INSERT INTO api_tokens ({API_TOKEN_COLUMNS}) VALUES (?,?,?,?,?,?,?)", row)
    except sqlite3.IntegrityError as exc:
        raise ValueError("token_sha256: another token has this hash; generate a new token") from exc


def _claim_outbox(conn: sqlite3.Connection, now_ms: int, limit: int, until: int) -> list[OutboxItem]:
    rows = conn.execute(_CLAIM, {"now": now_ms, "limit": limit}).fetchall()
    conn.executemany("UPDATE outbox SET attempts = attempts + 1, next_attempt_at_ms = ? WHERE id = ?",
                     [(until, row[0]) for row in rows])
    return [_outbox_item((row[0], row[1] + 1, until) + row[3:]) for row in rows]


def _migrate(conn: sqlite3.Connection, migrations: tuple[Migration, ...], where: str,
             now_ms: int) -> int:
    conn.execute(SQLITE_LEDGER)
    current = conn.execute("SELECT coalesce(max(version), 0) FROM schema_migrations").fetchone()[0]
    for migration in plan(current, migrations, where):
        try:
            conn.executescript(
                "BEGIN IMMEDIATE;\n" + migration.sql
                + f"\nINSERT INTO schema_migrations (version, name, applied_at_ms) "
                  f"VALUES ({migration.version}, '{migration.name}', {int(now_ms)});\nCOMMIT;"
            )
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        current = migration.version
    return current


def _device(row: tuple) -> Device:
    return Device(row[0], row[1], row[2], row[3], bool(row[4]), row[5], bool(row[6]), row[7],
                  row[8], row[9], row[10])


def _audit_entry(row: tuple) -> AuditEntry:
    return AuditEntry(row[0], row[1], row[2], row[3], orjson.loads(row[4]), row[5])


def _mark(_: int) -> str:
    return "?"


def _command(row: tuple) -> Command:
    return Command(row[0], row[1], row[2], row[3], CommandState(row[4]), *row[5:])


def _outbox_item(row: tuple) -> OutboxItem:
    return OutboxItem(id=row[0], attempts=row[1], next_attempt_at_ms=row[2], last_error=row[3],
                      created_at_ms=row[4], dead=row[5] == "dead", punch=Punch(*row[6:]))


class SqliteStore(BackendStore):
    """The embedded store. Open with `await SqliteStore.open(path, data_dir=...)`."""

    dialect = "sqlite"

    def __init__(self, path: Path, *, data_dir: str | os.PathLike[str], config: StoreConfig,
                 clock_ms: Callable[[], int], blobs: BlobStore | None) -> None:
        super().__init__(data_dir=data_dir, config=config, clock_ms=clock_ms, blobs=blobs,
                         batches_in_flight=config.group_commit_batches_in_flight_sqlite)
        self.path = path
        self.url = f"sqlite:///{path}"
        self.faults = WriterFaults()
        self._writer = WriterProcess(path, config, self.faults)
        self._readers = _Readers(path, config, config.sqlite_readers)
        # Operators' listings (punches, audit) read on a thread of their own: a filter
        # that walks a large table holds its connection for a while, and the gateway's
        # reads (a reconnect storm's devices) must never queue behind it.
        self._scans = _Readers(path, config, 1, "lmg-sqlite-scan")

    @classmethod
    async def open(
        cls, path: str | os.PathLike[str], *, data_dir: str | os.PathLike[str] | None = None,
        config: StoreConfig | None = None, migrations: tuple[Migration, ...] | None = None,
        clock_ms: Callable[[], int] = wall_clock_ms, blobs: BlobStore | None = None,
        create: bool = True,
    ) -> SqliteStore:
        """Open (creating if missing, unless `create` is False) and migrate the database at `path`.

        Raises StoreNotFound (create=False and no file there: nothing is created),
        SchemaTooNew, StoreUnavailable (cannot create/open/write the file).
        """
        path = Path(path)
        if not create and not path.is_file():
            raise StoreNotFound(str(path))
        data_dir = Path(data_dir) if data_dir is not None else path.parent
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreUnavailable(
                f"cannot create the directory {path.parent} for the SQLite store: {exc}; "
                f"choose a writable --data-dir or --store"
            ) from exc
        store = cls(path, data_dir=data_dir, config=config or StoreConfig(), clock_ms=clock_ms,
                    blobs=blobs)
        try:
            await store._writer.run(_migrate, migrations or load_migrations("sqlite"), str(path),
                                    clock_ms())
        except BaseException:
            await store.close()
            raise
        return store

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self._close_group()
        await self._writer.close()
        await self._readers.close()
        await self._scans.close()

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosed("the store is closed")

    async def _write(self, fn: Callable[..., Any], *args: Any) -> Any:
        self._check_open()
        return await self._writer.write(fn, *args)

    async def _read(self, fn: Callable[..., Any], *args: Any) -> Any:
        self._check_open()
        return await self._readers.run(fn, *args)

    async def _query(self, sql: str, params: Sequence[Any] | dict = ()) -> list[tuple]:
        return await self._read(lambda conn: conn.execute(sql, params).fetchall())

    async def schema_version(self) -> int:
        rows = await self._query("SELECT coalesce(max(version), 0) FROM schema_migrations")
        return rows[0][0]

    # punches ------------------------------------------------------------------------
    async def _commit_punches(self, records: list[PunchIn]) -> list[PunchOutcome]:
        return await self._writer.write(_write_punches, [tuple(r) for r in records], self.clock_ms())

    async def count_punches(self, device_serial: str | None = None) -> int:
        if device_serial is None:
            rows = await self._query("SELECT count(*) FROM punches")
        else:
            rows = await self._query("SELECT count(*) FROM punches WHERE device_serial = ?",
                                     (device_serial,))
        return rows[0][0]

    async def get_punch(self, device_serial: str, record_no: int) -> Punch | None:
        rows = await self._query(f"{_PUNCH_SELECT} WHERE device_serial = ? AND record_no = ?",
                                 (device_serial, record_no))
        return Punch(*rows[0]) if rows else None

    async def iter_punches(self, device_serial: str | None = None) -> AsyncIterator[Punch]:
        page = 1000  # rows per read hop: one hop costs ~50 µs, a row ~1 µs
        after: tuple[str, int] = ("", -1)
        while True:
            if device_serial is None:
                rows = await self._query(
                    f"{_PUNCH_SELECT} WHERE (device_serial, record_no) > (?, ?) "
                    f"ORDER BY device_serial, record_no LIMIT {page}", after)
            else:
                rows = await self._query(
                    f"{_PUNCH_SELECT} WHERE device_serial = ? AND record_no > ? "
                    f"ORDER BY record_no LIMIT {page}", (device_serial, after[1]))
            for row in rows:
                yield Punch(*row)
            if len(rows) < page:
                return
            after = (rows[-1][0], rows[-1][1])

    async def list_rejected_punches(self, *, limit: int = 100) -> list[RejectedPunch]:
        rows = await self._query(
            f"SELECT {REJECTED_COLUMNS} FROM rejected_punches ORDER BY id DESC LIMIT ?", (limit,))
        return [RejectedPunch(*row) for row in rows]

    async def list_punches(
        self, *, project_code: str | None = None, device_serial: str | None = None,
        worker_id: str | None = None, since_ms: int | None = None, until_ms: int | None = None,
        after_id: int = 0, limit: int = 1000,
    ) -> list[PunchListing]:
        """See Store.list_punches.

        No index beyond the punches table's two keys serves these filters: one on
        worker_id cost 4-12% of the store's write rate in `lmg bench storage` (16% of
        raw inserts; docs/storage.md), and these are operators' reads. So `worker_id`
        and the time bounds scan: punches are read in id order from `after_id` on until
        `limit` match, and when few match that is every punch after the cursor (1M rows:
        about 0.1 s here). `device_serial`, and `project_code` through its devices, read
        those devices' punches through the (device_serial, record_no) key and sort them
        by id (a device's 1,000 punches: ~13 ms). Runs on the scan thread, so a long
        scan never delays the gateway's reads."""
        conditions = punch_filters(project_code, device_serial, worker_id, since_ms, until_ms,
                                   after_id, limit)
        clause, params = where(conditions, _mark)
        self._check_open()
        rows = await self._scans.run(
            lambda conn: conn.execute(f"{PUNCH_LISTING_SELECT}{clause} ORDER BY p.id LIMIT ?",
                                      (*params, limit)).fetchall())
        return [punch_listing(row) for row in rows]

    # devices ------------------------------------------------------------------------
    async def add_device(self, serial: str, *, project_code: str, region_code: str,
                         secret: bytes | None = None, firmware: str = "") -> Device:
        check_device_fields(serial, project_code, region_code)
        secret = new_secret(secret)
        device = Device(serial, secret, project_code, region_code, True, None, False, firmware, 0,
                        self.clock_ms())

        await self._write(_insert_device, (device.serial, device.secret, device.project_code,
                                           device.region_code, 1, None, 0, device.firmware, 0,
                                           device.created_at_ms))
        return device

    async def get_device(self, serial: str) -> Device | None:
        rows = await self._query(f"SELECT {DEVICE_COLUMNS} FROM devices WHERE serial = ?", (serial,))
        return _device(rows[0]) if rows else None

    async def get_devices(self, serials: Sequence[str]) -> dict[str, Device]:
        if not serials:
            return {}
        # One statement for any number of serials: a JSON array is one bound parameter,
        # so the statement is cached once instead of once per IN-list length, and there
        # is no 32,766-parameter ceiling. The plan is a primary-key search per serial.
        rows = await self._query(
            f"SELECT {DEVICE_COLUMNS} FROM devices WHERE serial IN (SELECT value FROM json_each(?))",
            (orjson.dumps(list(serials)).decode(),))
        return {row[0]: _device(row) for row in rows}

    async def list_devices(
        self, *, after_serial: str = "", limit: int = 1000, project_code: str | None = None,
        region_code: str | None = None, online: bool | None = None,
    ) -> list[Device]:
        clause, params = where(device_filters(after_serial, limit, project_code, region_code, online),
                               _mark)
        rows = await self._query(
            f"SELECT {DEVICE_COLUMNS} FROM devices{clause} ORDER BY serial LIMIT ?", (*params, limit))
        return [_device(row) for row in rows]

    async def set_device_enabled(self, serial: str, enabled: bool) -> None:
        if enabled:
            if not await self._write(_rowcount, "UPDATE devices SET enabled = 1 WHERE serial = ?",
                                     (serial,)):
                raise UnknownDevice(serial)
            return
        await self._write(_change_device_ending_sessions,
                          "UPDATE devices SET enabled = 0 WHERE serial = ?", (serial,),
                          serial, SessionEndReason.DISABLED.value, self.clock_ms())

    async def rotate_device_secret(self, serial: str, secret: bytes | None = None) -> bytes:
        secret = new_secret(secret)
        await self._write(_change_device_ending_sessions,
                          "UPDATE devices SET secret = ? WHERE serial = ?", (secret, serial),
                          serial, SessionEndReason.SECRET_ROTATED.value, self.clock_ms())
        return secret

    async def update_presence(self, updates: Sequence[Presence]) -> int:
        if not updates:
            return 0
        rows = [(u.last_seen_ms, int(u.online), u.firmware, u.roster_version, u.address, u.serial)
                for u in updates]

        return await self._write(
            _rowcount_many, "UPDATE devices SET last_seen_ms = ?, online = ?, firmware = coalesce(?, firmware), "
            "roster_version = coalesce(?, roster_version), last_address = coalesce(?, last_address) "
            "WHERE serial = ?", rows)

    # the session-end signal ---------------------------------------------------------
    async def end_device_sessions(self, serial: str, reason: SessionEndReason) -> int:
        reason = session_end_reason(reason)
        return await self._write(_end_sessions, serial, reason.value, self.clock_ms())

    async def session_ends_after(self, after_id: int, limit: int = 1000) -> list[SessionEnd]:
        check_limit(limit)
        check_int("after_id", after_id)
        rows = await self._query(f"SELECT {SESSION_END_COLUMNS} FROM session_ends WHERE id > ? "
                                 f"ORDER BY id LIMIT ?", (after_id, limit))
        return [session_end(row) for row in rows]

    async def last_session_end_id(self) -> int:
        rows = await self._query("SELECT coalesce(max(id), 0) FROM session_ends")
        return rows[0][0]

    async def prune_session_ends(self, older_than_ms: int) -> int:
        check_int("older_than_ms", older_than_ms)
        return await self._write(_rowcount, "DELETE FROM session_ends WHERE created_at_ms < ?",
                                 (older_than_ms,))

    async def listen_session_ends(
        self, callback: Callable[[int], None], *, on_lost: Callable[[], None] | None = None,
    ) -> Callable[[], Awaitable[None]] | None:
        return None  # one writer, no channel to other processes: readers poll session_ends_after

    # API tokens ---------------------------------------------------------------------
    async def create_api_token(
        self, name: str, token_sha256: bytes, scopes: Iterable[str], *,
        region_code: str | None = None, created_by: str = "",
    ) -> ApiToken:
        token, scopes_stored = new_api_token(name, token_sha256, scopes, region_code, created_by,
                                             self.clock_ms())
        await self._write(_insert_api_token, (token.name, token.token_sha256, scopes_stored,
                                              token.region_code, token.created_at_ms, None,
                                              token.created_by))
        return token

    async def get_api_token_by_hash(self, token_sha256: bytes) -> ApiToken | None:
        check_token_sha256(token_sha256)
        rows = await self._query(f"SELECT {API_TOKEN_COLUMNS} FROM api_tokens WHERE token_sha256 = ?",
                                 (token_sha256,))
        return api_token(rows[0]) if rows else None

    async def list_api_tokens(self) -> list[ApiToken]:
        rows = await self._query(f"SELECT {API_TOKEN_COLUMNS} FROM api_tokens ORDER BY name")
        return [api_token(row) for row in rows]

    async def revoke_api_token(self, name: str) -> bool:
        check_api_token_name(name)
        return bool(await self._write(
            _rowcount,
            "UPDATE api_tokens SET revoked_at_ms = ? WHERE name = ? AND revoked_at_ms IS NULL",
            (self.clock_ms(), name)))

    async def count_active_api_tokens(self) -> int:
        rows = await self._query("SELECT count(*) FROM api_tokens WHERE revoked_at_ms IS NULL")
        return rows[0][0]

    # photos -------------------------------------------------------------------------
    async def _photo_size(self, sha256: bytes) -> int | None:
        rows = await self._query("SELECT size FROM photos WHERE sha256 = ?", (sha256,))
        return rows[0][0] if rows else None

    async def _record_photo(self, sha256: bytes, size: int) -> None:
        now = self.clock_ms()
        await self._write(_rowcount, "INSERT OR IGNORE INTO photos (sha256, size, stored_at_ms) VALUES (?, ?, ?)",
                          (sha256, size, now))

    async def unforwarded_photos(self, stored_before_ms: int, limit: int) -> list[bytes]:
        rows = await self._query(
            "SELECT sha256 FROM photos WHERE forwarded_at_ms IS NULL AND stored_at_ms < ? "
            "ORDER BY stored_at_ms LIMIT ?", (stored_before_ms, max(0, int(limit))))
        return [row[0] for row in rows]

    async def mark_photos_forwarded(self, sha256s: Sequence[bytes], now_ms: int) -> int:
        if not sha256s:
            return 0
        return await self._write(_rowcount_many, "UPDATE photos SET forwarded_at_ms = ? "
                                 "WHERE sha256 = ? AND forwarded_at_ms IS NULL", [(now_ms, sha) for sha in sha256s])

    async def _punch_photo_sha(self, device_serial: str, record_no: int) -> bytes | None:
        rows = await self._query(
            "SELECT p.photo_sha256 FROM punches p JOIN photos ph ON ph.sha256 = p.photo_sha256 "
            "WHERE p.device_serial = ? AND p.record_no = ?", (device_serial, record_no))
        return rows[0][0] if rows else None

    # outbox -------------------------------------------------------------------------
    async def claim_outbox(self, limit: int, now_ms: int, lease_ms: int) -> list[OutboxItem]:
        if limit <= 0:
            return []
        return await self._write(_claim_outbox, now_ms, limit, now_ms + lease_ms)

    async def ack_outbox(self, ids: Sequence[int]) -> int:
        if not ids:
            return 0
        params = [(int(i),) for i in ids]
        return await self._write(_rowcount_many, "DELETE FROM outbox WHERE id = ?", params)

    async def fail_outbox(self, ids: int | Sequence[int], error: str, next_attempt_at_ms: int) -> int:
        ids = [ids] if isinstance(ids, int) else list(ids)
        params = [(error, next_attempt_at_ms, int(i)) for i in ids]
        return await self._write(_rowcount_many, "UPDATE outbox SET last_error = ?, next_attempt_at_ms = ? "
                                 "WHERE id = ? AND state = 'pending'", params)

    async def dead_letter(self, ids: Sequence[int], reason: str) -> int:
        params = [(reason, int(i)) for i in ids]
        return await self._write(
            _rowcount_many, "UPDATE outbox SET state = 'dead', last_error = ? WHERE id = ? AND state = 'pending'",
            params)

    async def list_dead_letters(self, *, limit: int = 100, after_id: int = 0) -> list[OutboxItem]:
        rows = await self._query(
            f"{_OUTBOX_ITEM_SELECT} WHERE o.state = 'dead' AND o.id > ? ORDER BY o.id LIMIT ?", (after_id, limit))
        return [_outbox_item(row) for row in rows]

    async def retry_dead_letters(self, ids: Sequence[int] | None = None) -> int:
        now = self.clock_ms()
        if ids is None:
            return await self._write(_rowcount, "UPDATE outbox SET state = 'pending', attempts = 0, "
                                     "next_attempt_at_ms = ? WHERE state = 'dead'", (now,))
        params = [(now, int(i)) for i in ids]
        return await self._write(_rowcount_many, "UPDATE outbox SET state = 'pending', attempts = 0, "
                                 "next_attempt_at_ms = ? WHERE id = ? AND state = 'dead'", params)

    async def outbox_status(self, now_ms: int) -> OutboxStatus:
        def status(conn: sqlite3.Connection) -> OutboxStatus:
            pending, oldest = conn.execute(
                "SELECT count(*), min(created_at_ms) FROM outbox WHERE state = 'pending'").fetchone()
            dead = conn.execute("SELECT count(*) FROM outbox WHERE state = 'dead'").fetchone()[0]
            age = max(0.0, (now_ms - oldest) / 1000.0) if oldest is not None else 0.0
            return OutboxStatus(pending=pending, oldest_age_s=age, dead_letters=dead)

        return await self._read(status)

    # downlink commands ---------------------------------------------------------------
    async def enqueue_command(self, serial: str, command_type: int, payload: bytes, *,
                              expires_at_ms: int | None = None) -> int:
        now = self.clock_ms()
        return await self._write(
            _lastrowid, "INSERT INTO commands (device_serial, command_type, payload, created_at_ms, expires_at_ms) "
            "VALUES (?, ?, ?, ?, ?)", (serial, command_type, bytes(payload), now, expires_at_ms))

    async def pending_commands(self, serial: str, limit: int = 16) -> list[Command]:
        rows = await self._query(
            f"SELECT {COMMAND_COLUMNS} FROM commands WHERE device_serial = ? "
            f"AND state IN ('queued', 'sent') ORDER BY id LIMIT ?", (serial, limit))
        return [_command(row) for row in rows]

    async def get_command(self, command_id: int) -> Command | None:
        rows = await self._query(f"SELECT {COMMAND_COLUMNS} FROM commands WHERE id = ?", (command_id,))
        return _command(rows[0]) if rows else None

    async def _update_command(self, sql: str, params: tuple) -> bool:
        return bool(await self._write(_rowcount, sql, params))

    async def mark_command_sent(self, command_id: int, seq: int) -> bool:
        return await self._update_command(
            "UPDATE commands SET state = 'sent', seq = ?, sent_at_ms = ? "
            "WHERE id = ? AND state IN ('queued', 'sent')", (seq, self.clock_ms(), command_id))

    async def complete_command(self, command_id: int, result_code: int) -> bool:
        return await self._update_command(
            "UPDATE commands SET state = 'done', result_code = ?, completed_at_ms = ? "
            "WHERE id = ? AND state IN ('queued', 'sent')", (result_code, self.clock_ms(), command_id))

    async def cancel_command(self, command_id: int) -> bool:
        return await self._update_command(
            "UPDATE commands SET state = 'cancelled', completed_at_ms = ? "
            "WHERE id = ? AND state IN ('queued', 'sent')", (self.clock_ms(), command_id))

    async def expire_commands(self, now_ms: int) -> int:
        return await self._write(_rowcount, "UPDATE commands SET state = 'expired', completed_at_ms = ? "
                                 "WHERE state IN ('queued', 'sent') AND expires_at_ms <= ?", (now_ms, now_ms))

    # audit --------------------------------------------------------------------------
    async def audit(self, event: str, subject: str, detail: dict[str, Any] | None = None,
                    address: str | None = None) -> int:
        text = orjson.dumps(detail or {}).decode()
        now = self.clock_ms()
        return await self._write(_lastrowid, "INSERT INTO audit_log (at_ms, event, subject, detail, address) "
                                 "VALUES (?, ?, ?, ?, ?)", (now, event, subject, text, address))

    async def list_audit(
        self, *, limit: int = 100, event: str | None = None, subject: str | None = None,
        since_ms: int | None = None, until_ms: int | None = None, before_id: int | None = None,
    ) -> list[AuditEntry]:
        """See Store.list_audit. `event` and `subject` read through their (x, id) indexes;
        the time bounds alone walk the log newest first until `limit` match."""
        clause, params = where(audit_filters(limit, event, subject, since_ms, until_ms, before_id),
                               _mark)
        self._check_open()
        rows = await self._scans.run(
            lambda conn: conn.execute(f"SELECT {AUDIT_COLUMNS} FROM audit_log{clause} "
                                      f"ORDER BY id DESC LIMIT ?", (*params, limit)).fetchall())
        return [_audit_entry(row) for row in rows]

