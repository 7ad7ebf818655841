//! The PostgreSQL backend's errors and their conversion into [`StoreError`].
//!
//! The backend types (`tokio_postgres::Error`, the pool's errors) stay inside this module: the
//! rest of the service only sees [`StoreError`]. A query cancelled by `statement_timeout`, a
//! lock that could not be taken, a deadlock or a pool that had no connection free in time is
//! [`StoreError::Busy`] (the APIs answer 503 with `Retry-After`); anything else is
//! [`StoreError::Database`]. Error texts carry the server's SQLSTATE and primary message only,
//! never its `DETAIL` (which may quote a row's values, such as a sealed secret).

use deadpool_postgres::PoolError;
use tokio_postgres::error::SqlState;

use crate::store::StoreError;

/// What can go wrong talking to PostgreSQL.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    /// A query or the connection failed.
    #[error("{}", describe(.0))]
    Query(#[from] tokio_postgres::Error),
    /// The pool could not hand out a connection.
    #[error("{}", describe_pool(.0))]
    Pool(#[from] PoolError),
}

impl PgError {
    /// Whether the error means "the database is busy, try again shortly" rather than a fault.
    fn is_busy(&self) -> bool {
        match self {
            PgError::Query(e) => is_busy_code(e.code()),
            PgError::Pool(PoolError::Timeout(_)) => true,
            PgError::Pool(PoolError::Backend(e)) => is_busy_code(e.code()),
            PgError::Pool(_) => false,
        }
    }
}

impl From<PgError> for StoreError {
    fn from(e: PgError) -> Self {
        if e.is_busy() {
            StoreError::Busy(e.to_string())
        } else {
            StoreError::Database(e.to_string())
        }
    }
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        PgError::from(e).into()
    }
}

impl From<PoolError> for StoreError {
    fn from(e: PoolError) -> Self {
        PgError::from(e).into()
    }
}

/// Statement timeout (`query_canceled`), lock timeout, deadlock and serialization conflicts:
/// transient conditions a retry shortly after may not meet.
fn is_busy_code(code: Option<&SqlState>) -> bool {
    code.is_some_and(|c| {
        *c == SqlState::QUERY_CANCELED
            || *c == SqlState::LOCK_NOT_AVAILABLE
            || *c == SqlState::T_R_DEADLOCK_DETECTED
            || *c == SqlState::T_R_SERIALIZATION_FAILURE
            || *c == SqlState::TOO_MANY_CONNECTIONS
    })
}

/// The server's SQLSTATE and message without `DETAIL`/`HINT`, or the client's own description
/// (a closed connection, an I/O error) when the server did not answer.
fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => e.to_string(),
    }
}

fn describe_pool(e: &PoolError) -> String {
    match e {
        PoolError::Timeout(kind) => {
            format!("no database connection became available in time ({kind:?})")
        }
        PoolError::Backend(e) => format!("cannot connect to the database: {}", describe(e)),
        PoolError::Closed => "the connection pool is closed".to_owned(),
        PoolError::NoRuntimeSpecified => "the connection pool has no runtime".to_owned(),
        PoolError::PostCreateHook(e) => format!("a new connection failed its set-up: {e}"),
    }
}
