-- The supervision of key personnel (issue 15): bid awards and the people they commit,
-- approved personnel changes, leave, stop-work and province-wide pause days, warnings and
-- their append-only history; API tokens gain a department. Dates are ISO text (YYYY-MM-DD,
-- days in China): they sort as dates. Nothing is added to punches (docs/storage.md: the
-- attendance aggregate reads them through their primary key and the device key).

-- A bid award (中标通知书). A project may have several (builder, supervisor, sections).
-- project_code names a stored project (checked by the store, as workers').
CREATE TABLE bid_awards (
    notice_no        TEXT PRIMARY KEY,        -- 中标通知书编号
    project_code     TEXT NOT NULL,
    enterprise       TEXT NOT NULL,
    enterprise_uscc  TEXT NOT NULL,           -- GB 32100, 18 characters
    award_date       TEXT NOT NULL,
    imported_at_ms   INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX bid_awards_project ON bid_awards (project_code, notice_no);

-- The key personnel an award commits: a post (lmg.protocol.posts code) may name several
-- people (specialist supervisors), a person appears once per post.
CREATE TABLE bid_personnel (
    notice_no       TEXT NOT NULL,
    post            TEXT NOT NULL,
    id_number       TEXT NOT NULL,            -- GB 11643, check digit verified
    name            TEXT NOT NULL,
    certificate_no  TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (notice_no, post, id_number)
) WITHOUT ROWID;

-- An approved change (变更) of a key post's person: from approved_on the new person holds
-- the commitment and the old one's ends.
CREATE TABLE personnel_changes (
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
    project_code        TEXT NOT NULL,
    post                TEXT NOT NULL,
    old_id_number       TEXT NOT NULL,
    new_id_number       TEXT NOT NULL,
    new_name            TEXT NOT NULL,
    new_certificate_no  TEXT NOT NULL DEFAULT '',
    approved_on         TEXT NOT NULL,
    approval_ref        TEXT NOT NULL,
    recorded_at_ms      INTEGER NOT NULL,
    UNIQUE (project_code, post, old_id_number, new_id_number, approved_on)
);

-- Approved leave of a person on a project, first_day..last_day inclusive.
CREATE TABLE approved_leave (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    project_code    TEXT NOT NULL,
    id_number       TEXT NOT NULL,
    first_day       TEXT NOT NULL,
    last_day        TEXT NOT NULL,
    reference       TEXT NOT NULL,
    recorded_at_ms  INTEGER NOT NULL,
    UNIQUE (project_code, id_number, first_day, last_day)
);

-- Approved stop-work periods of a project, first_day..last_day inclusive.
CREATE TABLE stop_work (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    project_code    TEXT NOT NULL,
    first_day       TEXT NOT NULL,
    last_day        TEXT NOT NULL,
    reference       TEXT NOT NULL,
    recorded_at_ms  INTEGER NOT NULL,
    UNIQUE (project_code, first_day, last_day)
);

-- Province-wide days without construction (holidays, alerts).
CREATE TABLE pause_days (
    day             TEXT PRIMARY KEY,
    reason          TEXT NOT NULL,
    recorded_at_ms  INTEGER NOT NULL
) WITHOUT ROWID;

-- A warning of the supervision of key personnel. key: rule|project|post|person|period
-- start (lmg.storage.api.WarningFinding.key), which makes an evaluation idempotent.
-- level 1 county, 2 city, 3 province; level_since_ms: when it reached its level. version
-- grows with every change; forwarded_version is the last the province confirmed, so the
-- rows with version > forwarded_version are the outbox of warnings. AUTOINCREMENT: an id
-- names one warning for good (the history and the province refer to it).
CREATE TABLE warnings (
    id                 INTEGER PRIMARY KEY AUTOINCREMENT,
    key                TEXT NOT NULL UNIQUE,
    rule               TEXT NOT NULL,
    project_code       TEXT NOT NULL,
    region_code        TEXT NOT NULL,         -- the project's when the warning opened
    worker_id          TEXT,                  -- NULL for a rule about the project
    post               TEXT,
    period_start       TEXT NOT NULL,
    period_end         TEXT NOT NULL,
    figures            TEXT NOT NULL,         -- JSON object, keys sorted
    level              INTEGER NOT NULL CHECK (level BETWEEN 1 AND 3),
    state              TEXT NOT NULL CHECK (state IN ('open', 'resolved', 'closed')),
    opened_at_ms       INTEGER NOT NULL,
    level_since_ms     INTEGER NOT NULL,
    updated_at_ms      INTEGER NOT NULL,
    resolved_at_ms     INTEGER,
    closed_at_ms       INTEGER,
    disposition        TEXT,                  -- lmg.storage.api.Disposition, when closed
    note               TEXT NOT NULL DEFAULT '',
    closed_by          TEXT NOT NULL DEFAULT '',
    version            INTEGER NOT NULL,
    forwarded_version  INTEGER NOT NULL DEFAULT 0
);
-- An evaluation's scope (rules, a period, projects); a project's warnings; a region's
-- (a scope is a set of codes); escalation; the outbox.
CREATE INDEX warnings_period ON warnings (period_start, rule);
CREATE INDEX warnings_project ON warnings (project_code, id);
CREATE INDEX warnings_region ON warnings (region_code, id);
CREATE INDEX warnings_open ON warnings (level, level_since_ms) WHERE state = 'open';
CREATE INDEX warnings_unforwarded ON warnings (id) WHERE version > forwarded_version;
-- The record credit management is built on: warnings are never deleted.
CREATE TRIGGER warnings_never_deleted BEFORE DELETE ON warnings
BEGIN
    SELECT RAISE(ABORT, 'warnings are never deleted: close a warning with a disposition instead');
END;

-- Every change of a warning, appended and never changed or deleted (the triggers refuse).
CREATE TABLE warning_events (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    warning_id  INTEGER NOT NULL REFERENCES warnings (id),
    at_ms       INTEGER NOT NULL,
    event       TEXT NOT NULL,                -- lmg.storage.api.WarningEventKind
    level       INTEGER NOT NULL,
    state       TEXT NOT NULL,
    by          TEXT NOT NULL,
    detail      TEXT NOT NULL DEFAULT '{}'    -- JSON object
);
CREATE INDEX warning_events_warning ON warning_events (warning_id, id);
CREATE TRIGGER warning_events_append_only_update BEFORE UPDATE ON warning_events
BEGIN
    SELECT RAISE(ABORT, 'warning_events is append-only: its rows are never changed');
END;
CREATE TRIGGER warning_events_append_only_delete BEFORE DELETE ON warning_events
BEGIN
    SELECT RAISE(ABORT, 'warning_events is append-only: its rows are never deleted');
END;

-- A supervisor's token belongs to a department (lmg.storage.api.Department: construction
-- 住建, labour 人社) and a region; both NULL for an operator's token.
ALTER TABLE api_tokens ADD COLUMN department TEXT;
