-- sdserve webhook-service schema, version 2: callers (API keys), job ownership, jobs without a
-- webhook, several parts per job, execution timeouts and honest queue timings.

-- The key that created each job ('' = accepted without authentication).
ALTER TABLE jobs ADD COLUMN owner TEXT NOT NULL DEFAULT '';
-- Further GenerationParams run after `params` (protobuf-encoded sdserve.v1 list, see store/codec).
ALTER TABLE jobs ADD COLUMN extra_parts BLOB;
ALTER TABLE jobs ADD COLUMN execution_timeout_ms INTEGER;
-- When an inference server took the job; it stays 'queued' until generation starts.
ALTER TABLE jobs ADD COLUMN dispatched_at INTEGER;
ALTER TABLE jobs ADD COLUMN queue_position INTEGER;

CREATE INDEX jobs_owner ON jobs (owner, status);

CREATE TABLE api_keys (
    id             TEXT    NOT NULL PRIMARY KEY,   -- public id, e.g. key_0193...
    name           TEXT    NOT NULL,
    hash           BLOB    NOT NULL UNIQUE,        -- SHA-256 of the key
    prefix         TEXT    NOT NULL,               -- first characters, to recognise a key in lists
    created_at     INTEGER NOT NULL,
    revoked_at     INTEGER,
    max_in_flight  INTEGER,                        -- NULL = the service default
    per_minute     INTEGER,                        -- NULL = the service default
    webhook_url    TEXT,                           -- Leonardo: callback URL of this key
    webhook_secret TEXT                            -- Leonardo: callback API key of this key
) STRICT;
