"""A provincial system that speaks docs/province-api.md, with faults on demand.

`lmg sim province serve` runs it; tests and `lmg bench forwarding` start it as a
subprocess. It does what the document says the province does, and no more:

- authenticates every request (app key, signature over the canonical string, replay
  window, nonce never seen within the window), checks the caller's address and the app
  key's permissions, enforces the batch limits;
- decrypts each resident ID number, validates each record, deduplicates on the record
  id, and answers per record: stored, duplicate or invalid with a code and a reason;
- keeps what it received in its own SQLite database (`<data dir>/province.db`),
  committed before it answers, so a report after a kill is still exact;
- takes supervision warnings (§7 of the document) by (warning id, version): each version
  once, its ID number decrypted and checked, its history checked against its state;
  `held_warnings(data_dir)` reads them back for tests.

Faults (each request rolls the dice once, in this order, from a seeded random source):
down (listener closed: connection refused) for `down_for_s` starting `down_after_s`
after start; `latency_ms` before anything; `drop_rate` closes the connection without an
answer; `error_rate` answers 500; `rate_limit_rate` answers 429 with Retry-After;
`timeout_rate` hangs past any client timeout. A dropped or hung request is processed
first half of the time (the province stored it but the answer was lost), so senders
meet the duplicate case too.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import json
import logging
import os
import random
import sqlite3
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import orjson
from aiohttp import web

from lmg.protocol.identity import is_valid_id_number
from lmg.protocol import province as api
from lmg.protocol.province import ProvinceCode, ProvinceError

log = logging.getLogger("lmg.sim.province")

DB_NAME = "province.db"
RETRY_AFTER_S = 1  # what a 429 asks for: long enough to matter, short enough for tests
MAX_NONCES = 2_000_000  # remembered for the replay window: 600 s x 3,000 requests/s, ~200 MB at worst
MAX_PUNCH_AGE_MS = 90 * 86_400_000  # the province keeps a quarter of attendance history open
MAX_PUNCH_AHEAD_MS = 86_400_000  # a day ahead: clocks that are that wrong make the record worthless
PERMISSIONS = ("attendance", "devices", "photos", "warnings")
KEPT_WARNING_BODIES = 1_000  # raw warning requests kept in memory for tests: 1 MiB at most each, ~2 MB typical
NAME_MAX_CHARS = 85  # a worker's name: what a terminal's roster holds (str8, 85 Chinese characters)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,  -- arrival order of first receipt
    app_key TEXT NOT NULL,
    record_id TEXT NOT NULL,
    device_serial TEXT NOT NULL,
    record_no INTEGER NOT NULL,
    project_code TEXT NOT NULL,
    worker_id TEXT NOT NULL,
    punch_time INTEGER NOT NULL,
    direction INTEGER NOT NULL,
    verify_mode INTEGER NOT NULL,
    temperature_dc INTEGER NOT NULL,
    photo_sha256 TEXT,
    photo_size INTEGER NOT NULL,
    received_at INTEGER NOT NULL,
    first_seen_ms INTEGER NOT NULL,
    UNIQUE (app_key, record_id)
);
CREATE TABLE IF NOT EXISTS rejected (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    record_id TEXT, code INTEGER NOT NULL, reason TEXT NOT NULL, at_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS photos (sha256 TEXT PRIMARY KEY, size INTEGER NOT NULL, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS devices (
    device_serial TEXT PRIMARY KEY, project_code TEXT, region_code TEXT, online INTEGER,
    last_seen INTEGER, firmware TEXT, roster_version INTEGER, updated_at_ms INTEGER
);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS warnings (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,  -- arrival order of first receipt
    app_key TEXT NOT NULL,
    warning_id INTEGER NOT NULL,
    version INTEGER NOT NULL,
    worker_id TEXT,                         -- decrypted; NULL for a warning about the project
    body TEXT NOT NULL,                     -- the warning as received, worker_id_enc left out
    first_seen_ms INTEGER NOT NULL,
    UNIQUE (app_key, warning_id, version)
);
"""


@dataclass(frozen=True)
class Faults:
    error_rate: float = 0.0
    timeout_rate: float = 0.0
    latency_ms: int = 0
    rate_limit_rate: float = 0.0
    drop_rate: float = 0.0
    down_after_s: float = 0.0
    down_for_s: float = 0.0
    hang_s: float = 120.0  # a "timeout" holds the request this long (or until the client gives up)

    def __post_init__(self) -> None:
        for name in ("error_rate", "timeout_rate", "rate_limit_rate", "drop_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"--{name.replace('_', '-')} must be between 0 and 1, got {getattr(self, name)}")
        if self.error_rate + self.timeout_rate + self.rate_limit_rate + self.drop_rate > 1.0:
            raise ValueError("the fault rates together must not exceed 1")
        if self.latency_ms < 0 or self.down_after_s < 0 or self.down_for_s < 0:
            raise ValueError("--latency-ms, --down-after and --down-for must not be negative")


@dataclass
class Access:
    app_key: str
    app_secret: str = field(repr=False)
    allow: tuple = ()  # ip_network objects; empty = every address
    permissions: frozenset = frozenset(PERMISSIONS)


# ----------------------------------------------------------------------- record checks


def check_record(row, cipher: api.WorkerIdCipher, now_ms: int) -> tuple[int, str, dict | None]:
    """(code, reason, clean record) for one element of `records`; code 0 = valid. Pure."""
    if not isinstance(row, dict):
        return ProvinceCode.INVALID_RECORD, "record is not an object", None
    rid = row.get("record_id")
    serial, number = row.get("device_serial"), row.get("record_no")

    def bad(name, rule):
        return ProvinceCode.INVALID_RECORD, f"{name}: {rule}", None

    if not isinstance(rid, str) or not 3 <= len(rid) <= 80:
        return bad("record_id", "must be a string of 3-80 characters")
    if not isinstance(serial, str) or not 1 <= len(serial) <= 64:
        return bad("device_serial", "must be 1-64 characters")
    if type(number) is not int or not 0 <= number <= 0xFFFF_FFFF:
        return bad("record_no", "must be an integer 0..4294967295")
    if rid != api.record_id(serial, number):
        return bad("record_id", f"must be device_serial:record_no ({api.record_id(serial, number)!r})")
    project = row.get("project_code")
    if not isinstance(project, str) or not 1 <= len(project) <= 64:
        return bad("project_code", "must be 1-64 characters")
    ints = {"punch_time": (0, 2**53), "direction": (1, 2), "verify_mode": (1, 4),
            "temperature_dc": (-32768, 32767), "photo_size": (0, api.MAX_PHOTO_BYTES), "received_at": (0, 2**53)}
    for name, (low, high) in ints.items():
        value = row.get(name)
        if type(value) is not int or not low <= value <= high:
            return bad(name, f"must be an integer {low}..{high}")
    sha = row.get("photo_sha256")
    if sha is not None and (not isinstance(sha, str) or len(sha) != 64 or not all(c in "0123456789abcdef" for c in sha)):
        return bad("photo_sha256", "must be null or 64 lower-case hex characters")
    if (sha is None) != (row["photo_size"] == 0):
        return bad("photo_sha256", "must be given exactly when photo_size > 0")
    token = row.get("worker_id_enc")
    if not isinstance(token, str):
        return bad("worker_id_enc", "must be a base64 string")
    try:
        worker_id = cipher.decrypt(token, rid)
    except ValueError as exc:
        return ProvinceCode.UNDECRYPTABLE_WORKER_ID, str(exc), None
    if not is_valid_id_number(worker_id):
        return ProvinceCode.INVALID_WORKER_ID, "resident ID number fails its check digit (GB 11643)", None
    if not now_ms - MAX_PUNCH_AGE_MS <= row["punch_time"] <= now_ms + MAX_PUNCH_AHEAD_MS:
        return (ProvinceCode.PUNCH_TIME_OUT_OF_RANGE,
                "punch_time must be within the last 90 days and at most 1 day ahead", None)
    return ProvinceCode.OK, "", {**row, "worker_id": worker_id}


def check_warning(row, cipher: api.WorkerIdCipher) -> tuple[int, str, dict | None]:
    """(code, reason, clean warning) for one element of `warnings`; code 0 = valid. Pure.

    The clean warning is the row without `worker_id_enc`, with the decrypted `worker_id`."""
    from datetime import date

    from lmg.protocol import regions
    from lmg.protocol.posts import KEY_POSTS

    if not isinstance(row, dict):
        return ProvinceCode.INVALID_RECORD, "warning is not an object", None

    def bad(name, rule):
        return ProvinceCode.INVALID_RECORD, f"{name}: {rule}", None

    def is_int(value, low, high=2**53):
        return type(value) is int and low <= value <= high

    def is_text(value, low, high):
        return isinstance(value, str) and low <= len(value) <= high

    wid, version = row.get("warning_id"), row.get("version")
    if not is_int(wid, 1):
        return bad("warning_id", "must be an integer 1..2^53")
    if not is_int(version, 1):
        return bad("version", "must be an integer 1..2^53")
    if not isinstance(row.get("rule"), str) or not api.RULE_CODE_RE.fullmatch(row["rule"]):
        return bad("rule", "must be 1-64 characters of [a-z0-9-]")
    if not is_text(row.get("project_code"), 1, 64):
        return bad("project_code", "must be 1-64 characters")
    region, level = row.get("region_code"), row.get("level")
    if not isinstance(region, str) or not regions.is_known(region):
        return bad("region_code", "must be a region code of Gansu (docs/regions.md)")
    if level not in api.WARNING_LEVELS or type(level) is not int:
        return bad("level", "must be 1 (county), 2 (city) or 3 (province)")
    if row.get("bureau_region") != regions.bureau_for(region, level).code:
        return bad("bureau_region", f"must be {regions.bureau_for(region, level).code} for region {region} "
                   f"at level {level}")
    state = row.get("state")
    if state not in api.WARNING_STATES:
        return bad("state", f"must be one of {', '.join(api.WARNING_STATES)}")
    post = row.get("post")
    if post is not None and post not in {p.code for p in KEY_POSTS}:
        return bad("post", "must be null or a key post's code")
    days = []
    for name in ("period_start", "period_end"):
        try:
            days.append(date.fromisoformat(row.get(name)))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return bad(name, "must be a date YYYY-MM-DD")
    if days[0] > days[1]:
        return bad("period_end", "must not be before period_start")
    figures = row.get("figures")
    if not isinstance(figures, dict):
        return bad("figures", "must be an object")
    for name in ("valid_days", "construction_days", "run_days", "leave_days", "over_cap_leave_days"):
        if name in figures and not is_int(figures[name], 0, 366):
            return bad(f"figures.{name}", "must be an integer 0..366")
    for name in ("rate", "required_share"):
        if name in figures and (type(figures[name]) not in (int, float) or not 0 <= figures[name] <= 1):
            return bad(f"figures.{name}", "must be a number 0..1")
    for name in ("opened_at", "level_since", "updated_at"):
        if not is_int(row.get(name), 0):
            return bad(name, "must be Unix ms")
    for name in ("resolved_at", "closed_at"):
        if row.get(name) is not None and not is_int(row.get(name), 0):
            return bad(name, "must be null or Unix ms")
    disposition = row.get("disposition")
    if (state == "closed") != (disposition is not None) or (disposition is not None
                                                             and disposition not in api.DISPOSITIONS):
        return bad("disposition", f"must be one of {', '.join(api.DISPOSITIONS)} exactly when closed")
    if (state == "closed") != (row.get("closed_at") is not None):
        return bad("closed_at", "must be given exactly when closed")
    if not is_text(row.get("note"), 0, api.NOTE_MAX_CHARS) or not is_text(row.get("closed_by"), 0,
                                                                           api.BY_MAX_CHARS):
        return bad("note", f"note and closed_by must be strings of at most {api.NOTE_MAX_CHARS} and "
                   f"{api.BY_MAX_CHARS} characters")
    if disposition == "false-alarm" and not row["note"]:
        return bad("note", "a false alarm needs a note saying why")
    history = row.get("history")
    if not isinstance(history, list) or len(history) != version:
        return bad("history", "must list every event, one per version (as many as `version`)")
    for n, event in enumerate(history, start=1):
        if not isinstance(event, dict) or event.get("version") != n or event.get("event") not in api.WARNING_EVENTS \
                or event.get("level") not in api.WARNING_LEVELS or event.get("state") not in api.WARNING_STATES \
                or not is_int(event.get("at"), 0) or not is_text(event.get("by"), 1, api.BY_MAX_CHARS) \
                or not isinstance(event.get("detail"), dict):
            return bad(f"history[{n - 1}]", "must be {version: its position from 1, at, event, level, state, by, "
                       "detail} with documented values")
    if history[0]["event"] != "opened" or (history[-1]["level"], history[-1]["state"]) != (level, state):
        return bad("history", "must start with `opened` and end in the warning's level and state")
    if not is_text(row.get("worker_name"), 0, NAME_MAX_CHARS):
        return bad("worker_name", f"must be a string of at most {NAME_MAX_CHARS} characters")
    token = row.get("worker_id_enc")
    worker_id = None
    if token is not None:
        if not isinstance(token, str):
            return bad("worker_id_enc", "must be null or a base64 string")
        try:
            worker_id = cipher.decrypt(token, api.warning_ad(cast(int, wid)))
        except ValueError as exc:
            return ProvinceCode.UNDECRYPTABLE_WORKER_ID, str(exc), None
        if not is_valid_id_number(worker_id):
            return ProvinceCode.INVALID_WORKER_ID, "resident ID number fails its check digit (GB 11643)", None
    clean = {k: v for k, v in row.items() if k != "worker_id_enc"}
    clean["worker_id"] = worker_id
    return ProvinceCode.OK, "", clean


# ----------------------------------------------------------------------------- storage


class ProvinceDb:
    """The simulator's SQLite. Used from the event loop only; each call is one transaction."""

    def __init__(self, data_dir: str | os.PathLike):
        Path(data_dir).mkdir(parents=True, exist_ok=True)
        self.path = Path(data_dir) / DB_NAME
        self.conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: survives a process kill, which is what tests do
        self.conn.executescript(_SCHEMA)

    def close(self) -> None:
        self.conn.close()

    def _bump(self, counts: dict[str, int]) -> None:
        self.conn.executemany(
            "INSERT INTO counters (name, value) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
            [(k, v) for k, v in counts.items() if v])

    def count(self, name: str, n: int = 1) -> None:
        self._bump({name: n})

    def store_batch(self, app_key: str, checked: list[tuple[str | None, int, str, dict | None]], now_ms: int) -> list[dict]:
        """Insert the valid records (first receipt wins); return the results array."""
        results, stored, duplicates, rejected = [], 0, 0, 0
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            for rid, code, reason, record in checked:
                if code or record is None:  # check_record gives a record exactly when the code is 0
                    rejected += 1
                    self.conn.execute("INSERT INTO rejected (record_id, code, reason, at_ms) VALUES (?, ?, ?, ?)",
                                      (rid, int(code), reason, now_ms))
                    results.append({"record_id": rid, "result": api.RECORD_INVALID, "code": int(code), "reason": reason})
                    continue
                cursor = self.conn.execute(
                    "INSERT OR IGNORE INTO records (app_key, record_id, device_serial, record_no, project_code, worker_id,"
                    " punch_time, direction, verify_mode, temperature_dc, photo_sha256, photo_size, received_at,"
                    " first_seen_ms) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    (app_key, rid, record["device_serial"], record["record_no"], record["project_code"],
                     record["worker_id"], record["punch_time"], record["direction"], record["verify_mode"],
                     record["temperature_dc"], record["photo_sha256"], record["photo_size"], record["received_at"],
                     now_ms))
                if cursor.rowcount:
                    stored += 1
                    results.append({"record_id": rid, "result": api.RECORD_STORED, "code": 0, "reason": ""})
                else:
                    duplicates += 1
                    results.append({"record_id": rid, "result": api.RECORD_DUPLICATE, "code": int(ProvinceCode.DUPLICATE),
                                    "reason": "record id already held"})
            self._bump({"received": len(checked), "duplicates": duplicates, "rejected": rejected})
            self.conn.execute("COMMIT")
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        return results

    def store_warnings(self, app_key: str, checked: list[tuple[tuple[int, int] | None, int, str, dict | None]],
                       now_ms: int) -> list[dict]:
        """Keep each valid (warning id, version) once; return the results array. A version
        already held, or older than one held, is a duplicate: the province holds that or newer."""
        results, stored, duplicates, rejected = [], 0, 0, 0
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            for key, code, reason, warning in checked:
                wid, version = key if key is not None else (None, None)
                if code or warning is None or key is None:
                    rejected += 1
                    self.conn.execute("INSERT INTO rejected (record_id, code, reason, at_ms) VALUES (?, ?, ?, ?)",
                                      (None if key is None else api.warning_ad(key[0]), int(code), reason, now_ms))
                    results.append({"warning_id": wid, "version": version, "result": api.RECORD_INVALID,
                                    "code": int(code), "reason": reason})
                    continue
                newest = self.conn.execute("SELECT max(version) FROM warnings WHERE app_key = ? AND warning_id = ?",
                                           (app_key, wid)).fetchone()[0]
                if newest is not None and newest >= version:
                    duplicates += 1
                    results.append({"warning_id": wid, "version": version, "result": api.RECORD_DUPLICATE,
                                    "code": int(ProvinceCode.DUPLICATE), "reason": "version already held"
                                    if newest == version else api.RESULT_SUPERSEDED_REASON})
                    continue
                body = {k: v for k, v in warning.items() if k != "worker_id"}
                self.conn.execute("INSERT INTO warnings (app_key, warning_id, version, worker_id, body, first_seen_ms)"
                                  " VALUES (?, ?, ?, ?, ?, ?)", (app_key, wid, version, warning["worker_id"],
                                                                 orjson.dumps(body).decode(), now_ms))
                stored += 1
                results.append({"warning_id": wid, "version": version, "result": api.RECORD_STORED, "code": 0,
                                "reason": ""})
            self._bump({"warnings_received": len(checked), "warnings_duplicates": duplicates,
                        "warnings_rejected": rejected})
            self.conn.execute("COMMIT")
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        return results

    def store_photo(self, sha: str, data: bytes) -> bool:
        cursor = self.conn.execute("INSERT OR IGNORE INTO photos (sha256, size, data) VALUES (?, ?, ?)",
                                   (sha, len(data), data))
        return bool(cursor.rowcount)

    def store_devices(self, devices: list[dict], now_ms: int) -> None:
        self.conn.execute("BEGIN IMMEDIATE")
        self.conn.executemany(
            "INSERT INTO devices VALUES (?,?,?,?,?,?,?,?) ON CONFLICT(device_serial) DO UPDATE SET "
            "project_code=excluded.project_code, region_code=excluded.region_code, online=excluded.online, "
            "last_seen=excluded.last_seen, firmware=excluded.firmware, roster_version=excluded.roster_version, "
            "updated_at_ms=excluded.updated_at_ms",
            [(d["device_serial"], d.get("project_code"), d.get("region_code"), int(bool(d.get("online"))),
              d.get("last_seen"), d.get("firmware"), d.get("roster_version"), now_ms) for d in devices])
        self.conn.execute("COMMIT")


def report(data_dir: str | os.PathLike) -> dict:
    """What the simulator holds: received, unique, duplicates, rejected, and more. Read-only."""
    path = Path(data_dir) / DB_NAME
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: no province simulator has run with --data-dir {data_dir}")
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        counters = dict(conn.execute("SELECT name, value FROM counters").fetchall())
        unique = conn.execute("SELECT count(*) FROM records").fetchone()[0]
        photos = conn.execute("SELECT count(*) FROM photos").fetchone()[0]
        devices = conn.execute("SELECT count(*) FROM devices").fetchone()[0]
        warnings = conn.execute("SELECT count(DISTINCT warning_id), count(*) FROM warnings").fetchone()
        reasons = dict(conn.execute("SELECT code, count(*) FROM rejected GROUP BY code").fetchall())
    finally:
        conn.close()
    faults = {k[len("fault_"):]: v for k, v in counters.items() if k.startswith("fault_")}
    refusals = {k[len("refused_"):]: v for k, v in counters.items() if k.startswith("refused_")}
    return {"received": counters.get("received", 0), "unique": unique, "duplicates": counters.get("duplicates", 0),
            "rejected": counters.get("rejected", 0), "rejected_by_code": {str(k): v for k, v in reasons.items()},
            "requests": counters.get("requests", 0), "refused": refusals, "faults": faults,
            "photos": photos, "devices": devices,
            "warnings": warnings[0], "warning_versions": warnings[1],
            "warnings_received": counters.get("warnings_received", 0),
            "warnings_duplicates": counters.get("warnings_duplicates", 0),
            "warnings_rejected": counters.get("warnings_rejected", 0)}


def held_records(data_dir: str | os.PathLike) -> list[tuple[str, int, int]]:
    """(device_serial, record_no, seq) of every record held, in arrival order. For tests."""
    conn = sqlite3.connect(f"file:{Path(data_dir) / DB_NAME}?mode=ro", uri=True)
    try:
        return conn.execute("SELECT device_serial, record_no, seq FROM records ORDER BY seq").fetchall()
    finally:
        conn.close()


def held_warnings(data_dir: str | os.PathLike) -> list[dict]:
    """Every warning version held, in arrival order: the body as received (without
    `worker_id_enc`) with the decrypted `worker_id` and `seq`. For tests."""
    conn = sqlite3.connect(f"file:{Path(data_dir) / DB_NAME}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT seq, worker_id, body FROM warnings ORDER BY seq").fetchall()
    finally:
        conn.close()
    return [{**orjson.loads(body), "worker_id": worker_id, "seq": seq} for seq, worker_id, body in rows]


# ------------------------------------------------------------------------------ server


class ProvinceSimulator:
    """The HTTP server. `await start(host, port)`; `await stop()`."""

    def __init__(self, data_dir, access: Access, faults: Faults = Faults(), *, seed: int | None = None,
                 clock_ms=lambda: time.time_ns() // 1_000_000):
        self.db = ProvinceDb(data_dir)
        self.access = access
        self.faults = faults
        self.rng = random.Random(seed)
        self.clock_ms = clock_ms
        self.cipher = api.WorkerIdCipher.for_app(access.app_secret, access.app_key)
        self.nonces: dict[str, int] = {}  # nonce -> expiry ms
        self.runner: web.AppRunner | None = None
        self.site: web.TCPSite | None = None
        self.address: tuple[str, int] | None = None
        self._outage: asyncio.Task | None = None
        self.down = False
        # raw bodies of the last warning requests that passed authentication: what
        # travelled, for tests that check no ID number went in clear
        self.warning_bodies: deque[bytes] = deque(maxlen=KEPT_WARNING_BODIES)

    def app(self) -> web.Application:
        app = web.Application(client_max_size=api.MAX_PHOTO_BYTES + 4096)
        app.router.add_post(api.PATH_ATTENDANCE, self._guard("attendance", self._attendance))
        app.router.add_post(api.PATH_DEVICE_STATUS, self._guard("devices", self._device_status))
        app.router.add_put(api.PATH_PHOTOS + "{sha}", self._guard("photos", self._photo))
        app.router.add_post(api.PATH_WARNINGS, self._guard("warnings", self._warnings))
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> tuple[str, int]:
        # handler_cancellation: a hung request ends when the client gives up, not after hang_s
        self.runner = web.AppRunner(self.app(), access_log=None, handler_cancellation=True)
        await self.runner.setup()
        address = await self._listen(host, port)
        if self.faults.down_for_s:
            self._outage = asyncio.get_running_loop().create_task(self._outage_schedule())
        return address

    async def _listen(self, host: str, port: int) -> tuple[str, int]:
        assert self.runner is not None  # start() made it
        self.site = web.TCPSite(self.runner, host, port, reuse_address=True)
        await self.site.start()
        server = cast(asyncio.Server, self.site._server)  # what start() made; aiohttp types it loosely
        self.address = server.sockets[0].getsockname()[:2]
        return self.address

    async def _outage_schedule(self) -> None:
        assert self.site is not None and self.address is not None  # start() listened first
        await asyncio.sleep(self.faults.down_after_s)
        self.down = True
        self.db.count("fault_down_periods")
        await self.site.stop()  # refuse new connections; requests on kept-alive ones are dropped below
        log.info("down for %.1f s", self.faults.down_for_s)
        await asyncio.sleep(self.faults.down_for_s)
        await self._listen(*self.address)
        self.down = False
        log.info("up again")

    async def stop(self) -> None:
        if self._outage is not None:
            self._outage.cancel()
        if self.runner is not None:
            await self.runner.cleanup()
        self.db.close()

    # -- the checks every request passes ----------------------------------------------------
    def _guard(self, permission: str, handler):
        async def guarded(request: web.Request) -> web.StreamResponse:
            self.db.count("requests")
            if self.down:
                self.db.count("fault_down")
                return self._drop(request)
            if self.faults.latency_ms:
                await asyncio.sleep(self.faults.latency_ms / 1000)
            fault = self._roll()
            if fault == "drop" and self.rng.random() < 0.5:
                self.db.count("fault_drop")
                return self._drop(request)
            if fault == "error":
                self.db.count("fault_500")
                return self._answer(ProvinceCode.INTERNAL_ERROR, "injected fault: internal error")
            if fault == "rate_limit":
                self.db.count("fault_429")
                return self._answer(ProvinceCode.RATE_LIMITED, f"rate limited: retry after {RETRY_AFTER_S} s",
                                    headers={"Retry-After": str(RETRY_AFTER_S)})
            if fault == "timeout" and self.rng.random() < 0.5:
                self.db.count("fault_timeout")
                await asyncio.sleep(self.faults.hang_s)
                return self._drop(request)
            try:
                body = await request.read()
                self._authenticate(request, permission, body)
                answer = await handler(request, body)
            except ProvinceError as exc:
                self.db.count(f"refused_{int(exc.code)}")
                headers = {"Retry-After": str(exc.retry_after_s)} if exc.retry_after_s else None
                return self._answer(exc.code, str(exc), headers=headers)
            if fault == "drop":  # processed (and committed), but the answer is lost
                self.db.count("fault_drop")
                return self._drop(request)
            if fault == "timeout":
                self.db.count("fault_timeout")
                await asyncio.sleep(self.faults.hang_s)
                return self._drop(request)
            return answer

        return guarded

    def _roll(self) -> str | None:
        f, x = self.faults, self.rng.random()
        for name, rate in (("drop", f.drop_rate), ("error", f.error_rate), ("rate_limit", f.rate_limit_rate),
                           ("timeout", f.timeout_rate)):
            if x < rate:
                return name
            x -= rate
        return None

    @staticmethod
    def _drop(request: web.Request) -> web.StreamResponse:
        if request.transport is not None:
            request.transport.abort()  # no answer at all: the client sees the connection reset
        return web.Response(status=500)  # written nowhere: the transport is gone

    @staticmethod
    def _answer(code: ProvinceCode, message: str, headers=None, **extra) -> web.Response:
        body = orjson.dumps({"code": int(code), "message": message, **extra})
        return web.Response(body=body, status=api.HTTP_STATUS[code], content_type="application/json", headers=headers)

    def _authenticate(self, request: web.Request, permission: str, body: bytes) -> None:
        auth = api.parse_auth_headers(request.headers)
        if auth.app_key != self.access.app_key:
            raise ProvinceError(ProvinceCode.UNKNOWN_APP_KEY, "unknown app key")
        now = self.clock_ms()
        api.verify_request(auth, self.access.app_secret, request.method, request.raw_path, body, now)
        self._remember_nonce(auth.nonce, now)
        if self.access.allow:
            try:
                address = ipaddress.ip_address(request.remote or "")
            except ValueError:
                address = None
            if address is None or not any(address in net for net in self.access.allow):
                raise ProvinceError(ProvinceCode.ADDRESS_NOT_ALLOWED, f"address {request.remote} is not on the allowlist")
        if permission not in self.access.permissions:
            raise ProvinceError(ProvinceCode.NO_PERMISSION, f"app key has no permission for {permission}")

    def _remember_nonce(self, nonce: str, now_ms: int) -> None:
        if nonce in self.nonces and self.nonces[nonce] > now_ms:
            raise ProvinceError(ProvinceCode.REPLAYED_NONCE, "nonce already used within the replay window")
        if len(self.nonces) >= MAX_NONCES:
            self.nonces = {n: t for n, t in self.nonces.items() if t > now_ms}
            if len(self.nonces) >= MAX_NONCES:
                raise ProvinceError(ProvinceCode.RATE_LIMITED, "too many requests in the replay window", RETRY_AFTER_S)
        # a timestamp may be up to the window old or ahead: remember the nonce for twice the window
        self.nonces[nonce] = now_ms + 2 * api.REPLAY_WINDOW_MS

    # -- the endpoints ----------------------------------------------------------------------
    async def _attendance(self, request: web.Request, body: bytes) -> web.Response:
        if len(body) > api.MAX_BATCH_BYTES:
            raise ProvinceError(ProvinceCode.TOO_LARGE, f"batch body is {len(body)} bytes; the limit is {api.MAX_BATCH_BYTES}")
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise ProvinceError(ProvinceCode.MALFORMED_REQUEST, f"body is not JSON: {exc}") from None
        records = data.get("records") if isinstance(data, dict) else None
        batch_id = data.get("batch_id") if isinstance(data, dict) else None
        if not isinstance(records, list) or not records or not isinstance(batch_id, str) \
                or len(batch_id) > api.BATCH_ID_MAX_CHARS:
            raise ProvinceError(ProvinceCode.MALFORMED_REQUEST,
                                "body must be {\"batch_id\": string (<= 64), \"records\": [1.. records]}")
        if len(records) > api.MAX_BATCH_RECORDS:
            raise ProvinceError(ProvinceCode.TOO_LARGE, f"{len(records)} records; the limit is {api.MAX_BATCH_RECORDS}")
        now = self.clock_ms()
        checked = []
        for row in records:
            code, reason, record = check_record(row, self.cipher, now)
            rid = row.get("record_id") if isinstance(row, dict) and isinstance(row.get("record_id"), str) else None
            checked.append((rid, code, reason, record))
        results = self.db.store_batch(self.access.app_key, checked, now)
        return self._answer(ProvinceCode.OK, "ok", batch_id=batch_id, results=results)

    async def _warnings(self, request: web.Request, body: bytes) -> web.Response:
        if len(body) > api.MAX_BATCH_BYTES:
            raise ProvinceError(ProvinceCode.TOO_LARGE, f"batch body is {len(body)} bytes; the limit is {api.MAX_BATCH_BYTES}")
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise ProvinceError(ProvinceCode.MALFORMED_REQUEST, f"body is not JSON: {exc}") from None
        warnings = data.get("warnings") if isinstance(data, dict) else None
        batch_id = data.get("batch_id") if isinstance(data, dict) else None
        if not isinstance(warnings, list) or not warnings or not isinstance(batch_id, str) \
                or len(batch_id) > api.BATCH_ID_MAX_CHARS:
            raise ProvinceError(ProvinceCode.MALFORMED_REQUEST,
                                "body must be {\"batch_id\": string (<= 64), \"warnings\": [1.. warnings]}")
        if len(warnings) > api.MAX_WARNING_BATCH:
            raise ProvinceError(ProvinceCode.TOO_LARGE, f"{len(warnings)} warnings; the limit is {api.MAX_WARNING_BATCH}")
        self.warning_bodies.append(body)
        checked = []
        for row in warnings:
            code, reason, warning = check_warning(row, self.cipher)
            key = None
            if isinstance(row, dict) and type(row.get("warning_id")) is int and type(row.get("version")) is int:
                key = (row["warning_id"], row["version"])
            checked.append((key, code, reason, warning))
        results = self.db.store_warnings(self.access.app_key, checked, self.clock_ms())
        return self._answer(ProvinceCode.OK, "ok", batch_id=batch_id, results=results)

    async def _photo(self, request: web.Request, body: bytes) -> web.Response:
        sha = request.match_info["sha"]
        if len(body) > api.MAX_PHOTO_BYTES:
            raise ProvinceError(ProvinceCode.TOO_LARGE, f"photo is {len(body)} bytes; the limit is {api.MAX_PHOTO_BYTES}")
        if hashlib.sha256(body).hexdigest() != sha:
            raise ProvinceError(ProvinceCode.PHOTO_HASH_MISMATCH, "the body's SHA-256 is not the one in the path")
        stored = self.db.store_photo(sha, body)
        return self._answer(ProvinceCode.OK, "ok", stored=stored)

    async def _device_status(self, request: web.Request, body: bytes) -> web.Response:
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise ProvinceError(ProvinceCode.MALFORMED_REQUEST, f"body is not JSON: {exc}") from None
        devices = data.get("devices") if isinstance(data, dict) else None
        if not isinstance(devices, list) or not all(isinstance(d, dict) and isinstance(d.get("device_serial"), str)
                                                    for d in devices):
            raise ProvinceError(ProvinceCode.MALFORMED_REQUEST, "body must be {\"devices\": [{\"device_serial\": ...}]}")
        if len(devices) > api.MAX_DEVICE_STATUS:
            raise ProvinceError(ProvinceCode.TOO_LARGE, f"{len(devices)} devices; the limit is {api.MAX_DEVICE_STATUS}")
        self.db.store_devices(devices, self.clock_ms())
        return self._answer(ProvinceCode.OK, "ok", accepted=len(devices))


async def serve(host: str, port: int, data_dir, access: Access, faults: Faults, *, seed: int | None = None,
                ready_file: str | None = None) -> int:
    """Run until SIGTERM/SIGINT (`lmg sim province serve`)."""
    import signal

    simulator = ProvinceSimulator(data_dir, access, faults, seed=seed)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        bound = await simulator.start(host, port)
        log.info("province simulator on %s:%s, data in %s", *bound, data_dir)
        if ready_file:
            with open(ready_file + ".tmp", "w", encoding="utf-8") as fh:
                json.dump({"listen": list(bound), "pid": os.getpid()}, fh)
            os.replace(ready_file + ".tmp", ready_file)
        await stop.wait()
    finally:
        await simulator.stop()
    return 0


def parse_allow(values) -> tuple:
    try:
        return tuple(ipaddress.ip_network(v, strict=False) for v in values or ())
    except ValueError as exc:
        raise ValueError(f"--allow {exc}: use an address or CIDR block, e.g. 127.0.0.1 or 10.0.0.0/8") from None
