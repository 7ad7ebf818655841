//! Jobs: accepting, reading, cancelling and finishing them ([`JobService`]) and running them
//! on an inference server ([`dispatch`]).
//!
//! Every API (HTTP, each vendor shape, gRPC) goes through [`JobService`]; it checks the
//! caller's ownership and limits, so no handler reaches the store directly.

pub mod dispatch;
pub mod endpoints;
pub mod events;
pub mod models;
pub mod outbox;
mod replicas;
pub mod spool;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sdserve_proto::v1::ModelInfo;
use tokio::sync::{Notify, broadcast};
use tokio_util::sync::CancellationToken;

use crate::api::validate::{self, FieldError, Submission, UrlRules};
use crate::auth::Caller;
use crate::auth::limits::RateWindow;
use crate::clock::Clock;
use crate::domain::{DeliveryRecord, JobRecord, JobStatus, StoredImage};
use crate::media::MediaSigner;
use crate::metrics::Metrics;
use crate::store::{Inserted, Redelivery, Store, StoreError};
use events::JobEvents;
use models::ModelCatalog;
use outbox::Ending;

/// What a job operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// No job has that id (or it belongs to another caller: the answer is the same).
    #[error("no job with id {0:?}")]
    NotFound(String),
    /// No delivery has that id (or its job belongs to another caller).
    #[error("no delivery with id {0:?}")]
    DeliveryNotFound(String),
    /// A media link that is not valid.
    #[error("{0}")]
    Forbidden(String),
    /// The inference servers could not be asked.
    #[error("{0}")]
    Unavailable(String),
    /// The operation does not apply to the thing as it is (a delivery to a gone receiver).
    #[error("{0}")]
    Conflict(String),
    /// Too many of this operation; it may be tried again after `retry_after_s`.
    #[error("{message}")]
    Limited {
        /// What the limit is.
        message: String,
        /// Seconds until it can succeed.
        retry_after_s: u64,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why a submission was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum AcceptError {
    /// A field breaks a rule.
    #[error(transparent)]
    Invalid(#[from] FieldError),
    /// The caller is over one of its limits; it may try again after `retry_after_s`.
    #[error("{rule}")]
    Limited {
        /// Which limit, for a person to read.
        rule: String,
        /// Seconds until a retry can succeed (the `Retry-After` value).
        retry_after_s: u64,
    },
    /// The idempotency key was used before for a different request.
    #[error(
        "idempotency_key: {0:?} was already used for a different request (job {1}); use a new key"
    )]
    Conflict(String, String),
    /// Storing failed.
    #[error(transparent)]
    Job(#[from] JobError),
}

/// Refuses a deduplicated submission whose content differs from the first one's.
fn same_request(inserted: Inserted, key: Option<String>) -> Result<Inserted, AcceptError> {
    if inserted.same_request {
        return Ok(inserted);
    }
    Err(AcceptError::Conflict(key.unwrap_or_default(), inserted.id))
}

/// A fresh job id: a UUIDv7, so ids sort by creation time.
pub fn new_job_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// The service-wide rules [`JobService`] applies to callers.
#[derive(Debug, Clone)]
pub struct JobSettings {
    /// What webhook URLs may be.
    pub rules: UrlRules,
    /// Default jobs in flight per key.
    pub max_in_flight: u32,
    /// Default submissions per minute per key.
    pub per_minute: u32,
    /// Longest a synchronous call waits.
    pub sync_wait: Duration,
    /// Generations run at once (the dispatcher's concurrency): the workers RunPod's
    /// `/health` reports.
    pub generation_slots: usize,
    /// Most work one job may ask for, in pixel-steps (width × height × steps × images, over
    /// all its parts): a bound on what one request can cost.
    pub max_job_cost: u64,
    /// The delivery's address policy, applied to webhook hosts at submission too.
    pub resolver: Arc<crate::delivery::ssrf::GuardedResolver>,
}

/// What a part of a job costs in pixel-steps (width × height × steps × images), with the
/// documented defaults for unset fields.
fn cost(p: &sdserve_proto::v1::GenerationParams) -> u64 {
    let pixels = u64::from(p.width.unwrap_or(512)) * u64::from(p.height.unwrap_or(512));
    let images = u64::from(p.batch_size.unwrap_or(1)) * u64::from(p.n_iter.unwrap_or(1));
    pixels * u64::from(p.steps.unwrap_or(20)) * images
}

/// The job operations the APIs and the dispatcher share.
pub struct JobService {
    store: Arc<dyn Store>,
    clock: Clock,
    media: MediaSigner,
    events: JobEvents,
    metrics: Metrics,
    job_wake: Arc<Notify>,
    delivery_wake: Arc<Notify>,
    settings: JobSettings,
    rate: RateWindow,
    redeliveries: RateWindow,
    models: ModelCatalog,
    running: Mutex<HashMap<String, CancellationToken>>,
    previews: Mutex<HashMap<String, Vec<u8>>>,
    preferred_models: Mutex<HashMap<String, String>>,
}

impl JobService {
    /// Assembles the service.
    pub fn new(
        store: Arc<dyn Store>,
        clock: Clock,
        media: MediaSigner,
        metrics: Metrics,
        delivery_wake: Arc<Notify>,
        settings: JobSettings,
        models: ModelCatalog,
    ) -> Arc<Self> {
        Arc::new(Self {
            store,
            clock,
            media,
            events: JobEvents::default(),
            metrics,
            job_wake: Arc::new(Notify::new()),
            delivery_wake,
            settings,
            rate: RateWindow::default(),
            redeliveries: RateWindow::default(),
            models,
            running: Mutex::new(HashMap::new()),
            previews: Mutex::new(HashMap::new()),
            preferred_models: Mutex::new(HashMap::new()),
        })
    }

    /// Now, ms since the epoch, on the service's clock.
    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// Longest a synchronous call should wait for a job.
    pub fn sync_wait(&self) -> Duration {
        self.settings.sync_wait
    }

    /// How many generations the service runs at once.
    pub fn generation_slots(&self) -> usize {
        self.settings.generation_slots
    }

    /// The service's counters in the Prometheus text format.
    pub fn metrics_text(&self) -> String {
        self.metrics.encode()
    }

    /// Validates `submission`, checks the caller's limits, and stores the job owned by the
    /// caller (or finds its idempotent twin); wakes the dispatcher.
    pub async fn accept(
        &self,
        caller: &Caller,
        submission: Submission,
    ) -> Result<Inserted, AcceptError> {
        let job = self.admit(caller, submission).await?;
        let key = job.idempotency_key.clone();
        let inserted = self.store.insert_job(job).await.map_err(JobError::from)?;
        let inserted = same_request(inserted, key)?;
        if !inserted.deduplicated {
            self.metrics.job_accepted();
            self.job_wake.notify_one();
        }
        Ok(inserted)
    }

    /// Stores a job that is answered at once, without a generation (an A1111 API call such as
    /// `GET /sdapi/v1/sd-models` sent through RunPod's `input.api`): it is completed with
    /// `answer` as its info JSON, and its callback (if it has a webhook) is queued, in one
    /// transaction.
    pub async fn answer(
        &self,
        caller: &Caller,
        submission: Submission,
        answer: serde_json::Value,
    ) -> Result<Inserted, AcceptError> {
        let job = self.admit(caller, submission).await?;
        let now = self.clock.now_ms();
        let record = JobRecord {
            job: job.clone(),
            status: JobStatus::Queued,
            dispatched_at_ms: None,
            queue_position: None,
            started_at_ms: Some(now),
            finished_at_ms: None,
            progress_step: 0,
            progress_total: 0,
            image_count: 0,
            error: None,
            model: String::new(),
            info_json: String::new(),
        };
        let ending = Ending {
            status: JobStatus::Completed,
            error: None,
            images: Vec::new(),
            info_json: answer.to_string(),
            finished_at_ms: now,
        };
        let mut finish = outbox::finish(&record, ending, &self.media);
        finish.started_at_ms = Some(now);
        let key = job.idempotency_key.clone();
        let inserted = self
            .store
            .insert_finished_job(job, finish)
            .await
            .map_err(JobError::from)?;
        let inserted = same_request(inserted, key)?;
        if !inserted.deduplicated {
            self.metrics.job_accepted();
            self.metrics.job_finished();
            self.delivery_wake.notify_one();
        }
        Ok(inserted)
    }

    /// Refuses a webhook whose host is, or resolves only to, addresses the delivery policy
    /// refuses (private, loopback, ...), so the caller learns it now rather than from a failed
    /// delivery. A name that cannot be resolved now is accepted; every send checks again (the
    /// answer may change, and a rebinding name is caught there).
    async fn check_webhook_address(&self, url: &str) -> Result<(), AcceptError> {
        use crate::delivery::ssrf::ResolveError;
        let Ok(parsed) = url::Url::parse(url) else {
            return Ok(());
        };
        let refused = |reason: String| -> AcceptError {
            FieldError {
                field: "webhook.url".into(),
                rule: format!("{reason}; this service does not call such addresses"),
            }
            .into()
        };
        let host = match parsed.host() {
            Some(url::Host::Ipv4(ip)) => {
                return self
                    .settings
                    .resolver
                    .policy()
                    .check(ip.into())
                    .map_err(|r| refused(format!("is {r}")));
            }
            Some(url::Host::Ipv6(ip)) => {
                return self
                    .settings
                    .resolver
                    .policy()
                    .check(ip.into())
                    .map_err(|r| refused(format!("is {r}")));
            }
            Some(url::Host::Domain(host)) => host.to_owned(),
            None => return Ok(()),
        };
        match tokio::time::timeout(
            Duration::from_secs(2),
            self.settings.resolver.resolve_host(&host),
        )
        .await
        {
            Ok(Err(e @ ResolveError::Refused { .. })) => Err(refused(
                e.to_string().trim_start_matches("refused: ").to_owned(),
            )),
            _ => Ok(()),
        }
    }

    /// Refuses a job naming a sampler the inference servers do not accept (when they say which
    /// they accept), so the caller hears it now rather than from a failed job.
    async fn check_samplers(&self, job: &crate::domain::NewJob) -> Result<(), AcceptError> {
        let named: Vec<&str> = std::iter::once(&job.params)
            .chain(&job.extra_parts)
            .map(|p| p.sampler_name.as_str())
            .filter(|s| !s.is_empty())
            .collect();
        if named.is_empty() {
            return Ok(());
        }
        let accepted = match self.models.sampler_names().await {
            Ok(accepted) if !accepted.is_empty() => accepted,
            _ => return Ok(()),
        };
        match named
            .into_iter()
            .find(|name| !accepted.iter().any(|a| a == name))
        {
            None => Ok(()),
            Some(unknown) => Err(FieldError {
                field: "params.sampler_name".into(),
                rule: format!(
                    "unknown sampler {unknown:?}; accepted: {}",
                    accepted.join(", ")
                ),
            }
            .into()),
        }
    }

    /// Refuses a job naming a model no inference server serves. When the servers cannot be
    /// asked, the job is accepted: it is durable and runs (or fails, naming the model) later.
    async fn check_models(&self, job: &crate::domain::NewJob) -> Result<(), AcceptError> {
        let named: Vec<&str> = std::iter::once(&job.params)
            .chain(&job.extra_parts)
            .map(|p| p.model.as_str())
            .filter(|m| !m.is_empty())
            .collect();
        if named.is_empty() {
            return Ok(());
        }
        let Ok(models) = self.models.list().await else {
            return Ok(());
        };
        for name in named.iter().copied() {
            if !models.iter().any(|m| m.name == name) {
                let served: Vec<&str> = models.iter().map(|m| m.name.as_str()).collect();
                return Err(FieldError {
                    field: "params.model".into(),
                    rule: format!(
                        "no model {name:?} is served here; served models: {}",
                        served.join(", ")
                    ),
                }
                .into());
            }
        }
        Ok(())
    }

    /// Validates a submission into a job owned by the caller, within the caller's limits.
    async fn admit(
        &self,
        caller: &Caller,
        submission: Submission,
    ) -> Result<crate::domain::NewJob, AcceptError> {
        let now = self.clock.now_ms();
        let mut job = validate::submission(submission, self.settings.rules, new_job_id(), now)?;
        job.owner = caller.key_id.clone();
        let total: u64 = std::iter::once(&job.params)
            .chain(&job.extra_parts)
            .map(cost)
            .sum();
        if total > self.settings.max_job_cost {
            let limit = self.settings.max_job_cost;
            return Err(FieldError {
                field: "params".into(),
                rule: format!(
                    "the job asks for {total} pixel-steps (width × height × steps × images, over all its parts); \
                     this service accepts at most {limit} per job"
                ),
            }
            .into());
        }
        self.check_models(&job).await?;
        self.check_samplers(&job).await?;
        if let Some(url) = &job.webhook.url {
            self.check_webhook_address(url).await?;
        }
        let max_in_flight = caller
            .limits
            .max_in_flight
            .unwrap_or(self.settings.max_in_flight);
        let in_flight: u64 = self
            .store
            .count_jobs(&caller.key_id)
            .await
            .map_err(JobError::from)?
            .iter()
            .filter(|(status, _)| !status.is_final())
            .map(|(_, n)| n)
            .sum();
        if in_flight >= u64::from(max_in_flight) {
            return Err(AcceptError::Limited {
                rule: format!(
                    "this key already has {in_flight} jobs queued or running; the limit is {max_in_flight}"
                ),
                retry_after_s: 5,
            });
        }
        let per_minute = caller.limits.per_minute.unwrap_or(self.settings.per_minute);
        if let Err(wait_s) = self.rate.admit(&caller.key_id, per_minute, now) {
            return Err(AcceptError::Limited {
                rule: format!("this key may submit {per_minute} jobs per minute"),
                retry_after_s: wait_s,
            });
        }
        Ok(job)
    }

    /// A job of the caller's by id.
    pub async fn get(&self, caller: &Caller, id: &str) -> Result<JobRecord, JobError> {
        match self.store.get_job(id).await? {
            Some(record) if record.job.owner == caller.key_id => Ok(record),
            _ => Err(JobError::NotFound(id.to_owned())),
        }
    }

    /// A job's images, in order.
    pub async fn images(&self, caller: &Caller, id: &str) -> Result<Vec<StoredImage>, JobError> {
        self.get(caller, id).await?;
        Ok(self.store.list_images(id).await?)
    }

    /// One image's PNG bytes.
    pub async fn image(&self, caller: &Caller, id: &str, index: u32) -> Result<Vec<u8>, JobError> {
        self.get(caller, id).await?;
        self.store
            .get_image(id, index)
            .await?
            .ok_or_else(|| JobError::NotFound(format!("{id}/{index}")))
    }

    /// An image through its signed media link: the signature, not a key, is the authority, so
    /// a webhook receiver can fetch the URLs its callback lists.
    pub async fn media(
        &self,
        job_id: &str,
        index: u32,
        expires: i64,
        sig: &str,
    ) -> Result<Vec<u8>, JobError> {
        self.media
            .verify(job_id, index, expires, sig, self.clock.now_ms())
            .map_err(|e| JobError::Forbidden(e.to_string()))?;
        self.store
            .get_image(job_id, index)
            .await?
            .ok_or_else(|| JobError::NotFound(format!("{job_id}/{index}")))
    }

    /// The caller's unfinished jobs, newest first.
    pub async fn active(&self, caller: &Caller, limit: u32) -> Result<Vec<JobRecord>, JobError> {
        Ok(self.store.active_jobs(&caller.key_id, limit).await?)
    }

    /// How many of the caller's jobs are in each status.
    pub async fn counts(&self, caller: &Caller) -> Result<Vec<(JobStatus, u64)>, JobError> {
        Ok(self.store.count_jobs(&caller.key_id).await?)
    }

    /// The latest preview PNG of a running job of the caller's, if the inference server sent one.
    pub async fn preview(&self, caller: &Caller, id: &str) -> Result<Option<Vec<u8>>, JobError> {
        self.get(caller, id).await?;
        Ok(self
            .previews
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned())
    }

    /// The models the inference servers serve, the default first.
    pub async fn models(&self) -> Result<Vec<ModelInfo>, JobError> {
        self.models.list().await.map_err(JobError::Unavailable)
    }

    /// The model the caller chose as its default (A1111's `POST /sdapi/v1/options` with
    /// `sd_model_checkpoint`), used by its jobs that name none. Kept in memory per key: a
    /// restart forgets it, as A1111 forgets an unsaved setting.
    pub fn preferred_model(&self, caller: &Caller) -> Option<String> {
        self.preferred_models
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&caller.key_id)
            .cloned()
    }

    /// Sets the caller's default model (a name [`JobService::models`] lists; the caller of this
    /// checks it).
    pub fn set_preferred_model(&self, caller: &Caller, model: &str) {
        self.preferred_models
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(caller.key_id.clone(), model.to_owned());
    }

    /// Whether the service can do its work now: the store takes writes and the inference
    /// servers answer (each within 3 s). Each entry is a component and its problem, if any.
    pub async fn readiness(&self) -> Vec<(&'static str, Result<(), String>)> {
        let limit = Duration::from_secs(3);
        let store = match tokio::time::timeout(limit, self.store.ping()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no write lock within {limit:?}")),
        };
        let inference = match tokio::time::timeout(limit, self.models.refresh()).await {
            Ok(Ok(models)) if models.is_empty() => {
                Err("the inference servers serve no model".to_owned())
            }
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(format!("no answer within {limit:?}")),
        };
        vec![("store", store), ("inference", inference)]
    }

    /// Waits until the caller's job has finished or `timeout` has passed, and returns it as it
    /// then is.
    pub async fn wait(
        &self,
        caller: &Caller,
        id: &str,
        timeout: Duration,
    ) -> Result<JobRecord, JobError> {
        let mut changes = self.events.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let record = self.get(caller, id).await?;
            if record.status.is_final() {
                return Ok(record);
            }
            loop {
                match tokio::time::timeout_at(deadline, changes.recv()).await {
                    Err(_) => return self.get(caller, id).await,
                    Ok(Ok(changed)) if changed != id => continue,
                    Ok(Ok(_)) | Ok(Err(broadcast::error::RecvError::Lagged(_))) => break,
                    Ok(Err(broadcast::error::RecvError::Closed)) => {
                        return self.get(caller, id).await;
                    }
                }
            }
        }
    }

    /// A receiver of the id of every job that changes, for watchers.
    pub fn subscribe(&self) -> broadcast::Receiver<String> {
        self.events.subscribe()
    }

    /// The payload a finished job's callback carries (in its webhook format), for callers
    /// who poll or wait instead; None while the job has not finished.
    pub async fn outcome_json(
        &self,
        record: &JobRecord,
    ) -> Result<Option<serde_json::Value>, JobError> {
        if !record.status.is_final() {
            return Ok(None);
        }
        let images = self.store.list_images(&record.job.id).await?;
        Ok(outbox::outcome_json(record, &images, &self.media))
    }

    /// Cancels a job of the caller's that has not finished and stops its generation; a
    /// finished job is returned unchanged.
    pub async fn cancel(&self, caller: &Caller, id: &str) -> Result<JobRecord, JobError> {
        let record = self.get(caller, id).await?;
        self.cancel_record(&record, "canceled by request").await?;
        self.get(caller, id).await
    }

    /// Cancels a job the caller of this already checked.
    async fn cancel_record(&self, record: &JobRecord, reason: &str) -> Result<(), JobError> {
        if !record.status.is_final() {
            let ending = Ending {
                status: JobStatus::Canceled,
                error: Some(reason.to_owned()),
                images: Vec::new(),
                info_json: String::new(),
                finished_at_ms: self.clock.now_ms(),
            };
            self.end(record, ending).await?;
            if let Some(token) = self.running_token(&record.job.id) {
                token.cancel();
            }
        }
        Ok(())
    }

    /// Cancels every unfinished job of the caller's that is in `which` (queued only, or
    /// queued and running); returns how many were cancelled.
    pub async fn cancel_all(
        &self,
        caller: &Caller,
        include_running: bool,
        reason: &str,
    ) -> Result<u64, JobError> {
        let mut cancelled = 0;
        for record in self.store.active_jobs(&caller.key_id, u32::MAX).await? {
            if include_running || record.status == JobStatus::Queued {
                self.cancel_record(&record, reason).await?;
                cancelled += 1;
            }
        }
        Ok(cancelled)
    }

    /// The deliveries of a job of the caller's.
    pub async fn deliveries(
        &self,
        caller: &Caller,
        job_id: &str,
    ) -> Result<Vec<DeliveryRecord>, JobError> {
        self.get(caller, job_id).await?;
        Ok(self.store.list_deliveries(job_id).await?)
    }

    /// Sends a delivery of the caller's again from the start of its schedule, keeping its
    /// webhook-id. Not to a receiver that answered 410 Gone (an operator can force that: the
    /// `deliveries redeliver --force` command), and at most once a minute per delivery, so
    /// redelivery cannot be used to replay freshly signed callbacks at will.
    pub async fn redeliver(
        &self,
        caller: &Caller,
        delivery_id: &str,
    ) -> Result<DeliveryRecord, JobError> {
        let not_found = || JobError::DeliveryNotFound(delivery_id.to_owned());
        let delivery = self
            .store
            .get_delivery(delivery_id)
            .await?
            .ok_or_else(not_found)?;
        self.get(caller, &delivery.job_id)
            .await
            .map_err(|_| not_found())?;
        let now = self.clock.now_ms();
        if let Err(retry_after_s) = self.redeliveries.admit(delivery_id, 1, now) {
            let message = format!("delivery {delivery_id} was redelivered less than a minute ago");
            return Err(JobError::Limited {
                message,
                retry_after_s,
            });
        }
        match self.store.redeliver(delivery_id, now, false).await? {
            Redelivery::NotFound => Err(not_found()),
            Redelivery::Gone(record) => Err(JobError::Conflict(format!(
                "the receiver at {} answered 410 Gone, so it is not called again; once it is back an \
                 operator can send this delivery with `webhook-service deliveries redeliver {} --force`",
                record.url, record.id
            ))),
            Redelivery::Redelivered(record) => {
                self.delivery_wake.notify_one();
                Ok(record)
            }
        }
    }

    /// Writes a job's ending and its callbacks (one transaction) and wakes the deliverer.
    /// Returns false if the job had already ended.
    pub(crate) async fn end(&self, record: &JobRecord, ending: Ending) -> Result<bool, JobError> {
        let finish = outbox::finish(record, ending, &self.media);
        let written = self.store.finish_job(finish).await?;
        if written {
            self.metrics.job_finished();
            self.delivery_wake.notify_one();
            self.events.changed(&record.job.id);
        }
        self.previews
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&record.job.id);
        Ok(written)
    }

    /// Keeps the latest preview of a running job.
    fn set_preview(&self, id: &str, png: Vec<u8>) {
        self.previews
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.to_owned(), png);
    }

    /// Registers a running generation so that [`JobService::cancel`] can stop it.
    fn track(&self, id: &str) -> CancellationToken {
        let token = CancellationToken::new();
        self.lock_running().insert(id.to_owned(), token.clone());
        token
    }

    fn untrack(&self, id: &str) {
        self.lock_running().remove(id);
        self.previews
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
    }

    fn running_token(&self, id: &str) -> Option<CancellationToken> {
        self.lock_running().get(id).cloned()
    }

    fn lock_running(&self) -> std::sync::MutexGuard<'_, HashMap<String, CancellationToken>> {
        // The map stays consistent even if a holder panicked: every operation is one call.
        self.running
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
