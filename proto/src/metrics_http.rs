//! The HTTP side of every role's observability: Prometheus `/metrics` rendered from a
//! prometheus-client registry, plus whatever routes a role adds (the coordinator's dashboard),
//! served on one listener until shutdown. It lives here because every role depends on `proto`
//! and on no other role.
//!
//! Each role defines its metric families in its own `metrics` module; this module holds only
//! what they share: the server, the text rendering, and the `oxrl_rejected_total{reason}`
//! family that the learner and the coordinator both expose. Every port is guarded as the
//! role's gRPC port is (token and TLS, `http_guard.rs`), with `GET /healthz` open for probes.

use std::future::Future;

use axum::http::header::CONTENT_TYPE;
use axum::routing::get;
use axum::Router;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

use crate::transport::{Security, TransportError};

/// The content type of `/metrics` (OpenMetrics text, which Prometheus scrapes natively).
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The labels of `oxrl_rejected_total`: one, `reason`.
pub type ReasonLabels = [(&'static str, &'static str); 1];

/// `oxrl_rejected_total{reason="..."}`: everything a server refused, by reason.
pub type Rejections = Family<ReasonLabels, Counter>;

/// Registers `oxrl_rejected_total` in `registry` and returns the family to count into.
pub fn register_rejections(registry: &mut Registry) -> Rejections {
    let family = Rejections::default();
    registry.register(
        "oxrl_rejected",
        "Requests or data this server refused, by reason",
        family.clone(),
    );
    family
}

/// Counts one rejection for `reason` (a short snake_case word, e.g. `duplicate_group`).
pub fn count_rejection(family: &Rejections, reason: &'static str) {
    family.get_or_create(&[("reason", reason)]).inc();
}

/// `registry` in the OpenMetrics text format.
pub fn render(registry: &Registry) -> String {
    let mut text = String::new();
    // Writing into a String cannot fail; an error here would be a bug in an encoder.
    encode(&mut text, registry).expect("metrics encode into a String");
    text
}

/// A router answering `GET /metrics` with what `scrape` returns (usually `render` of the
/// role's registry, after refreshing the gauges that mirror state), and `GET /healthz` with
/// `ok` (open even when the port needs a token, for probes).
pub fn metrics_router(scrape: impl Fn() -> String + Clone + Send + Sync + 'static) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(move || {
                let scrape = scrape.clone();
                async move { ([(CONTENT_TYPE, OPENMETRICS_CONTENT_TYPE)], scrape()) }
            }),
        )
        .route("/healthz", get(|| async { "ok\n" }))
}

/// A role's HTTP port, ready to serve: its router behind the token, its listener behind TLS
/// when `security` has a server identity. Built before serving, so a bad identity is an error
/// at start-up rather than a server that never answers.
pub struct Guarded {
    router: Router,
    listener: Listener,
}

enum Listener {
    Plain(TcpListener),
    Tls(crate::http_guard::TlsListener),
}

impl Guarded {
    /// `router` on `listener` with `security`'s token and TLS identity.
    pub fn new(
        listener: TcpListener,
        router: Router,
        security: &Security,
    ) -> Result<Guarded, TransportError> {
        let router = crate::http_guard::require_token(
            crate::http_guard::catch_panics(router),
            security.token(),
        );
        let listener = match crate::http_guard::tls_config(security)? {
            None => Listener::Plain(listener),
            Some(config) => Listener::Tls(
                crate::http_guard::TlsListener::new(listener, config, security.timeouts().connect)
                    .map_err(|e| TransportError::Tls {
                        what: "HTTP listener".into(),
                        detail: e.to_string(),
                    })?,
            ),
        };
        Ok(Guarded { router, listener })
    }

    /// Serves (HTTP/1) until `shutdown` resolves.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        match self.listener {
            Listener::Plain(l) => {
                axum::serve(l, self.router)
                    .with_graceful_shutdown(shutdown)
                    .await
            }
            Listener::Tls(l) => {
                axum::serve(l, self.router)
                    .with_graceful_shutdown(shutdown)
                    .await
            }
        }
    }
}

/// A server started by [`spawn`]; dropping it stops the server.
#[must_use = "the server stops when this is dropped"]
pub struct Running {
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// Serves `router` on `listener`, guarded by `security` ([`Guarded`]), from a background task
/// until the returned [`Running`] is dropped (a role holds it for as long as it runs); a
/// server error is logged, not returned.
pub fn spawn(
    listener: TcpListener,
    router: Router,
    security: &Security,
) -> Result<Running, TransportError> {
    let guarded = Guarded::new(listener, router, security)?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let stopped = async {
            let _ = stopped.await;
        };
        if let Err(e) = guarded.serve(stopped).await {
            tracing::warn!(error = %e, "the metrics server stopped");
        }
    });
    Ok(Running { _stop: stop })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        response
    }

    #[tokio::test]
    async fn serves_the_registry_and_stops_on_shutdown() {
        let mut registry = Registry::default();
        let rejections = register_rejections(&mut registry);
        count_rejection(&rejections, "bad_checksum");
        count_rejection(&rejections, "bad_checksum");
        let registry = std::sync::Arc::new(registry);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let router =
            metrics_router(move || render(&registry)).route("/hello", get(|| async { "hi" }));
        let guarded = Guarded::new(listener, router, &Security::default()).unwrap();
        let server = tokio::spawn(guarded.serve(async {
            let _ = stopped.await;
        }));

        let metrics = http_get(addr, "/metrics").await;
        assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
        assert!(metrics.contains(OPENMETRICS_CONTENT_TYPE), "{metrics}");
        assert!(
            metrics.contains("oxrl_rejected_total{reason=\"bad_checksum\"} 2"),
            "{metrics}"
        );
        assert!(http_get(addr, "/hello").await.ends_with("hi"));
        assert!(http_get(addr, "/nope").await.starts_with("HTTP/1.1 404"));

        stop.send(()).unwrap();
        server.await.unwrap().unwrap();
    }
}
