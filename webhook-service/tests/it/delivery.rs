//! The delivery engine end to end: the real service (in-process, port 0) runs jobs on a
//! scripted inference server and delivers to a local receiver. The schedule runs on a manual
//! clock, so retries hours apart take no real time.

use crate::support;

use std::time::Duration;

use sdserve_proto::v1 as pb;
use support::receiver::{Receiver, Reply};
use support::service::{Service, submit_request, test_config, wait_deliveries};
use webhook_service::Config;
use webhook_service::delivery::signing::SigningKey;

const KEY: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

async fn start_with(adjust: impl FnOnce(&mut Config)) -> Service {
    let (inference, _) = support::inference::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(&dir, inference);
    adjust(&mut config);
    Service::start(config, dir).await
}

async fn submit(service: &Service, url: &str, secret: &str) -> String {
    let request = submit_request("a red fox", url, "standard", secret);
    service
        .jobs()
        .await
        .submit_job(request)
        .await
        .unwrap()
        .into_inner()
        .job_id
}

fn status(d: &pb::Delivery) -> pb::DeliveryStatus {
    d.status()
}

#[tokio::test]
async fn a_200_is_one_signed_attempt_with_the_bearer_secret() {
    let service = start_with(|_| {}).await;
    let receiver = Receiver::http().await;
    let job = submit(&service, &receiver.url("/hook"), "tok-123").await;
    let requests = receiver.wait_for(1, Duration::from_secs(10)).await;
    let mut jobs = service.jobs().await;
    let deliveries = wait_deliveries(&mut jobs, &job, |d| {
        d.iter().any(|d| status(d) == pb::DeliveryStatus::Succeeded)
    })
    .await;
    assert_eq!(deliveries.len(), 1);
    assert_eq!(deliveries[0].attempts.len(), 1);

    let request = &requests[0];
    assert_eq!(request.method, "POST");
    assert_eq!(request.path, "/hook");
    assert_eq!(request.header("authorization"), Some("Bearer tok-123"));
    assert_eq!(request.header("content-type"), Some("application/json"));
    let id = request.header("webhook-id").unwrap();
    assert_eq!(id, deliveries[0].id);
    let timestamp: i64 = request
        .header("webhook-timestamp")
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(timestamp, service.clock.now_ms() / 1000);
    let expected = SigningKey::parse(KEY)
        .unwrap()
        .sign(id, timestamp, &request.body);
    assert_eq!(request.header("webhook-signature"), Some(expected.as_str()));

    let body: serde_json::Value = serde_json::from_slice(&request.body).unwrap();
    assert_eq!(body["type"], "job.completed");
    assert_eq!(body["data"]["job_id"], job);
    assert!(
        !String::from_utf8_lossy(&request.body).contains("tok-123"),
        "the secret leaked into the body"
    );
    let image_url = body["data"]["images"][0]["url"].as_str().unwrap();
    let png = support::http().get(image_url).send().await.unwrap();
    assert_eq!(png.status(), 200);
    assert_eq!(
        png.bytes().await.unwrap().to_vec(),
        support::inference::tiny_png()
    );
    let tampered = image_url.replace("sig=", "sig=00");
    assert_eq!(
        support::http().get(tampered).send().await.unwrap().status(),
        403
    );
    service.stop().await;
}

#[tokio::test]
async fn a_500_then_200_takes_two_attempts_with_one_webhook_id() {
    let service = start_with(|_| {}).await;
    let receiver = Receiver::http().await;
    receiver.push(Reply::status(500));
    let job = submit(&service, &receiver.url("/hook"), "").await;
    let mut jobs = service.jobs().await;
    let pending = wait_deliveries(&mut jobs, &job, |d| {
        d.first()
            .is_some_and(|d| d.attempts.len() == 1 && status(d) == pb::DeliveryStatus::Pending)
    })
    .await;
    let wait = pending[0].next_attempt_at_ms - service.clock.now_ms();
    assert!(
        (4_000..=6_000).contains(&wait),
        "first retry after 5 s ± 20%, got {wait} ms"
    );
    assert_eq!(pending[0].attempts[0].status_code, 500);

    service.clock.advance(Duration::from_secs(7));
    let requests = receiver.wait_for(2, Duration::from_secs(10)).await;
    let done = wait_deliveries(&mut jobs, &job, |d| {
        status(&d[0]) == pb::DeliveryStatus::Succeeded
    })
    .await;
    assert_eq!(done[0].attempts.len(), 2);
    assert_eq!(
        requests[0].header("webhook-id"),
        requests[1].header("webhook-id")
    );
    assert_eq!(
        requests[0].body, requests[1].body,
        "every attempt sends the same bytes"
    );
    service.stop().await;
}

#[tokio::test]
async fn a_503_with_retry_after_waits_as_asked() {
    let service = start_with(|_| {}).await;
    let receiver = Receiver::http().await;
    receiver.push(Reply::status(503).header("retry-after", "120"));
    let job = submit(&service, &receiver.url("/hook"), "").await;
    let mut jobs = service.jobs().await;
    let pending = wait_deliveries(&mut jobs, &job, |d| {
        d.first()
            .is_some_and(|d| d.attempts.len() == 1 && status(d) == pb::DeliveryStatus::Pending)
    })
    .await;
    assert_eq!(
        pending[0].next_attempt_at_ms,
        service.clock.now_ms() + 120_000
    );

    service.clock.advance(Duration::from_secs(119));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        receiver.requests().len(),
        1,
        "retried before Retry-After elapsed"
    );
    service.clock.advance(Duration::from_secs(1));
    receiver.wait_for(2, Duration::from_secs(10)).await;
    wait_deliveries(&mut jobs, &job, |d| {
        status(&d[0]) == pb::DeliveryStatus::Succeeded
    })
    .await;
    service.stop().await;
}

#[tokio::test]
async fn a_410_stops_and_marks_the_endpoint_gone() {
    let service = start_with(|_| {}).await;
    let receiver = Receiver::http().await;
    receiver.push(Reply::status(410));
    let url = receiver.url("/hook");
    let first = submit(&service, &url, "").await;
    let mut jobs = service.jobs().await;
    let gone = wait_deliveries(&mut jobs, &first, |d| {
        d.first()
            .is_some_and(|d| status(d) == pb::DeliveryStatus::Gone)
    })
    .await;
    assert_eq!(gone[0].attempts.len(), 1);
    assert_eq!(gone[0].next_attempt_at_ms, 0);

    let second = submit(&service, &url, "").await;
    let skipped = wait_deliveries(&mut jobs, &second, |d| {
        d.first()
            .is_some_and(|d| status(d) == pb::DeliveryStatus::Gone)
    })
    .await;
    assert!(
        skipped[0].attempts.is_empty(),
        "a gone endpoint is not called again"
    );
    assert!(
        skipped[0].last_error.contains("410"),
        "{}",
        skipped[0].last_error
    );
    service.clock.advance(Duration::from_secs(86_400));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.requests().len(), 1);

    // The caller cannot make the service call a gone receiver again...
    let refused = jobs
        .redeliver(pb::RedeliverRequest {
            delivery_id: skipped[0].id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        refused.code(),
        tonic::Code::FailedPrecondition,
        "{refused:?}"
    );
    assert!(
        refused.message().contains("410 Gone") && refused.message().contains("--force"),
        "{}",
        refused.message()
    );
    // ...an operator can, and it is sent again with the same id (the service notices within 5 s).
    let forced = std::process::Command::new(env!("CARGO_BIN_EXE_webhook-service"))
        .args([
            "deliveries",
            "redeliver",
            &skipped[0].id,
            "--force",
            "--database",
        ])
        .arg(format!(
            "sqlite://{}",
            service.dir.path().join("jobs.db").display()
        ))
        .env_remove("SDSERVE_DATABASE")
        .output()
        .unwrap();
    assert!(
        forced.status.success(),
        "{}",
        String::from_utf8_lossy(&forced.stderr)
    );
    // The command made it due at the wall clock's now; bring the service's manual clock there.
    let wall = webhook_service::clock::Clock::system().now_ms();
    service.clock.advance(Duration::from_millis(
        (wall - service.clock.now_ms()).max(0) as u64 + 1000,
    ));
    let requests = receiver.wait_for(2, Duration::from_secs(10)).await;
    assert_eq!(
        requests[1].header("webhook-id"),
        Some(skipped[0].id.as_str())
    );
    wait_deliveries(&mut jobs, &second, |d| {
        status(&d[0]) == pb::DeliveryStatus::Succeeded
    })
    .await;

    // A caller's redelivery is limited to one a minute per delivery.
    let delivery_id = skipped[0].id.clone();
    service.clock.advance(Duration::from_secs(61));
    jobs.redeliver(pb::RedeliverRequest {
        delivery_id: delivery_id.clone(),
    })
    .await
    .unwrap();
    let limited = jobs
        .redeliver(pb::RedeliverRequest { delivery_id })
        .await
        .unwrap_err();
    assert_eq!(
        limited.code(),
        tonic::Code::ResourceExhausted,
        "{limited:?}"
    );
    assert!(limited.metadata().get("retry-after").is_some());
    service.stop().await;
}

#[tokio::test]
async fn a_receiver_that_never_answers_times_out_and_is_retried() {
    let service = start_with(|c| c.timeout = Duration::from_millis(300)).await;
    let receiver = Receiver::http().await;
    receiver.push(Reply::hang());
    let job = submit(&service, &receiver.url("/hook"), "").await;
    let mut jobs = service.jobs().await;
    let pending = wait_deliveries(&mut jobs, &job, |d| {
        d.first()
            .is_some_and(|d| d.attempts.len() == 1 && status(d) == pb::DeliveryStatus::Pending)
    })
    .await;
    assert!(
        pending[0].attempts[0].error.starts_with("timeout"),
        "{:?}",
        pending[0].attempts[0]
    );
    service.clock.advance(Duration::from_secs(7));
    wait_deliveries(&mut jobs, &job, |d| {
        status(&d[0]) == pb::DeliveryStatus::Succeeded
    })
    .await;
    service.stop().await;
}

#[tokio::test]
async fn a_redirect_is_not_followed_and_counts_as_a_failure() {
    let service = start_with(|_| {}).await;
    let receiver = Receiver::http().await;
    receiver.push(Reply::status(302).header("location", &receiver.url("/elsewhere")));
    let job = submit(&service, &receiver.url("/hook"), "").await;
    let mut jobs = service.jobs().await;
    let pending = wait_deliveries(&mut jobs, &job, |d| {
        d.first()
            .is_some_and(|d| d.attempts.len() == 1 && status(d) == pb::DeliveryStatus::Pending)
    })
    .await;
    assert_eq!(pending[0].attempts[0].status_code, 302);
    assert!(
        pending[0].last_error.contains("redirects are not followed"),
        "{}",
        pending[0].last_error
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(receiver.requests().iter().all(|r| r.path == "/hook"));
    service.stop().await;
}

#[tokio::test]
async fn an_untrusted_certificate_is_refused_and_nothing_is_sent() {
    let receiver = Receiver::https().await;
    let service = start_with(|_| {}).await;
    let url = receiver.url("/hook").replace("127.0.0.1", "localhost");
    let job = submit(&service, &url, "never-sent").await;
    let mut jobs = service.jobs().await;
    let pending = wait_deliveries(&mut jobs, &job, |d| {
        d.first().is_some_and(|d| d.attempts.len() == 1)
    })
    .await;
    assert!(
        pending[0].attempts[0].error.starts_with("tls"),
        "{:?}",
        pending[0].attempts[0]
    );
    assert!(
        receiver.requests().is_empty(),
        "a request reached the receiver without trusted TLS"
    );
    service.stop().await;

    let trusting = start_with(|c| c.ca_pem = Some(receiver.ca_pem())).await;
    let job = submit(&trusting, &url, "").await;
    let mut jobs = trusting.jobs().await;
    wait_deliveries(&mut jobs, &job, |d| {
        d.first()
            .is_some_and(|d| status(d) == pb::DeliveryStatus::Succeeded)
    })
    .await;
    trusting.stop().await;
}

/// The address policy is applied at submission (here) and again at every send (a name may
/// resolve elsewhere by then; `client.rs` shows the send-time refusal with its reason).
#[tokio::test]
async fn a_private_address_is_refused_at_submission_naming_the_field_and_the_reason() {
    let service = start_with(|c| {
        c.allow_private.clear();
        c.resolve_overrides
            .insert("internal.test".into(), vec!["10.0.0.5".parse().unwrap()]);
    })
    .await;
    let mut jobs = service.jobs().await;
    for (url, reason) in [
        (
            "http://internal.test:8080/hook",
            "internal.test resolves only to 10.0.0.5 (private address)",
        ),
        ("http://10.1.2.3/hook", "is 10.1.2.3 (private address)"),
        ("http://[::1]/hook", "is ::1 (loopback address)"),
    ] {
        let status = jobs
            .submit_job(support::service::submit_request("p", url, "standard", ""))
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(
            status
                .message()
                .starts_with(&format!("webhook.url: {reason}")),
            "{}",
            status.message()
        );
    }
    service.stop().await;
}

#[tokio::test]
async fn failed_and_cancelled_jobs_are_delivered_when_asked_for() {
    let service = start_with(|_| {}).await;
    let receiver = Receiver::http().await;
    let job = {
        let request = submit_request("fail", &receiver.url("/hook"), "runpod", "");
        service
            .jobs()
            .await
            .submit_job(request)
            .await
            .unwrap()
            .into_inner()
            .job_id
    };
    let requests = receiver.wait_for(1, Duration::from_secs(10)).await;
    let body: serde_json::Value = serde_json::from_slice(&requests[0].body).unwrap();
    assert_eq!(body["status"], "FAILED");
    assert_eq!(body["id"], job);
    let record = service
        .jobs()
        .await
        .get_job(pb::GetJobRequest { job_id: job })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(record.status(), pb::JobStatus::Failed);
    assert!(record.error.contains("out of memory"), "{}", record.error);
    service.stop().await;
}

/// Callback shapes that embed images (RunPod, Cerebrium) are stored without them (the image
/// rows hold the bytes once) and assembled at send time; above `max_callback_bytes` they carry
/// the images' media URLs instead.
#[tokio::test]
async fn embedded_images_are_assembled_at_send_time_within_the_size_limit() {
    use base64::Engine;
    let receiver = Receiver::http().await;
    for (limit, inline) in [(32 << 20, true), (1, false)] {
        let service = start_with(|c| c.max_callback_bytes = limit).await;
        // A prompt shaped like an old-style placeholder is text, never an image.
        let request = submit_request(
            "sdserve-image:0",
            &receiver.url(&format!("/{limit}")),
            "runpod",
            "",
        );
        let job = service
            .jobs()
            .await
            .submit_job(request)
            .await
            .unwrap()
            .into_inner()
            .job_id;
        let seen = receiver
            .wait_for(if inline { 1 } else { 2 }, Duration::from_secs(20))
            .await;
        let body = seen.last().unwrap().json();
        let image = body["output"]["images"][0].as_str().unwrap().to_owned();
        assert_eq!(body["output"]["parameters"]["prompt"], "sdserve-image:0");
        match inline {
            true => assert_eq!(
                base64::engine::general_purpose::STANDARD
                    .decode(&image)
                    .unwrap(),
                support::inference::tiny_png()
            ),
            false => assert!(
                image.starts_with("http://") && image.contains(&format!("/media/{job}/0.png?")),
                "{image}"
            ),
        }
        let db = rusqlite::Connection::open(service.dir.path().join("jobs.db")).unwrap();
        let (delivery, stored): (String, Vec<u8>) = db
            .query_row(
                "SELECT id, payload FROM deliveries WHERE job_id = ?1",
                [&job],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        let stored = String::from_utf8(stored).unwrap();
        let placeholder = format!("\"sdserve-image:{delivery}:0\"");
        assert!(
            stored.contains(&placeholder),
            "the stored body keeps a placeholder: {stored:.300}"
        );
        service.stop().await;
    }
}
