-- Devices, punches (accepted and rejected), photos and the forwarding outbox.

CREATE TABLE devices (
    serial          TEXT PRIMARY KEY,
    secret          BLOB NOT NULL,          -- 32-byte HMAC key
    project_code    TEXT NOT NULL,
    region_code     TEXT NOT NULL,          -- GB/T 2260, 6 digits
    enabled         INTEGER NOT NULL DEFAULT 1,
    last_seen_ms    INTEGER,
    online          INTEGER NOT NULL DEFAULT 0,
    firmware        TEXT NOT NULL DEFAULT '',
    roster_version  INTEGER NOT NULL DEFAULT 0,
    created_at_ms   INTEGER NOT NULL
) WITHOUT ROWID;

-- id is arrival order. The single writer relies on SQLite giving each new row
-- max(id) + 1 to find the rows one INSERT OR IGNORE batch added (see storage/sqlite.py).
CREATE TABLE punches (
    id              INTEGER PRIMARY KEY,
    device_serial   TEXT NOT NULL,
    record_no       INTEGER NOT NULL,
    worker_id       TEXT NOT NULL,
    punch_time_ms   INTEGER NOT NULL,
    direction       INTEGER NOT NULL,
    verify_mode     INTEGER NOT NULL,
    temperature_dc  INTEGER NOT NULL,
    photo_sha256    BLOB,
    photo_size      INTEGER NOT NULL,
    received_at_ms  INTEGER NOT NULL,
    UNIQUE (device_serial, record_no)
);

CREATE TABLE rejected_punches (
    id              INTEGER PRIMARY KEY,
    device_serial   TEXT NOT NULL,
    record_no       INTEGER NOT NULL,
    worker_id       TEXT NOT NULL,
    punch_time_ms   INTEGER NOT NULL,
    direction       INTEGER NOT NULL,
    verify_mode     INTEGER NOT NULL,
    temperature_dc  INTEGER NOT NULL,
    photo_sha256    BLOB,
    photo_size      INTEGER NOT NULL,
    reject_reason   INTEGER NOT NULL,
    received_at_ms  INTEGER NOT NULL,
    UNIQUE (device_serial, record_no)
);

-- A row here means the blob is stored and verified; punches link by photo_sha256.
CREATE TABLE photos (
    sha256          BLOB PRIMARY KEY,
    size            INTEGER NOT NULL,
    stored_at_ms    INTEGER NOT NULL
) WITHOUT ROWID;

-- AUTOINCREMENT: ids are never reused, so a late ack of an item that was already
-- acked and deleted can never delete a newer item that got the same id.
-- punch_id is punches.id. No UNIQUE index or enforced foreign key: rows are only ever
-- made from the punches one batch added (storage/sqlite.py), and the two extra b-tree
-- probes per row cost 10-15% of the write path; the crash test checks one-to-one.
CREATE TABLE outbox (
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
    punch_id            INTEGER NOT NULL,
    device_serial       TEXT NOT NULL,
    state               TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'dead')),
    attempts            INTEGER NOT NULL DEFAULT 0,
    next_attempt_at_ms  INTEGER NOT NULL,
    last_error          TEXT,
    created_at_ms       INTEGER NOT NULL
);
CREATE INDEX outbox_due ON outbox (state, next_attempt_at_ms);

