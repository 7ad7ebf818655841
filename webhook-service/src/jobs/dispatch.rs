//! Runs queued jobs on an inference server through its streaming `Generate` call.
//!
//! A job is leased (marked dispatched; it stays `queued` while it waits in the inference
//! server's queue, whose `Queued` events are recorded) and becomes `running` when the server's
//! `Started` event arrives, so queue and execution times are what they say. It stays leased
//! until its ending is stored; if the inference server cannot be reached or the stream breaks,
//! the generation is started again after a back-off, and a job still leased at shutdown or
//! crash is requeued at the next start. A job with an execution timeout that runs past it
//! ends as timed out. So an accepted job always ends up completed, failed, cancelled or timed out.
//!
//! A job of several parts (Diffute's prompts) runs them one after another as separate
//! `Generate` calls; their images are numbered on across parts.

use std::sync::Arc;
use std::time::Duration;

use sdserve_proto::v1::GenerateRequest;
use sdserve_proto::v1::generate_event::Event;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::JobService;
use super::endpoints::Endpoints;
use super::outbox::Ending;
use crate::domain::{JobRecord, JobStatus, StoredImage};

/// Tries at storing a finished generation's result before the generation is given up.
const STORE_TRIES: u32 = 8;

/// The deadlines that make every job end.
#[derive(Debug, Clone)]
pub struct DispatchPolicy {
    /// Longest wait for the inference server's next event before the generation has started
    /// (the job waits in that server's queue, which speaks only when it moves).
    pub queue_timeout: Duration,
    /// Longest wait for the next event once the generation has started: a server that stops
    /// sending progress is taken as stalled, and the attempt is abandoned.
    pub stall_timeout: Duration,
    /// Attempts (dispatches) a job gets; after the last failed one it ends as failed.
    pub max_attempts: u32,
    /// Execution timeout for jobs that bring none; None = no limit.
    pub default_execution_timeout: Option<Duration>,
    /// Ask for a preview every this many steps (0 = never).
    pub preview_every: u32,
    /// How long a claimed job stays this process's without a renewal: replicas sharing the
    /// store take over a job whose dispatcher died this long after its last renewal.
    pub lease: Duration,
}

impl Default for DispatchPolicy {
    fn default() -> Self {
        Self {
            queue_timeout: Duration::from_secs(30 * 60),
            stall_timeout: Duration::from_secs(120),
            max_attempts: 5,
            default_execution_timeout: Some(Duration::from_secs(30 * 60)),
            preview_every: 5,
            lease: Duration::from_secs(30),
        }
    }
}

/// Feeds queued jobs to an inference server.
pub struct Dispatcher {
    jobs: Arc<JobService>,
    endpoints: Arc<Endpoints>,
    spool: Option<super::spool::Spool>,
    concurrency: usize,
    policy: DispatchPolicy,
    /// This process's name on the jobs it claims (random per start).
    replica: String,
}

/// How one generation attempt ended.
enum Attempt {
    /// The job reached an ending (stored or found already ended).
    Ended,
    /// The inference server could not be reached or the stream broke; try again.
    Retry(String),
    /// The inference server's queue is full: wait and try again, without spending an attempt.
    Busy(String),
    /// Shutdown or cancellation: leave the job to whoever ended it or to the next start.
    Stopped,
}

impl Dispatcher {
    /// A dispatcher sending at most `concurrency` generations at once to `endpoints` (each
    /// to the least loaded healthy one), under `policy`'s deadlines.
    pub fn new(
        jobs: Arc<JobService>,
        endpoints: Arc<Endpoints>,
        concurrency: usize,
        policy: DispatchPolicy,
    ) -> Self {
        Self {
            jobs,
            endpoints,
            spool: None,
            concurrency: concurrency.max(1),
            policy,
            replica: format!("{}-{:08x}", std::process::id(), rand::random::<u32>()),
        }
    }

    /// Keeps results that cannot be stored in `spool`, and stores the ones kept there at start.
    pub fn with_spool(mut self, spool: super::spool::Spool) -> Self {
        self.spool = Some(spool);
        self
    }

    /// Stores the results an earlier process kept on disk, before anything is requeued.
    async fn store_kept_results(&self) {
        let Some(spool) = &self.spool else { return };
        for (job_id, ending) in spool.kept() {
            let record = match self.jobs.store.get_job(&job_id).await {
                Ok(Some(record)) => record,
                Ok(None) => {
                    spool.forget(&job_id);
                    continue;
                }
                Err(err) => {
                    tracing::error!(job = %job_id, error = %err, "cannot read a job whose result was kept; trying at the next start");
                    continue;
                }
            };
            match self.jobs.end(&record, ending).await {
                Ok(_) => {
                    tracing::info!(job = %job_id, "stored a result kept on disk by the last run");
                    spool.forget(&job_id);
                }
                Err(err) => {
                    tracing::error!(job = %job_id, error = %err, "cannot store a kept result; trying at the next start")
                }
            }
        }
    }

    /// Requeues jobs left running by an earlier process, then runs jobs until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        self.store_kept_results().await;
        match self
            .jobs
            .store
            .requeue_running_jobs(self.jobs.clock.now_ms())
            .await
        {
            Ok(0) => {}
            Ok(n) => tracing::info!(jobs = n, "requeued jobs interrupted by the last shutdown"),
            Err(err) => tracing::error!(error = %err, "cannot requeue interrupted jobs"),
        }
        let slots = Arc::new(Semaphore::new(self.concurrency));
        let tasks = TaskTracker::new();
        let this = Arc::new(self);
        loop {
            let permit = tokio::select! {
                permit = slots.clone().acquire_owned() => match permit { Ok(p) => p, Err(_) => break },
                _ = shutdown.cancelled() => break,
            };
            let now = this.jobs.clock.now_ms();
            let lease_until = now.saturating_add(this.policy.lease.as_millis() as i64);
            let claimed = this
                .jobs
                .store
                .claim_next_job(&this.replica, now, lease_until)
                .await;
            match claimed {
                Ok(Some(record)) => {
                    this.jobs.events.changed(&record.job.id);
                    let (this, shutdown) = (this.clone(), shutdown.clone());
                    tasks.spawn(async move {
                        this.run_job(record, shutdown).await;
                        drop(permit);
                    });
                }
                Ok(None) => {
                    drop(permit);
                    tokio::select! {
                        _ = this.jobs.job_wake.notified() => {}
                        _ = shutdown.cancelled() => break,
                    }
                }
                Err(err) => {
                    drop(permit);
                    tracing::error!(error = %err, "cannot claim a job; retrying in 1 s");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = shutdown.cancelled() => break,
                    }
                }
            }
        }
        tasks.close();
        tasks.wait().await;
    }

    async fn run_job(&self, record: JobRecord, shutdown: CancellationToken) {
        let id = record.job.id.clone();
        let cancel = self.jobs.track(&id);
        // The job is this replica's while its lease is renewed; losing it (the job ended
        // through another replica, or one took it over) stops the work here as a cancel does.
        let lease = tokio::spawn({
            let (jobs, id, replica, cancel) = (
                self.jobs.clone(),
                id.clone(),
                self.replica.clone(),
                cancel.clone(),
            );
            let lease = self.policy.lease;
            async move {
                jobs.hold_lease(&id, &replica, lease).await;
                cancel.cancel();
            }
        });
        let mut backoff = Duration::from_millis(500);
        let mut attempts = 0;
        let mut busy_since: Option<tokio::time::Instant> = None;
        loop {
            attempts += 1;
            let attempt = tokio::select! {
                attempt = self.generate(&record) => attempt,
                attempt = self.timeout(&record) => attempt,
                _ = cancel.cancelled() => Attempt::Stopped,
                _ = shutdown.cancelled() => Attempt::Stopped,
            };
            if !matches!(attempt, Attempt::Busy(_)) {
                busy_since = None;
            }
            match attempt {
                Attempt::Ended | Attempt::Stopped => break,
                Attempt::Busy(reason) => {
                    attempts -= 1;
                    let since = *busy_since.get_or_insert_with(tokio::time::Instant::now);
                    if since.elapsed() > self.policy.queue_timeout {
                        let error = format!(
                            "the inference servers stayed busy for {:?}: {reason}",
                            self.policy.queue_timeout
                        );
                        let _ = self
                            .ending(
                                &record,
                                JobStatus::Failed,
                                Some(error),
                                Vec::new(),
                                String::new(),
                            )
                            .await;
                        break;
                    }
                    tracing::info!(job = %id, %reason, retry_in = ?backoff, "inference servers busy; waiting");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = cancel.cancelled() => break,
                        _ = shutdown.cancelled() => break,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
                Attempt::Retry(reason) if attempts >= self.policy.max_attempts => {
                    tracing::error!(job = %id, %reason, attempts, "generation failed on every attempt; the job fails");
                    let error =
                        format!("the generation failed {attempts} times; the last time: {reason}");
                    if let Attempt::Retry(reason) = self
                        .ending(
                            &record,
                            JobStatus::Failed,
                            Some(error),
                            Vec::new(),
                            String::new(),
                        )
                        .await
                    {
                        tracing::error!(job = %id, %reason, "cannot store the failure; the job is retried at the next start");
                    }
                    break;
                }
                Attempt::Retry(reason) => {
                    tracing::warn!(job = %id, %reason, retry_in = ?backoff, "generation interrupted");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = cancel.cancelled() => break,
                        _ = shutdown.cancelled() => break,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
        }
        lease.abort();
        self.jobs.untrack(&id);
    }

    /// Resolves when the job has run past its execution timeout (counted from its start),
    /// ending it as timed out; never resolves for a job without one.
    async fn timeout(&self, record: &JobRecord) -> Attempt {
        let limit = record.job.execution_timeout_ms.or_else(|| {
            self.policy
                .default_execution_timeout
                .map(|d| d.as_millis() as u64)
        });
        let Some(limit) = limit else {
            return std::future::pending().await;
        };
        // The start is known once the inference server says so: wait for the job's change
        // notifications (the start sends one) rather than polling the store, with a slow
        // re-read in case a notification was missed.
        let mut changes = self.jobs.events.subscribe();
        let started = loop {
            match self.jobs.store.get_job(&record.job.id).await {
                Ok(Some(latest)) if latest.started_at_ms.is_some() => {
                    break latest.started_at_ms.unwrap_or_default();
                }
                Ok(Some(latest)) if latest.status.is_final() => {
                    return std::future::pending().await;
                }
                _ => {}
            }
            let wait = async {
                loop {
                    match changes.recv().await {
                        Ok(id) if id != record.job.id => continue,
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                            std::future::pending::<()>().await
                        }
                        _ => return,
                    }
                }
            };
            let _ = tokio::time::timeout(Duration::from_secs(5), wait).await;
        };
        let ends_at = started.saturating_add(i64::try_from(limit).unwrap_or(i64::MAX));
        let left = (ends_at - self.jobs.clock.now_ms()).max(0) as u64;
        tokio::time::sleep(Duration::from_millis(left)).await;
        let error = format!("execution timed out after {limit} ms");
        self.ending(
            record,
            JobStatus::TimedOut,
            Some(error),
            Vec::new(),
            String::new(),
        )
        .await
    }

    /// Every part of the job, one `Generate` call each, start to end. A server whose call or
    /// stream broke is marked unhealthy, so the next attempt goes to another (failover).
    async fn generate(&self, record: &JobRecord) -> Attempt {
        let mut current = None;
        let attempt = self.generate_parts(record, &mut current).await;
        if let (Attempt::Retry(reason), Some(lease)) = (&attempt, &current) {
            tracing::warn!(job = %record.job.id, endpoint = %lease.url(), %reason, "inference server failed; trying another");
            lease.failed();
        }
        attempt
    }

    async fn generate_parts(
        &self,
        record: &JobRecord,
        current: &mut Option<super::endpoints::Lease>,
    ) -> Attempt {
        let parts: Vec<_> = record.parts().cloned().collect();
        let planned: Vec<u32> = parts
            .iter()
            .map(|p| p.steps.unwrap_or(20) * p.n_iter.unwrap_or(1).max(1))
            .collect();
        let mut images = Vec::new();
        let mut infos = Vec::new();
        let mut model = String::new();
        let mut steps_before = 0;
        for (i, params) in parts.into_iter().enumerate() {
            let steps_after: u32 = planned[i + 1..].iter().sum();
            let offset = images.len() as u32;
            let request = GenerateRequest {
                params: Some(params),
                preview_every: self.policy.preview_every,
                request_id: if i == 0 {
                    record.job.id.clone()
                } else {
                    format!("{}/{i}", record.job.id)
                },
            };
            let lease = self.endpoints.pick();
            let mut client = lease.client();
            *current = Some(lease);
            let mut stream =
                match tokio::time::timeout(self.policy.stall_timeout, client.generate(request))
                    .await
                {
                    Ok(Ok(response)) => response.into_inner(),
                    // A full queue refuses before anything starts: the server is busy, not broken.
                    Ok(Err(status)) if status.code() == tonic::Code::ResourceExhausted => {
                        return Attempt::Busy(status.message().to_owned());
                    }
                    Ok(Err(status)) => return self.rejected(record, status).await,
                    Err(_) => {
                        let waited = self.policy.stall_timeout;
                        return Attempt::Retry(format!(
                            "the inference server did not answer within {waited:?}"
                        ));
                    }
                };
            let mut part_total = planned[i];
            let mut started = false;
            loop {
                // Before the start the server speaks only when its queue moves; after it, every
                // step sends progress, so a long silence means a stalled server.
                let (deadline, stage) = match started {
                    false => (self.policy.queue_timeout, "in the inference server's queue"),
                    true => (self.policy.stall_timeout, "since the last progress"),
                };
                let event = match tokio::time::timeout(deadline, stream.message()).await {
                    Ok(Ok(Some(message))) => message.event,
                    Ok(Ok(None)) => {
                        return Attempt::Retry(
                            "the inference stream ended without a result".into(),
                        );
                    }
                    Ok(Err(status)) => return self.rejected(record, status).await,
                    Err(_) => {
                        return Attempt::Retry(format!(
                            "no event from the inference server for {deadline:?} {stage}"
                        ));
                    }
                };
                match event {
                    Some(Event::Queued(queued)) => {
                        if let Err(err) = self
                            .jobs
                            .store
                            .set_queue_position(&record.job.id, queued.position)
                            .await
                        {
                            tracing::warn!(job = %record.job.id, error = %err, "cannot store the queue position");
                        }
                        self.jobs.events.changed(&record.job.id);
                    }
                    Some(Event::Started(start)) => {
                        started = true;
                        model = start.model;
                        if let Err(err) = self
                            .jobs
                            .store
                            .mark_started(&record.job.id, self.jobs.clock.now_ms())
                            .await
                        {
                            tracing::warn!(job = %record.job.id, error = %err, "cannot store the start");
                        }
                        self.progress(
                            record,
                            steps_before,
                            steps_before + part_total + steps_after,
                            &model,
                        )
                        .await;
                    }
                    Some(Event::Progress(p)) => {
                        part_total = p.total;
                        if !p.preview_png.is_empty() {
                            self.jobs.set_preview(&record.job.id, p.preview_png);
                        }
                        let total = steps_before + p.total + steps_after;
                        self.progress(record, steps_before + p.step, total, &model)
                            .await;
                    }
                    Some(Event::Image(image)) => images.push(StoredImage {
                        index: offset + image.index,
                        seed: image.seed,
                        infotext: image.infotext,
                        png: image.png,
                    }),
                    Some(Event::Completed(done)) => {
                        infos.push(done.info_json);
                        break;
                    }
                    Some(Event::Failed(failed)) => {
                        let error = format!("{}: {}", failed.code, failed.message);
                        return self
                            .ending(
                                record,
                                JobStatus::Failed,
                                Some(error),
                                images,
                                String::new(),
                            )
                            .await;
                    }
                    None => {}
                }
            }
            steps_before += part_total;
        }
        let info_json = match infos.len() {
            1 => infos.pop().unwrap_or_default(),
            // Several parts: a JSON array of each part's info object.
            _ => {
                let parsed: Vec<serde_json::Value> = infos
                    .iter()
                    .map(|i| serde_json::from_str(i).unwrap_or(serde_json::Value::Null))
                    .collect();
                serde_json::Value::Array(parsed).to_string()
            }
        };
        self.ending(record, JobStatus::Completed, None, images, info_json)
            .await
    }

    /// A gRPC error: transient ones are retried, the rest fail the job.
    async fn rejected(&self, record: &JobRecord, status: tonic::Status) -> Attempt {
        use tonic::Code;
        match status.code() {
            Code::Unavailable
            | Code::Unknown
            | Code::Internal
            | Code::ResourceExhausted
            | Code::Aborted
            | Code::DeadlineExceeded
            | Code::Cancelled => {
                Attempt::Retry(format!("{:?}: {}", status.code(), status.message()))
            }
            code => {
                let error = format!(
                    "inference server refused the job ({code:?}): {}",
                    status.message()
                );
                self.ending(
                    record,
                    JobStatus::Failed,
                    Some(error),
                    Vec::new(),
                    String::new(),
                )
                .await
            }
        }
    }

    async fn progress(&self, record: &JobRecord, step: u32, total: u32, model: &str) {
        match self
            .jobs
            .store
            .set_progress(&record.job.id, step, total, model)
            .await
        {
            Ok(()) => self.jobs.events.changed(&record.job.id),
            Err(err) => tracing::warn!(job = %record.job.id, error = %err, "cannot store progress"),
        }
    }

    async fn ending(
        &self,
        record: &JobRecord,
        status: JobStatus,
        error: Option<String>,
        images: Vec<StoredImage>,
        info_json: String,
    ) -> Attempt {
        let ending = Ending {
            status,
            error,
            images,
            info_json,
            finished_at_ms: self.jobs.clock.now_ms(),
        };
        // A store failure (a full disk, a held lock) is not a generation failure: the result
        // is kept here and storing it is retried, for about a minute, before the generation
        // itself is given up (and counted as one of the job's attempts).
        let mut wait = Duration::from_millis(500);
        let mut tries = 0;
        loop {
            tries += 1;
            let mut latest = record.clone();
            if let Ok(Some(stored)) = self.jobs.store.get_job(&record.job.id).await {
                latest = stored;
            }
            match self.jobs.end(&latest, ending.clone()).await {
                Ok(_) => {
                    if tries > 1
                        && let Some(spool) = &self.spool
                    {
                        spool.forget(&record.job.id);
                    }
                    return Attempt::Ended;
                }
                Err(err) if tries < STORE_TRIES => {
                    // Kept on disk from the first failure on: a restart now does not cost the
                    // generation.
                    if tries == 1
                        && let Some(spool) = &self.spool
                    {
                        spool.keep(&record.job.id, &ending);
                    }
                    tracing::warn!(job = %record.job.id, error = %err, retry_in = ?wait, "cannot store the result; keeping it and trying again");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(30));
                }
                Err(err) => {
                    return Attempt::Retry(format!(
                        "cannot store the result after {tries} tries: {err}"
                    ));
                }
            }
        }
    }
}
