-- The downlink: projects and their rosters, face photos, how far each device got with a
-- face, operator commands with their outcome, and the signals that wake running gateways.

-- A project (工程项目). roster_version is the version of the last change to its roster;
-- roster_floor the lowest version a delta can start from (raised when tombstones are
-- pruned). Devices name their project by code; no foreign key, as devices may be
-- provisioned before their project is. Dates are ISO text (YYYY-MM-DD): they sort as dates.
CREATE TABLE projects (
    code             TEXT PRIMARY KEY,
    name             TEXT NOT NULL,
    region_code      TEXT NOT NULL,          -- GB/T 2260, 6 digits
    enterprise       TEXT NOT NULL DEFAULT '',
    enterprise_uscc  TEXT NOT NULL DEFAULT '',
    start_date       TEXT,
    end_date         TEXT,
    roster_version   INTEGER NOT NULL DEFAULT 0,
    roster_floor     INTEGER NOT NULL DEFAULT 0,
    created_at_ms    INTEGER NOT NULL
) WITHOUT ROWID;

-- One row per (project, resident ID number). version: the roster version of the row's
-- last change that terminals see (0 for a worker never on the roster); added_version:
-- when the worker last joined the roster; face_version: when terminals last had to fetch
-- the face. A worker who left keeps the row (on_roster 0: a tombstone) until pruned.
-- Versions are unique within a project (the rows of a delta, in order); 0 is shared by
-- the workers not entered yet.
CREATE TABLE workers (
    project_code   TEXT NOT NULL,
    worker_id      TEXT NOT NULL,            -- GB 11643, check digit verified
    name           TEXT NOT NULL,
    card_no        TEXT NOT NULL DEFAULT '',
    enterprise     TEXT NOT NULL DEFAULT '',
    team           TEXT NOT NULL DEFAULT '',
    post           TEXT NOT NULL DEFAULT 'worker',   -- lmg.protocol.posts code
    entry_date     TEXT NOT NULL,
    exit_date      TEXT,
    face_sha256    BLOB,
    on_roster      INTEGER NOT NULL,
    version        INTEGER NOT NULL,
    added_version  INTEGER NOT NULL,
    face_version   INTEGER NOT NULL,
    updated_at_ms  INTEGER NOT NULL,
    PRIMARY KEY (project_code, worker_id)
) WITHOUT ROWID;
CREATE UNIQUE INDEX workers_version ON workers (project_code, version) WHERE version > 0;

-- A row means the blob (in the blob store, beside the punch photos) is stored.
CREATE TABLE faces (
    sha256        BLOB PRIMARY KEY,
    size          INTEGER NOT NULL,
    format        TEXT NOT NULL,             -- 'jpeg' or 'png'
    stored_at_ms  INTEGER NOT NULL
) WITHOUT ROWID;

-- Where a device's terminal stands with a face being sent: the next offset to send.
CREATE TABLE device_faces (
    device_serial  TEXT NOT NULL,
    face_sha256    BLOB NOT NULL,
    next_offset    INTEGER NOT NULL,
    updated_at_ms  INTEGER NOT NULL,
    PRIMARY KEY (device_serial, face_sha256)
) WITHOUT ROWID;

-- Commands gain the states acked and failed ('done' becomes 'acked'), the number of sends,
-- why they failed, who queued them and the terminal's reply (CONFIG_REPLY values). SQLite
-- cannot change a CHECK, so the table is rebuilt; its AUTOINCREMENT counter moves with it,
-- so no id is ever handed out twice.
CREATE TABLE commands_new (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    device_serial    TEXT NOT NULL,
    command_type     INTEGER NOT NULL,
    payload          BLOB NOT NULL,          -- UTF-8 JSON of the arguments
    state            TEXT NOT NULL DEFAULT 'queued'
                     CHECK (state IN ('queued', 'sent', 'acked', 'failed', 'expired', 'cancelled')),
    seq              INTEGER,
    result_code      INTEGER,
    created_at_ms    INTEGER NOT NULL,
    sent_at_ms       INTEGER,
    completed_at_ms  INTEGER,
    expires_at_ms    INTEGER,
    attempts         INTEGER NOT NULL DEFAULT 0,
    error            TEXT,
    created_by       TEXT NOT NULL DEFAULT '',
    reply            BLOB                    -- UTF-8 JSON of the terminal's answer, if it had one
);
INSERT INTO commands_new (id, device_serial, command_type, payload, state, seq, result_code,
                          created_at_ms, sent_at_ms, completed_at_ms, expires_at_ms, attempts)
    SELECT id, device_serial, command_type, payload,
           CASE state WHEN 'done' THEN 'acked' ELSE state END, seq, result_code,
           created_at_ms, sent_at_ms, completed_at_ms, expires_at_ms,
           CASE WHEN sent_at_ms IS NULL THEN 0 ELSE 1 END
    FROM commands;
DELETE FROM sqlite_sequence WHERE name = 'commands_new';
UPDATE sqlite_sequence SET name = 'commands_new' WHERE name = 'commands';
DROP TABLE commands;
ALTER TABLE commands_new RENAME TO commands;
CREATE INDEX commands_pending ON commands (device_serial, id) WHERE state IN ('queued', 'sent');

-- The store's notices to running gateways, generalising session_ends (which never shipped):
-- kind 'session_end' (subject: the serial, detail: the reason), 'command' (subject: the
-- serial, detail: the command id), 'roster' (subject: the project, detail: its new roster
-- version). AUTOINCREMENT: ids are never reused, so pruning cannot hide a new row behind
-- a reader's cursor. No CHECK on kind: the enum in storage/api.py is the one list.
CREATE TABLE signals (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    kind           TEXT NOT NULL,
    subject        TEXT NOT NULL,
    detail         TEXT NOT NULL DEFAULT '',
    created_at_ms  INTEGER NOT NULL
);
CREATE INDEX signals_kind ON signals (kind, id);
DROP TABLE session_ends;

-- A project's devices, for the roster push (the heartbeat's UPDATE leaves this index alone:
-- it does not change project_code).
CREATE INDEX devices_project ON devices (project_code, serial);
