//! The requests and answers of the coordinator's operations as domain types, free of prost:
//! the service module converts to and from the wire at the boundary.

use std::time::Duration;

use tasks::Problem;
use tokio::time::Instant;

/// What a member does in the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MemberRole {
    /// Generates rollouts; leases prompts and heartbeats.
    Actor,
    /// Trains; publishes versions and serves weights.
    Learner,
}

impl MemberRole {
    /// The role named by [`as_str`](Self::as_str)'s spelling.
    pub(crate) fn parse(name: &str) -> Option<Self> {
        match name {
            "actor" => Some(MemberRole::Actor),
            "learner" => Some(MemberRole::Learner),
            _ => None,
        }
    }

    /// The lowercase name used in member ids and logs.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            MemberRole::Actor => "actor",
            MemberRole::Learner => "learner",
        }
    }
}

/// A member joining the run.
#[derive(Debug, Clone)]
pub(crate) struct Registration {
    pub role: MemberRole,
    /// Where the member serves (the learner's weights and rollout intake); may be empty for
    /// actors.
    pub advertise_addr: String,
    pub name: String,
}

/// What a newly registered member is told.
#[derive(Debug, Clone)]
pub(crate) struct Registered {
    pub member_id: String,
    /// The run config as it travels (`RunConfig::to_wire`).
    pub run_config: String,
    pub learner_addr: Option<String>,
    pub learner_version: u64,
}

/// The answer to a heartbeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HeartbeatAnswer {
    pub learner_version: u64,
    pub learner_addr: Option<String>,
    /// The run is over.
    pub stop: bool,
    /// The member must register again.
    pub unknown_member: bool,
}

/// An actor asking for prompts.
#[derive(Debug, Clone)]
pub(crate) struct LeaseRequest {
    pub member_id: String,
    /// The version of the weights it will generate with.
    pub version: u64,
    pub max_prompts: u32,
}

/// Prompts granted to an actor until a deadline.
#[derive(Debug, Clone)]
pub(crate) struct Grant {
    pub lease_id: String,
    pub prompts: Vec<Problem>,
    /// The id of each prompt's group, in the order of `prompts`.
    pub group_ids: Vec<String>,
    pub deadline: Instant,
}

/// Why no lease was granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The actor's weights are more than `max_lag` versions behind the learner.
    StaleWeights,
    /// Every problem is retired or leased, for now: leased ones may come back.
    PoolEmpty,
    /// The pool is spent for good: every problem retired or the configured epochs done,
    /// and no lease out. The actor has nothing more to do.
    Exhausted,
    /// The learner has finished.
    Stopping,
}

impl Refusal {
    /// The word in logs and metrics (the wire has `proto::LeaseRefusal`).
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Refusal::StaleWeights => "stale_weights",
            Refusal::PoolEmpty => "pool_empty",
            Refusal::Exhausted => "exhausted",
            Refusal::Stopping => "stopping",
        }
    }
}

/// The answer to a lease request: a grant or a refusal, with the learner's version.
#[derive(Debug, Clone)]
pub(crate) struct LeaseAnswer {
    pub learner_version: u64,
    pub outcome: Result<Grant, Refusal>,
}

/// The rewards of one problem's group.
#[derive(Debug, Clone)]
pub(crate) struct ProblemResult {
    pub problem_id: String,
    pub rewards: Vec<f32>,
}

/// An actor reporting a lease done.
#[derive(Debug, Clone)]
pub(crate) struct Completion {
    pub member_id: String,
    pub lease_id: String,
    pub results: Vec<ProblemResult>,
}

/// What became of a completion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CompleteOutcome {
    /// The lease was outstanding and is now done.
    Accepted,
    /// No such lease was ever issued.
    UnknownLease,
    /// The lease had expired and its prompts went back to the pool (rewards still recorded).
    Expired,
    /// The lease was completed before.
    AlreadyCompleted,
    /// The lease is held by another member.
    NotHolder,
}

impl CompleteOutcome {
    /// Whether the reply says `accepted`.
    pub(crate) fn accepted(self) -> bool {
        self == CompleteOutcome::Accepted
    }
}

/// Whether a (lease, problem) pair was issued by this coordinator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LeaseCheck {
    Known,
    UnknownLease,
    ProblemNotInLease,
}

impl LeaseCheck {
    /// Whether the reply says `known`.
    pub(crate) fn known(self) -> bool {
        self == LeaseCheck::Known
    }

    /// The reason on the wire; empty when known.
    pub(crate) fn reason(self) -> &'static str {
        match self {
            LeaseCheck::Known => "",
            LeaseCheck::UnknownLease => "unknown lease",
            LeaseCheck::ProblemNotInLease => "problem not in lease",
        }
    }
}

/// The learner announcing a step.
#[derive(Debug, Clone, Default)]
pub(crate) struct Publication {
    pub version: u64,
    pub zero_variance_problem_ids: Vec<String>,
    pub done: bool,
    /// What the step that made this version did; None on the first and the last publication.
    pub stats: Option<StepStats>,
    /// Groups a checkpoint now holds (or the learner refused for good): their prompts are done.
    pub durable_group_ids: Vec<String>,
    /// Groups the learner took but dropped untrained (past the lag bound): leased again.
    pub requeue_group_ids: Vec<String>,
}

/// One optimizer step as the learner reports it (the numbers of its `metrics.jsonl` line).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct StepStats {
    /// Optimizer steps taken in the run so far (1-based).
    pub step: u64,
    pub reward_mean: f64,
    /// Fraction of samples with full reward.
    pub pass_rate: f64,
    /// Completion tokens trained per second of the step.
    pub tokens_per_s: f64,
    pub step_seconds: f64,
    /// `lag_tokens[i]`: trained tokens sampled `i` versions before the trained version.
    pub lag_tokens: Vec<u64>,
    /// Groups dropped for lag past `max_lag`.
    pub dropped_stale: u64,
    /// Groups dropped because all their rewards were equal.
    pub zero_variance_groups: u64,
    /// Completion tokens trained on.
    pub tokens: u64,
    /// Seconds since the run started.
    pub wall_s: f64,
    /// Mean model turns per episode (1 for one-turn tasks).
    pub turns_mean: f64,
}

impl StepStats {
    /// The largest lag any trained token of the step had (0 when none was trained).
    pub(crate) fn max_lag(&self) -> u64 {
        self.lag_tokens
            .iter()
            .rposition(|&tokens| tokens > 0)
            .map_or(0, |lag| lag as u64)
    }
}

/// An actor's environment calls and the groups its environments failed, cumulative since
/// it started (it reports them with each heartbeat).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct EnvTotals {
    pub calls: u64,
    pub seconds: f64,
    pub errors: std::collections::BTreeMap<String, u64>,
}

impl EnvTotals {
    /// Adds `other`'s figures.
    pub(crate) fn add(&mut self, other: &EnvTotals) {
        self.calls += other.calls;
        self.seconds += other.seconds;
        for (reason, n) in &other.errors {
            *self.errors.entry(reason.clone()).or_default() += n;
        }
    }
}

/// One actor as the status shows it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ActorSnapshot {
    pub member_id: String,
    pub name: String,
    pub version: u64,
    pub since_heard: Duration,
    pub alive: bool,
    pub env: EnvTotals,
}

/// The run at a glance.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct StatusSnapshot {
    pub learner_version: u64,
    pub actors: Vec<ActorSnapshot>,
    pub pool_active: u64,
    pub pool_retired: u64,
    /// The train pool's size; None for an unbounded source.
    pub pool_size: Option<u64>,
    /// Passes over the train pool completed.
    pub epoch: u64,
    /// Passes configured (0: no limit).
    pub epochs: u64,
    /// The pool is spent and no lease is out: no more rollouts will come.
    pub exhausted: bool,
    pub leases_outstanding: u64,
    pub leases_expired: u64,
    pub prompts_completed: u64,
    pub zero_variance_groups: u64,
    pub done: bool,
    pub max_lag: u64,
}

impl StatusSnapshot {
    /// The environment figures of every actor listed, summed.
    pub(crate) fn env_totals(&self) -> EnvTotals {
        let mut sum = EnvTotals::default();
        for a in &self.actors {
            sum.add(&a.env);
        }
        sum
    }
}
