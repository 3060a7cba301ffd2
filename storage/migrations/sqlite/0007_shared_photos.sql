-- Retention of forwarded photos (issue 17). On SQLite the bytes stay files under
-- `<data dir>/photos/` (one node, one disk); PostgreSQL moves them into `photo_blobs`.
-- purged_at_ms: when a forwarded photo's bytes were deleted after
-- `photo_forwarded_retention_ms`. The row stays: the photo was stored and sent, and a
-- device asking about it is told so.
ALTER TABLE photos ADD COLUMN purged_at_ms INTEGER;
CREATE INDEX photos_purgeable ON photos (forwarded_at_ms)
    WHERE forwarded_at_ms IS NOT NULL AND purged_at_ms IS NULL;
