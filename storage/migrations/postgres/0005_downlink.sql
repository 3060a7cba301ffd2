-- The downlink: projects and their rosters, face photos, how far each device got with a
-- face, operator commands with their outcome, and the signals that wake running gateways.

-- A project (工程项目). roster_version is the version of the last change to its roster;
-- roster_floor the lowest version a delta can start from (raised when tombstones are
-- pruned). Writers of a project's roster lock its row (storage/postgres.py), so its
-- versions commit in order. Devices name their project by code; no foreign key, as
-- devices may be provisioned before their project is.
CREATE TABLE projects (
    code             text PRIMARY KEY,
    name             text NOT NULL,
    region_code      text NOT NULL,          -- GB/T 2260, 6 digits
    enterprise       text NOT NULL DEFAULT '',
    enterprise_uscc  text NOT NULL DEFAULT '',
    start_date       date,
    end_date         date,
    roster_version   bigint NOT NULL DEFAULT 0,
    roster_floor     bigint NOT NULL DEFAULT 0,
    created_at_ms    bigint NOT NULL
);

-- One row per (project, resident ID number). version: the roster version of the row's
-- last change that terminals see (0 for a worker never on the roster); added_version:
-- when the worker last joined the roster; face_version: when terminals last had to fetch
-- the face. A worker who left keeps the row (on_roster false: a tombstone) until pruned.
-- Versions are unique within a project (the rows of a delta, in order); 0 is shared by
-- the workers not entered yet.
CREATE TABLE workers (
    project_code   text NOT NULL,
    worker_id      text NOT NULL,            -- GB 11643, check digit verified
    name           text NOT NULL,
    card_no        text NOT NULL DEFAULT '',
    enterprise     text NOT NULL DEFAULT '',
    team           text NOT NULL DEFAULT '',
    post           text NOT NULL DEFAULT 'worker',   -- lmg.protocol.posts code
    entry_date     date NOT NULL,
    exit_date      date,
    face_sha256    bytea,
    on_roster      boolean NOT NULL,
    version        bigint NOT NULL,
    added_version  bigint NOT NULL,
    face_version   bigint NOT NULL,
    updated_at_ms  bigint NOT NULL,
    PRIMARY KEY (project_code, worker_id)
);
CREATE UNIQUE INDEX workers_version ON workers (project_code, version) WHERE version > 0;

-- A row means the blob (in the blob store, beside the punch photos) is stored.
CREATE TABLE faces (
    sha256        bytea PRIMARY KEY,
    size          bigint NOT NULL,
    format        text NOT NULL,             -- 'jpeg' or 'png'
    stored_at_ms  bigint NOT NULL
);

-- Where a device's terminal stands with a face being sent: the next offset to send.
CREATE TABLE device_faces (
    device_serial  text NOT NULL,
    face_sha256    bytea NOT NULL,
    next_offset    bigint NOT NULL,
    updated_at_ms  bigint NOT NULL,
    PRIMARY KEY (device_serial, face_sha256)
);

-- Commands gain the states acked and failed ('done' becomes 'acked'), the number of sends,
-- why they failed, who queued them and the terminal's reply (CONFIG_REPLY values).
ALTER TABLE commands DROP CONSTRAINT commands_state_check;
UPDATE commands SET state = 'acked' WHERE state = 'done';
ALTER TABLE commands ADD CONSTRAINT commands_state_check
    CHECK (state IN ('queued', 'sent', 'acked', 'failed', 'expired', 'cancelled'));
ALTER TABLE commands ADD COLUMN attempts integer NOT NULL DEFAULT 0;
UPDATE commands SET attempts = 1 WHERE sent_at_ms IS NOT NULL;
ALTER TABLE commands ADD COLUMN error text;
ALTER TABLE commands ADD COLUMN created_by text NOT NULL DEFAULT '';
ALTER TABLE commands ADD COLUMN reply bytea;  -- UTF-8 JSON of the terminal's answer, if it had one

-- The store's notices to running gateways, generalising session_ends (which never shipped):
-- kind 'session_end' (subject: the serial, detail: the reason), 'command' (subject: the
-- serial, detail: the command id), 'roster' (subject: the project, detail: its new roster
-- version). Gateways read the rows after the last id they saw and hear each new one by
-- NOTIFY. Identity values are never reused, so pruning cannot hide a new row behind a
-- reader's cursor; writers take a table lock (storage/postgres.py) so ids commit in order.
-- No CHECK on kind: the enum in storage/api.py is the one list.
CREATE TABLE signals (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind           text NOT NULL,
    subject        text NOT NULL,
    detail         text NOT NULL DEFAULT '',
    created_at_ms  bigint NOT NULL
);
CREATE INDEX signals_kind ON signals (kind, id);
DROP TABLE session_ends;

-- A project's devices, for the roster push (heartbeat updates do not change project_code,
-- so they stay HOT updates).
CREATE INDEX devices_project ON devices (project_code, serial);
