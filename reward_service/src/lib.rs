//! A reward model over the network (`oxrl.v1.RewardModel`, proto/oxrl.proto): a run whose
//! config says `reward = { rm = "URL" }` takes its rewards from a server's scores instead of,
//! or besides, the task's verifier (docs/reward-model.md).
//!
//! - [`RewardServer`] (`server.rs`) serves a scorer, a `policy::RewardModel` for
//!   `oxrl rm serve`: `batcher.rs` scores concurrent requests together in one forward pass on
//!   a thread of its own (bounded batch, short wait, bounded queue), `service.rs` is the gRPC
//!   boundary, `metrics.rs` its Prometheus families.
//! - [`RewardClient`] (`client.rs`) is the client the actors and the synchronous loop use:
//!   deadlines, retries of transient failures, and no silent scores (every failure, and every
//!   answer with a wrong count or a non-finite score, is a [`RewardError`]).
//!
//! A shared layer like `proto` and `environment`: the roles use the client, the binary runs
//! the server.
//!
//! **Architecture Invariant:** `reward_service` depends on no role crate and not on `rollout`;
//! only `client.rs` and `service.rs` see prost types.

mod batcher;
mod client;
mod metrics;
mod server;
mod service;

pub use batcher::{BatchError, BatchLimits, Batcher, Scorer};
pub use client::{RewardClient, RewardError};
pub use metrics::RmMetrics;
pub use server::{RewardServer, ServeError};
pub use service::MAX_SEQUENCES_PER_REQUEST;
