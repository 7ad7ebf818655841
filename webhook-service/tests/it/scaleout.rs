//! Several inference servers: each generation goes to the least-loaded healthy one, and a
//! server that goes down mid-generation is left for another (failover) without losing the job.

use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::support;
use support::receiver::Receiver;
use support::service::{Service, submit_request, test_config};

async fn start(servers: &[std::net::SocketAddr], concurrency: usize) -> Service {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(&dir, servers[0]);
    config.inference = servers.iter().map(|a| format!("http://{a}")).collect();
    config.generation_concurrency = concurrency;
    Service::start(config, dir).await
}

#[tokio::test]
async fn generations_go_to_the_least_loaded_server() {
    let fakes = [
        support::inference::start().await,
        support::inference::start().await,
        support::inference::start().await,
    ];
    let service = start(&fakes.iter().map(|f| f.0).collect::<Vec<_>>(), 3).await;
    let receiver = Receiver::http().await;
    let mut client = service.jobs().await;
    for _ in 0..3 {
        client
            .submit_job(submit_request(
                "slow",
                &receiver.url("/hook"),
                "standard",
                "",
            ))
            .await
            .unwrap();
    }
    receiver.wait_for(3, Duration::from_secs(30)).await;
    let calls: Vec<usize> = fakes
        .iter()
        .map(|f| f.1.calls.load(Ordering::SeqCst))
        .collect();
    assert_eq!(
        calls,
        [1, 1, 1],
        "three long generations at once went one to each server"
    );
    service.stop().await;
}

#[tokio::test]
async fn a_server_that_goes_down_mid_generation_is_left_for_another() {
    let fakes = [
        support::inference::start().await,
        support::inference::start().await,
    ];
    let service = start(&fakes.iter().map(|f| f.0).collect::<Vec<_>>(), 1).await;
    let receiver = Receiver::http().await;
    let request = submit_request("slow", &receiver.url("/hook"), "standard", "");
    service.jobs().await.submit_job(request).await.unwrap();
    // Whichever server took it goes down while it generates.
    let first = loop {
        if let Some(f) = fakes.iter().find(|f| f.1.calls.load(Ordering::SeqCst) == 1) {
            break f;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    first.1.down.store(true, Ordering::SeqCst);
    let callback = receiver
        .wait_for(1, Duration::from_secs(30))
        .await
        .remove(0)
        .json();
    assert_eq!(callback["type"], "job.completed", "{callback}");
    let other = fakes.iter().find(|f| f.0 != first.0).unwrap();
    assert_eq!(
        other.1.calls.load(Ordering::SeqCst),
        1,
        "the other server finished the job"
    );
    service.stop().await;
}
