//! The coordinator of an oxrl run (DESIGN.md sections 2 and 6): the prompt pool and its
//! curriculum, leases with deadlines, the PipelineRL-k staleness gate, the member registry with
//! heartbeats, and the run status, served over gRPC (`oxrl.v1.Coordinator`) with the standard
//! health service.
//!
//! Layout: `state` is the logic (pure, driven by an explicit clock) over `pool`, `curriculum`,
//! `leases` and `registry`; `handle` owns the state; `service` is the gRPC boundary; `reaper`
//! expires leases and actors in the background; `serve` wires them to a listener.
//! `history` keeps the steps the learner reports, `metrics` the Prometheus families and
//! `dashboard` serves both over HTTP (`/metrics`, the live page `/`, `/api/status`).
//!
//! **Architecture Invariant:** an actor whose weights are more than `max_lag` versions behind
//! the learner is never granted a lease.
//!
//! **Architecture Invariant:** no prompt is lost: every leased prompt is either completed or,
//! when its lease expires or its actor dies, leased again before any fresh prompt.

pub mod bench;
mod curriculum;
mod dashboard;
mod domain;
mod error;
mod handle;
mod history;
mod journal;
mod leases;
mod metrics;
mod pool;
mod reaper;
mod record;
mod registry;
mod service;
#[cfg(test)]
mod service_props;
mod snapshot;
mod state;

use std::future::Future;
use std::time::Duration;

use proto::coordinator_server::CoordinatorServer;
use proto::transport::Security;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;
use tracing::{error, info, warn};

pub use dashboard::guarded_http;
pub use error::CoordinatorError;
pub use handle::Coordinator;
pub use journal::{JournalOptions, DEFAULT_COMPACT_EVERY};
pub use rollout::config::RunConfig;

/// A run config for unit tests: the defaults with `change` applied.
#[cfg(test)]
pub(crate) fn test_run(change: impl FnOnce(&mut RunConfig)) -> RunConfig {
    let mut run = RunConfig::default();
    change(&mut run);
    run
}

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

/// How long the HTTP server may take to close its connections once the gRPC server stopped.
const HTTP_GRACE: Duration = Duration::from_secs(5);

/// [`serve_secured`], plus the metrics and the dashboard ([`guarded_http`]) on `http`, behind
/// the same token and TLS as the gRPC port, for as long as the gRPC server serves.
pub async fn serve_with_dashboard(
    coordinator: Coordinator,
    listener: TcpListener,
    http: TcpListener,
    security: Security,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), CoordinatorError> {
    let http_addr = http.local_addr().ok();
    let (stop_http, http_stop) = oneshot::channel::<()>();
    let http = guarded_http(coordinator.clone(), http, &security)?;
    let mut dashboard = tokio::spawn(http.serve(async {
        // A send error means this function is returning: stop either way.
        let _ = http_stop.await;
    }));
    info!(addr = ?http_addr, "coordinator metrics and dashboard serving");
    let served = serve_secured(coordinator, listener, security, shutdown).await;
    let _ = stop_http.send(());
    match tokio::time::timeout(HTTP_GRACE, &mut dashboard).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => error!(error = %e, "the coordinator's HTTP server failed"),
        Ok(Err(join_error)) => error!(error = %join_error, "the coordinator's HTTP server failed"),
        Err(_) => {
            warn!("the coordinator's HTTP connections did not close in time; dropping them");
            dashboard.abort();
        }
    }
    served
}
