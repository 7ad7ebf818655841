//! Schema migrations, tracked in the one-row table `sdserve_schema`.
//!
//! All pending migrations run in one transaction that first takes a transaction-scoped advisory
//! lock, so replicas starting at once against a new database apply them once: the others wait
//! for the lock, then read the bumped version and apply nothing. A crash mid-migration rolls
//! the whole transaction back (PostgreSQL's DDL is transactional). Never edit a released
//! migration; append a new one.

/// The migration scripts, in order; migration `i` (0-based) moves the schema to version `i + 1`.
const MIGRATIONS: &[&str] = &[include_str!("migrations/0001_init.sql")];

/// The schema version this build writes and understands.
pub(super) const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Key of the advisory lock serialising migrations (any constant unique to this service:
/// "sdserve" in ASCII).
const MIGRATION_LOCK: i64 = 0x0073_6473_6572_7665;

/// Brings the database up to [`SCHEMA_VERSION`]. Fails, describing why, when the database was
/// written by a newer build or a script fails.
pub(super) async fn migrate(client: &mut deadpool_postgres::Client) -> Result<(), String> {
    let tx = client.transaction().await.map_err(|e| {
        format!(
            "starting the migration transaction: {}",
            super::error::PgError::from(e)
        )
    })?;
    let step = async {
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS sdserve_schema (\
               one BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (one), \
               version BIGINT NOT NULL)",
        )
        .await?;
        let found: Option<i64> = tx
            .query_opt("SELECT version FROM sdserve_schema", &[])
            .await?
            .map(|row| row.try_get(0))
            .transpose()?;
        Ok::<_, tokio_postgres::Error>(found.unwrap_or(0))
    };
    let found = step.await.map_err(|e| {
        format!(
            "reading the schema version: {}",
            super::error::PgError::from(e)
        )
    })?;
    check_not_newer(found)?;
    for (index, script) in MIGRATIONS.iter().enumerate() {
        let target = index as i64 + 1;
        if found >= target {
            continue;
        }
        tx.batch_execute(script).await.map_err(|e| {
            format!(
                "applying schema migration {target}: {}",
                super::error::PgError::from(e)
            )
        })?;
    }
    if found < SCHEMA_VERSION {
        tx.execute(
            "INSERT INTO sdserve_schema (one, version) VALUES (TRUE, $1) \
             ON CONFLICT (one) DO UPDATE SET version = excluded.version",
            &[&SCHEMA_VERSION],
        )
        .await
        .map_err(|e| {
            format!(
                "recording the schema version: {}",
                super::error::PgError::from(e)
            )
        })?;
    }
    tx.commit().await.map_err(|e| {
        format!(
            "committing the migrations: {}",
            super::error::PgError::from(e)
        )
    })
}

fn check_not_newer(found: i64) -> Result<(), String> {
    if found > SCHEMA_VERSION {
        return Err(format!(
            "the database has schema version {found}, newer than the {SCHEMA_VERSION} this build \
             knows; it was written by a newer webhook-service, so run that version or use \
             another database"
        ));
    }
    if found < 0 {
        return Err(format!(
            "the database has an invalid schema version {found}"
        ));
    }
    Ok(())
}
