//! The actor's error type.

/// Errors that end an actor.
#[derive(Debug, thiserror::Error)]
pub enum ActorError {
    /// The coordinator could not be reached within the connect deadline, or the URL or TLS
    /// settings are wrong.
    #[error("connecting to the coordinator: {0}")]
    Connect(#[from] proto::transport::ConnectError),
    /// A call to the coordinator or the learner failed for good (refused, hung, or down past
    /// the limit).
    #[error(transparent)]
    Call(#[from] proto::transport::GaveUp),
    /// The learner's address (from the coordinator) is not one a client can dial.
    #[error("learner {addr}: {source}")]
    LearnerAddress {
        addr: String,
        #[source]
        source: proto::transport::TransportError,
    },
    /// A background task the actor needs ended before giving what it waits for.
    #[error("{0} ended")]
    Ended(&'static str),
    /// The decode thread failed to run to the end (a panic).
    #[error("generation thread: {0}")]
    Thread(String),
    #[error("the run config from the coordinator is unusable: {0}")]
    Config(#[from] rollout::config::ConfigError),
    #[error(transparent)]
    Policy(#[from] policy::PolicyError),
    #[error(transparent)]
    Task(#[from] tasks::TaskError),
    /// The run's environment cannot be set up (an unknown name, a server that cannot be
    /// dialled).
    #[error("episode environment: {0}")]
    Env(#[from] tasks::EnvError),
    /// The run's reward server cannot be dialled (a bad URL or TLS settings).
    #[error("reward server: {0}")]
    Reward(#[from] reward_service::RewardError),
    #[error("tensor error: {0}")]
    Candle(#[from] candle_core::Error),
    /// The metrics port's TLS identity is unusable.
    #[error("metrics port: {0}")]
    Security(#[from] proto::transport::TransportError),
}
