//! The real `webhook-service` binary as a child process (for tests that kill it with SIGKILL
//! and restart it on the same database), and a gRPC client that waits for it to listen.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use sdserve_proto::v1::jobs_client::JobsClient;
use tonic::transport::Channel;

/// A loopback port free at the time of asking (the child binds it by number, so a restart can
/// listen where its clients already point).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `webhook-service serve` on `grpc`/`http` with its database at `db`, generating on
/// `inference`: plain HTTP and loopback webhooks allowed, no API keys, a 1 s retry schedule
/// (20 attempts) and a 2 s delivery timeout; stdout discarded, stderr inherited. Callers add or
/// override `SDSERVE_*` variables and redirect stderr before `spawn()`.
pub fn command(db: &Path, grpc: u16, http: u16, inference: SocketAddr) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_webhook-service"));
    command
        .arg("serve")
        .env("SDSERVE_GRPC_LISTEN", format!("127.0.0.1:{grpc}"))
        .env("SDSERVE_HTTP_LISTEN", format!("127.0.0.1:{http}"))
        .env("SDSERVE_DATABASE", format!("sqlite://{}", db.display()))
        .env("SDSERVE_INFERENCE", format!("http://{inference}"))
        .env("SDSERVE_ALLOW_HTTP", "true")
        // Durability is under test here; keys are covered by `auth.rs`.
        .env("SDSERVE_NO_AUTH", "true")
        .env("SDSERVE_ALLOW_PRIVATE", "127.0.0.0/8")
        .env(
            "SDSERVE_RETRY_SCHEDULE",
            "1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s",
        )
        .env("SDSERVE_TIMEOUT", "2s")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    command
}

/// A Jobs client of the service on `grpc`, retried for up to 10 s while it starts.
pub async fn connect(grpc: u16) -> JobsClient<Channel> {
    for _ in 0..200 {
        if let Ok(client) = JobsClient::connect(format!("http://127.0.0.1:{grpc}")).await {
            return client;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("service did not start on port {grpc}");
}

/// A spawned service that is killed (SIGKILL) when dropped, so a failing test leaves no
/// process behind.
pub struct Running(pub std::process::Child);

impl Running {
    /// `kill -9` and reap it.
    pub fn kill9(mut self) {
        self.0.kill().unwrap();
        self.0.wait().unwrap();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
