//! Reading SQLite rows: [`col`] for one column of any type, and `Columns` for the shared
//! record readers in [`crate::store::codec`], which hold every encoding both stores share.

use rusqlite::Row;
use rusqlite::types::FromSql;

use crate::store::StoreError;
use crate::store::codec::{columns_through, out_of_range};

/// Reads one column, turning a type mismatch into [`StoreError::Corrupt`].
pub(super) fn col<T: FromSql>(
    row: &Row<'_>,
    index: usize,
    what: &'static str,
) -> Result<T, StoreError> {
    row.get(index).map_err(|e| match e {
        rusqlite::Error::InvalidColumnType(_, _, found) => StoreError::Corrupt {
            what,
            detail: format!("unexpected {found} value"),
        },
        rusqlite::Error::FromSqlConversionFailure(_, found, cause) => StoreError::Corrupt {
            what,
            detail: format!("cannot convert {found} value: {cause}"),
        },
        rusqlite::Error::IntegralValueOutOfRange(_, value) => out_of_range(what, value),
        other => other.into(),
    })
}

columns_through!(Row<'_>, col);
