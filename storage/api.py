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
from collections.abc import AsyncIterator, Iterable, Sequence
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

    def __repr__(self) -> str:
        return (
            f"Device(serial={self.serial!r}, secret=<hidden>, project_code={self.project_code!r}, "
            f"region_code={self.region_code!r}, enabled={self.enabled}, "
            f"last_seen_ms={self.last_seen_ms}, online={self.online}, "
            f"firmware={self.firmware!r}, roster_version={self.roster_version})"
        )

    __str__ = __repr__


@dataclass(frozen=True, slots=True)
class Presence:
    """One device's heartbeat state for `Store.update_presence`.

    `firmware` / `roster_version` of None leave the stored value unchanged.
    """

    serial: str
    last_seen_ms: int
    online: bool
    firmware: str | None = None
    roster_version: int | None = None


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
    async def list_devices(self, *, after_serial: str = "", limit: int = 1000) -> list[Device]:
        """Devices ordered by serial, starting after `after_serial` (paging)."""

    @abc.abstractmethod
    async def set_device_enabled(self, serial: str, enabled: bool) -> None:
        """Enable or disable a device. Raises UnknownDevice."""

    async def enable_device(self, serial: str) -> None:
        await self.set_device_enabled(serial, True)

    async def disable_device(self, serial: str) -> None:
        await self.set_device_enabled(serial, False)

    @abc.abstractmethod
    async def rotate_device_secret(self, serial: str, secret: bytes | None = None) -> bytes:
        """Replace the secret (32 fresh random bytes unless given); return it. Raises UnknownDevice."""

    @abc.abstractmethod
    async def update_presence(self, updates: Sequence[Presence]) -> int:
        """Write many heartbeats in one transaction; return how many devices matched.

        The server buffers heartbeats and flushes them here in batches, never one
        write per heartbeat. Unknown serials are ignored (counted out of the result).
        """

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
    async def list_dead_letters(self, *, limit: int = 100) -> list[OutboxItem]: ...

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
    async def list_audit(self, *, limit: int = 100, event: str | None = None) -> list[AuditEntry]:
        """Newest first."""
