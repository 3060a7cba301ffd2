"""The storage interface the server talks to, and the records that cross it.

One abstract `Store` with two implementations (`lmg.storage.sqlite`, `lmg.storage.postgres`)
chosen by URL in `lmg.storage.open_store`. Rules every implementation keeps:

- Durable before acknowledged: `store_punches` returns only after the transaction holding
  those punches has committed (SQLite: WAL fsync with synchronous=FULL; PostgreSQL:
  COMMIT). A record reported STORED or DUPLICATE is on disk.
- Idempotent per (device_serial, record_no): a punch is stored once however often it
  arrives, in one batch, across batches or from concurrent callers.
- A STORED punch enters the forwarding outbox in the same transaction; a rejected record
  never does.
- Faults surface as `StoreUnavailable` (nothing committed, nack and let the device
  resend); the store keeps working once the fault clears.
- Every change another gateway process must act on (a session to end, a command queued,
  a roster changed) writes a `Signal` in the same transaction as the change.
- A call that the contract calls one transaction checks all of its input first and
  raises ValueError naming the field before anything is written.

Times are Unix milliseconds (UTC) in ints named `*_ms`; sizes are bytes. Roster dates are
`datetime.date` values in China Standard Time, and "today" is always the caller's.
"""

from __future__ import annotations

import abc
import asyncio
import enum
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import KW_ONLY, dataclass, field
from datetime import date
from typing import Any, Literal, NamedTuple

# The code tables live with the protocol; the store uses the same ones.
from lmg.protocol.codes import Direction, MessageType, VerifyMode  # noqa: F401 - re-exported by storage
from lmg.protocol.identity import is_valid_id_number
from lmg.protocol.posts import Post
from lmg.protocol.regions import UnknownRegion
from lmg.protocol.regions import is_known as is_known_region
from lmg.protocol.schema import MAX_FRAME_SIZE
from lmg.protocol.warning_codes import (  # noqa: F401 - re-exported by storage
    Department, Disposition, WarningEventKind, WarningState,
)

U32_MAX = 0xFFFF_FFFF
SECRET_BYTES = 32
SHA256_BYTES = 32
WORKER_ID_CHARS = 18  # GB 11643 citizen ID number: 17 digits and a check character
# temperature_dc: the columns are 32-bit integers; terminals send a u16, and a rejected
# record keeps whatever the terminal sent (an i16 bound refused 3276.8 °C from a broken
# sensor and failed the terminal's whole frame).
_I32_MIN, _I32_MAX = -(2**31), 2**31 - 1
_I64_MIN = -(2**63)
_I64_MAX = 2**63 - 1


def wall_clock_ms() -> int:
    """Now as Unix ms (UTC): the default clock of the stores."""
    return time.time_ns() // 1_000_000


# ---------------------------------------------------------------------------- devices


@dataclass(frozen=True, slots=True)
class Device:
    """A provisioned turnstile. `secret` is the 32-byte HMAC key; repr never shows it."""

    serial: str
    secret: bytes
    project_code: str
    region_code: str  # GB/T 2260 administrative division, 6 digits; Gansu is 62xxxx
    enabled: bool = True
    last_seen_ms: int | None = None
    online: bool = False
    firmware: str = ""
    roster_version: int = 0
    created_at_ms: int = 0
    last_address: str | None = None  # peer address (host) of its last session, if any

    def __repr__(self) -> str:
        return (
            f"Device(serial={self.serial!r}, secret=<hidden>, project_code={self.project_code!r}, "
            f"region_code={self.region_code!r}, enabled={self.enabled}, "
            f"last_seen_ms={self.last_seen_ms}, online={self.online}, "
            f"firmware={self.firmware!r}, roster_version={self.roster_version}, "
            f"last_address={self.last_address!r})"
        )

    __str__ = __repr__


@dataclass(frozen=True, slots=True)
class Presence:
    """One device's heartbeat state for `Store.update_presence`.

    `firmware` / `roster_version` / `address` of None leave the stored value unchanged;
    `address` (the session's peer host) is stored as the device's `last_address`.
    """

    serial: str
    last_seen_ms: int
    online: bool
    firmware: str | None = None
    roster_version: int | None = None
    address: str | None = None


def check_device_fields(serial: str, project_code: str, region_code: str) -> None:
    """Raise ValueError naming the bad field; the same rules on every backend."""
    if not isinstance(serial, str) or not 1 <= len(serial) <= 64 or not serial.isprintable():
        raise ValueError(f"device serial {serial!r}: use 1-64 printable characters")
    if not isinstance(project_code, str) or not 1 <= len(project_code) <= 64:
        raise ValueError(f"project code {project_code!r}: use 1-64 characters")
    if not (isinstance(region_code, str) and len(region_code) == 6 and region_code.isascii()
            and region_code.isdigit()):
        raise ValueError(
            f"region code {region_code!r}: use the 6-digit GB/T 2260 code (Gansu is 62xxxx)"
        )
    if not is_known_region(region_code):
        raise UnknownRegion(region_code)


def check_limit(limit: int, maximum: int | None = None) -> None:
    """Raise ValueError unless `limit` is an int in 0..maximum (no maximum if None)."""
    if type(limit) is not int or limit < 0 or (maximum is not None and limit > maximum):
        bound = f"0..{maximum:,}" if maximum is not None else "0 or more"
        raise ValueError(f"limit {limit!r}: use an int in {bound} and page with the cursor")


# --------------------------------------------------------------- session-end signal


class SessionEndReason(enum.StrEnum):
    """Why a device's open session must end at once, wherever it runs."""

    DISABLED = "disabled"  # disable_device / set_device_enabled(serial, False)
    SECRET_ROTATED = "secret_rotated"  # rotate_device_secret: the session's key is stale
    CLOSED_BY_OPERATOR = "closed_by_operator"  # end_device_sessions from the operations API


@dataclass(frozen=True, slots=True)
class SessionEnd:
    """A session-end signal as the session-end API reads it: every gateway holding an open
    session of `device_serial` closes it. `id` is the signal's id (they grow in commit
    order and are never reused)."""

    id: int
    device_serial: str
    reason: SessionEndReason
    created_at_ms: int


# --------------------------------------------------------------------------- signals


class SignalKind(enum.StrEnum):
    """What a signal tells the running gateways; `Signal.subject` and `detail` per kind."""

    SESSION_END = "session_end"  # subject: the serial; detail: the SessionEndReason value
    COMMAND = "command"  # subject: the serial; detail: the command id
    ROSTER = "roster"  # subject: the project code; detail: its new roster version
    # subject: empty; detail: JSON {serial: [session token, authenticated at ms]} of the
    # sessions one gateway process authenticated (`announce_sessions`)
    TAKEOVER = "takeover"


@dataclass(frozen=True, slots=True)
class Signal:
    """A notice to every gateway process on every node. Ids grow in commit order and are
    never reused: a reader that keeps the last id it handled misses none."""

    id: int
    kind: SignalKind
    subject: str
    detail: str
    created_at_ms: int


# -------------------------------------------------------------- projects and rosters

PROJECT_CODE_CHARS = 64  # as a device's project_code
# Names, enterprises and teams: the bound of the roster files (lmg.protocol.roster_file);
# longer is a mistake in a file, not a person or a company.
TEXT_CHARS = 128
# A worker's name and card number travel as str8 in ROSTER_ADD / ROSTER_UPDATE (u8 length,
# UTF-8): 255 bytes is all a frame can carry, 85 Chinese characters.
STR8_BYTES = 255
# GB 32100 unified social credit code: 18 characters, digits and capital letters but I, O,
# S, V, Z. The check character is not verified (the register is the authority).
_USCC = re.compile(r"[0-9A-HJ-NPQRTUWXY]{18}")
UpsertOutcome = Literal["added", "updated", "unchanged"]
# Rows per call of list_projects, list_workers and roster_changes: the largest sites have a
# few thousand workers, so a roster is one or two pages; more is a request to page.
MAX_ROSTER_PAGE = 10_000


@dataclass(frozen=True, slots=True)
class Project:
    """A construction project (工程项目) whose site runs terminals.

    `roster_version` is the version of the last change to its roster; `roster_floor` the
    lowest version a delta can start from (0 until tombstones are pruned): a terminal below
    it, or above `roster_version`, gets a full resync.
    """

    code: str
    name: str
    region_code: str  # GB/T 2260, 6 digits
    enterprise: str  # the construction enterprise (施工企业)
    enterprise_uscc: str  # its unified social credit code, 18 characters, or ""
    start_date: date | None
    end_date: date | None
    roster_version: int
    created_at_ms: int
    roster_floor: int = 0


@dataclass(frozen=True, slots=True)
class WorkerIn:
    """One worker of a roster import, before it is stored.

    `post` is a lmg.protocol.posts code or Chinese name ("" or "worker": an ordinary
    worker); the store keeps the code. `face_sha256` names a face stored with
    `Store.put_face`; None keeps the worker's stored face (a new worker has none), since a
    terminal cannot be told to drop a face, only given another. Checked by
    `import_workers`, which raises ValueError naming the worker and the field.
    """

    worker_id: str  # resident ID number (GB 11643), check digit verified
    name: str
    _: KW_ONLY
    card_no: str = ""
    enterprise: str = ""
    team: str = ""
    post: str = "worker"
    entry_date: date
    exit_date: date | None = None  # the first day off the site; None while the worker stays
    face_sha256: bytes | None = None


@dataclass(frozen=True, slots=True)
class Worker:
    """A stored worker of a project: on its roster while `entry_date <= today < exit_date`.

    `version` is the roster version of the row's last change terminals see (0 for a worker
    never on the roster); `added_version` the version at which the worker last joined the
    roster (0 if never); `face_version` the version at which terminals last had to fetch
    the face (it changed on the roster, or the worker joined with it; 0 without a face).
    A worker who left is kept with `on_roster` False (a tombstone) until pruned.
    """

    project_code: str
    worker_id: str
    name: str
    card_no: str
    enterprise: str
    team: str
    post: str  # lmg.protocol.posts code
    entry_date: date
    exit_date: date | None
    face_sha256: bytes | None
    on_roster: bool
    version: int
    added_version: int
    face_version: int
    updated_at_ms: int


@dataclass(frozen=True, slots=True)
class ImportResult:
    """What one `import_workers` call did; `roster_version` is the project's after it."""

    added: int
    updated: int
    unchanged: int
    roster_version: int


def _text(what: str, value: object, *, required: bool, wire: bool = False,
          chars: int = TEXT_CHARS) -> str | None:
    """What is wrong with a text field, or None."""
    if type(value) is not str:
        return f"{what}: must be a string, got {type(value).__name__}"
    if required and not value.strip():
        return f"{what}: must not be empty"
    if len(value) > chars:
        return f"{what}: {len(value)} characters; at most {chars}"
    if not value.isprintable():
        return f"{what} {value!r}: holds control characters"
    if wire and len(value.encode()) > STR8_BYTES:
        return f"{what}: {len(value.encode())} bytes in UTF-8; a terminal takes at most {STR8_BYTES}"
    return None


def _date_problem(what: str, value: object, *, optional: bool) -> str | None:
    if value is None and optional:
        return None
    if type(value) is not date:  # a datetime is a date too, but not one day in China
        return f"{what} {value!r}: must be a datetime.date" + (" or None" if optional else "")
    return None


def check_project_code(code: str) -> None:
    if (type(code) is not str or not 1 <= len(code) <= PROJECT_CODE_CHARS or not code.isprintable()
            or code != code.strip()):
        raise ValueError(f"project code {code!r}: use 1-{PROJECT_CODE_CHARS} printable characters "
                         f"without surrounding spaces")


def check_project_fields(code: str, name: str, region_code: str, enterprise: str,
                         enterprise_uscc: str, start_date: date | None, end_date: date | None) -> None:
    """Raise ValueError naming the bad field; the same rules on every backend."""
    check_project_code(code)
    problem = (_text("project name", name, required=True)
               or _text("enterprise", enterprise, required=False)
               or _date_problem("start_date", start_date, optional=True)
               or _date_problem("end_date", end_date, optional=True))
    if problem:
        raise ValueError(problem)
    if not (type(region_code) is str and len(region_code) == 6 and region_code.isascii()
            and region_code.isdigit()):
        raise ValueError(
            f"region code {region_code!r}: use the 6-digit GB/T 2260 code (Gansu is 62xxxx)")
    if not is_known_region(region_code):
        raise UnknownRegion(region_code)
    if type(enterprise_uscc) is not str or (enterprise_uscc and not _USCC.fullmatch(enterprise_uscc)):
        raise ValueError(f"enterprise_uscc {enterprise_uscc!r}: use the 18-character unified social "
                         f"credit code (digits and capital letters but I, O, S, V, Z) or leave it empty")
    if start_date is not None and end_date is not None and end_date < start_date:
        raise ValueError(f"end_date {end_date} is before start_date {start_date}")


def check_region_prefix(prefix: str) -> None:
    if type(prefix) is not str or len(prefix) > 6 or (prefix and not (prefix.isascii() and prefix.isdigit())):
        raise ValueError(f"region prefix {prefix!r}: use 0-6 digits of a GB/T 2260 code "
                         f"(62 Gansu, 6201 Lanzhou, 620102 one district)")


def check_worker(row: WorkerIn) -> WorkerIn:
    """`row` with its post as the post's code; ValueError naming the worker and the field."""
    if type(row) is not WorkerIn:
        raise ValueError(f"import_workers takes WorkerIn rows, got {type(row).__name__}")
    who = row.worker_id
    if type(who) is not str or not is_valid_id_number(who):
        raise ValueError(f"worker {who!r}: worker_id is not a valid resident ID number "
                         f"(18 characters, GB 11643 check digit, capital X)")
    problem = (_text("name", row.name, required=True, wire=True)
               or _text("card_no", row.card_no, required=False, wire=True)
               or _text("enterprise", row.enterprise, required=False)
               or _text("team", row.team, required=False)
               or _date_problem("entry_date", row.entry_date, optional=False)
               or _date_problem("exit_date", row.exit_date, optional=True))
    if problem is None and row.exit_date is not None and row.exit_date < row.entry_date:
        problem = f"exit_date {row.exit_date} is before entry_date {row.entry_date}"
    if problem is None and row.face_sha256 is not None and (
            type(row.face_sha256) is not bytes or len(row.face_sha256) != SHA256_BYTES):
        problem = f"face_sha256: must be the {SHA256_BYTES}-byte SHA-256 of a stored face, or None"
    if problem is None and type(row.post) is not str:
        problem = f"post {row.post!r}: must be a string (a lmg.protocol.posts code or Chinese name)"
    if problem is not None:
        raise ValueError(f"worker {who}: {problem}")
    try:
        post = Post.parse(row.post).code
    except ValueError as exc:
        raise ValueError(f"worker {who}: post: {exc}") from None
    return row if post == row.post else WorkerIn(
        row.worker_id, row.name, card_no=row.card_no, enterprise=row.enterprise, team=row.team,
        post=post, entry_date=row.entry_date, exit_date=row.exit_date, face_sha256=row.face_sha256)


def check_day(what: str, value: date) -> None:
    problem = _date_problem(what, value, optional=False)
    if problem:
        raise ValueError(problem + " (the date in China)")


def check_version(what: str, value: int) -> None:
    if type(value) is not int or not 0 <= value <= U32_MAX:
        raise ValueError(f"{what} {value!r}: must be a roster version, an int in 0..{U32_MAX}")


# ------------------------------------------------------------------------------ faces

# Smaller than 1 KiB is not a photo a terminal can enroll a face from (a 64x64 JPEG
# thumbnail is about 2 KB); such a file is a placeholder or a broken export.
FACE_MIN_BYTES = 1024
FACE_FORMATS = {b"\xff\xd8\xff": "jpeg", b"\x89PNG\r\n\x1a\n": "png"}  # magic bytes -> format


# ------------------------------------------------------------------------ API tokens

API_TOKEN_NAME_CHARS = 64
_SCOPE_CHARS = 64
_CREATED_BY_CHARS = 256


@dataclass(frozen=True, slots=True)
class ApiToken:
    """A named bearer token of the operations API, stored as the SHA-256 of the token.

    `region_code` (a node of lmg.protocol.regions) limits a supervisor's token to what that
    region covers, and `department` says whose supervisor it is (住建 or 人社); both None
    for an operator's token, which is not limited to a region. A department token always
    has a region (620000 for the province). A revoked token is kept (its name stays taken)
    with `revoked_at_ms` set.
    """

    name: str
    token_sha256: bytes
    scopes: frozenset[str]
    region_code: str | None
    created_at_ms: int
    revoked_at_ms: int | None
    created_by: str
    department: Department | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at_ms is None


def scopes_text(scopes: Iterable[str]) -> str:
    """The stored form of a scope set: sorted, comma-separated. Raises ValueError naming
    `scopes` for an empty set, a bare string, or a scope that would not read back."""
    if isinstance(scopes, (str, bytes)):
        raise ValueError(f"scopes {scopes!r}: pass a set of scope names, not one string")
    names = set(scopes)
    if not names:
        raise ValueError("scopes: a token needs at least one scope")
    for scope in names:
        if (type(scope) is not str or not 1 <= len(scope) <= _SCOPE_CHARS or not scope.isprintable()
                or "," in scope or scope != scope.strip()):
            raise ValueError(f"scopes: {scope!r} is not a scope name; use 1-{_SCOPE_CHARS} printable "
                             f"characters without commas or surrounding spaces")
    return ",".join(sorted(names))


def scopes_from_text(text: str) -> frozenset[str]:
    return frozenset(text.split(","))


def check_api_token_fields(name: str, token_sha256: bytes, region_code: str | None,
                           created_by: str, department: str | None = None) -> Department | None:
    """Raise ValueError naming the bad field; the same rules on every backend. Returns the
    department parsed (None for none)."""
    check_api_token_name(name)
    check_token_sha256(token_sha256)
    if region_code is not None and not (isinstance(region_code, str) and len(region_code) == 6
                                        and region_code.isascii() and region_code.isdigit()):
        raise ValueError(
            f"region code {region_code!r}: use the 6-digit GB/T 2260 code (Gansu is 62xxxx) or None"
        )
    if region_code is not None and not is_known_region(region_code):
        raise UnknownRegion(region_code)
    if not isinstance(created_by, str) or len(created_by) > _CREATED_BY_CHARS:
        raise ValueError(
            f"created_by {created_by!r}: use a string of at most {_CREATED_BY_CHARS} characters")
    if department is None:
        return None
    parsed = Department.parse(department)
    if region_code is None:
        raise ValueError(f"department {parsed.value}: a department's token needs its region code "
                         f"(620000 for the province)")
    return parsed


def check_api_token_name(name: str) -> None:
    if (not isinstance(name, str) or not 1 <= len(name) <= API_TOKEN_NAME_CHARS
            or not name.isprintable()):
        raise ValueError(f"token name {name!r}: use 1-{API_TOKEN_NAME_CHARS} printable characters")


def check_token_sha256(token_sha256: bytes) -> None:
    if type(token_sha256) is not bytes or len(token_sha256) != SHA256_BYTES:
        raise ValueError(f"token_sha256: must be the {SHA256_BYTES}-byte SHA-256 digest of the token")


# ------------------------------------------------------------ console accounts

CONSOLE_ROLES = ("supervisor", "operator")


@dataclass(frozen=True, slots=True)
class ConsoleAccount:
    """A person's account of the supervision console (issue 16), apart from API tokens.

    `password_hash` is an argon2id PHC string (server/console/accounts.py makes and checks
    it; the store keeps it as given). A supervisor sees what `region_code` covers; an
    operator also works the devices and forwarding pages. `failed_logins`,
    `locked_until_ms` and `lockout_level` are the lockout core's state
    (server/console/lockout.py), written back by `set_console_lockout`.
    """

    name: str
    password_hash: str
    department: Department
    region_code: str
    role: str  # CONSOLE_ROLES
    pii: bool
    disabled: bool
    failed_logins: int
    locked_until_ms: int | None
    lockout_level: int
    created_at_ms: int
    created_by: str


@dataclass(frozen=True, slots=True)
class ConsoleSession:
    """A signed-in browser: the SHA-256 of its cookie's 32 random bytes (never the bytes),
    the account, the synchronizer CSRF token of its forms, and its ends: `expires_at_ms`
    (absolute) and `last_seen_ms` (the idle end counts from it)."""

    id_sha256: bytes
    account: str
    csrf_token: str
    created_at_ms: int
    expires_at_ms: int
    last_seen_ms: int


@dataclass(frozen=True, slots=True)
class WarningCount:
    """How many warnings of one region are at one level in one state: the console's
    overview (`warning_counts`)."""

    region_code: str
    level: int
    state: WarningState
    count: int


# ---------------------------------------------------------------------------- punches


class _PunchInFields(NamedTuple):
    device_serial: str
    record_no: int  # u32, the device's own sequence number; with the serial, the identity
    worker_id: str  # 18-character citizen ID number
    punch_time_ms: int  # Unix ms, UTC
    direction: int  # Direction: 1 in, 2 out
    verify_mode: int  # VerifyMode: 1 face, 2 card, 3 ID card, 4 fingerprint
    temperature_dc: int  # body temperature in 0.1 °C; 0 = not measured
    photo_sha256: bytes | None  # 32 bytes, or None without a photo
    photo_size: int  # bytes; 0 without a photo
    reject_reason: int | None = None


class PunchIn(_PunchInFields):
    """One attendance record as decoded from a device, before it is stored.

    `reject_reason` set means the gateway validated the record and found it invalid (the
    code is what the device is told); the store keeps it for audit only. Construction
    raises ValueError for values no device can send (wrong types, out-of-range numbers),
    so one bad record can never fail a whole group-commit batch of other callers.

    An immutable tuple rather than a frozen dataclass: every punch of every device is
    built once, and the frozen dataclass's per-field setattr made construction about
    5 µs (with the check), the largest single cost on the event loop in `lmg bench
    storage`; built as a tuple and checked on the arguments it is about half that.
    Its first nine fields are the punches-table row in column order.
    """

    __slots__ = ()

    def __new__(cls, device_serial, record_no, worker_id, punch_time_ms, direction, verify_mode,
                temperature_dc, photo_sha256, photo_size, reject_reason=None):
        self = tuple.__new__(cls, (device_serial, record_no, worker_id, punch_time_ms, direction,
                                   verify_mode, temperature_dc, photo_sha256, photo_size, reject_reason))
        # One expression on the fast path, over the arguments (locals are the cheapest reads).
        if (
            type(record_no) is int and 0 <= record_no <= U32_MAX
            and type(device_serial) is str and 0 < len(device_serial) <= 64
            and type(worker_id) is str
            and type(punch_time_ms) is int and _I64_MIN <= punch_time_ms <= _I64_MAX
            and type(temperature_dc) is int and _I32_MIN <= temperature_dc <= _I32_MAX
            and type(photo_size) is int and 0 <= photo_size <= _I64_MAX
            and (photo_sha256 is None or (type(photo_sha256) is bytes and len(photo_sha256) == SHA256_BYTES))
            and (
                (reject_reason is None and len(worker_id) == WORKER_ID_CHARS
                 and (direction == 1 or direction == 2)
                 and type(direction) is int and type(verify_mode) is int
                 and 1 <= verify_mode <= 4)
                or (type(reject_reason) is int and 0 <= reject_reason <= 0xFFFF
                    and len(worker_id) <= 64
                    and type(direction) is int and type(verify_mode) is int
                    and _I64_MIN <= direction <= _I64_MAX
                    and _I64_MIN <= verify_mode <= _I64_MAX)
            )
        ):
            return self
        raise ValueError(self._what_is_wrong())

    # `_replace` goes through here: keep the check. The ignore: typeshed types the base
    # `_make` as generic over the class it is called on, and mypy accepts no override of it.
    @classmethod
    def _make(cls, iterable: Iterable[Any]) -> PunchIn:  # type: ignore[override]
        return cls(*iterable)

    def _what_is_wrong(self) -> str:
        """The error message for a record that failed the fast check."""
        if type(self.record_no) is not int or not 0 <= self.record_no <= U32_MAX:
            return f"record_no {self.record_no!r}: must be an int in 0..{U32_MAX}"
        if type(self.device_serial) is not str or not 1 <= len(self.device_serial) <= 64:
            return f"device_serial {self.device_serial!r}: must be 1-64 characters"
        if type(self.worker_id) is not str or len(self.worker_id) > 64:
            return f"worker_id {self.worker_id!r}: must be a string of at most 64 characters"
        for name in ("punch_time_ms", "direction", "verify_mode", "photo_size"):
            value = getattr(self, name)
            if type(value) is not int or not _I64_MIN <= value <= _I64_MAX:
                return f"{name} {value!r}: must be an int that fits 64 bits"
        if self.photo_size < 0:
            return f"photo_size {self.photo_size}: must not be negative"
        if type(self.temperature_dc) is not int or not _I32_MIN <= self.temperature_dc <= _I32_MAX:
            return f"temperature_dc {self.temperature_dc!r}: must be a 32-bit int (0.1 °C)"
        sha = self.photo_sha256
        if sha is not None and (type(sha) is not bytes or len(sha) != SHA256_BYTES):
            return f"photo_sha256 must be {SHA256_BYTES} bytes or None"
        if self.reject_reason is not None:
            return f"reject_reason {self.reject_reason!r}: must be an int in 0..65535"
        if len(self.worker_id) != WORKER_ID_CHARS:
            return (f"worker_id {self.worker_id!r}: must be {WORKER_ID_CHARS} characters; "
                    f"set reject_reason to keep an invalid record for audit")
        return (f"direction {self.direction} / verify_mode {self.verify_mode} out of range "
                f"(1-2 / 1-4); set reject_reason to keep an invalid record for audit")


@dataclass(frozen=True, slots=True)
class Punch:
    """A stored punch: the fields of the PunchIn it came from plus when it was stored."""

    device_serial: str
    record_no: int
    worker_id: str
    punch_time_ms: int
    direction: int
    verify_mode: int
    temperature_dc: int
    photo_sha256: bytes | None
    photo_size: int
    received_at_ms: int

    def same_record(self, record: PunchIn) -> bool:
        """True if every field the device sent is equal to `record`'s."""
        return (
            self.device_serial == record.device_serial
            and self.record_no == record.record_no
            and self.worker_id == record.worker_id
            and self.punch_time_ms == record.punch_time_ms
            and self.direction == record.direction
            and self.verify_mode == record.verify_mode
            and self.temperature_dc == record.temperature_dc
            and self.photo_sha256 == record.photo_sha256
            and self.photo_size == record.photo_size
        )


@dataclass(frozen=True, slots=True)
class RejectedPunch:
    """A record the gateway refused, kept for audit with the reason the device was told."""

    device_serial: str
    record_no: int
    worker_id: str
    punch_time_ms: int
    direction: int
    verify_mode: int
    temperature_dc: int
    photo_sha256: bytes | None
    photo_size: int
    reject_reason: int
    received_at_ms: int


MAX_PUNCH_PAGE = 10_000  # list_punches rows per call: ~3 MB as JSON, and the read that
# finds them holds a read connection for tens of ms; the operations API pages past it.


@dataclass(frozen=True, slots=True)
class PunchListing:
    """One stored punch as `Store.list_punches` lists it. `id` is the cursor: ids grow
    in the order punches were stored (within one group-commit batch PostgreSQL numbers
    them by device and record_no). `project_code` is its device's ("" if the device is
    not provisioned)."""

    id: int
    punch: Punch
    project_code: str


class Outcome(enum.IntEnum):
    STORED = 0  # committed now, and entered the outbox
    DUPLICATE = 1  # already stored earlier (or earlier in the same batch); not stored again
    REJECTED = 2  # arrived with reject_reason; kept for audit only


@dataclass(frozen=True, slots=True)
class PunchOutcome:
    """What happened to one PunchIn. `acknowledged` is what the device may forget."""

    status: Outcome
    reject_reason: int | None = None

    @property
    def acknowledged(self) -> bool:
        return self.status is not Outcome.REJECTED


STORED = PunchOutcome(Outcome.STORED)
DUPLICATE = PunchOutcome(Outcome.DUPLICATE)


# ----------------------------------------------------------------------------- outbox


@dataclass(frozen=True, slots=True)
class OutboxItem:
    """One punch waiting for (or given up on by) the provincial system."""

    id: int
    punch: Punch
    attempts: int  # claims so far; a claim counts as an attempt even if the forwarder dies
    next_attempt_at_ms: int  # while claimed: when the lease runs out
    last_error: str | None
    created_at_ms: int
    dead: bool = False


@dataclass(frozen=True, slots=True)
class PunchMonths:
    """What `maintain_punch_months` did: partitions created, months dropped (their first
    days, China time) and months kept past their retention because a punch in them is
    not yet confirmed by the province."""
    created: int
    dropped: tuple[date, ...]
    held: tuple[date, ...]


@dataclass(frozen=True, slots=True)
class OutboxStatus:
    pending: int
    oldest_age_s: float  # age of the oldest pending item at now_ms; 0.0 if none
    dead_letters: int


# --------------------------------------------------------------- commands and audit


class CommandState(enum.StrEnum):
    """queued --sent--> sent --answer--> acked | failed; queued or sent --> expired | cancelled."""

    QUEUED = "queued"
    SENT = "sent"  # sent at least once, no answer yet; sent again in the device's next session
    ACKED = "acked"  # ACK, CONFIG_REPLY or ROSTER_VERSION_REPLY
    FAILED = "failed"  # NACK (the terminal's result code), or no answer after every send
    EXPIRED = "expired"
    CANCELLED = "cancelled"

    @property
    def pending(self) -> bool:
        """Still to be delivered or answered."""
        return self in (CommandState.QUEUED, CommandState.SENT)


# The operator commands of docs/downlink.md, by message. Roster messages (ROSTER_ADD,
# UPDATE, REMOVE, FACE_CHUNK) are not queued: the gateway builds them from the roster.
OPERATOR_COMMAND_TYPES = frozenset({
    MessageType.SET_TIME, MessageType.CONFIG_GET, MessageType.CONFIG_SET, MessageType.REBOOT,
    MessageType.DOOR_OPEN, MessageType.ROSTER_VERSION_QUERY,
})
# Arguments larger than a whole frame can never be sent (their binary form is smaller
# than the JSON, so this only stops the absurd).
COMMAND_PAYLOAD_MAX_BYTES = MAX_FRAME_SIZE
COMMAND_ERROR_CHARS = 1024  # a reason a person reads, not a dump
MAX_COMMAND_PAGE = 10_000  # list_commands rows per call, as list_punches


@dataclass(frozen=True, slots=True)
class Command:
    """An operator command for one device, delivered in id order.

    `payload` is the UTF-8 JSON of its arguments (the frame is built when it is sent);
    `seq` the frame sequence number of its last send and `attempts` the sends so far;
    `result_code` the terminal's answer (None for no answer); `reply` the UTF-8 JSON of
    an answer that carries data (CONFIG_REPLY's values), else None.
    """

    id: int
    device_serial: str
    command_type: int  # MessageType
    payload: bytes
    state: CommandState
    seq: int | None
    result_code: int | None
    created_at_ms: int
    sent_at_ms: int | None
    completed_at_ms: int | None
    expires_at_ms: int | None
    attempts: int = 0
    error: str | None = None
    created_by: str = ""
    reply: bytes | None = None


@dataclass(frozen=True, slots=True)
class AuditEntry:
    id: int
    at_ms: int
    event: str
    subject: str
    detail: dict[str, Any] = field(default_factory=dict)
    address: str | None = None


# ------------------------------------------------- supervision of key personnel (issue 15)
# The store's side of the supervision of key personnel (docs/storage.md, migration 6):
# bid awards and their committed people, personnel changes, leave, stop-work and pause
# days, the attendance aggregate, warnings and their history. The rules that judge
# attendance are not here (server/supervision/); `lmg.storage.supervision` holds what both
# backends share (checks, the commitment intervals, the warning state table and plan).
# Days are `datetime.date` values in China (Asia/Shanghai, UTC+8 all year); times are
# Unix ms (UTC). A day range (`first_day`, `last_day`) includes both ends.


# Department, WarningState, WarningEventKind and Disposition are lmg.protocol.warning_codes'
# (imported above and re-exported): one table for the store and the supervision core.


@dataclass(frozen=True, slots=True)
class KeyPerson:
    """One person a bid award commits to a key post."""

    post: str  # a key post's lmg.protocol.posts code (its Chinese name is accepted on import)
    id_number: str  # resident ID number, GB 11643 check digit verified
    name: str
    certificate_no: str = ""  # e.g. the 注册建造师 certificate of a project manager


@dataclass(frozen=True, slots=True)
class BidAward:
    """A bid award (中标通知书) and the key personnel it commits, as imported.

    `personnel` is stored and returned ordered by (post, id_number); `imported_at_ms` is
    set by the store (ignored on import). A project may have several awards (builder and
    supervisor, or several sections)."""

    notice_no: str  # 中标通知书编号, unique
    project_code: str
    enterprise: str  # the winning enterprise
    enterprise_uscc: str  # its unified social credit code (GB 32100, 18 characters)
    award_date: date
    personnel: tuple[KeyPerson, ...]
    imported_at_ms: int = 0


@dataclass(frozen=True, slots=True)
class PersonnelChange:
    """An approved change (变更) of the person holding a key post of a project.

    From `approved_on` the new person holds the commitment and the old one's ends; before
    it the old person counts. `id` and `recorded_at_ms` are set by the store."""

    project_code: str
    post: str  # key post code
    old_id_number: str
    new_id_number: str
    new_name: str
    approved_on: date
    approval_ref: str  # the approval's reference (文号)
    new_certificate_no: str = ""
    id: int = 0
    recorded_at_ms: int = 0


@dataclass(frozen=True, slots=True)
class Commitment:
    """Who holds a committed key post of a project, from when to when.

    `to_date_exclusive` is the first day the person no longer holds it (the approval date
    of the change that replaced them), None while they do. `notice_no` is the award that
    named the person, `change_id` the change that brought them in (None: the award did)."""

    project_code: str
    post: str
    id_number: str
    name: str
    certificate_no: str
    from_date: date
    to_date_exclusive: date | None
    notice_no: str | None
    change_id: int | None


@dataclass(frozen=True, slots=True)
class ApprovedLeave:
    """Approved leave of a person on a project, `first_day` to `last_day` inclusive."""

    id: int
    project_code: str
    id_number: str
    first_day: date
    last_day: date
    reference: str
    recorded_at_ms: int


@dataclass(frozen=True, slots=True)
class StopWork:
    """An approved stop-work period (停工) of a project, `first_day` to `last_day` inclusive."""

    id: int
    project_code: str
    first_day: date
    last_day: date
    reference: str
    recorded_at_ms: int


@dataclass(frozen=True, slots=True)
class PauseDay:
    """A province-wide day without construction (a public holiday, a pollution alert)."""

    day: date
    reason: str
    recorded_at_ms: int


class AttendanceDay(NamedTuple):
    """The accepted punches of one person on one project's devices on one day in China.

    An immutable tuple rather than a frozen dataclass, as `PunchIn`: a province's month is
    millions of these, and building one cost 1.3 µs as a frozen dataclass against 0.3 µs
    as a tuple (2026-12, this VM); 3.6 million rows, 3.6 s of the evaluation.
    """

    project_code: str
    worker_id: str
    day: date
    punches: int
    first_punch_ms: int
    last_punch_ms: int


class AttendanceMask(NamedTuple):
    """One person's attendance on one project's devices over a window of at most
    ATTENDANCE_MASK_DAYS days, as two bit masks: bit i stands for the window's first day +
    i days (China days). `punched`: days with at least one accepted punch; `valid`: the
    days among them with at least `min_punches` punches whose first and last lie at least
    `min_span_ms` apart, counted over all the person's punches on the project's devices that
    day (iter_attendance_masks)."""

    project_code: str
    worker_id: str
    punched: int
    valid: int


@dataclass(frozen=True, slots=True)
class ProjectDay:
    project_code: str
    day: date


@dataclass(frozen=True, slots=True)
class WarningFinding:
    """One warning the evaluator finds, for `Store.apply_warnings`.

    `period_start` names the period (a month's first day, the first day of an absence run)
    and is part of the warning's key; `period_end` (inclusive) and `figures` may change
    from one evaluation to the next (a run of absence that goes on). `figures` is a JSON
    object of the numbers behind the warning: valid_days, construction_days, rate, ...
    """

    rule: str  # the rule's code: lower-case letters, digits and '-', 1-64
    project_code: str
    worker_id: str | None  # None for a rule about the project, not a person
    post: str | None  # a key post code, or None
    period_start: date
    period_end: date
    figures: Mapping[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """The natural key: rule, project, post, person and the period's start. Only the
        project code may hold '|', and it is second: read from the right the key is
        unambiguous."""
        return (f"{self.rule}|{self.project_code}|{self.post or '-'}|{self.worker_id or '-'}|"
                f"{self.period_start.isoformat()}")


@dataclass(frozen=True, slots=True)
class EvaluationScope:
    """What one evaluation looked at: `apply_warnings` resolves the warnings in it that the
    evaluation did not find. A warning is in the scope when its rule is one of `rules`, its
    project one of `project_codes` (None: every project) and its period starts within
    `first_day`..`last_day`."""

    rules: frozenset[str]
    first_day: date
    last_day: date
    project_codes: frozenset[str] | None = None


@dataclass(frozen=True, slots=True)
class ApplyResult:
    opened: int = 0
    updated: int = 0  # figures or period end changed
    reopened: int = 0  # resolved before, found again
    resolved: int = 0
    unchanged: int = 0  # found as stored, or closed (a closed warning stays closed)


@dataclass(frozen=True, slots=True)
class WarningRecord:
    """A stored warning. Named so as not to shadow the builtin `Warning`.

    `level` 1 county, 2 city, 3 province (lmg.protocol.regions.bureau_for names the owner);
    `level_since_ms` is when it reached that level (escalation counts from it). `version`
    grows with every change; the province has seen the warning when `forwarded_version`
    equals it."""

    id: int
    key: str
    rule: str
    project_code: str
    region_code: str  # the project's, when the warning opened
    worker_id: str | None
    post: str | None
    period_start: date
    period_end: date
    figures: dict[str, Any]
    level: int
    state: WarningState
    opened_at_ms: int
    level_since_ms: int
    updated_at_ms: int
    resolved_at_ms: int | None
    closed_at_ms: int | None
    disposition: Disposition | None
    note: str
    closed_by: str
    version: int
    forwarded_version: int


@dataclass(frozen=True, slots=True)
class WarningEvent:
    """One entry of a warning's history: appended, never changed or deleted."""

    id: int
    warning_id: int
    at_ms: int
    kind: WarningEventKind
    level: int  # the warning's level after the event
    state: WarningState  # and its state
    by: str  # "lmg" for the evaluation and escalation, else the supervisor (token name)
    detail: dict[str, Any]


@asynccontextmanager
async def _always_held() -> AsyncIterator[bool]:
    yield True


MAX_WARNING_PAGE = 10_000  # list_warnings rows per call, as list_commands
MAX_ATTENDANCE_PAGE = 10_000  # iter_attendance_days rows per page
# Days an AttendanceMask holds: bits of a signed 64-bit integer (SQLite's integer,
# PostgreSQL's bigint) less the sign; an evaluation reads two months at most, 62 days.
ATTENDANCE_MASK_DAYS = 62


def check_marks(marks: Mapping[str, int]) -> list[tuple[str, int]]:
    """The marks as (name, value) pairs, checked (Store.set_supervision_marks)."""
    out = []
    for name, value in marks.items():
        if not isinstance(name, str) or not 1 <= len(name) <= 100 or not name.isprintable():
            raise ValueError(f"a supervision mark's name is 1-100 printable characters, got {name!r}")
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"supervision mark {name!r}: the value is Unix ms, an integer, got {value!r}")
        out.append((name, value))
    return out


def check_mask_window(first_day: date, last_day: date, min_punches: int, min_span_ms: int) -> None:
    """ValueError unless `first_day`..`last_day` fits an AttendanceMask and the thresholds are
    non-negative integers."""
    if not isinstance(first_day, date) or not isinstance(last_day, date) or last_day < first_day:
        raise ValueError(f"attendance masks need first_day <= last_day, dates: got {first_day!r}, {last_day!r}")
    if (last_day - first_day).days >= ATTENDANCE_MASK_DAYS:
        raise ValueError(f"attendance masks hold {ATTENDANCE_MASK_DAYS} days; {first_day}..{last_day} is "
                         f"{(last_day - first_day).days + 1}")
    for name, value in (("min_punches", min_punches), ("min_span_ms", min_span_ms)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {value!r}")


# ------------------------------------------------------------------------ the store


class Store(abc.ABC):
    """Durable state of the gateway. One instance per process; safe for many tasks.

    Open with `lmg.storage.open_store(url)`; close with `await store.close()` (or `async with`).
    Every method may raise `StoreUnavailable` (not committed, retry later) and
    `StoreClosed`; other raised errors are listed per method.
    """

    url: str  # the store's URL with any password removed, for logs

    async def __aenter__(self) -> Store:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @abc.abstractmethod
    async def close(self) -> None:
        """Commit what is queued, then release connections and threads. Idempotent."""

    @abc.abstractmethod
    async def schema_version(self) -> int:
        """The highest migration applied to this database."""

    # devices -------------------------------------------------------------------------
    @abc.abstractmethod
    async def add_device(
        self, serial: str, *, project_code: str, region_code: str, secret: bytes | None = None,
        firmware: str = "",
    ) -> Device:
        """Provision a device, enabled, with `secret` or 32 fresh random bytes.

        Raises DeviceExists, ValueError for malformed fields (UnknownRegion for a region
        code that is not a node of lmg.protocol.regions).
        """

    @abc.abstractmethod
    async def get_device(self, serial: str) -> Device | None: ...

    @abc.abstractmethod
    async def get_devices(self, serials: Sequence[str]) -> dict[str, Device]:
        """The provisioned devices among `serials`, keyed by serial, read in one round trip.

        Unknown serials are absent from the result; duplicates are allowed. Any number of
        serials may be asked for (a reconnect storm gathers thousands). What one call
        returns is as fresh as `get_device` would be: read when the call runs, not cached.
        """

    @abc.abstractmethod
    async def list_devices(
        self, *, after_serial: str = "", limit: int = 1000, project_code: str | None = None,
        region_code: str | None = None, online: bool | None = None, region_scope: str | None = None,
    ) -> list[Device]:
        """Devices ordered by serial, starting after `after_serial` (paging), at most
        `limit`; each filter that is not None must match exactly. `region_scope` keeps the
        devices whose region that node covers (lmg.protocol.regions.covers: a city its
        counties, never a code prefix; UnknownRegion for a node outside the tree). Raises
        ValueError for a negative limit."""

    @abc.abstractmethod
    async def set_device_enabled(self, serial: str, enabled: bool) -> None:
        """Enable or disable a device. Raises UnknownDevice.

        Disabling also writes a SESSION_END signal (DISABLED) in the same transaction, so
        every gateway ends the device's open session; it does so on every call, even for a
        device already disabled (harmless: ending no session).
        """

    async def enable_device(self, serial: str) -> None:
        await self.set_device_enabled(serial, True)

    async def disable_device(self, serial: str) -> None:
        await self.set_device_enabled(serial, False)

    @abc.abstractmethod
    async def rotate_device_secret(self, serial: str, secret: bytes | None = None) -> bytes:
        """Replace the secret (32 fresh random bytes unless given); return it.

        Writes a SESSION_END signal (SECRET_ROTATED) in the same transaction: a session
        authenticated with the old secret must not outlive it. Raises UnknownDevice.
        """

    @abc.abstractmethod
    async def update_presence(self, updates: Sequence[Presence]) -> int:
        """Write many heartbeats in one transaction; return how many devices matched.

        The server buffers heartbeats and flushes them here in batches, never one
        write per heartbeat. Unknown serials are ignored (counted out of the result).
        A Presence with an `address` stores it as the device's `last_address`.
        """

    @abc.abstractmethod
    async def set_device_roster_version(self, serial: str, version: int) -> None:
        """Record the roster version the device's terminal acknowledged (`Device.roster_version`).

        Raises UnknownDevice, ValueError for a version outside 0..2**32-1 (the wire's u32).
        """

    @abc.abstractmethod
    async def devices_of_project(self, project_code: str) -> list[str]:
        """The serials of the project's devices, in serial order (an index read)."""

    # signals -------------------------------------------------------------------------
    # A row per notice to the running gateways (a session to end, a command queued, a
    # roster changed), written in the same transaction as the change it announces and
    # read by every gateway process on every node: ids grow in commit order and are never
    # reused, so a reader that keeps the last id it handled and asks
    # `signals_after(that id)` misses none.

    @abc.abstractmethod
    async def signals_after(self, after_id: int, limit: int = 1000) -> list[Signal]:
        """Signals with id > after_id, ordered by id, at most `limit`. Signals of a kind
        this lmg does not know (written by a newer one) are left out."""

    @abc.abstractmethod
    async def last_signal_id(self) -> int:
        """The highest signal id stored (0 if none): where a starting gateway begins
        reading, as what was signalled before it started is not its to act on."""

    @abc.abstractmethod
    async def prune_signals(self, older_than_ms: int) -> int:
        """Delete signals created before `older_than_ms`; return how many. Keep them longer
        than any gateway may go without reading (a poll interval and a restart)."""

    @abc.abstractmethod
    async def listen_signals(
        self, callback: Callable[[int], None], *, on_lost: Callable[[], None] | None = None,
    ) -> Callable[[], Awaitable[None]] | None:
        """Call `callback(id)` in this event loop as soon as a signal commits anywhere.

        PostgreSQL: opens a dedicated connection that LISTENs (only this store's schema is
        heard) and returns an async `stop()` that stops listening and closes it (idempotent;
        `close()` stops every listener). If that connection is lost, notifications stop and
        `on_lost()` is called: read `signals_after` to catch up and listen again. The
        callback gets the id only; read the rows with `signals_after`. Raises
        StoreUnavailable if it cannot connect. SQLite: returns None; poll `signals_after`
        (a read in WAL mode, it never waits for the writer).
        """

    # The session-end API of migration 4, kept on top of signals of kind SESSION_END until
    # the gateway follows signals; the ids are the signals' ids.

    @abc.abstractmethod
    async def announce_sessions(self, sessions: Mapping[str, tuple[str, int]]) -> int:
        """Signal (kind TAKEOVER, one signal for the lot) that these devices authenticated
        in the calling process: {serial: (session token, authenticated at ms)}. Every other
        gateway process ends its session of each serial that connected before that time
        and is not that token. Returns the signal's id; 0 and nothing written for an empty
        mapping. Raises ValueError for a token that is not 1-64 characters or a negative time.
        """

    @abc.abstractmethod
    async def end_device_sessions(self, serial: str, reason: SessionEndReason) -> int:
        """Signal that the device's open session must end; return the signal's id.

        Raises UnknownDevice, ValueError for a reason that is not a SessionEndReason.
        """

    @abc.abstractmethod
    async def session_ends_after(self, after_id: int, limit: int = 1000) -> list[SessionEnd]:
        """Session-end signals with id > after_id, ordered by id, at most `limit`."""

    @abc.abstractmethod
    async def last_session_end_id(self) -> int:
        """The highest session-end signal id (0 if none)."""

    @abc.abstractmethod
    async def prune_session_ends(self, older_than_ms: int) -> int:
        """Delete session-end signals created before `older_than_ms`; return how many."""

    @abc.abstractmethod
    async def listen_session_ends(
        self, callback: Callable[[int], None], *, on_lost: Callable[[], None] | None = None,
    ) -> Callable[[], Awaitable[None]] | None:
        """`listen_signals` heard for session ends only (callback(id) of each)."""

    # projects ------------------------------------------------------------------------
    @abc.abstractmethod
    async def add_project(
        self, code: str, *, name: str, region_code: str, enterprise: str = "",
        enterprise_uscc: str = "", start_date: date | None = None, end_date: date | None = None,
    ) -> Project:
        """Add a project with an empty roster (version 0).

        Raises ProjectExists; ValueError naming the field for a code that is not 1-64
        printable characters, an empty or overlong name, a region that is not a node of
        lmg.protocol.regions (UnknownRegion), a USCC that is not empty or 18 characters, or
        an end date before the start date.
        """

    @abc.abstractmethod
    async def upsert_project(
        self, code: str, *, name: str, region_code: str, enterprise: str = "",
        enterprise_uscc: str = "", start_date: date | None = None, end_date: date | None = None,
    ) -> tuple[Project, UpsertOutcome]:
        """Add the project, or update it to these values: ("added" | "updated" |
        "unchanged"), for an idempotent import. Its roster is not touched. ValueError as
        `add_project`."""

    @abc.abstractmethod
    async def get_project(self, code: str) -> Project | None: ...

    @abc.abstractmethod
    async def list_projects(
        self, *, after_code: str = "", limit: int = 1000, region_prefix: str = "",
        region_scope: str | None = None,
    ) -> list[Project]:
        """Projects ordered by code after `after_code`, at most `limit` (0..10,000);
        `region_prefix` keeps the regions that start with it ("62" Gansu, "6201" Lanzhou:
        which includes 兰州新区 620171, so it is no supervisor's scope); `region_scope` keeps
        the projects whose region that node covers (as `list_devices`). Raises ValueError for
        a bad limit, prefix or scope."""

    # the roster ----------------------------------------------------------------------
    @abc.abstractmethod
    async def import_workers(self, project_code: str, rows: Sequence[WorkerIn], *,
                             today: date) -> ImportResult:
        """Add or update the project's workers from `rows`, in ONE transaction.

        A row equal to the stored worker (and whose roster state `today` does not change)
        is "unchanged". Each added or changed worker on the roster before or after the
        change takes the project's next roster version, in the order of `rows`; a change
        to a worker off the roster both before and after (not entered yet, or gone) is
        stored without a version, as no terminal's roster changes. One ROSTER signal is
        written if the roster version moved.

        Filtering bad rows out is the caller's job: the store checks every row first and
        raises ValueError naming the row's worker_id and the field (a malformed field, a
        worker listed twice, a face not stored with `put_face`, more than
        `roster_import_max_rows` rows), and then nothing of the call is written. Raises
        UnknownProject.
        """

    @abc.abstractmethod
    async def remove_worker(self, project_code: str, worker_id: str, *, exit_date: date,
                            today: date) -> bool:
        """Set the worker's exit date (the first day off the site): they leave the roster
        (a tombstone, next version, ROSTER signal) if `exit_date <= today`, else they stay
        until `apply_roster_dates` reaches it. False if the project has no such worker on
        its roster (unknown, not entered yet, or gone). ValueError for an exit date before
        the worker's entry date."""

    @abc.abstractmethod
    async def apply_roster_dates(self, today: date) -> list[str]:
        """Put on or take off the roster every worker whose entry or exit date `today`
        has reached, each with the next version of its project, in one transaction with a
        ROSTER signal per changed project; return the changed projects' codes (sorted).
        Cheap when nothing changed (one read): run it every few minutes and after midnight
        in China."""

    @abc.abstractmethod
    async def roster_changes(self, project_code: str, *, after_version: int,
                             limit: int = 1000) -> list[Worker]:
        """The delta from `after_version`: workers with version > after_version, tombstones
        included, ordered by version, at most `limit` (0..10,000). Page with the last
        row's version."""

    @abc.abstractmethod
    async def list_workers(self, project_code: str, *, on_roster_only: bool = True,
                           after_worker_id: str = "", limit: int = 1000) -> list[Worker]:
        """The project's workers ordered by worker_id after `after_worker_id`, at most
        `limit` (0..10,000); with `on_roster_only` False also those not entered yet and
        those gone (until pruned)."""

    @abc.abstractmethod
    async def get_worker(self, project_code: str, worker_id: str) -> Worker | None: ...

    @abc.abstractmethod
    async def roster_floor(self, project_code: str) -> int:
        """The lowest version a delta can start from (0 until tombstones are pruned, and
        for an unknown project); also `Project.roster_floor`."""

    @abc.abstractmethod
    async def prune_roster_tombstones(self, older_than_ms: int, *, today: date) -> int:
        """Delete the workers who left (exit date <= `today`) and whose rows have not
        changed since `older_than_ms`, raising each project's roster floor to the highest
        version deleted; return how many. A worker not entered yet is never pruned. Keep
        tombstones longer than terminals stay offline (a terminal below the floor gets a
        full resync)."""

    # faces ---------------------------------------------------------------------------
    @abc.abstractmethod
    async def put_face(self, data: bytes) -> bytes:
        """Store a face photo once (by content) and return its SHA-256.

        JPEG or PNG only, FACE_MIN_BYTES (1 KiB) to `face_max_bytes`; ValueError saying
        which rule the bytes break. The bytes go to the blob store beside the punch photos.
        """

    @abc.abstractmethod
    async def get_face(self, sha256: bytes) -> bytes | None: ...

    @abc.abstractmethod
    async def face_size(self, sha256: bytes) -> int | None:
        """The stored face's size in bytes (a row read, not the blob), None if not stored."""

    @abc.abstractmethod
    async def face_progress(self, serial: str, sha256: bytes) -> int:
        """Where sending that face to the device resumes: the offset recorded, 0 if none."""

    @abc.abstractmethod
    async def set_face_progress(self, serial: str, sha256: bytes, offset: int) -> None:
        """Record the next offset of that face for the device. Each call is a committed
        transaction (on SQLite a writer round trip and an fsync): record every few chunks
        or at the end of a session, not every chunk."""

    @abc.abstractmethod
    async def clear_face_progress(self, serial: str, sha256: bytes) -> None:
        """Forget the progress (the face was enrolled, or must start again)."""

    # API tokens ----------------------------------------------------------------------
    @abc.abstractmethod
    async def create_api_token(
        self, name: str, token_sha256: bytes, scopes: Iterable[str], *,
        region_code: str | None = None, created_by: str = "", department: str | None = None,
    ) -> ApiToken:
        """Store a new active token under `name` (the SHA-256 of the token, never the token).

        Scopes are stored as given (their meaning is the API's), at least one. `region_code`
        must be a node of lmg.protocol.regions; `department` a Department (its code or
        Chinese name) and then with a region. Raises TokenExists if the name is taken, by an
        active or a revoked token; ValueError naming the field for a malformed name (1-64
        printable characters), hash (32 bytes), scope set, region code or department, or for
        a hash another token already has.
        """

    @abc.abstractmethod
    async def get_api_token_by_hash(self, token_sha256: bytes) -> ApiToken | None:
        """The token with that hash, revoked ones included: the caller checks `active`.
        Raises ValueError if the hash is not 32 bytes."""

    @abc.abstractmethod
    async def list_api_tokens(self) -> list[ApiToken]:
        """Every token, revoked ones included, ordered by name."""

    @abc.abstractmethod
    async def revoke_api_token(self, name: str) -> bool:
        """Revoke it now; True if it was active (False: no such token, or already revoked)."""

    @abc.abstractmethod
    async def count_active_api_tokens(self) -> int: ...

    # console accounts and sessions (issue 16; storage/console.py holds the shared rules) ----
    @abc.abstractmethod
    async def create_console_account(self, name: str, password_hash: str, *, department: str, region_code: str,
                                     role: str = "supervisor", pii: bool = False,
                                     created_by: str = "") -> ConsoleAccount:
        """Store a new enabled account. Raises AccountExists if the name is taken; ValueError
        naming the field for a malformed name, hash, department, role; UnknownRegion."""

    @abc.abstractmethod
    async def get_console_account(self, name: str) -> ConsoleAccount | None: ...

    @abc.abstractmethod
    async def list_console_accounts(self) -> list[ConsoleAccount]:
        """Every account, disabled ones included, ordered by name."""

    @abc.abstractmethod
    async def update_console_account(self, name: str, *, password_hash: str | None = None,
                                     disabled: bool | None = None) -> bool:
        """Change the password hash and/or the disabled flag (None: leave it); a new password
        or disabling also ends every session of the account, in the same transaction.
        False if there is no such account."""

    @abc.abstractmethod
    async def set_console_lockout(self, name: str, *, failed_logins: int, locked_until_ms: int | None,
                                  lockout_level: int) -> bool:
        """Write the lockout core's state of the account; False if there is no such account."""

    @abc.abstractmethod
    async def create_console_session(self, session: ConsoleSession) -> None:
        """Store a new session; ValueError naming the field for a malformed one, UnknownAccount."""

    @abc.abstractmethod
    async def get_console_session(self, id_sha256: bytes) -> ConsoleSession | None:
        """The session with that hash, expired or not: the caller checks its ends."""

    @abc.abstractmethod
    async def touch_console_session(self, id_sha256: bytes, last_seen_ms: int) -> None:
        """Move the session's idle end on (a no-op for an unknown session)."""

    @abc.abstractmethod
    async def end_console_sessions(self, *, id_sha256: bytes | None = None, account: str | None = None) -> int:
        """Delete one session (logout) or every session of an account (give one of the two).
        Returns how many were deleted."""

    @abc.abstractmethod
    async def prune_console_sessions(self, *, now_ms: int, idle_before_ms: int) -> int:
        """Delete the sessions past their absolute end (expires_at_ms <= now_ms) or idle since
        before `idle_before_ms` (last_seen_ms < it). Returns how many were deleted."""

    # console figures ---------------------------------------------------------------------
    @abc.abstractmethod
    async def warning_counts(self, *, region_scope: str | None = None,
                             state: WarningState | str | None = None) -> list[WarningCount]:
        """Warnings counted by (region, level, state), within the scope (as `list_warnings`)
        and in `state` (None: every state), ordered: the console's overview. One aggregate
        over an index of (state, region, level) (migration 8)."""

    @abc.abstractmethod
    async def warnings_opened(self, *, since_ms: int, region_scope: str | None = None) -> list[tuple[date, int]]:
        """How many warnings of the scope opened on each China day from `since_ms` on, in
        day order (days with none left out): the console's trend. Reads an index of
        (opened_at_ms, region_code) (migration 8)."""

    @abc.abstractmethod
    async def outbox_glance(self, *, now_ms: int, cap: int) -> OutboxStatus:
        """`outbox_status` for a page: the pending and dead records counted up to `cap` + 1
        only (more than `cap` reads as cap + 1), the oldest pending one found by id (ids
        follow creation). Milliseconds where `outbox_status` counts millions of rows."""

    @abc.abstractmethod
    async def count_devices(self, *, online: bool | None = None, region_scope: str | None = None) -> int:
        """How many devices `list_devices` with these filters would list in all."""

    # punches -------------------------------------------------------------------------
    @abc.abstractmethod
    async def store_punches(self, records: Sequence[PunchIn]) -> list[PunchOutcome]:
        """Store records durably; one outcome per record, in order.

        Returns after the commit that holds them (group commit: batches of many
        callers share one transaction). Raises StoreUnavailable if that commit failed:
        then none of `records` was stored by this call.
        """

    def submit_punches(self, records: Sequence[PunchIn]) -> "asyncio.Future[list[PunchOutcome]]":
        """`store_punches` as a future, for callers that would otherwise make a task per
        call: the same outcomes, the same errors (set on the future). Must be called from
        the store's event loop. This default wraps `store_punches`; the concrete stores
        join their group commit directly."""
        return asyncio.ensure_future(self.store_punches(records))

    @abc.abstractmethod
    async def count_punches(self, device_serial: str | None = None) -> int: ...

    @abc.abstractmethod
    async def get_punch(self, device_serial: str, record_no: int) -> Punch | None: ...

    @abc.abstractmethod
    def iter_punches(self, device_serial: str | None = None) -> AsyncIterator[Punch]:
        """All stored punches (of one device), ordered by device serial then record_no."""

    @abc.abstractmethod
    async def list_rejected_punches(self, *, limit: int = 100) -> list[RejectedPunch]:
        """Most recent first."""

    @abc.abstractmethod
    async def list_punches(
        self, *, project_code: str | None = None, device_serial: str | None = None,
        worker_id: str | None = None, since_ms: int | None = None, until_ms: int | None = None,
        after_id: int = 0, limit: int = 1000, region_scope: str | None = None,
    ) -> list[PunchListing]:
        """Accepted punches with id > `after_id`, ordered by id (the order stored), at most
        `limit` (0..MAX_PUNCH_PAGE, else ValueError). A short page is the last one; pass
        the last id of a page as the next `after_id`.

        Filters that are not None must all match: `project_code` is the device's,
        `since_ms` (inclusive) and `until_ms` (exclusive) bound punch_time_ms,
        `region_scope` keeps the punches of devices whose region that node covers (as
        `list_devices`; a punch of a device not provisioned is in no region).
        """

    # photos --------------------------------------------------------------------------
    @abc.abstractmethod
    async def photo_append(
        self, device_serial: str, sha256: bytes, total_size: int, offset: int, data: bytes
    ) -> int:
        """Add one chunk of a resumable upload; return the next offset to send.

        When the upload is complete (next offset == total_size) the bytes are verified
        against `sha256`, stored as a blob and linked to every punch carrying that hash.
        A photo already stored returns total_size at once. Raises PhotoOffsetMismatch
        (with `expected_offset`), PhotoTooLarge, PhotoHashMismatch (partial discarded).
        """

    @abc.abstractmethod
    async def photo_status(self, device_serial: str, sha256: bytes) -> int:
        """Where the device should resume: bytes kept so far (the size if complete, else 0..)."""

    @abc.abstractmethod
    async def get_photo(self, sha256: bytes) -> bytes | None: ...

    @abc.abstractmethod
    async def get_punch_photo(self, device_serial: str, record_no: int) -> bytes | None:
        """The photo linked to that punch, or None (no photo, or not uploaded yet)."""

    @abc.abstractmethod
    async def prune_partial_photos(self, now_ms: int) -> int:
        """Delete partial uploads untouched for `photo_partial_ttl_ms`; return how many."""

    @abc.abstractmethod
    async def unforwarded_photos(self, stored_before_ms: int, limit: int) -> list[bytes]:
        """Hashes of stored photos the province has not confirmed (`mark_photos_forwarded`),
        stored before `stored_before_ms`, oldest first, at most `limit`."""

    @abc.abstractmethod
    async def mark_photos_forwarded(self, sha256s: Sequence[bytes], now_ms: int) -> int:
        """Record that the province holds these photos; returns how many were not marked yet."""

    @abc.abstractmethod
    async def adopt_local_photos(self, limit: int = 1000) -> int:
        """PostgreSQL: move up to `limit` photo and face files this node wrote under its data
        dir before version 7 into the shared table, so every node reads them; returns how
        many (0: none left). SQLite: 0, its files are where they belong."""

    @abc.abstractmethod
    async def purge_forwarded_photos(self, now_ms: int, limit: int = 1000) -> int:
        """Delete the bytes of up to `limit` photos the province confirmed more than
        `photo_forwarded_retention_ms` before `now_ms` (0: keep for ever); return how many.
        The `photos` row stays, marked purged: the photo counts as stored (a device is not
        asked for it again) and `get_photo` returns None. Bytes that are also a roster face
        are kept. Never touches a photo not yet forwarded."""

    @abc.abstractmethod
    async def maintain_punch_months(self, now_ms: int) -> PunchMonths:
        """PostgreSQL: create the month partitions of punches up to `punch_partitions_ahead`
        months after the month of `now_ms`, and drop each month that ended more than
        `punch_retention_days` before `now_ms` (0: never) if no outbox row (pending or
        dead) names a punch in it. SQLite: nothing (PunchMonths(0, (), ())). Every node
        may call it: a month is created or dropped once. Raises StoreUnavailable."""

    # outbox --------------------------------------------------------------------------
    @abc.abstractmethod
    async def claim_outbox(self, limit: int, now_ms: int, lease_ms: int) -> list[OutboxItem]:
        """Lease up to `limit` due items to this forwarder until now_ms + lease_ms.

        Items come in id order, which per device is arrival order. An item is claimable
        only if no earlier item of its device is leased or waiting to retry, so a device's
        punches reach the provincial system in order even with several forwarders. Items
        claimed concurrently by other forwarders (other nodes) are never returned.
        An unacknowledged lease simply runs out and the item is claimed again.
        """

    @abc.abstractmethod
    async def ack_outbox(self, ids: Sequence[int]) -> int:
        """Forwarded: remove these items. Returns how many were still there."""

    @abc.abstractmethod
    async def fail_outbox(self, ids: int | Sequence[int], error: str, next_attempt_at_ms: int) -> int:
        """Forwarding failed: keep pending, retry at next_attempt_at_ms, remember the error."""

    @abc.abstractmethod
    async def dead_letter(self, ids: Sequence[int], reason: str) -> int:
        """Give up on these items (kept, not forwarded) until retry_dead_letters."""

    @abc.abstractmethod
    async def list_dead_letters(self, *, limit: int = 100, after_id: int = 0) -> list[OutboxItem]:
        """Dead letters in id order, from the one after `after_id` (the cursor of the previous page)."""

    @abc.abstractmethod
    async def retry_dead_letters(self, ids: Sequence[int] | None = None) -> int:
        """Make dead items (all of them if ids is None) pending and due now, attempts reset."""

    @abc.abstractmethod
    async def outbox_status(self, now_ms: int) -> OutboxStatus: ...

    # operator commands ---------------------------------------------------------------
    @abc.abstractmethod
    async def enqueue_command(
        self, serial: str, command_type: int, payload: bytes, *, expires_at_ms: int | None = None,
        created_by: str = "",
    ) -> int:
        """Queue a command for a device; return its id (ids order a device's commands).

        Writes a COMMAND signal in the same transaction, so the gateway holding the
        device's session sends it at once. Raises UnknownDevice; ValueError for a type
        that is not an operator command (OPERATOR_COMMAND_TYPES), a payload that is not
        UTF-8 JSON of an object (at most COMMAND_PAYLOAD_MAX_BYTES), or a bad expiry.
        """

    @abc.abstractmethod
    async def pending_commands(self, serial: str, limit: int = 16) -> list[Command]:
        """Queued or sent-but-unanswered commands of a device that have not expired (by the
        store's clock), oldest first."""

    @abc.abstractmethod
    async def mark_command_sent(self, command_id: int, seq: int, now_ms: int) -> bool:
        """It went out with frame sequence number `seq` at `now_ms`: state sent, attempts
        + 1. False if it is not queued or sent any more (answered, expired, cancelled)."""

    @abc.abstractmethod
    async def complete_command(
        self, command_id: int, result_code: int | None, *, failed: bool = False,
        error: str | None = None, reply: bytes | None = None,
    ) -> bool:
        """The device answered: acked, or failed with the terminal's result code (or None
        and `error` "no answer" after the last send). `reply` is the UTF-8 JSON of an answer
        that carries data (CONFIG_REPLY). False if the command was not pending any more."""

    @abc.abstractmethod
    async def cancel_command(self, command_id: int) -> bool:
        """Cancel a queued or sent command; False if it was not pending any more."""

    @abc.abstractmethod
    async def expire_commands(self, now_ms: int) -> int:
        """Expire pending commands whose expires_at_ms <= now_ms; return how many."""

    @abc.abstractmethod
    async def get_command(self, command_id: int) -> Command | None: ...

    @abc.abstractmethod
    async def list_commands(
        self, *, device_serial: str | None = None, state: CommandState | None = None,
        after_id: int = 0, limit: int = 100, region_scope: str | None = None,
    ) -> list[Command]:
        """Commands with id > after_id in id order, at most `limit` (0..MAX_COMMAND_PAGE);
        filters that are not None must match; `region_scope` keeps the commands of devices
        whose region that node covers (as `list_devices`)."""

    @abc.abstractmethod
    async def count_commands_by_state(self) -> dict[CommandState, int]:
        """How many commands are in each state; every state is a key (0 if none)."""

    # audit ---------------------------------------------------------------------------
    @abc.abstractmethod
    async def audit(
        self, event: str, subject: str, detail: dict[str, Any] | None = None,
        address: str | None = None,
    ) -> int:
        """Append to the audit log (auth failures, provisioning, admin actions)."""

    @abc.abstractmethod
    async def list_audit(
        self, *, limit: int = 100, event: str | None = None, subject: str | None = None,
        since_ms: int | None = None, until_ms: int | None = None, before_id: int | None = None,
    ) -> list[AuditEntry]:
        """Newest first, at most `limit`. `before_id` is the cursor: pass the last id of a
        page to get the next. Filters that are not None must all match; `since_ms`
        (inclusive) and `until_ms` (exclusive) bound at_ms. Raises ValueError for a
        negative limit."""

    # supervision of key personnel: bid awards and changes -------------------------
    @abc.abstractmethod
    async def import_bid_award(self, award: BidAward) -> tuple[BidAward, UpsertOutcome]:
        """Store a bid award and its committed key personnel in ONE transaction.

        Idempotent by `notice_no`: the same award again is "unchanged"; one with other
        values replaces the stored award and its personnel ("updated": a correction of the
        document as imported; a change of person after the award is a personnel change,
        `record_personnel_change`). Posts are stored as codes. Every field is checked first:
        ValueError naming the field (a post that is not a key post, an ID number that fails
        GB 11643, a USCC that is not 18 characters of GB 32100, a person listed twice in one
        post, no personnel); raises UnknownProject.
        """

    @abc.abstractmethod
    async def get_bid_award(self, notice_no: str) -> BidAward | None: ...

    @abc.abstractmethod
    async def list_bid_awards(self, project_code: str) -> list[BidAward]:
        """The project's awards, by award date then notice number."""

    @abc.abstractmethod
    async def record_personnel_change(
            self, change: PersonnelChange) -> tuple[PersonnelChange, UpsertOutcome]:
        """Record an approved change of a key post's person (its `id` and `recorded_at_ms`
        are ignored). Idempotent by (project, post, old person, new person, approval date):
        the same change again is "unchanged", with another name, certificate or reference
        "updated". ValueError naming the field; raises UnknownProject."""

    @abc.abstractmethod
    async def list_personnel_changes(self, project_code: str) -> list[PersonnelChange]:
        """The project's changes by approval date, then id."""

    @abc.abstractmethod
    async def key_personnel(self, project_codes: Collection[str] | None, first_day: date,
                            last_day: date) -> list[Commitment]:
        """The commitments of these projects (None: every project) that overlap
        `first_day`..`last_day`, ordered by project, post, from_date, id_number.

        An award's person holds the post from the award date; a change ends the old
        person's commitment on its approval date (exclusive) and starts the new person's
        there; changes of one post apply in approval-date order, so A -> B -> C chains. A
        change whose old person did not hold the post then still starts the new one.
        (lmg.storage.supervision.commitments holds the rule.)"""

    # supervision: leave, stop-work, pause days --------------------------------------
    @abc.abstractmethod
    async def add_leave(self, project_code: str, id_number: str, first_day: date, last_day: date,
                        reference: str) -> ApprovedLeave:
        """Record approved leave (both days included). The same person, project and days
        again keeps one row (its reference replaced). ValueError naming the field;
        UnknownProject."""

    @abc.abstractmethod
    async def list_leave(self, *, first_day: date, last_day: date,
                         project_codes: Collection[str] | None = None,
                         id_number: str | None = None) -> list[ApprovedLeave]:
        """Leave that overlaps the days, by project, person, first day."""

    @abc.abstractmethod
    async def delete_leave(self, leave_id: int) -> bool: ...

    @abc.abstractmethod
    async def add_stop_work(self, project_code: str, first_day: date, last_day: date,
                            reference: str) -> StopWork:
        """Record an approved stop-work period (both days included); idempotent as
        `add_leave`. ValueError naming the field; UnknownProject."""

    @abc.abstractmethod
    async def list_stop_work(self, *, first_day: date, last_day: date,
                             project_codes: Collection[str] | None = None) -> list[StopWork]:
        """Stop-work periods that overlap the days, by project and first day."""

    @abc.abstractmethod
    async def delete_stop_work(self, stop_id: int) -> bool: ...

    @abc.abstractmethod
    async def set_pause_day(self, day: date, reason: str) -> PauseDay:
        """Make `day` a province-wide pause day (or change its reason)."""

    @abc.abstractmethod
    async def list_pause_days(self, first_day: date, last_day: date) -> list[PauseDay]: ...

    @abc.abstractmethod
    async def delete_pause_day(self, day: date) -> bool: ...

    # supervision: the schedule's marks ----------------------------------------------
    @abc.abstractmethod
    async def get_supervision_marks(self) -> dict[str, int]:
        """Every mark the scheduled evaluation left (name -> Unix ms; migration 10): what a
        restarted process or another node picks up (server/supervision/service.py)."""

    @abc.abstractmethod
    async def set_supervision_marks(self, marks: Mapping[str, int]) -> None:
        """Set the marks given (insert or replace), in one transaction. ValueError for a
        name that is not 1-100 printable characters or a value that is not an integer."""

    # supervision: attendance ---------------------------------------------------------
    @abc.abstractmethod
    def iter_attendance_days(self, project_codes: Collection[str] | None, first_day: date,
                             last_day: date) -> AsyncIterator[list[AttendanceDay]]:
        """Per (project, person, day in China) within the days: the number of accepted
        punches and the first and last punch time, in pages of at most MAX_ATTENDANCE_PAGE
        rows ordered by (project_code, worker_id, day); one project may span pages.

        A punch belongs to the project its device has now (devices.project_code); punches
        of devices not provisioned are in no project. `project_codes` None means every
        project. No index on punches serves this (docs/storage.md: each costs the write
        path): a large set of projects reads the punches received since the first day (the
        id order is the arrival order, so the first such id is found by a binary search on
        the primary key), a small one reads its devices' punches through the
        (device_serial, record_no) key; the store picks whichever reads fewer rows. Memory
        stays at a page however many rows there are: stop early by leaving the loop."""

    async def iter_attendance_masks(self, project_codes: Collection[str] | None, first_day: date, last_day: date,
                                    *, min_punches: int, min_span_ms: int) -> AsyncIterator[list[AttendanceMask]]:
        """Per (project, person): the days of `first_day`..`last_day` (at most
        ATTENDANCE_MASK_DAYS) with punches and the valid ones, as bit masks from `first_day`
        (AttendanceMask), in pages of at most MAX_ATTENDANCE_PAGE rows ordered by
        (project_code, worker_id). The same punches as `iter_attendance_days`, one row per
        person instead of one per day: a province's month is 120,000 rows rather than 3.6
        million, which is what makes its evaluation close to one SQL aggregate
        (docs/supervision.md, "Performance"). ValueError for a longer window or a negative
        threshold.

        This version folds `iter_attendance_days` and is the reference the backends' SQL is
        tested against (tests/storage/test_store_supervision.py); they override it."""
        check_mask_window(first_day, last_day, min_punches, min_span_ms)
        base = first_day.toordinal()
        page: list[AttendanceMask] = []
        key: tuple[str, str] | None = None
        punched = valid = 0
        async for rows in self.iter_attendance_days(project_codes, first_day, last_day):
            for row in rows:
                if (row.project_code, row.worker_id) != key:
                    if key is not None:
                        page.append(AttendanceMask(key[0], key[1], punched, valid))
                        if len(page) == MAX_ATTENDANCE_PAGE:
                            yield page
                            page = []
                    key, punched, valid = (row.project_code, row.worker_id), 0, 0
                bit = 1 << (row.day.toordinal() - base)
                punched |= bit
                if row.punches >= min_punches and row.last_punch_ms - row.first_punch_ms >= min_span_ms:
                    valid |= bit
        if key is not None:
            page.append(AttendanceMask(key[0], key[1], punched, valid))
        if page:
            yield page

    async def attendance_days(self, project_codes: Collection[str] | None, first_day: date,
                              last_day: date) -> list[AttendanceDay]:
        """`iter_attendance_days` as one list: for a few projects (a calendar), not a province."""
        rows: list[AttendanceDay] = []
        async for page in self.iter_attendance_days(project_codes, first_day, last_day):
            rows += page
        return rows

    @abc.abstractmethod
    async def days_with_punches_received(self, after_ms: int, *,
                                         until_ms: int | None = None) -> list[ProjectDay]:
        """The (project, day in China) pairs that got accepted punches received after
        `after_ms` (and at or before `until_ms`), ordered: the days a late backlog touched,
        to evaluate again. Pass the previous call's time minus a minute or so as the next
        `after_ms`: a group commit stamps its punches before it commits (PostgreSQL:
        several nodes, each with its own clock), so a punch can become visible a little
        after its receive time."""

    @abc.abstractmethod
    async def list_key_post_workers(self, project_codes: Collection[str] | None = None) -> list[Worker]:
        """Roster rows whose post is a key post (lmg.protocol.posts.KEY_POSTS), gone ones
        included, ordered by project then worker: who punches under a key post."""

    # supervision: warnings -----------------------------------------------------------
    def evaluation_lock(self) -> AbstractAsyncContextManager[bool]:
        """`async with store.evaluation_lock() as held:` - whether this process may run a
        scheduled evaluation now. PostgreSQL (several `--workers`, several nodes): a
        session-level advisory try-lock held for the block, False at once if another process
        holds it. SQLite: one process writes, always True."""
        return _always_held()

    @abc.abstractmethod
    async def apply_warnings(self, scope: EvaluationScope, findings: Sequence[WarningFinding],
                             now_ms: int) -> ApplyResult:
        """Apply one evaluation's findings in ONE transaction, idempotently.

        A finding whose key is new opens a warning at level 1 (region: its project's); one
        whose warning is open updates its period end and figures if they changed; one whose
        warning was resolved reopens it (level kept, `level_since_ms` = now). An open
        warning in `scope` that no finding names is resolved. A closed warning stays closed.
        Each change appends its event to the history. Applying the same (scope, findings)
        again changes nothing. Every finding must lie in the scope and keys must be unique
        (ValueError, before anything is written); raises UnknownProject for a finding's
        project. The transitions are the table lmg.storage.supervision.TRANSITIONS."""

    @abc.abstractmethod
    async def escalate_warnings(self, now_ms: int, *, level2_after_ms: int,
                                level3_after_ms: int) -> int:
        """Raise open warnings whose time at their level has run out: level 1 held for
        `level2_after_ms` (inclusive: exactly N days escalates) goes to 2, level 2 held for
        `level3_after_ms` to 3. The new level counts from when it fell due (its
        `level_since_ms` is the old one plus the wait), so a late run gives the levels an
        on-time run would have, a 1 -> 3 jump included. Returns how many level changes were
        made, each an `escalated` event."""

    @abc.abstractmethod
    async def close_warning(self, warning_id: int, disposition: Disposition | str, *, note: str,
                            by: str, now_ms: int) -> WarningRecord:
        """A supervisor closes an open or resolved warning with a disposition; final.

        A false alarm needs a note (the reason). Raises UnknownWarning, WarningClosed (closed
        already), ValueError naming the field."""

    @abc.abstractmethod
    async def get_warning(self, warning_id: int) -> WarningRecord | None: ...

    @abc.abstractmethod
    async def warning_history(self, warning_id: int) -> list[WarningEvent]:
        """The warning's events, oldest first ([] for an unknown id)."""

    @abc.abstractmethod
    async def list_warnings(
        self, *, region_scope: str | None = None, project_code: str | None = None,
        worker_id: str | None = None, rule: str | None = None, state: WarningState | str | None = None,
        level: int | None = None, period_from: date | None = None, period_to: date | None = None,
        after_id: int = 0, limit: int = 100,
    ) -> list[WarningRecord]:
        """Warnings with id > after_id in id order, at most `limit` (0..MAX_WARNING_PAGE).

        `region_scope` keeps the warnings whose region that node covers
        (lmg.protocol.regions.covers: a city sees its counties, 兰州新区 only itself; never a
        code prefix); `period_from`/`period_to` keep the periods that overlap those days.
        Filters that are not None must all match. ValueError for a bad filter (UnknownRegion
        for a scope outside the tree)."""

    @abc.abstractmethod
    async def warnings_to_forward(self, limit: int = 100) -> list[WarningRecord]:
        """Warnings changed since the province last confirmed them (version >
        forwarded_version), in id order: the outbox of warnings."""

    @abc.abstractmethod
    async def mark_warnings_forwarded(self, versions: Sequence[tuple[int, int]]) -> int:
        """Record that the province holds these (warning id, version) pairs; a warning
        changed since stays due. Returns how many moved."""
