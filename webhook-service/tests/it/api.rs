//! The APIs refuse malformed requests with the field and the rule named, before storing
//! anything, and serve jobs, health and reflection.

use crate::support;

use sdserve_proto::v1 as pb;
use support::service::{Service, submit_request, test_config};
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;

async fn service() -> Service {
    let (inference, _) = support::inference::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(&dir, inference);
    config.allow_http = false;
    Service::start(config, dir).await
}

async fn refused(service: &Service, request: pb::SubmitJobRequest) -> String {
    let shown = format!("{request:?}");
    let status = service
        .jobs()
        .await
        .submit_job(request)
        .await
        .err()
        .unwrap_or_else(|| panic!("accepted: {shown}"));
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    status.message().to_owned()
}

#[tokio::test]
async fn malformed_submissions_are_invalid_argument_naming_the_field() {
    let service = service().await;
    let ok = "https://hooks.example.com/in";
    let cases = [
        (
            submit_request("p", "not a url", "standard", ""),
            "webhook.url: is not an absolute URL",
        ),
        (
            submit_request("p", "ftp://hooks.example.com/x", "standard", ""),
            "webhook.url: scheme \"ftp\" is not allowed",
        ),
        (
            submit_request("p", "http://hooks.example.com/x", "standard", ""),
            "webhook.url: must use https",
        ),
        (
            submit_request("p", "https://user:pw@hooks.example.com/", "standard", ""),
            "webhook.url: must not carry credentials",
        ),
        (
            submit_request("p", "", "standard", ""),
            "webhook.url: is required",
        ),
        (
            submit_request("p", ok, "", ""),
            "webhook.format: is required",
        ),
        (
            submit_request("p", ok, "zapier", ""),
            "webhook.format: unknown format \"zapier\"",
        ),
        (
            submit_request("p", ok, "standard", &"s".repeat(513)),
            "webhook.secret: must be at most 512 bytes",
        ),
        (
            submit_request("p", ok, "standard", "line\nbreak"),
            "webhook.secret: must be visible ASCII",
        ),
    ];
    for (request, expected) in cases {
        let message = refused(&service, request).await;
        assert!(
            message.starts_with(expected),
            "expected {expected:?}, got {message:?}"
        );
    }

    let mut no_webhook = submit_request("p", ok, "standard", "");
    no_webhook.webhook = None;
    assert_eq!(refused(&service, no_webhook).await, "webhook: is required");

    let mut bad_event = submit_request("p", ok, "standard", "");
    bad_event.webhook.as_mut().unwrap().events = vec!["progress".into()];
    assert!(
        refused(&service, bad_event)
            .await
            .starts_with("webhook.events: unknown event \"progress\"")
    );

    let mut bad_key = submit_request("p", ok, "standard", "");
    bad_key.webhook.as_mut().unwrap().signing_secret = "not-a-key".into();
    assert!(
        refused(&service, bad_key)
            .await
            .starts_with("webhook.signing_secret:")
    );

    for (field, mutate) in [
        (
            "params.width",
            Box::new(|p: &mut pb::GenerationParams| p.width = Some(65)) as Box<dyn Fn(&mut _)>,
        ),
        (
            "params.steps",
            Box::new(|p: &mut pb::GenerationParams| p.steps = Some(0)),
        ),
        (
            "params.cfg_scale",
            Box::new(|p: &mut pb::GenerationParams| p.cfg_scale = Some(-1.0)),
        ),
        (
            "params.batch_size",
            Box::new(|p: &mut pb::GenerationParams| p.batch_size = Some(1000)),
        ),
    ] {
        let mut request = submit_request("p", ok, "standard", "");
        mutate(request.params.as_mut().unwrap());
        let message = refused(&service, request).await;
        assert!(message.starts_with(&format!("{field}: ")), "{message}");
    }
    service.stop().await;
}

#[tokio::test]
async fn secrets_never_come_back_from_the_apis() {
    let service = service().await;
    let mut request = submit_request(
        "p",
        "https://hooks.example.com/in",
        "standard",
        "bearer-SECRET-1",
    );
    request.webhook.as_mut().unwrap().signing_secret =
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into();
    let id = service
        .jobs()
        .await
        .submit_job(request)
        .await
        .unwrap()
        .into_inner()
        .job_id;
    let job = service
        .jobs()
        .await
        .get_job(pb::GetJobRequest { job_id: id.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(job.webhook_url, "https://hooks.example.com/in");
    let as_text = format!("{job:?}");
    assert!(
        !as_text.contains("bearer-SECRET-1") && !as_text.contains("MfKQ9r8"),
        "{as_text}"
    );
    let http = reqwest_get(service.http, &format!("/v1/jobs/{id}")).await;
    assert!(
        http.contains(&id) && !http.contains("bearer-SECRET-1") && !http.contains("MfKQ9r8"),
        "{http}"
    );
    service.stop().await;
}

#[tokio::test]
async fn idempotency_key_returns_the_first_job() {
    let service = service().await;
    let mut request = submit_request("p", "https://hooks.example.com/in", "standard", "");
    request.idempotency_key = "order-42".into();
    let first = service
        .jobs()
        .await
        .submit_job(request.clone())
        .await
        .unwrap()
        .into_inner();
    let second = service
        .jobs()
        .await
        .submit_job(request)
        .await
        .unwrap()
        .into_inner();
    assert!(!first.deduplicated);
    assert!(second.deduplicated);
    assert_eq!(first.job_id, second.job_id);
    service.stop().await;
}

#[tokio::test]
async fn unknown_ids_are_not_found() {
    let service = service().await;
    let mut jobs = service.jobs().await;
    let status = jobs
        .get_job(pb::GetJobRequest {
            job_id: "nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    let status = jobs
        .redeliver(pb::RedeliverRequest {
            delivery_id: "msg_nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    let status = jobs
        .get_job(pb::GetJobRequest {
            job_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        (status.code(), status.message()),
        (Code::InvalidArgument, "job_id: is required")
    );
    service.stop().await;
}

#[tokio::test]
async fn http_api_answers_422_and_400_with_json_bodies() {
    let service = service().await;
    let client = support::http();
    let url = format!("http://{}/v1/jobs", service.http);
    let response = client
        .post(&url)
        .json(&serde_json::json!({"params": {"prompt": "p", "width": 65}, "webhook": {"url": "https://h.example.com/", "format": "standard"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 422);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"]["field"], "params.width");
    assert_eq!(body["error"]["rule"], "must be a multiple of 8");

    let response = client
        .post(&url)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: serde_json::Value = response.json().await.unwrap();
    assert!(
        body["error"]["message"].as_str().unwrap().len() > 5,
        "{body}"
    );

    let cerebrium = format!("http://{}/cerebrium/tiny-sd1/predict", service.http);
    let response = client
        .post(&cerebrium)
        .json(&serde_json::json!({"prompt": "p", "webhook_endpoint": "ftp://x/"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 422);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"]["field"], "webhook_endpoint");

    let response = client
        .post(&url)
        .json(&serde_json::json!({"params": {"prompt": "p"}, "webhook": {"url": "https://h.example.com/", "format": "diffute"}, "vendor_context": ["Houston"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 422);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(
        (
            body["error"]["field"].as_str(),
            body["error"]["rule"].as_str()
        ),
        (Some("vendor_context"), Some("must be a JSON object"))
    );
    service.stop().await;
}

#[tokio::test]
async fn grpc_health_and_reflection_are_served() {
    let service = service().await;
    // Readiness is checked at start-up and every 5 s.
    assert_eq!(
        health_becomes(&service, ServingStatus::Serving).await,
        Some(ServingStatus::Serving)
    );
    let metrics = reqwest_get(service.http, "/metrics").await;
    assert!(
        metrics.contains("sdserve_webhook_delivery_attempts_total"),
        "{metrics}"
    );
    service.stop().await;
}

#[tokio::test]
async fn reflection_lists_the_services() {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let service = service().await;
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", service.grpc))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut replies = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let reply = replies.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = reply.message_response else {
        panic!("{reply:?}")
    };
    let names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
    for expected in ["sdserve.v1.Jobs", "grpc.health.v1.Health"] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} missing from {names:?}"
        );
    }
    service.stop().await;
}

#[tokio::test]
async fn jobs_over_the_cost_limit_or_naming_an_unserved_model_are_refused_at_the_door() {
    let service = service().await;
    let ok = "https://hooks.example.com/in";
    let mut big = submit_request("p", ok, "standard", "");
    let params = big.params.as_mut().unwrap();
    (
        params.width,
        params.height,
        params.steps,
        params.batch_size,
        params.n_iter,
    ) = (Some(2048), Some(2048), Some(100), Some(16), Some(100));
    let message = refused(&service, big).await;
    assert!(
        message.starts_with("params: the job asks for 671088640000 pixel-steps"),
        "{message}"
    );
    let mut unknown = submit_request("p", ok, "standard", "");
    unknown.params.as_mut().unwrap().model = "sdxl-turbo".into();
    let message = refused(&service, unknown).await;
    assert_eq!(
        message,
        "params.model: no model \"sdxl-turbo\" is served here; served models: tiny-sd1"
    );
    let mut known = submit_request("p", ok, "standard", "");
    known.params.as_mut().unwrap().model = "tiny-sd1".into();
    service.jobs().await.submit_job(known).await.unwrap();
    service.stop().await;
}

#[tokio::test]
async fn readyz_tells_whether_the_store_and_the_inference_servers_answer() {
    let service = service().await;
    let response = support::http()
        .get(format!("http://{}/readyz", service.http))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(
        body,
        serde_json::json!({"ready": true, "checks": {"store": "ok", "inference": "ok"}})
    );
    service.stop().await;

    // No inference server listens: not ready, over HTTP and gRPC health; still alive.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let service = Service::start(test_config(&dir, closed), dir).await;
    assert_eq!(reqwest_get(service.http, "/healthz").await, "ok");
    let response = support::http()
        .get(format!("http://{}/readyz", service.http))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(
        (body["ready"].clone(), body["checks"]["store"].clone()),
        (serde_json::json!(false), serde_json::json!("ok"))
    );
    assert!(
        body["checks"]["inference"]
            .as_str()
            .unwrap()
            .contains("inference server"),
        "{body}"
    );
    assert_eq!(
        health_becomes(&service, ServingStatus::NotServing).await,
        Some(ServingStatus::NotServing)
    );
    service.stop().await;
}

/// grpcurl 1.8, the one the package registries carry, speaks only reflection v1alpha.
#[tokio::test]
async fn reflection_v1alpha_lists_the_services_too() {
    use tonic_reflection::pb::v1alpha::ServerReflectionRequest;
    use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse;

    let service = service().await;
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", service.grpc))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = ServerReflectionClient::new(channel);
    let list = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let symbol = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::FileContainingSymbol(
            "sdserve.v1.Jobs".into(),
        )),
    };
    let mut replies = client
        .server_reflection_info(tokio_stream::iter([list, symbol]))
        .await
        .unwrap()
        .into_inner();
    let reply = replies.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = reply.message_response else {
        panic!("{reply:?}")
    };
    assert!(
        list.service.iter().any(|s| s.name == "sdserve.v1.Jobs"),
        "{list:?}"
    );
    let reply = replies.message().await.unwrap().unwrap();
    let Some(MessageResponse::FileDescriptorResponse(files)) = reply.message_response else {
        panic!("{reply:?}")
    };
    assert!(!files.file_descriptor_proto.is_empty());
    service.stop().await;
}

#[tokio::test]
async fn watch_job_streams_until_the_job_ends() {
    let service = service().await;
    let mut request = submit_request("fail", "https://hooks.example.com/in", "standard", "");
    request.params.as_mut().unwrap().steps = Some(3);
    let id = service
        .jobs()
        .await
        .submit_job(request)
        .await
        .unwrap()
        .into_inner()
        .job_id;
    let mut stream = service
        .jobs()
        .await
        .watch_job(pb::WatchJobRequest { job_id: id })
        .await
        .unwrap()
        .into_inner();
    let mut statuses = Vec::new();
    while let Some(event) =
        tokio::time::timeout(std::time::Duration::from_secs(10), stream.message())
            .await
            .unwrap()
            .unwrap()
    {
        statuses.push(event.job.unwrap().status());
    }
    assert_eq!(
        statuses.last(),
        Some(&pb::JobStatus::Failed),
        "{statuses:?}"
    );
    service.stop().await;
}

async fn reqwest_get(addr: std::net::SocketAddr, path: &str) -> String {
    support::http()
        .get(format!("http://{addr}{path}"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Polls the Jobs service's gRPC health (10 s at most) until it reports `wanted`; returns the
/// last status seen.
async fn health_becomes(service: &Service, wanted: ServingStatus) -> Option<ServingStatus> {
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", service.grpc))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let mut status = None;
    for _ in 0..200 {
        let request = tonic_health::pb::HealthCheckRequest {
            service: "sdserve.v1.Jobs".into(),
        };
        status = health
            .check(request)
            .await
            .ok()
            .map(|r| r.into_inner().status());
        if status == Some(wanted) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    status
}
