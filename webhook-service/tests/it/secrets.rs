//! Secrets at rest: a job's webhook secret and signing key never appear in the database files,
//! yet its callback carries both; secrets a build before encryption wrote in clear are sealed at
//! the next start and still delivered.

use crate::support;

use std::path::Path;
use std::time::Duration;

use base64::Engine;
use prost::Message;
use sdserve_proto::v1 as pb;
use support::receiver::Receiver;
use support::service::{Service, submit_request, test_config, wait_deliveries};
use webhook_service::delivery::signing::SigningKey;
use webhook_service::store::secrets::SecretsKey;

const BEARER: &str = "bearer-at-rest-Q7w2x9";

/// A per-job Standard Webhooks key (not the service's), so a valid signature proves the stored
/// one was read back.
fn job_signing_key() -> String {
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(b"per-job signing key, kept sealed")
    )
}

/// Every byte of the database and its WAL, as the service left them.
fn database_bytes(db: &Path) -> Vec<u8> {
    let mut bytes = std::fs::read(db).unwrap();
    let mut wal = db.as_os_str().to_owned();
    wal.push("-wal");
    if let Ok(more) = std::fs::read(Path::new(&wal)) {
        bytes.extend(more);
    }
    bytes
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

fn assert_signed_callback(callback: &support::receiver::Recorded, bearer: &str, key: &str) {
    assert_eq!(
        callback.header("authorization"),
        Some(format!("Bearer {bearer}").as_str())
    );
    let id = callback.header("webhook-id").unwrap();
    let timestamp: i64 = callback
        .header("webhook-timestamp")
        .unwrap()
        .parse()
        .unwrap();
    let expected = SigningKey::parse(key)
        .unwrap()
        .sign(id, timestamp, &callback.body);
    assert_eq!(
        callback.header("webhook-signature"),
        Some(expected.as_str())
    );
}

#[tokio::test]
async fn secrets_are_not_in_the_database_files_and_callbacks_still_carry_them() {
    let (inference, _) = support::inference::start().await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("jobs.db");
    let service = Service::start(test_config(&dir, inference), dir).await;
    let receiver = Receiver::http().await;
    let mut request = submit_request("a red fox", &receiver.url("/hook"), "standard", BEARER);
    request.webhook.as_mut().unwrap().signing_secret = job_signing_key();
    let job = service
        .jobs()
        .await
        .submit_job(request)
        .await
        .unwrap()
        .into_inner()
        .job_id;

    let callbacks = receiver.wait_for(1, Duration::from_secs(10)).await;
    assert_signed_callback(&callbacks[0], BEARER, &job_signing_key());
    let mut jobs = service.jobs().await;
    wait_deliveries(&mut jobs, &job, |d| {
        d.iter()
            .any(|d| d.status() == pb::DeliveryStatus::Succeeded)
    })
    .await;

    let bytes = database_bytes(&db);
    assert!(
        contains(&bytes, &job),
        "the job is in the files read (sanity check of the scan)"
    );
    for secret in [
        BEARER,
        job_signing_key().as_str(),
        &job_signing_key()["whsec_".len()..],
    ] {
        assert!(
            !contains(&bytes, secret),
            "a secret is stored in clear in jobs.db or jobs.db-wal"
        );
    }
    let stored: (String, String) = rusqlite::Connection::open(&db)
        .unwrap()
        .query_row(
            "SELECT webhook_secret, signing_secret FROM jobs WHERE id = ?1",
            [&job],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert!(stored.0.starts_with("enc1:") && stored.1.starts_with("enc1:"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let key_file = service.dir.path().join("jobs.db.secrets-key");
        let mode = std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777;
        assert_eq!(
            mode, 0o600,
            "the secrets key created beside the database is owner-only"
        );
    }
    service.stop().await;
}

/// Inserts a queued job and an API key the way a build before encryption at rest stored them:
/// secrets in clear.
fn insert_legacy_rows(db: &Path, url: &str) {
    let conn = rusqlite::Connection::open(db).unwrap();
    let params = pb::GenerationParams {
        prompt: "a legacy fox".into(),
        steps: Some(4),
        ..Default::default()
    };
    conn.execute(
        "INSERT INTO jobs (id, params, webhook_url, webhook_secret, signing_secret, format, events, \
         vendor_context, status, created_at, owner) \
         VALUES ('legacy-job', ?1, ?2, ?3, ?4, 'standard', 'completed,failed', 'null', 'queued', 1700000000000, '')",
        rusqlite::params![params.encode_to_vec(), url, "legacy-bearer-Z1", job_signing_key()],
    )
    .unwrap();
    conn.execute(
        "INSERT INTO api_keys (id, name, hash, prefix, created_at, webhook_url, webhook_secret) \
         VALUES ('key_legacy', 'legacy', ?1, 'sk_legacy', 1, 'https://hooks.example.com/leo', 'legacy-leonardo-key-Z2')",
        [vec![7u8; 32]],
    )
    .unwrap();
}

#[tokio::test]
async fn clear_secrets_from_an_older_build_are_sealed_at_the_next_start_and_delivered() {
    let (inference, _) = support::inference::start().await;
    let receiver = Receiver::http().await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("jobs.db");
    // A key given in a file (base64), as --secrets-key-file takes it.
    let key_file = dir.path().join("secrets.key");
    std::fs::write(
        &key_file,
        base64::engine::general_purpose::STANDARD.encode(rand_key()),
    )
    .unwrap();
    let config = |dir: &tempfile::TempDir| webhook_service::Config {
        secrets_key: Some(SecretsKey::read_file(&key_file).unwrap()),
        ..test_config(dir, inference)
    };
    // The first start creates the schema; then the old rows are written while it is stopped.
    let first = Service::start(config(&dir), dir).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let dir = first.stop().await;
    insert_legacy_rows(&db, &receiver.url("/legacy"));
    assert!(
        contains(&database_bytes(&db), "legacy-bearer-Z1"),
        "the old form is in clear (sanity check)"
    );

    let service = Service::start(config(&dir), dir).await;
    let callbacks = receiver.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(callbacks[0].path, "/legacy");
    assert_signed_callback(&callbacks[0], "legacy-bearer-Z1", &job_signing_key());
    let bytes = database_bytes(&db);
    for secret in [
        "legacy-bearer-Z1",
        job_signing_key().as_str(),
        "legacy-leonardo-key-Z2",
    ] {
        assert!(
            !contains(&bytes, secret),
            "a clear secret survived the start in jobs.db or jobs.db-wal"
        );
    }
    assert!(
        !service.dir.path().join("jobs.db.secrets-key").exists(),
        "the given key is used, none created"
    );
    service.stop().await;
}

fn rand_key() -> [u8; 32] {
    std::array::from_fn(|i| (i as u8).wrapping_mul(31).wrapping_add(5))
}

#[tokio::test]
async fn keys_cli_seals_with_the_given_key_and_another_key_is_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("jobs.db");
    let database = format!("sqlite://{}", db.display());
    let key_file = dir.path().join("secrets.hex");
    let hex: String = rand_key().iter().map(|b| format!("{b:02x}")).collect();
    std::fs::write(&key_file, format!("{hex}\n")).unwrap();
    let key_arg = key_file.display().to_string();
    let cli = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_webhook-service"))
            .args(args)
            .env_remove("SDSERVE_DATABASE")
            .env_remove("SDSERVE_SECRETS_KEY_FILE")
            .output()
            .unwrap()
    };
    let created = cli(&[
        "keys",
        "create",
        "--name",
        "leo",
        "--database",
        &database,
        "--secrets-key-file",
        &key_arg,
        "--webhook-url",
        "https://hooks.example.com/leo",
        "--webhook-api-key",
        "leo-callback-key-Z3",
    ]);
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    assert!(
        !contains(&database_bytes(&db), "leo-callback-key-Z3"),
        "the key's callback secret is stored in clear"
    );

    let listed = cli(&[
        "keys",
        "list",
        "--database",
        &database,
        "--secrets-key-file",
        &key_arg,
    ]);
    assert!(listed.status.success() && String::from_utf8_lossy(&listed.stdout).contains("leo"));
    // Without the key file the key beside the database is used: a different one.
    let refused = cli(&["keys", "list", "--database", &database]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success(),
        "listing with another key must fail"
    );
    assert!(
        stderr.contains("api_keys.webhook_secret") && stderr.contains("secrets key does not match"),
        "{stderr}"
    );
    assert!(!stderr.contains("leo-callback-key-Z3"), "{stderr}");

    // The service, too, refuses to start with another key, naming the column.
    let (inference, _) = support::inference::start().await;
    let config = webhook_service::Config {
        secrets_key: Some(SecretsKey::generate()),
        ..test_config(&dir, inference)
    };
    let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ran = tokio::time::timeout(
        Duration::from_secs(10),
        webhook_service::run(config, grpc, http, std::future::pending()),
    )
    .await
    .expect("a start with the wrong key must fail at once");
    let message = ran.unwrap_err().to_string();
    assert!(
        message.contains("api_keys.webhook_secret")
            && message.contains("secrets key does not match"),
        "{message}"
    );
}
