//! Callers and keys: every API needs a key (health, reflection, metrics and signed media links
//! do not), a key sees only its own jobs, per-key limits answer 429 / RESOURCE_EXHAUSTED with
//! `Retry-After`, the `keys` CLI manages keys, and request limits name themselves.

use std::time::Duration;

use sdserve_proto::v1 as pb;
use serde_json::{Value, json};
use tonic::Code;
use webhook_service::auth::KeySpec;
use webhook_service::domain::KeyLimits;

use crate::support;
use support::receiver::Receiver;
use support::service::{Service, create_key_in, submit_request, test_config_with_auth, with_key};

async fn service() -> Service {
    let (inference, _) = support::inference::start().await;
    let dir = tempfile::tempdir().unwrap();
    Service::start(test_config_with_auth(&dir, inference), dir).await
}

fn native_body(prompt: &str, url: &str) -> Value {
    json!({"params": {"prompt": prompt, "steps": 2}, "webhook": {"url": url, "format": "standard"}})
}

async fn post(service: &Service, path: &str, key: Option<&str>, body: &Value) -> reqwest::Response {
    let mut request = support::http()
        .post(format!("http://{}{path}", service.http))
        .json(body);
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    request.send().await.unwrap()
}

async fn get(service: &Service, path: &str, key: Option<&str>) -> reqwest::Response {
    let mut request = support::http().get(format!("http://{}{path}", service.http));
    if let Some(key) = key {
        request = request.header("x-api-key", key);
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn apis_need_a_key_but_health_reflection_and_metrics_do_not() {
    let service = service().await;
    let body = native_body("p", "https://hooks.example.com/in");
    for key in [None, Some("sds_not-a-real-key")] {
        let response = post(&service, "/v1/jobs", key, &body).await;
        assert_eq!(response.status(), 401);
        assert_eq!(response.headers()["www-authenticate"], "Bearer");
        let error: Value = response.json().await.unwrap();
        assert!(
            error["error"]["message"]
                .as_str()
                .unwrap()
                .contains("API key"),
            "{error}"
        );
        assert!(
            !error.to_string().contains("sds_not-a-real-key"),
            "the presented key is echoed: {error}"
        );
    }
    let refused = service
        .jobs()
        .await
        .submit_job(submit_request(
            "p",
            "https://hooks.example.com/in",
            "standard",
            "",
        ))
        .await;
    assert_eq!(refused.unwrap_err().code(), Code::Unauthenticated);
    let refused = service
        .jobs()
        .await
        .get_job(with_key(
            pb::GetJobRequest { job_id: "x".into() },
            "sds_wrong",
        ))
        .await;
    assert_eq!(refused.unwrap_err().code(), Code::Unauthenticated);

    assert_eq!(get(&service, "/healthz", None).await.status(), 200);
    assert_eq!(get(&service, "/metrics", None).await.status(), 200);
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", service.grpc))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    health
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap();
    service.stop().await;
}

#[tokio::test]
async fn another_key_cannot_see_cancel_list_or_redeliver_a_job() {
    let service = service().await;
    let (a, b) = (
        service.create_key("team-a").await,
        service.create_key("team-b").await,
    );
    let receiver = Receiver::http().await;
    let response = post(
        &service,
        "/v1/jobs",
        Some(&a),
        &native_body("p", &receiver.url("/hook")),
    )
    .await;
    assert_eq!(response.status(), 202);
    let id = response.json::<Value>().await.unwrap()["job_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let callback = receiver
        .wait_for(1, Duration::from_secs(20))
        .await
        .remove(0)
        .json();
    let mut client = service.jobs().await;
    let deliveries =
        support::service::wait_deliveries_with_key(&mut client, &id, &a, |d| !d.is_empty()).await;
    let delivery = deliveries[0].id.clone();

    // Key B: the job does not exist, whichever face and route it tries.
    for path in [
        format!("/v1/jobs/{id}"),
        format!("/v1/jobs/{id}/deliveries"),
        format!("/v1/jobs/{id}/images/0"),
    ] {
        assert_eq!(get(&service, &path, Some(&b)).await.status(), 404, "{path}");
    }
    assert_eq!(
        post(
            &service,
            &format!("/v1/jobs/{id}/cancel"),
            Some(&b),
            &json!({})
        )
        .await
        .status(),
        404
    );
    assert_eq!(
        post(
            &service,
            &format!("/v1/deliveries/{delivery}/redeliver"),
            Some(&b),
            &json!({})
        )
        .await
        .status(),
        404
    );
    let not_found = |r: Result<_, tonic::Status>| r.err().map(|s| s.code());
    assert_eq!(
        not_found(
            client
                .get_job(with_key(pb::GetJobRequest { job_id: id.clone() }, &b))
                .await
                .map(|_| ())
        ),
        Some(Code::NotFound)
    );
    assert_eq!(
        not_found(
            client
                .cancel_job(with_key(pb::CancelJobRequest { job_id: id.clone() }, &b))
                .await
                .map(|_| ())
        ),
        Some(Code::NotFound)
    );
    assert_eq!(
        not_found(
            client
                .list_deliveries(with_key(
                    pb::ListDeliveriesRequest { job_id: id.clone() },
                    &b
                ))
                .await
                .map(|_| ())
        ),
        Some(Code::NotFound)
    );
    assert_eq!(
        not_found(
            client
                .redeliver(with_key(
                    pb::RedeliverRequest {
                        delivery_id: delivery.clone()
                    },
                    &b
                ))
                .await
                .map(|_| ())
        ),
        Some(Code::NotFound)
    );
    assert_eq!(
        not_found(
            client
                .watch_job(with_key(pb::WatchJobRequest { job_id: id.clone() }, &b))
                .await
                .map(|_| ())
        ),
        Some(Code::NotFound)
    );

    // Key A sees and controls its job.
    let job: Value = get(&service, &format!("/v1/jobs/{id}"), Some(&a))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(job["status"], "completed");
    let png = get(&service, &format!("/v1/jobs/{id}/images/0"), Some(&a)).await;
    assert_eq!(
        (
            png.status().as_u16(),
            png.headers()["content-type"].to_str().unwrap()
        ),
        (200, "image/png")
    );
    assert_eq!(
        post(
            &service,
            &format!("/v1/deliveries/{delivery}/redeliver"),
            Some(&a),
            &json!({})
        )
        .await
        .status(),
        200
    );
    client
        .get_job(with_key(pb::GetJobRequest { job_id: id.clone() }, &a))
        .await
        .unwrap();

    // The callback's signed media links work for the receiver, who has no key.
    let url = callback["data"]["images"][0]["url"]
        .as_str()
        .unwrap_or_else(|| panic!("no image url in {callback}"));
    let media = support::http().get(url).send().await.unwrap();
    assert_eq!(media.status(), 200);
    service.stop().await;
}

#[tokio::test]
async fn key_limits_answer_429_and_resource_exhausted_with_retry_after() {
    let service = service().await;
    let db = service.dir.path().join("jobs.db");
    let one = create_key_in(
        &db,
        KeySpec {
            name: "one-at-a-time".into(),
            limits: KeyLimits {
                max_in_flight: Some(1),
                per_minute: None,
            },
            webhook: None,
        },
    )
    .await;
    let ok = "https://hooks.example.com/in";
    assert_eq!(
        post(&service, "/v1/jobs", Some(&one), &native_body("slow", ok))
            .await
            .status(),
        202
    );
    let second = post(&service, "/v1/jobs", Some(&one), &native_body("p", ok)).await;
    assert_eq!(second.status(), 429);
    assert!(
        second.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= 1
    );
    let error: Value = second.json().await.unwrap();
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("limit is 1"),
        "{error}"
    );
    let status = service
        .jobs()
        .await
        .submit_job(with_key(submit_request("p", ok, "standard", ""), &one))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert!(status.metadata().get("retry-after").is_some(), "{status:?}");

    let two = create_key_in(
        &db,
        KeySpec {
            name: "two-a-minute".into(),
            limits: KeyLimits {
                max_in_flight: None,
                per_minute: Some(2),
            },
            webhook: None,
        },
    )
    .await;
    for _ in 0..2 {
        assert_eq!(
            post(&service, "/v1/jobs", Some(&two), &native_body("p", ok))
                .await
                .status(),
            202
        );
    }
    let third = post(&service, "/v1/jobs", Some(&two), &native_body("p", ok)).await;
    assert_eq!(third.status(), 429);
    let wait: u64 = third.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&wait), "Retry-After {wait}");
    service.stop().await;
}

#[tokio::test]
async fn keys_cli_creates_lists_and_revokes() {
    let dir = tempfile::tempdir().unwrap();
    let database = format!("sqlite://{}", dir.path().join("jobs.db").display());
    let cli = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_webhook-service"))
            .args(args)
            .env_remove("SDSERVE_DATABASE")
            .output()
            .unwrap()
    };
    let created = cli(&[
        "keys",
        "create",
        "--name",
        "ci-bot",
        "--database",
        &database,
    ]);
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let stdout = String::from_utf8(created.stdout).unwrap();
    let key = stdout.trim_end_matches('\n');
    assert!(
        key.starts_with("sds_")
            && !key.contains(char::is_whitespace)
            && stdout.lines().count() == 1,
        "stdout: {stdout:?}"
    );

    let listed = String::from_utf8(cli(&["keys", "list", "--database", &database]).stdout).unwrap();
    assert!(
        listed.contains("ci-bot") && !listed.contains(key),
        "{listed}"
    );

    let (inference, _) = support::inference::start().await;
    let start =
        |dir: tempfile::TempDir| Service::start(test_config_with_auth(&dir, inference), dir);
    let service = start(dir).await;
    let body = native_body("p", "https://hooks.example.com/in");
    assert_eq!(
        post(&service, "/v1/jobs", Some(key), &body).await.status(),
        202
    );
    let dir = service.stop().await;

    let revoked = cli(&["keys", "revoke", "ci-bot", "--database", &database]);
    assert!(
        revoked.status.success(),
        "{}",
        String::from_utf8_lossy(&revoked.stderr)
    );
    let again = cli(&["keys", "revoke", "ci-bot", "--database", &database]);
    assert!(
        !again.status.success() && String::from_utf8_lossy(&again.stderr).contains("no active key")
    );
    let service = start(dir).await;
    assert_eq!(
        post(&service, "/v1/jobs", Some(key), &body).await.status(),
        401
    );
    service.stop().await;
}

#[tokio::test]
async fn grpc_field_errors_carry_bad_request_details() {
    use tonic_types::StatusExt;
    let service = service().await;
    let key = service.create_key("k").await;
    let mut request = submit_request("p", "https://hooks.example.com/in", "standard", "");
    request.params.as_mut().unwrap().steps = Some(0);
    let status = service
        .jobs()
        .await
        .submit_job(with_key(request, &key))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let details = status.get_error_details();
    let violations = &details
        .bad_request()
        .expect("a BadRequest detail")
        .field_violations;
    assert_eq!(violations[0].field, "params.steps");
    assert!(
        violations[0].description.contains("between 1 and 150"),
        "{violations:?}"
    );
    service.stop().await;
}

#[tokio::test]
async fn oversized_bodies_get_413_naming_the_limit() {
    let (inference, _) = support::inference::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = webhook_service::Config {
        body_limit: 4096,
        ..test_config_with_auth(&dir, inference)
    };
    let service = Service::start(config, dir).await;
    let key = service.create_key("k").await;
    let body = native_body(&"x".repeat(8192), "https://hooks.example.com/in");
    let response = post(&service, "/v1/jobs", Some(&key), &body).await;
    assert_eq!(response.status(), 413);
    let error: Value = response.json().await.unwrap();
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("4096 bytes"),
        "{error}"
    );
    service.stop().await;
}

#[tokio::test]
async fn a_job_is_queued_until_its_generation_starts_and_timings_say_so() {
    let service = service().await;
    let key = service.create_key("k").await;
    let response = post(
        &service,
        "/v1/jobs",
        Some(&key),
        &native_body("queued", "https://hooks.example.com/in"),
    )
    .await;
    let id = response.json::<Value>().await.unwrap()["job_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let job_when = |wanted: &'static str| {
        let (service, key, id) = (&service, key.clone(), id.clone());
        async move {
            for _ in 0..500 {
                let job: Value = get(service, &format!("/v1/jobs/{id}"), Some(&key))
                    .await
                    .json()
                    .await
                    .unwrap();
                if job["status"] == wanted {
                    return job;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            panic!("job never became {wanted}");
        }
    };
    // In the inference server's queue: still queued, with its position there.
    let queued = loop {
        let job = job_when("queued").await;
        if job["queue_position"] == 2 {
            break job;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert!(queued["started_at_ms"].is_null(), "{queued}");
    service.clock.advance(Duration::from_millis(5000));
    let running = job_when("running").await;
    service.clock.advance(Duration::from_millis(700));
    let done = job_when("completed").await;
    let created = done["created_at_ms"].as_i64().unwrap();
    assert_eq!(
        running["started_at_ms"].as_i64().unwrap() - created,
        5000,
        "queue time covers both queues"
    );
    assert_eq!(
        done["finished_at_ms"].as_i64().unwrap() - done["started_at_ms"].as_i64().unwrap(),
        700,
        "execution only"
    );
    service.stop().await;
}

#[tokio::test]
async fn idempotency_keys_are_scoped_per_key_and_bound_to_their_request() {
    let service = service().await;
    let (a, b) = (service.create_key("a").await, service.create_key("b").await);
    let ok = "https://hooks.example.com/in";
    let submit = |key: String, prompt: &'static str| {
        let service = &service;
        async move {
            let body = json!({"params": {"prompt": prompt, "steps": 2}, "webhook": {"url": ok, "format": "standard"}, "idempotency_key": "order-42"});
            let response = post(service, "/v1/jobs", Some(&key), &body).await;
            (
                response.status().as_u16(),
                response.json::<Value>().await.unwrap(),
            )
        }
    };
    let (status, first) = submit(a.clone(), "p").await;
    assert_eq!(status, 202);
    let (_, again) = submit(a.clone(), "p").await;
    assert_eq!(
        (again["job_id"].clone(), again["deduplicated"].clone()),
        (first["job_id"].clone(), json!(true))
    );
    // Another caller's use of the same key is its own job: no id of A's is revealed.
    let (status, other) = submit(b.clone(), "p").await;
    assert_eq!((status, other["deduplicated"].clone()), (202, json!(false)));
    assert_ne!(other["job_id"], first["job_id"]);
    // The same key for a different request is a conflict, over HTTP and gRPC.
    let (status, conflict) = submit(a.clone(), "another prompt").await;
    assert_eq!(status, 409, "{conflict}");
    assert_eq!(conflict["error"]["field"], "idempotency_key");
    let mut request = submit_request("yet another", ok, "standard", "");
    request.idempotency_key = "order-42".into();
    let status = service
        .jobs()
        .await
        .submit_job(with_key(request, &a))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::AlreadyExists, "{status:?}");
    service.stop().await;
}
