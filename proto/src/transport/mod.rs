//! Security and timeouts for every gRPC connection of a run: one [`Security`] value (an
//! optional bearer token, an optional TLS identity for servers, an optional CA for clients,
//! and the [`Timeouts`]) builds both ends.
//!
//! - Servers: [`Security::server`] is a `tonic::transport::Server` builder with TLS (when a
//!   certificate and key are given), HTTP/2 keepalive and the [`auth::AuthLayer`], which
//!   answers `UNAUTHENTICATED` to any request without the right `authorization: Bearer
//!   <token>` before a handler sees it. The gRPC health service (`grpc.health.v1.Health`) is
//!   exempt so that Kubernetes probes work without the token.
//! - Clients: [`Security::channel`] connects to a URL with TLS (when a CA is given), the token
//!   attached to every request, a connect timeout, a per-request timeout and HTTP/2
//!   keepalive, so a peer that accepts a connection and then hangs is detected instead of
//!   waited on forever (in a connect, a unary call, or the middle of a long stream).
//! - Retries: [`retry::Retry`] tells a failed call to a peer that is restarting (retry with
//!   backoff) from one to a hung peer (give up after a few timeouts) or a refusal (give up).
//!
//! URLs: with a CA configured, a client dials TLS whatever the scheme (`http://` is upgraded
//! to `https://`, a bare `host:port` works too), so a token is never sent in the clear by a
//! client that was told to use TLS. An `https://` URL without a CA is an error.
//!
//! With neither a token nor TLS (`Security::default()`), servers are open and connections are
//! plaintext, as on loopback in tests.

pub mod auth;
pub mod catch_panic;
mod client;
pub mod retry;
mod server;
mod windows;

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use auth::{AttachToken, AuthLayer, AuthToken};
pub use client::ClientChannel;
pub use retry::{connect, connect_coordinator, register, ConnectError, GaveUp, Retry, RetryLimits};
pub use server::SecureServer;
pub use windows::Windows;

/// Environment variable holding the bearer token itself (`--auth-token-file` wins over it).
pub const TOKEN_ENV: &str = "OXRL_AUTH_TOKEN";
/// Environment variable naming the server's certificate chain (PEM), like `--tls-cert`.
pub const TLS_CERT_ENV: &str = "OXRL_TLS_CERT";
/// Environment variable naming the server's private key (PEM), like `--tls-key`.
pub const TLS_KEY_ENV: &str = "OXRL_TLS_KEY";
/// Environment variable naming the CA clients verify servers against (PEM), like `--tls-ca`.
pub const TLS_CA_ENV: &str = "OXRL_TLS_CA";

/// Connecting (TCP, then the TLS handshake) gives up after this long.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A call gives up when no response has started this long after it was sent. For unary
/// calls that is the whole call; a stream is covered until its response headers, then by
/// keepalive.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Both ends ping an HTTP/2 connection this often...
pub const DEFAULT_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// ...and close it (failing its streams) when a ping is not answered within this.
pub const DEFAULT_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// Everything that can go wrong setting up or opening a connection.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("reading the {what} {}: {source}", path.display())]
    Read {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the auth token from {origin} is empty: put a secret token there (e.g. 64 random hex characters)")]
    EmptyToken { origin: String },
    #[error("the auth token from {origin} must be printable ASCII without spaces (it travels in an HTTP header)")]
    TokenNotAscii { origin: String },
    #[error("--tls-cert and --tls-key go together: give both (a server's certificate chain and its private key, PEM) or neither")]
    IncompleteIdentity,
    #[error("invalid TLS {what}: {detail}")]
    Tls { what: String, detail: String },
    #[error("invalid URL {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("{url} asks for TLS but no CA is configured: pass --tls-ca (or {TLS_CA_ENV}) with the CA that signed the server's certificate")]
    HttpsWithoutCa { url: String },
    #[error("cannot connect to {url}: {detail}")]
    Connect { url: String, detail: String },
    #[error("generating a random auth token: {0}")]
    Random(std::io::Error),
}

impl TransportError {
    /// True when the peer could not be reached (worth retrying); false for configuration
    /// mistakes, which retrying does not fix.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, TransportError::Connect { .. })
    }
}

/// How long connections wait on a peer; see the `DEFAULT_*` constants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP connect plus TLS handshake (client), TLS handshake (server).
    pub connect: Duration,
    /// Until a response starts (the whole of a unary call).
    pub request: Duration,
    /// HTTP/2 ping interval on both ends.
    pub keepalive_interval: Duration,
    /// An unanswered ping closes the connection after this.
    pub keepalive_timeout: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: DEFAULT_CONNECT_TIMEOUT,
            request: DEFAULT_REQUEST_TIMEOUT,
            keepalive_interval: DEFAULT_KEEPALIVE_INTERVAL,
            keepalive_timeout: DEFAULT_KEEPALIVE_TIMEOUT,
        }
    }
}

/// A server's TLS identity: its certificate chain and private key, PEM.
#[derive(Clone)]
struct TlsIdentity {
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
}

/// Where a role's security settings come from (the binary fills it from flags and env).
#[derive(Debug, Clone, Default)]
pub struct SecurityFiles {
    /// `--auth-token-file`: a file holding the token (surrounding whitespace is ignored).
    pub auth_token_file: Option<PathBuf>,
    /// The token itself, from `OXRL_AUTH_TOKEN`; used when there is no token file.
    pub auth_token_env: Option<String>,
    /// `--tls-cert`: this server's certificate chain (PEM).
    pub tls_cert: Option<PathBuf>,
    /// `--tls-key`: this server's private key (PEM).
    pub tls_key: Option<PathBuf>,
    /// `--tls-ca`: the CA clients verify servers against (PEM).
    pub tls_ca: Option<PathBuf>,
}

/// The security of one process's connections, servers and clients alike. Cheap to clone.
#[derive(Clone, Default)]
pub struct Security {
    token: Option<AuthToken>,
    identity: Option<TlsIdentity>,
    ca_pem: Option<Vec<u8>>,
    timeouts: Timeouts,
    windows: Windows,
}

impl std::fmt::Debug for Security {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Security")
            .field("token", &self.token.is_some())
            .field("tls_server", &self.identity.is_some())
            .field("tls_client", &self.ca_pem.is_some())
            .field("timeouts", &self.timeouts)
            .field("windows", &self.windows)
            .finish()
    }
}

/// An error and its sources on one line: tonic's own `Display` says only "transport error".
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        let next = e.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = e.source();
    }
    text
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TransportError> {
    std::fs::read(path).map_err(|source| TransportError::Read {
        what,
        path: path.to_path_buf(),
        source,
    })
}

/// Rejects files with no PEM block of the expected kind: tonic would silently read an empty
/// certificate list from them.
fn require_pem(bytes: &[u8], label: &str, origin: &str) -> Result<(), TransportError> {
    let text = String::from_utf8_lossy(bytes);
    let found = text
        .lines()
        .any(|l| l.starts_with("-----BEGIN ") && l.contains(label));
    if found {
        Ok(())
    } else {
        Err(TransportError::Tls {
            what: origin.to_string(),
            detail: format!(
                "no PEM block with {label:?} found (expected \"-----BEGIN {label}-----\")"
            ),
        })
    }
}

impl Security {
    /// Loads the token and TLS files a role was given; fails on unreadable files, an empty
    /// token, half an identity or PEM that does not parse.
    pub fn load(files: &SecurityFiles) -> Result<Security, TransportError> {
        let mut security = Security::default();
        if let Some(path) = &files.auth_token_file {
            security.token = Some(AuthToken::from_file(path)?);
        } else if let Some(raw) = &files.auth_token_env {
            security.token = Some(AuthToken::parse(raw, &format!("env {TOKEN_ENV}"))?);
        }
        match (&files.tls_cert, &files.tls_key) {
            (Some(cert), Some(key)) => {
                let cert_pem = read("TLS certificate", cert)?;
                let key_pem = read("TLS private key", key)?;
                require_pem(
                    &cert_pem,
                    "CERTIFICATE",
                    &format!("certificate {}", cert.display()),
                )?;
                require_pem(
                    &key_pem,
                    "PRIVATE KEY",
                    &format!("private key {}", key.display()),
                )?;
                security = security
                    .with_server_identity_pem(cert_pem, key_pem)
                    .map_err(|e| TransportError::Tls {
                        what: format!("certificate/key {} + {}", cert.display(), key.display()),
                        detail: e.to_string(),
                    })?;
            }
            (None, None) => {}
            _ => return Err(TransportError::IncompleteIdentity),
        }
        if let Some(ca) = &files.tls_ca {
            let ca_pem = read("TLS CA", ca)?;
            require_pem(&ca_pem, "CERTIFICATE", &format!("CA {}", ca.display()))?;
            security = security
                .with_ca_pem(ca_pem)
                .map_err(|e| TransportError::Tls {
                    what: format!("CA {}", ca.display()),
                    detail: e.to_string(),
                })?;
        }
        Ok(security)
    }

    /// The same settings with `token` required by servers and sent by clients.
    pub fn with_token(mut self, token: AuthToken) -> Security {
        self.token = Some(token);
        self
    }

    /// The same settings with servers speaking TLS as this identity (certificate chain and
    /// private key, PEM). Checked here, so a bad identity fails at start-up.
    pub fn with_server_identity_pem(
        mut self,
        cert_pem: impl Into<Vec<u8>>,
        key_pem: impl Into<Vec<u8>>,
    ) -> Result<Security, TransportError> {
        let identity = TlsIdentity {
            cert_pem: cert_pem.into(),
            key_pem: key_pem.into(),
        };
        server::check_identity(&identity, &self.timeouts)?;
        self.identity = Some(identity);
        Ok(self)
    }

    /// The same settings with clients dialling TLS and trusting servers signed by this CA
    /// (PEM). Checked here, so a bad CA fails at start-up.
    pub fn with_ca_pem(mut self, ca_pem: impl Into<Vec<u8>>) -> Result<Security, TransportError> {
        let ca_pem = ca_pem.into();
        client::check_ca(&ca_pem, &self.timeouts)?;
        self.ca_pem = Some(ca_pem);
        Ok(self)
    }

    /// The same settings with other timeouts (tests shorten them).
    pub fn with_timeouts(mut self, timeouts: Timeouts) -> Security {
        self.timeouts = timeouts;
        self
    }

    /// These HTTP/2 receive windows on every client connection instead of the default ones.
    pub fn with_windows(mut self, windows: Windows) -> Security {
        self.windows = windows;
        self
    }

    /// The bearer token, when one is configured.
    pub fn token(&self) -> Option<&AuthToken> {
        self.token.as_ref()
    }

    /// The timeouts in force.
    pub fn timeouts(&self) -> Timeouts {
        self.timeouts
    }

    /// The server identity's certificate chain and private key (PEM), when there is one: the
    /// HTTP port's TLS (`http_guard`).
    pub(crate) fn identity_pem(&self) -> Option<(&[u8], &[u8])> {
        self.identity
            .as_ref()
            .map(|i| (i.cert_pem.as_slice(), i.key_pem.as_slice()))
    }

    /// True when servers built from this speak TLS.
    pub fn serves_tls(&self) -> bool {
        self.identity.is_some()
    }

    /// True when clients built from this dial TLS.
    pub fn dials_tls(&self) -> bool {
        self.ca_pem.is_some()
    }

    /// The URL peers should use to reach a server of this process bound at `addr`
    /// (`https://` when it serves TLS).
    pub fn advertise_url(&self, addr: std::net::SocketAddr) -> String {
        let scheme = if self.serves_tls() { "https" } else { "http" };
        format!("{scheme}://{addr}")
    }
}
