//! The models the inference servers serve, asked with `ListModels` and kept for a short while,
//! for the APIs that list or select models (A1111 `sd-models`, Cerebrium's `{model}`,
//! Diffute's `pretrained_model_name`).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use std::sync::Arc;

use sdserve_proto::v1::{ListModelsRequest, ListModelsResponse, ModelInfo};

use super::endpoints::Endpoints;

/// How long a model list is reused.
const CACHE_TTL: Duration = Duration::from_secs(30);
/// How long `ListModels` may take.
const DEADLINE: Duration = Duration::from_secs(5);

/// The inference servers' models, cached.
pub struct ModelCatalog {
    endpoints: Arc<Endpoints>,
    cache: Mutex<Option<(Instant, ListModelsResponse)>>,
}

impl ModelCatalog {
    /// A catalog asking one of `endpoints` (a healthy one when there is one).
    pub fn new(endpoints: Arc<Endpoints>) -> Self {
        Self {
            endpoints,
            cache: Mutex::new(None),
        }
    }

    /// The served models, the default first; an error says why the servers could not be asked.
    pub async fn list(&self) -> Result<Vec<ModelInfo>, String> {
        Ok(self.catalog().await?.models)
    }

    /// The sampler names the inference servers accept; empty when they do not say.
    pub async fn sampler_names(&self) -> Result<Vec<String>, String> {
        Ok(self.catalog().await?.sampler_names)
    }

    async fn catalog(&self) -> Result<ListModelsResponse, String> {
        if let Some((at, catalog)) = self
            .cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            && at.elapsed() < CACHE_TTL
        {
            return Ok(catalog.clone());
        }
        self.fetch().await
    }

    /// Asks the inference servers now, bypassing the cache (readiness checks).
    pub async fn refresh(&self) -> Result<Vec<ModelInfo>, String> {
        Ok(self.fetch().await?.models)
    }

    async fn fetch(&self) -> Result<ListModelsResponse, String> {
        let mut request = tonic::Request::new(ListModelsRequest {});
        request.set_timeout(DEADLINE);
        let mut client = self.endpoints.any_client();
        let catalog = match tokio::time::timeout(DEADLINE, client.list_models(request)).await {
            Ok(Ok(response)) => response.into_inner(),
            Ok(Err(status)) => {
                return Err(format!(
                    "the inference server cannot list its models: {}",
                    status.message()
                ));
            }
            Err(_) => {
                return Err(format!(
                    "the inference server did not list its models within {DEADLINE:?}"
                ));
            }
        };
        *self.cache.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((Instant::now(), catalog.clone()));
        Ok(catalog)
    }
}
