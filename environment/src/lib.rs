//! Environments over the network (`oxrl.v1.Environment`, proto/oxrl.proto): a multi-turn
//! episode's environment may run in another process, in any language, and the episode
//! engine uses it through the same [`tasks::Environment`] trait as the in-process built-ins.
//!
//! - [`RemoteEnvs`] (`client.rs`) is the client: a [`tasks::EnvFactory`] for a URL and an
//!   environment name, whose [`RemoteEnv`]s hold one session each, with deadlines, retries
//!   of transient failures and no silent zero rewards (every failure is an [`EnvError`] the
//!   caller counts by [`EnvError::reason`]).
//! - [`EnvServer`] (`server.rs`) serves environment factories, the built-ins for
//!   `oxrl env serve`: `sessions.rs` is the one owner of the sessions (cap, idle TTL, the
//!   per-session turn cache that makes a retried Step idempotent), `service.rs` the gRPC
//!   boundary, `metrics.rs` its Prometheus families.
//!
//! A shared layer like `proto`: the actor and the synchronous loop use the client, the binary
//! runs the server.
//!
//! **Architecture Invariant:** `environment` depends on no role crate (actor, learner,
//! coordinator) and not on `rollout`; only `client.rs` and `service.rs` see prost types.

mod client;
mod metrics;
mod server;
mod service;
mod sessions;
#[cfg(test)]
mod sessions_props;

pub use client::{RemoteEnv, RemoteEnvs};
pub use server::{EnvServer, ServeError};
pub use sessions::{Limits, DEFAULT_IDLE_TTL, DEFAULT_MAX_SESSIONS};
pub use tasks::EnvError;

use std::sync::Arc;
use std::time::Duration;

/// Where a run's episodes play: `url`, an `oxrl.v1.Environment` server reached with
/// `security`, each call within `timeout` and tried up to `attempts` times.
#[derive(Debug, Clone, Copy)]
pub struct Remote<'a> {
    pub url: &'a str,
    pub security: &'a proto::transport::Security,
    pub timeout: Duration,
    pub attempts: u32,
}

/// The environments named `env`: the built-in of that name in this process (scoring final
/// answers with `verifier`), or with `remote` the one the server there knows by that name,
/// its calls run on `runtime`.
pub fn environments(
    env: &str,
    remote: Option<Remote>,
    verifier: Arc<dyn tasks::Verifier>,
    runtime: tokio::runtime::Handle,
) -> Result<Arc<dyn tasks::EnvFactory>, EnvError> {
    match remote {
        None => tasks::env::builtin(env, verifier),
        Some(r) => Ok(RemoteEnvs::connect(
            r.url, env, r.security, r.timeout, r.attempts, runtime,
        )?),
    }
}
