"""The PostgreSQL store's console accounts, sessions and figures: a mixin of `PostgresStore`.

The rules are `lmg.storage.console`'s, shared with SQLite; this module is only their SQL.
A change that touches two tables (a new password ends the account's sessions) is one
transaction.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from datetime import date
from typing import Any

import asyncpg

from lmg.protocol.regions import covered_codes
from lmg.storage.api import ConsoleAccount, ConsoleSession, OutboxStatus, WarningCount, WarningState
from lmg.storage.backend import check_int, device_filters, where
from lmg.storage.console import (
    ACCOUNT_COLUMNS, CHINA_OFFSET_MS, DAY_MS, SESSION_COLUMNS, account, account_row, check_account_name, check_cap,
    check_lockout, check_password_hash, check_session, check_session_hash, check_state, china_day_number,
    new_account, session, session_row, warning_count,
)
from lmg.storage.errors import AccountExists, UnknownAccount


def _count(status: str) -> int:
    """The row count of a command status such as 'DELETE 3'."""
    return int(status.rsplit(" ", 1)[-1])


class PostgresConsole:
    """The console methods of `Store` for PostgreSQL; mixed into PostgresStore."""

    # Provided by PostgresStore.
    clock_ms: Callable[[], int]
    _connection: Callable[[], AbstractAsyncContextManager[asyncpg.Connection]]
    _fetch: Callable[..., Any]
    _execute: Callable[..., Any]
    _seen_since_ms: Callable[[], int]

    async def create_console_account(self, name: str, password_hash: str, *, department: str, region_code: str,
                                     role: str = "supervisor", pii: bool = False,
                                     created_by: str = "") -> ConsoleAccount:
        made = new_account(name, password_hash, department, region_code, role, pii, created_by, self.clock_ms())
        status = await self._execute(
            f"INSERT INTO console_accounts ({ACCOUNT_COLUMNS}) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12) "
            "ON CONFLICT (name) DO NOTHING", *account_row(made))
        if _count(status) == 0:
            raise AccountExists(name)
        return made

    async def get_console_account(self, name: str) -> ConsoleAccount | None:
        rows = await self._fetch(f"SELECT {ACCOUNT_COLUMNS} FROM console_accounts WHERE name = $1", name)
        return account(rows[0]) if rows else None

    async def list_console_accounts(self) -> list[ConsoleAccount]:
        return [account(row) for row in await self._fetch(f"SELECT {ACCOUNT_COLUMNS} FROM console_accounts "
                                                          "ORDER BY name")]

    async def update_console_account(self, name: str, *, password_hash: str | None = None,
                                     disabled: bool | None = None) -> bool:
        check_account_name(name)
        if password_hash is not None:
            check_password_hash(password_hash)
        async with self._connection() as conn, conn.transaction():
            status = await conn.execute(
                "UPDATE console_accounts SET password_hash = coalesce($2, password_hash), "
                "disabled = coalesce($3, disabled) WHERE name = $1", name, password_hash, disabled)
            if _count(status) == 0:
                return False
            if password_hash is not None or disabled is not None:
                await conn.execute("DELETE FROM console_sessions WHERE account = $1", name)
            return True

    async def set_console_lockout(self, name: str, *, failed_logins: int, locked_until_ms: int | None,
                                  lockout_level: int) -> bool:
        check_lockout(failed_logins, locked_until_ms, lockout_level)
        status = await self._execute("UPDATE console_accounts SET failed_logins = $2, locked_until_ms = $3, "
                                     "lockout_level = $4 WHERE name = $1", name, failed_logins, locked_until_ms,
                                     lockout_level)
        return _count(status) > 0

    async def create_console_session(self, session: ConsoleSession) -> None:
        row = session_row(check_session(session))
        try:
            await self._execute(f"INSERT INTO console_sessions ({SESSION_COLUMNS}) VALUES ($1,$2,$3,$4,$5,$6)", *row)
        except asyncpg.ForeignKeyViolationError:
            raise UnknownAccount(session.account) from None

    async def get_console_session(self, id_sha256: bytes) -> ConsoleSession | None:
        check_session_hash(id_sha256)
        rows = await self._fetch(f"SELECT {SESSION_COLUMNS} FROM console_sessions WHERE id_sha256 = $1", id_sha256)
        return session(rows[0]) if rows else None

    async def touch_console_session(self, id_sha256: bytes, last_seen_ms: int) -> None:
        check_session_hash(id_sha256)
        check_int("last_seen_ms", last_seen_ms)
        await self._execute("UPDATE console_sessions SET last_seen_ms = $2 WHERE id_sha256 = $1", id_sha256,
                            last_seen_ms)

    async def end_console_sessions(self, *, id_sha256: bytes | None = None, account: str | None = None) -> int:
        if (id_sha256 is None) == (account is None):
            raise ValueError("end_console_sessions: give id_sha256 or account, one of the two")
        if id_sha256 is not None:
            return _count(await self._execute("DELETE FROM console_sessions WHERE id_sha256 = $1",
                                              check_session_hash(id_sha256)))
        return _count(await self._execute("DELETE FROM console_sessions WHERE account = $1",
                                          check_account_name(str(account))))

    async def prune_console_sessions(self, *, now_ms: int, idle_before_ms: int) -> int:
        check_int("now_ms", now_ms)
        check_int("idle_before_ms", idle_before_ms)
        return _count(await self._execute("DELETE FROM console_sessions WHERE expires_at_ms <= $1 "
                                          "OR last_seen_ms < $2", now_ms, idle_before_ms))

    async def warning_counts(self, *, region_scope: str | None = None,
                             state: WarningState | str | None = None) -> list[WarningCount]:
        parts: list[str] = ["true"]
        params: list[Any] = []
        wanted = check_state(state)
        if wanted is not None:
            params.append(wanted)
            parts.append(f"state = ${len(params)}")
        if region_scope is not None:
            params.append(sorted(covered_codes(region_scope)))
            parts.append(f"region_code = ANY(${len(params)}::text[])")
        rows = await self._fetch(f"SELECT region_code, level, state, count(*) FROM warnings WHERE {' AND '.join(parts)} "
                                 "GROUP BY state, region_code, level ORDER BY region_code, level, state", *params)
        return [warning_count(row) for row in rows]

    async def warnings_opened(self, *, since_ms: int, region_scope: str | None = None) -> list[tuple[date, int]]:
        check_int("since_ms", since_ms)
        parts: list[str] = ["opened_at_ms >= $1"]
        params: list[Any] = [since_ms]
        if region_scope is not None:
            params.append(sorted(covered_codes(region_scope)))
            parts.append(f"region_code = ANY(${len(params)}::text[])")
        rows = await self._fetch(f"SELECT (opened_at_ms + {CHINA_OFFSET_MS}) / {DAY_MS} AS day, count(*) FROM warnings "
                                 f"WHERE {' AND '.join(parts)} GROUP BY day ORDER BY day", *params)
        return [(china_day_number(day), int(count)) for day, count in rows]

    async def outbox_glance(self, *, now_ms: int, cap: int) -> OutboxStatus:
        check_int("now_ms", now_ms)
        check_cap(cap)
        counted = "SELECT count(*) FROM (SELECT 1 FROM outbox WHERE state = $1 LIMIT $2) AS o"
        async with self._connection() as conn:
            pending = await conn.fetchval(counted, "pending", cap + 1)
            dead = await conn.fetchval(counted, "dead", cap + 1)
            oldest = await conn.fetchval("SELECT created_at_ms FROM outbox WHERE state = 'pending' ORDER BY id LIMIT 1")
        age = max(0.0, (now_ms - oldest) / 1000.0) if oldest is not None else 0.0
        return OutboxStatus(pending=int(pending), oldest_age_s=age, dead_letters=int(dead))

    async def count_devices(self, *, online: bool | None = None, region_scope: str | None = None) -> int:
        conditions = device_filters("", 1, None, None, online, self._seen_since_ms())
        if region_scope is not None:
            conditions.append(("region_code = ANY({}::text[])", sorted(covered_codes(region_scope))))
        clause, params = where(conditions, lambda n: f"${n}")
        rows = await self._fetch(f"SELECT count(*) FROM devices{clause}", *params)
        return int(rows[0][0])
