//! The environments a run's episodes (rollouts and held-out evaluation) play against, from
//! its `[episode]` table: a built-in, or an `oxrl.v1.Environment` server at `url`, reached
//! with the token and TLS settings the learner process was given ([`use_security`]) on a
//! small runtime of its own (the learner's loops are plain threads); conversations laid out
//! with the model's chat template as the table says.

use crate::error::{LearnerError, Result};
use policy::Tokenizer;
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

/// The run's environments, the task's verifier scoring final answers, and the chat template
/// of `tok`'s model (under `chat_template = "auto"`).
pub fn for_run(cfg: &RunConfig, source: &dyn ProblemSource, tok: &Tokenizer) -> Result<Episodes> {
    let episode = &cfg.episode;
    let Some(url) = episode.url.as_deref() else {
        return Ok(Episodes::builtin(episode, source.verifier())?.with_chat(episode, tok)?);
    };
    let security = security();
    let remote = environment::Remote {
        url,
        security: &security,
        timeout: episode.timeout(),
        attempts: episode.attempts,
    };
    let handle = runtime()?.handle().clone();
    Ok(Episodes {
        envs: environment::environments(&episode.env, Some(remote), source.verifier(), handle)?,
        limits: episode.into(),
        chat: rollout::ChatFormat::for_episodes(episode, tok)?,
    })
}

/// The token and TLS settings of [`use_security`] (none when never set).
pub(crate) fn security() -> Security {
    SECURITY.get().cloned().unwrap_or_default()
}

/// The runtime remote environment (and reward server) calls run on, started the first time
/// one is needed.
pub(crate) fn runtime() -> Result<&'static tokio::runtime::Runtime> {
    if let Some(rt) = RUNTIME.get() {
        return Ok(rt);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("oxrl-env-client")
        .enable_all()
        .build()
        .map_err(|e| LearnerError::io("the environment client runtime", e))?;
    Ok(RUNTIME.get_or_init(|| rt))
}
