//! `serve` stops when its shutdown future resolves, even with a client still connected, and
//! returns Ok; the port then refuses calls.

mod common;

use std::time::Duration;

use common::start_coordinator;
use coordinator::RunConfig;
use proto::StatusRequest;

#[tokio::test]
async fn shutdown_with_a_connected_client_returns_ok() {
    let server = start_coordinator(RunConfig::default()).await;
    let mut client = server.client().await;
    let status = client.status(StatusRequest {}).await.unwrap().into_inner();
    assert_eq!(status.max_lag, 8);
    assert!(status.actors.is_empty());

    // The client keeps its connection open across the shutdown.
    server.stop().await.expect("serve returns Ok");
    let after = tokio::time::timeout(Duration::from_secs(10), client.status(StatusRequest {}))
        .await
        .expect("a call to a stopped server fails promptly");
    assert!(after.is_err(), "the server is gone: {after:?}");
}
