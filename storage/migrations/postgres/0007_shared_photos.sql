-- Photo and face bytes in the database, so that every gateway node on this PostgreSQL can
-- read what any node stored (issue 17). Until version 7 they were files under each node's
-- `<data dir>/photos/`, which only that node could read: another node's forwarder found
-- the photo "missing". Those files stay where they are and are still read: the store
-- looks in `photo_blobs` first and then in its own data directory; the gateway's photo
-- sweep moves them into `photo_blobs` (storage/postgres_blobs.py, adopt_files).
--
-- bytea rather than large objects: as fast for 30 KB photos (both ~4 ms a put, the
-- commit's fsync; ~0.3 ms a get), 15% less space, deleted by a plain DELETE (a large
-- object needs lo_unlink, or vacuumlo for orphans), and inside the schema, so that
-- `pg_dump -n` and DROP SCHEMA take them along. STORAGE EXTERNAL: JPEGs do not compress,
-- so TOAST should not try (docs/storage.md, "Photos", has the measurement).
CREATE TABLE photo_blobs (
    sha256 bytea PRIMARY KEY,
    data bytea NOT NULL
);
ALTER TABLE photo_blobs ALTER COLUMN data SET STORAGE EXTERNAL;

-- When a forwarded photo's bytes were deleted after `photo_forwarded_retention_ms`. The
-- row stays: the photo was stored and sent, and a device asking about it is told so.
ALTER TABLE photos ADD COLUMN purged_at_ms bigint;
CREATE INDEX photos_purgeable ON photos (forwarded_at_ms)
    WHERE forwarded_at_ms IS NOT NULL AND purged_at_ms IS NULL;
