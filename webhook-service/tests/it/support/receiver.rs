//! A scriptable webhook receiver on 127.0.0.1:0, over HTTP or HTTPS (a fresh test CA per
//! receiver), that records every request.
//!
//! ```ignore
//! let receiver = Receiver::https().await;
//! receiver.push(Reply::status(503).header("retry-after", "120"));
//! // ... point a client at receiver.url("/hook") trusting receiver.ca_pem() ...
//! let seen = receiver.wait_for(2, Duration::from_secs(5)).await;
//! assert_eq!(seen[1].header("webhook-id"), Some("msg_1"));
//! ```

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Bytes, Frame, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

/// How the receiver answers one request.
#[derive(Debug, Clone)]
pub struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    delay: Duration,
    action: Action,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Respond,
    Hang,
    Drop,
    Endless,
}

impl Reply {
    /// An empty-bodied answer with `status`.
    pub fn status(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: Vec::new(),
            delay: Duration::ZERO,
            action: Action::Respond,
        }
    }

    /// 200 with body `ok`.
    pub fn ok() -> Self {
        Self::status(200).body("ok")
    }

    /// Records the request and then never answers (the connection stays open).
    pub fn hang() -> Self {
        Self {
            action: Action::Hang,
            ..Self::status(200)
        }
    }

    /// Records the request and then closes the connection without an answer.
    pub fn drop_connection() -> Self {
        Self {
            action: Action::Drop,
            ..Self::status(200)
        }
    }

    /// `status` with a body that never ends (a stream of `z`s).
    pub fn endless_body(status: u16) -> Self {
        Self {
            action: Action::Endless,
            ..Self::status(status)
        }
    }

    /// Adds a response header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Sets the response body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// Waits this long before answering (after recording the request).
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}

/// A request as the receiver saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// `POST`, `GET`, ...
    pub method: String,
    /// Path with query, e.g. `/hook?x=1`.
    pub path: String,
    /// Headers in arrival order, names lowercased.
    pub headers: Vec<(String, String)>,
    /// The full body.
    pub body: Vec<u8>,
    /// The status the receiver chose to answer with; None when it dropped the connection or
    /// never answered. (An answer can still fail to reach a client that went away.)
    pub answered: Option<u16>,
    /// When the whole request had been read.
    pub at: std::time::Instant,
}

impl Recorded {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as UTF-8 (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON; panics if it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.text()))
    }
}

struct State {
    queue: Mutex<VecDeque<Reply>>,
    default: Mutex<Reply>,
    requests: Mutex<Vec<Recorded>>,
    count: watch::Sender<usize>,
    connections: AtomicUsize,
}

/// A running receiver; stops (closing its connections) when dropped.
pub struct Receiver {
    addr: SocketAddr,
    tls: bool,
    ca_pem: Option<String>,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Receiver {
    /// A plain-HTTP receiver.
    pub async fn http() -> Self {
        Self::start(None, None).await
    }

    /// An HTTPS receiver whose certificate, for `localhost` and 127.0.0.1, is signed by a
    /// fresh CA (see [`Receiver::ca_pem`]).
    pub async fn https() -> Self {
        let (ca_pem, config) = tls_server_config();
        Self::start(Some(ca_pem), Some(TlsAcceptor::from(Arc::new(config)))).await
    }

    async fn start(ca_pem: Option<String>, tls: Option<TlsAcceptor>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind receiver");
        let addr = listener.local_addr().expect("receiver address");
        let state = Arc::new(State {
            queue: Mutex::new(VecDeque::new()),
            default: Mutex::new(Reply::ok()),
            requests: Mutex::new(Vec::new()),
            count: watch::channel(0).0,
            connections: AtomicUsize::new(0),
        });
        let task = tokio::spawn(accept_loop(listener, tls.clone(), state.clone()));
        Self {
            addr,
            tls: tls.is_some(),
            ca_pem,
            state,
            task,
        }
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT{path}`, or `https://localhost:PORT{path}` for an HTTPS receiver
    /// (the name its certificate is for).
    pub fn url(&self, path: &str) -> String {
        if self.tls {
            format!("https://localhost:{}{path}", self.addr.port())
        } else {
            format!("http://{}{path}", self.addr)
        }
    }

    /// The PEM of the CA that signed an HTTPS receiver's certificate; panics for HTTP.
    pub fn ca_pem(&self) -> Vec<u8> {
        self.ca_pem
            .clone()
            .expect("ca_pem() is for Receiver::https()")
            .into_bytes()
    }

    /// Queues `reply`: requests take queued replies in order, then the default.
    pub fn push(&self, reply: Reply) {
        self.state.queue.lock().unwrap().push_back(reply);
    }

    /// The answer used when the queue is empty (initially [`Reply::ok`]).
    pub fn set_default(&self, reply: Reply) {
        *self.state.default.lock().unwrap() = reply;
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.state.requests.lock().unwrap().clone()
    }

    /// TCP connections accepted so far (TLS handshakes that failed included).
    pub fn connections(&self) -> usize {
        self.state.connections.load(Ordering::SeqCst)
    }

    /// Waits until at least `n` requests arrived and returns them all; panics after `timeout`.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Recorded> {
        let mut count = self.state.count.subscribe();
        if tokio::time::timeout(timeout, count.wait_for(|c| *c >= n))
            .await
            .is_err()
        {
            panic!(
                "receiver: expected {n} requests within {timeout:?}, got {}",
                self.requests().len()
            );
        }
        self.requests()
    }
}

async fn accept_loop(listener: TcpListener, tls: Option<TlsAcceptor>, state: Arc<State>) {
    // Owning the connection tasks here means dropping the receiver aborts them too.
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                state.connections.fetch_add(1, Ordering::SeqCst);
                connections.spawn(serve(stream, tls.clone(), state.clone()));
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn serve(stream: TcpStream, tls: Option<TlsAcceptor>, state: Arc<State>) {
    let service = service_fn(move |req| handle(req, state.clone()));
    match tls {
        None => {
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        }
        Some(acceptor) => {
            let Ok(stream) = acceptor.accept(stream).await else {
                return;
            };
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        }
    }
}

#[derive(Debug)]
struct Dropped;

impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped on purpose")
    }
}

impl std::error::Error for Dropped {}

type Body = BoxBody<Bytes, std::convert::Infallible>;

async fn handle(req: Request<Incoming>, state: Arc<State>) -> Result<Response<Body>, Dropped> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes().to_vec())
        .unwrap_or_default();
    let recorded = Recorded {
        method: parts.method.to_string(),
        path: parts
            .uri
            .path_and_query()
            .map(ToString::to_string)
            .unwrap_or_else(|| "/".into()),
        headers: parts
            .headers
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_ascii_lowercase(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body,
        answered: None,
        at: std::time::Instant::now(),
    };
    // Replies are taken and requests recorded under one lock, so the n-th recorded request
    // got the n-th reply even when requests arrive at once.
    let (reply, total) = {
        let mut requests = state.requests.lock().unwrap();
        let queued = state.queue.lock().unwrap().pop_front();
        let reply = queued.unwrap_or_else(|| state.default.lock().unwrap().clone());
        let answers = matches!(reply.action, Action::Respond | Action::Endless);
        requests.push(Recorded {
            answered: answers.then_some(reply.status),
            ..recorded
        });
        (reply, requests.len())
    };
    state.count.send_replace(total);
    tokio::time::sleep(reply.delay).await;
    let body = match reply.action {
        Action::Respond => Full::new(Bytes::from(reply.body)).boxed(),
        Action::Hang => std::future::pending().await,
        Action::Drop => return Err(Dropped),
        Action::Endless => {
            let chunk = Bytes::from(vec![b'z'; 16 * 1024]);
            StreamBody::new(futures::stream::repeat_with(move || {
                Ok(Frame::data(chunk.clone()))
            }))
            .boxed()
        }
    };
    let mut response = Response::builder().status(reply.status);
    for (name, value) in &reply.headers {
        response = response.header(name, value);
    }
    Ok(response.body(body).expect("valid scripted reply"))
}

fn tls_server_config() -> (String, rustls::ServerConfig) {
    let ca_key = rcgen::KeyPair::generate().expect("CA key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "sdserve test CA");
    ca_params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    let ca = ca_params.self_signed(&ca_key).expect("CA certificate");

    let leaf_key = rcgen::KeyPair::generate().expect("leaf key");
    let mut leaf_params =
        rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .expect("leaf params");
    leaf_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "localhost");
    let leaf = leaf_params
        .signed_by(&leaf_key, &ca, &ca_key)
        .expect("leaf certificate");

    let chain: Vec<CertificateDer<'static>> = vec![leaf.der().clone()];
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("server certificate");
    (ca.pem(), config)
}
