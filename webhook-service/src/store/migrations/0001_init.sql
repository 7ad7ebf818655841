-- sdserve webhook-service schema, version 1.
-- Times are INTEGER ms since the Unix epoch. Enumerations are stored as their lower-case names.

CREATE TABLE jobs (
    id              TEXT    NOT NULL PRIMARY KEY,
    idempotency_key TEXT    UNIQUE,
    params          BLOB    NOT NULL,          -- protobuf-encoded sdserve.v1.GenerationParams
    webhook_url     TEXT    NOT NULL,
    webhook_secret  TEXT,
    signing_secret  TEXT,
    format          TEXT    NOT NULL,
    events          TEXT    NOT NULL,          -- comma-separated event names
    vendor_context  TEXT    NOT NULL,          -- JSON
    status          TEXT    NOT NULL,
    created_at      INTEGER NOT NULL,
    started_at      INTEGER,
    finished_at     INTEGER,
    progress_step   INTEGER NOT NULL DEFAULT 0,
    progress_total  INTEGER NOT NULL DEFAULT 0,
    model           TEXT    NOT NULL DEFAULT '',
    error           TEXT,
    info_json       TEXT    NOT NULL DEFAULT ''
) STRICT;

CREATE INDEX jobs_queue ON jobs (status, created_at);

CREATE TABLE images (
    job_id   TEXT    NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    idx      INTEGER NOT NULL,
    seed     INTEGER NOT NULL,
    infotext TEXT    NOT NULL,
    png      BLOB    NOT NULL,
    PRIMARY KEY (job_id, idx)
) STRICT;

CREATE TABLE deliveries (
    id              TEXT    NOT NULL PRIMARY KEY,  -- the webhook-id
    job_id          TEXT    NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    event           TEXT    NOT NULL,
    url             TEXT    NOT NULL,
    payload         BLOB    NOT NULL,
    status          TEXT    NOT NULL,
    attempts_made   INTEGER NOT NULL DEFAULT 0,
    round_attempts  INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER,
    lease_until     INTEGER,
    last_error      TEXT,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
) STRICT;

-- Due pending deliveries, oldest first.
CREATE INDEX deliveries_due ON deliveries (status, next_attempt_at);
-- Expired leases.
CREATE INDEX deliveries_lease ON deliveries (status, lease_until);
CREATE INDEX deliveries_job ON deliveries (job_id, created_at);
-- Deliveries to a URL marked gone.
CREATE INDEX deliveries_url ON deliveries (url, status);

CREATE TABLE attempts (
    delivery_id      TEXT    NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
    number           INTEGER NOT NULL,
    at               INTEGER NOT NULL,
    status_code      INTEGER,
    error            TEXT,
    duration_ms      INTEGER NOT NULL,
    response_excerpt TEXT    NOT NULL,
    outcome          TEXT    NOT NULL,  -- succeeded, retry, exhausted or gone
    retry_at         INTEGER            -- when outcome is retry
) STRICT;

CREATE INDEX attempts_delivery ON attempts (delivery_id, at);

CREATE TABLE gone_endpoints (
    url TEXT    NOT NULL PRIMARY KEY,
    at  INTEGER NOT NULL
) STRICT;
