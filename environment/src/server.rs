//! [`EnvServer`]: environments served over `oxrl.v1.Environment` (what `oxrl env serve`
//! runs). It owns the session table, serves the service and gRPC health on an already-bound
//! listener until a shutdown future resolves, and reaps idle sessions alongside.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use proto::environment_server::EnvironmentServer;
use proto::transport::{Security, TransportError};
use tasks::{EnvError, EnvFactory, Verifier};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;
use tracing::{error, info};

use crate::metrics::EnvMetrics;
use crate::service::EnvService;
use crate::sessions::{Limits, Sessions};

/// Why a server could not be built or stopped serving.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// No environment to serve, or two with one name.
    #[error("{0}")]
    Config(String),
    /// A built-in that does not exist.
    #[error(transparent)]
    Env(#[from] EnvError),
    /// The TLS identity could not be used.
    #[error(transparent)]
    Security(#[from] TransportError),
    /// The gRPC server failed.
    #[error("the environment server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// Environments served over the network: a session table over some environment factories.
/// Cheap to clone; clones share the sessions and the metrics.
#[derive(Clone)]
pub struct EnvServer {
    service: EnvService,
    limits: Limits,
}

impl EnvServer {
    /// A server of `envs`, each known by its [`EnvFactory::name`]; the first is the default
    /// (a Reset with `env = ""`).
    pub fn new(envs: Vec<Arc<dyn EnvFactory>>, limits: Limits) -> Result<EnvServer, ServeError> {
        if envs.is_empty() {
            return Err(ServeError::Config(
                "no environment to serve: name at least one".into(),
            ));
        }
        for (i, env) in envs.iter().enumerate() {
            if envs[..i].iter().any(|e| e.name() == env.name()) {
                return Err(ServeError::Config(format!(
                    "environment {:?} is named twice",
                    env.name()
                )));
            }
        }
        if limits.max_sessions == 0 || limits.idle_ttl.is_zero() {
            return Err(ServeError::Config(format!(
                "max_sessions ({}) and the idle TTL ({:?}) must be positive",
                limits.max_sessions, limits.idle_ttl
            )));
        }
        Ok(EnvServer {
            service: EnvService {
                sessions: Arc::new(Sessions::new(envs, limits)),
                metrics: Arc::new(EnvMetrics::new()),
            },
            limits,
        })
    }

    /// A server of the built-ins `names` ([`tasks::env::builtin`]); `verifier` scores the final
    /// answers of `single` and `calculator`.
    pub fn builtins(
        names: &[String],
        verifier: Arc<dyn Verifier>,
        limits: Limits,
    ) -> Result<EnvServer, ServeError> {
        let envs = names
            .iter()
            .map(|name| tasks::env::builtin(name, verifier.clone()))
            .collect::<Result<Vec<_>, _>>()?;
        EnvServer::new(envs, limits)
    }

    /// The environments served, the default first.
    pub fn env_names(&self) -> Vec<String> {
        self.service.sessions.env_names()
    }

    /// Sessions open now.
    pub fn sessions_open(&self) -> usize {
        self.service.sessions.open()
    }

    /// Sessions held now: the open ones, and finished ones whose last reply is kept for a
    /// retried Step until their client closes them.
    pub fn sessions_held(&self) -> usize {
        self.service.sessions.held()
    }

    /// The metrics in the OpenMetrics text format (what `/metrics` answers).
    pub fn render_metrics(&self) -> String {
        self.service
            .metrics
            .sessions_open
            .set(self.sessions_open() as i64);
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

    /// Serves the Environment service and grpc.health.v1 (SERVING for
    /// "oxrl.v1.Environment" and "") on `listener` until `shutdown` resolves, reaping idle
    /// sessions alongside. `security` sets TLS, the bearer token every call but health
    /// checks must carry, and HTTP/2 keepalive (`proto::transport`).
    pub async fn serve(
        self,
        listener: TcpListener,
        security: Security,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        let mut server = security.server()?;
        let local_addr = listener.local_addr().ok();
        let (health, health_service) = tonic_health::server::health_reporter();
        health.set_serving::<EnvironmentServer<EnvService>>().await;
        health.set_service_status("", ServingStatus::Serving).await;

        let (stop_reaper, reaper_stop) = oneshot::channel();
        let reaper = tokio::spawn(reap(self.clone(), reaper_stop));
        let service = EnvironmentServer::new(self.service.clone())
            .max_decoding_message_size(proto::MAX_MESSAGE_BYTES)
            .max_encoding_message_size(proto::MAX_MESSAGE_BYTES);
        let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
        info!(
            addr = ?local_addr,
            envs = ?self.env_names(),
            max_sessions = self.limits.max_sessions,
            idle_ttl_s = self.limits.idle_ttl.as_secs_f64(),
            "environment server serving"
        );
        let served = server
            .add_service(health_service)
            .add_service(service)
            .serve_with_incoming_shutdown(incoming, shutdown)
            .await;
        // The reaper only reads the receiver; a send error means it has already ended.
        let _ = stop_reaper.send(());
        if let Err(join_error) = reaper.await {
            error!(error = %join_error, "the session reaper failed");
        }
        info!(addr = ?local_addr, ok = served.is_ok(), "environment server stopped");
        Ok(served?)
    }
}

/// How often idle sessions are looked for: a quarter of the TTL, between 10 ms and 30 s.
fn reap_interval(ttl: Duration) -> Duration {
    (ttl / 4).clamp(Duration::from_millis(10), Duration::from_secs(30))
}

/// Reaps idle sessions until `stop` fires or its sender is dropped.
async fn reap(server: EnvServer, mut stop: oneshot::Receiver<()>) {
    let mut ticks = tokio::time::interval(reap_interval(server.limits.idle_ttl));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = ticks.tick() => {
                let sessions = server.service.sessions.clone();
                let reaped = tokio::task::spawn_blocking(move || sessions.reap(Instant::now())).await;
                match reaped {
                    Ok(Ok(0)) => {}
                    Ok(Ok(n)) => {
                        server.service.metrics.reaped.inc_by(n as u64);
                        info!(sessions = n, "forgot idle sessions");
                    }
                    Ok(Err(e)) => error!(error = %e, "reaping sessions failed"),
                    Err(e) => error!(error = %e, "the session reaper panicked"),
                }
                let open = server.sessions_open() as i64;
                server.service.metrics.sessions_open.set(open);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tasks::NumericVerifier;

    #[test]
    fn builtins_by_name_and_clear_errors() {
        let v: Arc<dyn Verifier> = Arc::new(NumericVerifier);
        let names = |n: &[&str]| n.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let s = EnvServer::builtins(
            &names(&["guess", "calculator"]),
            v.clone(),
            Limits::default(),
        )
        .unwrap();
        assert_eq!(s.env_names(), ["guess", "calculator"]);
        let err = EnvServer::builtins(&names(&["chess"]), v.clone(), Limits::default())
            .err()
            .unwrap();
        assert!(err.to_string().contains("guess"), "{err}");
        let err = EnvServer::builtins(&names(&["guess", "guess"]), v.clone(), Limits::default())
            .err()
            .unwrap();
        assert!(err.to_string().contains("twice"), "{err}");
        assert!(EnvServer::builtins(&[], v, Limits::default()).is_err());
    }

    #[test]
    fn the_reaper_looks_often_enough_and_not_too_often() {
        assert_eq!(
            reap_interval(Duration::from_secs(600)),
            Duration::from_secs(30)
        );
        assert_eq!(
            reap_interval(Duration::from_secs(2)),
            Duration::from_millis(500)
        );
        assert_eq!(
            reap_interval(Duration::from_millis(1)),
            Duration::from_millis(10)
        );
    }
}
