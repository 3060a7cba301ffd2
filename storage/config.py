"""Every limit of the storage layer, in one place, with the reason for its default.

A limit that is not here does not exist: queues, waits and buffers in `storage/` read
their bound from a `StoreConfig`. Units are in the names (`_ms`, `_bytes`). Each field is
also a key of the gateway's settings under the same name (server/settings.py derives the
TOML key, the `LMG_*` variable and the flag from it); its `why` is the help text.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

MIB = 1024 * 1024


def key(default: Any, why: str) -> Any:
    """A settings key of this section: its default and the reason for it."""
    return field(default=default, metadata={"why": why})


@dataclass(frozen=True, slots=True)
class StoreConfig:
    """Limits and durability settings shared by the SQLite and PostgreSQL stores."""

    # A 500-row transaction of punches plus their outbox rows takes about 2-4 ms of SQLite
    # work on this class of machine, so the fsync (0.3 ms on a local SSD, 2-10 ms on SD
    # cards and network disks) is spread over 500 rows.
    group_commit_max_records: int = key(
        500, "records per group-commit transaction: the fsync is spread over 500 rows; bigger batches add latency "
             "for every caller in them and buy little (2000 uploads an outage's backlog 10-20% faster)")
    # Under load the batch fills while the previous one commits anyway; the window only adds
    # latency. 2 ms rather than 5: at 33,000 punches/s from 256 terminals, p50 6.5 vs 11.8 ms
    # and p99 15.4 vs 19.3 ms, for 6% more gateway CPU (same closed-loop rate).
    group_commit_max_delay_ms: float = key(
        2.0, "ms the first record of a batch waits for company before the batch is written")
    # On SQLite the second batch waits in the writer process's queue while the first
    # commits (one writer, strictly one after the other): the writer starts it without
    # waiting for the event loop to notice the first one ended, which on a busy loop was
    # several ms per batch (256 terminals at 27k punches/s: ack p50 70 -> 39-55 ms).
    group_commit_batches_in_flight_sqlite: int = key(
        2, "SQLite batches handed to the writer at once: it starts the next without waiting for the event loop")
    group_commit_batches_in_flight_postgres: int = key(
        2, "PostgreSQL batches in flight: one's network round trips overlap the other's commit")
    # A PunchIn is about 400 bytes in memory, so 50 000 is 20 MB and about one second of
    # backlog at the measured write rate.
    max_queued_records: int = key(
        50_000, "records accepted but not yet committed (~20 MB, about a second of writing); past that the disk "
                "is not keeping up and waiting longer only hides it")
    enqueue_wait_ms: int = key(
        2_000, "ms a caller waits for room in that queue before the device is nacked STORE_UNAVAILABLE "
               "(devices wait seconds for an ack; 2 s leaves time to nack)")

    # A terminal resends what is unanswered after 15 s (docs/protocol.md §6.2): a record
    # queued longer than that is answered after its resend is already on the way.
    max_queue_age_ms: int = key(
        5_000, "ms the oldest record may wait for the disk before new ones are refused at once with "
               "STORE_UNAVAILABLE (terminals resend after 15 s: a record answered later is written twice; 5 s "
               "leaves the commit and the ACK time); 0 turns the bound off")

    sqlite_synchronous: str = key(
        "FULL", "SQLite synchronous mode: FULL makes every acknowledged commit reach the disk (WAL fsync per "
                "commit); NORMAL would lose the last transactions on power loss, which breaks the ack contract")
    sqlite_busy_timeout_ms: int = key(
        5_000, "ms SQLite waits for another process (a backup, `lmg punches count`) holding the write lock")
    sqlite_readers: int = key(2, "SQLite read connections, each with its own thread, so reads never wait for the writer")

    pg_pool_max: int = key(
        8, "PostgreSQL connections per process: group_commit_batches_in_flight_postgres of them are the punches' "
           "own (never waiting behind photos or reads), the rest are shared by photos, the forwarder, device and "
           "admin reads; PostgreSQL's default max_connections of 100 fits a dozen nodes")
    pg_command_timeout_ms: int = key(
        10_000, "ms before a PostgreSQL command is given up (a 500-row batch normally commits in a few ms): a dead "
                "network must not hang a batch; the devices get STORE_UNAVAILABLE and resend")
    pg_connect_timeout_ms: int = key(5_000, "ms to connect to PostgreSQL before the store is reported unavailable")

    # A live device is heard every heartbeat_interval_s (30 s) and its last-seen time
    # written every presence_flush_s (5 s); the gateway closes a device silent for the
    # heartbeat grace (3 x 30 s). A node that dies writes nothing more, so its devices
    # stay flagged online: they are shown offline once not heard for 90 + 5 s, as a live
    # node would show a silent device. Settings refuses a value below that sum.
    presence_stale_ms: int = key(
        95_000, "ms after the last-seen time a device flagged online is shown offline (a node that died leaves its "
                "devices flagged); at least heartbeat_interval_s x heartbeat_misses + presence_flush_s")
    photo_max_bytes: int = key(
        2 * MIB, "largest photo kept: turnstile face captures are 640x480 JPEGs of 30-200 KB; 2 MiB is ten times "
                 "the largest seen and caps the disk an abandoned upload can hold")
    photo_partial_ttl_ms: int = key(
        24 * 3600 * 1000, "ms after which a partial photo upload nobody continued is deleted (devices retry within "
                          "minutes)")

    # The province keeps every photo it confirmed; the gateway's copy serves the admin API's
    # punch photo for disputes, which come with the monthly payroll. 1,000 terminals at 200
    # punches a day, 30% with a 30 KB photo, store 1.8 GB a day: 54 GB for 30 days.
    photo_forwarded_retention_ms: int = key(
        30 * 24 * 3600 * 1000, "ms a photo's bytes are kept after the province confirmed it (30 days: the payroll "
                               "month's disputes); 0 keeps them for ever. The record of the photo stays")
    # Punches are the record of wages: a wage-arrears claim may be brought up to a year after
    # the employment ends (劳动争议调解仲裁法, art. 27), which the gateway cannot know, so by
    # default every punch is kept. A province that keeps its own copy may set a retention:
    # a month is dropped whole once it ended that long ago and the province confirmed every
    # punch in it (PostgreSQL only; docs/storage.md, "Punches by month"). The dedup keys go
    # with the month, so a terminal resending a record of it would store it again: 90 days
    # is the least, far beyond a terminal's buffer of unacknowledged records (days).
    punch_retention_days: int = key(
        0, "days after its end before a month of punches the province confirmed entirely is dropped (PostgreSQL); "
           "0 keeps every punch for ever (they are the wage-dispute record); at least 90 otherwise")
    # Created by the hourly maintenance; three months ahead survive a gateway fleet that is
    # down or failing its maintenance for two months before a punch has no month to go to
    # but the default partition.
    punch_partitions_ahead: int = key(
        3, "months of punch partitions created ahead of the current one (PostgreSQL), hourly")
    face_max_bytes: int = key(
        2 * MIB, "largest face photo accepted for the roster: terminals enroll from 640x480 JPEGs of 30-200 KB; "
                 "2 MiB is ten times that and still only 128 FACE_CHUNKs of 16 KiB per terminal")
    # An import is one transaction, and on SQLite it holds the database's one write lock:
    # `lmg roster import` of 10,000 changed workers beside a gateway storing 20 terminals'
    # punches (2-core shared VM, 2026-11-28) made punch commits wait up to 435 ms (3,000
    # workers: 114 ms; p99 8-12 ms as without). PostgreSQL punches did not wait (max 38 ms).
    # The largest sites have a few thousand workers; a bigger file is split.
    roster_import_max_rows: int = key(
        10_000, "workers per import_workers call (one transaction): on SQLite 10,000 changed workers held punch "
                "commits up to 0.44 s; the largest sites have a few thousand")

    def __post_init__(self) -> None:
        if self.group_commit_max_records < 1:
            raise ValueError("group_commit_max_records must be at least 1")
        if self.group_commit_max_delay_ms < 0:
            raise ValueError("group_commit_max_delay_ms must not be negative")
        if self.max_queued_records < self.group_commit_max_records:
            raise ValueError("max_queued_records must be at least group_commit_max_records")
        if self.sqlite_synchronous.upper() not in ("OFF", "NORMAL", "FULL", "EXTRA"):
            raise ValueError(
                f"sqlite_synchronous={self.sqlite_synchronous!r}: use FULL (default), EXTRA or NORMAL"
            )
        if self.sqlite_readers < 1:
            raise ValueError("need at least 1 SQLite reader (sqlite_readers)")
        if self.pg_pool_max < self.group_commit_batches_in_flight_postgres + 2:
            raise ValueError(
                f"pg_pool_max={self.pg_pool_max} leaves too few PostgreSQL connections: "
                f"group_commit_batches_in_flight_postgres ({self.group_commit_batches_in_flight_postgres}) are the "
                f"punches' own, and reads need at least 2 more")
        for name in ("group_commit_batches_in_flight_sqlite", "group_commit_batches_in_flight_postgres",
                     "enqueue_wait_ms", "pg_command_timeout_ms", "pg_connect_timeout_ms", "photo_max_bytes",
                     "photo_partial_ttl_ms", "roster_import_max_rows", "presence_stale_ms"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.max_queue_age_ms < 0:
            raise ValueError(f"max_queue_age_ms must be 0 (no bound) or more, got {self.max_queue_age_ms}")
        if self.photo_forwarded_retention_ms < 0:
            raise ValueError(f"photo_forwarded_retention_ms must be 0 (keep for ever) or more, "
                             f"got {self.photo_forwarded_retention_ms}")
        if self.punch_retention_days != 0 and self.punch_retention_days < 90:
            raise ValueError(f"punch_retention_days must be 0 (keep every punch) or at least 90, got "
                             f"{self.punch_retention_days}: a dropped month's records would be stored again if a "
                             f"terminal resent them")
        if not 1 <= self.punch_partitions_ahead <= 24:
            raise ValueError(f"punch_partitions_ahead must be 1..24 months, got {self.punch_partitions_ahead}")
        if self.face_max_bytes < 1024:
            raise ValueError(f"face_max_bytes must be at least 1024 (the smallest face accepted), "
                             f"got {self.face_max_bytes}")
