//! The actor's error type.

/// Errors that end an actor.
#[derive(Debug, thiserror::Error)]
pub enum ActorError {
    #[error("{0}")]
    Remote(String),
    #[error("the run config from the coordinator is unusable: {0}")]
    Config(#[from] rollout::config::ConfigError),
    #[error(transparent)]
    Policy(#[from] policy::PolicyError),
    #[error(transparent)]
    Task(#[from] tasks::TaskError),
    #[error("tensor error: {0}")]
    Candle(#[from] candle_core::Error),
}
