//! Cerebrium (seed 003) over HTTP with keys required: the seed's curl body sent unchanged to
//! `/{model}/predict` and its `/cerebrium/` alias, with and without `webhook_endpoint`.

use crate::support;

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use serde_json::{Value, json};
use support::inference::FakeInference;
use support::receiver::Receiver;
use support::service::{Service, test_config_with_auth};
use webhook_service::Config;

/// The seed's body (its webhook URL replaced by the test's receiver where one is used).
const SEED_PROMPT: &str = "An astronaut riding a horse in space";

async fn start_with(adjust: impl FnOnce(&mut Config)) -> (Service, Arc<FakeInference>, String) {
    let (inference, fake) = support::inference::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config_with_auth(&dir, inference);
    adjust(&mut config);
    let service = Service::start(config, dir).await;
    let key = service.create_key("cerebrium").await;
    (service, fake, key)
}

/// POSTs `body` to `path` with Cerebrium's bare `Authorization: <key>`.
async fn post(service: &Service, path: &str, key: Option<&str>, body: &Value) -> (u16, Value) {
    let mut request = support::http()
        .post(format!("http://{}{path}", service.http))
        .json(body);
    if let Some(key) = key {
        request = request.header("authorization", key);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

fn decode_png(b64: &Value) -> Vec<u8> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64.as_str().unwrap())
        .unwrap();
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    bytes
}

#[tokio::test]
async fn the_seed_request_with_a_webhook_answers_at_once_and_calls_back() {
    let (service, fake, key) = start_with(|_| {}).await;
    let receiver = Receiver::http().await;
    let body = json!({"prompt": SEED_PROMPT, "webhook_endpoint": receiver.url("/hook")});
    let mut run_ids = Vec::new();
    for path in ["/tiny-sd1/predict", "/cerebrium/tiny-sd1/predict"] {
        let (status, answer) = post(&service, path, Some(&key), &body).await;
        assert_eq!(status, 202, "{path}: {answer}");
        assert_eq!(
            answer["message"],
            "We will return the images to the endpoint provided when the task is complete."
        );
        assert_eq!(answer.as_object().unwrap().len(), 2, "{answer}");
        run_ids.push(answer["run_id"].as_str().unwrap().to_owned());
    }
    let mut callbacks: Vec<Value> = receiver
        .wait_for(2, Duration::from_secs(20))
        .await
        .iter()
        .map(|r| r.json())
        .collect();
    callbacks.sort_by_key(|c| run_ids.iter().position(|id| c["run_id"] == *id));
    for (callback, run_id) in callbacks.iter().zip(&run_ids) {
        assert_eq!(callback["run_id"], *run_id);
        assert_eq!(callback["message"], "Successfully generated images");
        assert!(callback["run_time_ms"].is_f64(), "{callback}");
        assert_eq!(callback["result"].as_array().unwrap().len(), 1);
        decode_png(&callback["result"][0]);
    }
    let received = fake.received.lock().unwrap().clone();
    assert_eq!(received.len(), 2);
    assert!(
        received
            .iter()
            .all(|p| p.prompt == SEED_PROMPT && p.model == "tiny-sd1"),
        "{received:?}"
    );
    service.stop().await;
}

#[tokio::test]
async fn without_a_webhook_the_call_answers_with_the_result() {
    let (service, fake, key) = start_with(|_| {}).await;
    let (status, answer) = post(
        &service,
        "/tiny-sd1/predict",
        Some(&key),
        &json!({"prompt": SEED_PROMPT, "batch_size": 2}),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["message"], "Successfully generated images");
    assert!(
        answer["run_id"].is_string() && answer["run_time_ms"].is_f64(),
        "{answer}"
    );
    let images = answer["result"].as_array().unwrap();
    assert_eq!(images.len(), 2);
    images.iter().for_each(|i| {
        decode_png(i);
    });
    assert_eq!(fake.received.lock().unwrap()[0].model, "tiny-sd1");

    // A failed run: the callback-shaped body with the error, as a 500.
    let (status, answer) = post(
        &service,
        "/cerebrium/tiny-sd1/predict",
        Some(&key),
        &json!({"prompt": "fail"}),
    )
    .await;
    assert_eq!(status, 500, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("out of memory"),
        "{answer}"
    );
    assert_eq!(answer["message"], answer["error"]);
    assert!(
        answer["result"].is_null() && answer["run_id"].is_string(),
        "{answer}"
    );
    service.stop().await;
}

#[tokio::test]
async fn a_run_outlasting_the_wait_bound_is_202_with_its_run_id() {
    let (service, _, key) = start_with(|c| c.sync_wait = Duration::from_millis(500)).await;
    let (status, answer) = post(
        &service,
        "/tiny-sd1/predict",
        Some(&key),
        &json!({"prompt": "slow"}),
    )
    .await;
    assert_eq!(status, 202, "{answer}");
    let run_id = answer["run_id"].as_str().unwrap();
    assert!(
        answer["message"]
            .as_str()
            .unwrap()
            .contains(&format!("/v1/jobs/{run_id}")),
        "{answer}"
    );
    assert!(answer.get("result").is_none(), "{answer}");
    service.stop().await;
}

#[tokio::test]
async fn unknown_models_missing_keys_and_bad_fields_are_refused() {
    let (service, fake, key) = start_with(|_| {}).await;
    let seed = json!({"prompt": SEED_PROMPT, "webhook_endpoint": "https://your-webhook-url.com"});
    for path in [
        "/dreambooth-webhook/predict",
        "/cerebrium/dreambooth-webhook/predict",
    ] {
        let (status, answer) = post(&service, path, Some(&key), &seed).await;
        assert_eq!(status, 404, "{answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("\"dreambooth-webhook\"") && message.contains("tiny-sd1"),
            "{message}"
        );
    }

    let (status, answer) = post(&service, "/tiny-sd1/predict", None, &seed).await;
    assert_eq!(status, 401, "{answer}");
    let (status, _) = post(&service, "/tiny-sd1/predict", Some("sds_not-a-key"), &seed).await;
    assert_eq!(status, 401);

    let (status, answer) = post(
        &service,
        "/tiny-sd1/predict",
        Some(&key),
        &json!({"prompt": "p", "width": 65}),
    )
    .await;
    assert_eq!(status, 422, "{answer}");
    assert_eq!(answer["error"]["field"], "body.width");
    let (status, answer) = post(
        &service,
        "/tiny-sd1/predict",
        Some(&key),
        &json!({"prompt": "p", "webhook_endpoint": "ftp://x/"}),
    )
    .await;
    assert_eq!(status, 422, "{answer}");
    assert_eq!(answer["error"]["field"], "webhook_endpoint");
    assert!(
        fake.received.lock().unwrap().is_empty(),
        "a refused request reached the inference server"
    );
    service.stop().await;
}
