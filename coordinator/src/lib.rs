//! The coordinator of an oxrl run (DESIGN.md sections 2 and 6): the prompt pool and its
//! curriculum, leases with deadlines, the PipelineRL-k staleness gate, the member registry with
//! heartbeats, and the run status, served over gRPC (`oxrl.v1.Coordinator`) with the standard
//! health service.
//!
//! Layout: `state` is the logic (pure, driven by an explicit clock) over `pool`, `curriculum`,
//! `leases` and `registry`; `handle` owns the state; `service` is the gRPC boundary; `reaper`
//! expires leases and actors in the background; `serve` wires them to a listener.
//!
//! **Architecture Invariant:** an actor whose weights are more than `max_lag` versions behind
//! the learner is never granted a lease.
//!
//! **Architecture Invariant:** no prompt is lost: every leased prompt is either completed or,
//! when its lease expires or its actor dies, leased again before any fresh prompt.

mod curriculum;
mod domain;
mod error;
mod handle;
mod journal;
mod leases;
mod pool;
mod reaper;
mod record;
mod registry;
mod service;
mod settings;
mod state;

use std::future::Future;

use proto::coordinator_server::CoordinatorServer;
use proto::transport::Security;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;
use tracing::{error, info};

pub use error::CoordinatorError;
pub use handle::Coordinator;
pub use settings::CoordinatorSettings;

/// [`serve_secured`] with no token and no TLS (loopback, tests).
pub async fn serve(
    coordinator: Coordinator,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), CoordinatorError> {
    serve_secured(coordinator, listener, Security::default(), shutdown).await
}

/// Serves the Coordinator service and grpc.health.v1 (SERVING for "oxrl.v1.Coordinator" and
/// "") on `listener` until `shutdown` resolves, running the reaper alongside. Message size
/// limits are `proto::MAX_MESSAGE_BYTES` both ways. `security` sets TLS, the bearer token
/// every call but health checks must carry, and HTTP/2 keepalive (`proto::transport`).
pub async fn serve_secured(
    coordinator: Coordinator,
    listener: TcpListener,
    security: Security,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), CoordinatorError> {
    let mut server = security.server()?;
    let local_addr = listener.local_addr().ok();
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<CoordinatorServer<Coordinator>>().await;
    health.set_service_status("", ServingStatus::Serving).await;

    let (stop_reaper, reaper_stop) = oneshot::channel();
    let reaper = tokio::spawn(reaper::run(coordinator.clone(), reaper_stop));
    // A failed journal stops the server too: what it would answer could not be made durable.
    let journaled = coordinator.clone();
    let shutdown = async move {
        tokio::select! {
            () = shutdown => {}
            () = journaled.journal_failed() => {}
        }
    };
    let journal = coordinator.clone();

    let service = CoordinatorServer::new(coordinator)
        .max_decoding_message_size(proto::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(proto::MAX_MESSAGE_BYTES);
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    info!(addr = ?local_addr, "coordinator serving");
    let served = server
        .add_service(health_service)
        .add_service(service)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await;

    // The reaper only reads the receiver; a send error means it has already ended.
    let _ = stop_reaper.send(());
    if let Err(join_error) = reaper.await {
        error!(error = %join_error, "coordinator reaper failed");
    }
    journal.sync_journal();
    info!(addr = ?local_addr, ok = served.is_ok(), "coordinator stopped");
    served.map_err(CoordinatorError::Transport)?;
    journal.failure().map_or(Ok(()), Err)
}
