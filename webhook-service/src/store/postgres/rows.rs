//! Reading PostgreSQL rows: [`col`] for one column of any type, and `Columns` for the shared
//! record readers in [`crate::store::codec`], which hold every encoding both stores share (so a
//! value means the same in both).

use tokio_postgres::Row;
use tokio_postgres::types::FromSql;

use crate::store::StoreError;
use crate::store::codec::columns_through;

/// Reads one column, turning a type mismatch or NULL where none is allowed into
/// [`StoreError::Corrupt`]. The conversion error names types, never the stored value.
pub(super) fn col<'a, T: FromSql<'a>>(
    row: &'a Row,
    index: usize,
    what: &'static str,
) -> Result<T, StoreError> {
    row.try_get(index).map_err(|e| StoreError::Corrupt {
        what,
        detail: e.to_string(),
    })
}

// Every integer column is BIGINT (see the migrations), so `int` reads an `i64` as SQLite does.
columns_through!(Row, col);
