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
    /// The coordinator could not be reached within the connect deadline, or the URL or TLS
    /// settings are wrong.
    #[error("connecting to the coordinator: {0}")]
    Connect(#[from] proto::transport::ConnectError),
    /// A call to the coordinator failed for good (refused, hung, or down past the limit).
    #[error(transparent)]
    Coordinator(#[from] proto::transport::GaveUp),
    /// The learner's own gRPC server could not be set up or stopped with an error.
    #[error("learner server: {0}")]
    Server(String),
    /// The data-parallel group failed (NCCL, the TCP collective, a rank that stopped).
    #[error("{0}")]
    Collective(String),
    /// A thread or task of the learner ended abnormally (a panic, a cancelled task).
    #[error("{what}: {reason}")]
    Thread { what: &'static str, reason: String },
    /// Training stopped before the run's last step, neither at the end of the rollouts nor
    /// at an outside shutdown.
    #[error("training stopped early, at step {step} of {steps}")]
    StoppedEarly { step: u64, steps: u64 },
    #[error("invalid config: {0}")]
    Config(String),
    #[error(transparent)]
    InvalidConfig(#[from] rollout::config::ConfigError),
    #[error(transparent)]
    Policy(#[from] policy::PolicyError),
    #[error(transparent)]
    Task(#[from] tasks::TaskError),
    /// The run's environment cannot be set up, or failed where nothing can be dropped (an
    /// evaluation).
    #[error("episode environment: {0}")]
    Env(#[from] tasks::EnvError),
    /// The run's reward server cannot be dialled (a bad URL or TLS settings).
    #[error("reward server: {0}")]
    Reward(#[from] reward_service::RewardError),
    #[error("tensor error: {0}")]
    Candle(#[from] candle_core::Error),
    /// A version could not be encoded for the wire.
    #[error("encoding weights: {0}")]
    Weights(#[from] proto::weights::WeightsError),
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
