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

Times are Unix milliseconds (UTC) in ints named `*_ms`; sizes are bytes.
"""

from __future__ import annotations

import abc
import asyncio
import enum
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

# The code tables live with the protocol; the store uses the same ones.
from lmg.protocol.codes import Direction, VerifyMode  # noqa: F401 - re-exported by storage

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
    """One row of the session-end signal: every gateway holding an open session of
    `device_serial` closes it. Ids grow in commit order and are never reused."""

    id: int
    device_serial: str
    reason: SessionEndReason
    created_at_ms: int


# ------------------------------------------------------------------------ API tokens

API_TOKEN_NAME_CHARS = 64
_SCOPE_CHARS = 64
_CREATED_BY_CHARS = 256


@dataclass(frozen=True, slots=True)
class ApiToken:
    """A named bearer token of the operations API, stored as the SHA-256 of the token.

    `region_code` is reserved for region-scoped tokens (None: not limited to a region).
    A revoked token is kept (its name stays taken) with `revoked_at_ms` set.
    """

    name: str
    token_sha256: bytes
    scopes: frozenset[str]
    region_code: str | None
    created_at_ms: int
    revoked_at_ms: int | None
    created_by: str

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
                           created_by: str) -> None:
    """Raise ValueError naming the bad field; the same rules on every backend."""
    check_api_token_name(name)
    check_token_sha256(token_sha256)
    if region_code is not None and not (isinstance(region_code, str) and len(region_code) == 6
                                        and region_code.isascii() and region_code.isdigit()):
        raise ValueError(
            f"region code {region_code!r}: use the 6-digit GB/T 2260 code (Gansu is 62xxxx) or None"
        )
    if not isinstance(created_by, str) or len(created_by) > _CREATED_BY_CHARS:
        raise ValueError(
            f"created_by {created_by!r}: use a string of at most {_CREATED_BY_CHARS} characters")


def check_api_token_name(name: str) -> None:
    if (not isinstance(name, str) or not 1 <= len(name) <= API_TOKEN_NAME_CHARS
            or not name.isprintable()):
        raise ValueError(f"token name {name!r}: use 1-{API_TOKEN_NAME_CHARS} printable characters")


def check_token_sha256(token_sha256: bytes) -> None:
    if type(token_sha256) is not bytes or len(token_sha256) != SHA256_BYTES:
        raise ValueError(f"token_sha256: must be the {SHA256_BYTES}-byte SHA-256 digest of the token")


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
class OutboxStatus:
    pending: int
    oldest_age_s: float  # age of the oldest pending item at now_ms; 0.0 if none
    dead_letters: int


# --------------------------------------------------------------- commands and audit


class CommandState(enum.StrEnum):
    QUEUED = "queued"
    SENT = "sent"
    DONE = "done"
    EXPIRED = "expired"
    CANCELLED = "cancelled"


@dataclass(frozen=True, slots=True)
class Command:
    """A downlink command for one device, delivered in id order."""

    id: int
    device_serial: str
    command_type: int
    payload: bytes
    state: CommandState
    seq: int | None
    result_code: int | None
    created_at_ms: int
    sent_at_ms: int | None
    completed_at_ms: int | None
    expires_at_ms: int | None


@dataclass(frozen=True, slots=True)
class AuditEntry:
    id: int
    at_ms: int
    event: str
    subject: str
    detail: dict[str, Any] = field(default_factory=dict)
    address: str | None = None


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

        Raises DeviceExists, ValueError for malformed fields.
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
        region_code: str | None = None, online: bool | None = None,
    ) -> list[Device]:
        """Devices ordered by serial, starting after `after_serial` (paging), at most
        `limit`; each filter that is not None must match exactly. Raises ValueError for
        a negative limit."""

    @abc.abstractmethod
    async def set_device_enabled(self, serial: str, enabled: bool) -> None:
        """Enable or disable a device. Raises UnknownDevice.

        Disabling also adds a session end (DISABLED) in the same transaction, so every
        gateway ends the device's open session; it does so on every call, even for a
        device already disabled (harmless: ending no session).
        """

    async def enable_device(self, serial: str) -> None:
        await self.set_device_enabled(serial, True)

    async def disable_device(self, serial: str) -> None:
        await self.set_device_enabled(serial, False)

    @abc.abstractmethod
    async def rotate_device_secret(self, serial: str, secret: bytes | None = None) -> bytes:
        """Replace the secret (32 fresh random bytes unless given); return it.

        Adds a session end (SECRET_ROTATED) in the same transaction: a session
        authenticated with the old secret must not outlive it. Raises UnknownDevice.
        """

    @abc.abstractmethod
    async def update_presence(self, updates: Sequence[Presence]) -> int:
        """Write many heartbeats in one transaction; return how many devices matched.

        The server buffers heartbeats and flushes them here in batches, never one
        write per heartbeat. Unknown serials are ignored (counted out of the result).
        A Presence with an `address` stores it as the device's `last_address`.
        """

    # the session-end signal ----------------------------------------------------------
    # A row per "end this device's open session now", read by every gateway process on
    # every node: ids grow in commit order and are never reused, so a reader that keeps
    # the last id it handled and asks `session_ends_after(that id)` misses none.

    @abc.abstractmethod
    async def end_device_sessions(self, serial: str, reason: SessionEndReason) -> int:
        """Signal that the device's open session must end; return the new row's id.

        Raises UnknownDevice, ValueError for a reason that is not a SessionEndReason.
        """

    @abc.abstractmethod
    async def session_ends_after(self, after_id: int, limit: int = 1000) -> list[SessionEnd]:
        """Session ends with id > after_id, ordered by id, at most `limit`."""

    @abc.abstractmethod
    async def last_session_end_id(self) -> int:
        """The highest session-end id stored (0 if none): where a starting gateway begins
        reading, as sessions opened after its start are the only ones it can end."""

    @abc.abstractmethod
    async def prune_session_ends(self, older_than_ms: int) -> int:
        """Delete session ends created before `older_than_ms`; return how many. Keep them
        longer than any gateway may go without reading (a poll interval and a restart)."""

    @abc.abstractmethod
    async def listen_session_ends(
        self, callback: Callable[[int], None], *, on_lost: Callable[[], None] | None = None,
    ) -> Callable[[], Awaitable[None]] | None:
        """Call `callback(id)` in this event loop as soon as a session end commits anywhere.

        PostgreSQL: opens a dedicated connection that LISTENs (only this store's schema is
        heard) and returns an async `stop()` that stops listening and closes it. If that
        connection is lost, notifications stop and `on_lost()` is called: read
        `session_ends_after` to catch up and listen again. The callback gets the id only;
        read the rows with `session_ends_after`. Raises StoreUnavailable if it cannot
        connect. SQLite: returns None; poll `session_ends_after` (a read in WAL mode, it
        never waits for the writer).
        """

    # API tokens ----------------------------------------------------------------------
    @abc.abstractmethod
    async def create_api_token(
        self, name: str, token_sha256: bytes, scopes: Iterable[str], *,
        region_code: str | None = None, created_by: str = "",
    ) -> ApiToken:
        """Store a new active token under `name` (the SHA-256 of the token, never the token).

        Scopes are stored as given (their meaning is the API's), at least one. Raises
        TokenExists if the name is taken, by an active or a revoked token; ValueError naming
        the field for a malformed name (1-64 printable characters), hash (32 bytes), scope
        set or region code, or for a hash another token already has.
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
        after_id: int = 0, limit: int = 1000,
    ) -> list[PunchListing]:
        """Accepted punches with id > `after_id`, ordered by id (the order stored), at most
        `limit` (0..MAX_PUNCH_PAGE, else ValueError). A short page is the last one; pass
        the last id of a page as the next `after_id`.

        Filters that are not None must all match: `project_code` is the device's,
        `since_ms` (inclusive) and `until_ms` (exclusive) bound punch_time_ms.
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

    # downlink commands ---------------------------------------------------------------
    @abc.abstractmethod
    async def enqueue_command(
        self, serial: str, command_type: int, payload: bytes, *, expires_at_ms: int | None = None
    ) -> int:
        """Queue a command for a device; return its id (ids order a device's commands)."""

    @abc.abstractmethod
    async def pending_commands(self, serial: str, limit: int = 16) -> list[Command]:
        """Queued or sent-but-unanswered commands of a device, oldest first."""

    @abc.abstractmethod
    async def mark_command_sent(self, command_id: int, seq: int) -> bool:
        """Record the frame sequence number it went out with. False if not queued/sent."""

    @abc.abstractmethod
    async def complete_command(self, command_id: int, result_code: int) -> bool:
        """The device answered. False if the command was not pending any more."""

    @abc.abstractmethod
    async def cancel_command(self, command_id: int) -> bool: ...

    @abc.abstractmethod
    async def expire_commands(self, now_ms: int) -> int:
        """Expire pending commands whose expires_at_ms <= now_ms; return how many."""

    @abc.abstractmethod
    async def get_command(self, command_id: int) -> Command | None: ...

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
