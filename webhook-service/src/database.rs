//! Where the service keeps its jobs: a SQLite file for one process, or a PostgreSQL database
//! that any number of replicas share. Every choice that depends on which (how the store is
//! opened, where the secrets, media key and spool live) is made here, once.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::ServiceError;
use crate::jobs::spool::Spool;
use crate::keyfile;
use crate::store::Store;
use crate::store::postgres::PostgresStore;
use crate::store::secrets::{SecretBox, SecretsKey};
use crate::store::sqlite::SqliteStore;

/// A database location, as given by `--database`.
#[derive(Clone, PartialEq, Eq)]
pub enum Database {
    /// A SQLite file written by this process alone; the secrets key, media key and spool are
    /// kept beside it (`<file>.secrets-key`, `<file>.media-key`, `<file>.spool/`).
    Sqlite(PathBuf),
    /// A PostgreSQL database shared by replicas. They must share the secrets key (a file each
    /// is given); the media key lives in the database; `spool` is this replica's own folder
    /// for results that could not be stored yet.
    Postgres {
        /// `postgres://user:password@host:port/db`.
        url: String,
        /// This replica's spool folder.
        spool: PathBuf,
    },
}

impl Database {
    /// Parses `sqlite://PATH`, `postgres://…` or `postgresql://…`; `spool` is the spool folder
    /// of a PostgreSQL replica (default `sdserve-spool` in the working directory).
    pub fn parse(url: &str, spool: Option<PathBuf>) -> Result<Self, String> {
        if let Some(path) = url.strip_prefix("sqlite://") {
            if path.is_empty() {
                return Err("--database sqlite:// needs a file path, e.g. sqlite://jobs.db".into());
            }
            return Ok(Self::Sqlite(PathBuf::from(path)));
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let spool = spool.unwrap_or_else(|| PathBuf::from("sdserve-spool"));
            return Ok(Self::Postgres {
                url: url.to_owned(),
                spool,
            });
        }
        Err(format!(
            "--database must be sqlite://PATH or postgres://USER:PASSWORD@HOST/DB, got {}",
            redact(url)
        ))
    }

    /// Opens the store. SQLite: the secrets key is `secrets_key` or the file beside the
    /// database (created on first start). PostgreSQL: `secrets_key` is required, since every
    /// replica must seal and open secrets with the same key.
    pub async fn open(
        &self,
        secrets_key: Option<&SecretsKey>,
    ) -> Result<Arc<dyn Store>, ServiceError> {
        Ok(match self {
            Self::Sqlite(path) => Arc::new(open_sqlite(path, secrets_key)?),
            Self::Postgres { url, .. } => Arc::new(open_postgres(url, secrets_key).await?),
        })
    }

    /// Opens the store as [`Database::open`] does, with the key that signs media links:
    /// `configured` when given, else one shared by every process serving this database (a
    /// file beside a SQLite database, a row of a PostgreSQL one; created on first use).
    pub async fn open_with_media_key(
        &self,
        secrets_key: Option<&SecretsKey>,
        configured: Option<Vec<u8>>,
    ) -> Result<(Arc<dyn Store>, Vec<u8>), ServiceError> {
        match self {
            Self::Sqlite(path) => {
                let store = Arc::new(open_sqlite(path, secrets_key)?);
                let key = match configured {
                    Some(key) => key,
                    None => sqlite_media_key(path)?,
                };
                Ok((store, key))
            }
            Self::Postgres { url, .. } => {
                let store = Arc::new(open_postgres(url, secrets_key).await?);
                let key = match configured {
                    Some(key) => key,
                    None => store.shared_key("media-key").await?,
                };
                Ok((store, key))
            }
        }
    }

    /// Where this process keeps results it could not store yet.
    pub fn spool(&self) -> Spool {
        match self {
            Self::Sqlite(path) => Spool::beside(path),
            Self::Postgres { spool, .. } => Spool::at(spool.clone()),
        }
    }
}

impl From<PathBuf> for Database {
    fn from(path: PathBuf) -> Self {
        Self::Sqlite(path)
    }
}

impl fmt::Display for Database {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sqlite(path) => write!(f, "sqlite://{}", path.display()),
            Self::Postgres { url, .. } => f.write_str(&redact(url)),
        }
    }
}

/// Debug is Display: a URL's password never reaches a log.
impl fmt::Debug for Database {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// `url` with its password, if any, replaced by `***`.
fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        Ok(parsed) => parsed.to_string(),
        Err(_) => "<unparsable URL>".to_owned(),
    }
}

/// Opens a SQLite database with `secrets_key`, else the key kept beside it (created
/// owner-only on first start). `serve` and the `keys` commands both open it this way, so
/// they read each other's secrets.
pub fn open_sqlite(
    database: &Path,
    secrets_key: Option<&SecretsKey>,
) -> Result<SqliteStore, ServiceError> {
    let key = match secrets_key {
        Some(key) => key.clone(),
        None => SecretsKey::beside(database)
            .map_err(|e| ServiceError::Config(format!("secrets {e}")))?,
    };
    Ok(SqliteStore::open_with(database, SecretBox::new(&key))?)
}

/// The media key kept beside a SQLite database, created (owner-only) on first start so links in
/// stored callbacks stay valid across restarts.
fn sqlite_media_key(database: &Path) -> Result<Vec<u8>, ServiceError> {
    let (path, key) = keyfile::load_or_create(database, ".media-key")
        .map_err(|e| ServiceError::Config(format!("media {e}")))?;
    if key.len() < 32 {
        return Err(ServiceError::Config(format!(
            "media key file {} is shorter than 32 bytes",
            path.display()
        )));
    }
    Ok(key)
}

async fn open_postgres(
    url: &str,
    secrets_key: Option<&SecretsKey>,
) -> Result<PostgresStore, ServiceError> {
    let Some(key) = secrets_key else {
        return Err(ServiceError::Config(
            "a PostgreSQL database needs --secrets-key-file: every replica must seal and open \
             webhook secrets with the same key (create one with `head -c 32 /dev/urandom > FILE`)"
                .into(),
        ));
    };
    Ok(PostgresStore::connect(url, SecretBox::new(key)).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_parsed_and_passwords_never_shown() {
        assert_eq!(
            Database::parse("sqlite://a/b.db", None).unwrap(),
            Database::Sqlite("a/b.db".into())
        );
        let pg = Database::parse("postgres://u:hunter2@db:5432/jobs", None).unwrap();
        assert_eq!(pg.to_string(), "postgres://u:***@db:5432/jobs");
        assert!(!format!("{pg:?}").contains("hunter2"));
        let err = Database::parse("mysql://u:hunter2@db/jobs", None).unwrap_err();
        assert!(
            err.contains("--database") && !err.contains("hunter2"),
            "{err}"
        );
        assert!(Database::parse("sqlite://", None).is_err());
    }
}
