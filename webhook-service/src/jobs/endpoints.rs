//! The inference servers a dispatcher may use, with their health and load.
//!
//! Each generation goes to the healthy endpoint with the fewest generations in flight from
//! this process (ties taken in turn, so idle servers share the work). An endpoint whose call
//! or stream fails is marked unhealthy at once, so the job's next attempt goes elsewhere
//! (failover); a health check (`ListModels`, every 5 s) brings it back when it answers.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use sdserve_proto::v1::ListModelsRequest;
use sdserve_proto::v1::inference_client::InferenceClient;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint};

/// Largest gRPC message accepted from an inference server (an image event carries a PNG).
pub const MAX_INFERENCE_MESSAGE: usize = 64 * 1024 * 1024;

/// How often every endpoint's health is checked.
const CHECK_EVERY: Duration = Duration::from_secs(5);
/// How long a health check may take.
const CHECK_DEADLINE: Duration = Duration::from_secs(3);

/// One inference server.
struct State {
    url: String,
    client: InferenceClient<Channel>,
    in_flight: AtomicUsize,
    healthy: AtomicBool,
}

/// The inference servers, their health and their load.
pub struct Endpoints {
    list: Vec<State>,
    turn: AtomicUsize,
}

/// An endpoint chosen for one generation; it counts as in flight until dropped.
pub struct Lease {
    endpoints: Arc<Endpoints>,
    index: usize,
}

impl Lease {
    /// A client of the chosen server.
    pub fn client(&self) -> InferenceClient<Channel> {
        self.endpoints.list[self.index].client.clone()
    }

    /// The server's URL, for logs.
    pub fn url(&self) -> &str {
        &self.endpoints.list[self.index].url
    }

    /// Marks the server unhealthy until its next successful health check.
    pub fn failed(&self) {
        self.endpoints.list[self.index]
            .healthy
            .store(false, Ordering::Relaxed);
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.endpoints.list[self.index]
            .in_flight
            .fetch_sub(1, Ordering::Relaxed);
    }
}

impl Endpoints {
    /// Endpoints for `urls` (connected lazily, with keepalive); an error names a bad URL.
    pub fn new(urls: &[String]) -> Result<Arc<Self>, String> {
        if urls.is_empty() {
            return Err("at least one inference endpoint is required".into());
        }
        let list = urls
            .iter()
            .map(|url| {
                let channel = endpoint(url)?.connect_lazy();
                let client =
                    InferenceClient::new(channel).max_decoding_message_size(MAX_INFERENCE_MESSAGE);
                Ok(State {
                    url: url.clone(),
                    client,
                    in_flight: AtomicUsize::new(0),
                    healthy: AtomicBool::new(true),
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(Arc::new(Self {
            list,
            turn: AtomicUsize::new(0),
        }))
    }

    /// The healthy endpoint with the least generations in flight (any endpoint when none is
    /// healthy: a check may be behind, and the call's own error says what is wrong).
    pub fn pick(self: &Arc<Self>) -> Lease {
        let n = self.list.len();
        let start = self.turn.fetch_add(1, Ordering::Relaxed);
        let order = (0..n).map(|i| (start + i) % n);
        let load = |i: usize| self.list[i].in_flight.load(Ordering::Relaxed);
        let healthy: Vec<usize> = order
            .clone()
            .filter(|&i| self.list[i].healthy.load(Ordering::Relaxed))
            .collect();
        let candidates = if healthy.is_empty() {
            order.collect()
        } else {
            healthy
        };
        let index = candidates.into_iter().min_by_key(|&i| load(i)).unwrap_or(0);
        self.list[index].in_flight.fetch_add(1, Ordering::Relaxed);
        Lease {
            endpoints: self.clone(),
            index,
        }
    }

    /// A client balanced over every endpoint, for calls that any server can answer.
    pub fn any_client(self: &Arc<Self>) -> InferenceClient<Channel> {
        let lease = self.pick();
        lease.client()
    }

    /// Checks every endpoint's health every 5 s until `stop`.
    pub async fn check_health(self: Arc<Self>, stop: CancellationToken) {
        loop {
            for state in &self.list {
                let mut request = tonic::Request::new(ListModelsRequest {});
                request.set_timeout(CHECK_DEADLINE);
                let mut client = state.client.clone();
                let ok = matches!(
                    tokio::time::timeout(CHECK_DEADLINE, client.list_models(request)).await,
                    Ok(Ok(_))
                );
                if state.healthy.swap(ok, Ordering::Relaxed) != ok {
                    match ok {
                        true => tracing::info!(endpoint = %state.url, "inference server is back"),
                        false => {
                            tracing::warn!(endpoint = %state.url, "inference server does not answer; not sending it work")
                        }
                    }
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(CHECK_EVERY) => {}
                _ = stop.cancelled() => return,
            }
        }
    }
}

/// The channel settings of one inference server. Keepalive pings notice a server that hangs
/// or a link that dies while a generation runs, where TCP alone could wait for hours.
fn endpoint(url: &str) -> Result<Endpoint, String> {
    let endpoint = Endpoint::from_shared(url.to_owned())
        .map_err(|e| format!("inference endpoint {url:?}: {e}"))?;
    Ok(endpoint
        .connect_timeout(Duration::from_secs(10))
        .http2_keep_alive_interval(Duration::from_secs(20))
        .keep_alive_timeout(Duration::from_secs(10))
        .keep_alive_while_idle(true))
}
