//! AUTOMATIC1111's API (`/sdapi/v1`): each route's shape and errors, with keys required and
//! sent as A1111 clients send them (HTTP Basic, the key as the password); [`route`] (RunPod's
//! `input.api`) in `routed.rs`; the `webuiapi` client itself in `webuiapi.rs`.

mod fake;
mod routed;
mod webuiapi;

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use serde_json::{Value, json};

use crate::support::http;
use crate::support::service::{Service, test_config_with_auth};
use fake::Fake;

/// A service with keys required, in front of the A1111 fake, and one key.
struct A1111 {
    service: Service,
    fake: Arc<Fake>,
    key: String,
    client: reqwest::Client,
}

impl A1111 {
    async fn start() -> Self {
        Self::start_with(|config| config).await
    }

    async fn start_with(
        adjust: impl FnOnce(webhook_service::Config) -> webhook_service::Config,
    ) -> Self {
        let (inference, fake) = fake::start().await;
        let dir = tempfile::tempdir().unwrap();
        let service = Service::start(adjust(test_config_with_auth(&dir, inference)), dir).await;
        let key = service.create_key("a1111").await;
        Self {
            service,
            fake,
            key,
            client: http(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.service.http)
    }

    /// Sends a request with `key` as the Basic password (None: no credential); status and JSON body.
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
        key: Option<&str>,
    ) -> (u16, Value) {
        let mut request = self.client.request(method, self.url(path));
        if let Some(key) = key {
            request = request.basic_auth("user", Some(key));
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {text}")),
        )
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.send(reqwest::Method::GET, path, None, Some(&self.key))
            .await
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.send(reqwest::Method::POST, path, Some(body), Some(&self.key))
            .await
    }
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn unb64(text: &Value) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(text.as_str().expect("a base64 string"))
        .expect("base64")
}

/// The field an error body names.
fn field(body: &Value) -> &str {
    body["error"]["field"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn every_route_needs_a_key() {
    let a = A1111::start().await;
    let routes = [
        ("POST", "/sdapi/v1/txt2img"),
        ("POST", "/sdapi/v1/img2img"),
        ("GET", "/sdapi/v1/samplers"),
        ("GET", "/sdapi/v1/schedulers"),
        ("GET", "/sdapi/v1/sd-models"),
        ("GET", "/sdapi/v1/options"),
        ("POST", "/sdapi/v1/options"),
        ("GET", "/sdapi/v1/progress"),
        ("POST", "/sdapi/v1/interrupt"),
        ("POST", "/sdapi/v1/png-info"),
    ];
    for (method, path) in routes {
        let method: reqwest::Method = method.parse().unwrap();
        let body = (method == reqwest::Method::POST).then(|| json!({"prompt": "a cat"}));
        let (status, _) = a.send(method.clone(), path, body.clone(), None).await;
        assert_eq!(status, 401, "{method} {path} without a key");
        let (status, _) = a
            .send(method.clone(), path, body, Some("sds_not_a_key"))
            .await;
        assert_eq!(status, 401, "{method} {path} with a wrong key");
    }
    assert!(
        a.fake.seen.lock().unwrap().is_empty(),
        "nothing was generated without a key"
    );
}

#[tokio::test]
async fn txt2img_answers_images_parameters_and_info_as_a1111() {
    let a = A1111::start().await;
    let (status, body) =
        a.post("/sdapi/v1/txt2img", json!({"prompt": "a cat", "steps": 4, "width": 64, "height": 64, "batch_size": 2, "seed": 7})).await;
    assert_eq!(status, 200, "{body}");
    let images = body["images"].as_array().unwrap();
    assert_eq!(images.len(), 2);
    for image in images {
        assert!(
            unb64(image).starts_with(b"\x89PNG"),
            "each image is a base64 PNG"
        );
    }
    let parameters = &body["parameters"];
    assert_eq!(
        (
            parameters["prompt"].clone(),
            parameters["steps"].clone(),
            parameters["batch_size"].clone()
        ),
        (json!("a cat"), json!(4), json!(2))
    );
    // A1111's defaults for what the request left out.
    assert_eq!(
        (
            parameters["sampler_name"].clone(),
            parameters["sampler_index"].clone()
        ),
        (Value::Null, json!("Euler"))
    );
    assert_eq!(
        (
            parameters["enable_hr"].clone(),
            parameters["cfg_scale"].clone(),
            parameters["n_iter"].clone()
        ),
        (json!(false), json!(7), json!(1))
    );
    let info: Value =
        serde_json::from_str(body["info"].as_str().expect("info is a JSON string")).unwrap();
    assert_eq!(
        (info["prompt"].clone(), info["seed"].clone()),
        (json!("a cat"), json!(7))
    );
    let sent = a.fake.last();
    assert_eq!(
        (sent.steps, sent.sampler_name.as_str(), sent.model.as_str()),
        (Some(4), "Euler", "")
    );
    assert!(sent.init_image.is_empty() && sent.denoising_strength.is_none());

    // Without steps or sampler A1111 runs 50 steps of Euler; aliases are A1111's names.
    let (status, body) = a
        .post(
            "/sdapi/v1/txt2img",
            json!({"prompt": "a dog", "sampler_index": "k_euler_a"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["parameters"]["steps"], 50);
    assert_eq!(
        (a.fake.last().steps, a.fake.last().sampler_name),
        (Some(50), "Euler a".to_owned())
    );
}

#[tokio::test]
async fn img2img_takes_base64_or_a_data_url() {
    let a = A1111::start().await;
    let init = fake::png_with_text(16, &[]);
    for image in [b64(&init), format!("data:image/png;base64,{}", b64(&init))] {
        let (status, body) = a
            .post(
                "/sdapi/v1/img2img",
                json!({"prompt": "a cat", "steps": 3, "init_images": [image]}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["images"].as_array().unwrap().len(), 1);
        assert_eq!(
            (
                body["parameters"]["init_images"].clone(),
                body["parameters"]["denoising_strength"].clone()
            ),
            (Value::Null, json!(0.75))
        );
        let sent = a.fake.last();
        assert_eq!(
            (sent.init_image, sent.denoising_strength),
            (init.clone(), Some(0.75))
        );
    }
    let (status, body) = a
        .post("/sdapi/v1/img2img", json!({"prompt": "a cat"}))
        .await;
    assert_eq!((status, field(&body)), (422, "body.init_images"), "{body}");
    let (status, body) = a
        .post("/sdapi/v1/img2img", json!({"init_images": ["not base64!"]}))
        .await;
    assert_eq!(
        (status, field(&body)),
        (422, "body.init_images[0]"),
        "{body}"
    );
    let (status, body) = a
        .post(
            "/sdapi/v1/img2img",
            json!({"init_images": [b64(&init)], "mask": b64(&init)}),
        )
        .await;
    assert_eq!((status, field(&body)), (422, "body.mask"), "{body}");
}

#[tokio::test]
async fn bad_requests_name_the_a1111_field() {
    let a = A1111::start().await;
    for (request, expected) in [
        (json!({"steps": 500}), "body.steps"),
        (json!({"width": 65}), "body.width"),
        (json!({"enable_hr": true}), "body.enable_hr"),
        (
            json!({"alwayson_scripts": {"ControlNet": {"args": []}}}),
            "body.alwayson_scripts",
        ),
        (
            json!({"override_settings": {"sd_model_checkpoint": "sdxl"}}),
            "body.override_settings.sd_model_checkpoint",
        ),
    ] {
        let (status, body) = a.post("/sdapi/v1/txt2img", request.clone()).await;
        assert_eq!(
            (status, field(&body)),
            (422, expected),
            "{request} → {body}"
        );
    }
    let (_, body) = a
        .post(
            "/sdapi/v1/txt2img",
            json!({"override_settings": {"sd_model_checkpoint": "sdxl"}}),
        )
        .await;
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("tiny-sd1 [abc1234567]"),
        "names the served models: {body}"
    );
    let (status, _) = a.post("/sdapi/v1/txt2img", json!({"steps": "many"})).await;
    assert_eq!(status, 400, "a wrongly typed field");
    assert!(
        a.fake.seen.lock().unwrap().is_empty(),
        "refused requests are not generated"
    );
}

#[tokio::test]
async fn failed_and_refused_generations_are_json_errors_with_the_reason() {
    let a = A1111::start().await;
    let (status, body) = a
        .post("/sdapi/v1/txt2img", json!({"prompt": "fail", "steps": 2}))
        .await;
    assert_eq!(status, 500, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("out of memory"),
        "{body}"
    );
    let (status, body) = a
        .post("/sdapi/v1/txt2img", json!({"prompt": "reject", "steps": 2}))
        .await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("unknown sampler"),
        "{body}"
    );
}

#[tokio::test]
async fn samplers_schedulers_and_models_are_listed_as_a1111_lists_them() {
    let a = A1111::start().await;
    let (status, samplers) = a.get("/sdapi/v1/samplers").await;
    assert_eq!(status, 200);
    let euler_a = samplers
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "Euler a")
        .expect("Euler a");
    assert_eq!(
        euler_a,
        &json!({"name": "Euler a", "aliases": ["k_euler_a", "k_euler_ancestral"], "options": {"uses_ensd": "True"}})
    );
    assert_eq!(samplers.as_array().unwrap().len(), 13);

    let (status, schedulers) = a.get("/sdapi/v1/schedulers").await;
    assert_eq!(status, 200);
    let labels: Vec<&str> = schedulers
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["label"].as_str().unwrap())
        .collect();
    assert_eq!(
        labels,
        [
            "Automatic",
            "Uniform",
            "Karras",
            "Exponential",
            "SGM Uniform"
        ]
    );
    assert_eq!(
        schedulers[2],
        json!({"name": "karras", "label": "Karras", "aliases": null, "default_rho": 7.0, "need_inner_model": false})
    );

    let (status, models) = a.get("/sdapi/v1/sd-models").await;
    assert_eq!(status, 200);
    assert_eq!(
        models,
        json!([
            {"title": "tiny-sd1 [abc1234567]", "model_name": "tiny-sd1", "hash": "abc1234567", "sha256": null,
             "filename": "/models/tiny-sd1.safetensors", "config": null},
            {"title": "other-sd2", "model_name": "other-sd2", "hash": null, "sha256": null, "filename": "/models/other-sd2", "config": null},
        ])
    );
}

#[tokio::test]
async fn sd_models_is_503_when_the_inference_server_cannot_be_asked() {
    // Nothing listens on the inference address.
    let unused = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let service = Service::start(test_config_with_auth(&dir, unused), dir).await;
    let key = service.create_key("a1111").await;
    let response = http()
        .get(format!("http://{}/sdapi/v1/sd-models", service.http))
        .basic_auth("u", Some(&key))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 503);
    let body: Value = response.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("inference server"),
        "{body}"
    );
}

#[tokio::test]
async fn options_switch_the_callers_model_and_only_the_callers() {
    let a = A1111::start().await;
    let (status, options) = a.get("/sdapi/v1/options").await;
    assert_eq!(status, 200);
    assert_eq!(
        options["sd_model_checkpoint"], "tiny-sd1 [abc1234567]",
        "the server's default first"
    );
    for key in [
        "sd_checkpoint_hash",
        "CLIP_stop_at_last_layers",
        "samples_format",
    ] {
        assert!(options.get(key).is_some(), "options has {key}: {options}");
    }

    let (status, body) = a
        .post(
            "/sdapi/v1/options",
            json!({"sd_model_checkpoint": "other-sd2"}),
        )
        .await;
    assert_eq!((status, body), (200, Value::Null));
    assert_eq!(
        a.get("/sdapi/v1/options").await.1["sd_model_checkpoint"],
        "other-sd2"
    );
    let (status, body) = a
        .post("/sdapi/v1/txt2img", json!({"prompt": "a cat", "steps": 2}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        a.fake.last().model,
        "other-sd2",
        "later calls use the chosen model"
    );
    a.post("/sdapi/v1/txt2img", json!({"prompt": "a cat", "steps": 2, "override_settings": {"sd_model_checkpoint": "tiny-sd1 [abc1234567]"}})).await;
    assert_eq!(a.fake.last().model, "tiny-sd1", "an override wins");

    // Another key keeps the default.
    let other = a.service.create_key("other").await;
    let (_, theirs) = a
        .send(
            reqwest::Method::GET,
            "/sdapi/v1/options",
            None,
            Some(&other),
        )
        .await;
    assert_eq!(theirs["sd_model_checkpoint"], "tiny-sd1 [abc1234567]");

    let (status, body) = a
        .post("/sdapi/v1/options", json!({"sd_model_checkpoint": "sdxl"}))
        .await;
    assert_eq!((status, field(&body)), (422, "body.sd_model_checkpoint"));
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("other-sd2"),
        "names the served models: {body}"
    );
    let (status, body) = a
        .post("/sdapi/v1/options", json!({"samples_format": "jpg"}))
        .await;
    assert_eq!((status, field(&body)), (422, "body.samples_format"));
    let (status, _) = a
        .post("/sdapi/v1/options", json!({"samples_format": "png"}))
        .await;
    assert_eq!(status, 200, "setting an option to its value is accepted");
}

#[tokio::test]
async fn progress_previews_interrupt_and_the_sync_deadline() {
    let a = A1111::start_with(|c| webhook_service::Config {
        sync_wait: Duration::from_secs(1),
        ..c
    })
    .await;
    let idle = json!({"progress": 0.0, "eta_relative": 0.0, "current_image": null, "textinfo": null,
        "state": {"skipped": false, "interrupted": false, "stopping_generation": false, "job": "", "job_count": 0,
                  "job_timestamp": "0", "job_no": 0, "sampling_step": 0, "sampling_steps": 0}});
    assert_eq!(a.get("/sdapi/v1/progress").await, (200, idle.clone()));

    // `hold` runs 5 of 10 steps and stays running: the call answers 504 at the deadline.
    let (status, body) = a
        .post("/sdapi/v1/txt2img", json!({"prompt": "hold", "steps": 10}))
        .await;
    assert_eq!(status, 504, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    let id = message.split_whitespace().nth(1).unwrap();
    assert!(message.contains("keeps running"), "{message}");

    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let progress = loop {
        let (_, progress) = a.get("/sdapi/v1/progress").await;
        if !progress["current_image"].is_null() && progress["progress"] == 0.5 {
            break progress;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no preview: {progress}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(unb64(&progress["current_image"]).starts_with(b"\x89PNG"));
    assert_eq!(progress["progress"], 0.5);
    let state = &progress["state"];
    assert_eq!(
        (
            state["job_count"].clone(),
            state["sampling_step"].clone(),
            state["sampling_steps"].clone()
        ),
        (json!(1), json!(5), json!(10))
    );
    assert_eq!(
        (
            state["job"].clone(),
            state["job_timestamp"].as_str().unwrap().len()
        ),
        (json!("scripts_txt2img"), 14)
    );
    let (_, skipped) = a.get("/sdapi/v1/progress?skip_current_image=true").await;
    assert!(skipped["current_image"].is_null() && skipped["progress"] == 0.5);

    // Another key sees nothing of it, and cannot interrupt it.
    let other = a.service.create_key("other").await;
    assert_eq!(
        a.send(
            reqwest::Method::GET,
            "/sdapi/v1/progress",
            None,
            Some(&other)
        )
        .await,
        (200, idle.clone())
    );
    assert_eq!(
        a.send(
            reqwest::Method::POST,
            "/sdapi/v1/interrupt",
            None,
            Some(&other)
        )
        .await,
        (200, json!({}))
    );
    assert_eq!(a.get("/sdapi/v1/progress").await.1["progress"], 0.5);

    assert_eq!(
        a.send(
            reqwest::Method::POST,
            "/sdapi/v1/interrupt",
            None,
            Some(&a.key)
        )
        .await,
        (200, json!({}))
    );
    assert_eq!(a.get("/sdapi/v1/progress").await, (200, idle));
    let job = a
        .client
        .get(a.url(&format!("/v1/jobs/{id}")))
        .bearer_auth(&a.key)
        .send()
        .await
        .unwrap();
    assert_eq!(job.json::<Value>().await.unwrap()["status"], "canceled");
}

#[tokio::test]
async fn png_info_reads_the_chunks_and_parses_the_infotext() {
    let a = A1111::start().await;
    let (_, generated) = a.post("/sdapi/v1/txt2img", json!({"prompt": "a cat, sitting", "negative_prompt": "dogs", "steps": 4, "width": 64, "height": 128})).await;
    let image = generated["images"][0].clone();
    let (status, info) = a.post("/sdapi/v1/png-info", json!({"image": image})).await;
    assert_eq!(status, 200, "{info}");
    assert!(
        info["info"]
            .as_str()
            .unwrap()
            .starts_with("a cat, sitting\nNegative prompt: dogs\nSteps: 4, Sampler: Euler,")
    );
    assert_eq!(
        info["items"],
        json!({}),
        "parameters is not repeated in items"
    );
    let p = &info["parameters"];
    for (key, value) in [
        ("Prompt", "a cat, sitting"),
        ("Negative prompt", "dogs"),
        ("Steps", "4"),
        ("Sampler", "Euler"),
        ("CFG scale", "7.0"),
        ("Seed", "1234"),
        ("Size-1", "64"),
        ("Size-2", "128"),
        ("Model", "tiny-sd1"),
    ] {
        assert_eq!(p[key], value, "{key} in {p}");
    }

    // A PNG with other chunks, one of them UTF-8 (iTXt), sent as a data URL.
    let png = fake::png_with_text(
        4,
        &[
            (
                "parameters",
                "a tree\nSteps: 9, Seed: 5, Size: 8x16, Model: m",
            ),
            ("Software", "ünïcode app"),
            ("Comment", "hi"),
        ],
    );
    let (status, info) = a
        .post(
            "/sdapi/v1/png-info",
            json!({"image": format!("data:image/png;base64,{}", b64(&png))}),
        )
        .await;
    assert_eq!(status, 200, "{info}");
    assert_eq!(
        info["items"],
        json!({"Software": "ünïcode app", "Comment": "hi"})
    );
    assert_eq!(
        (
            info["parameters"]["Prompt"].clone(),
            info["parameters"]["Steps"].clone(),
            info["parameters"]["Size-2"].clone()
        ),
        (json!("a tree"), json!("9"), json!("16"))
    );

    let (status, body) = a
        .post(
            "/sdapi/v1/png-info",
            json!({"image": b64(b"GIF89a not a png")}),
        )
        .await;
    assert_eq!((status, field(&body)), (422, "body.image"));
    assert_eq!(
        a.post("/sdapi/v1/png-info", json!({"image": ""})).await,
        (200, json!({"info": "", "items": {}, "parameters": {}}))
    );
}
