//! Shared helpers for the integration tests: start a coordinator on a real port-0 listener,
//! connect clients once it answers, and stop it through its shutdown future.

// Each test file uses a different subset of the helpers.
#![allow(dead_code)]

use std::error::Error;
use std::net::SocketAddr;
use std::time::Duration;

use coordinator::{Coordinator, CoordinatorError, RunConfig};
use proto::coordinator_client::CoordinatorClient;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

/// How long a test waits for the server to answer before failing.
pub const UP_DEADLINE: Duration = Duration::from_secs(10);
/// How long `serve` may take to return after its shutdown future resolves.
pub const STOP_DEADLINE: Duration = Duration::from_secs(10);
/// The gRPC health name of the coordinator service.
pub const SERVICE_NAME: &str = "oxrl.v1.Coordinator";

/// A coordinator serving on 127.0.0.1 in a background task.
pub struct RunningCoordinator {
    pub addr: SocketAddr,
    shutdown: oneshot::Sender<()>,
    server: JoinHandle<Result<(), CoordinatorError>>,
}

/// Binds 127.0.0.1:0 and serves a coordinator of the run `run` on it until `stop`.
pub async fn start_coordinator(run: RunConfig) -> RunningCoordinator {
    let coordinator = Coordinator::new(run, None).expect("a valid run config");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind port 0");
    let addr = listener.local_addr().expect("bound address");
    let (shutdown, shutdown_rx) = oneshot::channel::<()>();
    let server = tokio::spawn(coordinator::serve(coordinator, listener, async move {
        // Resolves on stop() or when the test drops the sender.
        let _ = shutdown_rx.await;
    }));
    RunningCoordinator {
        addr,
        shutdown,
        server,
    }
}

impl RunningCoordinator {
    /// A channel to the server, retried until the server answers a health check or
    /// `UP_DEADLINE` passes.
    pub async fn channel(&self) -> Channel {
        let give_up = Instant::now() + UP_DEADLINE;
        loop {
            match self.try_channel().await {
                Ok(channel) => return channel,
                Err(err) if Instant::now() < give_up => {
                    // Back off briefly before the next attempt; the deadline bounds the wait.
                    eprintln!("coordinator at {} not up yet: {err}", self.addr);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(err) => panic!(
                    "coordinator at {} not up within {UP_DEADLINE:?}: {err}",
                    self.addr
                ),
            }
        }
    }

    /// A coordinator client on a fresh channel.
    pub async fn client(&self) -> CoordinatorClient<Channel> {
        CoordinatorClient::new(self.channel().await)
    }

    /// Resolves the shutdown future and returns what `serve` returned.
    pub async fn stop(self) -> Result<(), CoordinatorError> {
        // A send error means the server already dropped the receiver, i.e. it has ended.
        let _ = self.shutdown.send(());
        tokio::time::timeout(STOP_DEADLINE, self.server)
            .await
            .expect("serve returns within the stop deadline")
            .expect("serve task did not panic")
    }

    async fn try_channel(&self) -> Result<Channel, Box<dyn Error>> {
        let channel = Endpoint::from_shared(format!("http://{}", self.addr))?
            .connect_timeout(Duration::from_secs(1))
            .connect()
            .await?;
        let status = health_status(channel.clone(), "").await?;
        if status != ServingStatus::Serving {
            return Err(format!("health says {status:?}").into());
        }
        Ok(channel)
    }
}

/// The health status the server reports for `service`.
pub async fn health_status(
    channel: Channel,
    service: &str,
) -> Result<ServingStatus, tonic::Status> {
    let reply = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: service.to_string(),
        })
        .await?
        .into_inner();
    Ok(ServingStatus::try_from(reply.status).unwrap_or(ServingStatus::Unknown))
}
