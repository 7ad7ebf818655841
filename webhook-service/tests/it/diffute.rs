//! Diffute (seed 002) over HTTP with keys required: the seed's inference request sent unchanged
//! (its JSON's missing braces restored), one job for its three prompts, one manifest keyed by
//! the prompt names, the secret in `Authentication` and `Authorization`.

use crate::support;

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use support::inference::FakeInference;
use support::receiver::Receiver;
use support::service::{Service, test_config_with_auth};

const SECRET: &str = "4f986e48-0129-480e-996a-728ea57c020c";
const NAMES: [&str; 3] = ["Ansel_Adams", "Henri_Rousseau", "Rachel_Ruysch"];

/// The seed's request body.
fn seed_body() -> Value {
    json!({
      "prompts": [
        {
          "name": "Ansel_Adams",
          "prompt": "A series of black and white photographs capturing the beauty and grandeur of Yosemite National Park",
          "num_images": 3,
          "height": 1024,
          "width": 768,
          "style": "photography in the style of Ansel Adams"
        },
        {
          "name": "Henri_Rousseau",
          "prompt": "A painting of a lush jungle scene with a variety of exotic plants and animals",
          "num_images": 3,
          "height": 1024,
          "width": 768,
          "style": "painting in the style of Henri Rousseau"
        },
        {
          "name": "Rachel_Ruysch",
          "prompt": "Still life painting featuring a variety of flowers and plants found in a garden",
          "num_images": 3,
          "height": 1024,
          "width": 768,
          "style": "painting in the style of Rachel Ruysch"
        }
      ],
      "webhook" : "",
      "secret" : SECRET,
      "pretrained_model_name" : "stabilityai/stable-diffusion-xl-base-1.0",
      "name" : "Houston"
    })
}

async fn start() -> (Service, Arc<FakeInference>, String) {
    let (inference, fake) = support::inference::start().await;
    let dir = tempfile::tempdir().unwrap();
    let service = Service::start(test_config_with_auth(&dir, inference), dir).await;
    let key = service.create_key("diffute").await;
    (service, fake, key)
}

async fn send(
    service: &Service,
    method: reqwest::Method,
    path: &str,
    key: Option<&str>,
    body: Option<&Value>,
) -> (u16, Value) {
    let mut request = support::http().request(method, format!("http://{}{path}", service.http));
    if let Some(key) = key {
        request = request.header("x-api-key", key);
    }
    if let Some(body) = body {
        request = request.json(body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

async fn put(service: &Service, key: &str, body: &Value) -> (u16, Value) {
    send(
        service,
        reqwest::Method::PUT,
        "/acme/yosemite/media/inference",
        Some(key),
        Some(body),
    )
    .await
}

/// Checks a manifest: exactly the three prompt keys with 3 URLs each that fetch PNGs, `name`
/// and `job_id`.
async fn check_manifest(manifest: &Value, job_id: &str) {
    let mut keys: Vec<&str> = manifest
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "Ansel_Adams",
            "Henri_Rousseau",
            "Rachel_Ruysch",
            "job_id",
            "name"
        ],
        "{manifest}"
    );
    assert_eq!(
        (manifest["name"].as_str(), manifest["job_id"].as_str()),
        (Some("Houston"), Some(job_id))
    );
    for (p, name) in NAMES.iter().enumerate() {
        let urls = manifest[name].as_array().unwrap();
        assert_eq!(urls.len(), 3, "{name}: {manifest}");
        for (i, url) in urls.iter().enumerate() {
            let url = url.as_str().unwrap();
            // The job's images are numbered on across its prompts.
            assert!(
                url.contains(&format!("/media/{job_id}/{}", p * 3 + i)),
                "{url}"
            );
            let response = support::http().get(url).send().await.unwrap();
            assert_eq!(response.status(), 200, "{url}");
            assert_eq!(response.headers()["content-type"], "image/png");
            assert!(
                response
                    .bytes()
                    .await
                    .unwrap()
                    .starts_with(b"\x89PNG\r\n\x1a\n")
            );
        }
    }
}

#[tokio::test]
async fn the_seed_request_without_a_webhook_runs_and_its_manifest_can_be_fetched() {
    let (service, fake, key) = start().await;
    let (status, answer) = put(&service, &key, &seed_body()).await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(
        (answer["name"].as_str(), answer["status"].as_str()),
        (Some("Houston"), Some("queued"))
    );
    assert_eq!(answer["prompts"], json!(NAMES));
    // SDXL is not served: the default model runs, and the answer says so.
    assert_eq!(answer["model"], "tiny-sd1");
    let warning = answer["warnings"][0].as_str().unwrap();
    assert!(
        warning.contains("stabilityai/stable-diffusion-xl-base-1.0")
            && warning.contains("tiny-sd1"),
        "{warning}"
    );
    let job_id = answer["job_id"].as_str().unwrap().to_owned();

    let path = format!("/acme/yosemite/media/inference/{job_id}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let manifest = loop {
        let (status, body) = send(&service, reqwest::Method::GET, &path, Some(&key), None).await;
        match status {
            200 => break body,
            202 => assert!(
                body["status"] == "queued" || body["status"] == "running",
                "{body}"
            ),
            _ => panic!("{status}: {body}"),
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the job never finished: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    check_manifest(&manifest, &job_id).await;

    // Each prompt ran once, in order, with its style appended and its size and count.
    let received = fake.received.lock().unwrap().clone();
    let prompts: Vec<&str> = received.iter().map(|p| p.prompt.as_str()).collect();
    assert_eq!(
        prompts,
        [
            "A series of black and white photographs capturing the beauty and grandeur of Yosemite National Park, photography in the style of Ansel Adams",
            "A painting of a lush jungle scene with a variety of exotic plants and animals, painting in the style of Henri Rousseau",
            "Still life painting featuring a variety of flowers and plants found in a garden, painting in the style of Rachel Ruysch",
        ]
    );
    assert!(
        received
            .iter()
            .all(|p| p.batch_size == Some(3) && p.width == Some(768) && p.height == Some(1024))
    );

    // No webhook, no callback; another project's path does not show the job.
    let (status, deliveries) = send(
        &service,
        reqwest::Method::GET,
        &format!("/v1/jobs/{job_id}/deliveries"),
        Some(&key),
        None,
    )
    .await;
    assert_eq!(
        (status, deliveries["deliveries"].as_array().unwrap().len()),
        (200, 0)
    );
    let (status, _) = send(
        &service,
        reqwest::Method::GET,
        &format!("/acme/other/media/inference/{job_id}"),
        Some(&key),
        None,
    )
    .await;
    assert_eq!(status, 404);
    service.stop().await;
}

#[tokio::test]
async fn the_seed_request_with_a_webhook_sends_one_manifest_with_the_secret_in_both_headers() {
    let (service, _, key) = start().await;
    let receiver = Receiver::http().await;
    let mut body = seed_body();
    body["webhook"] = json!(receiver.url("/diffute"));
    let (status, answer) = put(&service, &key, &body).await;
    assert_eq!(status, 202, "{answer}");
    let job_id = answer["job_id"].as_str().unwrap().to_owned();

    let callback = receiver
        .wait_for(1, Duration::from_secs(20))
        .await
        .remove(0);
    assert_eq!(
        callback.header("authentication"),
        Some(format!("Bearer {SECRET}").as_str())
    );
    assert_eq!(
        callback.header("authorization"),
        Some(format!("Bearer {SECRET}").as_str())
    );
    assert!(
        !callback.text().contains(SECRET),
        "the secret leaked into the body"
    );
    check_manifest(&callback.json(), &job_id).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.requests().len(), 1, "one callback for all prompts");
    service.stop().await;
}

/// A change to the seed's body.
type Mutation = fn(&mut Value);

#[tokio::test]
async fn field_errors_name_the_diffute_field_and_a_key_is_required() {
    let (service, fake, key) = start().await;
    let cases: [(Mutation, &str); 6] = [
        (
            |b| b["prompts"][1]["num_images"] = json!(0),
            "prompts[1].num_images",
        ),
        (
            |b| b["prompts"][2]["width"] = json!(770),
            "prompts[2].width",
        ),
        (
            |b| b["prompts"][0]["height"] = json!(4096),
            "prompts[0].height",
        ),
        (
            |b| b["prompts"][2]["name"] = json!("Ansel_Adams"),
            "prompts[2].name",
        ),
        (
            |b| b["webhook"] = json!("ftp://hooks.example.com/x"),
            "webhook",
        ),
        (|b| b["secret"] = json!("has a space"), "secret"),
    ];
    for (mutate, field) in cases {
        let mut body = seed_body();
        mutate(&mut body);
        let (status, answer) = put(&service, &key, &body).await;
        assert_eq!(status, 422, "{field}: {answer}");
        assert_eq!(answer["error"]["field"], field, "{answer}");
        assert!(
            answer["error"]["message"]
                .as_str()
                .unwrap()
                .starts_with(&format!("{field}: ")),
            "{answer}"
        );
    }
    let (status, answer) = send(
        &service,
        reqwest::Method::PUT,
        "/acme/yosemite/media/inference",
        None,
        Some(&seed_body()),
    )
    .await;
    assert_eq!(status, 401, "{answer}");
    let (status, _) = put(&service, "long-api-key/default", &seed_body()).await;
    assert_eq!(status, 401);
    assert!(
        fake.received.lock().unwrap().is_empty(),
        "a refused request reached the inference server"
    );
    service.stop().await;
}
