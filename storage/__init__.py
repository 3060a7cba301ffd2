"""Storage layer of the 陇明公 gateway: durable punches, devices, photos, outbox, commands, audit.

The server uses only what is exported here: `open_store(url, data_dir=...)` returns a
`Store` (SQLite by default, PostgreSQL for `postgresql://` URLs); the record types and
the error tree come with it. See docs/storage.md for the contracts.
"""

from lmg.storage.api import (
    DUPLICATE,
    STORED,
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
    PunchOutcome,
    RejectedPunch,
    Store,
    VerifyMode,
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
    StoreUnavailable,
    StoreUrlError,
    UnknownDevice,
)
from lmg.storage.url import open_store, parse_store_url

__all__ = [
    "DUPLICATE", "STORED", "AuditEntry", "Command", "CommandState", "Device", "DeviceExists",
    "Direction", "Outcome", "OutboxItem", "OutboxStatus", "PhotoError", "PhotoHashMismatch",
    "PhotoOffsetMismatch", "PhotoTooLarge", "Presence", "Punch", "PunchIn", "PunchOutcome",
    "RejectedPunch", "SchemaTooNew", "Store", "StoreClosed", "StoreConfig", "StoreError",
    "StoreUnavailable", "StoreUrlError", "UnknownDevice", "open_store", "parse_store_url",
]
