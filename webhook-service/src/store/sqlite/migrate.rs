//! Schema migrations, tracked in `PRAGMA user_version`.
//!
//! Migration `i` (0-based) in [`MIGRATIONS`] moves the schema from version `i` to `i + 1`. Each
//! is applied once, in order, in its own transaction together with the version bump, so a crash
//! mid-migration leaves the previous version intact. Never edit a released migration; append a
//! new one.

use rusqlite::{Connection, TransactionBehavior};

/// The migration scripts, in order.
const MIGRATIONS: &[&str] = &[
    include_str!("../migrations/0001_init.sql"),
    include_str!("../migrations/0002_callers.sql"),
    include_str!("../migrations/0003_idempotency_scope.sql"),
    include_str!("../migrations/0004_sealed_secrets.sql"),
    include_str!("../migrations/0005_job_leases.sql"),
];

/// The schema version this build writes and understands.
pub(super) const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

fn user_version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.pragma_query_value(None, "user_version", |row| row.get(0))
}

/// Brings the database up to [`SCHEMA_VERSION`]. Fails, describing why, when the database was
/// written by a newer build (its version is higher than this build knows) or a script fails.
pub(super) fn migrate(conn: &mut Connection) -> Result<(), String> {
    let found = user_version(conn).map_err(|e| format!("reading the schema version: {e}"))?;
    check_not_newer(found)?;
    for (index, script) in MIGRATIONS.iter().enumerate() {
        let target = index as i64 + 1;
        if found >= target {
            continue;
        }
        let step = |conn: &mut Connection| -> rusqlite::Result<Result<(), String>> {
            // IMMEDIATE takes the write lock first, so two processes opening the same new file
            // cannot both apply a migration; the loser sees the bumped version below.
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let current = user_version(&tx)?;
            if let Err(e) = check_not_newer(current) {
                return Ok(Err(e));
            }
            if current < target {
                tx.execute_batch(script)?;
                tx.pragma_update(None, "user_version", target)?;
            }
            tx.commit()?;
            Ok(Ok(()))
        };
        step(conn).map_err(|e| format!("applying schema migration {target}: {e}"))??;
    }
    Ok(())
}

fn check_not_newer(found: i64) -> Result<(), String> {
    if found > SCHEMA_VERSION {
        return Err(format!(
            "the database has schema version {found}, newer than the {SCHEMA_VERSION} this build \
             knows; it was written by a newer webhook-service, so run that version or use \
             another database file"
        ));
    }
    if found < 0 {
        return Err(format!(
            "the database has an invalid schema version {found}"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrates_once_and_refuses_newer() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn).unwrap();
        assert_eq!(user_version(&conn).unwrap(), SCHEMA_VERSION);
        // Applying again is a no-op (the script would fail on existing tables otherwise).
        migrate(&mut conn).unwrap();
        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
        let err = migrate(&mut conn).unwrap_err();
        assert!(err.contains("newer"), "{err}");
    }
}
