//! The environments an actor's episodes run against, from the run's `[episode]` table: a
//! built-in in this process, or (with `url`) an `oxrl.v1.Environment` server reached with the
//! actor's own token and TLS settings.

use crate::error::ActorError;
use proto::transport::Security;
use rollout::config::EpisodeConfig;
use std::sync::Arc;
use tasks::{EnvFactory, Verifier};

/// The run's environments; `verifier` is the task's (what `single` and `calculator` score
/// final answers with). Remote calls run on `runtime` (from the decode thread's workers).
pub fn environments(
    cfg: &EpisodeConfig,
    verifier: Arc<dyn Verifier>,
    security: &Security,
    runtime: tokio::runtime::Handle,
) -> Result<Arc<dyn EnvFactory>, ActorError> {
    let remote = cfg.url.as_deref().map(|url| environment::Remote {
        url,
        security,
        timeout: cfg.timeout(),
        attempts: cfg.attempts,
    });
    Ok(environment::environments(
        &cfg.env, remote, verifier, runtime,
    )?)
}
