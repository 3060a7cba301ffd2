-- The supervision of key personnel (issue 15): bid awards and the people they commit,
-- approved personnel changes, leave, stop-work and province-wide pause days, warnings and
-- their append-only history; API tokens gain a department. Days are dates in China.
-- Nothing is added to punches (docs/storage.md: the attendance aggregate reads them
-- through their primary key and the device key).

-- A bid award (中标通知书). A project may have several (builder, supervisor, sections).
CREATE TABLE bid_awards (
    notice_no        text PRIMARY KEY,        -- 中标通知书编号
    project_code     text NOT NULL,
    enterprise       text NOT NULL,
    enterprise_uscc  text NOT NULL,           -- GB 32100, 18 characters
    award_date       date NOT NULL,
    imported_at_ms   bigint NOT NULL
);
CREATE INDEX bid_awards_project ON bid_awards (project_code, notice_no);

-- The key personnel an award commits: a post may name several people, a person appears
-- once per post. Replaced with the award when a corrected award is imported.
CREATE TABLE bid_personnel (
    notice_no       text NOT NULL REFERENCES bid_awards (notice_no) ON DELETE CASCADE,
    post            text NOT NULL,
    id_number       text NOT NULL,            -- GB 11643, check digit verified
    name            text NOT NULL,
    certificate_no  text NOT NULL DEFAULT '',
    PRIMARY KEY (notice_no, post, id_number)
);

-- An approved change (变更) of a key post's person: from approved_on the new person holds
-- the commitment and the old one's ends.
CREATE TABLE personnel_changes (
    id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    project_code        text NOT NULL,
    post                text NOT NULL,
    old_id_number       text NOT NULL,
    new_id_number       text NOT NULL,
    new_name            text NOT NULL,
    new_certificate_no  text NOT NULL DEFAULT '',
    approved_on         date NOT NULL,
    approval_ref        text NOT NULL,
    recorded_at_ms      bigint NOT NULL,
    UNIQUE (project_code, post, old_id_number, new_id_number, approved_on)
);

CREATE TABLE approved_leave (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    project_code    text NOT NULL,
    id_number       text NOT NULL,
    first_day       date NOT NULL,
    last_day        date NOT NULL,
    reference       text NOT NULL,
    recorded_at_ms  bigint NOT NULL,
    UNIQUE (project_code, id_number, first_day, last_day)
);

CREATE TABLE stop_work (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    project_code    text NOT NULL,
    first_day       date NOT NULL,
    last_day        date NOT NULL,
    reference       text NOT NULL,
    recorded_at_ms  bigint NOT NULL,
    UNIQUE (project_code, first_day, last_day)
);

CREATE TABLE pause_days (
    day             date PRIMARY KEY,
    reason          text NOT NULL,
    recorded_at_ms  bigint NOT NULL
);

-- A warning of the supervision of key personnel. key: rule|project|post|person|period
-- start (lmg.storage.api.WarningFinding.key). level 1 county, 2 city, 3 province. version
-- grows with every change; rows with version > forwarded_version are the outbox of
-- warnings. Writers of warnings serialize on an advisory lock (storage/postgres_supervision.py).
CREATE TABLE warnings (
    id                 bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    key                text NOT NULL UNIQUE,
    rule               text NOT NULL,
    project_code       text NOT NULL,
    region_code        text NOT NULL,         -- the project's when the warning opened
    worker_id          text,                  -- NULL for a rule about the project
    post               text,
    period_start       date NOT NULL,
    period_end         date NOT NULL,
    figures            jsonb NOT NULL,
    level              integer NOT NULL CHECK (level BETWEEN 1 AND 3),
    state              text NOT NULL CHECK (state IN ('open', 'resolved', 'closed')),
    opened_at_ms       bigint NOT NULL,
    level_since_ms     bigint NOT NULL,
    updated_at_ms      bigint NOT NULL,
    resolved_at_ms     bigint,
    closed_at_ms       bigint,
    disposition        text,                  -- lmg.storage.api.Disposition, when closed
    note               text NOT NULL DEFAULT '',
    closed_by          text NOT NULL DEFAULT '',
    version            bigint NOT NULL,
    forwarded_version  bigint NOT NULL DEFAULT 0
);
CREATE INDEX warnings_period ON warnings (period_start, rule);
CREATE INDEX warnings_project ON warnings (project_code, id);
CREATE INDEX warnings_region ON warnings (region_code, id);
CREATE INDEX warnings_open ON warnings (level, level_since_ms) WHERE state = 'open';
CREATE INDEX warnings_unforwarded ON warnings (id) WHERE version > forwarded_version;

-- Every change of a warning, appended and never changed or deleted: the record credit
-- management is built on. The trigger refuses UPDATE, DELETE and TRUNCATE (and DELETE of
-- warnings), whoever asks.
CREATE TABLE warning_events (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    warning_id  bigint NOT NULL REFERENCES warnings (id),
    at_ms       bigint NOT NULL,
    event       text NOT NULL,                -- lmg.storage.api.WarningEventKind
    level       integer NOT NULL,
    state       text NOT NULL,
    by          text NOT NULL,
    detail      jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX warning_events_warning ON warning_events (warning_id, id);

CREATE FUNCTION lmg_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% on % refused: the record of warnings is never rewritten (warning_events is append-only, warnings are never deleted)',
        TG_OP, TG_TABLE_NAME USING ERRCODE = 'raise_exception';
END;
$$;
CREATE TRIGGER warning_events_append_only BEFORE UPDATE OR DELETE ON warning_events
    FOR EACH ROW EXECUTE FUNCTION lmg_refuse_change();
CREATE TRIGGER warning_events_no_truncate BEFORE TRUNCATE ON warning_events
    FOR EACH STATEMENT EXECUTE FUNCTION lmg_refuse_change();
CREATE TRIGGER warnings_never_deleted BEFORE DELETE ON warnings
    FOR EACH ROW EXECUTE FUNCTION lmg_refuse_change();
CREATE TRIGGER warnings_no_truncate BEFORE TRUNCATE ON warnings
    FOR EACH STATEMENT EXECUTE FUNCTION lmg_refuse_change();

-- A supervisor's token belongs to a department (construction 住建, labour 人社) and a region.
ALTER TABLE api_tokens ADD COLUMN department text;
