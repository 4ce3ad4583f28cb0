//! The environments a run's episodes (rollouts and held-out evaluation) play against, from
//! its `[episode]` table: a built-in, or an `oxrl.v1.Environment` server at `url`, reached
//! with the token and TLS settings the learner process was given ([`use_security`]) on a
//! small runtime of its own (the learner's loops are plain threads).

use crate::error::{LearnerError, Result};
use proto::transport::Security;
use rollout::config::RunConfig;
use rollout::Episodes;
use std::sync::OnceLock;
use tasks::ProblemSource;

static SECURITY: OnceLock<Security> = OnceLock::new();
static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();

/// The token and TLS settings remote environments are dialled with (the process's own; none
/// when never set). The first call wins.
pub fn use_security(security: &Security) {
    let _ = SECURITY.set(security.clone());
}

/// The run's environments, the task's verifier scoring final answers.
pub fn for_run(cfg: &RunConfig, source: &dyn ProblemSource) -> Result<Episodes> {
    let episode = &cfg.episode;
    let Some(url) = &episode.url else {
        return Ok(Episodes::builtin(episode, source.verifier())?);
    };
    let runtime = match RUNTIME.get() {
        Some(rt) => rt,
        None => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("oxrl-env-client")
                .enable_all()
                .build()
                .map_err(|e| LearnerError::io("the environment client runtime", e))?;
            RUNTIME.get_or_init(|| rt)
        }
    };
    let security = SECURITY.get().cloned().unwrap_or_default();
    let envs = environment::RemoteEnvs::connect(
        url,
        &episode.env,
        &security,
        episode.timeout(),
        episode.attempts,
        runtime.handle().clone(),
    )?;
    Ok(Episodes {
        envs,
        limits: episode.into(),
    })
}
