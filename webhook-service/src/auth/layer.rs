//! The tower layer that authenticates every request of both faces (axum and tonic) before it
//! reaches a handler. It never rejects by itself: it leaves an [`Authenticated`] in the
//! request's extensions, and the handlers that need a caller refuse without one, so health,
//! reflection, `/healthz`, `/metrics` and signed media links stay open.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use super::{Authenticated, KeyRing, credential};

/// Wraps a service with [`AuthService`].
#[derive(Clone)]
pub struct AuthLayer {
    keys: Arc<KeyRing>,
}

impl AuthLayer {
    /// Authenticates against `keys`.
    pub fn new(keys: Arc<KeyRing>) -> Self {
        Self { keys }
    }
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthService {
            inner,
            keys: self.keys.clone(),
        }
    }
}

/// Resolves the request's credential into an [`Authenticated`] extension, then calls `inner`.
#[derive(Clone)]
pub struct AuthService<S> {
    inner: S,
    keys: Arc<KeyRing>,
}

impl<S, B> tower::Service<http::Request<B>> for AuthService<S>
where
    S: tower::Service<http::Request<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        // The clone that was polled ready serves this request; the fresh clone waits for the next.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let keys = self.keys.clone();
        Box::pin(async move {
            let presented = credential::from_headers(request.headers());
            let outcome = keys.authenticate(presented.as_deref()).await;
            request.extensions_mut().insert(Authenticated(outcome));
            inner.call(request).await
        })
    }
}
