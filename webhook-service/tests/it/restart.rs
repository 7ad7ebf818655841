//! A service killed (SIGKILL) with deliveries pending and restarted on the same database
//! delivers every one, each with its original webhook-id, and finishes interrupted jobs.

use crate::support;

use std::collections::BTreeSet;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use sdserve_proto::v1 as pb;
use sdserve_proto::v1::jobs_client::JobsClient;
use support::receiver::{Receiver, Reply};
use support::service::submit_request;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn spawn(db: &std::path::Path, grpc: u16, http: u16, inference: std::net::SocketAddr) -> Child {
    Command::new(env!("CARGO_BIN_EXE_webhook-service"))
        .arg("serve")
        .env("SDSERVE_GRPC_LISTEN", format!("127.0.0.1:{grpc}"))
        .env("SDSERVE_HTTP_LISTEN", format!("127.0.0.1:{http}"))
        .env("SDSERVE_DATABASE", format!("sqlite://{}", db.display()))
        .env("SDSERVE_INFERENCE", format!("http://{inference}"))
        .env("SDSERVE_ALLOW_HTTP", "true")
        // Durability is under test here; keys are covered by `auth.rs`.
        .env("SDSERVE_NO_AUTH", "true")
        .env("SDSERVE_ALLOW_PRIVATE", "127.0.0.0/8")
        .env("SDSERVE_RETRY_SCHEDULE", "1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s")
        .env("SDSERVE_TIMEOUT", "2s")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

async fn connect(grpc: u16) -> JobsClient<tonic::transport::Channel> {
    for _ in 0..200 {
        if let Ok(client) = JobsClient::connect(format!("http://127.0.0.1:{grpc}")).await {
            return client;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("service did not start on port {grpc}");
}

#[tokio::test]
async fn killed_with_deliveries_pending_then_restarted_delivers_all_with_original_ids() {
    let (inference, fake) = support::inference::start().await;
    let receiver = Receiver::http().await;
    receiver.set_default(Reply::status(500));
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("jobs.db");
    let (grpc, http) = (free_port(), free_port());

    let mut first = spawn(&db, grpc, http, inference);
    let mut client = connect(grpc).await;
    let mut jobs = Vec::new();
    for i in 0..5 {
        let request = submit_request(&format!("prompt {i}"), &receiver.url("/hook"), "standard", "");
        jobs.push(client.submit_job(request).await.unwrap().into_inner().job_id);
    }
    // One job is still generating when the process dies.
    let slow = client.submit_job(submit_request("slow", &receiver.url("/hook"), "standard", "")).await.unwrap().into_inner().job_id;
    let seen = receiver.wait_for(5, Duration::from_secs(20)).await;
    let before: BTreeSet<String> = seen.iter().filter_map(|r| r.header("webhook-id").map(str::to_owned)).collect();
    assert_eq!(before.len(), 5, "each finished job's delivery was attempted");
    first.kill().unwrap();
    first.wait().unwrap();
    let calls_before_restart = fake.calls.load(std::sync::atomic::Ordering::SeqCst);

    receiver.set_default(Reply::status(200));
    let answered_before_switch = receiver.requests().len();
    let mut second = spawn(&db, grpc, http, inference);
    let mut client = connect(grpc).await;
    let mut delivered = BTreeSet::new();
    for job in jobs.iter().chain([&slow]) {
        let list = support::service::wait_deliveries(&mut client, job, |d| {
            d.len() == 1 && d[0].status() == pb::DeliveryStatus::Succeeded
        })
        .await;
        delivered.insert(list[0].id.clone());
    }
    assert!(before.is_subset(&delivered), "original ids {before:?} not all in {delivered:?}");
    let ok_ids: BTreeSet<String> = receiver
        .requests()
        .iter()
        .skip(answered_before_switch)
        .filter_map(|r| r.header("webhook-id").map(str::to_owned))
        .collect();
    assert_eq!(ok_ids, delivered, "after the restart the receiver got every delivery, and only those");
    assert!(fake.calls.load(std::sync::atomic::Ordering::SeqCst) > calls_before_restart, "the interrupted job was generated again");
    second.kill().unwrap();
    second.wait().unwrap();
}
