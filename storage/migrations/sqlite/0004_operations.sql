-- The operations API: scoped tokens, the session-end signal, each device's last address.

-- Tokens are stored as the SHA-256 of the bearer token, never the token itself.
-- region_code is reserved for region-scoped tokens (a later version); NULL means all.
CREATE TABLE api_tokens (
    name            TEXT PRIMARY KEY,
    token_sha256    BLOB NOT NULL UNIQUE CHECK (length(token_sha256) = 32),
    scopes          TEXT NOT NULL,          -- comma-separated, sorted
    region_code     TEXT,
    created_at_ms   INTEGER NOT NULL,
    revoked_at_ms   INTEGER,                -- NULL while active
    created_by      TEXT NOT NULL DEFAULT ''
) WITHOUT ROWID;

-- One row per "end this device's open session now" (disabled, secret rotated, closed by
-- an operator); gateways read the rows after the last id they saw. AUTOINCREMENT: ids
-- are never reused, so pruning old rows can never hide a new one behind a reader's
-- cursor. No CHECK on reason: the enum in storage/api.py is the one list, and adding a
-- reason to a CHECK would mean rebuilding the table on SQLite.
CREATE TABLE session_ends (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    device_serial   TEXT NOT NULL,
    reason          TEXT NOT NULL,
    created_at_ms   INTEGER NOT NULL
);

-- The peer address of the device's last session (host:port as the gateway saw it).
ALTER TABLE devices ADD COLUMN last_address TEXT;

-- The audit log is read by subject too (what happened to this device or token).
CREATE INDEX audit_log_subject ON audit_log (subject, id);
