//! The gRPC face of the environment server: converts `oxrl.v1.Environment` requests to
//! session calls, runs each on a blocking thread (an environment's reset or step may take its
//! time, and a call keeps running when its client gives up on it, so a retry finds its reply
//! cached), counts it, and maps errors to statuses in [`to_status`].

use std::sync::Arc;
use std::time::Instant;

use proto::environment_server::Environment as EnvironmentService;
use tasks::{EnvError, Problem};
use tonic::{Request, Response, Status};
use tracing::{debug, warn};

use crate::metrics::EnvMetrics;
use crate::sessions::{Opening, SessionError, Sessions};

/// The service over one session table; cheap to clone.
#[derive(Clone)]
pub(crate) struct EnvService {
    pub(crate) sessions: Arc<Sessions>,
    pub(crate) metrics: Arc<EnvMetrics>,
}

impl From<proto::EnvResetRequest> for Opening {
    fn from(r: proto::EnvResetRequest) -> Self {
        Opening {
            session: r.session_id,
            env: r.env,
            problem: Problem {
                id: r.problem_id,
                prompt: r.prompt,
                answer: r.answer,
                solution: String::new(),
            },
            seed: r.seed,
        }
    }
}

/// The gRPC status for a session error: the caller's mistakes are `InvalidArgument`,
/// `NotFound`, `AlreadyExists` or `FailedPrecondition`, a full server `ResourceExhausted`, an
/// environment's own failure what its kind says, anything else `Internal`.
pub(crate) fn to_status(error: &SessionError) -> Status {
    let message = error.to_string();
    match error {
        SessionError::InvalidRequest(_) | SessionError::UnknownEnv { .. } => {
            Status::invalid_argument(message)
        }
        SessionError::Full { .. } => Status::resource_exhausted(message),
        SessionError::UnknownSession { .. } => Status::not_found(message),
        SessionError::SessionReused { .. } => Status::already_exists(message),
        SessionError::TurnOutOfOrder { .. } | SessionError::Ended { .. } => {
            Status::failed_precondition(message)
        }
        SessionError::Env { error, .. } => match error {
            EnvError::Unavailable(_) => Status::unavailable(message),
            EnvError::Timeout(_) => Status::deadline_exceeded(message),
            EnvError::Invalid(_) | EnvError::Unknown { .. } => Status::invalid_argument(message),
        },
        SessionError::Internal(_) => Status::internal(message),
    }
}

impl EnvService {
    /// Runs `call` on a blocking thread; a panic in it is an internal error.
    async fn blocking<T: Send + 'static>(
        &self,
        call: impl FnOnce(&Sessions) -> Result<T, SessionError> + Send + 'static,
    ) -> Result<T, Status> {
        let sessions = self.sessions.clone();
        let out = tokio::task::spawn_blocking(move || call(&sessions))
            .await
            .unwrap_or_else(|join| {
                Err(SessionError::Internal(format!(
                    "the environment panicked: {join}"
                )))
            });
        self.metrics.sessions_open.set(self.sessions.open() as i64);
        out.map_err(|e| self.refuse(&e))
    }

    /// Counts `error` and turns it into the caller's status.
    fn refuse(&self, error: &SessionError) -> Status {
        self.metrics.error(error.reason());
        match error {
            SessionError::Internal(_) | SessionError::Env { .. } => {
                warn!(reason = error.reason(), %error, "environment call failed")
            }
            _ => debug!(reason = error.reason(), %error, "environment call refused"),
        }
        to_status(error)
    }

    /// The name a Reset's environment is counted under.
    fn env_label(&self, env: &str) -> String {
        if env.is_empty() {
            self.sessions
                .env_names()
                .into_iter()
                .next()
                .unwrap_or_default()
        } else {
            env.to_string()
        }
    }
}

#[tonic::async_trait]
impl EnvironmentService for EnvService {
    async fn reset(
        &self,
        request: Request<proto::EnvResetRequest>,
    ) -> Result<Response<proto::EnvResetReply>, Status> {
        let opening = Opening::from(request.into_inner());
        let label = self.env_label(&opening.env);
        let observation = self
            .blocking(move |s| s.reset(opening, Instant::now()))
            .await?;
        self.metrics.resets.get_or_create(&[("env", label)]).inc();
        Ok(Response::new(proto::EnvResetReply { observation }))
    }

    async fn step(
        &self,
        request: Request<proto::EnvStepRequest>,
    ) -> Result<Response<proto::EnvStepReply>, Status> {
        let started = Instant::now();
        let r = request.into_inner();
        let stepped = self
            .blocking(move |s| s.step(&r.session_id, r.turn, &r.action, Instant::now()))
            .await?;
        if stepped.replayed {
            self.metrics.replayed_steps.inc();
        } else {
            self.metrics
                .steps
                .get_or_create(&[("env", stepped.env)])
                .inc();
        }
        self.metrics
            .step_seconds
            .observe(started.elapsed().as_secs_f64());
        let step = stepped.step;
        Ok(Response::new(proto::EnvStepReply {
            observation: step.observation,
            reward: step.reward,
            done: step.done,
        }))
    }

    async fn close(
        &self,
        request: Request<proto::EnvCloseRequest>,
    ) -> Result<Response<proto::EnvCloseReply>, Status> {
        let session = request.into_inner().session_id;
        self.blocking(move |s| s.close(&session)).await?;
        Ok(Response::new(proto::EnvCloseReply {}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_say_what_another_try_can_change() {
        use tonic::Code;
        let cases = [
            (SessionError::Full { max: 1 }, Code::ResourceExhausted),
            (
                SessionError::UnknownSession {
                    session: "s".into(),
                },
                Code::NotFound,
            ),
            (
                SessionError::Env {
                    env: "guess".into(),
                    error: EnvError::Invalid("answer x".into()),
                },
                Code::InvalidArgument,
            ),
            (
                SessionError::Env {
                    env: "far".into(),
                    error: EnvError::Unavailable("down".into()),
                },
                Code::Unavailable,
            ),
            (SessionError::Internal("poisoned".into()), Code::Internal),
        ];
        for (error, code) in cases {
            let status = to_status(&error);
            assert_eq!(status.code(), code, "{error}");
            assert_eq!(status.message(), error.to_string());
        }
    }
}
