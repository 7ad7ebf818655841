//! Request-parser fuzzing: thousands of seeded random and mutated bodies sent to every HTTP
//! route that takes one (native, RunPod, A1111, Cerebrium, Diffute, Leonardo). Every answer
//! must be a 2xx or 4xx with a JSON body: no panic (a dropped connection), no 5xx. A request
//! that gets no answer is sent once more on a fresh connection (and the run prints it): only a
//! request that fails twice is a finding. `SDSERVE_FUZZ_SEED` replays a run's bodies (the
//! interleaving of the concurrent senders is not replayed).

use crate::support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use reqwest::Method;
use serde_json::{Value, json};
use support::receiver::Receiver;
use support::rng::Rng;
use support::service::{Service, test_config};

/// Bodies sent in all, unless the time runs out first.
const BODIES: usize = 4000;
/// The time bound on sending them.
const BUDGET: Duration = Duration::from_secs(12);
const SENDERS: usize = 8;

/// A route and bodies it accepts, which the mutations start from.
struct Route {
    method: Method,
    path: &'static str,
    valid: Vec<Value>,
}

fn routes(hook: &str) -> Vec<Route> {
    let png = base64::engine::general_purpose::STANDARD.encode(support::inference::tiny_png());
    let txt2img = json!({"prompt": "a fox", "steps": 4, "width": 64, "height": 64, "sampler_name": "Euler a", "seed": 5, "batch_size": 1});
    let runpod_api = json!({"method": "POST", "endpoint": "/sdapi/v1/txt2img"});
    let route = |method: Method, path, valid| Route {
        method,
        path,
        valid,
    };
    vec![
        route(
            Method::POST,
            "/v1/jobs",
            vec![
                json!({"params": txt2img, "webhook": {"url": hook, "format": "standard", "events": ["completed"]}, "idempotency_key": "k"}),
                json!({"params": {"prompt": "b", "steps": 3}, "webhook": {"url": hook, "secret": "tok", "format": "runpod"}}),
            ],
        ),
        route(
            Method::POST,
            "/v2/ep-1/run",
            vec![
                json!({"input": {"api": runpod_api, "payload": txt2img}, "webhook": hook}),
                json!({"input": {"api": {"method": "GET", "endpoint": "/sdapi/v1/samplers"}, "payload": {}}, "webhook": hook}),
            ],
        ),
        route(
            Method::POST,
            "/v2/ep-1/runsync",
            vec![
                json!({"input": {"api": runpod_api, "payload": txt2img}, "policy": {"executionTimeout": 60000}}),
            ],
        ),
        route(Method::POST, "/sdapi/v1/txt2img", vec![txt2img.clone()]),
        route(
            Method::POST,
            "/sdapi/v1/img2img",
            vec![
                json!({"prompt": "a cat", "steps": 3, "init_images": [png], "denoising_strength": 0.5}),
                json!({"prompt": "a cat", "steps": 3, "init_images": [format!("data:image/png;base64,{png}")]}),
            ],
        ),
        route(
            Method::POST,
            "/sdapi/v1/options",
            vec![json!({"sd_model_checkpoint": "tiny-sd1"})],
        ),
        route(
            Method::POST,
            "/sdapi/v1/png-info",
            vec![json!({"image": format!("data:image/png;base64,{png}")})],
        ),
        route(
            Method::POST,
            "/tiny-sd1/predict",
            vec![
                json!({"prompt": "a lighthouse", "webhook_endpoint": hook, "num_inference_steps": 4}),
                json!({"prompt": "a lighthouse", "batch_size": 1, "num_inference_steps": 4}),
            ],
        ),
        route(
            Method::PUT,
            "/org-1/proj-1/media/inference",
            vec![json!({
                "prompts": [{"name": "Ansel_Adams", "prompt": "Yosemite", "num_images": 1, "height": 512, "width": 512, "style": "photo"}],
                "webhook": hook, "secret": "s3cret", "pretrained_model_name": "stabilityai/stable-diffusion-xl-base-1.0", "name": "Houston",
            })],
        ),
        route(
            Method::POST,
            "/api/rest/v1/generations",
            vec![
                json!({"prompt": "a lighthouse", "num_images": 1, "num_inference_steps": 10, "width": 512, "height": 512, "seed": 7}),
            ],
        ),
    ]
}

/// A value meant to trip a parser or validator: wrong types, extremes, odd strings, nesting.
fn odd_value(rng: &mut Rng, depth: u32) -> Value {
    const STRINGS: &[&str] = &[
        "",
        " ",
        "-1",
        "NaN",
        "null",
        "\u{0}",
        "💥\u{202e}",
        "../../etc/passwd",
        "http://127.0.0.1:1/x",
        "http://[::1]:1/",
        "ftp://x/",
        "data:image/png;base64,",
        "data:image/png;base64,AAAA",
        "iVBORw0KGgo=",
        "Euler a",
        "tiny-sd1",
        "/sdapi/v1/txt2img",
        "GET",
        "job.completed",
        "standard",
        "1e999",
        "\"}{",
    ];
    match rng.range(0..14) {
        0 => Value::Null,
        1 => json!(rng.chance(50)),
        2 => json!(*rng.pick(&[
            0i64,
            -1,
            1,
            2,
            7,
            64,
            150,
            151,
            4096,
            65536,
            i32::MAX as i64,
            i64::MIN,
            i64::MAX
        ])),
        3 => json!(u64::MAX),
        4 => json!(*rng.pick(&[0.5f64, -0.0, 1e-300, 1e300, -1e300, 3.999, 7.5])),
        5 | 6 => json!(*rng.pick(STRINGS)),
        7 => json!("x".repeat(rng.range(0..20_000) as usize)),
        8 => json!(
            (0..rng.range(1..40))
                .map(|_| char::from_u32(rng.range(0..0x11000) as u32).unwrap_or('?'))
                .collect::<String>()
        ),
        9 | 10 if depth < 3 => Value::Array(
            (0..rng.range(0..4))
                .map(|_| odd_value(rng, depth + 1))
                .collect(),
        ),
        11 | 12 if depth < 3 => {
            let keys = [
                "prompt", "steps", "url", "webhook", "input", "api", "payload", "image", "x", "",
            ];
            Value::Object(
                (0..rng.range(0..4))
                    .map(|_| (rng.pick(&keys).to_string(), odd_value(rng, depth + 1)))
                    .collect(),
            )
        }
        _ => json!([]),
    }
}

/// JSON pointers to every node of `value`.
fn pointers(value: &Value, at: String, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => map.iter().for_each(|(k, v)| {
            pointers(
                v,
                format!("{at}/{}", k.replace('~', "~0").replace('/', "~1")),
                out,
            )
        }),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .for_each(|(i, v)| pointers(v, format!("{at}/{i}"), out)),
        _ => {}
    }
    out.push(at);
}

/// A valid body with one to three nodes replaced, removed or added.
fn mutate_json(rng: &mut Rng, valid: &Value) -> Value {
    let mut body = valid.clone();
    for _ in 0..rng.range(1..4) {
        let mut all = Vec::new();
        pointers(&body, String::new(), &mut all);
        let at = rng.pick(&all).clone();
        let replacement = odd_value(rng, 0);
        let Some(node) = body.pointer_mut(&at) else {
            continue;
        };
        match node {
            Value::Object(map) if rng.chance(50) && !map.is_empty() => {
                let key = map.keys().nth(rng.below(map.len())).unwrap().clone();
                map.remove(&key);
            }
            Value::Object(map) if rng.chance(50) => {
                map.insert(format!("k{}", rng.range(0..5)), replacement);
            }
            _ => *node = replacement,
        }
    }
    body
}

/// A valid body's bytes with a few bytes flipped, cut, inserted or repeated.
fn mutate_bytes(rng: &mut Rng, valid: &Value) -> Vec<u8> {
    let mut bytes = serde_json::to_vec(valid).unwrap();
    for _ in 0..rng.range(1..5) {
        let at = rng.below(bytes.len() + 1);
        match rng.range(0..5) {
            0 if at < bytes.len() => bytes[at] = rng.range(0..256) as u8,
            1 => bytes.truncate(at),
            2 => bytes.insert(at, *rng.pick(b"{}[]\":,\\0-.e\x00\xff ")),
            3 if at < bytes.len() => {
                let end = (at + rng.range(1..30) as usize).min(bytes.len());
                let slice = bytes[at..end].to_vec();
                bytes.splice(at..at, slice);
            }
            _ if at < bytes.len() => {
                bytes.remove(at);
            }
            _ => {}
        }
    }
    bytes
}

/// Arbitrary bytes, sometimes from JSON's alphabet.
fn random_bytes(rng: &mut Rng) -> Vec<u8> {
    let len = rng.range(0..300) as usize;
    if rng.chance(50) {
        (0..len).map(|_| rng.range(0..256) as u8).collect()
    } else {
        (0..len)
            .map(|_| *rng.pick(b"{}[]\":,0123456789.-eEtruefalsnl \\\"ab"))
            .collect()
    }
}

/// One body for `route`: a JSON mutation (60%), a byte mutation (25%) or random bytes.
fn body_for(rng: &mut Rng, route: &Route) -> Vec<u8> {
    let valid = rng.pick(&route.valid);
    match rng.range(0..100) {
        0..60 => serde_json::to_vec(&mutate_json(rng, valid)).unwrap(),
        60..85 => mutate_bytes(rng, valid),
        _ => random_bytes(rng),
    }
}

fn excerpt(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    text.chars().take(300).collect()
}

/// How one body fared.
enum Outcome {
    /// A 2xx or 4xx with a JSON body; the status.
    Fine(u16),
    /// The same, but only on a fresh connection: the pooled one closed under the request.
    FineOnRetry(u16, String),
    /// Anything else, described.
    Finding(String),
}

/// Sends `body` on `client`'s pooled connections. A request that gets no answer is sent again
/// on a fresh connection: a handler that panics drops that one too, while a keep-alive
/// connection closing under a request (a race of HTTP/1.1 connection reuse) does not repeat.
async fn check(
    client: &reqwest::Client,
    base: &str,
    route: &Route,
    body: Vec<u8>,
    content_type: Option<&str>,
) -> Outcome {
    let send = |client: &reqwest::Client, body: Vec<u8>| {
        let mut request = client
            .request(route.method.clone(), format!("{base}{}", route.path))
            .timeout(Duration::from_secs(30));
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        request.body(body).send()
    };
    let (shown, shown_len) = (excerpt(&body), body.len());
    let finding = |status: String, answer: String| {
        Outcome::Finding(format!(
            "{} {} ({content_type:?}) answered {status}: {answer}\n  body: {shown}",
            route.method, route.path
        ))
    };
    let (response, retried) = match send(client, body.clone()).await {
        Ok(response) => (response, None),
        Err(first) => {
            let fresh = reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .build()
                .unwrap();
            match send(&fresh, body).await {
                Ok(response) => {
                    let what = format!(
                        "{} {} ({content_type:?}, {} bytes, then {})",
                        route.method,
                        route.path,
                        shown_len,
                        response.status()
                    );
                    (response, Some(format!("{what}: {first:?}")))
                }
                Err(e) => {
                    return finding(
                        "no answer twice (a panic drops the connection)".into(),
                        format!("{first:?}; then {e:?}"),
                    );
                }
            }
        }
    };
    let status = response.status();
    let answer = response.bytes().await.unwrap_or_default();
    let json = serde_json::from_slice::<Value>(&answer).is_ok();
    match retried {
        _ if !(status.is_success() || status.is_client_error()) || !json => {
            finding(status.to_string(), excerpt(&answer))
        }
        Some(first) => Outcome::FineOnRetry(status.as_u16(), first),
        None => Outcome::Fine(status.as_u16()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_and_mutated_bodies_get_a_json_2xx_or_4xx_on_every_route() {
    let seed = support::rng::seed("SDSERVE_FUZZ_SEED");
    let mut rng = Rng::new(seed);
    let (inference, _) = support::inference::start().await;
    let receiver = Receiver::http().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(&dir, inference);
    // Valid bodies should get as far as a stored job, not stop at a rate limit.
    config.per_minute = 1_000_000;
    config.max_in_flight = 1_000_000;
    config.sync_wait = Duration::from_secs(2);
    let service = Service::start(config, dir).await;
    let base = format!("http://{}", service.http);
    let routes = Arc::new(routes(&receiver.url("/hook")));
    let client = support::http();

    // The starting points are accepted as they are: the mutations start from working requests.
    for route in routes.iter() {
        for valid in &route.valid {
            let response = client
                .request(route.method.clone(), format!("{base}{}", route.path))
                .json(valid)
                .send()
                .await
                .unwrap();
            let status = response.status();
            assert!(
                status.is_success(),
                "{} {} refused its valid body ({status}): {}",
                route.method,
                route.path,
                response.text().await.unwrap()
            );
        }
    }

    let began = Instant::now();
    let sent = Arc::new(AtomicUsize::new(0));
    let per_route = Arc::new(Mutex::new(vec![0usize; routes.len()]));
    let findings = Arc::new(Mutex::new(Vec::new()));
    let retried = Arc::new(Mutex::new(Vec::new()));
    let statuses = Arc::new(Mutex::new(std::collections::BTreeMap::<u16, usize>::new()));
    let senders: Vec<_> = (0..SENDERS)
        .map(|_| {
            let (mut rng, routes, sent, per_route) =
                (rng.fork(), routes.clone(), sent.clone(), per_route.clone());
            let (findings, retried, statuses) =
                (findings.clone(), retried.clone(), statuses.clone());
            let (client, base) = (client.clone(), base.clone());
            tokio::spawn(async move {
                while sent.fetch_add(1, Ordering::SeqCst) < BODIES && began.elapsed() < BUDGET {
                    let index = rng.below(routes.len());
                    let body = body_for(&mut rng, &routes[index]);
                    let content_type = match rng.range(0..20) {
                        0 => None,
                        1 => Some("text/plain"),
                        _ => Some("application/json"),
                    };
                    per_route.lock().unwrap()[index] += 1;
                    match check(&client, &base, &routes[index], body, content_type).await {
                        Outcome::Fine(status) => {
                            *statuses.lock().unwrap().entry(status).or_default() += 1
                        }
                        Outcome::FineOnRetry(status, first) => {
                            *statuses.lock().unwrap().entry(status).or_default() += 1;
                            retried.lock().unwrap().push(first);
                        }
                        Outcome::Finding(finding) => findings.lock().unwrap().push(finding),
                    }
                }
            })
        })
        .collect();
    for sender in senders {
        sender.await.unwrap();
    }
    let elapsed = began.elapsed();
    let per_route = per_route.lock().unwrap().clone();
    let total: usize = per_route.iter().sum();
    let retried = retried.lock().unwrap().clone();
    println!(
        "fuzz seed {seed}: {total} bodies in {:.1} s over {} routes: {per_route:?}; answers {:?}; {} answered only on a fresh connection: {retried:?}",
        elapsed.as_secs_f64(),
        routes.len(),
        statuses.lock().unwrap(),
        retried.len()
    );

    let findings = findings.lock().unwrap().clone();
    assert!(
        findings.is_empty(),
        "seed {seed}: {} of {total} answers were not a JSON 2xx/4xx; first ones:\n{}",
        findings.len(),
        findings[..findings.len().min(10)].join("\n")
    );
    assert!(total >= 1000, "only {total} bodies sent within {BUDGET:?}");
    assert!(
        per_route.iter().all(|&n| n >= 20),
        "every route gets bodies: {per_route:?}"
    );
    let health = client.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200, "the service is still alive");
    service.stop().await;
}
