-- Devices, punches (accepted and rejected), photos and the forwarding outbox.

CREATE TABLE devices (
    serial          text PRIMARY KEY,
    secret          bytea NOT NULL,         -- 32-byte HMAC key
    project_code    text NOT NULL,
    region_code     text NOT NULL,          -- GB/T 2260, 6 digits
    enabled         boolean NOT NULL DEFAULT true,
    last_seen_ms    bigint,
    online          boolean NOT NULL DEFAULT false,
    firmware        text NOT NULL DEFAULT '',
    roster_version  bigint NOT NULL DEFAULT 0,
    created_at_ms   bigint NOT NULL
);

CREATE TABLE punches (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    device_serial   text NOT NULL,
    record_no       bigint NOT NULL,
    worker_id       text NOT NULL,
    punch_time_ms   bigint NOT NULL,
    direction       integer NOT NULL,
    verify_mode     integer NOT NULL,
    temperature_dc  integer NOT NULL,
    photo_sha256    bytea,
    photo_size      bigint NOT NULL,
    received_at_ms  bigint NOT NULL,
    UNIQUE (device_serial, record_no)
);

CREATE TABLE rejected_punches (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    device_serial   text NOT NULL,
    record_no       bigint NOT NULL,
    worker_id       text NOT NULL,
    punch_time_ms   bigint NOT NULL,
    direction       integer NOT NULL,
    verify_mode     integer NOT NULL,
    temperature_dc  integer NOT NULL,
    photo_sha256    bytea,
    photo_size      bigint NOT NULL,
    reject_reason   integer NOT NULL,
    received_at_ms  bigint NOT NULL,
    UNIQUE (device_serial, record_no)
);

CREATE TABLE photos (
    sha256          bytea PRIMARY KEY,
    size            bigint NOT NULL,
    stored_at_ms    bigint NOT NULL
);

-- Identity values are never reused, so a late ack cannot delete a newer item.
CREATE TABLE outbox (
    id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    punch_id            bigint NOT NULL UNIQUE REFERENCES punches (id),
    device_serial       text NOT NULL,
    state               text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'dead')),
    attempts            integer NOT NULL DEFAULT 0,
    next_attempt_at_ms  bigint NOT NULL,
    last_error          text,
    created_at_ms       bigint NOT NULL
);
CREATE INDEX outbox_due ON outbox (state, next_attempt_at_ms);
