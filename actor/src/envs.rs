//! The environments an actor's episodes run against, from the run's `[episode]` table: a
//! built-in in this process, or (with `url`) an `oxrl.v1.Environment` server.

use crate::error::ActorError;
use rollout::config::EpisodeConfig;
use std::sync::Arc;
use tasks::{EnvFactory, Verifier};

/// The run's environments; `verifier` is the task's (what `single` and `calculator` score
/// final answers with).
pub fn environments(
    cfg: &EpisodeConfig,
    verifier: Arc<dyn Verifier>,
) -> Result<Arc<dyn EnvFactory>, ActorError> {
    match &cfg.url {
        None => Ok(tasks::env::builtin(&cfg.env, verifier)?),
        Some(url) => Err(ActorError::Env(tasks::EnvError::Unavailable(format!(
            "remote environments ({url}) are not built into this actor"
        )))),
    }
}
