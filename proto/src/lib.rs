//! The wire protocol (`oxrl.v1`): generated gRPC types and services, plus the limits every
//! server and client applies.
//!
//! **Architecture Invariant:** only `proto`, `rollout::wire` and the modules that talk gRPC see prost types;
//! the rest of each crate works on domain types.

#[allow(clippy::all, missing_docs)]
mod generated {
    tonic::include_proto!("oxrl.v1");
}
pub use generated::*;

pub mod http_guard;
pub mod metrics_http;
pub mod shutdown;
pub mod transport;
pub mod weights;

/// Largest message a server or client accepts (a rollout group or a weights chunk).
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// Bytes of tensor data per weights chunk.
pub const WEIGHTS_CHUNK_BYTES: usize = 1024 * 1024;
