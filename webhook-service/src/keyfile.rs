//! Key files kept beside the database (`<db>.media-key`, `<db>.secrets-key`): created once, on
//! first start, with 32 random bytes and mode 0600, so a restart finds the same key and no
//! other user can read it.

use std::io::Write;
use std::path::{Path, PathBuf};

/// A key file that could not be read or created.
#[derive(Debug, thiserror::Error)]
#[error("key file {path}: {detail}")]
pub struct KeyFileError {
    /// The file.
    pub path: String,
    /// What went wrong (never the key).
    pub detail: String,
}

impl KeyFileError {
    /// An error about the file at `path`.
    pub fn new(path: &Path, detail: impl Into<String>) -> Self {
        Self {
            path: path.display().to_string(),
            detail: detail.into(),
        }
    }
}

/// `<database><suffix>`, e.g. `jobs.db.secrets-key` for `jobs.db` and `.secrets-key`.
pub fn beside(database: &Path, suffix: &str) -> PathBuf {
    let mut path = database.as_os_str().to_owned();
    path.push(suffix);
    PathBuf::from(path)
}

/// The contents of `<database><suffix>`, creating the file (owner-only, 32 random bytes) when
/// it does not exist. Returns the path with the contents so callers can name it in errors.
///
/// Two processes starting at once (the service and `keys create`) both end up with the
/// winner's key, whole: the loser's link fails and it reads the file instead.
pub fn load_or_create(database: &Path, suffix: &str) -> Result<(PathBuf, Vec<u8>), KeyFileError> {
    let path = beside(database, suffix);
    match std::fs::read(&path) {
        Ok(contents) => return Ok((path, contents)),
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(KeyFileError::new(&path, e.to_string()));
        }
        Err(_) => {}
    }
    let key: [u8; 32] = rand::random();
    // The key is written whole to a private temporary file and then hard-linked into place:
    // the link appears atomically with all 32 bytes in it, so a process that loses the race
    // never reads a file that exists but is still empty (which a create-then-write would show).
    let temporary = beside(
        database,
        &format!("{suffix}.{:016x}.tmp", rand::random::<u64>()),
    );
    let written =
        write_private(&temporary, &key).and_then(|()| std::fs::hard_link(&temporary, &path));
    let _ = std::fs::remove_file(&temporary);
    match written {
        Ok(()) => Ok((path, key.to_vec())),
        // Another process put its key there between our read and our link: use its key.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let contents =
                std::fs::read(&path).map_err(|e| KeyFileError::new(&path, e.to_string()))?;
            Ok((path, contents))
        }
        Err(e) => Err(KeyFileError::new(&path, e.to_string())),
    }
}

/// Creates `path` (owner-only) holding `contents`, synced to disk.
fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_once_owner_only_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("jobs.db");
        let (path, first) = load_or_create(&db, ".test-key").unwrap();
        assert_eq!(path, dir.path().join("jobs.db.test-key"));
        assert_eq!(first.len(), 32);
        let (_, second) = load_or_create(&db, ".test-key").unwrap();
        assert_eq!(first, second, "a restart must find the same key");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
    }

    #[test]
    fn racing_starts_all_get_the_winners_whole_key() {
        // The service and `keys create` starting at once on a new database: every racer must
        // read the same 32 bytes, never a file caught between its creation and its write.
        for _ in 0..50 {
            let dir = tempfile::tempdir().unwrap();
            let db = dir.path().join("jobs.db");
            let barrier = std::sync::Barrier::new(6);
            let keys: Vec<Vec<u8>> = std::thread::scope(|scope| {
                let racers: Vec<_> = (0..6)
                    .map(|_| {
                        scope.spawn(|| {
                            barrier.wait();
                            load_or_create(&db, ".race-key").unwrap().1
                        })
                    })
                    .collect();
                racers.into_iter().map(|r| r.join().unwrap()).collect()
            });
            assert!(
                keys.iter().all(|k| k.len() == 32 && *k == keys[0]),
                "racers read different keys: {keys:?}"
            );
            let left: Vec<_> = std::fs::read_dir(dir.path())
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            assert_eq!(
                left,
                vec![std::ffi::OsString::from("jobs.db.race-key")],
                "temporary files are removed"
            );
        }
    }
}
