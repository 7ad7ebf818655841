-- sdserve webhook-service schema for PostgreSQL, version 1: the equivalent of the SQLite
-- schema at its version 5 (store/migrations/0001..0005), created in one step.
-- Times are BIGINT ms since the Unix epoch. Enumerations are stored as their lower-case names.
-- `seq` columns give rows their insertion order (SQLite's rowid), the tie-breaker of every
-- "oldest first" ordering.

CREATE TABLE jobs (
    id                   TEXT   NOT NULL PRIMARY KEY,
    seq                  BIGINT GENERATED ALWAYS AS IDENTITY,
    -- `<owner> U+001F <key>`: the UNIQUE constraint scopes idempotency keys per caller.
    idempotency_key      TEXT   UNIQUE,
    params               BYTEA  NOT NULL,          -- protobuf-encoded sdserve.v1.GenerationParams
    webhook_url          TEXT   NOT NULL,
    webhook_secret       TEXT,                     -- sealed (enc1:...), see store/secrets.rs
    signing_secret       TEXT,                     -- sealed
    format               TEXT   NOT NULL,
    events               TEXT   NOT NULL,          -- comma-separated event names
    vendor_context       TEXT   NOT NULL,          -- JSON
    status               TEXT   NOT NULL,
    created_at           BIGINT NOT NULL,
    started_at           BIGINT,
    finished_at          BIGINT,
    progress_step        BIGINT NOT NULL DEFAULT 0,
    progress_total       BIGINT NOT NULL DEFAULT 0,
    model                TEXT   NOT NULL DEFAULT '',
    error                TEXT,
    info_json            TEXT   NOT NULL DEFAULT '',
    owner                TEXT   NOT NULL DEFAULT '',  -- the API key that created it ('' = none)
    extra_parts          BYTEA,                     -- further GenerationParams (see store/codec)
    execution_timeout_ms BIGINT,
    dispatched_at        BIGINT,                    -- when a dispatcher took it
    queue_position       BIGINT,
    request_hash         BYTEA,                     -- NewJob::fingerprint
    claimed_by           TEXT,                      -- the replica holding it
    lease_until          BIGINT                     -- until when that replica holds it
);

CREATE INDEX jobs_queue ON jobs (status, created_at, seq);
CREATE INDEX jobs_owner ON jobs (owner, status);

CREATE TABLE images (
    job_id   TEXT   NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    idx      BIGINT NOT NULL,
    seed     BIGINT NOT NULL,
    infotext TEXT   NOT NULL,
    png      BYTEA  NOT NULL,
    PRIMARY KEY (job_id, idx)
);

CREATE TABLE deliveries (
    id              TEXT   NOT NULL PRIMARY KEY,  -- the webhook-id
    seq             BIGINT GENERATED ALWAYS AS IDENTITY,
    job_id          TEXT   NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    event           TEXT   NOT NULL,
    url             TEXT   NOT NULL,
    payload         BYTEA  NOT NULL,
    status          TEXT   NOT NULL,
    attempts_made   BIGINT NOT NULL DEFAULT 0,
    round_attempts  BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT,
    lease_until     BIGINT,
    last_error      TEXT,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL
);

CREATE INDEX deliveries_due ON deliveries (status, next_attempt_at);
CREATE INDEX deliveries_lease ON deliveries (status, lease_until);
CREATE INDEX deliveries_job ON deliveries (job_id, created_at, seq);
CREATE INDEX deliveries_url ON deliveries (url, status);

CREATE TABLE attempts (
    delivery_id      TEXT   NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
    seq              BIGINT GENERATED ALWAYS AS IDENTITY,
    number           BIGINT NOT NULL,
    at               BIGINT NOT NULL,
    status_code      BIGINT,
    error            TEXT,
    duration_ms      BIGINT NOT NULL,
    response_excerpt TEXT   NOT NULL,
    outcome          TEXT   NOT NULL,  -- succeeded, retry, exhausted or gone
    retry_at         BIGINT            -- when outcome is retry
);

CREATE INDEX attempts_delivery ON attempts (delivery_id, at, seq);

CREATE TABLE gone_endpoints (
    url TEXT   NOT NULL PRIMARY KEY,
    at  BIGINT NOT NULL
);

CREATE TABLE api_keys (
    id             TEXT   NOT NULL PRIMARY KEY,
    seq            BIGINT GENERATED ALWAYS AS IDENTITY,
    name           TEXT   NOT NULL,
    hash           BYTEA  NOT NULL UNIQUE,   -- SHA-256 of the key
    prefix         TEXT   NOT NULL,
    created_at     BIGINT NOT NULL,
    revoked_at     BIGINT,
    max_in_flight  BIGINT,
    per_minute     BIGINT,
    webhook_url    TEXT,
    webhook_secret TEXT                      -- sealed
);

-- Values shared by the replicas, such as the media signing key (PostgresStore::shared_key).
CREATE TABLE settings (
    name  TEXT  NOT NULL PRIMARY KEY,
    value BYTEA NOT NULL
);
