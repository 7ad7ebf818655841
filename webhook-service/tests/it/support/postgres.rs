//! A fresh PostgreSQL database per test, for `postgres_store` and the store contract.
//!
//! The admin URL comes from `SDSERVE_TEST_POSTGRES` (a role that may create databases). Each
//! test creates `sdserve_t_<random hex>` through it and drops it when the [`TestDb`] is dropped
//! (best effort, also when the test panicked), so tests run in parallel without sharing rows.
//! Without the variable a test is skipped with a message, unless `CI` is set: CI runs
//! PostgreSQL, so a missing variable there is a broken setup and fails the test.

use webhook_service::store::postgres::PostgresStore;
use webhook_service::store::secrets::{SecretBox, SecretsKey};

/// The variable naming the admin URL.
pub const ENV: &str = "SDSERVE_TEST_POSTGRES";

/// A database created for one test; dropped with it.
pub struct TestDb {
    /// The database's URL.
    pub url: String,
    /// Its name.
    pub name: String,
    admin: String,
}

/// A fresh database for `test`, or None (after printing why) when no server is configured.
pub async fn database(test: &str) -> Option<TestDb> {
    let Ok(admin) = std::env::var(ENV) else {
        if std::env::var_os("CI").is_some() {
            panic!("{test}: {ENV} is not set, and CI must run the PostgreSQL tests");
        }
        eprintln!("SKIPPED {test}: set {ENV} to a PostgreSQL admin URL to run it");
        return None;
    };
    let name = format!("sdserve_t_{:016x}", rand::random::<u64>());
    admin_client(&admin)
        .await
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap_or_else(|e| panic!("creating database {name}: {e}"));
    Some(TestDb {
        url: url_of(&admin, &name),
        name,
        admin,
    })
}

impl TestDb {
    /// A store on this database sealing with the shared test key (every store of a test can
    /// read what another wrote).
    pub async fn store(&self) -> PostgresStore {
        PostgresStore::connect(&self.url, secret_box())
            .await
            .expect("connecting the store")
    }

    /// A plain connection to this database, to look at or alter what the store wrote.
    pub async fn raw(&self) -> tokio_postgres::Client {
        admin_client(&self.url).await
    }

    /// A plain connection to the server's admin database.
    pub async fn admin(&self) -> tokio_postgres::Client {
        admin_client(&self.admin).await
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        // Drop runs inside the test's runtime, which cannot be blocked on: drop the database
        // from a thread with its own runtime, waiting for it so the next test starts clean.
        let (admin, name) = (self.admin.clone(), self.name.clone());
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async {
                let (client, connection) = tokio_postgres::connect(&admin, tokio_postgres::NoTls)
                    .await
                    .ok()?;
                tokio::spawn(connection);
                // FORCE: the stores' connections may still be open (a panicking test).
                client
                    .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .await
                    .ok()
            })
        })
        .join();
        if !matches!(dropped, Ok(Some(()))) {
            eprintln!("could not drop test database {}", self.name);
        }
    }
}

/// The secrets box every store of a test uses.
pub fn secret_box() -> SecretBox {
    SecretBox::new(&SecretsKey::from_bytes([7; 32]))
}

async fn admin_client(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("connecting to PostgreSQL: {e}"));
    tokio::spawn(connection);
    client
}

/// A key=value connection string for `config` (which came from a URL).
fn url_of(admin: &str, name: &str) -> String {
    // The admin URL with the fresh database's name as its path: a URL, as `--database` takes.
    let mut url = url::Url::parse(admin).expect("SDSERVE_TEST_POSTGRES must be a postgres:// URL");
    url.set_path(name);
    url.to_string()
}
