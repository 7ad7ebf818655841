//! Start-up work on the sealed secret columns: check that the secrets key opens what is
//! stored (a wrong key fails the start, naming the column, instead of every later delivery),
//! and seal the values an older build wrote in clear, so after one start nothing is in clear.

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use crate::store::StoreError;
use crate::store::codec::SEALED_COLUMNS;
use crate::store::secrets::{SEALED_PREFIX, SecretBox};

/// Opens the newest sealed value of each column with `secrets`; fails with
/// [`StoreError::Corrupt`] (naming the column, saying the key does not match) when one does
/// not open. A database with no sealed value passes.
pub(super) fn check_key(conn: &Connection, secrets: &SecretBox) -> Result<(), StoreError> {
    for (table, column, what) in SEALED_COLUMNS {
        let newest: Option<(String, String)> = conn
            .prepare(&format!(
                "SELECT id, {column} FROM {table} WHERE substr({column}, 1, 5) = ?1 \
                 ORDER BY rowid DESC LIMIT 1"
            ))?
            .query_row([SEALED_PREFIX], |row| Ok((row.get(0)?, row.get(1)?)))
            .optional()?;
        if let Some((id, stored)) = newest {
            secrets.open(what, &id, stored)?;
        }
    }
    Ok(())
}

/// Seals, in one transaction, every secret stored in clear (by a build before encryption at
/// rest) and returns how many there were. When there were some, the old clear bytes are
/// overwritten (`secure_delete` for this transaction) and, for a file, the WAL is checkpointed
/// and truncated so no copy of them stays in `-wal`.
pub(super) fn seal_clear_values(
    conn: &mut Connection,
    secrets: &SecretBox,
    file: bool,
) -> Result<usize, StoreError> {
    let clear_count = |conn: &Connection| -> Result<i64, StoreError> {
        let mut total = 0;
        for (table, column, _) in SEALED_COLUMNS {
            total += conn.query_row(
                &format!("SELECT COUNT(*) FROM {table} WHERE {column} IS NOT NULL AND substr({column}, 1, 5) <> ?1"),
                [SEALED_PREFIX],
                |row| row.get::<_, i64>(0),
            )?;
        }
        Ok(total)
    };
    if clear_count(conn)? == 0 {
        return Ok(0);
    }
    let secure_delete: i64 = conn.pragma_query_value(None, "secure_delete", |row| row.get(0))?;
    conn.pragma_update(None, "secure_delete", "ON")?;
    let sealed = seal_all(conn, secrets);
    conn.pragma_update(None, "secure_delete", secure_delete)?;
    let sealed = sealed?;
    if file {
        // Copies the sealed pages over the clear ones in the main file and empties the WAL.
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
    }
    Ok(sealed)
}

fn seal_all(conn: &mut Connection, secrets: &SecretBox) -> Result<usize, StoreError> {
    // IMMEDIATE: a second process opening the database at the same time waits, then finds
    // nothing left in clear.
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut sealed = 0;
    for (table, column, what) in SEALED_COLUMNS {
        let clear: Vec<(String, String)> = tx
            .prepare(&format!(
                "SELECT id, {column} FROM {table} WHERE {column} IS NOT NULL AND substr({column}, 1, 5) <> ?1"
            ))?
            .query_map([SEALED_PREFIX], |row| Ok((row.get(0)?, row.get(1)?)))?
            .collect::<Result<_, _>>()?;
        let mut update = tx.prepare(&format!("UPDATE {table} SET {column} = ?1 WHERE id = ?2"))?;
        for (id, value) in clear {
            update.execute(params![secrets.seal(what, &id, &value)?, id])?;
            sealed += 1;
        }
    }
    tx.commit()?;
    Ok(sealed)
}
