//! RunPod serverless (seeds 000/001) over HTTP, as a RunPod client would use it: `/v2/{id}/run`,
//! `/runsync`, `/status`, `/cancel`, `/health`, `/purge-queue`, `/stream`, with keys required.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use base64::Engine;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support;
use support::inference::{FakeInference, tiny_png};
use support::receiver::Receiver;
use support::service::{Service, test_config_with_auth};

/// A service with keys required, its fake inference server and one caller's key.
struct Env {
    service: Service,
    fake: Arc<FakeInference>,
    key: String,
    http: reqwest::Client,
}

async fn env_with(sync_wait: Duration) -> Env {
    let (inference, fake) = support::inference::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config_with_auth(&dir, inference);
    config.sync_wait = sync_wait;
    let service = Service::start(config, dir).await;
    let key = service.create_key("runpod-caller").await;
    Env {
        service,
        fake,
        key,
        http: support::http(),
    }
}

async fn env() -> Env {
    env_with(Duration::from_secs(20)).await
}

/// The seed's request (`tests/fixtures/seeds/runpod_request.json`: seed 000 with `False` →
/// `false`), sending its callback to `webhook` or, with None, without a `webhook`.
fn seed_request(webhook: Option<&str>) -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/seeds/runpod_request.json"
    );
    let mut request: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    match webhook {
        Some(url) => request["webhook"] = json!(url),
        None => {
            request.as_object_mut().unwrap().remove("webhook");
        }
    }
    request
}

/// A txt2img request for `prompt` with a few steps and extra top-level fields.
fn txt2img(prompt: &str, extra: Value) -> Value {
    let mut body = json!({
        "input": {"api": {"method": "POST", "endpoint": "/sdapi/v1/txt2img"}, "payload": {"prompt": prompt, "steps": 4}},
    });
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

impl Env {
    fn url(&self, path: &str) -> String {
        format!("http://{}/v2/ep-test-1{path}", self.service.http)
    }

    async fn send(&self, request: reqwest::RequestBuilder, key: &str) -> (StatusCode, Value) {
        let response = request
            .header("authorization", format!("Bearer {key}"))
            .send()
            .await
            .unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}")),
        )
    }

    async fn post_as(&self, key: &str, path: &str, body: &Value) -> (StatusCode, Value) {
        self.send(self.http.post(self.url(path)).json(body), key)
            .await
    }

    async fn post(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        self.post_as(&self.key, path, body).await
    }

    async fn get_as(&self, key: &str, path: &str) -> (StatusCode, Value) {
        self.send(self.http.get(self.url(path)), key).await
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.get_as(&self.key, path).await
    }

    /// `/run` that must succeed; returns the job id.
    async fn run(&self, body: &Value) -> String {
        let (status, answer) = self.post("/run", body).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        assert_eq!(answer["status"], "IN_QUEUE", "{answer}");
        answer["id"].as_str().unwrap().to_owned()
    }

    /// Polls `/status/{id}` until its status is `wanted` (30 s at most).
    async fn status_until(&self, id: &str, wanted: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (code, body) = self.get(&format!("/status/{id}")).await;
            assert_eq!(code, StatusCode::OK, "{body}");
            if body["status"] == wanted {
                return body;
            }
            assert!(
                Instant::now() < deadline,
                "job {id} never reached {wanted}: {body}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn keys(object: &Value) -> Vec<&str> {
    let mut keys: Vec<&str> = object
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    keys
}

#[tokio::test]
async fn the_seed_request_runs_end_to_end_and_calls_back_as_documented() {
    let env = env().await;
    let receiver = Receiver::http().await;
    let hook = receiver.url("/runpod-hook");
    let request = seed_request(Some(&hook));
    // RunPod's own header: the key with no scheme.
    let response = env
        .http
        .post(env.url("/run"))
        .header("authorization", &env.key)
        .json(&request)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let accepted: Value = response.json().await.unwrap();
    assert_eq!(keys(&accepted), ["id", "status"]);
    assert_eq!(accepted["status"], "IN_QUEUE");
    let id = accepted["id"].as_str().unwrap();

    let seen = receiver.wait_for(1, Duration::from_secs(30)).await;
    let callback = &seen[0];
    assert_eq!(callback.method, "POST");
    assert_eq!(callback.path, "/runpod-hook");
    assert_eq!(callback.header("content-type"), Some("application/json"));
    assert!(
        callback
            .header("webhook-id")
            .is_some_and(|v| v.starts_with("msg_")),
        "{:?}",
        callback.headers
    );
    assert!(
        callback
            .header("webhook-signature")
            .is_some_and(|v| v.starts_with("v1,")),
        "{:?}",
        callback.headers
    );
    assert_eq!(
        callback.header("authorization"),
        None,
        "no secret was given, so none is sent"
    );
    assert!(
        !callback.text().contains(&env.key),
        "the API key must never reach a callback"
    );

    let body = callback.json();
    assert_eq!(
        keys(&body),
        [
            "delayTime",
            "executionTime",
            "id",
            "input",
            "output",
            "status",
            "webhook"
        ]
    );
    assert_eq!(body["id"], id);
    assert_eq!(body["status"], "COMPLETED");
    assert_eq!(body["webhook"], hook);
    assert_eq!(
        body["input"], request["input"],
        "the callback echoes the request's input"
    );
    assert!(
        body["delayTime"].is_u64() && body["executionTime"].is_u64(),
        "{body}"
    );
    let output = &body["output"];
    assert_eq!(keys(output), ["images", "info", "parameters"]);
    let image = base64::engine::general_purpose::STANDARD
        .decode(output["images"][0].as_str().unwrap())
        .unwrap();
    assert_eq!(image, tiny_png());
    let info: Value =
        serde_json::from_str(output["info"].as_str().expect("info is a JSON string")).unwrap();
    assert_eq!(info["prompt"], "an astronaut riding a horse");
    assert_eq!(output["parameters"]["sampler_name"], "DPM++ SDE Karras");
    assert_eq!(output["parameters"]["steps"], 30);

    // Polling answers with the very object the webhook carried.
    let (code, status) = env.get(&format!("/status/{id}")).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(status, body);
    assert_eq!(env.fake.calls.load(Ordering::SeqCst), 1);
    env.service.stop().await;
}

#[tokio::test]
async fn the_seed_request_without_a_webhook_is_polled_to_its_output() {
    let env = env().await;
    let id = env.run(&seed_request(None)).await;
    let done = env.status_until(&id, "COMPLETED").await;
    assert_eq!(done["id"], id);
    assert_eq!(done["webhook"], Value::Null);
    assert_eq!(done["output"]["images"].as_array().unwrap().len(), 1);
    assert!(done["output"]["info"].is_string(), "{done}");
    // Without `input.api` the input is txt2img's payload, as RunPod's A1111 worker takes it.
    let id = env
        .run(&json!({"input": {"prompt": "a red fox", "steps": 3}}))
        .await;
    let done = env.status_until(&id, "COMPLETED").await;
    assert_eq!(done["output"]["parameters"]["prompt"], "a red fox");
    env.service.stop().await;
}

#[tokio::test]
async fn runsync_answers_with_the_output_within_the_bound() {
    let env = env().await;
    let (code, body) = env
        .post("/runsync", &txt2img("a lighthouse", json!({})))
        .await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "COMPLETED", "{body}");
    assert!(body["id"].is_string());
    assert_eq!(body["output"]["images"].as_array().unwrap().len(), 1);
    env.service.stop().await;
}

#[tokio::test]
async fn runsync_answers_the_status_so_far_when_the_wait_is_short() {
    let env = env().await;
    let started = Instant::now();
    let (code, body) = env
        .post("/runsync?wait=300", &txt2img("slow", json!({})))
        .await;
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "waited {:?}",
        started.elapsed()
    );
    assert_eq!(code, StatusCode::OK, "{body}");
    let status = body["status"].as_str().unwrap();
    assert!(status == "IN_PROGRESS" || status == "IN_QUEUE", "{body}");
    assert!(body.get("output").is_none(), "{body}");
    let id = body["id"].as_str().unwrap();
    let done = env.status_until(id, "COMPLETED").await;
    assert_eq!(done["output"]["images"].as_array().unwrap().len(), 1);
    env.service.stop().await;
}

#[tokio::test]
async fn runsync_never_waits_past_the_service_bound() {
    let env = env_with(Duration::from_millis(400)).await;
    let started = Instant::now();
    let (code, body) = env
        .post("/runsync?wait=60000", &txt2img("slow", json!({})))
        .await;
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "waited {:?}",
        started.elapsed()
    );
    assert_eq!(code, StatusCode::OK, "{body}");
    assert!(
        body["status"] == "IN_PROGRESS" || body["status"] == "IN_QUEUE",
        "{body}"
    );
    let (code, body) = env
        .post("/runsync?wait=soon", &txt2img("a", json!({})))
        .await;
    assert_eq!(code, StatusCode::BAD_REQUEST, "{body}");
    env.service.stop().await;
}

#[tokio::test]
async fn status_and_stream_show_every_state() {
    let env = env().await;
    // Two generation slots: two slow jobs run, the third waits its turn.
    let first = env.run(&txt2img("slow", json!({}))).await;
    let second = env.run(&txt2img("slow", json!({}))).await;
    let running = env.status_until(&first, "IN_PROGRESS").await;
    env.status_until(&second, "IN_PROGRESS").await;
    assert_eq!(
        keys(&running),
        ["delayTime", "executionTime", "id", "status"]
    );
    let third = env.run(&txt2img("third", json!({}))).await;
    let (_, queued) = env.get(&format!("/status/{third}")).await;
    assert_eq!(queued["status"], "IN_QUEUE", "{queued}");
    assert_eq!(
        keys(&queued),
        ["delayTime", "executionTime", "id", "status"]
    );
    assert_eq!(queued["executionTime"], 0);
    let (_, stream) = env.get(&format!("/stream/{third}")).await;
    assert_eq!(stream, json!({"status": "IN_QUEUE", "stream": []}));

    // The fake reports all four steps at once, then takes 3 s to finish.
    let deadline = Instant::now() + Duration::from_secs(2);
    let stream = loop {
        let (code, stream) = env.get(&format!("/stream/{first}")).await;
        assert_eq!(code, StatusCode::OK);
        assert_eq!(stream["status"], "IN_PROGRESS", "{stream}");
        if stream["stream"][0]["output"]["state"]["sampling_step"] == 4 || Instant::now() > deadline
        {
            break stream;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let progress = &stream["stream"][0]["output"];
    assert_eq!(
        progress["state"],
        json!({"sampling_step": 4, "sampling_steps": 4}),
        "{stream}"
    );
    assert_eq!(progress["progress"], 1.0);
    assert_eq!(
        progress["current_image"],
        Value::Null,
        "the fake sends no previews"
    );

    let done = env.status_until(&first, "COMPLETED").await;
    let (_, stream) = env.get(&format!("/stream/{first}")).await;
    assert_eq!(
        stream,
        json!({"status": "COMPLETED", "stream": [{"output": done["output"]}]})
    );
    // POST works as GET does, as RunPod accepts both.
    let (code, posted) = env.post(&format!("/status/{first}"), &json!({})).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(posted, done);
    env.status_until(&third, "COMPLETED").await;

    let failing = env.run(&txt2img("fail", json!({}))).await;
    let failed = env.status_until(&failing, "FAILED").await;
    assert!(
        failed["error"].as_str().unwrap().contains("out of memory"),
        "{failed}"
    );
    assert!(failed.get("output").is_none(), "{failed}");
    let (_, stream) = env.get(&format!("/stream/{failing}")).await;
    assert_eq!(stream["status"], "FAILED");
    assert!(stream["error"].as_str().unwrap().contains("out of memory"));
    env.service.stop().await;
}

#[tokio::test]
async fn cancel_ends_a_job_as_cancelled_and_leaves_an_ended_one_alone() {
    let env = env().await;
    let id = env.run(&txt2img("slow", json!({}))).await;
    env.status_until(&id, "IN_PROGRESS").await;
    let (code, cancelled) = env.post(&format!("/cancel/{id}"), &json!({})).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(cancelled, json!({"id": id, "status": "CANCELLED"}));
    let (_, status) = env.get(&format!("/status/{id}")).await;
    assert_eq!(status["status"], "CANCELLED");
    assert!(status["error"].is_string(), "{status}");
    // It stays cancelled: the generation that was stopped never completes it.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert_eq!(
        env.get(&format!("/status/{id}")).await.1["status"],
        "CANCELLED"
    );

    let done = env.run(&txt2img("quick", json!({}))).await;
    env.status_until(&done, "COMPLETED").await;
    let (_, again) = env.post(&format!("/cancel/{done}"), &json!({})).await;
    assert_eq!(again, json!({"id": done, "status": "COMPLETED"}));
    env.service.stop().await;
}

#[tokio::test]
async fn health_counts_the_callers_jobs_and_purge_queue_removes_the_waiting_ones() {
    let env = env().await;
    let (code, health) = env.get("/health").await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(
        health,
        json!({
            "jobs": {"completed": 0, "failed": 0, "inProgress": 0, "inQueue": 0, "retried": 0},
            "workers": {"idle": 2, "running": 0},
        })
    );
    let running: Vec<String> = [
        env.run(&txt2img("slow", json!({}))).await,
        env.run(&txt2img("slow", json!({}))).await,
    ]
    .into();
    for id in &running {
        env.status_until(id, "IN_PROGRESS").await;
    }
    let waiting = [
        env.run(&txt2img("w1", json!({}))).await,
        env.run(&txt2img("w2", json!({}))).await,
    ];
    let (_, health) = env.get("/health").await;
    assert_eq!(health["jobs"]["inProgress"], 2, "{health}");
    assert_eq!(health["jobs"]["inQueue"], 2, "{health}");
    assert_eq!(health["workers"], json!({"idle": 0, "running": 2}));

    let (code, purged) = env.post("/purge-queue", &json!({})).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(purged, json!({"removed": 2, "status": "completed"}));
    for id in &waiting {
        assert_eq!(
            env.get(&format!("/status/{id}")).await.1["status"],
            "CANCELLED"
        );
    }
    for id in &running {
        env.status_until(id, "COMPLETED").await;
    }
    let failing = env.run(&txt2img("fail", json!({}))).await;
    env.status_until(&failing, "FAILED").await;
    let (_, health) = env.get("/health").await;
    assert_eq!(
        health["jobs"],
        json!({"completed": 2, "failed": 1, "inProgress": 0, "inQueue": 0, "retried": 0})
    );

    // Another key's counts are its own.
    let other = env.service.create_key("someone-else").await;
    let (_, theirs) = env.get_as(&other, "/health").await;
    assert_eq!(theirs["jobs"]["completed"], 0);
    env.service.stop().await;
}

#[tokio::test]
async fn an_execution_timeout_ends_the_job_as_timed_out() {
    let env = env().await;
    let receiver = Receiver::http().await;
    let body = txt2img(
        "slow",
        json!({"webhook": receiver.url("/t"), "policy": {"executionTimeout": 1000, "ttl": 86400000}}),
    );
    let id = env.run(&body).await;
    let callback = receiver.wait_for(1, Duration::from_secs(30)).await[0].json();
    assert_eq!(callback["id"], id);
    assert_eq!(callback["status"], "TIMED_OUT", "{callback}");
    assert!(
        callback["error"]
            .as_str()
            .unwrap()
            .contains("timed out after 1000 ms"),
        "{callback}"
    );
    assert!(callback.get("output").is_none());
    let (_, status) = env.get(&format!("/status/{id}")).await;
    assert_eq!(status, callback);

    let (code, refused) = env
        .post(
            "/run",
            &txt2img("a", json!({"policy": {"executionTimeout": 10}})),
        )
        .await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(refused["error"]["field"], "policy.executionTimeout");
    env.service.stop().await;
}

/// Depends on the A1111 work (`a1111::route` answering GET endpoints).
#[tokio::test]
async fn input_api_get_endpoints_are_answered_without_a_generation() {
    let env = env().await;
    let receiver = Receiver::http().await;
    let body = json!({
        "webhook": receiver.url("/models"),
        "input": {"api": {"method": "GET", "endpoint": "/sdapi/v1/sd-models"}},
    });
    let (code, accepted) = env.post("/run", &body).await;
    assert_eq!(code, StatusCode::OK, "{accepted}");
    assert_eq!(accepted["status"], "COMPLETED", "{accepted}");
    let id = accepted["id"].as_str().unwrap();
    let (_, status) = env.get(&format!("/status/{id}")).await;
    assert_eq!(status["status"], "COMPLETED");
    assert_eq!(status["input"], body["input"]);
    assert!(
        status["output"].is_array() || status["output"].is_object(),
        "{status}"
    );
    assert!(
        status["output"].get("images").is_none(),
        "an API answer, not a generation: {status}"
    );
    let callback = receiver.wait_for(1, Duration::from_secs(30)).await[0].json();
    assert_eq!(callback, status);

    let (code, samplers) = env
        .post("/runsync", &json!({"input": {"api": {"method": "GET", "endpoint": "/sdapi/v1/samplers"}, "payload": {}}}))
        .await;
    assert_eq!(code, StatusCode::OK, "{samplers}");
    assert_eq!(samplers["status"], "COMPLETED");
    assert!(samplers["output"].is_array(), "{samplers}");
    assert_eq!(
        env.fake.calls.load(Ordering::SeqCst),
        0,
        "no generation ran"
    );
    env.service.stop().await;
}

#[tokio::test]
async fn an_unknown_endpoint_is_refused_naming_the_field_and_generates_nothing() {
    let env = env().await;
    let body = json!({"webhook": "http://127.0.0.1:9/x", "input": {"api": {"method": "GET", "endpoint": "/sdapi/v1/no-such-thing"}}});
    let (code, refused) = env.post("/run", &body).await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{refused}");
    assert_eq!(refused["error"]["field"], "input.api.endpoint");
    let (code, refused) = env.post("/runsync", &body).await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{refused}");
    assert_eq!(refused["error"]["field"], "input.api.endpoint");

    // Field errors use RunPod's names for the fields.
    let mut bad_steps = txt2img("a", json!({}));
    bad_steps["input"]["payload"]["steps"] = json!(0);
    let (code, refused) = env.post("/run", &bad_steps).await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        refused["error"]["field"], "input.payload.steps",
        "{refused}"
    );
    let (code, refused) = env
        .post(
            "/run",
            &txt2img("a", json!({"webhook": "ftp://hooks.example.com/"})),
        )
        .await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(refused["error"]["field"], "webhook", "{refused}");
    let (code, refused) = env
        .post("/run", &json!({"webhook": "http://127.0.0.1:9/x"}))
        .await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(refused["error"]["field"], "input", "{refused}");
    assert_eq!(env.fake.calls.load(Ordering::SeqCst), 0);
    env.service.stop().await;
}

#[tokio::test]
async fn jobs_are_their_owners_alone() {
    let env = env().await;
    let id = env.run(&txt2img("slow", json!({}))).await;
    let other = env.service.create_key("intruder").await;
    let (code, _) = env.get_as(&other, &format!("/status/{id}")).await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    let (code, _) = env
        .post_as(&other, &format!("/cancel/{id}"), &json!({}))
        .await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    let (code, _) = env.get_as(&other, &format!("/stream/{id}")).await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    let (_, purged) = env.post_as(&other, "/purge-queue", &json!({})).await;
    assert_eq!(purged["removed"], 0);

    // Without a key: 401 on every route.
    for (method, path) in [
        ("POST", "/run".to_owned()),
        ("GET", format!("/status/{id}")),
        ("GET", "/health".to_owned()),
    ] {
        let request = env
            .http
            .request(method.parse().unwrap(), env.url(&path))
            .json(&txt2img("a", json!({})));
        assert_eq!(
            request.send().await.unwrap().status(),
            StatusCode::UNAUTHORIZED,
            "{method} {path}"
        );
    }
    // The owner's job went on untouched.
    env.status_until(&id, "COMPLETED").await;
    env.service.stop().await;
}
