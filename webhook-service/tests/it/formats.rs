//! Golden tests of the callback formats.
//!
//! Each vendor format is rendered from a job built from that vendor's documented request (the
//! samples in `shared/seeds`, transcribed into `tests/fixtures/seeds/`) and compared with the
//! vendor's documented callback field by field: every field of the sample must be present with
//! the same JSON type, and the fields our job determines must have the sample's value. The few
//! fields we deliberately leave out are listed with the reason. Each rendering is also pinned in
//! `tests/fixtures/formats/` (rewrite with `SDSERVE_BLESS=1` after a reviewed change).

use std::path::PathBuf;

use base64::Engine;
use sdserve_proto::v1::GenerationParams;
use serde_json::{Value, json};
use webhook_service::domain::{
    EventKind, Format, JobOutcome, JobRecord, JobStatus, NewJob, PublishedImage, Secret,
    StoredImage, WebhookTarget,
};
use webhook_service::formats;

fn fixture(path: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(path);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// Compares `ours` with the pinned rendering, or rewrites it under `SDSERVE_BLESS=1`.
fn check_pinned(name: &str, ours: &Value) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join(format!("tests/fixtures/formats/{name}.json"));
    if std::env::var_os("SDSERVE_BLESS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, serde_json::to_string_pretty(ours).unwrap() + "\n").unwrap();
    }
    assert_eq!(
        ours,
        &fixture(&format!("formats/{name}.json")),
        "{name} differs from its pinned rendering"
    );
}

/// Every path of `sample` must exist in `ours` with the same JSON type, except paths in `skip`
/// (prefix match). A `null` in the sample admits any value. Returns the paths compared.
fn same_fields(sample: &Value, ours: &Value, path: &str, skip: &[&str], seen: &mut Vec<String>) {
    if skip
        .iter()
        .any(|s| path == *s || path.starts_with(&format!("{s}.")))
    {
        return;
    }
    seen.push(path.to_owned());
    match (sample, ours) {
        (Value::Null, _) => {}
        (Value::Object(s), Value::Object(o)) => {
            for (key, value) in s {
                let child = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                let Some(mine) = o.get(key) else {
                    if !skip.contains(&child.as_str()) {
                        panic!("field {child} of the vendor sample is missing from our callback");
                    }
                    continue;
                };
                same_fields(value, mine, &child, skip, seen);
            }
        }
        (Value::Array(s), Value::Array(o)) => {
            assert!(
                !o.is_empty() || s.is_empty(),
                "{path}: the sample has items, ours has none"
            );
            if let (Some(first), Some(mine)) = (s.first(), o.first()) {
                same_fields(first, mine, &format!("{path}.0"), skip, seen);
            }
        }
        (Value::Number(_), Value::Number(_))
        | (Value::String(_), Value::String(_))
        | (Value::Bool(_), Value::Bool(_)) => {}
        _ => panic!("{path}: the sample has {sample}, ours has {ours} (a different JSON type)"),
    }
}

fn png(index: u8) -> Vec<u8> {
    let mut bytes = b"\x89PNG\r\n\x1a\n".to_vec();
    bytes.extend([index; 16]);
    bytes
}

struct Case {
    record: JobRecord,
    images: Vec<StoredImage>,
    info_json: String,
}

impl Case {
    fn new(
        id: &str,
        format: Format,
        params: GenerationParams,
        vendor_context: Value,
        images: u32,
    ) -> Self {
        let job = NewJob {
            id: id.to_owned(),
            owner: String::new(),
            params,
            extra_parts: Vec::new(),
            execution_timeout_ms: None,
            webhook: WebhookTarget {
                url: Some("https://76e6-45-222-21-223.ngrok.io/".into()),
                secret: Some(Secret::new("sk-live-BEARER-never-in-a-body")),
                format,
                events: EventKind::ALL.to_vec(),
                signing_secret: Some(Secret::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")),
            },
            idempotency_key: None,
            vendor_context,
            created_at_ms: 1_699_490_542_707,
        };
        let record = JobRecord {
            job,
            status: JobStatus::Completed,
            dispatched_at_ms: Some(1_699_490_542_707 + 60_000),
            queue_position: None,
            started_at_ms: Some(1_699_490_542_707 + 67_461),
            finished_at_ms: Some(1_699_490_542_707 + 67_461 + 21_171),
            progress_step: 30,
            progress_total: 30,
            image_count: images,
            error: None,
            model: "deliberate_v2".into(),
            info_json: String::new(),
        };
        let images = (0..images)
            .map(|i| StoredImage {
                index: i,
                seed: 476_701_233 + i64::from(i),
                infotext: format!("a prompt\nSteps: 30, Seed: {}", 476_701_233 + i),
                png: png(i as u8),
            })
            .collect();
        let info_json = fixture("seeds/runpod.json")["output"]["info"]
            .as_str()
            .unwrap()
            .to_owned();
        Self {
            record,
            images,
            info_json,
        }
    }

    fn failed(mut self, event: EventKind, error: &str) -> Self {
        self.record.status = if event == EventKind::Failed {
            JobStatus::Failed
        } else {
            JobStatus::Canceled
        };
        self.record.error = Some(error.to_owned());
        self.images.clear();
        self.info_json.clear();
        self
    }

    fn render(&self, event: EventKind) -> Value {
        let outcome = JobOutcome {
            record: &self.record,
            event,
            images: self
                .images
                .iter()
                .map(|image| PublishedImage {
                    image,
                    url: format!(
                        "https://sdserve.example/media/{}/{}?expires=1&sig=ab",
                        self.record.job.id, image.index
                    ),
                })
                .collect(),
            info_json: &self.info_json,
            queue_ms: 67_461,
            execution_ms: 21_171,
            timestamp_ms: 1_699_490_546_932,
        };
        formats::render(&outcome)
    }
}

/// The job RunPod's documented request creates (seed 000's payload, through our A1111 adapter's
/// field names), as its callback echoes it.
fn runpod_case() -> Case {
    let request = fixture("seeds/runpod_request.json");
    let params = GenerationParams {
        prompt: "an astronaut riding a horse".into(),
        seed: Some(-1),
        batch_size: Some(1),
        steps: Some(30),
        cfg_scale: Some(7.0),
        width: Some(512),
        height: Some(512),
        sampler_name: "DPM++ SDE Karras".into(),
        ..Default::default()
    };
    Case::new(
        "sync-102c2af4-8ea7-4abb-a9ec-c2a56cf80a16",
        Format::Runpod,
        params,
        json!({"input": request["input"]}),
        1,
    )
}

#[test]
fn runpod_matches_the_a1111_worker_sample_exactly_but_for_the_image() {
    let case = runpod_case();
    let ours = case.render(EventKind::Completed);
    let mut sample = fixture("seeds/runpod.json");
    let image = ours["output"]["images"][0].as_str().unwrap();
    assert_eq!(
        base64::engine::general_purpose::STANDARD
            .decode(image)
            .unwrap(),
        case.images[0].png
    );
    sample["output"]["images"][0] = json!(image);
    assert_eq!(ours, sample);
    check_pinned("runpod", &ours);
}

#[test]
fn runpod_failure_is_a_failed_status_object_with_the_error() {
    let ours = runpod_case()
        .failed(EventKind::Failed, "model not loaded")
        .render(EventKind::Failed);
    assert_eq!(ours["status"], "FAILED");
    assert_eq!(ours["error"], "model not loaded");
    assert_eq!(ours["id"], "sync-102c2af4-8ea7-4abb-a9ec-c2a56cf80a16");
    assert!(ours.get("output").is_none());
    let cancelled = runpod_case()
        .failed(EventKind::Canceled, "cancelled by caller")
        .render(EventKind::Canceled);
    assert_eq!(cancelled["status"], "CANCELLED");
}

#[test]
fn runpod_without_a_vendor_request_synthesises_the_input() {
    let mut case = runpod_case();
    case.record.job.vendor_context = Value::Null;
    let ours = case.render(EventKind::Completed);
    assert_eq!(
        ours["input"]["api"],
        json!({"method": "POST", "endpoint": "/sdapi/v1/txt2img"})
    );
    assert_eq!(
        ours["input"]["payload"]["prompt"],
        "an astronaut riding a horse"
    );
    assert_eq!(ours["input"]["payload"]["steps"], 30);
    assert_eq!(
        ours["output"]["parameters"],
        fixture("seeds/runpod.json")["output"]["parameters"]
    );
}

fn cerebrium_case() -> Case {
    let params = GenerationParams {
        prompt: "An astronaut riding a horse in space".into(),
        ..Default::default()
    };
    Case::new(
        "dummy-run-id-9ac612631200",
        Format::Cerebrium,
        params,
        Value::Null,
        1,
    )
}

#[test]
fn cerebrium_matches_its_sample_field_by_field() {
    let case = cerebrium_case();
    let ours = case.render(EventKind::Completed);
    let sample = fixture("seeds/cerebrium.json");
    let mut seen = Vec::new();
    same_fields(&sample, &ours, "", &[], &mut seen);
    assert_eq!(
        ours.as_object().unwrap().len(),
        sample.as_object().unwrap().len(),
        "extra fields: {ours}"
    );
    assert_eq!(ours["run_id"], sample["run_id"]);
    assert_eq!(ours["message"], sample["message"]);
    assert_eq!(ours["run_time_ms"], 21_171.0);
    let image = ours["result"][0].as_str().unwrap();
    assert_eq!(
        base64::engine::general_purpose::STANDARD
            .decode(image)
            .unwrap(),
        case.images[0].png
    );
    check_pinned("cerebrium", &ours);

    let failed = cerebrium_case()
        .failed(EventKind::Failed, "out of memory")
        .render(EventKind::Failed);
    assert_eq!(
        (failed["message"].as_str(), failed["result"].is_null()),
        (Some("out of memory"), true)
    );
}

#[test]
fn diffute_matches_its_sample_field_by_field() {
    let params = GenerationParams {
        prompt: "black and white photographs of Yosemite".into(),
        batch_size: Some(3),
        ..Default::default()
    };
    let context = json!({"name": "Houston", "prompt_name": "Ansel_Adams"});
    let sample = fixture("seeds/diffute.json");
    let sample = json!({"name": sample["name"], "Ansel_Adams": sample["Ansel_Adams"], "job_id": sample["job_id"]});
    let case = Case::new(
        "0190a6b2-7c1e-7d33-9a51-3f0c2f5e8b11",
        Format::Diffute,
        params,
        context,
        3,
    );
    let ours = case.render(EventKind::Completed);
    let mut seen = Vec::new();
    // sdserve's job ids are strings (UUIDv7), Diffute's sample shows a number.
    same_fields(&sample, &ours, "", &["job_id"], &mut seen);
    assert_eq!(ours["job_id"], "0190a6b2-7c1e-7d33-9a51-3f0c2f5e8b11");
    assert_eq!(ours["name"], "Houston");
    let urls: Vec<&str> = ours["Ansel_Adams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u.as_str().unwrap())
        .collect();
    assert_eq!(
        urls.len(),
        3,
        "one URL per image, like the sample's num_images"
    );
    assert!(
        urls.iter()
            .enumerate()
            .all(|(i, u)| u.contains(&format!("/media/0190a6b2-7c1e-7d33-9a51-3f0c2f5e8b11/{i}?")))
    );
    assert_eq!(ours.as_object().unwrap().len(), 3, "extra fields: {ours}");
    check_pinned("diffute", &ours);
}

/// Leonardo sample fields that are null in ours although the sample has a value, and why.
const LEONARDO_NULL: &[&str] = &[
    // Secrets: the callback API key and the Leonardo API key are never echoed.
    "data.object.apiKey.key",
    "data.object.apiKey.webhookCallbackApiKey",
    // Leonardo catalogue data about the model that sdserve has no record of.
    "data.object.model.createdAt",
    "data.object.model.updatedAt",
    "data.object.model.description",
    "data.object.model.userId",
    "data.object.model.batchSize",
    "data.object.model.modelHeight",
    "data.object.model.modelWidth",
    "data.object.model.trainingStrength",
    "data.object.model.featuredPosition",
    "data.object.model.imageCount",
];

fn leonardo_case() -> Case {
    let params = GenerationParams {
        prompt: "An oil painting of a cat".into(),
        steps: Some(30),
        cfg_scale: Some(7.0),
        sampler_name: "EULER_DISCRETE".into(),
        seed: Some(905_778_432),
        ..Default::default()
    };
    let context = formats::leonardo::context(&formats::leonardo::RequestContext {
        scheduler: "EULER_DISCRETE".into(),
        public: false,
        model_version: Some(("deliberate_v2".into(), "v2".into())),
        key_name: "webhook with key".into(),
        webhook_url: Some("https://webhook.site/cc21af5f-4caa-498e-8f26-20c664680b73".into()),
        ..Default::default()
    });
    let mut case = Case::new(
        "0190a6b2-7c1e-7d33-9a51-3f0c2f5e8b12",
        Format::Leonardo,
        params,
        context,
        1,
    );
    // A key created 2023-11-07T00:11:07.274Z, as in the sample.
    case.record.job.owner = "key_018ba71e5e8a7000800000000000000a".into();
    case.images[0].seed = 905_778_432;
    case
}

#[test]
fn leonardo_matches_its_sample_field_by_field() {
    let case = leonardo_case();
    let ours = case.render(EventKind::Completed);
    let sample = fixture("seeds/leonardo.json");
    let mut seen = Vec::new();
    same_fields(&sample, &ours, "", LEONARDO_NULL, &mut seen);
    assert!(seen.len() >= 110, "compared only {} fields", seen.len());
    for path in LEONARDO_NULL {
        let pointer = format!("/{}", path.replace('.', "/"));
        assert_eq!(ours.pointer(&pointer), Some(&Value::Null), "{path}");
    }
    let (o, s) = (&ours["data"]["object"], &sample["data"]["object"]);
    for key in ["userId", "apiKeyId", "modelId"] {
        assert!(
            uuid::Uuid::parse_str(o[key].as_str().unwrap()).is_ok(),
            "{key}: {}",
            o[key]
        );
    }
    assert_eq!(o["apiKey"]["createdAt"], s["apiKey"]["createdAt"]);
    assert_eq!(
        (o["sdVersion"].as_str(), o["model"]["name"].as_str()),
        (Some("v2"), Some("deliberate_v2"))
    );
    for key in ["type", "object", "timestamp", "api_version"] {
        assert_eq!(ours[key], sample[key], "{key}");
    }
    for key in [
        "status",
        "coreModel",
        "guidanceScale",
        "imageHeight",
        "imageWidth",
        "inferenceSteps",
        "prompt",
        "negativePrompt",
        "quantity",
        "seed",
        "scheduler",
        "imageToImage",
    ] {
        assert_eq!(o[key], s[key], "data.object.{key}");
    }
    assert_eq!(o["id"], "0190a6b2-7c1e-7d33-9a51-3f0c2f5e8b12");
    assert_eq!(o["createdAt"], "2023-11-09T00:42:22.707Z");
    assert_eq!(o["images"][0]["generationId"], o["id"]);
    assert!(
        o["images"][0]["url"]
            .as_str()
            .unwrap()
            .starts_with("https://sdserve.example/media/")
    );
    check_pinned("leonardo", &ours);

    let failed = leonardo_case()
        .failed(EventKind::Failed, "model not loaded")
        .render(EventKind::Failed);
    assert_eq!(
        (
            failed["type"].as_str(),
            failed["data"]["object"]["status"].as_str()
        ),
        (Some("image_generation.failed"), Some("FAILED"))
    );
}

#[test]
fn standard_is_type_timestamp_data() {
    let params = GenerationParams {
        prompt: "a lighthouse".into(),
        batch_size: Some(2),
        ..Default::default()
    };
    let case = Case::new(
        "0190a6b2-7c1e-7d33-9a51-3f0c2f5e8b13",
        Format::Standard,
        params,
        Value::Null,
        2,
    );
    let ours = case.render(EventKind::Completed);
    assert_eq!(ours["type"], "job.completed");
    assert_eq!(ours["timestamp"], "2023-11-09T00:42:26.932Z");
    let data = &ours["data"];
    assert_eq!(data["job_id"], "0190a6b2-7c1e-7d33-9a51-3f0c2f5e8b13");
    assert_eq!(data["images"][1]["seed"], 476_701_234);
    assert_eq!(
        data["info"]["seed"], 476_701_233,
        "info is the parsed A1111 info object"
    );
    check_pinned("standard", &ours);
    let failed = case
        .failed(EventKind::Failed, "bad checkpoint")
        .render(EventKind::Failed);
    assert_eq!(
        (failed["type"].as_str(), failed["data"]["error"].as_str()),
        (Some("job.failed"), Some("bad checkpoint"))
    );
}

#[test]
fn no_format_ever_contains_a_secret() {
    let cases = [runpod_case(), cerebrium_case(), leonardo_case()];
    for format in Format::ALL {
        for event in EventKind::ALL {
            for case in &cases {
                let mut case = Case {
                    record: case.record.clone(),
                    images: case.images.clone(),
                    info_json: case.info_json.clone(),
                };
                case.record.job.webhook.format = *format;
                if *event != EventKind::Completed {
                    case = case.failed(*event, "failed");
                }
                let text = case.render(*event).to_string();
                for secret in [
                    "sk-live-BEARER-never-in-a-body",
                    "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
                ] {
                    assert!(
                        !text.contains(secret),
                        "{format} {event} payload contains a secret: {text}"
                    );
                }
            }
        }
    }
}
