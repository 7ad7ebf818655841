//! Leonardo.ai (seed 004) as a Leonardo user meets it: create a generation with Leonardo's
//! request body and an API key whose webhook is configured on the key, receive the
//! `image_generation.complete` callback with `authorization: Bearer <callback key>` carrying
//! every field of the seed's sample, and poll `GET /api/rest/v1/generations/{id}`.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{Value, json};
use webhook_service::auth::KeySpec;
use webhook_service::domain::{KeyWebhook, Secret};

use crate::support;
use support::receiver::Receiver;
use support::service::{Service, create_key_in, test_config_with_auth};

const GENERATIONS: &str = "/api/rest/v1/generations";
const CALLBACK_KEY: &str = "cb-9f4e2d71-never-in-a-body";
const SCHEDULERS: [&str; 7] = [
    "KLMS",
    "EULER_ANCESTRAL_DISCRETE",
    "EULER_DISCRETE",
    "DDIM",
    "DPM_SOLVER",
    "PNDM",
    "LEONARDO",
];

/// The keys of the seed's sample callback, object by object (from
/// `shared/seeds/004_e9d30424f24adaa4.txt`).
const TOP_KEYS: &[&str] = &["type", "object", "timestamp", "api_version", "data"];
const GENERATION_KEYS: &[&str] = &[
    "id",
    "createdAt",
    "updatedAt",
    "userId",
    "public",
    "flagged",
    "nsfw",
    "status",
    "coreModel",
    "guidanceScale",
    "imageHeight",
    "imageWidth",
    "inferenceSteps",
    "initGeneratedImageId",
    "initImageId",
    "initStrength",
    "initType",
    "initUpscaledImageId",
    "modelId",
    "negativePrompt",
    "prompt",
    "quantity",
    "sdVersion",
    "tiling",
    "imageAspectRatio",
    "tokenCost",
    "negativeStylePrompt",
    "seed",
    "scheduler",
    "presetStyle",
    "promptMagic",
    "canvasInitImageId",
    "canvasMaskImageId",
    "canvasRequest",
    "api",
    "poseImage2Image",
    "imagePromptStrength",
    "category",
    "poseImage2ImageType",
    "highContrast",
    "apiDollarCost",
    "poseImage2ImageWeight",
    "alchemy",
    "contrastRatio",
    "highResolution",
    "expandedDomain",
    "promptMagicVersion",
    "unzoom",
    "unzoomAmount",
    "apiKeyId",
    "photoReal",
    "promptMagicStrength",
    "photoRealStrength",
    "imageToImage",
    "controlnetsUsed",
    "model",
    "images",
    "apiKey",
];
const MODEL_KEYS: &[&str] = &[
    "id",
    "createdAt",
    "updatedAt",
    "name",
    "description",
    "public",
    "userId",
    "flagged",
    "nsfw",
    "official",
    "status",
    "classPrompt",
    "coreModel",
    "initDatasetId",
    "instancePrompt",
    "sdVersion",
    "trainingEpoch",
    "trainingSteps",
    "tokenCost",
    "batchSize",
    "learningRate",
    "type",
    "modelHeight",
    "modelWidth",
    "leonardoInstancePrompt",
    "trainingStrength",
    "featured",
    "featuredImageId",
    "featuredPosition",
    "api",
    "favouriteCount",
    "imageCount",
    "enhancedModeration",
    "apiDollarCost",
    "apiKeyId",
    "modelLRN",
];
const IMAGE_KEYS: &[&str] = &[
    "id",
    "createdAt",
    "updatedAt",
    "userId",
    "url",
    "generationId",
    "nobgId",
    "nsfw",
    "likeCount",
    "trendingScore",
    "public",
];
const API_KEY_KEYS: &[&str] = &[
    "id",
    "createdAt",
    "userId",
    "key",
    "lastUsed",
    "name",
    "type",
    "webhookCallbackUrl",
    "webhookCallbackApiKey",
];

/// The seed's key set as paths (`data.object.images[].id`).
fn seed_paths() -> BTreeSet<String> {
    let mut paths = BTreeSet::new();
    let mut add =
        |prefix: &str, keys: &[&str]| paths.extend(keys.iter().map(|k| format!("{prefix}{k}")));
    add("", TOP_KEYS);
    add("data.", &["object"]);
    add("data.object.", GENERATION_KEYS);
    add("data.object.model.", MODEL_KEYS);
    add("data.object.images[].", IMAGE_KEYS);
    add("data.object.apiKey.", API_KEY_KEYS);
    paths
}

/// Every object key path of `value`; arrays contribute their items' keys under `[]`.
fn key_paths(value: &Value, prefix: &str, out: &mut BTreeSet<String>) {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                let path = format!("{prefix}{key}");
                key_paths(child, &format!("{path}."), out);
                out.insert(path);
            }
        }
        Value::Array(items) => {
            for item in items {
                key_paths(item, &format!("{}[].", prefix.trim_end_matches('.')), out);
            }
        }
        _ => {}
    }
}

fn paths_of(value: &Value) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    key_paths(value, "", &mut out);
    out
}

fn is_uuid(value: &Value) -> bool {
    value
        .as_str()
        .is_some_and(|s| uuid::Uuid::parse_str(s).is_ok_and(|u| u.hyphenated().to_string() == s))
}

async fn start(receiver: Option<&Receiver>) -> Service {
    let (inference, _) = support::inference::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config_with_auth(&dir, inference);
    config.allow_http = false;
    config.ca_pem = receiver.map(Receiver::ca_pem);
    Service::start(config, dir).await
}

async fn key_with_webhook(service: &Service, name: &str, url: String) -> String {
    let webhook = KeyWebhook {
        url,
        secret: Some(Secret::new(CALLBACK_KEY)),
    };
    create_key_in(
        &service.dir.path().join("jobs.db"),
        KeySpec {
            name: name.into(),
            webhook: Some(webhook),
            ..Default::default()
        },
    )
    .await
}

async fn post(service: &Service, key: Option<&str>, body: &Value) -> (u16, Value) {
    let mut request = support::http()
        .post(format!("http://{}{GENERATIONS}", service.http))
        .json(body);
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    let response = request.send().await.unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

async fn get(service: &Service, key: Option<&str>, id: &str) -> (u16, Value) {
    let mut request = support::http().get(format!("http://{}{GENERATIONS}/{id}", service.http));
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    let response = request.send().await.unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

/// Polls the GET route until the generation is no longer PENDING (30 s at most).
async fn until_done(service: &Service, key: &str, id: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = get(service, Some(key), id).await;
        assert_eq!(status, 200, "{body}");
        if body["generations_by_pk"]["status"] != "PENDING" {
            return body["generations_by_pk"].clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "generation {id} never finished: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn the_seed_key_set_is_the_transcribed_sample() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/seeds/leonardo.json"
    ))
    .unwrap();
    let sample: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(paths_of(&sample), seed_paths());
}

#[tokio::test]
async fn a_generation_calls_back_the_keys_webhook_with_every_field_of_the_sample() {
    let receiver = Receiver::https().await;
    let service = start(Some(&receiver)).await;
    let hook = receiver.url("/leonardo");
    let key = key_with_webhook(&service, "webhook with key", hook.clone()).await;
    // Leonardo's documented request, with fields sdserve ignores (alchemy, photoReal, ...).
    let request = json!({
        "prompt": "An oil painting of a cat",
        "negative_prompt": "blurry",
        "width": 512,
        "height": 512,
        "num_images": 2,
        "num_inference_steps": 10,
        "guidance_scale": 7,
        "seed": 905778432,
        "scheduler": "EULER_DISCRETE",
        "presetStyle": "LEONARDO",
        "public": false,
        "tiling": false,
        "alchemy": false,
        "photoReal": false,
        "promptMagic": false,
        "init_strength": null,
        "sd_version": "v1_5",
    });
    let (status, created) = post(&service, Some(&key), &request).await;
    assert_eq!(status, 200, "{created}");
    let job = &created["sdGenerationJob"];
    assert!(is_uuid(&job["generationId"]), "{created}");
    assert!(job["apiCreditCost"].is_number(), "{created}");
    let id = job["generationId"].as_str().unwrap().to_owned();

    let seen = receiver.wait_for(1, Duration::from_secs(30)).await;
    let callback = &seen[0];
    assert_eq!(callback.path, "/leonardo");
    assert_eq!(
        callback.header("authorization"),
        Some(format!("Bearer {CALLBACK_KEY}").as_str())
    );
    let text = callback.text();
    assert!(
        !text.contains(CALLBACK_KEY) && !text.contains(&key),
        "a secret is in the body: {text}"
    );
    let body = callback.json();
    assert_eq!(
        paths_of(&body),
        seed_paths(),
        "the callback's keys differ from the seed's sample"
    );

    assert_eq!(
        (
            body["type"].as_str(),
            body["object"].as_str(),
            body["api_version"].as_str()
        ),
        (
            Some("image_generation.complete"),
            Some("generation"),
            Some("v1")
        )
    );
    assert!(body["timestamp"].is_i64());
    let g = &body["data"]["object"];
    assert_eq!(g["id"], id);
    assert_eq!(g["status"], "COMPLETE");
    assert_eq!(
        (g["prompt"].as_str(), g["negativePrompt"].as_str()),
        (Some("An oil painting of a cat"), Some("blurry"))
    );
    assert_eq!(
        (
            g["imageWidth"].as_u64(),
            g["imageHeight"].as_u64(),
            g["inferenceSteps"].as_u64()
        ),
        (Some(512), Some(512), Some(10))
    );
    assert_eq!(
        (
            g["guidanceScale"].as_f64(),
            g["quantity"].as_u64(),
            g["seed"].as_str()
        ),
        (Some(7.0), Some(2), Some("905778432"))
    );
    assert_eq!(
        (g["scheduler"].as_str(), g["presetStyle"].as_str()),
        (Some("EULER_DISCRETE"), Some("LEONARDO"))
    );
    assert!(SCHEDULERS.contains(&g["scheduler"].as_str().unwrap()));
    for path in ["userId", "apiKeyId"] {
        assert!(is_uuid(&g[path]), "{path}: {}", g[path]);
    }
    assert!(
        is_uuid(&g["model"]["id"]) && g["model"]["id"] == g["modelId"],
        "{}",
        g["model"]
    );
    assert_eq!(g["model"]["name"], "tiny-sd1", "the model that ran");
    let images = g["images"].as_array().unwrap();
    assert_eq!(images.len(), 2);
    let ids: BTreeSet<&str> = images.iter().map(|i| i["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 2, "image ids are distinct");
    for image in images {
        assert!(is_uuid(&image["id"]), "{image}");
        assert_eq!(
            (&image["generationId"], &image["userId"]),
            (&g["id"], &g["userId"])
        );
        let png = support::http()
            .get(image["url"].as_str().unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(png.status(), 200, "the image URL serves the image");
    }
    let api_key = &g["apiKey"];
    assert!(
        is_uuid(&api_key["id"])
            && api_key["id"] == g["apiKeyId"]
            && api_key["userId"] == g["userId"]
    );
    assert_eq!(
        (
            api_key["key"].is_null(),
            api_key["webhookCallbackApiKey"].is_null()
        ),
        (true, true)
    );
    assert_eq!(
        (
            api_key["name"].as_str(),
            api_key["webhookCallbackUrl"].as_str()
        ),
        (Some("webhook with key"), Some(hook.as_str()))
    );

    // GET agrees with the callback on every generation field and image id.
    let (status, answer) = get(&service, Some(&key), &id).await;
    assert_eq!(status, 200, "{answer}");
    let by_pk = &answer["generations_by_pk"];
    for (field, value) in g.as_object().unwrap() {
        match field.as_str() {
            "images" | "apiKey" => {}
            "seed" => assert_eq!(by_pk["seed"], 905778432),
            _ => assert_eq!(
                &by_pk[field], value,
                "GET differs from the callback on {field}"
            ),
        }
    }
    let generated = by_pk["generated_images"].as_array().unwrap();
    assert_eq!(generated.len(), 2);
    for (mine, theirs) in generated.iter().zip(images) {
        assert_eq!((&mine["id"], &mine["url"]), (&theirs["id"], &theirs["url"]));
        assert_eq!(
            (mine["nsfw"].as_bool(), mine["likeCount"].as_u64()),
            (Some(false), Some(0))
        );
        assert!(mine.as_object().unwrap().contains_key("motionMP4URL"));
    }
    assert!(by_pk.get("apiKey").is_none());
    service.stop().await;
}

#[tokio::test]
async fn generations_are_private_to_their_key_and_need_one() {
    let receiver = Receiver::https().await;
    let service = start(Some(&receiver)).await;
    let owner = key_with_webhook(&service, "owner", receiver.url("/owner")).await;
    let other = service.create_key("other").await;
    let (status, created) = post(
        &service,
        Some(&owner),
        &json!({"prompt": "a lighthouse", "num_images": 1, "num_inference_steps": 10}),
    )
    .await;
    assert_eq!(status, 200, "{created}");
    let id = created["sdGenerationJob"]["generationId"].as_str().unwrap();
    let (status, body) = get(&service, Some(&other), id).await;
    assert_eq!(status, 404, "{body}");
    assert!(!body.to_string().contains("a lighthouse"));
    assert_eq!(get(&service, None, id).await.0, 401);
    assert_eq!(post(&service, None, &json!({"prompt": "p"})).await.0, 401);
    assert_eq!(
        get(
            &service,
            Some(&owner),
            "0190a6b2-7c1e-7d33-9a51-3f0c2f5e8b12"
        )
        .await
        .0,
        404
    );
    service.stop().await;
}

#[tokio::test]
async fn a_key_without_a_webhook_generates_and_is_polled() {
    let service = start(None).await;
    let key = service.create_key("polling").await;
    // `slow` makes the scripted inference server take 3 s, so the first GET sees it pending.
    let (status, created) = post(
        &service,
        Some(&key),
        &json!({"prompt": "slow", "scheduler": "LEONARDO"}),
    )
    .await;
    assert_eq!(status, 200, "{created}");
    let id = created["sdGenerationJob"]["generationId"].as_str().unwrap();
    let (status, pending) = get(&service, Some(&key), id).await;
    assert_eq!(status, 200, "{pending}");
    let pending = &pending["generations_by_pk"];
    assert_eq!(
        (pending["status"].as_str(), pending["id"].as_str()),
        (Some("PENDING"), Some(id))
    );
    assert_eq!(pending["generated_images"], json!([]));
    assert_eq!(
        (
            pending["quantity"].as_u64(),
            pending["inferenceSteps"].as_u64()
        ),
        (Some(4), Some(15)),
        "Leonardo's defaults"
    );
    assert_eq!(pending["scheduler"], "LEONARDO");

    let done = until_done(&service, &key, id).await;
    assert_eq!(done["status"], "COMPLETE", "{done}");
    let images = done["generated_images"].as_array().unwrap();
    assert_eq!(images.len(), 4);
    assert!(
        images
            .iter()
            .all(|i| is_uuid(&i["id"]) && i["url"].as_str().is_some_and(|u| u.contains(id)))
    );
    assert!(SCHEDULERS.contains(&done["scheduler"].as_str().unwrap()));
    assert_eq!(done["apiKeyId"].as_str().map(str::len), Some(36));
    let again = until_done(&service, &key, id).await;
    assert_eq!(
        again["generated_images"], done["generated_images"],
        "image ids and URLs are stable"
    );
    service.stop().await;
}

#[tokio::test]
async fn a_failed_generation_is_failed_with_the_reason() {
    let receiver = Receiver::https().await;
    let service = start(Some(&receiver)).await;
    let key = key_with_webhook(&service, "failing", receiver.url("/failed")).await;
    let (status, created) = post(
        &service,
        Some(&key),
        &json!({"prompt": "fail", "num_images": 1}),
    )
    .await;
    assert_eq!(status, 200, "{created}");
    let body = receiver.wait_for(1, Duration::from_secs(30)).await[0].json();
    assert_eq!(
        (
            body["type"].as_str(),
            body["data"]["object"]["status"].as_str()
        ),
        (Some("image_generation.failed"), Some("FAILED"))
    );
    assert!(
        body["data"]["object"]["error"]
            .as_str()
            .is_some_and(|e| !e.is_empty()),
        "{body}"
    );
    let id = created["sdGenerationJob"]["generationId"].as_str().unwrap();
    assert_eq!(until_done(&service, &key, id).await["status"], "FAILED");
    service.stop().await;
}

#[tokio::test]
async fn bad_values_are_refused_naming_the_field() {
    let service = start(None).await;
    let key = service.create_key("strict").await;
    let cases = [
        (json!({"num_images": 1}), "prompt"),
        (json!({"prompt": "  "}), "prompt"),
        (json!({"prompt": "p", "num_images": 9}), "num_images"),
        (json!({"prompt": "p", "num_images": 0}), "num_images"),
        (
            json!({"prompt": "p", "width": 1024, "num_images": 5}),
            "num_images",
        ),
        (json!({"prompt": "p", "width": 516}), "width"),
        (json!({"prompt": "p", "height": 1544}), "height"),
        (json!({"prompt": "p", "width": 40}), "width"),
        (
            json!({"prompt": "p", "guidance_scale": 25}),
            "guidance_scale",
        ),
        (
            json!({"prompt": "p", "num_inference_steps": 5}),
            "num_inference_steps",
        ),
        (json!({"prompt": "p", "seed": 9_999_999_998_i64}), "seed"),
        (json!({"prompt": "p", "scheduler": "Euler a"}), "scheduler"),
        (
            json!({"prompt": "p", "presetStyle": "WATERCOLOUR"}),
            "presetStyle",
        ),
        (json!({"prompt": "p", "tiling": true}), "tiling"),
        (
            json!({"prompt": "p", "init_image_id": "3c2a1f0e-0000-4000-8000-000000000000", "init_strength": 0.5}),
            "init_image_id",
        ),
        (
            json!({"prompt": "p", "modelId": "6bef9f1b-29cb-40c7-b9df-32b51c1f67d3"}),
            "modelId",
        ),
    ];
    for (body, field) in cases {
        let (status, answer) = post(&service, Some(&key), &body).await;
        assert_eq!(status, 422, "{body} → {answer}");
        assert_eq!(answer["error"]["field"], field, "{body} → {answer}");
    }
    let (status, answer) = post(
        &service,
        Some(&key),
        &json!({"prompt": "p", "width": "wide"}),
    )
    .await;
    assert!(
        (400..500).contains(&status)
            && answer["error"]["message"]
                .as_str()
                .unwrap()
                .contains("width"),
        "{answer}"
    );
    service.stop().await;
}
