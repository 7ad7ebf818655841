//! The guarded webhook client against real loopback receivers: responses and their excerpts,
//! redirects not followed, time limits, Retry-After, verified TLS and the address policy.

use crate::support;

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime};

use support::receiver::{Receiver, Reply};
use webhook_service::delivery::client::{ClientConfig, FailureKind, SendOutcome, WebhookClient};

const SECRET: &str = "s3cr3t-bearer-value";
const WAIT: Duration = Duration::from_secs(5);

fn loopback() -> ipnet::IpNet {
    "127.0.0.0/8".parse().unwrap()
}

/// Plain HTTP to 127.0.0.0/8 allowed; otherwise the defaults.
fn local_config() -> ClientConfig {
    ClientConfig {
        allow_http: true,
        allow_private: vec![loopback()],
        ..ClientConfig::default()
    }
}

fn client(config: &ClientConfig) -> WebhookClient {
    WebhookClient::new(config).expect("client")
}

fn headers() -> Vec<(String, String)> {
    vec![
        ("content-type".into(), "application/json".into()),
        ("webhook-id".into(), "msg_1".into()),
        ("authorization".into(), format!("Bearer {SECRET}")),
    ]
}

async fn send(client: &WebhookClient, url: &str) -> SendOutcome {
    client
        .send(url, &headers(), br#"{"type":"job.completed"}"#.to_vec())
        .await
}

/// The failure's kind and reason; panics on a response. Checks the reason leaks no header value.
fn failure(outcome: SendOutcome) -> (FailureKind, String) {
    match outcome {
        SendOutcome::Failed { kind, reason } => {
            assert!(
                !reason.contains(SECRET),
                "reason leaks a header value: {reason}"
            );
            assert!(!reason.is_empty());
            (kind, reason)
        }
        other => panic!("expected a failure, got {other:?}"),
    }
}

fn status(outcome: &SendOutcome) -> u16 {
    match outcome {
        SendOutcome::Response { status, .. } => *status,
        other => panic!("expected a response, got {other:?}"),
    }
}

/// Every receiver here is on loopback, admitted only by the private-address allowlist: its
/// answer is never kept (only its size), so ListDeliveries cannot be used to read internal
/// services. (`excerpt`'s bounds for public receivers are unit-tested in `delivery::client`.)
#[tokio::test]
async fn ok_response_is_returned_without_a_private_receivers_body_and_the_request_arrives_intact() {
    let receiver = Receiver::http().await;
    receiver.push(Reply::status(200).body("thanks"));
    let outcome = send(&client(&local_config()), &receiver.url("/hook?x=1")).await;
    let body_excerpt = "(6 bytes; not kept: the receiver is at a private address)".to_owned();
    assert_eq!(
        outcome,
        SendOutcome::Response {
            status: 200,
            retry_after: None,
            body_excerpt
        }
    );

    let seen = receiver.wait_for(1, WAIT).await;
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].method, "POST");
    assert_eq!(seen[0].path, "/hook?x=1");
    assert_eq!(seen[0].header("webhook-id"), Some("msg_1"));
    assert_eq!(
        seen[0].header("Authorization"),
        Some(format!("Bearer {SECRET}").as_str())
    );
    assert!(
        seen[0]
            .header("user-agent")
            .unwrap()
            .starts_with("sdserve-webhook/")
    );
    assert_eq!(seen[0].json()["type"], "job.completed");
}

#[tokio::test]
async fn a_large_body_is_read_only_up_to_the_limit_and_the_call_returns() {
    let receiver = Receiver::http().await;
    receiver.push(Reply::status(200).body(vec![b'x'; 200 * 1024]));
    let started = Instant::now();
    let outcome = send(&client(&local_config()), &receiver.url("/big")).await;
    assert!(started.elapsed() < WAIT);
    match outcome {
        SendOutcome::Response {
            status: 200,
            body_excerpt,
            ..
        } => {
            let read: usize = body_excerpt
                .trim_start_matches('(')
                .split(' ')
                .next()
                .unwrap()
                .parse()
                .unwrap();
            assert!(
                (64 * 1024..200 * 1024).contains(&read),
                "read {read} bytes: {body_excerpt}"
            );
        }
        other => panic!("expected 200, got {other:?}"),
    }
}

#[tokio::test]
async fn an_endless_body_stops_being_read_past_the_limit() {
    let receiver = Receiver::http().await;
    receiver.push(Reply::endless_body(500));
    // Were the client to read on past max_response_bytes, only the 3 s total limit would stop it.
    let config = ClientConfig {
        timeout: Duration::from_secs(3),
        ..local_config()
    };
    let started = Instant::now();
    let outcome = send(&client(&config), &receiver.url("/endless")).await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    match outcome {
        SendOutcome::Response {
            status: 500,
            body_excerpt,
            ..
        } => assert!(body_excerpt.contains("not kept"), "{body_excerpt}"),
        other => panic!("expected 500, got {other:?}"),
    }
}

#[tokio::test]
async fn redirects_are_returned_not_followed() {
    let receiver = Receiver::http().await;
    receiver.push(Reply::status(302).header("location", &receiver.url("/elsewhere")));
    let outcome = send(&client(&local_config()), &receiver.url("/hook")).await;
    assert_eq!(status(&outcome), 302);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let paths: Vec<String> = receiver.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(paths, ["/hook"]);
}

#[tokio::test]
async fn a_receiver_that_never_answers_times_out() {
    let receiver = Receiver::http().await;
    receiver.set_default(Reply::hang());
    let config = ClientConfig {
        timeout: Duration::from_millis(300),
        ..local_config()
    };
    let started = Instant::now();
    let (kind, reason) = failure(send(&client(&config), &receiver.url("/slow")).await);
    let elapsed = started.elapsed();
    assert_eq!(kind, FailureKind::Timeout, "{reason}");
    assert_eq!(kind.to_string(), "timeout");
    assert!(
        elapsed >= Duration::from_millis(250) && elapsed < Duration::from_secs(2),
        "{elapsed:?}"
    );
    assert_eq!(receiver.wait_for(1, WAIT).await.len(), 1);
}

#[tokio::test]
async fn retry_after_is_read_in_both_forms() {
    let receiver = Receiver::http().await;
    let client = client(&local_config());
    receiver.push(Reply::status(503).header("retry-after", "120"));
    match send(&client, &receiver.url("/")).await {
        SendOutcome::Response {
            status: 503,
            retry_after,
            ..
        } => assert_eq!(retry_after, Some(Duration::from_secs(120))),
        other => panic!("expected 503, got {other:?}"),
    }

    let date = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(600));
    receiver.push(Reply::status(429).header("Retry-After", &date));
    match send(&client, &receiver.url("/")).await {
        SendOutcome::Response {
            status: 429,
            retry_after: Some(after),
            ..
        } => {
            assert!(
                after > Duration::from_secs(590) && after <= Duration::from_secs(600),
                "{after:?}"
            );
        }
        other => panic!("expected 429 with Retry-After, got {other:?}"),
    }

    receiver.push(Reply::status(503).header("retry-after", "whenever"));
    match send(&client, &receiver.url("/")).await {
        SendOutcome::Response {
            status: 503,
            retry_after,
            ..
        } => assert_eq!(retry_after, None),
        other => panic!("expected 503, got {other:?}"),
    }
}

#[tokio::test]
async fn https_is_verified_against_the_configured_ca() {
    let receiver = Receiver::https().await;
    let trusting = ClientConfig {
        extra_ca_pem: Some(receiver.ca_pem()),
        allow_private: vec![loopback()],
        ..ClientConfig::default()
    };
    let outcome = send(&client(&trusting), &receiver.url("/secure")).await;
    assert_eq!(status(&outcome), 200);
    assert_eq!(receiver.wait_for(1, WAIT).await[0].path, "/secure");

    let stranger = Receiver::https().await;
    let (kind, reason) = failure(send(&client(&trusting), &stranger.url("/secure")).await);
    assert_eq!(kind, FailureKind::Tls, "{reason}");
    assert!(reason.contains("certificate"), "{reason}");
    assert!(
        stranger.connections() >= 1,
        "the TLS handshake should have been attempted"
    );
    assert!(stranger.requests().is_empty());

    let webpki_only = ClientConfig {
        allow_private: vec![loopback()],
        ..ClientConfig::default()
    };
    let (kind, _) = failure(send(&client(&webpki_only), &receiver.url("/again")).await);
    assert_eq!(kind, FailureKind::Tls);
    assert_eq!(receiver.requests().len(), 1);
}

#[tokio::test]
async fn plain_http_is_refused_unless_allowed() {
    let receiver = Receiver::http().await;
    let config = ClientConfig {
        allow_http: false,
        ..local_config()
    };
    let (kind, reason) = failure(send(&client(&config), &receiver.url("/")).await);
    assert_eq!(kind, FailureKind::Refused);
    assert_eq!(kind.to_string(), "refused");
    assert!(reason.contains("http://"), "{reason}");
    let (kind, _) = failure(send(&client(&config), "ftp://example.com/").await);
    assert_eq!(kind, FailureKind::Refused);
    let (kind, reason) = failure(send(&client(&config), "not a url").await);
    assert_eq!(kind, FailureKind::Refused);
    assert!(reason.contains("invalid URL"), "{reason}");
    assert_eq!(receiver.connections(), 0);
}

#[tokio::test]
async fn loopback_names_are_refused_unless_allowlisted() {
    let receiver = Receiver::http().await;
    let url = format!("http://localhost:{}/hook", receiver.addr().port());
    let closed = ClientConfig {
        allow_http: true,
        ..ClientConfig::default()
    };
    let (kind, reason) = failure(send(&client(&closed), &url).await);
    assert_eq!(kind, FailureKind::Refused);
    assert!(reason.contains("loopback"), "{reason}");
    assert_eq!(receiver.connections(), 0);

    let bare = format!("http://127.0.0.1:{}/hook", receiver.addr().port());
    let (kind, reason) = failure(send(&client(&closed), &bare).await);
    assert_eq!(kind, FailureKind::Refused);
    assert!(reason.contains("loopback"), "{reason}");
    assert_eq!(receiver.connections(), 0);

    assert_eq!(status(&send(&client(&local_config()), &url).await), 200);
    assert_eq!(receiver.wait_for(1, WAIT).await.len(), 1);
}

#[tokio::test]
async fn private_addresses_are_refused_before_any_connection() {
    let mut config = local_config();
    config.resolve_overrides = HashMap::from([(
        "internal.test".to_owned(),
        vec!["10.0.0.5".parse().unwrap()],
    )]);
    config.connect_timeout = Duration::from_millis(500);
    let client = client(&config);

    let started = Instant::now();
    let (kind, reason) = failure(send(&client, "http://internal.test/hook").await);
    assert_eq!(kind, FailureKind::Refused, "{reason}");
    assert_eq!(
        format!("{kind}: {reason}"),
        "refused: internal.test resolves only to 10.0.0.5 (private address)"
    );
    assert!(
        started.elapsed() < Duration::from_millis(400),
        "no connection should have been tried"
    );

    let (kind, reason) = failure(send(&client, "http://10.1.2.3/hook").await);
    assert_eq!(kind, FailureKind::Refused, "{reason}");
    assert!(
        reason.contains("10.1.2.3") && reason.contains("private"),
        "{reason}"
    );

    let (kind, reason) = failure(send(&client, "https://[fd00::1]/hook").await);
    assert_eq!(kind, FailureKind::Refused, "{reason}");
    assert!(reason.contains("unique-local"), "{reason}");
}

#[tokio::test]
async fn ipv4_mapped_ipv6_is_refused_even_when_its_ipv4_part_is_allowed() {
    let receiver = Receiver::http().await;
    let url = format!("http://[::ffff:127.0.0.1]:{}/hook", receiver.addr().port());
    let (kind, reason) = failure(send(&client(&local_config()), &url).await);
    assert_eq!(kind, FailureKind::Refused, "{reason}");
    assert!(reason.contains("IPv4-mapped"), "{reason}");
    assert_eq!(receiver.connections(), 0);
}

#[tokio::test]
async fn connection_failures_are_classified() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let (kind, reason) = failure(
        send(
            &client(&local_config()),
            &format!("http://127.0.0.1:{port}/"),
        )
        .await,
    );
    assert_eq!(kind, FailureKind::Connect, "{reason}");
    assert_eq!(kind.to_string(), "connect");

    let receiver = Receiver::http().await;
    receiver.set_default(Reply::drop_connection());
    let (kind, reason) = failure(send(&client(&local_config()), &receiver.url("/")).await);
    assert_eq!(kind, FailureKind::Other, "{reason}");
}
