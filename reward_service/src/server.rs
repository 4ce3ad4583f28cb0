//! [`RewardServer`]: a reward model served over `oxrl.v1.RewardModel` (what `oxrl rm serve`
//! runs). It owns the [`Batcher`] (the model thread) and the metrics, and serves the service
//! and gRPC health on an already-bound listener until a shutdown future resolves.

use std::future::Future;
use std::sync::Arc;

use proto::reward_model_server::RewardModelServer;
use proto::transport::{Security, TransportError};
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;
use tracing::info;

use crate::batcher::{BatchLimits, Batcher, Scorer};
use crate::metrics::RmMetrics;
use crate::service::RmService;

/// Why the server stopped serving.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The TLS identity could not be used.
    #[error(transparent)]
    Security(#[from] TransportError),
    /// The gRPC server failed.
    #[error("the reward server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// A reward model served over the network. Cheap to clone; clones share the model thread
/// and the metrics.
#[derive(Clone)]
pub struct RewardServer {
    service: RmService,
}

impl RewardServer {
    /// A server scoring with `scorer`, batching as `limits` says.
    pub fn new(scorer: impl Scorer, limits: BatchLimits) -> RewardServer {
        let metrics = Arc::new(RmMetrics::new());
        RewardServer {
            service: RmService {
                batcher: Batcher::start(scorer, limits, metrics.clone()),
                metrics,
            },
        }
    }

    /// The metrics in the OpenMetrics text format (what `/metrics` answers).
    pub fn render_metrics(&self) -> String {
        self.service.metrics.render()
    }

    /// Serves `GET /metrics` on `listener`, behind `security`'s token and TLS, until the
    /// returned handle is dropped.
    pub fn serve_metrics(
        &self,
        listener: TcpListener,
        security: &Security,
    ) -> Result<proto::metrics_http::Running, ServeError> {
        let server = self.clone();
        let router = proto::metrics_http::metrics_router(move || server.render_metrics());
        Ok(proto::metrics_http::spawn(listener, router, security)?)
    }

    /// Serves the RewardModel service and grpc.health.v1 (SERVING for "oxrl.v1.RewardModel"
    /// and "") on `listener` until `shutdown` resolves. `security` sets TLS, the bearer token
    /// every call but health checks must carry, and HTTP/2 keepalive (`proto::transport`).
    pub async fn serve(
        self,
        listener: TcpListener,
        security: Security,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        let mut server = security.server()?;
        let local_addr = listener.local_addr().ok();
        let (health, health_service) = tonic_health::server::health_reporter();
        health.set_serving::<RewardModelServer<RmService>>().await;
        health.set_service_status("", ServingStatus::Serving).await;
        let limits = self.service.batcher.limits();
        let service = RewardModelServer::new(self.service)
            .max_decoding_message_size(proto::MAX_MESSAGE_BYTES)
            .max_encoding_message_size(proto::MAX_MESSAGE_BYTES);
        let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
        info!(
            addr = ?local_addr,
            max_batch = limits.max_sequences,
            max_wait_ms = limits.max_wait.as_secs_f64() * 1e3,
            "reward server serving"
        );
        let served = server
            .add_service(health_service)
            .add_service(service)
            .serve_with_incoming_shutdown(incoming, shutdown)
            .await;
        info!(addr = ?local_addr, ok = served.is_ok(), "reward server stopped");
        Ok(served?)
    }
}
