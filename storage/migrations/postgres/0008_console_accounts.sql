-- The supervision console (issue 16): people's accounts and their browser sessions, apart
-- from the API tokens. lmg.storage.api.ConsoleAccount and ConsoleSession are the records.

-- A password is kept as its argon2id hash (PHC string, argon2-cffi), never the password.
-- department: lmg.storage.api.Department (construction 住建, labour 人社); region_code: a
-- node of lmg.protocol.regions; role: supervisor or operator. The lockout columns are the
-- state of server/console/lockout.py: consecutive failures, the end of the running lock
-- (NULL: none) and how many locks in a row there were (the window doubles with each).
CREATE TABLE console_accounts (
    name             text PRIMARY KEY,
    password_hash    text NOT NULL,
    department       text NOT NULL,
    region_code      text NOT NULL,
    role             text NOT NULL CHECK (role IN ('supervisor', 'operator')),
    pii              boolean NOT NULL DEFAULT false,
    disabled         boolean NOT NULL DEFAULT false,
    failed_logins    integer NOT NULL DEFAULT 0,
    locked_until_ms  bigint,
    lockout_level    integer NOT NULL DEFAULT 0,
    created_at_ms    bigint NOT NULL,
    created_by       text NOT NULL DEFAULT ''
);

-- A signed-in browser. The cookie holds 32 random bytes; only their SHA-256 is kept, so a
-- copy of the database signs nobody in. csrf_token: the synchronizer token of its forms.
CREATE TABLE console_sessions (
    id_sha256        bytea PRIMARY KEY CHECK (length(id_sha256) = 32),
    account          text NOT NULL REFERENCES console_accounts (name) ON DELETE CASCADE,
    csrf_token       text NOT NULL,
    created_at_ms    bigint NOT NULL,
    expires_at_ms    bigint NOT NULL,        -- absolute end (console_session_max_s)
    last_seen_ms     bigint NOT NULL         -- idle end: last_seen_ms + console_session_idle_s
);
CREATE INDEX console_sessions_account ON console_sessions (account);
CREATE INDEX console_sessions_expiry ON console_sessions (expires_at_ms);

-- The console's overview counts the open warnings of a scope by region and level, and its
-- trend the warnings opened per day in recent months: both read an index instead of every
-- warning (a province's 28,000 warnings took 200 ms to aggregate without them, most of it
-- spent turning each row's time into a month). Warnings are written by the evaluation a
-- few times an hour; two more indexes cost it nothing measurable.
CREATE INDEX warnings_state_region ON warnings (state, region_code, level);
CREATE INDEX warnings_opened ON warnings (opened_at_ms, region_code);
