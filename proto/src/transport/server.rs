//! Server side: a `tonic::transport::Server` builder with TLS (when an identity is
//! configured), HTTP/2 keepalive and the bearer-token layer.

use super::auth::AuthLayer;
use super::catch_panic::CatchPanicLayer;
use super::{Security, Timeouts, TlsIdentity, TransportError};
use tonic::transport::{Identity, Server, ServerTlsConfig};

/// The builder [`Security::server`] returns: add services and serve as with
/// `Server::builder()`.
pub type SecureServer = Server<
    tower_layer::Stack<AuthLayer, tower_layer::Stack<CatchPanicLayer, tower_layer::Identity>>,
>;

fn tls_config(identity: &TlsIdentity, timeouts: &Timeouts) -> ServerTlsConfig {
    ServerTlsConfig::new()
        .identity(Identity::from_pem(&identity.cert_pem, &identity.key_pem))
        // A client that opens a connection and never finishes the handshake is dropped.
        .timeout(timeouts.connect)
}

/// Checks that `identity` makes a server TLS configuration.
pub(super) fn check_identity(
    identity: &TlsIdentity,
    timeouts: &Timeouts,
) -> Result<(), TransportError> {
    Server::builder()
        .tls_config(tls_config(identity, timeouts))
        .map(|_| ())
        .map_err(|e| TransportError::Tls {
            what: "certificate or key".into(),
            detail: super::error_chain(&e),
        })
}

impl Security {
    /// A server builder with this process's TLS identity (if any), HTTP/2 keepalive (a
    /// client that stops answering pings is disconnected, ending its streams) and the token
    /// check in front of every service but gRPC health. Use it where `Server::builder()`
    /// was: `security.server()?.add_service(health).add_service(svc).serve_with_incoming_shutdown(..)`.
    pub fn server(&self) -> Result<SecureServer, TransportError> {
        let t = &self.timeouts;
        let mut builder = Server::builder()
            .http2_keepalive_interval(Some(t.keepalive_interval))
            .http2_keepalive_timeout(Some(t.keepalive_timeout));
        if let Some(identity) = &self.identity {
            builder =
                builder
                    .tls_config(tls_config(identity, t))
                    .map_err(|e| TransportError::Tls {
                        what: "certificate or key".into(),
                        detail: super::error_chain(&e),
                    })?;
        }
        // Outermost first: a panic is caught around everything, the token checked before any
        // handler runs.
        Ok(builder
            .layer(CatchPanicLayer)
            .layer(AuthLayer::new(self.token.clone())))
    }
}
