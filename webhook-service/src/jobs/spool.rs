//! Finished generations whose result could not be stored yet, kept on disk so that a crash or
//! restart while the store is failing (a full disk, a held lock) does not cost the generation:
//! at the next start the kept result is stored instead of generating the job again.
//!
//! One file per job (`<job id>.json` in `<database>.spool/`, owner-only), written atomically
//! (temporary file, then rename). The folder is bounded: past its limit nothing more is kept
//! and the job is generated again at the next start, as before.

use std::path::{Path, PathBuf};

use base64::Engine;
use serde_json::{Value, json};

use super::outbox::Ending;
use crate::domain::{JobStatus, StoredImage};

/// The most bytes the spool folder holds.
const MAX_BYTES: u64 = 1 << 30;

/// The spool folder of one database.
#[derive(Debug, Clone)]
pub struct Spool {
    dir: PathBuf,
}

impl Spool {
    /// The spool beside `database` (`<database>.spool/`).
    pub fn beside(database: &Path) -> Spool {
        let mut dir = database.as_os_str().to_owned();
        dir.push(".spool");
        Spool {
            dir: PathBuf::from(dir),
        }
    }

    /// The spool in `dir` (a PostgreSQL replica's own folder).
    pub fn at(dir: PathBuf) -> Spool {
        Spool { dir }
    }

    fn file(&self, job_id: &str) -> Option<PathBuf> {
        // Job ids are UUIDs; anything else is not written (no path tricks).
        let safe = !job_id.is_empty()
            && job_id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-');
        safe.then(|| self.dir.join(format!("{job_id}.json")))
    }

    /// Keeps `ending` of `job_id` on disk; false when it is not kept (over the limit, or the
    /// disk refused it too).
    pub fn keep(&self, job_id: &str, ending: &Ending) -> bool {
        let Some(path) = self.file(job_id) else {
            return false;
        };
        let engine = base64::engine::general_purpose::STANDARD;
        let body = json!({
            "status": ending.status.as_str(),
            "error": ending.error,
            "info_json": ending.info_json,
            "finished_at_ms": ending.finished_at_ms,
            "images": ending.images.iter().map(|i| json!({
                "index": i.index, "seed": i.seed, "infotext": i.infotext, "png": engine.encode(&i.png),
            })).collect::<Vec<_>>(),
        })
        .to_string();
        if self.used() + body.len() as u64 > MAX_BYTES {
            return false;
        }
        let write = || -> std::io::Result<()> {
            let mut builder = std::fs::DirBuilder::new();
            builder.recursive(true);
            #[cfg(unix)]
            std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
            builder.create(&self.dir)?;
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, body.as_bytes())?;
            std::fs::rename(&tmp, &path)
        };
        match write() {
            Ok(()) => true,
            Err(err) => {
                tracing::warn!(job = %job_id, error = %err, "cannot keep the result on disk either");
                false
            }
        }
    }

    /// Forgets a kept result (it is stored now).
    pub fn forget(&self, job_id: &str) {
        if let Some(path) = self.file(job_id) {
            let _ = std::fs::remove_file(path);
        }
    }

    /// Every kept result: (job id, its ending). Unreadable files are skipped with a warning.
    pub fn kept(&self) -> Vec<(String, Ending)> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut kept = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            let Some(job_id) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".json"))
            else {
                continue;
            };
            match std::fs::read(&path)
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
                .and_then(|v| ending(&v))
            {
                Some(ending) => kept.push((job_id.to_owned(), ending)),
                None => tracing::warn!(file = %path.display(), "unreadable kept result; ignored"),
            }
        }
        kept
    }

    fn used(&self) -> u64 {
        std::fs::read_dir(&self.dir)
            .map(|entries| {
                entries
                    .flatten()
                    .filter_map(|e| e.metadata().ok())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0)
    }
}

fn ending(v: &Value) -> Option<Ending> {
    let engine = base64::engine::general_purpose::STANDARD;
    let status: JobStatus = v["status"].as_str()?.parse().ok()?;
    let images = v["images"]
        .as_array()?
        .iter()
        .map(|i| {
            Some(StoredImage {
                index: u32::try_from(i["index"].as_u64()?).ok()?,
                seed: i["seed"].as_i64()?,
                infotext: i["infotext"].as_str()?.to_owned(),
                png: engine.decode(i["png"].as_str()?).ok()?,
            })
        })
        .collect::<Option<Vec<_>>>()?;
    Some(Ending {
        status,
        error: v["error"].as_str().map(str::to_owned),
        images,
        info_json: v["info_json"].as_str()?.to_owned(),
        finished_at_ms: v["finished_at_ms"].as_i64()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kept_result_reads_back_and_is_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::beside(&dir.path().join("jobs.db"));
        let ending = Ending {
            status: JobStatus::Completed,
            error: None,
            images: vec![StoredImage {
                index: 0,
                seed: 7,
                infotext: "a fox".into(),
                png: vec![0x89, b'P', 0, 255],
            }],
            info_json: "{\"seed\":7}".into(),
            finished_at_ms: 1234,
        };
        assert!(spool.keep("01a22b2f-deba-76d7", &ending));
        assert!(
            !spool.keep("../escape", &ending),
            "only id-shaped names are written"
        );
        let kept = spool.kept();
        assert_eq!(kept.len(), 1);
        assert_eq!(
            (
                kept[0].0.as_str(),
                kept[0].1.images.clone(),
                kept[0].1.finished_at_ms
            ),
            ("01a22b2f-deba-76d7", ending.images, 1234)
        );
        spool.forget("01a22b2f-deba-76d7");
        assert!(spool.kept().is_empty());
    }
}
