//! A service killed (SIGKILL) with deliveries pending and restarted on the same database
//! delivers every one, each with its original webhook-id, and finishes interrupted jobs.

use crate::support;

use std::collections::BTreeSet;
use std::time::Duration;

use sdserve_proto::v1 as pb;
use support::process::{command, connect, free_port};
use support::receiver::{Receiver, Reply};
use support::service::submit_request;

#[tokio::test]
async fn killed_with_deliveries_pending_then_restarted_delivers_all_with_original_ids() {
    let (inference, fake) = support::inference::start().await;
    let receiver = Receiver::http().await;
    receiver.set_default(Reply::status(500));
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("jobs.db");
    let (grpc, http) = (free_port(), free_port());

    let mut first = command(&db, grpc, http, inference).spawn().unwrap();
    let mut client = connect(grpc).await;
    let mut jobs = Vec::new();
    for i in 0..5 {
        let request = submit_request(
            &format!("prompt {i}"),
            &receiver.url("/hook"),
            "standard",
            "",
        );
        jobs.push(
            client
                .submit_job(request)
                .await
                .unwrap()
                .into_inner()
                .job_id,
        );
    }
    // One job is still generating when the process dies.
    let slow = client
        .submit_job(submit_request(
            "slow",
            &receiver.url("/hook"),
            "standard",
            "",
        ))
        .await
        .unwrap()
        .into_inner()
        .job_id;
    let seen = receiver.wait_for(5, Duration::from_secs(20)).await;
    let before: BTreeSet<String> = seen
        .iter()
        .filter_map(|r| r.header("webhook-id").map(str::to_owned))
        .collect();
    assert_eq!(
        before.len(),
        5,
        "each finished job's delivery was attempted"
    );
    first.kill().unwrap();
    first.wait().unwrap();
    let calls_before_restart = fake.calls.load(std::sync::atomic::Ordering::SeqCst);

    receiver.set_default(Reply::status(200));
    let answered_before_switch = receiver.requests().len();
    let mut second = command(&db, grpc, http, inference).spawn().unwrap();
    let mut client = connect(grpc).await;
    let mut delivered = BTreeSet::new();
    for job in jobs.iter().chain([&slow]) {
        let list = support::service::wait_deliveries(&mut client, job, |d| {
            d.len() == 1 && d[0].status() == pb::DeliveryStatus::Succeeded
        })
        .await;
        delivered.insert(list[0].id.clone());
    }
    assert!(
        before.is_subset(&delivered),
        "original ids {before:?} not all in {delivered:?}"
    );
    let ok_ids: BTreeSet<String> = receiver
        .requests()
        .iter()
        .skip(answered_before_switch)
        .filter_map(|r| r.header("webhook-id").map(str::to_owned))
        .collect();
    assert_eq!(
        ok_ids, delivered,
        "after the restart the receiver got every delivery, and only those"
    );
    assert!(
        fake.calls.load(std::sync::atomic::Ordering::SeqCst) > calls_before_restart,
        "the interrupted job was generated again"
    );
    second.kill().unwrap();
    second.wait().unwrap();
}
