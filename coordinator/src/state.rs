//! The coordinator's state and every operation on it, as pure logic: each operation takes the
//! current `now` and first brings the state up to it (expired leases, dead actors), so the
//! answer never depends on when the background reaper last ran.

use tasks::ProblemSource;
use tokio::time::Instant;
use tracing::{debug, info};

use crate::curriculum::Curriculum;
use crate::domain::{
    CompleteOutcome, Completion, Grant, HeartbeatAnswer, LeaseAnswer, LeaseCheck, LeaseRequest,
    ProblemResult, Publication, Refusal, Registered, Registration, StatusSnapshot,
};
use crate::error::CoordinatorError;
use crate::leases::{LeaseBook, LeaseState, LeasedPrompt};
use crate::pool::PromptPool;
use crate::registry::Registry;
use crate::settings::CoordinatorSettings;

/// Most prompts one lease may carry, whatever the actor asks for: keeps replies small and an
/// unbounded source from being asked for billions of problems.
pub(crate) const MAX_PROMPTS_PER_LEASE: u32 = 1024;

/// What a reap did: actors declared dead and leases expired (including the dead actors').
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Reaped {
    pub dead_actors: Vec<String>,
    pub expired_leases: Vec<String>,
}

/// The whole run as the coordinator sees it.
pub(crate) struct State {
    settings: CoordinatorSettings,
    pool: PromptPool,
    curriculum: Curriculum,
    leases: LeaseBook,
    registry: Registry,
    learner_version: u64,
    done: bool,
    prompts_completed: u64,
}

impl State {
    /// A fresh run over `source`'s train split.
    pub(crate) fn new(settings: CoordinatorSettings, source: Box<dyn ProblemSource>) -> Self {
        let curriculum = Curriculum::new(settings.retire_pass_rate, settings.retire_min_samples);
        Self {
            settings,
            pool: PromptPool::new(source),
            curriculum,
            leases: LeaseBook::default(),
            registry: Registry::default(),
            learner_version: 0,
            done: false,
            prompts_completed: 0,
        }
    }

    /// Adds a member; a learner's address becomes the run's learner address.
    pub(crate) fn register(&mut self, registration: Registration, now: Instant) -> Registered {
        self.reap(now);
        let Registration {
            role,
            advertise_addr,
            name,
        } = registration;
        let member_id = self.registry.register(role, &name, &advertise_addr, now);
        info!(
            member_id = %member_id,
            role = role.as_str(),
            name = %name,
            advertise_addr = %advertise_addr,
            "member registered"
        );
        Registered {
            member_id,
            run_config_toml: self.settings.run_config_toml.clone(),
            learner_addr: self.registry.learner_addr().map(str::to_string),
            learner_version: self.learner_version,
            max_lag: self.settings.max_lag,
            heartbeat_interval: self.settings.heartbeat_interval,
        }
    }

    /// Records that `member_id` is alive and holds `version`.
    pub(crate) fn heartbeat(
        &mut self,
        member_id: &str,
        version: u64,
        now: Instant,
    ) -> HeartbeatAnswer {
        self.reap(now);
        let known =
            self.registry.touch(member_id, now) && self.registry.set_version(member_id, version);
        HeartbeatAnswer {
            learner_version: self.learner_version,
            learner_addr: self.registry.learner_addr().map(str::to_string),
            stop: self.done,
            unknown_member: !known,
        }
    }

    /// Grants prompts to an actor whose weights are fresh enough, or says why not.
    pub(crate) fn lease(
        &mut self,
        request: LeaseRequest,
        now: Instant,
    ) -> Result<LeaseAnswer, CoordinatorError> {
        self.reap(now);
        if !self.registry.touch(&request.member_id, now) {
            return Err(CoordinatorError::UnknownMember {
                member_id: request.member_id,
            });
        }
        self.registry
            .set_version(&request.member_id, request.version);
        let outcome = self.grant(&request, now);
        if let Err(refusal) = outcome {
            debug!(
                member_id = %request.member_id,
                version = request.version,
                learner_version = self.learner_version,
                refused = refusal.as_str(),
                "lease refused"
            );
        }
        Ok(LeaseAnswer {
            learner_version: self.learner_version,
            outcome,
        })
    }

    /// Ends a lease and feeds its rewards to the curriculum.
    pub(crate) fn complete(&mut self, completion: Completion, now: Instant) -> CompleteOutcome {
        self.reap(now);
        self.registry.touch(&completion.member_id, now);
        let Some(lease) = self.leases.get(&completion.lease_id) else {
            return CompleteOutcome::UnknownLease;
        };
        let outcome = match lease.state {
            LeaseState::Completed => return CompleteOutcome::AlreadyCompleted,
            LeaseState::Outstanding { .. } if lease.member_id != completion.member_id => {
                return CompleteOutcome::NotHolder
            }
            LeaseState::Outstanding { .. } => CompleteOutcome::Accepted,
            // Its prompts are already back in the pool, but the samples were really drawn:
            // the pass rates still learn from them.
            LeaseState::Expired => CompleteOutcome::Expired,
        };
        let prompts = lease.prompts.clone();
        if outcome.accepted() {
            self.leases.complete(&completion.lease_id);
            self.pool.release(prompts.iter().map(|p| p.index));
        }
        let recorded = self.record_results(&prompts, &completion.results);
        if outcome.accepted() {
            self.prompts_completed += recorded;
        }
        debug!(
            lease_id = %completion.lease_id,
            member_id = %completion.member_id,
            outcome = ?outcome,
            results = recorded,
            "lease completion"
        );
        outcome
    }

    /// Whether `lease_id` was ever issued with `problem_id` in it.
    pub(crate) fn check_lease(&self, lease_id: &str, problem_id: &str) -> LeaseCheck {
        match self.leases.get(lease_id) {
            None => LeaseCheck::UnknownLease,
            Some(lease) if lease.contains(problem_id) => LeaseCheck::Known,
            Some(_) => LeaseCheck::ProblemNotInLease,
        }
    }

    /// The learner's new version (never lower than before), its zero-variance groups, and
    /// whether it has finished.
    pub(crate) fn publish_version(&mut self, publication: Publication, now: Instant) {
        self.reap(now);
        if publication.version >= self.learner_version {
            self.learner_version = publication.version;
        } else {
            debug!(
                version = publication.version,
                learner_version = self.learner_version,
                "ignored an older version"
            );
        }
        self.curriculum.count_zero_variance(
            publication
                .zero_variance_problem_ids
                .iter()
                .map(String::as_str),
        );
        if publication.done && !self.done {
            info!(
                learner_version = self.learner_version,
                "learner done: run stopping"
            );
            self.done = true;
        }
    }

    /// The run at a glance.
    pub(crate) fn status(&mut self, now: Instant) -> StatusSnapshot {
        self.reap(now);
        self.snapshot(now)
    }

    /// The status as it stands, without reaping first (the reaper's tests look through this).
    pub(crate) fn snapshot(&self, now: Instant) -> StatusSnapshot {
        StatusSnapshot {
            learner_version: self.learner_version,
            actors: self.registry.actors(now),
            pool_active: self.pool.active(),
            pool_retired: self.pool.retired(),
            leases_outstanding: self.leases.outstanding(),
            leases_expired: self.leases.expired(),
            prompts_completed: self.prompts_completed,
            zero_variance_groups: self.curriculum.zero_variance_total(),
            done: self.done,
            max_lag: self.settings.max_lag,
        }
    }

    /// Declares actors silent for `actor_timeout` dead (expiring their leases) and expires
    /// leases past their deadline; their prompts go back to the pool.
    pub(crate) fn reap(&mut self, now: Instant) -> Reaped {
        let mut reaped = Reaped::default();
        for member_id in self
            .registry
            .silent_actors(now, self.settings.actor_timeout)
        {
            let held = self.leases.held_by(&member_id);
            for lease_id in &held {
                self.expire_lease(lease_id);
            }
            self.registry.declare_dead(&member_id);
            info!(member_id = %member_id, leases_returned = held.len(), "actor declared dead");
            reaped.dead_actors.push(member_id);
            reaped.expired_leases.extend(held);
        }
        for lease_id in self.leases.due(now) {
            self.expire_lease(&lease_id);
            debug!(lease_id = %lease_id, "lease expired");
            reaped.expired_leases.push(lease_id);
        }
        reaped
    }

    fn grant(&mut self, request: &LeaseRequest, now: Instant) -> Result<Grant, Refusal> {
        if self.done {
            return Err(Refusal::Stopping);
        }
        // PipelineRL-k: generating with version v is allowed while v >= learner_version - k.
        if request.version.saturating_add(self.settings.max_lag) < self.learner_version {
            return Err(Refusal::StaleWeights);
        }
        let max = request.max_prompts.clamp(1, MAX_PROMPTS_PER_LEASE) as usize;
        let taken = self.pool.take(max);
        if taken.is_empty() {
            return Err(Refusal::PoolEmpty);
        }
        let leased = taken
            .iter()
            .map(|p| LeasedPrompt {
                index: p.index,
                problem_id: p.problem.id.clone(),
            })
            .collect();
        let deadline = now + self.settings.lease_timeout;
        let lease_id = self.leases.issue(&request.member_id, leased, deadline);
        debug!(
            lease_id = %lease_id,
            member_id = %request.member_id,
            version = request.version,
            prompts = taken.len(),
            "lease granted"
        );
        Ok(Grant {
            lease_id,
            prompts: taken.into_iter().map(|p| p.problem).collect(),
            deadline,
        })
    }

    fn expire_lease(&mut self, lease_id: &str) {
        if let Some(lease) = self.leases.expire(lease_id) {
            self.pool.give_back(lease.indices());
        }
    }

    /// Feeds each result whose problem was in the lease to the curriculum, retiring problems
    /// that meet the rule; returns how many results were recorded.
    fn record_results(&mut self, prompts: &[LeasedPrompt], results: &[ProblemResult]) -> u64 {
        let mut recorded = 0;
        for result in results {
            let Some(prompt) = prompts.iter().find(|p| p.problem_id == result.problem_id) else {
                debug!(problem_id = %result.problem_id, "result for a problem not in the lease ignored");
                continue;
            };
            recorded += 1;
            let Some(history) = self.curriculum.record(&prompt.problem_id, &result.rewards) else {
                continue;
            };
            if self.pool.retire(prompt.index) {
                info!(
                    problem_id = %prompt.problem_id,
                    pass_rate = history.rate(),
                    samples = history.count,
                    "problem retired"
                );
            }
        }
        recorded
    }
}

#[cfg(test)]
mod tests;
