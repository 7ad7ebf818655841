-- sdserve webhook-service schema, version 3: idempotency keys scoped per caller, and the
-- fingerprint of the request each key was first used with.
--
-- `idempotency_key` now holds `<owner> U+001F <key>`, so its UNIQUE constraint scopes keys per
-- caller (SQLite cannot change a column's constraint without rebuilding the table, which the
-- foreign keys of images and deliveries make unsafe inside a migration's transaction).
UPDATE jobs SET idempotency_key = owner || char(31) || idempotency_key WHERE idempotency_key IS NOT NULL;
-- SHA-256 of the request's content (NewJob::fingerprint); NULL for jobs stored before.
ALTER TABLE jobs ADD COLUMN request_hash BLOB;
