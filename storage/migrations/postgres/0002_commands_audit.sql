-- Downlink command queue and the audit log.

CREATE TABLE commands (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    device_serial    text NOT NULL,
    command_type     integer NOT NULL,
    payload          bytea NOT NULL,
    state            text NOT NULL DEFAULT 'queued'
                     CHECK (state IN ('queued', 'sent', 'done', 'expired', 'cancelled')),
    seq              bigint,
    result_code      integer,
    created_at_ms    bigint NOT NULL,
    sent_at_ms       bigint,
    completed_at_ms  bigint,
    expires_at_ms    bigint
);
CREATE INDEX commands_pending ON commands (device_serial, id) WHERE state IN ('queued', 'sent');

CREATE TABLE audit_log (
    id       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at_ms    bigint NOT NULL,
    event    text NOT NULL,
    subject  text NOT NULL,
    detail   jsonb NOT NULL,
    address  text
);
CREATE INDEX audit_log_event ON audit_log (event, id);
