"""Every limit of the storage layer, in one place, with the reason for its default.

A limit that is not here does not exist: queues, waits and buffers in `storage/` read
their bound from a `StoreConfig`. Units are in the names (`_ms`, `_bytes`).
"""

from __future__ import annotations

from dataclasses import dataclass

MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class StoreConfig:
    """Limits and durability settings shared by the SQLite and PostgreSQL stores."""

    # Group commit. A 500-row transaction of punches plus their outbox rows takes about
    # 2-4 ms of SQLite work on this class of machine, so the fsync (0.3 ms on a local
    # SSD, 2-10 ms on SD cards and network disks) is spread over 500 rows; bigger batches
    # add latency for every caller in them and buy almost no throughput.
    group_commit_max_records: int = 500
    # How long the first record of a batch waits for company before the batch is written.
    # Under load the batch fills while the previous one commits anyway; the window only
    # adds latency. 2 ms rather than 5: at 33,000 punches/s from 256 terminals, p50 6.5 vs
    # 11.8 ms and p99 15.4 vs 19.3 ms, for 6% more gateway CPU (same closed-loop rate).
    group_commit_max_delay_ms: float = 2.0
    # Batches being committed at the same time. On SQLite the second waits in the writer
    # thread's queue while the first commits (one writer, strictly one after the other):
    # the writer starts it without waiting for the event loop to notice the first one
    # ended, which on a busy loop was several ms per batch (256 terminals at 27k punches/s:
    # ack p50 70 -> 39-55 ms). On PostgreSQL two batches overlap one's network round trips
    # with the other's commit.
    group_commit_batches_in_flight_sqlite: int = 2
    group_commit_batches_in_flight_postgres: int = 2
    # Records accepted but not yet committed. A PunchIn is about 400 bytes in memory, so
    # 50 000 is 20 MB and about one second of backlog at the measured write rate; past
    # that the disk is not keeping up and waiting longer only hides it.
    max_queued_records: int = 50_000
    # How long a caller waits for room in that queue before getting StoreUnavailable
    # ("overloaded"). Devices wait seconds for an ack; 2 s leaves the server time to nack.
    enqueue_wait_ms: int = 2_000

    # SQLite. FULL makes every acknowledged commit reach the disk (WAL fsync per commit);
    # NORMAL would lose the last transactions on power loss, which breaks the ack contract.
    sqlite_synchronous: str = "FULL"
    # Another process (a backup, `lmg punches count`) may hold the write lock briefly.
    sqlite_busy_timeout_ms: int = 5_000
    # Read connections, each with its own thread, so reads never wait for the writer.
    sqlite_readers: int = 2

    # PostgreSQL. Eight connections cover two group-commit batches plus the forwarder,
    # device registry and admin reads of one node; PostgreSQL's default max_connections
    # is 100, so a dozen nodes fit.
    pg_pool_max: int = 8
    # A dead network must not hang a batch: after 10 s the callers get StoreUnavailable
    # and their devices resend. A 500-row batch normally commits in a few ms.
    pg_command_timeout_ms: int = 10_000
    pg_connect_timeout_ms: int = 5_000

    # Photos. Turnstile face captures are 640x480 JPEGs of 30-200 KB; 2 MiB is ten times
    # the largest seen and caps the disk an abandoned upload can hold.
    photo_max_bytes: int = 2 * MIB
    # Partial uploads untouched for a day are abandoned (devices retry within minutes).
    photo_partial_ttl_ms: int = 24 * 3600 * 1000

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
        if self.sqlite_readers < 1 or self.pg_pool_max < 2:
            raise ValueError("need at least 1 SQLite reader and 2 PostgreSQL connections")
