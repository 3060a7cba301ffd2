-- When the province confirmed each photo (PUT answered 200), so that a photo completed
-- after its punch was forwarded is still sent (the forwarder's late-photo sweep).
-- Photos stored before this version are taken as forwarded: the forwarder sent every
-- photo it held before the record naming it.

ALTER TABLE photos ADD COLUMN forwarded_at_ms INTEGER;
UPDATE photos SET forwarded_at_ms = stored_at_ms;
CREATE INDEX photos_unforwarded ON photos (stored_at_ms) WHERE forwarded_at_ms IS NULL;
