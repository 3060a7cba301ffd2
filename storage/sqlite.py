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
supported (use PostgreSQL to scale out). The one writer also orders what PostgreSQL needs
locks for: a project's roster versions and the signals' ids are handed out and committed
one transaction at a time. A command such as `lmg roster import` opens its own store, and
so its own writer, beside the gateway's: its transaction waits for the write lock
(`sqlite_busy_timeout_ms`) and punch commits wait for it in turn.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from pathlib import Path
from typing import Any

import orjson

from lmg.storage.api import (
    DUPLICATE, STORED, ApiToken, AuditEntry, Command, CommandState, Device, ImportResult, Outcome,
    OutboxItem, OutboxStatus, Presence, Project, Punch, PunchIn, PunchListing, PunchOutcome,
    RejectedPunch, SessionEndReason, Signal, SignalKind, UpsertOutcome, Worker, WorkerIn,
    check_api_token_name, check_day, check_device_fields, check_limit, check_project_code,
    check_token_sha256, check_version, wall_clock_ms,
)
from lmg.storage.backend import (
    API_TOKEN_COLUMNS, AUDIT_COLUMNS, COMMAND_COLUMNS, DEVICE_COLUMNS, NEW_COMMAND_COLUMNS,
    NEW_DEVICE_COLUMNS, PENDING, PROJECT_COLUMNS, PUNCH_COLUMNS, PUNCH_LISTING_SELECT, REJECTED_COLUMNS,
    SIGNAL_COLUMNS, WORKER_COLUMNS, WORKER_UPDATE, BackendStore, api_token, api_token_row, audit_filters,
    check_completion, check_face_sha, check_int, check_new_command, check_offset,
    check_roster_page, check_seq, checked_workers, command, command_filters, device_filters,
    missing_face, new_api_token, new_project, new_secret, project, project_filters, punch_filters,
    punch_listing, same_project, session_end_reason, scope_filter, signal, where, worker,
)
from lmg.storage.blobs import BlobStore
from lmg.storage.config import StoreConfig
from lmg.storage.errors import (
    DeviceExists, ProjectExists, StoreClosed, StoreNotFound, StoreUnavailable, TokenExists,
    UnknownDevice, UnknownProject,
)
from lmg.storage.migrations import SQLITE_LEDGER, Migration, load_migrations, plan
from lmg.storage.roster import RosterPlan, WorkerFields, plan_dates, plan_import, plan_removal, prune_floor
from lmg.storage.sqlite_console import SqliteConsole
from lmg.storage.sqlite_supervision import SqliteSupervision
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


def _signal(conn: sqlite3.Connection, kind: SignalKind, subject: str, detail: str, now_ms: int) -> int:
    """Add a signal inside the writer's transaction; its id (the one writer commits ids in order)."""
    return conn.execute("INSERT INTO signals (kind, subject, detail, created_at_ms) VALUES (?, ?, ?, ?) "
                        "RETURNING id", (kind.value, subject, detail, now_ms)).fetchone()[0]


def _change_device_ending_sessions(conn: sqlite3.Connection, sql: str, params: Sequence[Any],
                                   serial: str, reason: str, now_ms: int) -> int:
    """Change a device and signal its session end, in the writer's one transaction; the
    signal's id. Raises UnknownDevice (rolling back) if `sql` changed no row."""
    if not conn.execute(sql, params).rowcount:
        raise UnknownDevice(serial)
    return _signal(conn, SignalKind.SESSION_END, serial, reason, now_ms)


def _end_sessions(conn: sqlite3.Connection, serial: str, reason: str, now_ms: int) -> int:
    if conn.execute("SELECT 1 FROM devices WHERE serial = ?", (serial,)).fetchone() is None:
        raise UnknownDevice(serial)
    return _signal(conn, SignalKind.SESSION_END, serial, reason, now_ms)


def _enqueue_command(conn: sqlite3.Connection, row: tuple) -> int:
    """Queue a command (row: NEW_COMMAND_COLUMNS) and signal it; its id."""
    found = conn.execute(f"INSERT INTO commands ({NEW_COMMAND_COLUMNS}) SELECT serial, ?, ?, ?, ?, ? "
                         f"FROM devices WHERE serial = ? RETURNING id", (*row[1:], row[0])).fetchone()
    if found is None:
        raise UnknownDevice(row[0])
    _signal(conn, SignalKind.COMMAND, row[0], str(found[0]), row[3])
    return found[0]


# The roster: every call is one transaction of the writer, which also makes the project's
# versions consecutive and committed in order (one writer).

def _iso(day: date | None) -> str | None:
    return None if day is None else day.isoformat()


def _project_row(p: Project) -> tuple:
    return (p.code, p.name, p.region_code, p.enterprise, p.enterprise_uscc, _iso(p.start_date),
            _iso(p.end_date), p.roster_version, p.created_at_ms, p.roster_floor)


def _insert_project(conn: sqlite3.Connection, p: Project) -> None:
    try:
        conn.execute(f"INSERT INTO projects ({PROJECT_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?)",
                     _project_row(p))
    except sqlite3.IntegrityError as exc:
        raise ProjectExists(p.code) from exc


def _upsert_project(conn: sqlite3.Connection, p: Project) -> tuple[Project, UpsertOutcome]:
    row = conn.execute(f"SELECT {PROJECT_COLUMNS} FROM projects WHERE code = ?", (p.code,)).fetchone()
    if row is None:
        _insert_project(conn, p)
        return p, "added"
    stored = project(row)
    if same_project(stored, p):
        return stored, "unchanged"
    conn.execute("UPDATE projects SET name = ?, region_code = ?, enterprise = ?, enterprise_uscc = ?, "
                 "start_date = ?, end_date = ? WHERE code = ?",
                 (p.name, p.region_code, p.enterprise, p.enterprise_uscc, _iso(p.start_date),
                  _iso(p.end_date), p.code))
    return project(conn.execute(f"SELECT {PROJECT_COLUMNS} FROM projects WHERE code = ?",
                                (p.code,)).fetchone()), "updated"


def _roster_version(conn: sqlite3.Connection, project_code: str) -> int:
    row = conn.execute("SELECT roster_version FROM projects WHERE code = ?", (project_code,)).fetchone()
    if row is None:
        raise UnknownProject(project_code)
    return row[0]


def _write_plan(conn: sqlite3.Connection, project_code: str, before: int, roster: RosterPlan,
                now_ms: int) -> None:
    """Write the plan's rows, the project's new version and its ROSTER signal if it moved."""
    conn.executemany(
        f"INSERT INTO workers ({WORKER_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?) "
        f"ON CONFLICT (project_code, worker_id) DO UPDATE SET {WORKER_UPDATE}",
        [(w.project_code, w.worker_id, w.name, w.card_no, w.enterprise, w.team, w.post,
          _iso(w.entry_date), _iso(w.exit_date), w.face_sha256, int(w.on_roster), w.version,
          w.added_version, w.face_version, w.updated_at_ms) for w in roster.writes])
    if roster.version != before:
        conn.execute("UPDATE projects SET roster_version = ? WHERE code = ?", (roster.version, project_code))
        _signal(conn, SignalKind.ROSTER, project_code, str(roster.version), now_ms)


def _import_workers(conn: sqlite3.Connection, project_code: str, rows: list[WorkerFields], today: date,
                    now_ms: int) -> ImportResult:
    version = _roster_version(conn, project_code)
    faces = {fields[8] for fields in rows if fields[8] is not None}
    missing_face(rows, {sha for sha in faces
                        if conn.execute("SELECT 1 FROM faces WHERE sha256 = ?", (sha,)).fetchone()})
    ids = orjson.dumps([fields[0] for fields in rows]).decode()
    stored = {w.worker_id: w for w in map(worker, conn.execute(
        f"SELECT {WORKER_COLUMNS} FROM workers WHERE project_code = ? "
        f"AND worker_id IN (SELECT value FROM json_each(?))", (project_code, ids)))}
    roster = plan_import(project_code, version, stored, rows, today, now_ms)
    _write_plan(conn, project_code, version, roster, now_ms)
    return roster.result()


def _remove_worker(conn: sqlite3.Connection, project_code: str, worker_id: str, exit_date: date,
                   today: date, now_ms: int) -> bool:
    row = conn.execute(f"SELECT {WORKER_COLUMNS} FROM workers WHERE project_code = ? AND worker_id = ?",
                       (project_code, worker_id)).fetchone()
    if row is None or not row[10]:  # on_roster
        return False
    version = _roster_version(conn, project_code)
    _write_plan(conn, project_code, version, plan_removal(version, worker(row), exit_date, today, now_ms),
                now_ms)
    return True


# Workers whose stored roster state `:today` contradicts (ISO dates compare as text).
_DUE_FOR_DATES = (
    "(on_roster = 0 AND entry_date <= :today AND (exit_date IS NULL OR exit_date > :today))"
    " OR (on_roster = 1 AND (entry_date > :today OR exit_date <= :today))"
)


def _apply_roster_dates(conn: sqlite3.Connection, today: date, now_ms: int) -> list[str]:
    due: dict[str, list[Worker]] = {}
    for row in conn.execute(f"SELECT {WORKER_COLUMNS} FROM workers WHERE {_DUE_FOR_DATES} "
                            f"ORDER BY project_code, worker_id", {"today": today.isoformat()}):
        due.setdefault(row[0], []).append(worker(row))
    for project_code, workers in due.items():
        version = _roster_version(conn, project_code)
        _write_plan(conn, project_code, version, plan_dates(version, workers, today, now_ms), now_ms)
    return sorted(due)


def _prune_tombstones(conn: sqlite3.Connection, older_than_ms: int, today: date) -> int:
    pruned: dict[str, list[int]] = {}
    for project_code, version in conn.execute(
            "DELETE FROM workers WHERE on_roster = 0 AND exit_date IS NOT NULL AND exit_date <= ? "
            "AND updated_at_ms < ? RETURNING project_code, version", (today.isoformat(), older_than_ms)):
        pruned.setdefault(project_code, []).append(version)
    for project_code, versions in pruned.items():
        floor = conn.execute("SELECT roster_floor FROM projects WHERE code = ?", (project_code,)).fetchone()
        if floor is not None:
            conn.execute("UPDATE projects SET roster_floor = ? WHERE code = ?",
                         (prune_floor(floor[0], versions), project_code))
    return sum(len(versions) for versions in pruned.values())


def _insert_api_token(conn: sqlite3.Connection, row: tuple) -> None:
    # Looked up first, in the same transaction, to tell a taken name from a taken hash.
    if conn.execute("SELECT 1 FROM api_tokens WHERE name = ?", (row[0],)).fetchone() is not None:
        raise TokenExists(row[0])
    try:
        conn.execute(f"INSERT INTO api_tokens ({API_TOKEN_COLUMNS}) VALUES (?,?,?,?,?,?,?,?)", row)
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


# A command's region is its device's.
_COMMAND_REGION = "(SELECT d.region_code FROM devices d WHERE d.serial = commands.device_serial)"
# A region scope's codes, one bound JSON array (storage/backend.py scope_filter).
_CODES_IN = "(SELECT value FROM json_each({}))"


def _marks(values: Sequence[Any]) -> str:
    return ", ".join("?" * len(values))


def _outbox_item(row: tuple) -> OutboxItem:
    return OutboxItem(id=row[0], attempts=row[1], next_attempt_at_ms=row[2], last_error=row[3],
                      created_at_ms=row[4], dead=row[5] == "dead", punch=Punch(*row[6:]))


class SqliteStore(SqliteSupervision, SqliteConsole, BackendStore):
    """The embedded store. Open with `await SqliteStore.open(path, data_dir=...)`. The
    supervision of key personnel's methods come from `SqliteSupervision`."""

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
        after_id: int = 0, limit: int = 1000, region_scope: str | None = None,
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
        conditions.append(scope_filter(region_scope, _CODES_IN, "d.region_code"))
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
        return self._live(_device(rows[0])) if rows else None

    async def get_devices(self, serials: Sequence[str]) -> dict[str, Device]:
        if not serials:
            return {}
        # One statement for any number of serials: a JSON array is one bound parameter,
        # so the statement is cached once instead of once per IN-list length, and there
        # is no 32,766-parameter ceiling. The plan is a primary-key search per serial.
        rows = await self._query(
            f"SELECT {DEVICE_COLUMNS} FROM devices WHERE serial IN (SELECT value FROM json_each(?))",
            (orjson.dumps(list(serials)).decode(),))
        return {row[0]: self._live(_device(row)) for row in rows}

    async def list_devices(
        self, *, after_serial: str = "", limit: int = 1000, project_code: str | None = None,
        region_code: str | None = None, online: bool | None = None, region_scope: str | None = None,
    ) -> list[Device]:
        clause, params = where(device_filters(after_serial, limit, project_code, region_code, online,
                                              self._seen_since_ms())
                               + [scope_filter(region_scope, _CODES_IN)], _mark)
        rows = await self._query(
            f"SELECT {DEVICE_COLUMNS} FROM devices{clause} ORDER BY serial LIMIT ?", (*params, limit))
        return [self._live(_device(row)) for row in rows]

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

    async def set_device_roster_version(self, serial: str, version: int) -> None:
        check_version("roster version", version)
        if not await self._write(_rowcount, "UPDATE devices SET roster_version = ? WHERE serial = ?",
                                 (version, serial)):
            raise UnknownDevice(serial)

    async def devices_of_project(self, project_code: str) -> list[str]:
        rows = await self._query("SELECT serial FROM devices WHERE project_code = ? ORDER BY serial",
                                 (project_code,))
        return [row[0] for row in rows]

    # signals ------------------------------------------------------------------------
    async def end_device_sessions(self, serial: str, reason: SessionEndReason) -> int:
        reason = session_end_reason(reason)
        return await self._write(_end_sessions, serial, reason.value, self.clock_ms())

    async def _signal_takeover(self, detail: str) -> int:
        return await self._write(_signal, SignalKind.TAKEOVER, "", detail, self.clock_ms())

    async def _signals_after(self, after_id: int, limit: int, kinds: tuple[str, ...]) -> list[Signal]:
        rows = await self._query(
            f"SELECT {SIGNAL_COLUMNS} FROM signals WHERE id > ? AND kind IN ({_marks(kinds)}) "
            f"ORDER BY id LIMIT ?", (after_id, *kinds, limit))
        return [signal(row) for row in rows]

    async def _last_signal_id(self, kinds: tuple[str, ...]) -> int:
        rows = await self._query(f"SELECT coalesce(max(id), 0) FROM signals WHERE kind IN ({_marks(kinds)})",
                                 kinds)
        return rows[0][0]

    async def _prune_signals(self, older_than_ms: int, kinds: tuple[str, ...]) -> int:
        return await self._write(_rowcount, f"DELETE FROM signals WHERE created_at_ms < ? "
                                 f"AND kind IN ({_marks(kinds)})", (older_than_ms, *kinds))

    async def _listen(self, heard: Callable[[int, str], None],
                      on_lost: Callable[[], None] | None) -> Callable[[], Awaitable[None]] | None:
        return None  # one writer, no channel to other processes: readers poll signals_after

    # projects and the roster --------------------------------------------------------
    async def add_project(
        self, code: str, *, name: str, region_code: str, enterprise: str = "",
        enterprise_uscc: str = "", start_date: date | None = None, end_date: date | None = None,
    ) -> Project:
        made = new_project(code, name, region_code, enterprise, enterprise_uscc, start_date, end_date,
                           self.clock_ms())
        await self._write(_insert_project, made)
        return made

    async def upsert_project(
        self, code: str, *, name: str, region_code: str, enterprise: str = "",
        enterprise_uscc: str = "", start_date: date | None = None, end_date: date | None = None,
    ) -> tuple[Project, UpsertOutcome]:
        made = new_project(code, name, region_code, enterprise, enterprise_uscc, start_date, end_date,
                           self.clock_ms())
        return await self._write(_upsert_project, made)

    async def get_project(self, code: str) -> Project | None:
        rows = await self._query(f"SELECT {PROJECT_COLUMNS} FROM projects WHERE code = ?", (code,))
        return project(rows[0]) if rows else None

    async def list_projects(self, *, after_code: str = "", limit: int = 1000,
                            region_prefix: str = "", region_scope: str | None = None) -> list[Project]:
        clause, params = where(project_filters(after_code, limit, region_prefix)
                               + [scope_filter(region_scope, _CODES_IN)], _mark)
        rows = await self._query(f"SELECT {PROJECT_COLUMNS} FROM projects{clause} ORDER BY code LIMIT ?",
                                 (*params, limit))
        return [project(row) for row in rows]

    async def import_workers(self, project_code: str, rows: Sequence[WorkerIn], *,
                             today: date) -> ImportResult:
        check_project_code(project_code)
        check_day("today", today)
        checked = checked_workers(rows, self.config.roster_import_max_rows)
        return await self._write(_import_workers, project_code, checked, today, self.clock_ms())

    async def remove_worker(self, project_code: str, worker_id: str, *, exit_date: date,
                            today: date) -> bool:
        check_day("exit_date", exit_date)
        check_day("today", today)
        return await self._write(_remove_worker, project_code, worker_id, exit_date, today,
                                 self.clock_ms())

    async def apply_roster_dates(self, today: date) -> list[str]:
        check_day("today", today)
        # Read first, on a reader: on most calls nothing is due, and the writer stays free.
        due = await self._query(f"SELECT 1 FROM workers WHERE {_DUE_FOR_DATES} LIMIT 1",
                                {"today": today.isoformat()})
        if not due:
            return []
        return await self._write(_apply_roster_dates, today, self.clock_ms())

    async def roster_changes(self, project_code: str, *, after_version: int,
                             limit: int = 1000) -> list[Worker]:
        check_roster_page(project_code, limit)
        check_version("after_version", after_version)
        # `version > 0` names the condition of the workers_version index, so SQLite uses it.
        rows = await self._query(
            f"SELECT {WORKER_COLUMNS} FROM workers WHERE project_code = ? AND version > ? "
            f"AND version > 0 ORDER BY version LIMIT ?", (project_code, after_version, limit))
        return [worker(row) for row in rows]

    async def list_workers(self, project_code: str, *, on_roster_only: bool = True,
                           after_worker_id: str = "", limit: int = 1000) -> list[Worker]:
        check_roster_page(project_code, limit)
        only = " AND on_roster = 1" if on_roster_only else ""
        rows = await self._query(
            f"SELECT {WORKER_COLUMNS} FROM workers WHERE project_code = ? AND worker_id > ?{only} "
            f"ORDER BY worker_id LIMIT ?", (project_code, after_worker_id, limit))
        return [worker(row) for row in rows]

    async def get_worker(self, project_code: str, worker_id: str) -> Worker | None:
        rows = await self._query(f"SELECT {WORKER_COLUMNS} FROM workers WHERE project_code = ? "
                                 f"AND worker_id = ?", (project_code, worker_id))
        return worker(rows[0]) if rows else None

    async def roster_floor(self, project_code: str) -> int:
        rows = await self._query("SELECT roster_floor FROM projects WHERE code = ?", (project_code,))
        return rows[0][0] if rows else 0

    async def prune_roster_tombstones(self, older_than_ms: int, *, today: date) -> int:
        check_int("older_than_ms", older_than_ms)
        check_day("today", today)
        return await self._write(_prune_tombstones, older_than_ms, today)

    # faces --------------------------------------------------------------------------
    async def _face_size(self, sha256: bytes) -> int | None:
        rows = await self._query("SELECT size FROM faces WHERE sha256 = ?", (sha256,))
        return rows[0][0] if rows else None

    async def _record_face(self, sha256: bytes, size: int, image_format: str) -> None:
        await self._write(_rowcount, "INSERT OR IGNORE INTO faces (sha256, size, format, stored_at_ms) "
                          "VALUES (?, ?, ?, ?)", (sha256, size, image_format, self.clock_ms()))

    async def face_progress(self, serial: str, sha256: bytes) -> int:
        check_face_sha(sha256)
        rows = await self._query("SELECT next_offset FROM device_faces WHERE device_serial = ? "
                                 "AND face_sha256 = ?", (serial, sha256))
        return rows[0][0] if rows else 0

    async def set_face_progress(self, serial: str, sha256: bytes, offset: int) -> None:
        check_face_sha(sha256)
        check_offset(offset)
        await self._write(
            _rowcount, "INSERT INTO device_faces (device_serial, face_sha256, next_offset, updated_at_ms) "
            "VALUES (?, ?, ?, ?) ON CONFLICT (device_serial, face_sha256) DO UPDATE SET "
            "next_offset = excluded.next_offset, updated_at_ms = excluded.updated_at_ms",
            (serial, sha256, offset, self.clock_ms()))

    async def clear_face_progress(self, serial: str, sha256: bytes) -> None:
        check_face_sha(sha256)
        await self._write(_rowcount, "DELETE FROM device_faces WHERE device_serial = ? AND face_sha256 = ?",
                          (serial, sha256))

    # API tokens ---------------------------------------------------------------------
    async def create_api_token(
        self, name: str, token_sha256: bytes, scopes: Iterable[str], *,
        region_code: str | None = None, created_by: str = "", department: str | None = None,
    ) -> ApiToken:
        token, scopes_stored = new_api_token(name, token_sha256, scopes, region_code, created_by,
                                             self.clock_ms(), department)
        await self._write(_insert_api_token, api_token_row(token, scopes_stored))
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

    async def _purgeable_photos(self, forwarded_before_ms: int, limit: int) -> list[bytes]:
        rows = await self._query(
            "SELECT sha256 FROM photos ph WHERE forwarded_at_ms < ? AND purged_at_ms IS NULL "
            "AND NOT EXISTS (SELECT 1 FROM faces f WHERE f.sha256 = ph.sha256) "
            "ORDER BY forwarded_at_ms LIMIT ?", (forwarded_before_ms, limit))
        return [row[0] for row in rows]

    async def _mark_photos_purged(self, sha256s: list[bytes], now_ms: int) -> None:
        await self._write(_rowcount_many, "UPDATE photos SET purged_at_ms = ? WHERE sha256 = ?",
                          [(now_ms, sha) for sha in sha256s])

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

    # operator commands --------------------------------------------------------------
    async def enqueue_command(self, serial: str, command_type: int, payload: bytes, *,
                              expires_at_ms: int | None = None, created_by: str = "") -> int:
        check_new_command(command_type, payload, expires_at_ms, created_by)
        return await self._write(_enqueue_command, (serial, int(command_type), payload, self.clock_ms(),
                                                    expires_at_ms, created_by))

    async def pending_commands(self, serial: str, limit: int = 16) -> list[Command]:
        check_limit(limit)
        rows = await self._query(
            f"SELECT {COMMAND_COLUMNS} FROM commands WHERE device_serial = ? AND state IN {PENDING} "
            f"AND (expires_at_ms IS NULL OR expires_at_ms > ?) ORDER BY id LIMIT ?",
            (serial, self.clock_ms(), limit))
        return [command(row) for row in rows]

    async def get_command(self, command_id: int) -> Command | None:
        rows = await self._query(f"SELECT {COMMAND_COLUMNS} FROM commands WHERE id = ?", (command_id,))
        return command(rows[0]) if rows else None

    async def list_commands(self, *, device_serial: str | None = None, state: CommandState | None = None,
                            after_id: int = 0, limit: int = 100,
                            region_scope: str | None = None) -> list[Command]:
        clause, params = where(command_filters(device_serial, state, after_id, limit)
                               + [scope_filter(region_scope, _CODES_IN, _COMMAND_REGION)], _mark)
        rows = await self._query(f"SELECT {COMMAND_COLUMNS} FROM commands{clause} ORDER BY id LIMIT ?",
                                 (*params, limit))
        return [command(row) for row in rows]

    async def count_commands_by_state(self) -> dict[CommandState, int]:
        rows = await self._query("SELECT state, count(*) FROM commands GROUP BY state")
        counts = dict.fromkeys(CommandState, 0)
        counts.update((CommandState(state), n) for state, n in rows)
        return counts

    async def _update_command(self, sql: str, params: tuple) -> bool:
        return bool(await self._write(_rowcount, sql, params))

    async def mark_command_sent(self, command_id: int, seq: int, now_ms: int) -> bool:
        check_int("command_id", command_id)
        check_seq(seq)
        check_int("now_ms", now_ms)
        return await self._update_command(
            f"UPDATE commands SET state = 'sent', seq = ?, sent_at_ms = ?, attempts = attempts + 1 "
            f"WHERE id = ? AND state IN {PENDING}", (seq, now_ms, command_id))

    async def complete_command(self, command_id: int, result_code: int | None, *, failed: bool = False,
                               error: str | None = None, reply: bytes | None = None) -> bool:
        check_completion(command_id, result_code, error, reply)
        state = CommandState.FAILED if failed else CommandState.ACKED
        return await self._update_command(
            f"UPDATE commands SET state = ?, result_code = ?, error = ?, reply = ?, completed_at_ms = ? "
            f"WHERE id = ? AND state IN {PENDING}",
            (state.value, result_code, error, reply, self.clock_ms(), command_id))

    async def cancel_command(self, command_id: int) -> bool:
        check_int("command_id", command_id)
        return await self._update_command(
            f"UPDATE commands SET state = 'cancelled', completed_at_ms = ? "
            f"WHERE id = ? AND state IN {PENDING}", (self.clock_ms(), command_id))

    async def expire_commands(self, now_ms: int) -> int:
        check_int("now_ms", now_ms)
        return await self._write(_rowcount, f"UPDATE commands SET state = 'expired', completed_at_ms = ? "
                                 f"WHERE state IN {PENDING} AND expires_at_ms <= ?", (now_ms, now_ms))

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

