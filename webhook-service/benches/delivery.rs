//! Delivery throughput: pushes 10,000 deliveries through the real engine (store, guarded HTTP
//! client, worker) to a loopback HTTP receiver and prints deliveries per second and
//! enqueue-to-delivered latency percentiles, for SQLite and, when `SDSERVE_TEST_POSTGRES`
//! names a server (`eval "$(scripts/postgres-for-tests.sh)"`), for PostgreSQL in a fresh
//! database beside it. Run: `cargo bench -p webhook-service --bench delivery`.
//! Target on a 2-core machine (SQLite): at least 5,000 deliveries/s drained and p99
//! enqueue→delivered at most 50 ms.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use webhook_service::clock::Clock;
use webhook_service::delivery::client::{ClientConfig, WebhookClient};
use webhook_service::delivery::retry::RetryPolicy;
use webhook_service::delivery::worker::{Deliverer, WorkerConfig};
use webhook_service::domain::{
    EventKind, Format, JobFinish, JobStatus, NewDelivery, NewJob, WebhookTarget,
};
use webhook_service::metrics::Metrics;
use webhook_service::store::Store;
use webhook_service::store::postgres::PostgresStore;
use webhook_service::store::secrets::{SecretBox, SecretsKey};
use webhook_service::store::sqlite::SqliteStore;

const DELIVERIES: usize = 10_000;

type Arrivals = Arc<Mutex<HashMap<String, Instant>>>;

async fn receiver(arrivals: Arrivals, all_in: Arc<Notify>) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind receiver");
    let addr = listener.local_addr().expect("receiver address");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let (arrivals, all_in) = (arrivals.clone(), all_in.clone());
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let (arrivals, all_in) = (arrivals.clone(), all_in.clone());
                    async move {
                        let id = req
                            .headers()
                            .get("webhook-id")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("")
                            .to_owned();
                        let mut seen = arrivals.lock().expect("arrivals lock");
                        seen.entry(id).or_insert_with(Instant::now);
                        if seen.len() == DELIVERIES {
                            all_in.notify_one();
                        }
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

fn job(i: usize, url: &str) -> NewJob {
    NewJob {
        owner: String::new(),
        extra_parts: Vec::new(),
        execution_timeout_ms: None,
        id: format!("bench-{i:05}"),
        params: Default::default(),
        webhook: WebhookTarget {
            url: Some(url.to_owned()),
            secret: None,
            format: Format::Standard,
            events: vec![EventKind::Completed],
            signing_secret: None,
        },
        idempotency_key: None,
        vendor_context: serde_json::Value::Null,
        created_at_ms: 0,
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// What one phase measured.
struct Phase {
    enqueue: Duration,
    total: Duration,
    latencies: Vec<Duration>,
}

/// Enqueues [`DELIVERIES`] finished jobs (job row, result and outbox row each, as the service
/// writes them) and waits until the receiver has seen every one. With `backlog`, the worker
/// starts only once everything is enqueued, which measures how fast the engine drains a queue;
/// without, it runs while jobs arrive, which measures enqueue-to-delivered latency.
async fn phase(backend: &Backend, backlog: bool) -> Phase {
    let dir = tempfile::tempdir().expect("temp dir");
    let store: Arc<dyn Store> = match backend {
        Backend::Sqlite => {
            Arc::new(SqliteStore::open(&dir.path().join("bench.db")).expect("open store"))
        }
        Backend::Postgres(admin) => {
            let url = fresh_postgres_database(admin).await;
            let secrets = SecretBox::new(&SecretsKey::parse(&[9; 32]).expect("key"));
            Arc::new(
                PostgresStore::connect(&url, secrets)
                    .await
                    .expect("connect to PostgreSQL"),
            )
        }
    };
    let arrivals: Arrivals = Arc::default();
    let all_in = Arc::new(Notify::new());
    let addr = receiver(arrivals.clone(), all_in.clone()).await;
    let url = format!("http://{addr}/hook");
    let client = WebhookClient::new(&ClientConfig {
        allow_http: true,
        allow_private: vec!["127.0.0.0/8".parse().expect("cidr")],
        ..ClientConfig::default()
    })
    .expect("client");
    let wake = Arc::new(Notify::new());
    let deliverer = Deliverer::new(
        store.clone(),
        client,
        Clock::system(),
        Metrics::new(),
        WorkerConfig {
            concurrency: 64,
            lease: Duration::from_secs(30),
            retry: RetryPolicy::default(),
            signing_key: None,
            max_callback_bytes: 32 << 20,
            media: webhook_service::media::MediaSigner::new(
                vec![7; 32],
                "http://127.0.0.1",
                Duration::from_secs(3600),
            ),
        },
        wake.clone(),
    );
    let stop = CancellationToken::new();
    let mut worker = (!backlog).then(|| tokio::spawn(deliverer.clone().run(stop.clone())));
    let payload = serde_json::to_vec(
        &serde_json::json!({"type": "job.completed", "data": {"job_id": "x", "images": []}}),
    )
    .expect("json");

    let started = Instant::now();
    let mut enqueued = HashMap::with_capacity(DELIVERIES);
    for i in 0..DELIVERIES {
        let new = job(i, &url);
        let id = new.id.clone();
        store.insert_job(new).await.expect("insert job");
        let delivery_id = format!("msg_bench_{i:05}");
        let finish = JobFinish {
            job_id: id,
            status: JobStatus::Completed,
            error: None,
            images: Vec::new(),
            info_json: String::new(),
            started_at_ms: Some(0),
            finished_at_ms: Clock::system().now_ms(),
            deliveries: vec![NewDelivery {
                id: delivery_id.clone(),
                event: EventKind::Completed,
                url: url.clone(),
                payload: payload.clone(),
            }],
        };
        store.finish_job(finish).await.expect("finish job");
        enqueued.insert(delivery_id, Instant::now());
        wake.notify_one();
    }
    let enqueue = started.elapsed();
    let drain_from = Instant::now();
    if backlog {
        worker = Some(tokio::spawn(deliverer.run(stop.clone())));
    }
    tokio::time::timeout(Duration::from_secs(600), all_in.notified())
        .await
        .expect("all deliveries within 10 minutes");
    let total = if backlog {
        drain_from.elapsed()
    } else {
        started.elapsed()
    };
    stop.cancel();
    worker.expect("worker started").await.expect("worker");

    let arrivals = arrivals.lock().expect("arrivals lock");
    let mut latencies: Vec<Duration> = enqueued
        .iter()
        .map(|(id, at)| arrivals[id].saturating_duration_since(*at))
        .collect();
    latencies.sort();
    Phase {
        enqueue,
        total,
        latencies,
    }
}

/// The store a phase runs on.
enum Backend {
    Sqlite,
    /// The admin URL of a PostgreSQL server; each phase makes its own database there.
    Postgres(String),
}

/// Creates an empty database next to `admin`'s and returns its URL.
async fn fresh_postgres_database(admin: &str) -> String {
    let (client, connection) = tokio_postgres::connect(admin, tokio_postgres::NoTls)
        .await
        .expect("connect to the admin database");
    tokio::spawn(connection);
    let name = format!("sdserve_bench_{:016x}", rand::random::<u64>());
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .expect("create the bench database");
    let mut url = url::Url::parse(admin).expect("SDSERVE_TEST_POSTGRES is a URL");
    url.set_path(&name);
    url.to_string()
}

/// The figures of one backend.
struct Figures {
    drain: Phase,
    stream: Phase,
}

impl Figures {
    async fn measure(backend: &Backend) -> Self {
        let drain = phase(backend, true).await;
        let stream = phase(backend, false).await;
        Self { drain, stream }
    }

    fn drain_rate(&self) -> f64 {
        DELIVERIES as f64 / self.drain.total.as_secs_f64()
    }

    fn stream_rate(&self) -> f64 {
        DELIVERIES as f64 / self.stream.total.as_secs_f64()
    }

    fn p(&self, q: f64) -> f64 {
        percentile(&self.stream.latencies, q).as_secs_f64() * 1e3
    }
}

#[tokio::main]
async fn main() {
    let mut columns = vec![("SQLite", Figures::measure(&Backend::Sqlite).await)];
    match std::env::var("SDSERVE_TEST_POSTGRES") {
        Ok(admin) => columns.push((
            "PostgreSQL",
            Figures::measure(&Backend::Postgres(admin)).await,
        )),
        Err(_) => eprintln!(
            "SDSERVE_TEST_POSTGRES is not set: PostgreSQL is not measured (eval \"$(scripts/postgres-for-tests.sh)\")"
        ),
    }
    let row = |name: &str, cell: &dyn Fn(&Figures) -> String| {
        let cells: Vec<String> = columns.iter().map(|(_, f)| cell(f)).collect();
        println!("| {name} | {} |", cells.join(" | "));
    };
    let names: Vec<&str> = columns.iter().map(|(n, _)| *n).collect();
    println!(
        "| metric ({DELIVERIES} deliveries per phase) | {} |",
        names.join(" | ")
    );
    println!("|---|{}", "---|".repeat(columns.len()));
    row(
        "backlog: enqueue time (job + result + outbox row each)",
        &|f| format!("{:.2} s", f.drain.enqueue.as_secs_f64()),
    );
    row(
        "backlog: drain time, worker start to last delivered",
        &|f| format!("{:.2} s", f.drain.total.as_secs_f64()),
    );
    row("backlog: deliveries/s", &|f| {
        format!("{:.0}", f.drain_rate())
    });
    row("streaming: first enqueue to last delivered", &|f| {
        format!("{:.2} s", f.stream.total.as_secs_f64())
    });
    row(
        "streaming: deliveries/s (bounded by the enqueue rate)",
        &|f| format!("{:.0}", f.stream_rate()),
    );
    row("streaming: p50 enqueue→delivered", &|f| {
        format!("{:.1} ms", f.p(0.50))
    });
    row("streaming: p99 enqueue→delivered", &|f| {
        format!("{:.1} ms", f.p(0.99))
    });
    row("target: ≥ 5000/s drained and p99 ≤ 50 ms", &|f| {
        let met = f.drain_rate() >= 5000.0 && f.p(0.99) <= 50.0;
        format!(
            "{} ({:.2}× the rate, {:.2}× the p99 bound)",
            if met { "met" } else { "NOT met" },
            f.drain_rate() / 5000.0,
            f.p(0.99) / 50.0
        )
    });
}
