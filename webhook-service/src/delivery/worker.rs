//! The delivery loop: lease due deliveries from the store and run each through
//! prepare → send → handle result, a bounded number at a time.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::client::{SendOutcome, WebhookClient};
use super::retry::RetryPolicy;
use super::signing::SigningKey;
use crate::clock::Clock;
use crate::domain::{AttemptRecord, DeliveryTask, Format, NextStep};
use crate::jobs::outbox::image_placeholder;
use crate::media::MediaSigner;
use crate::metrics::Metrics;
use crate::store::Store;

/// The longest the loop sleeps without looking at the store.
const IDLE_POLL: Duration = Duration::from_secs(5);

/// How the delivery loop behaves.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Attempts in flight at once.
    pub concurrency: usize,
    /// How long a leased delivery stays with this worker before another may take it; longer
    /// than the client's total timeout.
    pub lease: Duration,
    /// When to retry.
    pub retry: RetryPolicy,
    /// The service's Standard Webhooks key, used when a job has none of its own.
    pub signing_key: Option<SigningKey>,
    /// Largest callback body with its images embedded; a larger one carries their media
    /// URLs instead of their base64 (RunPod's and Cerebrium's shapes).
    pub max_callback_bytes: usize,
    /// Signs the media URLs used above the limit.
    pub media: MediaSigner,
}

/// Everything an attempt needs, shared by the loop and its tasks.
pub struct Deliverer {
    store: Arc<dyn Store>,
    client: WebhookClient,
    clock: Clock,
    metrics: Metrics,
    config: WorkerConfig,
    wake: Arc<Notify>,
}

impl Deliverer {
    /// Assembles a deliverer; `wake` is notified by whoever adds deliveries.
    pub fn new(
        store: Arc<dyn Store>,
        client: WebhookClient,
        clock: Clock,
        metrics: Metrics,
        config: WorkerConfig,
        wake: Arc<Notify>,
    ) -> Arc<Self> {
        Arc::new(Self {
            store,
            client,
            clock,
            metrics,
            config,
            wake,
        })
    }

    /// Runs until `shutdown`, then waits for the attempts in flight to be recorded.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let slots = Arc::new(Semaphore::new(self.config.concurrency.max(1)));
        let tasks = TaskTracker::new();
        while !shutdown.is_cancelled() {
            let free = slots.available_permits();
            if free == 0 {
                tokio::select! {
                    _ = slots.acquire() => continue,
                    _ = shutdown.cancelled() => break,
                }
            }
            let now = self.clock.now_ms();
            let lease_ms = i64::try_from(self.config.lease.as_millis()).unwrap_or(i64::MAX);
            let claimed = match self
                .store
                .claim_due_deliveries(now, now + lease_ms, free as u32)
                .await
            {
                Ok(claimed) => claimed,
                Err(err) => {
                    tracing::error!(error = %err, "cannot lease deliveries; retrying in 1 s");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                        _ = shutdown.cancelled() => break,
                    }
                }
            };
            let full = claimed.len() == free;
            for task in claimed {
                let Ok(permit) = slots.clone().acquire_owned().await else {
                    break;
                };
                let this = self.clone();
                tasks.spawn(async move {
                    this.attempt(task).await;
                    drop(permit);
                });
            }
            if full {
                continue;
            }
            self.wait_for_work(&shutdown).await;
        }
        tasks.close();
        tasks.wait().await;
    }

    async fn wait_for_work(&self, shutdown: &CancellationToken) {
        let next_due = match self.store.next_delivery_due().await {
            Ok(next) => next,
            Err(err) => {
                tracing::error!(error = %err, "cannot read the next due delivery");
                Some(self.clock.now_ms() + 1_000)
            }
        };
        let sleep = async {
            match next_due {
                Some(at) => self.clock.sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        // Deliveries made due by another process (an operator's forced redelivery, another
        // replica) wake nobody here: look again at least this often.
        tokio::select! {
            _ = sleep => {}
            _ = self.wake.notified() => {}
            _ = tokio::time::sleep(IDLE_POLL) => {}
            _ = shutdown.cancelled() => {}
        }
    }

    /// One attempt: prepare, send, record what happened.
    async fn attempt(&self, mut task: DeliveryTask) {
        let at_ms = self.clock.now_ms();
        task.payload = match self.assemble(&task, at_ms).await {
            Ok(body) => body,
            Err(err) => {
                // The lease runs out and the delivery is attempted again: nothing is lost.
                tracing::error!(delivery = %task.id, error = %err, "cannot read the images of a callback");
                return;
            }
        };
        let headers = self.prepare(&task, at_ms);
        let started = Instant::now();
        let outcome = self
            .client
            .send(&task.url, &headers, task.payload.clone())
            .await;
        let elapsed = started.elapsed();
        let record = self.handle(&task, at_ms, elapsed, outcome);
        tracing::info!(
            delivery = %task.id, job = %task.job_id, attempt = record.number,
            status = ?record.status_code, error = record.error.as_deref().unwrap_or(""),
            next = ?record.next, "delivery attempt"
        );
        if let Err(err) = self.store.record_attempt(record).await {
            // The lease runs out and the delivery is attempted again: at-least-once.
            tracing::error!(delivery = %task.id, error = %err, "cannot record attempt");
        }
        // The loop may be sleeping until this delivery's lease ran out; its retry is sooner.
        self.wake.notify_one();
    }

    /// The body to send: the stored one with its image placeholders replaced by the images'
    /// base64, or by their media URLs when that would make it larger than the limit.
    async fn assemble(
        &self,
        task: &DeliveryTask,
        at_ms: i64,
    ) -> Result<Vec<u8>, crate::store::StoreError> {
        use base64::Engine;
        let Ok(text) = std::str::from_utf8(&task.payload) else {
            return Ok(task.payload.clone());
        };
        // `"sdserve-image:<this delivery's id>:`, the start of every placeholder it holds.
        let first = image_placeholder(&task.id, 0);
        if !text.contains(first.trim_end_matches("0\"")) {
            return Ok(task.payload.clone());
        }
        let images = self.store.list_images(&task.job_id).await?;
        let inline_size: usize = text.len()
            + images
                .iter()
                .map(|i| i.png.len().div_ceil(3) * 4)
                .sum::<usize>();
        let inline = inline_size <= self.config.max_callback_bytes;
        if !inline {
            tracing::warn!(delivery = %task.id, bytes = inline_size, limit = self.config.max_callback_bytes, "callback too large with its images; sending media URLs");
        }
        let mut body = text.to_owned();
        for image in &images {
            let placeholder = image_placeholder(&task.id, image.index);
            if !body.contains(&placeholder) {
                continue;
            }
            let value = match inline {
                true => base64::engine::general_purpose::STANDARD.encode(&image.png),
                false => self.config.media.url(&task.job_id, image.index, at_ms),
            };
            body = body.replace(&placeholder, &format!("\"{value}\""));
        }
        Ok(body.into_bytes())
    }

    /// The request headers: content type, Standard Webhooks id/timestamp/signature, bearer
    /// (also as `Authentication` for Diffute).
    fn prepare(&self, task: &DeliveryTask, at_ms: i64) -> Vec<(String, String)> {
        let timestamp = at_ms.div_euclid(1000);
        let mut headers = vec![
            ("content-type".to_owned(), "application/json".to_owned()),
            ("webhook-id".to_owned(), task.id.clone()),
            ("webhook-timestamp".to_owned(), timestamp.to_string()),
        ];
        let job_key = task.signing_secret.as_ref().and_then(|s| {
            match SigningKey::parse(s.expose()) {
                Ok(key) => Some(key),
                Err(err) => {
                    tracing::warn!(delivery = %task.id, error = %err, "job signing key unusable");
                    None
                }
            }
        });
        if let Some(key) = job_key.as_ref().or(self.config.signing_key.as_ref()) {
            headers.push((
                "webhook-signature".to_owned(),
                key.sign(&task.id, timestamp, &task.payload),
            ));
        }
        if let Some(secret) = &task.secret {
            let bearer = format!("Bearer {}", secret.expose());
            // Diffute's document names the header `Authentication`; `Authorization` is what
            // every HTTP stack reads, so Diffute receivers get both.
            if task.format == Format::Diffute {
                headers.push(("authentication".to_owned(), bearer.clone()));
            }
            headers.push(("authorization".to_owned(), bearer));
        }
        headers
    }

    /// Turns the outcome into the attempt's record and the delivery's next state.
    fn handle(
        &self,
        task: &DeliveryTask,
        at_ms: i64,
        elapsed: Duration,
        outcome: SendOutcome,
    ) -> AttemptRecord {
        let round = task.round_attempts + 1;
        let now = self.clock.now_ms();
        let (status_code, error, excerpt, next) = match outcome {
            SendOutcome::Response {
                status,
                body_excerpt,
                ..
            } if (200..300).contains(&status) => {
                (Some(status), None, body_excerpt, NextStep::Succeeded)
            }
            SendOutcome::Response {
                status: 410,
                body_excerpt,
                ..
            } => (
                Some(410),
                Some(
                    "receiver answered 410 Gone: endpoint marked gone, no more attempts".to_owned(),
                ),
                body_excerpt,
                NextStep::Gone,
            ),
            SendOutcome::Response {
                status,
                retry_after,
                body_excerpt,
            } => {
                let error = if (300..400).contains(&status) {
                    format!("receiver answered {status} (redirects are not followed)")
                } else {
                    format!("receiver answered {status}")
                };
                let next = self.config.retry.after_failure(round, now, retry_after);
                (Some(status), Some(error), body_excerpt, next)
            }
            SendOutcome::Failed { kind, reason } => {
                let next = self.config.retry.after_failure(round, now, None);
                (None, Some(format!("{kind}: {reason}")), String::new(), next)
            }
        };
        self.metrics
            .attempt(elapsed.as_secs_f64(), next == NextStep::Succeeded);
        match next {
            NextStep::Exhausted => self.metrics.exhausted(),
            NextStep::Gone => self.metrics.gone(),
            _ => {}
        }
        AttemptRecord {
            delivery_id: task.id.clone(),
            number: task.attempts_made + 1,
            at_ms,
            status_code,
            error,
            duration_ms: u32::try_from(elapsed.as_millis()).unwrap_or(u32::MAX),
            response_excerpt: excerpt,
            next,
        }
    }
}
