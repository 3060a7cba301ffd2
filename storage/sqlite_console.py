"""The SQLite store's console accounts, sessions and figures: a mixin of `SqliteStore`.

As the rest of the SQLite store: every write is one module-level function run by the
writer process in one transaction, every read runs on a reader thread. The rules are
`lmg.storage.console`'s, shared with PostgreSQL; this module is only their SQL.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable
from datetime import date
from typing import Any

import orjson

from lmg.protocol.regions import covered_codes
from lmg.storage.api import ConsoleAccount, ConsoleSession, OutboxStatus, WarningCount, WarningState
from lmg.storage.backend import check_int, device_filters, where
from lmg.storage.console import (
    ACCOUNT_COLUMNS, CHINA_OFFSET_MS, DAY_MS, SESSION_COLUMNS, account, account_row, check_account_name, check_cap,
    check_lockout, check_password_hash, check_session, check_session_hash, check_state, china_day_number,
    new_account, session, session_row, warning_count,
)
from lmg.storage.errors import AccountExists, UnknownAccount

_CODES_IN = "(SELECT value FROM json_each(?))"


def _insert_account(conn: sqlite3.Connection, row: tuple) -> None:
    if conn.execute("SELECT 1 FROM console_accounts WHERE name = ?", (row[0],)).fetchone() is not None:
        raise AccountExists(row[0])
    conn.execute(f"INSERT INTO console_accounts ({ACCOUNT_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", row)


def _update_account(conn: sqlite3.Connection, name: str, password_hash: str | None, disabled: bool | None) -> bool:
    sets: list[str] = []
    params: list[Any] = []
    if password_hash is not None:
        sets.append("password_hash = ?")
        params.append(password_hash)
    if disabled is not None:
        sets.append("disabled = ?")
        params.append(int(disabled))
    if not sets:
        return conn.execute("SELECT 1 FROM console_accounts WHERE name = ?", (name,)).fetchone() is not None
    if conn.execute(f"UPDATE console_accounts SET {', '.join(sets)} WHERE name = ?", (*params, name)).rowcount == 0:
        return False
    conn.execute("DELETE FROM console_sessions WHERE account = ?", (name,))
    return True


def _set_lockout(conn: sqlite3.Connection, name: str, failed: int, until: int | None, level: int) -> bool:
    return bool(conn.execute("UPDATE console_accounts SET failed_logins = ?, locked_until_ms = ?, lockout_level = ? "
                             "WHERE name = ?", (failed, until, level, name)).rowcount)


def _insert_session(conn: sqlite3.Connection, row: tuple) -> None:
    if conn.execute("SELECT 1 FROM console_accounts WHERE name = ?", (row[1],)).fetchone() is None:
        raise UnknownAccount(row[1])
    conn.execute(f"INSERT INTO console_sessions ({SESSION_COLUMNS}) VALUES (?,?,?,?,?,?)", row)


def _rowcount(conn: sqlite3.Connection, sql: str, params: tuple) -> int:
    return conn.execute(sql, params).rowcount


class SqliteConsole:
    """The console methods of `Store` for SQLite; mixed into SqliteStore."""

    # Provided by SqliteStore.
    clock_ms: Callable[[], int]
    _write: Callable[..., Awaitable[Any]]
    _query: Callable[..., Awaitable[list[tuple]]]
    _read: Callable[..., Awaitable[Any]]
    _seen_since_ms: Callable[[], int]

    async def create_console_account(self, name: str, password_hash: str, *, department: str, region_code: str,
                                     role: str = "supervisor", pii: bool = False,
                                     created_by: str = "") -> ConsoleAccount:
        made = new_account(name, password_hash, department, region_code, role, pii, created_by, self.clock_ms())
        row = account_row(made)
        await self._write(_insert_account, (*row[:5], int(made.pii), int(made.disabled), *row[7:]))
        return made

    async def get_console_account(self, name: str) -> ConsoleAccount | None:
        rows = await self._query(f"SELECT {ACCOUNT_COLUMNS} FROM console_accounts WHERE name = ?", (name,))
        return account(rows[0]) if rows else None

    async def list_console_accounts(self) -> list[ConsoleAccount]:
        return [account(row) for row in await self._query(f"SELECT {ACCOUNT_COLUMNS} FROM console_accounts "
                                                          "ORDER BY name")]

    async def update_console_account(self, name: str, *, password_hash: str | None = None,
                                     disabled: bool | None = None) -> bool:
        check_account_name(name)
        if password_hash is not None:
            check_password_hash(password_hash)
        return bool(await self._write(_update_account, name, password_hash, disabled))

    async def set_console_lockout(self, name: str, *, failed_logins: int, locked_until_ms: int | None,
                                  lockout_level: int) -> bool:
        check_lockout(failed_logins, locked_until_ms, lockout_level)
        return bool(await self._write(_set_lockout, name, failed_logins, locked_until_ms, lockout_level))

    async def create_console_session(self, session: ConsoleSession) -> None:
        await self._write(_insert_session, session_row(check_session(session)))

    async def get_console_session(self, id_sha256: bytes) -> ConsoleSession | None:
        check_session_hash(id_sha256)
        rows = await self._query(f"SELECT {SESSION_COLUMNS} FROM console_sessions WHERE id_sha256 = ?", (id_sha256,))
        return session(rows[0]) if rows else None

    async def touch_console_session(self, id_sha256: bytes, last_seen_ms: int) -> None:
        check_session_hash(id_sha256)
        check_int("last_seen_ms", last_seen_ms)
        await self._write(_rowcount, "UPDATE console_sessions SET last_seen_ms = ? WHERE id_sha256 = ?",
                          (last_seen_ms, id_sha256))

    async def end_console_sessions(self, *, id_sha256: bytes | None = None, account: str | None = None) -> int:
        if (id_sha256 is None) == (account is None):
            raise ValueError("end_console_sessions: give id_sha256 or account, one of the two")
        if id_sha256 is not None:
            return int(await self._write(_rowcount, "DELETE FROM console_sessions WHERE id_sha256 = ?",
                                         (check_session_hash(id_sha256),)))
        return int(await self._write(_rowcount, "DELETE FROM console_sessions WHERE account = ?",
                                     (check_account_name(str(account)),)))

    async def prune_console_sessions(self, *, now_ms: int, idle_before_ms: int) -> int:
        check_int("now_ms", now_ms)
        check_int("idle_before_ms", idle_before_ms)
        return int(await self._write(_rowcount, "DELETE FROM console_sessions WHERE expires_at_ms <= ? "
                                              "OR last_seen_ms < ?", (now_ms, idle_before_ms)))

    async def warning_counts(self, *, region_scope: str | None = None,
                             state: WarningState | str | None = None) -> list[WarningCount]:
        parts: list[str] = ["1"]
        params: list[Any] = []
        wanted = check_state(state)
        if wanted is not None:
            parts.append("state = ?")
            params.append(wanted)
        if region_scope is not None:
            parts.append(f"region_code IN {_CODES_IN}")
            params.append(orjson.dumps(sorted(covered_codes(region_scope))).decode())
        rows = await self._query(f"SELECT region_code, level, state, count(*) FROM warnings WHERE {' AND '.join(parts)} "
                                 "GROUP BY state, region_code, level ORDER BY region_code, level, state", params)
        return [warning_count(row) for row in rows]

    async def warnings_opened(self, *, since_ms: int, region_scope: str | None = None) -> list[tuple[date, int]]:
        check_int("since_ms", since_ms)
        parts: list[str] = ["opened_at_ms >= ?"]
        params: list[Any] = [since_ms]
        if region_scope is not None:
            # `+`: keep SQLite on the (opened_at_ms, region_code) index; left to itself it took
            # the region index and read every warning of the scope (94 ms against 22 ms, 28k)
            parts.append(f"+region_code IN {_CODES_IN}")
            params.append(orjson.dumps(sorted(covered_codes(region_scope))).decode())
        rows = await self._query(f"SELECT (opened_at_ms + {CHINA_OFFSET_MS}) / {DAY_MS} AS day, count(*) FROM warnings "
                                 f"WHERE {' AND '.join(parts)} GROUP BY day ORDER BY day", params)
        return [(china_day_number(day), int(count)) for day, count in rows]

    async def outbox_glance(self, *, now_ms: int, cap: int) -> OutboxStatus:
        check_int("now_ms", now_ms)
        check_cap(cap)

        def glance(conn: sqlite3.Connection) -> OutboxStatus:
            counted = "SELECT count(*) FROM (SELECT 1 FROM outbox WHERE state = ? LIMIT ?)"
            pending = conn.execute(counted, ("pending", cap + 1)).fetchone()[0]
            dead = conn.execute(counted, ("dead", cap + 1)).fetchone()[0]
            # the id order, not the due index: the first pending row is the oldest one
            oldest = conn.execute("SELECT created_at_ms FROM outbox WHERE +state = 'pending' ORDER BY id LIMIT 1"
                                  ).fetchone()
            age = max(0.0, (now_ms - oldest[0]) / 1000.0) if oldest is not None else 0.0
            return OutboxStatus(pending=pending, oldest_age_s=age, dead_letters=dead)

        return await self._read(glance)

    async def count_devices(self, *, online: bool | None = None, region_scope: str | None = None) -> int:
        conditions = device_filters("", 1, None, None, online, self._seen_since_ms())
        if region_scope is not None:
            conditions.append((f"region_code IN {_CODES_IN.replace('?', '{}')}",
                               orjson.dumps(sorted(covered_codes(region_scope))).decode()))
        clause, params = where(conditions, lambda _: "?")
        rows = await self._query(f"SELECT count(*) FROM devices{clause}", params)
        return int(rows[0][0])
