//! Fixtures shared by the SQLite store's unit tests and by the integration tests' store
//! contract (`tests/it/store_contract/`, which includes this file with `#[path]`;
//! `tests/it/main.rs` makes `crate::domain` and `crate::store` name this crate's modules), so the
//! helpers take any [`Store`].
#![allow(dead_code)]

use std::path::Path;

use sdserve_proto::v1::GenerationParams;

use crate::domain::{
    AttemptRecord, DeliveryStatus, EventKind, Format, JobFinish, JobStatus, NewDelivery, NewJob,
    NextStep, Secret, StoredImage, WebhookTarget,
};
use crate::store::Store;

pub const URL: &str = "https://hooks.example.com/in";

pub fn job(id: &str, key: Option<&str>, created_at_ms: i64) -> NewJob {
    NewJob {
        owner: String::new(),
        extra_parts: Vec::new(),
        execution_timeout_ms: None,
        id: id.to_owned(),
        params: GenerationParams {
            prompt: "a (red:1.2) fox".into(),
            negative_prompt: "blurry".into(),
            seed: Some(42),
            steps: Some(30),
            cfg_scale: Some(6.5),
            init_image: vec![0, 1, 2, 255],
            styles: vec!["cinematic".into(), "noir".into()],
            ..Default::default()
        },
        webhook: WebhookTarget {
            url: Some(URL.to_owned()),
            secret: Some(Secret::new("bearer-s3cret")),
            format: Format::Runpod,
            events: vec![EventKind::Completed, EventKind::Failed],
            signing_secret: Some(Secret::new("whsec_c2lnbmluZw==")),
        },
        idempotency_key: key.map(str::to_owned),
        vendor_context: serde_json::json!({"input": {"api_name": "txt2img"}, "n": [1, 2]}),
        created_at_ms,
    }
}

pub fn delivery(id: &str, url: &str) -> NewDelivery {
    NewDelivery {
        id: id.to_owned(),
        event: EventKind::Completed,
        url: url.to_owned(),
        payload: format!("{{\"id\":\"{id}\"}}").into_bytes(),
    }
}

pub fn finish(job_id: &str, at: i64, deliveries: Vec<NewDelivery>) -> JobFinish {
    JobFinish {
        job_id: job_id.to_owned(),
        status: JobStatus::Completed,
        error: None,
        images: (0..2)
            .map(|i| StoredImage {
                index: i,
                seed: 42 + i64::from(i),
                infotext: format!("a fox\nSeed: {}", 42 + i),
                png: vec![0x89, b'P', b'N', b'G', i as u8],
            })
            .collect(),
        info_json: "{\"seed\":42}".into(),
        started_at_ms: Some(at - 50),
        finished_at_ms: at,
        deliveries,
    }
}

pub fn attempt(delivery_id: &str, number: u32, at_ms: i64, next: NextStep) -> AttemptRecord {
    let ok = next == NextStep::Succeeded;
    AttemptRecord {
        delivery_id: delivery_id.to_owned(),
        number,
        at_ms,
        status_code: Some(if ok {
            200
        } else if next == NextStep::Gone {
            410
        } else {
            503
        }),
        error: (!ok).then(|| "HTTP 503".to_owned()),
        duration_ms: 12,
        response_excerpt: "body".into(),
        next,
    }
}

/// A store holding job `j1` finished at 1000 with deliveries `d1`, `d2` to [`URL`].
pub async fn with_deliveries(store: &dyn Store) {
    store.insert_job(job("j1", None, 100)).await.unwrap();
    let done = finish("j1", 1000, vec![delivery("d1", URL), delivery("d2", URL)]);
    assert!(store.finish_job(done).await.unwrap());
}

pub async fn status(store: &dyn Store, id: &str) -> DeliveryStatus {
    store.get_delivery(id).await.unwrap().unwrap().status
}

pub fn raw(path: &Path, sql: &str) {
    rusqlite::Connection::open(path)
        .unwrap()
        .execute_batch(sql)
        .unwrap();
}

/// The values of the one text column `sql` selects from the SQLite file at `path`.
pub fn stored(path: &Path, sql: &str) -> Vec<Option<String>> {
    let conn = rusqlite::Connection::open(path).unwrap();
    let mut stmt = conn.prepare(sql).unwrap();
    stmt.query_map([], |row| row.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// Queries selecting every sealed column's values, for a look at what the database holds.
pub const SECRET_COLUMNS: [&str; 3] = [
    "SELECT webhook_secret FROM jobs",
    "SELECT signing_secret FROM jobs",
    "SELECT webhook_secret FROM api_keys",
];
