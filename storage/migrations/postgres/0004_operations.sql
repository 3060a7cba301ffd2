-- The operations API: scoped tokens, the session-end signal, each device's last address.

-- Tokens are stored as the SHA-256 of the bearer token, never the token itself.
-- region_code is reserved for region-scoped tokens (a later version); NULL means all.
CREATE TABLE api_tokens (
    name            text PRIMARY KEY,
    token_sha256    bytea NOT NULL UNIQUE CHECK (length(token_sha256) = 32),
    scopes          text NOT NULL,          -- comma-separated, sorted
    region_code     text,
    created_at_ms   bigint NOT NULL,
    revoked_at_ms   bigint,                 -- NULL while active
    created_by      text NOT NULL DEFAULT ''
);

-- One row per "end this device's open session now" (disabled, secret rotated, closed by
-- an operator); gateways read the rows after the last id they saw, and hear each new one
-- by NOTIFY. Identity values are never reused, so pruning old rows can never hide a new
-- one behind a reader's cursor; writers serialize on a table lock (storage/postgres.py)
-- so ids commit in order. No CHECK on reason: the enum in storage/api.py is the one list.
CREATE TABLE session_ends (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    device_serial   text NOT NULL,
    reason          text NOT NULL,
    created_at_ms   bigint NOT NULL
);

-- The peer address of the device's last session (host:port as the gateway saw it).
ALTER TABLE devices ADD COLUMN last_address text;

-- The audit log is read by subject too (what happened to this device or token).
CREATE INDEX audit_log_subject ON audit_log (subject, id);
