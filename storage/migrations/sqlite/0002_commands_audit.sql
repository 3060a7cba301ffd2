-- Downlink command queue and the audit log.

CREATE TABLE commands (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    device_serial    TEXT NOT NULL,
    command_type     INTEGER NOT NULL,
    payload          BLOB NOT NULL,
    state            TEXT NOT NULL DEFAULT 'queued'
                     CHECK (state IN ('queued', 'sent', 'done', 'expired', 'cancelled')),
    seq              INTEGER,
    result_code      INTEGER,
    created_at_ms    INTEGER NOT NULL,
    sent_at_ms       INTEGER,
    completed_at_ms  INTEGER,
    expires_at_ms    INTEGER
);
CREATE INDEX commands_pending ON commands (device_serial, id) WHERE state IN ('queued', 'sent');

CREATE TABLE audit_log (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms    INTEGER NOT NULL,
    event    TEXT NOT NULL,
    subject  TEXT NOT NULL,
    detail   TEXT NOT NULL,   -- JSON object
    address  TEXT
);
CREATE INDEX audit_log_event ON audit_log (event, id);
