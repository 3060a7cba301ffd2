-- Punches partitioned by month at province scale (issue 17 §4; docs/storage.md,
-- "Punches by month"). 10,000 terminals at 200 punches a day store 60 million rows a
-- month: the supervision aggregate and the operators' time-bounded reads touch only the
-- months they name, and a month whose every punch the province confirmed can be dropped
-- whole (punch_retention_days) instead of deleted row by row.
--
-- The partition key is punch_time_ms, the device's time that those queries bound, with
-- month edges at midnight China time (UTC+8), the calendar of payrolls and of the
-- supervision's days. A punch whose time falls outside every month (a terminal's clock
-- reset to 2000-01-01, or years ahead) goes to punches_default; the hourly maintenance
-- creates the months ahead (lmg_punch_partitions) and moves rows the default partition
-- holds for a month it creates.
--
-- Exact dedup across months: a partitioned table's unique key must contain the partition
-- key, so UNIQUE (device_serial, record_no) cannot stay on punches; a resend of a record
-- with another time would land in another month. punch_keys holds that key for every
-- stored punch, and the insert path (storage/postgres.py) writes it first with ON CONFLICT
-- DO NOTHING and stores only the punches it returns, in the same statement: the key is
-- claimed once, by whoever commits first, as before. Its rows go with their month when a
-- month is dropped.
--
-- outbox.punch_time_ms names the month of the outbox row's punch, so the forwarder's join
-- reads one partition per row, and a month with any outbox row (pending or dead) is never
-- dropped. The foreign key from outbox to punches goes: it would have to reference
-- (id, punch_time_ms), and moving rows out of the default partition would trip it; the
-- outbox row is written in the same statement as its punch.
--
-- Converting copies every row once (with its key and indexes about 390 bytes a punch: 2 GB
-- per 5 million, bench/results/punch-months.md); the version-8 table is dropped at the
-- end, so the copy needs that much free disk meanwhile.

CREATE FUNCTION lmg_month_start_ms(d date) RETURNS bigint LANGUAGE sql IMMUTABLE AS $$
    SELECT (extract(epoch FROM (d::timestamp AT TIME ZONE 'Asia/Shanghai')) * 1000)::bigint
$$;

-- The month (its first day, China time) holding the instant `ms`.
CREATE FUNCTION lmg_month_of(ms bigint) RETURNS date LANGUAGE sql IMMUTABLE AS $$
    SELECT date_trunc('month', to_timestamp(ms / 1000.0) AT TIME ZONE 'Asia/Shanghai')::date
$$;

ALTER TABLE punches RENAME TO punches_v8;
ALTER TABLE punches_v8 RENAME CONSTRAINT punches_pkey TO punches_v8_pkey;
ALTER TABLE outbox DROP CONSTRAINT outbox_punch_id_fkey;

-- Ids keep counting from where the identity column stood: the outbox relies on ids never
-- being reused (0001_init.sql).
CREATE SEQUENCE punch_ids AS bigint;
SELECT setval('punch_ids', last_value, is_called) FROM punches_id_seq;  -- the identity's sequence

CREATE TABLE punches (
    id              bigint NOT NULL DEFAULT nextval('punch_ids'),
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
    PRIMARY KEY (id, punch_time_ms)
) PARTITION BY RANGE (punch_time_ms);
ALTER SEQUENCE punch_ids OWNED BY punches.id;
-- Reads by device (a device's punches, get_punch, the aggregate's device path): one
-- probe per month. Not unique: punch_keys is the unique key.
CREATE INDEX punches_device ON punches (device_serial, record_no);
-- A worker's punches (the operations API's ?worker_id=, `lmg punches list --worker`),
-- pages in id order. A month here is 60 million rows: scanned, it takes longer than
-- pg_command_timeout_ms. SQLite, a site's store, still scans (docs/storage.md).
CREATE INDEX punches_worker ON punches (worker_id, id);
CREATE TABLE punches_default PARTITION OF punches DEFAULT;

CREATE TABLE punch_keys (
    device_serial   text NOT NULL,
    record_no       bigint NOT NULL,
    PRIMARY KEY (device_serial, record_no)
);

-- Creates the month starting `first` (a first of month) as punches_yYYYYmMM unless it
-- exists, moving the rows the default partition holds for it; returns 1 if created.
CREATE FUNCTION lmg_punch_partition(first date) RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    name text := format('punches_y%sm%s', to_char(first, 'YYYY'), to_char(first, 'MM'));
    low bigint := lmg_month_start_ms(first);
    high bigint := lmg_month_start_ms((first + interval '1 month')::date);
BEGIN
    IF to_regclass(name) IS NOT NULL THEN
        RETURN 0;
    END IF;
    -- No insert may reach the default partition's rows of this month while they move.
    LOCK TABLE punches_default IN ACCESS EXCLUSIVE MODE;
    IF EXISTS (SELECT 1 FROM punches_default WHERE punch_time_ms >= low AND punch_time_ms < high) THEN
        EXECUTE format('CREATE TABLE %I (LIKE punches INCLUDING DEFAULTS)', name);
        EXECUTE format('WITH moved AS (DELETE FROM punches_default WHERE punch_time_ms >= %s AND punch_time_ms < %s '
                       'RETURNING *) INSERT INTO %I SELECT * FROM moved', low, high, name);
        EXECUTE format('ALTER TABLE punches ATTACH PARTITION %I FOR VALUES FROM (%s) TO (%s)', name, low, high);
    ELSE
        EXECUTE format('CREATE TABLE %I PARTITION OF punches FOR VALUES FROM (%s) TO (%s)', name, low, high);
    END IF;
    RETURN 1;
END;
$$;

-- Every month from the one holding `now_ms` to `ahead` months later; returns how many
-- were created. The gateway calls it hourly (punch_partitions_ahead months ahead).
CREATE FUNCTION lmg_punch_partitions(now_ms bigint, ahead integer) RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    made integer := 0;
    m date := lmg_month_of(now_ms);
BEGIN
    FOR i IN 0..ahead LOOP
        made := made + lmg_punch_partition((m + make_interval(months => i))::date);
    END LOOP;
    RETURN made;
END;
$$;

-- Months for the rows there are: from the month of the first punch time that is at most
-- a year before the first punch received (a terminal uploads a backlog of days, rarely
-- weeks) to three months ahead of now, and ten years at most. Times outside (clocks reset
-- to 2000, or wrong by years) stay in the default partition.
DO $$
DECLARE
    now_ms bigint := (extract(epoch FROM clock_timestamp()) * 1000)::bigint;
    first_received bigint := coalesce((SELECT min(received_at_ms) FROM punches_v8), now_ms);
    first_time bigint := (SELECT min(punch_time_ms) FROM punches_v8
                          WHERE punch_time_ms >= first_received - 366 * 86400000::bigint);
    m date := lmg_month_of(greatest(least(coalesce(first_time, now_ms), now_ms), now_ms - 3653 * 86400000::bigint));
BEGIN
    WHILE m <= lmg_month_of(now_ms) + interval '3 months' LOOP
        PERFORM lmg_punch_partition(m);
        m := (m + interval '1 month')::date;
    END LOOP;
END;
$$;

INSERT INTO punches (id, device_serial, record_no, worker_id, punch_time_ms, direction, verify_mode,
                     temperature_dc, photo_sha256, photo_size, received_at_ms)
SELECT id, device_serial, record_no, worker_id, punch_time_ms, direction, verify_mode, temperature_dc,
       photo_sha256, photo_size, received_at_ms
FROM punches_v8;
INSERT INTO punch_keys (device_serial, record_no) SELECT device_serial, record_no FROM punches_v8;

ALTER TABLE outbox ADD COLUMN punch_time_ms bigint;
UPDATE outbox o SET punch_time_ms = p.punch_time_ms FROM punches_v8 p WHERE p.id = o.punch_id;
ALTER TABLE outbox ALTER COLUMN punch_time_ms SET NOT NULL;

DROP TABLE punches_v8;
