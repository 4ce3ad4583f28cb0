//! The gRPC face of the coordinator: converts prost messages to domain types (validating) and
//! back, runs each operation on the state, and maps errors to gRPC statuses in `to_status`.
//! Every refusal is counted in `oxrl_rejected_total{reason}` on its way out.

use std::time::{SystemTime, UNIX_EPOCH};

use proto::coordinator_server::Coordinator as CoordinatorService;
use tokio::time::Instant;
use tonic::{Request, Response, Status};
use tracing::warn;

use crate::domain::{
    ActorSnapshot, Completion, Grant, HeartbeatAnswer, LeaseAnswer, LeaseRequest, MemberRole,
    ProblemResult, Publication, Refusal, Registered, Registration, StatusSnapshot, StepStats,
};
use crate::error::CoordinatorError;
use crate::handle::Coordinator;
use crate::metrics::Rejection;

#[tonic::async_trait]
impl CoordinatorService for Coordinator {
    async fn register(
        &self,
        request: Request<proto::RegisterRequest>,
    ) -> Result<Response<proto::RegisterReply>, Status> {
        let registration =
            Registration::try_from(request.into_inner()).map_err(|e| self.refuse(e))?;
        let now = Instant::now();
        let registered = self
            .with_state(|state| state.register(registration, now))
            .map_err(|e| self.refuse(e))?;
        Ok(Response::new(registered.into()))
    }

    async fn heartbeat(
        &self,
        request: Request<proto::HeartbeatRequest>,
    ) -> Result<Response<proto::HeartbeatReply>, Status> {
        let beat = request.into_inner();
        let now = Instant::now();
        let env = beat.env.map(env_totals);
        let answer = self
            .with_state(|state| {
                let answer = state.heartbeat(&beat.member_id, beat.version, now);
                if let Some(env) = env {
                    state.record_env(&beat.member_id, env);
                }
                answer
            })
            .map_err(|e| self.refuse(e))?;
        if answer.unknown_member {
            self.reject(Rejection::UnknownMember);
        }
        Ok(Response::new(answer.into()))
    }

    async fn lease(
        &self,
        request: Request<proto::LeaseRequest>,
    ) -> Result<Response<proto::LeaseReply>, Status> {
        let request = LeaseRequest::from(request.into_inner());
        let now = Instant::now();
        let answer = self
            .with_state(|state| state.lease(request, now))
            .and_then(|answer| answer)
            .map_err(|e| self.refuse(e))?;
        if let Some(reason) = answer
            .outcome
            .as_ref()
            .err()
            .and_then(|r| Rejection::of_refusal(*r))
        {
            self.reject(reason);
        }
        Ok(Response::new(lease_reply(answer, now, SystemTime::now())))
    }

    async fn complete(
        &self,
        request: Request<proto::CompleteRequest>,
    ) -> Result<Response<proto::CompleteReply>, Status> {
        let completion = Completion::try_from(request.into_inner()).map_err(|e| self.refuse(e))?;
        let now = Instant::now();
        let outcome = self
            .with_state(|state| state.complete(completion, now))
            .map_err(|e| self.refuse(e))?;
        if let Some(reason) = Rejection::of_completion(outcome) {
            self.reject(reason);
        }
        Ok(Response::new(proto::CompleteReply {
            accepted: outcome.accepted(),
        }))
    }

    async fn check_lease(
        &self,
        request: Request<proto::CheckLeaseRequest>,
    ) -> Result<Response<proto::CheckLeaseReply>, Status> {
        let check = request.into_inner();
        let answer = self
            .with_state(|state| state.check_lease(&check.lease_id, &check.problem_id))
            .map_err(|e| self.refuse(e))?;
        if let Some(reason) = Rejection::of_check(answer) {
            self.reject(reason);
        }
        Ok(Response::new(proto::CheckLeaseReply {
            known: answer.known(),
            reason: answer.reason().to_string(),
        }))
    }

    async fn publish_version(
        &self,
        request: Request<proto::PublishVersionRequest>,
    ) -> Result<Response<proto::PublishVersionReply>, Status> {
        let publication = Publication::from(request.into_inner());
        let now = Instant::now();
        let settled_below = self
            .with_state(|state| state.publish_version(publication, now))
            .map_err(|e| self.refuse(e))?;
        Ok(Response::new(proto::PublishVersionReply { settled_below }))
    }

    async fn status(
        &self,
        _request: Request<proto::StatusRequest>,
    ) -> Result<Response<proto::StatusReply>, Status> {
        let now = Instant::now();
        let status = self
            .with_state(|state| state.status(now))
            .map_err(|e| self.refuse(e))?;
        Ok(Response::new(status.into()))
    }
}

impl Coordinator {
    /// Counts `error` as a rejection and turns it into the caller's status.
    fn refuse(&self, error: CoordinatorError) -> Status {
        self.reject(Rejection::of_error(&error));
        to_status(error)
    }
}

/// The gRPC status for a coordinator error: the caller's mistakes are `NotFound` or
/// `InvalidArgument`, anything else is `Internal`.
pub(crate) fn to_status(error: CoordinatorError) -> Status {
    let message = error.to_string();
    match error {
        CoordinatorError::UnknownMember { .. } => Status::not_found(message),
        CoordinatorError::InvalidRequest { .. } => Status::invalid_argument(message),
        // The coordinator is going down; a restarted one will answer.
        CoordinatorError::JournalFailed { .. } | CoordinatorError::JournalIo { .. } => {
            Status::unavailable(message)
        }
        CoordinatorError::Task { .. }
        | CoordinatorError::Config(_)
        | CoordinatorError::Journal { .. }
        | CoordinatorError::Snapshot { .. }
        | CoordinatorError::Transport(_)
        | CoordinatorError::Security(_)
        | CoordinatorError::Bug { .. } => Status::internal(message),
    }
}

impl TryFrom<proto::RegisterRequest> for Registration {
    type Error = CoordinatorError;

    fn try_from(request: proto::RegisterRequest) -> Result<Self, Self::Error> {
        let role = match proto::Role::try_from(request.role) {
            Ok(proto::Role::Actor) => MemberRole::Actor,
            Ok(proto::Role::Learner) => MemberRole::Learner,
            Ok(proto::Role::Unspecified) | Err(_) => {
                return Err(invalid(format!(
                    "role {} is not ROLE_ACTOR or ROLE_LEARNER",
                    request.role
                )))
            }
        };
        let advertise_addr = request.advertise_addr.trim().to_string();
        if role == MemberRole::Learner && advertise_addr.is_empty() {
            return Err(invalid(
                "a learner must give advertise_addr, where actors reach it (e.g. http://host:port)"
                    .to_string(),
            ));
        }
        Ok(Registration {
            role,
            advertise_addr,
            name: request.name,
        })
    }
}

impl From<Registered> for proto::RegisterReply {
    fn from(registered: Registered) -> Self {
        proto::RegisterReply {
            member_id: registered.member_id,
            run_config: registered.run_config,
            learner_addr: registered.learner_addr.unwrap_or_default(),
            learner_version: registered.learner_version,
        }
    }
}

impl From<Refusal> for proto::LeaseRefusal {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::StaleWeights => proto::LeaseRefusal::StaleWeights,
            Refusal::PoolEmpty => proto::LeaseRefusal::PoolEmpty,
            Refusal::Exhausted => proto::LeaseRefusal::Exhausted,
            Refusal::Stopping => proto::LeaseRefusal::Stopping,
        }
    }
}

impl From<HeartbeatAnswer> for proto::HeartbeatReply {
    fn from(answer: HeartbeatAnswer) -> Self {
        proto::HeartbeatReply {
            learner_version: answer.learner_version,
            learner_addr: answer.learner_addr.unwrap_or_default(),
            stop: answer.stop,
            unknown_member: answer.unknown_member,
        }
    }
}

impl From<proto::LeaseRequest> for LeaseRequest {
    fn from(request: proto::LeaseRequest) -> Self {
        LeaseRequest {
            member_id: request.member_id,
            version: request.version,
            max_prompts: request.max_prompts,
        }
    }
}

/// The wire reply for a lease answer; the deadline is turned into wall-clock milliseconds
/// (`now` and `wall_now` are the same moment on the two clocks).
fn lease_reply(answer: LeaseAnswer, now: Instant, wall_now: SystemTime) -> proto::LeaseReply {
    match answer.outcome {
        Ok(Grant {
            lease_id,
            prompts,
            group_ids,
            deadline,
        }) => {
            let deadline = wall_now + deadline.saturating_duration_since(now);
            proto::LeaseReply {
                lease_id,
                prompts: prompts
                    .into_iter()
                    .zip(group_ids)
                    .map(|(problem, group_id)| proto::Prompt {
                        problem_id: problem.id,
                        prompt: problem.prompt,
                        answer: problem.answer,
                        group_id,
                    })
                    .collect(),
                deadline_unix_ms: deadline.duration_since(UNIX_EPOCH).map(millis).unwrap_or(0),
                learner_version: answer.learner_version,
                refused: proto::LeaseRefusal::Unspecified.into(),
            }
        }
        Err(refusal) => proto::LeaseReply {
            learner_version: answer.learner_version,
            refused: proto::LeaseRefusal::from(refusal).into(),
            ..proto::LeaseReply::default()
        },
    }
}

impl TryFrom<proto::CompleteRequest> for Completion {
    type Error = CoordinatorError;

    fn try_from(request: proto::CompleteRequest) -> Result<Self, Self::Error> {
        let results = request
            .results
            .into_iter()
            .map(|result| {
                if let Some(bad) = result.rewards.iter().find(|r| !r.is_finite()) {
                    return Err(invalid(format!(
                        "reward {bad} for problem {} is not a finite number",
                        result.problem_id
                    )));
                }
                Ok(ProblemResult {
                    problem_id: result.problem_id,
                    rewards: result.rewards,
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Completion {
            member_id: request.member_id,
            lease_id: request.lease_id,
            results,
        })
    }
}

impl From<proto::PublishVersionRequest> for Publication {
    fn from(request: proto::PublishVersionRequest) -> Self {
        // The version must not be lost over a bad report: a step the dashboard cannot show is
        // dropped with a warning, the publication stands.
        let stats = request
            .stats
            .and_then(|stats| match StepStats::try_from(stats) {
                Ok(stats) => Some(stats),
                Err(e) => {
                    warn!(version = request.version, error = %e, "step stats ignored");
                    None
                }
            });
        Publication {
            version: request.version,
            zero_variance_problem_ids: request.zero_variance_problem_ids,
            done: request.done,
            stats,
            durable_group_ids: request.durable_group_ids,
            requeue_group_ids: request.requeue_group_ids,
        }
    }
}

impl TryFrom<proto::StepStats> for StepStats {
    type Error = CoordinatorError;

    fn try_from(stats: proto::StepStats) -> Result<Self, Self::Error> {
        // Steps count from 1; a step 0 would read as a learner restarted from scratch and wipe
        // the dashboard's curve.
        if stats.step == 0 {
            return Err(invalid(
                "step stats for step 0 (steps count from 1)".to_string(),
            ));
        }
        Ok(StepStats {
            step: stats.step,
            reward_mean: stats.reward_mean,
            pass_rate: stats.pass_rate,
            tokens_per_s: stats.tokens_per_s,
            step_seconds: stats.step_seconds,
            lag_tokens: stats.lag_tokens,
            dropped_stale: stats.dropped_stale,
            zero_variance_groups: stats.zero_variance_groups,
            tokens: stats.tokens,
            wall_s: stats.wall_s,
            // Learners from before episodes send none: their episodes had one turn.
            turns_mean: if stats.turns_mean.is_finite() && stats.turns_mean >= 1.0 {
                stats.turns_mean
            } else {
                1.0
            },
        })
    }
}

impl From<StatusSnapshot> for proto::StatusReply {
    fn from(status: StatusSnapshot) -> Self {
        proto::StatusReply {
            learner_version: status.learner_version,
            actors: status.actors.into_iter().map(Into::into).collect(),
            pool_active: status.pool_active,
            pool_retired: status.pool_retired,
            leases_outstanding: status.leases_outstanding,
            leases_expired: status.leases_expired,
            prompts_completed: status.prompts_completed,
            zero_variance_groups: status.zero_variance_groups,
            done: status.done,
            max_lag: status.max_lag,
            pool_size: status.pool_size.unwrap_or(0),
            epoch: status.epoch,
            epochs: status.epochs,
            exhausted: status.exhausted,
        }
    }
}

impl From<ActorSnapshot> for proto::ActorStatus {
    fn from(actor: ActorSnapshot) -> Self {
        proto::ActorStatus {
            member_id: actor.member_id,
            name: actor.name,
            version: actor.version,
            last_heartbeat_ms_ago: millis(actor.since_heard),
            alive: actor.alive,
            env: Some(proto::EnvTotals {
                calls: actor.env.calls,
                seconds: actor.env.seconds,
                errors: actor.env.errors.into_iter().collect(),
            }),
        }
    }
}

/// An actor's reported environment figures; a non-finite or negative time counts as none.
fn env_totals(env: proto::EnvTotals) -> crate::domain::EnvTotals {
    crate::domain::EnvTotals {
        calls: env.calls,
        seconds: if env.seconds.is_finite() && env.seconds >= 0.0 {
            env.seconds
        } else {
            0.0
        },
        errors: env.errors.into_iter().collect(),
    }
}

fn invalid(reason: String) -> CoordinatorError {
    CoordinatorError::InvalidRequest { reason }
}

fn millis(duration: std::time::Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn register_requests_are_validated() {
        let request = |role: i32, addr: &str| proto::RegisterRequest {
            role,
            advertise_addr: addr.to_string(),
            name: "n".to_string(),
        };
        assert!(Registration::try_from(request(proto::Role::Actor as i32, "")).is_ok());
        let learner = Registration::try_from(request(proto::Role::Learner as i32, " http://h:1 "));
        assert_eq!(learner.unwrap().advertise_addr, "http://h:1");
        for bad in [
            request(proto::Role::Learner as i32, ""),
            request(proto::Role::Unspecified as i32, ""),
            request(17, ""),
        ] {
            let status = to_status(Registration::try_from(bad).unwrap_err());
            assert_eq!(status.code(), tonic::Code::InvalidArgument);
        }
    }

    #[test]
    fn non_finite_rewards_are_rejected() {
        let request = proto::CompleteRequest {
            member_id: "actor-1".to_string(),
            lease_id: "lease-1".to_string(),
            results: vec![proto::ProblemResult {
                problem_id: "p".to_string(),
                rewards: vec![1.0, f32::NAN],
            }],
        };
        let err = Completion::try_from(request).unwrap_err();
        assert!(err.to_string().contains("not a finite number"), "{err}");
    }

    #[test]
    fn step_stats_reach_the_publication_and_a_bad_report_only_drops_itself() {
        let request = |step| proto::PublishVersionRequest {
            version: 3,
            stats: Some(proto::StepStats {
                step,
                reward_mean: 0.5,
                lag_tokens: vec![7, 0, 2],
                ..proto::StepStats::default()
            }),
            ..proto::PublishVersionRequest::default()
        };
        let publication = Publication::from(request(3));
        let stats = publication.stats.unwrap();
        assert_eq!((stats.step, stats.reward_mean), (3, 0.5));
        assert_eq!(stats.max_lag(), 2);
        let publication = Publication::from(request(0));
        assert_eq!(publication.version, 3);
        assert!(publication.stats.is_none());
    }

    #[test]
    fn unknown_members_are_not_found() {
        let status = to_status(CoordinatorError::UnknownMember {
            member_id: "actor-3".to_string(),
        });
        assert_eq!(status.code(), tonic::Code::NotFound);
        assert_eq!(status.message(), "unknown member 'actor-3': register again");
    }

    #[test]
    fn lease_deadlines_become_wall_clock_milliseconds() {
        let now = Instant::now();
        let wall_now = UNIX_EPOCH + Duration::from_millis(1_000_000);
        let answer = LeaseAnswer {
            learner_version: 4,
            outcome: Ok(Grant {
                lease_id: "lease-1".to_string(),
                prompts: vec![tasks::Problem {
                    id: "p/0".to_string(),
                    prompt: "1+1=".to_string(),
                    answer: "2".to_string(),
                    solution: "2".to_string(),
                }],
                group_ids: vec!["lease-1/p/0".to_string()],
                deadline: now + Duration::from_secs(60),
            }),
        };
        let reply = lease_reply(answer, now, wall_now);
        assert_eq!(reply.deadline_unix_ms, 1_060_000);
        assert_eq!(reply.prompts[0].problem_id, "p/0");
        assert_eq!(reply.prompts[0].answer, "2");
        assert_eq!(reply.prompts[0].group_id, "lease-1/p/0");
        assert_eq!(
            (reply.learner_version, reply.refused()),
            (4, proto::LeaseRefusal::Unspecified)
        );

        let refused = LeaseAnswer {
            learner_version: 9,
            outcome: Err(Refusal::StaleWeights),
        };
        let reply = lease_reply(refused, now, wall_now);
        assert_eq!(reply.refused(), proto::LeaseRefusal::StaleWeights);
        assert!(reply.lease_id.is_empty() && reply.prompts.is_empty());
        assert_eq!(reply.learner_version, 9);
    }
}
