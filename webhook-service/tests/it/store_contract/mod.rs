//! The store contract: what callers rely on whichever store they use, written once against
//! `Arc<dyn Store>` and run against both backends: a SQLite file in a temporary directory and a
//! fresh PostgreSQL database (`SDSERVE_TEST_POSTGRES`, see `support/postgres.rs`; skipped
//! without it, failing in CI). [`contract!`] turns each scenario into `…::sqlite::<name>` and
//! `…::postgres::<name>` tests, so `cargo test --test it sqlite` (or `postgres`) runs one
//! backend's half.
//!
//! What only one backend has stays with it: SQLite's locking, file modes, re-sealing of clear
//! values and group commit in `src/store/sqlite/tests/` and `sqlite_store.rs`; PostgreSQL's
//! replicas, SKIP LOCKED, LISTEN/NOTIFY, migrations and shared key in `postgres_store.rs`.

use std::path::PathBuf;
use std::sync::Arc;

use webhook_service::store::postgres::PostgresStore;
use webhook_service::store::secrets::SecretBox;
use webhook_service::store::sqlite::SqliteStore;
use webhook_service::store::{Store, StoreError};

use crate::support::postgres::{TestDb, database, secret_box};

// The fixtures the SQLite unit tests use, loaded once for the whole test binary (its
// `crate::domain` and `crate::store` are `tests/it/main.rs`'s re-exports).
#[path = "../../../src/store/sqlite/tests/fixtures.rs"]
pub mod fixtures;

/// A store under test, with what a scenario needs to look past it at the database.
pub struct Backend {
    /// The store; declared first so it is dropped before its database.
    pub store: Arc<dyn Store>,
    place: Place,
}

/// Where a [`Backend`]'s data lives; dropping it removes the data.
enum Place {
    Sqlite {
        _dir: tempfile::TempDir,
        path: PathBuf,
    },
    Postgres(TestDb),
}

impl Backend {
    /// A SQLite store on a new file in a temporary directory.
    pub fn sqlite() -> Backend {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db");
        let store = SqliteStore::open_with(&path, secret_box()).unwrap();
        Backend {
            store: Arc::new(store),
            place: Place::Sqlite { _dir: dir, path },
        }
    }

    /// A PostgreSQL store on a fresh database, or None (skipped) when no server is configured.
    pub async fn postgres(test: &str) -> Option<Backend> {
        let db = database(test).await?;
        Some(Backend {
            store: Arc::new(db.store().await),
            place: Place::Postgres(db),
        })
    }

    /// The values of the one text column `sql` selects, read past the store.
    pub async fn texts(&self, sql: &str) -> Vec<Option<String>> {
        match &self.place {
            Place::Sqlite { path, .. } => fixtures::stored(path, sql),
            Place::Postgres(db) => {
                let rows = db.raw().await.query(sql, &[]).await.unwrap();
                rows.iter().map(|row| row.get(0)).collect()
            }
        }
    }

    /// Another store on the same database, sealing with `secrets`.
    pub async fn open_with(&self, secrets: SecretBox) -> Result<Arc<dyn Store>, StoreError> {
        Ok(match &self.place {
            Place::Sqlite { path, .. } => Arc::new(SqliteStore::open_with(path, secrets)?),
            Place::Postgres(db) => Arc::new(PostgresStore::connect(&db.url, secrets).await?),
        })
    }
}

/// The ids of `items`, in order.
pub fn ids<T>(items: &[T], id: impl Fn(&T) -> &str) -> Vec<String> {
    items.iter().map(|t| id(t).to_owned()).collect()
}

/// Generates, for each named scenario (an `async fn(Backend)` in the calling module), a test in
/// `sqlite` and one in `postgres`.
macro_rules! contract {
    ($($scenario:ident),+ $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $scenario() {
                    super::$scenario($crate::store_contract::Backend::sqlite()).await;
                }
            )+
        }

        mod postgres {
            $(
                #[tokio::test]
                async fn $scenario() {
                    let test = concat!(module_path!(), "::", stringify!($scenario));
                    if let Some(backend) = $crate::store_contract::Backend::postgres(test).await {
                        super::$scenario(backend).await;
                    }
                }
            )+
        }
    };
}

// After the macro, so that it is in scope in these modules.
mod deliveries;
mod jobs;
mod keys;
mod secrets;
