//! A panic in a request handler is a bug, and it must cost that one request, not the server:
//! [`CatchPanicLayer`] answers `INTERNAL` for a handler that panicked (while building its
//! future or while it ran), logs the panic with the method, and leaves every other request and
//! connection as they were. The answer carries [`PANIC_METADATA`], which tells it from the
//! `INTERNAL` of a broken connection: clients do not retry the same request into the same bug
//! (`retry.rs`). Every server built by
//! [`Security::server`](super::Security::server) has it.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::FutureExt;
use tonic::codegen::http;
use tonic::Status;
use tower_layer::Layer;

/// The metadata key (value `1`) on the `INTERNAL` answer to a request whose handler panicked.
pub const PANIC_METADATA: &str = "oxrl-handler-panic";

/// True for the answer to a request whose handler panicked.
pub fn is_handler_panic(status: &Status) -> bool {
    status.code() == tonic::Code::Internal && status.metadata().get(PANIC_METADATA).is_some()
}

/// Wraps a service in [`CatchPanic`].
#[derive(Debug, Clone, Copy, Default)]
pub struct CatchPanicLayer;

impl<S> Layer<S> for CatchPanicLayer {
    type Service = CatchPanic<S>;

    fn layer(&self, inner: S) -> CatchPanic<S> {
        CatchPanic { inner }
    }
}

/// A service whose panics become `INTERNAL` answers.
#[derive(Debug, Clone)]
pub struct CatchPanic<S> {
    inner: S,
}

/// What a panic carried, as text.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "a panic without a message"
    }
}

fn internal(path: &str, payload: &(dyn std::any::Any + Send)) -> http::Response<tonic::body::Body> {
    let message = panic_message(payload);
    tracing::error!(
        path,
        panic = message,
        "a request handler panicked: answered INTERNAL, still serving"
    );
    let mut status = Status::internal(format!(
        "the server hit a bug handling {path} ({message}); it keeps serving other requests"
    ));
    status.metadata_mut().insert(
        PANIC_METADATA,
        tonic::metadata::MetadataValue::from_static("1"),
    );
    status.into_http()
}

impl<S, B> tonic::codegen::Service<http::Request<B>> for CatchPanic<S>
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
        let path = request.uri().path().to_string();
        let inner = &mut self.inner;
        match std::panic::catch_unwind(AssertUnwindSafe(|| inner.call(request))) {
            Ok(future) => Box::pin(async move {
                match AssertUnwindSafe(future).catch_unwind().await {
                    Ok(answer) => answer,
                    Err(payload) => Ok(internal(&path, payload.as_ref())),
                }
            }),
            Err(payload) => Box::pin(std::future::ready(Ok(internal(&path, payload.as_ref())))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::codegen::Service;

    /// A service that panics on `/boom` (in its future) and `/early` (before returning one),
    /// and answers OK otherwise.
    #[derive(Clone)]
    struct Fragile;

    impl Service<http::Request<()>> for Fragile {
        type Response = http::Response<tonic::body::Body>;
        type Error = std::convert::Infallible;
        type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, request: http::Request<()>) -> Self::Future {
            let path = request.uri().path().to_string();
            assert_ne!(path, "/early", "injected panic before the future");
            Box::pin(async move {
                assert_ne!(path, "/boom", "injected panic in the handler");
                Ok(Status::ok("").into_http())
            })
        }
    }

    fn grpc_status(response: &http::Response<tonic::body::Body>) -> Option<(String, String)> {
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .map(|v| v.to_str().unwrap().to_string())
        };
        Some((
            header("grpc-status")?,
            header("grpc-message").unwrap_or_default(),
        ))
    }

    async fn answer_headers(
        service: &mut CatchPanic<Fragile>,
        path: &str,
    ) -> http::Response<tonic::body::Body> {
        service
            .call(http::Request::get(path).body(()).unwrap())
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn a_panicking_handler_answers_internal_and_the_next_request_is_served() {
        let mut service = CatchPanicLayer.layer(Fragile);
        for path in ["/boom", "/early"] {
            let answer = service
                .call(http::Request::get(path).body(()).unwrap())
                .await
                .unwrap();
            let (code, message) = grpc_status(&answer).expect("a gRPC status");
            assert_eq!(code, (tonic::Code::Internal as i32).to_string(), "{path}");
            assert!(message.contains("injected%20panic"), "{path}: {message}");
        }
        let status = Status::from_header_map(answer_headers(&mut service, "/boom").await.headers())
            .expect("a status");
        assert!(is_handler_panic(&status));
        assert_eq!(
            super::super::retry::classify(&status),
            super::super::retry::Failure::Fatal
        );
        assert!(!is_handler_panic(&Status::internal("h2 protocol error")));
        let ok = service
            .call(http::Request::get("/fine").body(()).unwrap())
            .await
            .unwrap();
        assert_eq!(grpc_status(&ok).unwrap().0, "0");
    }
}
