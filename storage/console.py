"""The console's accounts, sessions and figures: the rules both backends share (issue 16).

`SqliteConsole` (storage/sqlite_console.py) and `PostgresConsole` (storage/postgres_console.py)
are only their SQL. Rules kept here:

- An account's name is 1-64 letters, digits, `.`, `_`, `@` or `-` (it appears in the audit
  log as `account:NAME` and in URLs of nobody); names are never reused: a disabled account
  keeps its name.
- The password hash is an argon2 PHC string (`$argon2id$...`, at most 512 characters);
  the store never sees a password. The department is a `Department`, the region a node of
  lmg.protocol.regions, the role one of `CONSOLE_ROLES`.
- A session is stored by the SHA-256 of its cookie (32 bytes); its CSRF token is 43
  URL-safe characters (32 random bytes).
- The day a warning opened is counted in China time (UTC+8, no daylight saving), as every
  day of the supervision is: day number = (opened_at_ms + 8 h) // 1 day.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import date, timedelta
from typing import Any

from lmg.protocol.regions import UnknownRegion
from lmg.protocol.regions import is_known as is_known_region
from lmg.storage.api import (
    CONSOLE_ROLES, SHA256_BYTES, ConsoleAccount, ConsoleSession, Department, WarningCount, WarningState,
)

ACCOUNT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
_HASH_CHARS = 512  # an argon2id PHC string with default parameters is ~97 characters
_CSRF = re.compile(r"[A-Za-z0-9_-]{43}")
_CREATED_BY_CHARS = 256
ACCOUNT_COLUMNS = ("name, password_hash, department, region_code, role, pii, disabled, failed_logins, "
                   "locked_until_ms, lockout_level, created_at_ms, created_by")
SESSION_COLUMNS = "id_sha256, account, csrf_token, created_at_ms, expires_at_ms, last_seen_ms"


def check_account_name(name: str) -> str:
    if not isinstance(name, str) or not ACCOUNT_NAME.fullmatch(name):
        raise ValueError(f"account name {name!r}: 1-64 letters, digits, '.', '_', '@' or '-', starting with a letter "
                         "or digit (it names the person in the audit log)")
    return name


def check_password_hash(password_hash: str) -> str:
    if (not isinstance(password_hash, str) or not password_hash.startswith("$argon2")
            or len(password_hash) > _HASH_CHARS or not password_hash.isprintable()):
        raise ValueError("password_hash: an argon2 PHC string ($argon2id$...) from server/console/accounts.py, "
                         "never a password")
    return password_hash


def new_account(name: str, password_hash: str, department: str, region_code: str, role: str, pii: bool,
                created_by: str, now_ms: int) -> ConsoleAccount:
    """The checked record of a new account; ValueError naming the field, UnknownRegion."""
    check_account_name(name)
    check_password_hash(password_hash)
    parsed = Department.parse(department)
    if not isinstance(region_code, str) or not is_known_region(region_code):
        raise UnknownRegion(str(region_code))
    if role not in CONSOLE_ROLES:
        raise ValueError(f"role {role!r}: use {' or '.join(CONSOLE_ROLES)}")
    if type(pii) is not bool:
        raise ValueError(f"pii {pii!r}: True or False")
    if not isinstance(created_by, str) or len(created_by) > _CREATED_BY_CHARS:
        raise ValueError(f"created_by {created_by!r}: a string of at most {_CREATED_BY_CHARS} characters")
    return ConsoleAccount(name, password_hash, parsed, region_code, role, pii, False, 0, None, 0, now_ms, created_by)


def account_row(a: ConsoleAccount) -> tuple:
    return (a.name, a.password_hash, a.department.value, a.region_code, a.role, a.pii, a.disabled, a.failed_logins,
            a.locked_until_ms, a.lockout_level, a.created_at_ms, a.created_by)


def account(row: Sequence[Any]) -> ConsoleAccount:
    """A ConsoleAccount from a row of ACCOUNT_COLUMNS (SQLite's 0/1 flags become bools)."""
    return ConsoleAccount(row[0], row[1], Department(row[2]), row[3], row[4], bool(row[5]), bool(row[6]), row[7],
                          row[8], row[9], row[10], row[11])


def check_lockout(failed_logins: int, locked_until_ms: int | None, lockout_level: int) -> None:
    for label, value in (("failed_logins", failed_logins), ("lockout_level", lockout_level)):
        if type(value) is not int or not 0 <= value < 2**31:
            raise ValueError(f"{label} {value!r}: a count from 0")
    if locked_until_ms is not None and (type(locked_until_ms) is not int or locked_until_ms < 0):
        raise ValueError(f"locked_until_ms {locked_until_ms!r}: Unix ms or None")


def check_session_hash(id_sha256: bytes) -> bytes:
    if type(id_sha256) is not bytes or len(id_sha256) != SHA256_BYTES:
        raise ValueError(f"id_sha256: the {SHA256_BYTES}-byte SHA-256 of the session cookie")
    return id_sha256


def check_session(session: ConsoleSession) -> ConsoleSession:
    if type(session) is not ConsoleSession:
        raise ValueError(f"session: a ConsoleSession, got {type(session).__name__}")
    check_session_hash(session.id_sha256)
    check_account_name(session.account)
    if not isinstance(session.csrf_token, str) or not _CSRF.fullmatch(session.csrf_token):
        raise ValueError("csrf_token: 43 URL-safe base64 characters (32 random bytes)")
    for label in ("created_at_ms", "expires_at_ms", "last_seen_ms"):
        value = getattr(session, label)
        if type(value) is not int or value < 0:
            raise ValueError(f"{label} {value!r}: Unix ms")
    if session.expires_at_ms <= session.created_at_ms:
        raise ValueError("expires_at_ms: after created_at_ms")
    return session


def session_row(s: ConsoleSession) -> tuple:
    return (s.id_sha256, s.account, s.csrf_token, s.created_at_ms, s.expires_at_ms, s.last_seen_ms)


def session(row: Sequence[Any]) -> ConsoleSession:
    return ConsoleSession(bytes(row[0]), row[1], row[2], row[3], row[4], row[5])


def warning_count(row: Sequence[Any]) -> WarningCount:
    """A WarningCount from (region_code, level, state, count)."""
    return WarningCount(row[0], int(row[1]), WarningState(row[2]), int(row[3]))


def china_day_number(day_number: int) -> date:
    """The date of a China day number: (Unix ms + 8 h) // 1 day."""
    return date(1970, 1, 1) + timedelta(days=int(day_number))


def check_state(state: WarningState | str | None) -> str | None:
    if state is None:
        return None
    try:
        return WarningState(state).value
    except ValueError:
        raise ValueError(f"state {state!r}: use one of {', '.join(s.value for s in WarningState)}") from None


def check_cap(cap: int) -> int:
    if type(cap) is not int or not 1 <= cap <= 10_000_000:
        raise ValueError(f"cap {cap!r}: an int from 1 to 10,000,000")
    return cap


CHINA_OFFSET_MS = 8 * 3_600_000
DAY_MS = 86_400_000
