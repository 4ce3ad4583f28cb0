//! The crate's error type. Each message says what was wrong and what to do about it.

/// Everything that can go wrong starting the coordinator or serving one request.
#[derive(Debug, thiserror::Error)]
pub enum CoordinatorError {
    /// The task spec does not name a usable problem source.
    #[error("cannot build the task source '{spec}': {source}")]
    Task {
        /// The spec as given.
        spec: String,
        /// What the `tasks` crate objected to.
        source: tasks::TaskError,
    },

    /// The run config holds a value that cannot be meant (the field and its range).
    #[error("the coordinator's run config: {0}")]
    Config(#[from] rollout::config::ConfigError),

    /// The gRPC server failed.
    #[error("coordinator gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),

    /// The TLS or token configuration is unusable (`proto::transport`).
    #[error("coordinator security settings: {0}")]
    Security(#[from] proto::transport::TransportError),

    /// A request named a member the coordinator does not know (never registered, or declared
    /// dead).
    #[error("unknown member '{member_id}': register again")]
    UnknownMember {
        /// The id as given.
        member_id: String,
    },

    /// The journal could not be read or written.
    #[error("coordinator journal {}: {source}", path.display())]
    JournalIo {
        /// The journal file.
        path: std::path::PathBuf,
        /// What the file system said.
        source: std::io::Error,
    },

    /// A line of the journal cannot be replayed.
    #[error("coordinator journal {} line {line}: {reason}", path.display())]
    Journal {
        /// The journal file.
        path: std::path::PathBuf,
        /// The line, 1-based.
        line: usize,
        /// What is wrong with it.
        reason: String,
    },

    /// The journal's snapshot cannot be read or does not fit the journal or the run.
    #[error("coordinator journal snapshot {}: {reason}", path.display())]
    Snapshot {
        /// The snapshot file.
        path: std::path::PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// An earlier write to the journal failed: the coordinator serves nothing more, since
    /// what it answered could not be made durable.
    #[error("the coordinator journal {} failed ({reason}): the coordinator is stopping; restart it to replay the journal", path.display())]
    JournalFailed {
        /// The journal file.
        path: std::path::PathBuf,
        /// The first failure.
        reason: String,
    },

    /// A request is malformed.
    #[error("invalid request: {reason}")]
    InvalidRequest {
        /// What is wrong with it.
        reason: String,
    },

    /// Handling a request panicked: a bug. The request is refused; the state stands as the
    /// operation left it and the coordinator keeps serving.
    #[error("the coordinator hit a bug ({message}); it keeps serving: please report it")]
    Bug {
        /// What the panic said.
        message: String,
    },
}
