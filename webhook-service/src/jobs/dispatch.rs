//! Runs queued jobs on an inference server through its streaming `Generate` call.
//!
//! A job is leased (queued → running) and stays running until its ending is stored; if the
//! inference server cannot be reached or the stream breaks, the generation is started again
//! after a back-off, and a job still running at shutdown or crash is requeued at the next
//! start. So an accepted job always ends up completed, failed or cancelled.

use std::sync::Arc;
use std::time::Duration;

use sdserve_proto::v1::generate_event::Event;
use sdserve_proto::v1::inference_client::InferenceClient;
use sdserve_proto::v1::GenerateRequest;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::transport::Channel;

use super::outbox::Ending;
use super::JobService;
use crate::domain::{JobRecord, JobStatus, StoredImage};

/// Feeds queued jobs to an inference server.
pub struct Dispatcher {
    jobs: Arc<JobService>,
    client: InferenceClient<Channel>,
    concurrency: usize,
}

/// How one generation attempt ended.
enum Attempt {
    /// The job reached an ending (stored or found already ended).
    Ended,
    /// The inference server could not be reached or the stream broke; try again.
    Retry(String),
    /// Shutdown or cancellation: leave the job to whoever ended it or to the next start.
    Stopped,
}

impl Dispatcher {
    /// A dispatcher sending at most `concurrency` generations at once through `client`.
    pub fn new(jobs: Arc<JobService>, client: InferenceClient<Channel>, concurrency: usize) -> Self {
        Self { jobs, client, concurrency: concurrency.max(1) }
    }

    /// Requeues jobs left running by an earlier process, then runs jobs until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        match self.jobs.store.requeue_running_jobs().await {
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
            let claimed = this.jobs.store.claim_next_job(this.jobs.clock.now_ms()).await;
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
        let mut backoff = Duration::from_millis(500);
        loop {
            let attempt = tokio::select! {
                attempt = self.generate(&record) => attempt,
                _ = cancel.cancelled() => Attempt::Stopped,
                _ = shutdown.cancelled() => Attempt::Stopped,
            };
            match attempt {
                Attempt::Ended | Attempt::Stopped => break,
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
        self.jobs.untrack(&id);
    }

    /// One `Generate` call, start to end.
    async fn generate(&self, record: &JobRecord) -> Attempt {
        let request = GenerateRequest {
            params: Some(record.job.params.clone()),
            preview_every: 0,
            request_id: record.job.id.clone(),
        };
        let mut stream = match self.client.clone().generate(request).await {
            Ok(response) => response.into_inner(),
            Err(status) => return self.rejected(record, status).await,
        };
        let mut images = Vec::new();
        let mut model = String::new();
        loop {
            let event = match stream.message().await {
                Ok(Some(message)) => message.event,
                Ok(None) => return Attempt::Retry("the inference stream ended without a result".into()),
                Err(status) => return self.rejected(record, status).await,
            };
            match event {
                Some(Event::Started(started)) => {
                    model = started.model;
                    self.progress(record, 0, 0, &model).await;
                }
                Some(Event::Progress(p)) => self.progress(record, p.step, p.total, &model).await,
                Some(Event::Image(image)) => images.push(StoredImage {
                    index: image.index,
                    seed: image.seed,
                    infotext: image.infotext,
                    png: image.png,
                }),
                Some(Event::Completed(done)) => {
                    return self.ending(record, JobStatus::Completed, None, images, done.info_json).await;
                }
                Some(Event::Failed(failed)) => {
                    let error = format!("{}: {}", failed.code, failed.message);
                    return self.ending(record, JobStatus::Failed, Some(error), images, String::new()).await;
                }
                Some(Event::Queued(_)) | None => {}
            }
        }
    }

    /// A gRPC error: transient ones are retried, the rest fail the job.
    async fn rejected(&self, record: &JobRecord, status: tonic::Status) -> Attempt {
        use tonic::Code;
        match status.code() {
            Code::Unavailable | Code::Unknown | Code::Internal | Code::ResourceExhausted
            | Code::Aborted | Code::DeadlineExceeded | Code::Cancelled => {
                Attempt::Retry(format!("{:?}: {}", status.code(), status.message()))
            }
            code => {
                let error = format!("inference server refused the job ({code:?}): {}", status.message());
                self.ending(record, JobStatus::Failed, Some(error), Vec::new(), String::new()).await
            }
        }
    }

    async fn progress(&self, record: &JobRecord, step: u32, total: u32, model: &str) {
        match self.jobs.store.set_progress(&record.job.id, step, total, model).await {
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
        let ending = Ending { status, error, images, info_json, finished_at_ms: self.jobs.clock.now_ms() };
        let mut record = record.clone();
        if let Ok(Some(latest)) = self.jobs.store.get_job(&record.job.id).await {
            record = latest;
        }
        match self.jobs.end(&record, ending).await {
            Ok(_) => Attempt::Ended,
            Err(err) => Attempt::Retry(format!("cannot store the result: {err}")),
        }
    }
}
