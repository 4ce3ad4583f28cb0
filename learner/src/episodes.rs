//! The environments a run's episodes (rollouts and held-out evaluation) play against, from
//! its `[episode]` table.

use crate::error::{LearnerError, Result};
use rollout::config::RunConfig;
use rollout::Episodes;
use tasks::ProblemSource;

/// The run's environments, the task's verifier scoring final answers.
pub fn for_run(cfg: &RunConfig, source: &dyn ProblemSource) -> Result<Episodes> {
    match &cfg.episode.url {
        None => Ok(Episodes::builtin(&cfg.episode, source.verifier())?),
        Some(url) => Err(LearnerError::Env(tasks::EnvError::Unavailable(format!(
            "remote environments ({url}) are not built into this learner"
        )))),
    }
}
