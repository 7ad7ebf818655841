//! Prometheus metrics, served at `/metrics` by the HTTP API.

use std::sync::Arc;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// The service's counters and histograms; cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    /// Delivery attempts made.
    attempts: Counter,
    /// Attempts answered 2xx.
    successes: Counter,
    /// Attempts that failed (any reason).
    failures: Counter,
    /// Deliveries whose schedule ran out.
    exhausted: Counter,
    /// Deliveries stopped by 410 Gone.
    gone: Counter,
    /// Attempt duration, seconds.
    attempt_seconds: Histogram,
    /// Jobs accepted.
    jobs_accepted: Counter,
    /// Jobs finished (any status).
    jobs_finished: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("sdserve_webhook");
        let attempts = Counter::default();
        let successes = Counter::default();
        let failures = Counter::default();
        let exhausted = Counter::default();
        let gone = Counter::default();
        let attempt_seconds = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        let jobs_accepted = Counter::default();
        let jobs_finished = Counter::default();
        registry.register(
            "delivery_attempts",
            "Webhook delivery attempts made",
            attempts.clone(),
        );
        registry.register(
            "delivery_successes",
            "Attempts answered with 2xx",
            successes.clone(),
        );
        registry.register(
            "delivery_failures",
            "Attempts that failed",
            failures.clone(),
        );
        registry.register(
            "delivery_exhausted",
            "Deliveries whose retries ran out",
            exhausted.clone(),
        );
        registry.register(
            "delivery_gone",
            "Deliveries stopped by 410 Gone",
            gone.clone(),
        );
        registry.register(
            "delivery_attempt_seconds",
            "Duration of one delivery attempt",
            attempt_seconds.clone(),
        );
        registry.register("jobs_accepted", "Jobs accepted", jobs_accepted.clone());
        registry.register(
            "jobs_finished",
            "Jobs finished in any state",
            jobs_finished.clone(),
        );
        Self {
            inner: Arc::new(Inner {
                registry,
                attempts,
                successes,
                failures,
                exhausted,
                gone,
                attempt_seconds,
                jobs_accepted,
                jobs_finished,
            }),
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.inner.registry);
        out
    }

    /// Counts one attempt with its duration and whether it succeeded.
    pub fn attempt(&self, seconds: f64, succeeded: bool) {
        self.inner.attempts.inc();
        self.inner.attempt_seconds.observe(seconds);
        if succeeded {
            &self.inner.successes
        } else {
            &self.inner.failures
        }
        .inc();
    }

    /// Counts a delivery that ran out of attempts.
    pub fn exhausted(&self) {
        self.inner.exhausted.inc();
    }

    /// Counts a delivery stopped by 410 Gone.
    pub fn gone(&self) {
        self.inner.gone.inc();
    }

    /// Counts an accepted job.
    pub fn job_accepted(&self) {
        self.inner.jobs_accepted.inc();
    }

    /// Counts a finished job.
    pub fn job_finished(&self) {
        self.inner.jobs_finished.inc();
    }
}
