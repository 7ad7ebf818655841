//! Scale-out: two `webhook-service` replicas (the real binary) share one PostgreSQL database and
//! three inference servers. Mid-run one replica is killed with SIGKILL and one inference server
//! dies (its listener closed, its open calls failing); every job must still complete, and each
//! job's callbacks must carry one `webhook-id` (a delivery cut off by the kill is sent again by
//! the other replica under the same id).

use crate::support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use sdserve_proto::v1 as pb;
use support::inference::Killable;
use support::process::{Running, free_port};
use support::receiver::{Receiver, Recorded};

const JOBS: usize = 60;

/// A replica on `url`, generating on `inference`, with a short job lease so that the other
/// replica takes over a dead one's jobs within seconds.
fn replica(
    url: &str,
    dir: &std::path::Path,
    name: &str,
    inference: &[std::net::SocketAddr],
) -> (Running, u16) {
    let (grpc, http) = (free_port(), free_port());
    let log = std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
    let child = support::process::command(&dir.join("unused.db"), grpc, http, inference[0])
        .env("SDSERVE_DATABASE", url)
        .env("SDSERVE_SECRETS_KEY_FILE", dir.join("secrets.key"))
        .env("SDSERVE_SPOOL_DIR", dir.join(format!("{name}.spool")))
        .env(
            "SDSERVE_INFERENCE",
            inference
                .iter()
                .map(|a| format!("http://{a}"))
                .collect::<Vec<_>>()
                .join(","),
        )
        .env("SDSERVE_JOB_LEASE", "3s")
        .env("SDSERVE_GENERATION_CONCURRENCY", "3")
        .env("SDSERVE_RETRY_SCHEDULE", ["500ms"; 20].join(","))
        .env("SDSERVE_PER_MINUTE", "100000")
        .env("SDSERVE_MAX_IN_FLIGHT", "100000")
        .stderr(log)
        .spawn()
        .unwrap();
    (Running(child), grpc)
}

/// A client of the replica `name` on `grpc`, or a panic showing its log when it does not start.
async fn connect_or_log(
    grpc: u16,
    dir: &std::path::Path,
    name: &str,
) -> sdserve_proto::v1::jobs_client::JobsClient<tonic::transport::Channel> {
    let url = format!("http://127.0.0.1:{grpc}");
    for _ in 0..300 {
        if let Ok(client) = sdserve_proto::v1::jobs_client::JobsClient::connect(url.clone()).await {
            return client;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let log = std::fs::read_to_string(dir.join(format!("{name}.log"))).unwrap_or_default();
    panic!("replica {name} did not start on port {grpc}; its log:\n{log}");
}

/// The job a callback is about; None for a body cut off by the kill (not JSON).
fn job_of(request: &Recorded) -> Option<String> {
    let body: serde_json::Value = serde_json::from_slice(&request.body).ok()?;
    body["data"]["job_id"].as_str().map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_and_three_servers_survive_losing_one_of_each() {
    let Some(db) = support::postgres::database("replicas").await else {
        return;
    };
    let url = db.url.clone();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("secrets.key"), rand::random::<[u8; 32]>()).unwrap();
    let fakes = [
        Killable::start().await,
        Killable::start().await,
        Killable::start().await,
    ];
    let servers: Vec<_> = fakes.iter().map(|f| f.addr).collect();
    let receiver = Receiver::http().await;
    let (a, grpc_a) = replica(&url, dir.path(), "a", &servers);
    let (b, grpc_b) = replica(&url, dir.path(), "b", &servers);
    let mut clients = [
        connect_or_log(grpc_a, dir.path(), "a").await,
        connect_or_log(grpc_b, dir.path(), "b").await,
    ];

    // Jobs alternate between the replicas; every fourth is slow (3 s on its server), so the
    // kill below lands while generations and deliveries are in flight on both.
    let mut ids = BTreeSet::new();
    for n in 0..JOBS {
        let prompt = if n % 4 == 0 {
            "slow".to_owned()
        } else {
            format!("job {n}")
        };
        let request =
            support::service::submit_request(&prompt, &receiver.url("/hook"), "standard", "");
        let reply = clients[n % 2]
            .submit_job(request)
            .await
            .unwrap()
            .into_inner();
        ids.insert(reply.job_id);
    }
    // Both replicas dispatch: wait until some jobs are delivered, then kill one replica and
    // take one inference server down.
    let started = Instant::now();
    while receiver.requests().len() < JOBS / 4 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no progress: {} callbacks",
            receiver.requests().len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let delivered_at_kill = receiver.requests().len();
    // The jobs replica a holds (its replica name starts with its pid) when it dies: the other
    // replica must take each of them over once its lease runs out.
    let orphans: Vec<String> = db
        .raw()
        .await
        .query(
            "SELECT id FROM jobs WHERE status IN ('queued', 'running') AND claimed_by LIKE $1",
            &[&format!("{}-%", a.0.id())],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    a.kill9();
    fakes[1].kill();

    // Every job completes: the survivor takes over the dead replica's jobs (their leases run
    // out) and its unfinished deliveries, on the two servers left.
    let mut client = clients[1].clone();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let delivered: BTreeSet<String> = receiver.requests().iter().filter_map(job_of).collect();
        if ids.iter().all(|id| delivered.contains(id)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {JOBS} jobs delivered two minutes after the kill; replica b's log:\n{}",
            delivered.len(),
            std::fs::read_to_string(dir.path().join("b.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        !orphans.is_empty(),
        "the kill should land while replica a runs jobs"
    );
    for id in &ids {
        let job = client
            .get_job(pb::GetJobRequest { job_id: id.clone() })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(job.status(), pb::JobStatus::Completed, "job {id}: {job:?}");
    }
    // One webhook-id per job, however many times it was sent.
    let mut webhook_ids: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for request in receiver.requests() {
        let Some(job) = job_of(&request) else {
            continue;
        };
        webhook_ids
            .entry(job)
            .or_default()
            .insert(request.header("webhook-id").unwrap_or_default().to_owned());
    }
    for (job, seen) in &webhook_ids {
        assert_eq!(
            seen.len(),
            1,
            "job {job} was delivered under several webhook-ids: {seen:?}"
        );
    }
    let calls: Vec<usize> = fakes
        .iter()
        .map(|f| f.fake.calls.load(Ordering::SeqCst))
        .collect();
    assert!(
        calls.iter().all(|&c| c > 0),
        "every server generated before the fault: {calls:?}"
    );
    eprintln!(
        "replicas: {JOBS} jobs, {delivered_at_kill} callbacks before the kill, {} jobs held by the killed replica (all completed by the other), {} POSTs in all, calls per server {calls:?}",
        orphans.len(),
        receiver.requests().len()
    );
    drop(b);
}
