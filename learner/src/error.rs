//! The learner crate's error type.

use std::path::PathBuf;

/// Errors from training: bad rollouts, bad checkpoints, tensor failures.
#[derive(Debug, thiserror::Error)]
pub enum LearnerError {
    #[error("invalid rollout group {group}: {reason}")]
    InvalidGroup { group: String, reason: String },
    #[error("{path}: {message}")]
    Checkpoint { path: PathBuf, message: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("non-finite {what} at step {step}: refusing to update the weights")]
    NonFinite { what: &'static str, step: u64 },
    #[error(
        "the weights at {at} are not finite ({parameter} holds NaN or inf): refusing to save or \
         publish them; the last finite checkpoint is kept (is update.lr too high?)"
    )]
    NonFiniteWeights { parameter: String, at: String },
    #[error("{0}")]
    Remote(String),
    #[error("invalid config: {0}")]
    Config(String),
    #[error(transparent)]
    InvalidConfig(#[from] rollout::config::ConfigError),
    #[error(transparent)]
    Policy(#[from] policy::PolicyError),
    #[error(transparent)]
    Task(#[from] tasks::TaskError),
    #[error("tensor error: {0}")]
    Candle(#[from] candle_core::Error),
}

/// Result alias for the learner crate.
pub type Result<T> = std::result::Result<T, LearnerError>;

impl LearnerError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        LearnerError::Io {
            path: path.into(),
            source,
        }
    }
}
