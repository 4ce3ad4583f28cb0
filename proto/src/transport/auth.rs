//! Bearer-token authentication: the token, the server's check (a tower layer in front of
//! every service except gRPC health, comparing in constant time) and the client interceptor
//! that attaches the token to every request.

use super::TransportError;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tonic::codegen::http;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::Status;
use tower_layer::Layer;

/// The request header carrying the token: `authorization: Bearer <token>`.
pub const AUTHORIZATION: &str = "authorization";
/// Requests under this path (grpc.health.v1) are served without a token, for probes.
pub const HEALTH_PATH_PREFIX: &str = "/grpc.health.v1.Health/";

/// A shared secret every RPC must carry. Its `Debug` does not show it.
#[derive(Clone, PartialEq, Eq)]
pub struct AuthToken(Arc<str>);

impl std::fmt::Debug for AuthToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuthToken(<redacted>)")
    }
}

impl AuthToken {
    /// A token from text (surrounding whitespace trimmed); `origin` names where it came from
    /// in errors. Empty tokens and tokens that cannot travel in a header are refused.
    pub fn parse(raw: &str, origin: &str) -> Result<AuthToken, TransportError> {
        let token = raw.trim();
        if token.is_empty() {
            return Err(TransportError::EmptyToken {
                origin: origin.to_string(),
            });
        }
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(TransportError::TokenNotAscii {
                origin: origin.to_string(),
            });
        }
        Ok(AuthToken(token.into()))
    }

    /// The token in the file at `path` (surrounding whitespace and newline ignored).
    pub fn from_file(path: &Path) -> Result<AuthToken, TransportError> {
        let bytes = std::fs::read(path).map_err(|source| TransportError::Read {
            what: "auth token file",
            path: path.to_path_buf(),
            source,
        })?;
        let origin = path.display().to_string();
        let text = String::from_utf8(bytes).map_err(|_| TransportError::TokenNotAscii {
            origin: origin.clone(),
        })?;
        AuthToken::parse(&text, &origin)
    }

    /// A fresh random token: 32 bytes from the operating system's CSPRNG, in hex.
    pub fn random() -> Result<AuthToken, TransportError> {
        use std::io::Read;
        let mut bytes = [0u8; 32];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut bytes))
            .map_err(TransportError::Random)?;
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        Ok(AuthToken(hex.into()))
    }

    /// The secret itself, to hand to a child process (e.g. in `OXRL_AUTH_TOKEN`).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// True when an `authorization` header value is `Bearer <this token>` (the scheme is
    /// case-insensitive). The token comparison takes the same time wherever they differ.
    pub fn accepts(&self, header: &[u8]) -> bool {
        const SCHEME: &[u8] = b"bearer ";
        if header.len() < SCHEME.len() || !header[..SCHEME.len()].eq_ignore_ascii_case(SCHEME) {
            return false;
        }
        constant_time_eq(header[SCHEME.len()..].trim_ascii(), self.0.as_bytes())
    }

    fn header_value(&self) -> MetadataValue<Ascii> {
        let mut value: MetadataValue<Ascii> = format!("Bearer {}", self.0)
            .parse()
            .expect("the token was checked to be printable ASCII");
        // Keeps the secret out of HTTP/2 header compression tables.
        value.set_sensitive(true);
        value
    }
}

/// Equality of two byte strings whose time depends only on their lengths, not on where they
/// first differ (so a wrong token reveals nothing about the right one but its length).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    // black_box stops the optimiser from turning the fold into an early-exit comparison.
    std::hint::black_box(diff) == 0
}

/// Server side: a layer that refuses requests without the token (if one is configured)
/// before any service sees them.
#[derive(Debug, Clone, Default)]
pub struct AuthLayer {
    token: Option<AuthToken>,
}

impl AuthLayer {
    /// Requires `token` on every request but health checks; `None` lets everything through.
    pub fn new(token: Option<AuthToken>) -> AuthLayer {
        AuthLayer { token }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = RequireToken<S>;

    fn layer(&self, inner: S) -> RequireToken<S> {
        RequireToken {
            inner,
            token: self.token.clone(),
        }
    }
}

/// The service [`AuthLayer`] wraps around a server's routes.
#[derive(Debug, Clone)]
pub struct RequireToken<S> {
    inner: S,
    token: Option<AuthToken>,
}

impl<S> RequireToken<S> {
    /// `Ok` when `headers` carry the token for a request to `path`.
    fn check(&self, path: &str, headers: &http::HeaderMap) -> Result<(), Status> {
        let Some(token) = &self.token else {
            return Ok(());
        };
        if path.starts_with(HEALTH_PATH_PREFIX) {
            return Ok(());
        }
        match headers.get(AUTHORIZATION) {
            None => Err(Status::unauthenticated(
                "missing bearer token: this server requires `authorization: Bearer <token>` \
                 (give the client --auth-token-file or OXRL_AUTH_TOKEN)",
            )),
            Some(value) if token.accepts(value.as_bytes()) => Ok(()),
            Some(_) => Err(Status::unauthenticated(
                "wrong bearer token: the client's --auth-token-file / OXRL_AUTH_TOKEN does not \
                 match the server's",
            )),
        }
    }
}

impl<S, B> tonic::codegen::Service<http::Request<B>> for RequireToken<S>
where
    S: tonic::codegen::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        match self.check(request.uri().path(), request.headers()) {
            Ok(()) => Box::pin(self.inner.call(request)),
            Err(status) => {
                tracing::warn!(
                    path = request.uri().path(),
                    reason = status.message(),
                    "refused an unauthenticated request"
                );
                // The request (and its body) is dropped unread.
                Box::pin(std::future::ready(Ok(status.into_http())))
            }
        }
    }
}

/// Client side: attaches `authorization: Bearer <token>` to every request (nothing when no
/// token is configured).
#[derive(Debug, Clone, Default)]
pub struct AttachToken {
    header: Option<MetadataValue<Ascii>>,
}

impl AttachToken {
    /// Attaches `token`, or nothing for `None`.
    pub fn new(token: Option<&AuthToken>) -> AttachToken {
        AttachToken {
            header: token.map(AuthToken::header_value),
        }
    }
}

impl Interceptor for AttachToken {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        if let Some(header) = &self.header {
            request.metadata_mut().insert(AUTHORIZATION, header.clone());
        }
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_eq_is_equality() {
        assert!(constant_time_eq(b"", b""));
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"Secret"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"secret", b""));
        for n in 0..4u8 {
            let a: Vec<u8> = (0..n).collect();
            let mut b = a.clone();
            assert!(constant_time_eq(&a, &b));
            if let Some(last) = b.last_mut() {
                *last ^= 0x80;
                assert!(!constant_time_eq(&a, &b));
            }
        }
    }

    #[test]
    fn tokens_are_trimmed_and_empty_or_odd_ones_refused() {
        let t = AuthToken::parse("  s3cret\n", "test").unwrap();
        assert_eq!(t.expose(), "s3cret");
        assert_eq!(format!("{t:?}"), "AuthToken(<redacted>)");
        let empty = AuthToken::parse(" \n\t", "env OXRL_AUTH_TOKEN").unwrap_err();
        assert!(
            empty.to_string().contains("env OXRL_AUTH_TOKEN is empty"),
            "{empty}"
        );
        assert!(matches!(
            AuthToken::parse("two words", "test"),
            Err(TransportError::TokenNotAscii { .. })
        ));
        assert!(matches!(
            AuthToken::parse("caf\u{e9}", "test"),
            Err(TransportError::TokenNotAscii { .. })
        ));
    }

    #[test]
    fn token_files_are_read_and_trimmed() {
        let dir = std::env::temp_dir().join(format!("oxrl-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("token");
        std::fs::write(&path, "abc123\n").unwrap();
        assert_eq!(AuthToken::from_file(&path).unwrap().expose(), "abc123");
        std::fs::write(&path, "\n").unwrap();
        let err = AuthToken::from_file(&path).unwrap_err();
        assert!(err.to_string().contains("is empty"), "{err}");
        let missing = AuthToken::from_file(&dir.join("nope")).unwrap_err();
        assert!(
            missing
                .to_string()
                .starts_with("reading the auth token file"),
            "{missing}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn random_tokens_differ_and_are_64_hex_chars() {
        let a = AuthToken::random().unwrap();
        let b = AuthToken::random().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.expose().len(), 64);
        assert!(a.expose().bytes().all(|c| c.is_ascii_hexdigit()));
    }

    #[test]
    fn the_header_must_be_bearer_and_the_exact_token() {
        let t = AuthToken::parse("tok", "test").unwrap();
        assert!(t.accepts(b"Bearer tok"));
        assert!(t.accepts(b"bearer tok"));
        assert!(!t.accepts(b"Bearer tok2"));
        assert!(!t.accepts(b"Bearer to"));
        assert!(!t.accepts(b"Basic tok"));
        assert!(!t.accepts(b"tok"));
        assert!(!t.accepts(b""));
        let value = t.header_value();
        assert!(t.accepts(value.as_encoded_bytes()));
        assert!(value.is_sensitive());
    }

    #[test]
    fn the_check_exempts_health_and_nothing_else() {
        let guard = AuthLayer::new(Some(AuthToken::parse("tok", "test").unwrap())).layer(());
        let mut headers = http::HeaderMap::new();
        assert!(guard
            .check("/grpc.health.v1.Health/Check", &headers)
            .is_ok());
        let missing = guard
            .check("/oxrl.v1.Coordinator/Status", &headers)
            .unwrap_err();
        assert_eq!(missing.code(), tonic::Code::Unauthenticated);
        assert!(missing.message().starts_with("missing bearer token"));
        headers.insert(AUTHORIZATION, "Bearer nope".parse().unwrap());
        let wrong = guard
            .check("/oxrl.v1.Coordinator/Status", &headers)
            .unwrap_err();
        assert!(wrong.message().starts_with("wrong bearer token"));
        headers.insert(AUTHORIZATION, "Bearer tok".parse().unwrap());
        assert!(guard.check("/oxrl.v1.Coordinator/Status", &headers).is_ok());
        let open = AuthLayer::new(None).layer(());
        assert!(open
            .check("/oxrl.v1.Coordinator/Status", &http::HeaderMap::new())
            .is_ok());
    }

    #[test]
    fn the_interceptor_attaches_the_token_or_nothing() {
        let t = AuthToken::parse("tok", "test").unwrap();
        let req = AttachToken::new(Some(&t))
            .call(tonic::Request::new(()))
            .unwrap();
        assert_eq!(req.metadata().get(AUTHORIZATION).unwrap(), "Bearer tok");
        let req = AttachToken::new(None)
            .call(tonic::Request::new(()))
            .unwrap();
        assert!(req.metadata().get(AUTHORIZATION).is_none());
    }
}
