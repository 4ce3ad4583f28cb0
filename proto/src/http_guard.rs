//! The guard in front of every role's HTTP port (`/metrics`, and the coordinator's dashboard
//! and `/api/status`): the role's own bearer token and TLS identity, the ones its gRPC port
//! uses ([`Security`]), so the HTTP port is no weaker than the gRPC one.
//!
//! - With a token, every request needs `Authorization: Bearer <token>` (401 with
//!   `WWW-Authenticate: Bearer` otherwise) except [`OPEN_PATHS`]: `GET /healthz` (probes carry
//!   no token) and the dashboard page itself, static HTML that holds no data and asks for the
//!   token once before it polls `/api/status` with it.
//! - With a certificate and key, the port speaks HTTPS only (HTTP/1.1 over rustls on ring);
//!   handshakes run concurrently, each bounded by the connect timeout, so a client that never
//!   finishes one holds up nobody else.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::Request;
use axum::http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::rustls;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::transport::{AuthToken, Security, TransportError};

/// Paths answered without the token: health, and the dashboard page (which holds no data).
pub const OPEN_PATHS: &[&str] = &["/healthz", "/"];

/// `router` behind `token` (unchanged without one).
pub fn require_token(router: Router, token: Option<&AuthToken>) -> Router {
    let Some(token) = token.cloned() else {
        return router;
    };
    router.layer(axum::middleware::from_fn(
        move |request: Request, next: Next| {
            let token = token.clone();
            async move {
                let open = OPEN_PATHS.contains(&request.uri().path());
                let carries = request
                    .headers()
                    .get(AUTHORIZATION)
                    .is_some_and(|v| token.accepts(v.as_bytes()));
                if open || carries {
                    next.run(request).await
                } else {
                    unauthorized()
                }
            }
        },
    ))
}

/// `router` with a handler's panic answered `500` (and logged) instead of dropping the
/// connection: a bug costs one request, not the port.
pub fn catch_panics(router: Router) -> Router {
    use futures::FutureExt;
    router.layer(axum::middleware::from_fn(
        |request: Request, next: Next| async move {
            let path = request.uri().path().to_string();
            match std::panic::AssertUnwindSafe(next.run(request))
                .catch_unwind()
                .await
            {
                Ok(response) => response,
                Err(_) => {
                    tracing::error!(%path, "an HTTP handler panicked: answered 500, still serving");
                    (
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "internal error: a bug; still serving\n",
                    )
                        .into_response()
                }
            }
        },
    ))
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(WWW_AUTHENTICATE, "Bearer")],
        "this port needs the run's token: send `Authorization: Bearer <token>`\n",
    )
        .into_response()
}

/// The rustls configuration of `security`'s server identity, when it has one.
pub(crate) fn tls_config(
    security: &Security,
) -> Result<Option<Arc<rustls::ServerConfig>>, TransportError> {
    let Some((cert_pem, key_pem)) = security.identity_pem() else {
        return Ok(None);
    };
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let bad = |detail: String| TransportError::Tls {
        what: "certificate or key for the HTTP port".into(),
        detail,
    };
    let certs = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(e.to_string()))?;
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| bad(e.to_string()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| bad(e.to_string()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Some(Arc::new(config)))
}

/// A listener whose connections have completed a TLS handshake (for `axum::serve`).
pub(crate) struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
    acceptor: tokio::task::JoinHandle<()>,
}

/// Handshakes finished but not yet taken by the server.
const READY_QUEUE: usize = 64;

impl TlsListener {
    /// Accepts on `listener` and runs each handshake on a task of its own, giving up on one
    /// after `handshake_timeout`.
    pub(crate) fn new(
        listener: TcpListener,
        config: Arc<rustls::ServerConfig>,
        handshake_timeout: std::time::Duration,
    ) -> std::io::Result<TlsListener> {
        let local = listener.local_addr()?;
        let (send, ready) = mpsc::channel(READY_QUEUE);
        let tls = TlsAcceptor::from(config);
        let acceptor = tokio::spawn(async move {
            loop {
                let (tcp, peer) = match listener.accept().await {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Out of file descriptors and the like: pause rather than spin.
                        tracing::warn!(error = %e, "accepting an HTTPS connection failed");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let (tls, send) = (tls.clone(), send.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(handshake_timeout, tls.accept(tcp)).await {
                        Ok(Ok(stream)) => {
                            let _ = send.send((stream, peer)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(TlsListener {
            ready,
            local,
            acceptor,
        })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.acceptor.abort();
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(accepted) => accepted,
            // The accept loop only ends when this listener is dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.local)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics_http::{metrics_router, Guarded};
    use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

    /// Sends one GET (with `token` as a bearer token, if any) and reads the whole answer.
    async fn get(
        mut io: impl AsyncRead + AsyncWrite + Unpin,
        path: &str,
        token: Option<&str>,
    ) -> String {
        let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n");
        io.write_all(request.as_bytes()).await.unwrap();
        let mut response = Vec::new();
        // A TLS peer may end without close_notify; what was read is the answer.
        let _ = io.read_to_end(&mut response).await;
        String::from_utf8_lossy(&response).into_owned()
    }

    /// Serves a metrics router plus an open `/` page behind `security`; its address.
    async fn serve(security: &Security) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let router = metrics_router(|| "oxrl_up 1\n".to_string())
            .route("/", axum::routing::get(|| async { "page" }))
            .route(
                "/boom",
                axum::routing::get(|| async {
                    panic!("injected fault");
                    #[allow(unreachable_code)]
                    ""
                }),
            )
            .route("/api/status", axum::routing::get(|| async { "{}" }));
        let guarded = Guarded::new(listener, router, security).unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(guarded.serve(async {
            let _ = stopped.await;
        }));
        (addr, stop)
    }

    async fn plain(addr: SocketAddr, path: &str, token: Option<&str>) -> String {
        get(TcpStream::connect(addr).await.unwrap(), path, token).await
    }

    #[tokio::test]
    async fn a_token_guards_every_path_but_health_and_the_page() {
        let token = AuthToken::parse("s3cret-token", "test").unwrap();
        let (addr, _stop) = serve(&Security::default().with_token(token)).await;
        for path in ["/metrics", "/api/status", "/nope"] {
            let refused = plain(addr, path, None).await;
            assert!(refused.starts_with("HTTP/1.1 401"), "{path}: {refused}");
            assert!(
                refused
                    .to_ascii_lowercase()
                    .contains("www-authenticate: bearer"),
                "{refused}"
            );
            let wrong = plain(addr, path, Some("s3cret-tokeN")).await;
            assert!(wrong.starts_with("HTTP/1.1 401"), "{path}: {wrong}");
        }
        let metrics = plain(addr, "/metrics", Some("s3cret-token")).await;
        assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
        assert!(metrics.ends_with("oxrl_up 1\n"), "{metrics}");
        let status = plain(addr, "/api/status", Some("s3cret-token")).await;
        assert!(status.ends_with("{}"), "{status}");
        let health = plain(addr, "/healthz", None).await;
        assert!(health.starts_with("HTTP/1.1 200") && health.ends_with("ok\n"));
        assert!(plain(addr, "/", None).await.ends_with("page"));
    }

    #[tokio::test]
    async fn without_a_token_the_port_is_open() {
        let (addr, _stop) = serve(&Security::default()).await;
        assert!(plain(addr, "/metrics", None)
            .await
            .starts_with("HTTP/1.1 200"));
    }

    #[tokio::test]
    async fn a_panicking_handler_answers_500_and_the_port_keeps_serving() {
        let (addr, _stop) = serve(&Security::default()).await;
        for _ in 0..3 {
            let answer = plain(addr, "/boom", None).await;
            assert!(answer.starts_with("HTTP/1.1 500"), "{answer}");
            assert!(plain(addr, "/metrics", None)
                .await
                .starts_with("HTTP/1.1 200"));
        }
    }

    #[tokio::test]
    async fn with_an_identity_the_port_speaks_https_only() {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let security = Security::default()
            .with_server_identity_pem(cert.pem(), key.serialize_pem())
            .unwrap()
            .with_token(AuthToken::parse("tok", "test").unwrap());
        let (addr, _stop) = serve(&security).await;

        // A client that never finishes its handshake holds up nobody.
        let _stalled = TcpStream::connect(addr).await.unwrap();

        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert.der().clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
        let https = |path: &'static str, token: Option<&'static str>| {
            let connector = connector.clone();
            async move {
                let tcp = TcpStream::connect(addr).await.unwrap();
                let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
                get(connector.connect(name, tcp).await.unwrap(), path, token).await
            }
        };
        let metrics = https("/metrics", Some("tok")).await;
        assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
        assert!(metrics.ends_with("oxrl_up 1\n"), "{metrics}");
        assert!(https("/metrics", None).await.starts_with("HTTP/1.1 401"));
        assert!(https("/healthz", None).await.ends_with("ok\n"));

        let cleartext = plain(addr, "/healthz", None).await;
        assert!(
            !cleartext.contains("HTTP/1.1"),
            "plain HTTP got an HTTP answer: {cleartext}"
        );
    }
}
