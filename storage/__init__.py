"""Storage layer of the 陇明公 gateway: durable punches, devices, photos, outbox, commands, audit,
API tokens and the session-end signal.

The server uses only what is exported here: `open_store(url, data_dir=...)` returns a
`Store` (SQLite by default, PostgreSQL for `postgresql://` URLs); the record types and
the error tree come with it. See docs/storage.md for the contracts.
"""

from lmg.storage.api import (
    DUPLICATE,
    MAX_PUNCH_PAGE,
    STORED,
    ApiToken,
    AuditEntry,
    Command,
    CommandState,
    Device,
    Direction,
    Outcome,
    OutboxItem,
    OutboxStatus,
    Presence,
    Punch,
    PunchIn,
    PunchListing,
    PunchOutcome,
    RejectedPunch,
    SessionEnd,
    SessionEndReason,
    Store,
    VerifyMode,
    wall_clock_ms,
)
from lmg.storage.config import StoreConfig
from lmg.storage.errors import (
    DeviceExists,
    PhotoError,
    PhotoHashMismatch,
    PhotoOffsetMismatch,
    PhotoTooLarge,
    SchemaTooNew,
    StoreClosed,
    StoreError,
    StoreNotFound,
    StoreUnavailable,
    StoreUrlError,
    TokenExists,
    UnknownDevice,
)
from lmg.storage.url import open_store, parse_store_url

__all__ = [
    "DUPLICATE", "MAX_PUNCH_PAGE", "STORED", "ApiToken", "AuditEntry", "Command", "CommandState",
    "Device", "DeviceExists", "Direction", "Outcome", "OutboxItem", "OutboxStatus", "PhotoError",
    "PhotoHashMismatch", "PhotoOffsetMismatch", "PhotoTooLarge", "Presence", "Punch", "PunchIn",
    "PunchListing", "PunchOutcome", "RejectedPunch", "SchemaTooNew", "SessionEnd",
    "SessionEndReason", "Store", "StoreClosed", "StoreConfig", "StoreError", "StoreNotFound",
    "StoreUnavailable", "StoreUrlError", "TokenExists", "UnknownDevice", "open_store",
    "parse_store_url", "wall_clock_ms",
]
