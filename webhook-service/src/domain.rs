//! The service's own types: jobs, webhook targets, results and deliveries.
//!
//! The wire types (protobuf, HTTP JSON) are translated to and from these at the edges, and the
//! store persists them; nothing below `api/` sees a request type.

use std::fmt;
use std::str::FromStr;

use sdserve_proto::v1::GenerationParams;

/// A secret string (bearer token or signing key) that never prints its value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value, for the one place that must send or use it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Error for a name that is not one of an enum's accepted spellings.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} {given:?}; accepted: {accepted}")]
pub struct UnknownName {
    /// What kind of name it was ("format", "event").
    pub what: &'static str,
    /// The name given.
    pub given: String,
    /// The accepted names, comma-separated.
    pub accepted: &'static str,
}

macro_rules! named_enum {
    ($(#[$meta:meta])* $name:ident, $what:literal { $($(#[$vmeta:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($(#[$vmeta])* $variant),+ }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The name used on the wire and in the store.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl FromStr for $name {
            type Err = UnknownName;
            fn from_str(s: &str) -> Result<Self, UnknownName> {
                match s {
                    $($text => Ok($name::$variant),)+
                    _ => Err(UnknownName {
                        what: $what,
                        given: s.to_owned(),
                        accepted: concat!($($text, " "),+).trim_ascii_end(),
                    }),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

named_enum! {
    /// The JSON shape of a callback: the native one or a vendor's (see `shared/seeds`).
    Format, "format" {
        /// Native: `{type, timestamp, data}` in the Standard Webhooks style.
        Standard = "standard",
        /// RunPod's A1111 worker job-status object.
        Runpod = "runpod",
        /// Cerebrium's `{run_id, run_time_ms, message, result}`.
        Cerebrium = "cerebrium",
        /// Diffute's prompt-name → media URL lists.
        Diffute = "diffute",
        /// Leonardo.ai's `image_generation.complete` event.
        Leonardo = "leonardo",
    }
}

named_enum! {
    /// A job event a webhook can ask for.
    EventKind, "event" {
        /// The job finished with images.
        Completed = "completed",
        /// The job failed.
        Failed = "failed",
        /// The job was cancelled.
        Canceled = "canceled",
    }
}

named_enum! {
    /// Where a job is in its life.
    JobStatus, "job status" {
        /// Stored, waiting for an inference server.
        Queued = "queued",
        /// Generating.
        Running = "running",
        /// Finished with images.
        Completed = "completed",
        /// Finished with an error.
        Failed = "failed",
        /// Cancelled before it finished.
        Canceled = "canceled",
        /// Stopped because it ran past its execution timeout.
        TimedOut = "timed_out",
    }
}

named_enum! {
    /// Where a delivery is in its life.
    DeliveryStatus, "delivery status" {
        /// Waiting for its next attempt.
        Pending = "pending",
        /// An attempt is in flight (leased by a worker).
        Sending = "sending",
        /// The receiver answered 2xx.
        Succeeded = "succeeded",
        /// Every attempt of the schedule failed.
        Exhausted = "exhausted",
        /// The receiver answered 410 Gone.
        Gone = "gone",
    }
}

impl JobStatus {
    /// True once the job can no longer change.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            Self::Completed | Self::Failed | Self::Canceled | Self::TimedOut
        )
    }
}

/// Where and how a job's result is delivered.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookTarget {
    /// Destination URL, already validated; None when the caller polls or waits instead
    /// (RunPod `/runsync`, A1111, Cerebrium without `webhook_endpoint`): no callback is sent.
    pub url: Option<String>,
    /// Sent as `Authorization: Bearer`.
    pub secret: Option<Secret>,
    /// Payload shape.
    pub format: Format,
    /// Events to deliver.
    pub events: Vec<EventKind>,
    /// Standard Webhooks key (`whsec_...`) overriding the service's own.
    pub signing_secret: Option<Secret>,
}

/// A job accepted by the API, ready to be stored.
#[derive(Debug, Clone)]
pub struct NewJob {
    /// The id handed back to the caller.
    pub id: String,
    /// The API key that created the job (its id); only that key can see or change it. Empty
    /// for jobs accepted by a service running without authentication (`--no-auth`).
    pub owner: String,
    /// What to generate.
    pub params: GenerationParams,
    /// Further generations of the same job, run after `params` in order (Diffute's several
    /// prompts per request); their images follow the first part's in the job's numbering.
    pub extra_parts: Vec<GenerationParams>,
    /// Longest time the generation may run once started, in ms (RunPod's
    /// `policy.executionTimeout`); past it the job ends as timed out. None = no limit.
    pub execution_timeout_ms: Option<u64>,
    /// Where the result goes.
    pub webhook: WebhookTarget,
    /// Caller's de-duplication key.
    pub idempotency_key: Option<String>,
    /// Vendor request fields echoed by the callback formats (a JSON object, or null).
    pub vendor_context: serde_json::Value,
    /// Acceptance time, ms since the epoch.
    pub created_at_ms: i64,
}

impl NewJob {
    /// SHA-256 of what the job asks for (parameters, parts, webhook target, vendor context;
    /// not its id, owner or times): two submissions under one idempotency key must agree on it.
    pub fn fingerprint(&self) -> [u8; 32] {
        use prost::Message;
        use sha2::{Digest, Sha256};
        let mut hash = Sha256::new();
        let mut field = |bytes: &[u8]| {
            hash.update((bytes.len() as u64).to_le_bytes());
            hash.update(bytes);
        };
        field(&self.params.encode_to_vec());
        for part in &self.extra_parts {
            field(&part.encode_to_vec());
        }
        let w = &self.webhook;
        field(w.url.as_deref().unwrap_or_default().as_bytes());
        field(w.format.as_str().as_bytes());
        field(
            w.events
                .iter()
                .map(|e| e.as_str())
                .collect::<Vec<_>>()
                .join(",")
                .as_bytes(),
        );
        field(
            w.secret
                .as_ref()
                .map(|s| s.expose())
                .unwrap_or_default()
                .as_bytes(),
        );
        field(
            w.signing_secret
                .as_ref()
                .map(|s| s.expose())
                .unwrap_or_default()
                .as_bytes(),
        );
        field(self.vendor_context.to_string().as_bytes());
        field(&self.execution_timeout_ms.unwrap_or(0).to_le_bytes());
        hash.finalize().into()
    }
}

/// A stored job.
#[derive(Debug, Clone)]
pub struct JobRecord {
    /// The job as submitted.
    pub job: NewJob,
    /// Current state.
    pub status: JobStatus,
    /// When an inference server took the job (it may still wait in that server's queue).
    pub dispatched_at_ms: Option<i64>,
    /// The job's place in the inference server's queue, as its last `Queued` event said.
    pub queue_position: Option<u32>,
    /// When generation started (the inference server's `Started` event): the end of queueing.
    pub started_at_ms: Option<i64>,
    /// When it finished.
    pub finished_at_ms: Option<i64>,
    /// Steps done so far.
    pub progress_step: u32,
    /// Steps in all (0 until known).
    pub progress_total: u32,
    /// Images stored for the job.
    pub image_count: u32,
    /// Why it failed.
    pub error: Option<String>,
    /// Model that ran it, once started.
    pub model: String,
    /// A1111's `info` JSON of a finished job; empty before or when none was produced.
    pub info_json: String,
}

impl JobRecord {
    /// Every part of the job in the order it runs: `params`, then `extra_parts`.
    pub fn parts(&self) -> impl Iterator<Item = &GenerationParams> {
        std::iter::once(&self.job.params).chain(self.job.extra_parts.iter())
    }

    /// ms the job waited, in this service's queue and the inference server's, before its
    /// generation started; up to `now_ms` while it still waits.
    pub fn queue_ms(&self, now_ms: i64) -> u64 {
        let until = self.started_at_ms.or(self.finished_at_ms).unwrap_or(now_ms);
        (until - self.job.created_at_ms).max(0) as u64
    }

    /// ms the generation ran: from its start to its end (or `now_ms` while it runs); 0 when
    /// it never started.
    pub fn execution_ms(&self, now_ms: i64) -> u64 {
        match self.started_at_ms {
            Some(started) => (self.finished_at_ms.unwrap_or(now_ms) - started).max(0) as u64,
            None => 0,
        }
    }
}

/// One image a job produced, as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredImage {
    /// 0-based position in the job.
    pub index: u32,
    /// Seed it came from.
    pub seed: i64,
    /// A1111 infotext.
    pub infotext: String,
    /// The PNG file.
    pub png: Vec<u8>,
}

/// A finished job as the payload formats see it: the one type every format renders from.
#[derive(Debug, Clone)]
pub struct JobOutcome<'a> {
    /// The job, with its final status, timings and error.
    pub record: &'a JobRecord,
    /// Which event this payload reports.
    pub event: EventKind,
    /// Images with their public (signed, expiring) URLs.
    pub images: Vec<PublishedImage<'a>>,
    /// A1111's `info` JSON string; empty when the job failed before it existed.
    pub info_json: &'a str,
    /// ms from acceptance to start of work.
    pub queue_ms: u64,
    /// ms of work.
    pub execution_ms: u64,
    /// When the payload was made, ms since the epoch.
    pub timestamp_ms: i64,
}

/// An image with the URL the service serves it at.
#[derive(Debug, Clone)]
pub struct PublishedImage<'a> {
    /// The stored image.
    pub image: &'a StoredImage,
    /// Signed media URL.
    pub url: String,
}

/// A callback to store in the outbox together with the job's result.
#[derive(Debug, Clone, PartialEq)]
pub struct NewDelivery {
    /// The `webhook-id`, kept for every attempt.
    pub id: String,
    /// Which event.
    pub event: EventKind,
    /// Destination.
    pub url: String,
    /// The exact JSON body sent on every attempt.
    pub payload: Vec<u8>,
}

/// A finished job's result and its callbacks, written in one transaction.
#[derive(Debug, Clone)]
pub struct JobFinish {
    /// The job.
    pub job_id: String,
    /// Completed, Failed or Canceled.
    pub status: JobStatus,
    /// Why it failed.
    pub error: Option<String>,
    /// Its images.
    pub images: Vec<StoredImage>,
    /// A1111 info JSON.
    pub info_json: String,
    /// When work started, if it did.
    pub started_at_ms: Option<i64>,
    /// When it finished.
    pub finished_at_ms: i64,
    /// Callbacks to send.
    pub deliveries: Vec<NewDelivery>,
}

/// A delivery leased to a worker for one attempt.
#[derive(Debug, Clone)]
pub struct DeliveryTask {
    /// The `webhook-id`.
    pub id: String,
    /// Its job.
    pub job_id: String,
    /// Destination.
    pub url: String,
    /// The body.
    pub payload: Vec<u8>,
    /// Bearer token.
    pub secret: Option<Secret>,
    /// Per-job Standard Webhooks key.
    pub signing_secret: Option<Secret>,
    /// The job's callback format: some formats add headers of their own (Diffute's
    /// `Authentication`).
    pub format: Format,
    /// Attempts already made in all (this one is number `attempts_made + 1`).
    pub attempts_made: u32,
    /// Attempts made since the delivery was created or last redelivered: the position in the
    /// retry schedule.
    pub round_attempts: u32,
}

/// What one attempt ended as, and what happens next.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptRecord {
    /// The delivery.
    pub delivery_id: String,
    /// 1-based attempt number.
    pub number: u32,
    /// Start, ms since the epoch.
    pub at_ms: i64,
    /// HTTP status, if one arrived.
    pub status_code: Option<u16>,
    /// Failure reason; None on success.
    pub error: Option<String>,
    /// Duration.
    pub duration_ms: u32,
    /// First KiB of the response body.
    pub response_excerpt: String,
    /// Resulting state.
    pub next: NextStep,
}

/// The state a delivery moves to after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextStep {
    /// Done.
    Succeeded,
    /// Try again at this time (ms since the epoch).
    RetryAt(i64),
    /// The schedule is used up.
    Exhausted,
    /// The receiver answered 410; its URL is marked gone.
    Gone,
}

/// A delivery with its history, for inspection.
#[derive(Debug, Clone)]
pub struct DeliveryRecord {
    /// The `webhook-id`.
    pub id: String,
    /// Its job.
    pub job_id: String,
    /// Which event.
    pub event: EventKind,
    /// Destination.
    pub url: String,
    /// State.
    pub status: DeliveryStatus,
    /// When the next attempt is due.
    pub next_attempt_at_ms: Option<i64>,
    /// Last failure.
    pub last_error: Option<String>,
    /// Created, ms since the epoch.
    pub created_at_ms: i64,
    /// Attempts, oldest first.
    pub attempts: Vec<AttemptRecord>,
}

/// Limits of one API key; None = the service's default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeyLimits {
    /// Jobs of the key that may be queued or running at once.
    pub max_in_flight: Option<u32>,
    /// Submissions the key may make per minute.
    pub per_minute: Option<u32>,
}

/// A callback configured on an API key rather than per request (Leonardo's model: the webhook
/// URL and callback API key belong to the production API key).
#[derive(Debug, Clone, PartialEq)]
pub struct KeyWebhook {
    /// HTTPS URL the key's Leonardo-shaped jobs are delivered to.
    pub url: String,
    /// Sent as `Authorization: Bearer` with those callbacks.
    pub secret: Option<Secret>,
}

/// A stored API key (never the key itself: only its SHA-256 hash is kept).
#[derive(Debug, Clone, PartialEq)]
pub struct ApiKeyRecord {
    /// Public id (`key_...`), the owner of the key's jobs.
    pub id: String,
    /// A person's name for the key.
    pub name: String,
    /// The key's first characters, to recognise it in a list.
    pub prefix: String,
    /// Created, ms since the epoch.
    pub created_at_ms: i64,
    /// Revoked, ms since the epoch; a revoked key authenticates nothing.
    pub revoked_at_ms: Option<i64>,
    /// Its limits.
    pub limits: KeyLimits,
    /// Its key-level callback, if configured.
    pub webhook: Option<KeyWebhook>,
}

/// A key to store: its record and the SHA-256 hash of its secret value.
#[derive(Debug, Clone)]
pub struct NewApiKey {
    /// The record.
    pub record: ApiKeyRecord,
    /// SHA-256 of the key.
    pub hash: [u8; 32],
}
