//! Chaos: 300 jobs submitted over gRPC and the native HTTP API to the real `webhook-service`
//! binary, which is killed with SIGKILL at seeded random moments (while submissions are in
//! flight and while deliveries are pending) and restarted on the same database, delivering to a
//! receiver that fails about a third of its answers. Every job the service acknowledged must
//! reach the receiver with a 2xx answer; a job delivered twice must carry one `webhook-id`;
//! every signature must verify. `SDSERVE_CHAOS_SEED` replays a run's choices.

use crate::support;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sdserve_proto::v1 as pb;
use serde_json::{Value, json};
use support::process::{Running, command, connect, free_port};
use support::receiver::{Receiver, Recorded, Reply};
use support::rng::Rng;
use webhook_service::delivery::signing::SigningKey;

const JOBS: usize = 300;
const SUBMITTERS: usize = 4;
const SIGNING_KEY: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// What the submitters share with the test.
#[derive(Default)]
struct Ledger {
    next: AtomicUsize,
    /// Job id per job number, once acknowledged.
    acked: Mutex<BTreeMap<usize, String>>,
    via_grpc: AtomicUsize,
    /// Submission attempts that got no answer (killed process, refused connection).
    lost_answers: AtomicUsize,
    /// Retries answered `deduplicated: true`: the first attempt was stored, its answer lost.
    deduplicated: AtomicUsize,
    /// Why attempts failed, counted.
    errors: Mutex<BTreeMap<String, usize>>,
}

impl Ledger {
    fn acked_count(&self) -> usize {
        self.acked.lock().unwrap().len()
    }
}

/// The service binary under chaos: the same ports, database and log each time it starts.
struct Target {
    db: PathBuf,
    log: PathBuf,
    grpc: u16,
    http: u16,
    inference: SocketAddr,
}

impl Target {
    async fn start(&self) -> Running {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = command(&self.db, self.grpc, self.http, self.inference)
            .env("SDSERVE_SIGNING_KEY", SIGNING_KEY)
            .env("SDSERVE_PER_MINUTE", "100000")
            .env("SDSERVE_MAX_IN_FLIGHT", "100000")
            .env("SDSERVE_RETRY_SCHEDULE", ["500ms"; 20].join(","))
            .env("SDSERVE_TIMEOUT", "2s")
            .stderr(log)
            .spawn()
            .unwrap();
        Running(child)
    }

    /// `kill -9` (its time pushed onto `kills`), a seeded pause, a fresh process.
    async fn kill_and_restart(
        &self,
        service: Running,
        rng: &mut Rng,
        kills: &mut Vec<Instant>,
    ) -> Running {
        kills.push(Instant::now());
        service.kill9();
        tokio::time::sleep(Duration::from_millis(rng.range(50..600))).await;
        self.start().await
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

/// The receiver's seeded script: 70% 200 (a seventh of them answered slowly, so kills land
/// while a 2xx is on its way), 20% 500, 10% connection dropped; 200 once the script runs out.
fn script_receiver(receiver: &Receiver, rng: &mut Rng) {
    for _ in 0..4 * JOBS {
        let roll = rng.range(0..100);
        let reply = match roll {
            0..60 => Reply::ok(),
            60..70 => Reply::ok().delay(Duration::from_millis(rng.range(100..500))),
            70..90 => Reply::status(500),
            _ => Reply::drop_connection(),
        };
        receiver.push(reply);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hundred_jobs_survive_kill_9_and_a_failing_receiver() {
    let began = Instant::now();
    let seed = support::rng::seed("SDSERVE_CHAOS_SEED");
    let mut rng = Rng::new(seed);
    let (inference, _fake) = support::inference::start().await;
    let receiver = Receiver::http().await;
    script_receiver(&receiver, &mut rng);
    let dir = tempfile::tempdir().unwrap();
    let target = Target {
        db: dir.path().join("jobs.db"),
        log: dir.path().join("service.log"),
        grpc: free_port(),
        http: free_port(),
        inference,
    };
    let hook = receiver.url("/hook");

    let mut service = target.start().await;
    connect(target.grpc).await;
    let ledger = Arc::new(Ledger::default());
    let submitters: Vec<_> = (0..SUBMITTERS)
        .map(|_| {
            tokio::spawn(submit_jobs(
                ledger.clone(),
                rng.fork(),
                target.grpc,
                target.http,
                hook.clone(),
            ))
        })
        .collect();

    // Kills while submissions are in flight, each once a seeded number of jobs is acknowledged.
    let mut thresholds: Vec<usize> = (0..rng.range(3..6))
        .map(|_| rng.range(15..(JOBS as u64 - 15)) as usize)
        .collect();
    thresholds.sort_unstable();
    let mut kills = Vec::new();
    for threshold in &thresholds {
        // A submitter that stopped early has panicked: awaiting it below says why.
        let stopped = || submitters.iter().any(|s| s.is_finished());
        wait_until(
            Duration::from_secs(60),
            || ledger.acked_count() >= *threshold || stopped(),
            || {
                format!(
                    "{} of {JOBS} jobs acknowledged, waiting for {threshold}\n{}",
                    ledger.acked_count(),
                    target.log_tail()
                )
            },
        )
        .await;
        tokio::time::sleep(Duration::from_millis(rng.range(0..150))).await;
        service = target.kill_and_restart(service, &mut rng, &mut kills).await;
    }
    let kills_while_submitting = kills.len();
    for submitter in submitters {
        submitter.await.unwrap();
    }
    // More with every job acknowledged and deliveries pending.
    let mut undelivered_at_kill = Vec::new();
    for _ in 0..rng.range(1..3) {
        tokio::time::sleep(Duration::from_millis(rng.range(0..700))).await;
        undelivered_at_kill.push(JOBS - jobs_with_2xx(&receiver.requests()).len());
        service = target.kill_and_restart(service, &mut rng, &mut kills).await;
    }

    let acked: BTreeMap<usize, String> = ledger.acked.lock().unwrap().clone();
    let acked_ids: BTreeSet<String> = acked.values().cloned().collect();
    assert_eq!(
        acked.len(),
        JOBS,
        "every submission was acknowledged in the end"
    );
    assert_eq!(
        acked_ids.len(),
        JOBS,
        "one job per idempotency key: {acked:?}"
    );
    wait_until(
        Duration::from_secs(120),
        || acked_ids.is_subset(&jobs_with_2xx(&receiver.requests())),
        || {
            let missing: Vec<_> = acked_ids
                .difference(&jobs_with_2xx(&receiver.requests()))
                .cloned()
                .collect();
            format!(
                "seed {seed}: {} acknowledged jobs never got a 2xx delivery: {missing:?}\n{}",
                missing.len(),
                target.log_tail()
            )
        },
    )
    .await;

    let requests = receiver.requests();
    let report = check_posts(&requests, &acked_ids, &kills);
    check_service_view(target.grpc, &acked_ids, &report.webhook_id).await;
    drop(service);
    let log = std::fs::read_to_string(&target.log).unwrap_or_default();
    assert!(
        !log.contains("panicked"),
        "the service panicked under chaos (seed {seed}):\n{}",
        target.log_tail()
    );

    println!(
        "chaos seed {seed}: {JOBS} jobs ({} gRPC, {} HTTP), {} kills ({kills_while_submitting} while submitting, \
         then with {undelivered_at_kill:?} jobs undelivered), {} submission attempts unanswered ({} retries deduplicated; {:?}), \
         {} POSTs received ({} cut off by a kill), {} failed replies, {} duplicates after a 2xx (same webhook-id), {:.1} s",
        ledger.via_grpc.load(Ordering::SeqCst),
        JOBS - ledger.via_grpc.load(Ordering::SeqCst),
        kills.len(),
        ledger.lost_answers.load(Ordering::SeqCst),
        ledger.deduplicated.load(Ordering::SeqCst),
        ledger.errors.lock().unwrap(),
        requests.len(),
        report.cut_off,
        report.failed_replies,
        report.duplicates,
        began.elapsed().as_secs_f64(),
    );
}

/// Polls `done` every 100 ms; panics with `why()` after `limit`.
async fn wait_until(limit: Duration, mut done: impl FnMut() -> bool, why: impl FnOnce() -> String) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "after {limit:?}: {}", why());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The job id a callback is about (`data.job_id` of the standard format); None for a body cut
/// off by a kill (not JSON).
fn job_of(request: &Recorded) -> Option<String> {
    let body: Value = serde_json::from_slice(&request.body).ok()?;
    Some(
        body["data"]["job_id"]
            .as_str()
            .unwrap_or_else(|| panic!("no data.job_id in {}", request.text()))
            .to_owned(),
    )
}

fn is_2xx(request: &Recorded) -> bool {
    request.answered.is_some_and(|s| (200..300).contains(&s))
}

/// Jobs with at least one callback the receiver answered 2xx.
fn jobs_with_2xx(requests: &[Recorded]) -> BTreeSet<String> {
    requests
        .iter()
        .filter(|r| is_2xx(r))
        .filter_map(job_of)
        .collect()
}

/// What the receiver's log shows.
struct PostReport {
    /// The one webhook-id of each job.
    webhook_id: BTreeMap<String, String>,
    /// POSTs answered 500 or dropped.
    failed_replies: usize,
    /// POSTs of a job after one the receiver answered 2xx (each across a kill).
    duplicates: usize,
    /// POSTs whose body a kill cut short (not JSON); not counted above.
    cut_off: usize,
}

/// Every POST is a signed, completed callback of an acknowledged job; each job has one
/// webhook-id and each webhook-id one job; a job is POSTed again after a 2xx answer only
/// across a kill (one of `kills`, at most 1 s before that answer was recorded: the receiver
/// may record a dead process's last POST a little late).
fn check_posts(requests: &[Recorded], acked: &BTreeSet<String>, kills: &[Instant]) -> PostReport {
    let key = SigningKey::parse(SIGNING_KEY).unwrap();
    let mut ids_of_job: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut jobs_of_id: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut first_2xx: BTreeMap<String, (usize, Instant)> = BTreeMap::new();
    let (mut failed_replies, mut duplicates, mut cut_off) = (0, 0, 0);
    for (index, request) in requests.iter().enumerate() {
        assert_eq!(
            (request.method.as_str(), request.path.as_str()),
            ("POST", "/hook")
        );
        let Some(job) = job_of(request) else {
            cut_off += 1;
            continue;
        };
        assert!(
            acked.contains(&job),
            "a callback for job {job}, which the service never acknowledged"
        );
        assert_eq!(
            request.json()["type"],
            "job.completed",
            "job {job} did not complete: {}",
            request.text()
        );
        let id = request
            .header("webhook-id")
            .expect("webhook-id header")
            .to_owned();
        let timestamp: i64 = request
            .header("webhook-timestamp")
            .expect("webhook-timestamp")
            .parse()
            .unwrap();
        let signature = request
            .header("webhook-signature")
            .expect("webhook-signature");
        assert!(
            key.verify(&id, timestamp, &request.body, signature),
            "bad signature on {id} (job {job})"
        );
        ids_of_job
            .entry(job.clone())
            .or_default()
            .insert(id.clone());
        jobs_of_id
            .entry(id.clone())
            .or_default()
            .insert(job.clone());
        if let Some(&(first, answered_at)) = first_2xx.get(&job) {
            duplicates += 1;
            let since = answered_at
                .checked_sub(Duration::from_secs(1))
                .unwrap_or(answered_at);
            assert!(
                kills.iter().any(|&k| since <= k && k <= request.at),
                "job {job} ({id}) was POSTed again (request {index}) after a 2xx answer (request {first}) without a kill between"
            );
        } else if is_2xx(request) {
            first_2xx.insert(job, (index, request.at));
        }
        if !is_2xx(request) {
            failed_replies += 1;
        }
    }
    for (job, ids) in &ids_of_job {
        assert_eq!(
            ids.len(),
            1,
            "job {job} was delivered under several webhook-ids: {ids:?}"
        );
    }
    for (id, jobs) in &jobs_of_id {
        assert_eq!(
            jobs.len(),
            1,
            "webhook-id {id} was used for several jobs: {jobs:?}"
        );
    }
    let webhook_id = ids_of_job
        .into_iter()
        .map(|(job, ids)| (job, ids.into_iter().next().unwrap()))
        .collect();
    PostReport {
        webhook_id,
        failed_replies,
        duplicates,
        cut_off,
    }
}

/// The service agrees: each job has one delivery, succeeded, under the id the receiver saw.
async fn check_service_view(
    grpc: u16,
    acked: &BTreeSet<String>,
    webhook_id: &BTreeMap<String, String>,
) {
    let mut client = connect(grpc).await;
    for job in acked {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let request = pb::ListDeliveriesRequest {
                job_id: job.clone(),
            };
            let list = client
                .list_deliveries(request)
                .await
                .unwrap()
                .into_inner()
                .deliveries;
            if list.len() == 1 && list[0].status() == pb::DeliveryStatus::Succeeded {
                assert_eq!(
                    Some(&list[0].id),
                    webhook_id.get(job),
                    "job {job}'s delivery id"
                );
                break;
            }
            assert!(
                Instant::now() < deadline,
                "job {job}'s deliveries never settled: {list:#?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Takes job numbers until all are taken; submits each over gRPC or HTTP (seeded), retrying
/// with the same idempotency key until the service answers.
async fn submit_jobs(ledger: Arc<Ledger>, mut rng: Rng, grpc: u16, http: u16, hook: String) {
    let client = support::http();
    loop {
        let n = ledger.next.fetch_add(1, Ordering::SeqCst);
        if n >= JOBS {
            return;
        }
        let via_grpc = rng.chance(50);
        if via_grpc {
            ledger.via_grpc.fetch_add(1, Ordering::SeqCst);
        }
        let key = format!("chaos-{n}");
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut attempts = 0;
        loop {
            attempts += 1;
            let answer = if via_grpc {
                submit_grpc(grpc, n, &key, &hook).await
            } else {
                submit_http(&client, http, n, &key, &hook).await
            };
            match answer {
                Ok((id, deduplicated)) => {
                    if deduplicated {
                        assert!(
                            attempts > 1,
                            "job {n}: a first submission answered deduplicated"
                        );
                        ledger.deduplicated.fetch_add(1, Ordering::SeqCst);
                    }
                    ledger.acked.lock().unwrap().insert(n, id);
                    break;
                }
                Err(why) => {
                    ledger.lost_answers.fetch_add(1, Ordering::SeqCst);
                    *ledger
                        .errors
                        .lock()
                        .unwrap()
                        .entry(why.clone())
                        .or_default() += 1;
                    assert!(
                        Instant::now() < deadline,
                        "job {n}: no answer within 60 s; last: {why}"
                    );
                    tokio::time::sleep(Duration::from_millis(rng.range(20..120))).await;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(rng.range(0..30))).await;
    }
}

/// One gRPC submission: `Ok((job_id, deduplicated))`, or `Err(kind)` when the call got no
/// answer from the service (it was killed or is starting). A refusal fails the test.
async fn submit_grpc(port: u16, n: usize, key: &str, hook: &str) -> Result<(String, bool), String> {
    let endpoint =
        tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}")).unwrap();
    let channel = endpoint
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(10));
    let mut client = match channel.connect().await {
        Ok(channel) => sdserve_proto::v1::jobs_client::JobsClient::new(channel),
        Err(_) => return Err("grpc connect".into()),
    };
    let mut request = support::service::submit_request(&format!("chaos {n}"), hook, "standard", "");
    request.idempotency_key = key.to_owned();
    match client.submit_job(request).await {
        Ok(answer) => {
            let answer = answer.into_inner();
            Ok((answer.job_id, answer.deduplicated))
        }
        Err(status) if gone(&status) => Err(format!("grpc {:?}", status.code())),
        Err(status) => panic!("job {n}: gRPC submission refused: {status:?}"),
    }
}

/// Whether a gRPC error means the call never got the service's answer.
fn gone(status: &tonic::Status) -> bool {
    use tonic::Code;
    match status.code() {
        Code::Unavailable | Code::Unknown | Code::Cancelled | Code::DeadlineExceeded => true,
        // hyper/h2 errors of a connection reset mid-call surface as Internal.
        Code::Internal => {
            let text = format!("{status:?}").to_ascii_lowercase();
            [
                "h2 protocol",
                "transport",
                "connection",
                "broken pipe",
                "reset",
            ]
            .iter()
            .any(|w| text.contains(w))
        }
        _ => false,
    }
}

/// One HTTP `/v1/jobs` submission, as [`submit_grpc`].
async fn submit_http(
    client: &reqwest::Client,
    port: u16,
    n: usize,
    key: &str,
    hook: &str,
) -> Result<(String, bool), String> {
    let body = json!({
        "params": {"prompt": format!("chaos {n}"), "steps": 4},
        "webhook": {"url": hook, "format": "standard"},
        "idempotency_key": key,
    });
    let sent = client
        .post(format!("http://127.0.0.1:{port}/v1/jobs"))
        .timeout(Duration::from_secs(10))
        .json(&body)
        .send()
        .await;
    let response = match sent {
        Ok(response) => response,
        Err(e) => {
            return Err(format!(
                "http {}",
                if e.is_connect() { "connect" } else { "request" }
            ));
        }
    };
    let status = response.status();
    let Ok(text) = response.text().await else {
        return Err("http body".into());
    };
    if status == reqwest::StatusCode::SERVICE_UNAVAILABLE {
        return Err("http 503".into());
    }
    assert_eq!(
        status,
        reqwest::StatusCode::ACCEPTED,
        "job {n}: HTTP submission refused: {text}"
    );
    let answer: Value = serde_json::from_str(&text).unwrap();
    Ok((
        answer["job_id"].as_str().unwrap().to_owned(),
        answer["deduplicated"].as_bool().unwrap(),
    ))
}
