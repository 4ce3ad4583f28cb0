//! The coordinator's state and every operation on it, as pure logic: each operation takes the
//! current `now` and first brings the state up to it (expired leases, dead actors), so the
//! answer never depends on when the background reaper last ran.
//!
//! Every change that must survive a restart is also written down as a journal record
//! (`record.rs`), queued in the state until the handle appends it to the journal file;
//! `replay.rs` applies such records to a fresh state.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rollout::config::RunConfig;
use tasks::ProblemSource;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::curriculum::{Curriculum, PassRate};
use crate::domain::{
    CompleteOutcome, Completion, Grant, HeartbeatAnswer, LeaseAnswer, LeaseCheck, LeaseRequest,
    MemberRole, ProblemResult, Publication, Refusal, Registered, Registration, StatusSnapshot,
};
use crate::error::CoordinatorError;
use crate::history::{RunView, StepHistory};
use crate::leases::{LeaseBook, LeaseState, LeasedPrompt};
use crate::pool::PromptPool;
use crate::record::{Entry, GrantedPrompt, Record, RecordedResult};
use crate::registry::Registry;

/// Most prompts one lease may carry, whatever the actor asks for: keeps replies small and an
/// unbounded source from being asked for billions of problems.
pub(crate) const MAX_PROMPTS_PER_LEASE: u32 = 1024;

/// What a reap did: actors declared dead and leases expired (including the dead actors').
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Reaped {
    pub dead_actors: Vec<String>,
    pub expired_leases: Vec<String>,
}

/// The wall clock's reading (unix milliseconds).
pub(crate) fn wall_ms_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Maps the operations' `now` (tokio's clock, which tests pause) to wall-clock milliseconds
/// for the journal: the two clocks are read once, together, when the state is made.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WallClock {
    instant: Instant,
    unix_ms: u64,
}

impl WallClock {
    fn start() -> Self {
        Self {
            instant: Instant::now(),
            unix_ms: wall_ms_now(),
        }
    }

    /// `at` on the wall clock, in unix milliseconds.
    pub(crate) fn ms(&self, at: Instant) -> u64 {
        let millis = |d: std::time::Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        if at >= self.instant {
            self.unix_ms
                .saturating_add(millis(at.duration_since(self.instant)))
        } else {
            self.unix_ms
                .saturating_sub(millis(self.instant.duration_since(at)))
        }
    }
}

/// The whole run as the coordinator sees it.
pub(crate) struct State {
    /// The run's config (validated), the one source of every run parameter the logic reads.
    run: RunConfig,
    pool: PromptPool,
    curriculum: Curriculum,
    leases: LeaseBook,
    registry: Registry,
    learner_version: u64,
    /// A learner (re)joined and has not published yet: its first version is taken even if
    /// lower (a learner restarted from a checkpoint goes back to the checkpoint's version).
    accept_any_version: bool,
    done: bool,
    /// The pool's exhaustion has been logged (not journaled: a restarted coordinator says it
    /// again).
    exhaustion_logged: bool,
    prompts_completed: u64,
    /// Group ids of prompts returned by expired leases, by pool index: leased again, a prompt
    /// keeps its group id, so the learner takes at most one group per leased prompt.
    reissue: HashMap<u64, String>,
    /// Prompts of accepted completions that no learner checkpoint holds yet, by group id: a
    /// learner that restarts (from an older checkpoint) gets them leased again first, under
    /// their group ids (`durable.rs`).
    undurable: BTreeMap<String, LeasedPrompt>,
    /// Leases outstanding when a learner last restarted: the learner that died may have
    /// queued some of their groups, so their prompts are leased again once they complete.
    straddling: BTreeSet<String>,
    /// Live groups a checkpoint already holds (`settle.rs`): their next accepted delivery is
    /// done at once.
    durable_early: BTreeSet<String>,
    /// Groups of outstanding leases the learner dropped untrained before their lease
    /// completed (`durable.rs`): put back in the pool when it does.
    requeue_early: BTreeSet<String>,
    /// A learner registered before: the next registration is a restart.
    learner_seen: bool,
    clock: WallClock,
    /// Journal records of the changes not yet taken by the handle.
    pending: Vec<Entry>,
    /// The steps the learner reported, for the dashboard (not journaled: `history.rs`).
    history: StepHistory,
    /// When the state was last reaped (requests reap at most every [`REQUEST_REAP_EVERY`]).
    last_reap: Option<Instant>,
}

/// How often requests reap. A reap walks every actor and outstanding lease under the lock,
/// so reaping on every request cost O(M) per request and O(M^2) a second with M actors (a
/// third of the coordinator's CPU at 1,024 actors: docs/scaling.md); at most once per 10 ms
/// (the reaper's tick does it every 100 ms anyway), what is due is at most 10 ms late for a
/// request, against lease and actor timeouts of seconds. The status (what a person or a test
/// reads) always reaps first.
const REQUEST_REAP_EVERY: Duration = Duration::from_millis(10);

impl State {
    /// A fresh run over `source`'s train split.
    pub(crate) fn new(run: RunConfig, source: Box<dyn ProblemSource>) -> Self {
        let curriculum = Curriculum::new(
            run.pipeline.retire_pass_rate,
            run.pipeline.retire_min_samples,
            run.pipeline.pass_rate_window,
        );
        let pool = PromptPool::new(source, run.epochs);
        Self {
            run,
            pool,
            curriculum,
            leases: LeaseBook::default(),
            registry: Registry::default(),
            learner_version: 0,
            accept_any_version: false,
            done: false,
            exhaustion_logged: false,
            prompts_completed: 0,
            reissue: HashMap::new(),
            undurable: BTreeMap::new(),
            straddling: BTreeSet::new(),
            durable_early: BTreeSet::new(),
            requeue_early: BTreeSet::new(),
            learner_seen: false,
            clock: WallClock::start(),
            pending: Vec::new(),
            history: StepHistory::default(),
            last_reap: None,
        }
    }

    /// The journal records of the changes made since the last call, oldest first.
    pub(crate) fn take_records(&mut self) -> Vec<Entry> {
        std::mem::take(&mut self.pending)
    }

    fn journal(&mut self, now: Instant, record: Record) {
        self.pending.push(Entry {
            t: self.clock.ms(now),
            record,
        });
    }

    /// Adds a member; a learner's address becomes the run's learner address.
    pub(crate) fn register(&mut self, registration: Registration, now: Instant) -> Registered {
        self.reap_on_request(now);
        let Registration {
            role,
            advertise_addr,
            name,
        } = registration;
        let member_id = self.registry.register(role, &name, &advertise_addr, now);
        if role == MemberRole::Learner {
            self.learner_joined();
        }
        self.journal(
            now,
            Record::Register {
                member: member_id.clone(),
                role: role.as_str().to_string(),
                name: name.clone(),
                addr: advertise_addr.clone(),
            },
        );
        info!(
            member_id = %member_id,
            role = role.as_str(),
            name = %name,
            advertise_addr = %advertise_addr,
            "member registered"
        );
        Registered {
            member_id,
            run_config: self.run.to_wire(),
            learner_addr: self.registry.learner_addr().map(str::to_string),
            learner_version: self.learner_version,
        }
    }

    /// Records that `member_id` is alive and holds `version`.
    pub(crate) fn heartbeat(
        &mut self,
        member_id: &str,
        version: u64,
        now: Instant,
    ) -> HeartbeatAnswer {
        self.reap_on_request(now);
        let known =
            self.registry.touch(member_id, now) && self.registry.set_version(member_id, version);
        // With the pool spent there is nothing left to generate: actors may go, unless a
        // learner restart could still bring prompts back (`durable.rs`).
        let exhausted = self.note_exhaustion() && self.undurable.is_empty();
        HeartbeatAnswer {
            learner_version: self.learner_version,
            learner_addr: self.registry.learner_addr().map(str::to_string),
            stop: self.done || exhausted,
            unknown_member: !known,
        }
    }

    /// Records the environment figures an actor reported with a heartbeat (not journaled: a
    /// restarted coordinator hears them again with the next beat).
    pub(crate) fn record_env(&mut self, member_id: &str, env: crate::domain::EnvTotals) {
        self.registry.set_env(member_id, env);
    }

    /// Grants prompts to an actor whose weights are fresh enough, or says why not.
    pub(crate) fn lease(
        &mut self,
        request: LeaseRequest,
        now: Instant,
    ) -> Result<LeaseAnswer, CoordinatorError> {
        self.reap_on_request(now);
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
        self.reap_on_request(now);
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
        let results = recorded_results(&prompts, &completion.results);
        self.journal(
            now,
            Record::Complete {
                lease: completion.lease_id.clone(),
                accepted: outcome.accepted(),
                results: results.clone(),
            },
        );
        let learned = self.apply_completion(&completion.lease_id, outcome.accepted(), &results);
        self.retire_learned(&prompts, learned, now);
        self.note_exhaustion();
        debug!(
            lease_id = %completion.lease_id,
            member_id = %completion.member_id,
            outcome = ?outcome,
            results = results.len(),
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

    /// The learner's new version, its zero-variance groups, and whether it has finished.
    /// The version never goes down, except for the first publication of a learner that has
    /// just registered (a learner restarted from a checkpoint is back at its version).
    /// Returns the settled horizon (`settle.rs`) for the learner's deduplication.
    pub(crate) fn publish_version(&mut self, publication: Publication, now: Instant) -> u64 {
        self.reap_on_request(now);
        let mut version = self.learner_version;
        if publication.version >= self.learner_version || self.accept_any_version {
            if publication.version < self.learner_version {
                warn!(
                    from = self.learner_version,
                    to = publication.version,
                    "the learner's version went back: it restarted from a checkpoint"
                );
            }
            version = publication.version;
        } else {
            debug!(
                version = publication.version,
                learner_version = self.learner_version,
                "ignored an older version"
            );
        }
        let done = self.done || publication.done;
        if done && !self.done {
            info!(learner_version = version, "learner done: run stopping");
        }
        // An ignored (older) publication's step is not the run's either.
        if let Some(stats) = publication.stats.filter(|_| version == publication.version) {
            self.history
                .record(version, &stats, (self.pool.active(), self.pool.retired()));
        }
        let record = Record::Publish {
            version,
            done,
            zero_variance: publication.zero_variance_problem_ids,
            durable: publication.durable_group_ids,
            requeue: publication.requeue_group_ids,
        };
        self.apply_publication(&record);
        self.journal(now, record);
        self.settled_below()
    }

    /// The run at a glance.
    pub(crate) fn status(&mut self, now: Instant) -> StatusSnapshot {
        self.reap(now);
        self.note_exhaustion();
        self.snapshot(now)
    }

    /// The status and the step history, for `/metrics` and the dashboard.
    pub(crate) fn view(&mut self, now: Instant) -> RunView {
        RunView {
            status: self.status(now),
            steps: self.history.points().cloned().collect(),
            totals: self.history.totals().clone(),
        }
    }

    /// The status as it stands, without reaping first (the reaper's tests look through this).
    pub(crate) fn snapshot(&self, now: Instant) -> StatusSnapshot {
        StatusSnapshot {
            learner_version: self.learner_version,
            actors: self.registry.actors(now),
            pool_active: self.pool.active(),
            pool_retired: self.pool.retired(),
            pool_size: self.pool.size(),
            epoch: self.pool.epoch(),
            epochs: self.pool.epochs(),
            exhausted: self.pool.exhausted(),
            leases_outstanding: self.leases.outstanding(),
            leases_expired: self.leases.expired(),
            prompts_completed: self.prompts_completed,
            zero_variance_groups: self.curriculum.zero_variance_total(),
            done: self.done,
            max_lag: self.run.update.max_lag,
        }
    }

    /// Declares actors silent for `actor_timeout` dead (expiring their leases) and expires
    /// leases past their deadline; their prompts go back to the pool.
    pub(crate) fn reap(&mut self, now: Instant) -> Reaped {
        self.last_reap = Some(now);
        let mut reaped = Reaped::default();
        for member_id in self
            .registry
            .silent_actors(now, self.run.pipeline.actor_timeout())
        {
            let held = self.leases.held_by(&member_id);
            for lease_id in &held {
                self.expire_lease(lease_id, now);
            }
            self.registry.declare_dead(&member_id);
            self.journal(
                now,
                Record::Dead {
                    member: member_id.clone(),
                },
            );
            info!(member_id = %member_id, leases_returned = held.len(), "actor declared dead");
            reaped.dead_actors.push(member_id);
            reaped.expired_leases.extend(held);
        }
        for lease_id in self.leases.due(now) {
            self.expire_lease(&lease_id, now);
            debug!(lease_id = %lease_id, "lease expired");
            reaped.expired_leases.push(lease_id);
        }
        reaped
    }

    /// [`State::reap`], unless a request reaped less than [`REQUEST_REAP_EVERY`] ago.
    fn reap_on_request(&mut self, now: Instant) {
        let recent = self
            .last_reap
            .is_some_and(|t| now.saturating_duration_since(t) < REQUEST_REAP_EVERY);
        if !recent {
            self.reap(now);
        }
    }

    fn grant(&mut self, request: &LeaseRequest, now: Instant) -> Result<Grant, Refusal> {
        if self.done {
            // The learner finishes after the pool is spent: that is the reason to give.
            return Err(if self.pool.exhausted() {
                Refusal::Exhausted
            } else {
                Refusal::Stopping
            });
        }
        // PipelineRL-k: generating with version v is allowed while v >= learner_version - k.
        if rollout::LagBound(self.run.update.max_lag)
            .is_stale(request.version, self.learner_version)
        {
            return Err(Refusal::StaleWeights);
        }
        let max = request.max_prompts.clamp(1, MAX_PROMPTS_PER_LEASE) as usize;
        let taken = self.pool.take(max);
        if taken.is_empty() {
            // Empty for now (everything leased) or for good (nothing left to walk, nothing out
            // that could come back).
            return Err(if self.note_exhaustion() && self.undurable.is_empty() {
                Refusal::Exhausted
            } else {
                Refusal::PoolEmpty
            });
        }
        let next_id = self.leases.next_id();
        let leased: Vec<LeasedPrompt> = taken
            .iter()
            .map(|p| LeasedPrompt {
                index: p.index,
                problem_id: p.problem.id.clone(),
                group_id: self
                    .reissue
                    .remove(&p.index)
                    .unwrap_or_else(|| format!("{next_id}/{}", p.problem.id)),
            })
            .collect();
        let group_ids = leased.iter().map(|p| p.group_id.clone()).collect();
        let deadline = now + self.run.pipeline.lease_timeout();
        let record = Record::Grant {
            lease: next_id,
            member: request.member_id.clone(),
            prompts: leased
                .iter()
                .map(|p| GrantedPrompt {
                    index: p.index,
                    problem: p.problem_id.clone(),
                    group: p.group_id.clone(),
                })
                .collect(),
            cursor: self.pool.cursor(),
            deadline_ms: self.clock.ms(deadline),
        };
        let lease_id = self.leases.issue(&request.member_id, leased, deadline);
        self.journal(now, record);
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
            group_ids,
            deadline,
        })
    }

    fn expire_lease(&mut self, lease_id: &str, now: Instant) {
        if self.apply_expiry(lease_id) {
            self.journal(
                now,
                Record::Expire {
                    lease: lease_id.to_string(),
                },
            );
        }
    }

    /// Expires an outstanding lease, its prompts back to the pool under their group ids;
    /// false if it was not outstanding.
    fn apply_expiry(&mut self, lease_id: &str) -> bool {
        let Some(lease) = self.leases.expire(lease_id) else {
            return false;
        };
        let prompts = lease.prompts.clone();
        self.straddling.remove(lease_id);
        self.return_prompts(prompts);
        true
    }

    /// Puts `prompts` back in the pool, to be leased again first under their group ids
    /// (retired ones are dropped).
    fn return_prompts(&mut self, prompts: Vec<LeasedPrompt>) {
        self.pool.give_back(prompts.iter().map(|p| p.index));
        for prompt in prompts {
            // Back in the pool anyway: a drop the learner reported is answered.
            self.requeue_early.remove(&prompt.group_id);
            if !self.pool.is_retired(prompt.index) {
                self.reissue.insert(prompt.index, prompt.group_id);
            }
        }
    }

    /// Ends an accepted lease (prompts released) and adds the results to the pass rates;
    /// returns the problems that meet the retirement rule now, with their pass rates (a
    /// replay ignores them: the journal's own retire records follow).
    fn apply_completion(
        &mut self,
        lease_id: &str,
        accepted: bool,
        results: &[RecordedResult],
    ) -> Vec<(String, PassRate)> {
        if accepted {
            if let Some(lease) = self.leases.complete(lease_id) {
                let prompts = lease.prompts.clone();
                self.settle_completed(lease_id, prompts);
            }
            self.prompts_completed += results.len() as u64;
        }
        results
            .iter()
            .filter_map(|result| {
                let learned = self.curriculum.record(&result.problem, &result.rewards)?;
                Some((result.problem.clone(), learned))
            })
            .collect()
    }

    fn apply_publication(&mut self, record: &Record) {
        if let Record::Publish {
            version,
            done,
            zero_variance,
            durable,
            requeue,
        } = record
        {
            self.learner_version = *version;
            self.accept_any_version = false;
            self.done = *done;
            self.curriculum
                .count_zero_variance(zero_variance.iter().map(String::as_str));
            self.forget_durable(durable);
            self.requeue_dropped(requeue);
            self.forget_settled();
        }
    }

    /// A learner registered: the run is not over while it trains, and its first version is
    /// taken as it comes.
    fn learner_joined(&mut self) {
        self.accept_any_version = true;
        self.done = false;
        if std::mem::replace(&mut self.learner_seen, true) {
            self.learner_restarted();
        }
    }

    fn apply_retirement(&mut self, index: u64) -> bool {
        if let Some(group_id) = self.reissue.remove(&index) {
            self.durable_early.remove(&group_id);
        }
        self.pool.retire(index)
    }

    /// Whether the pool is spent: every prompt retired or the configured epochs done, and
    /// no lease out whose prompts could come back. Says so once, when it first is.
    fn note_exhaustion(&mut self) -> bool {
        let exhausted = self.pool.exhausted();
        if exhausted && !self.exhaustion_logged {
            self.exhaustion_logged = true;
            let reason = if self.pool.active() == 0 {
                "every prompt is retired"
            } else {
                "the configured epochs are done"
            };
            info!(
                reason,
                epoch = self.pool.epoch(),
                retired = self.pool.retired(),
                active = self.pool.active(),
                "the prompt pool is exhausted: no more rollouts; the run ends once the learner \
                 has trained the groups it holds"
            );
        }
        exhausted
    }

    /// Retires the `learned` problems of a lease holding `prompts`.
    fn retire_learned(
        &mut self,
        prompts: &[LeasedPrompt],
        learned: Vec<(String, PassRate)>,
        now: Instant,
    ) {
        for (problem_id, history) in learned {
            let Some(prompt) = prompts.iter().find(|p| p.problem_id == problem_id) else {
                continue;
            };
            // A settled prompt of an unbounded source is leased no more, and its retirement
            // mark would only be forgotten again (`settle.rs`).
            if !self.is_live(prompt.index) {
                continue;
            }
            if self.apply_retirement(prompt.index) {
                self.journal(
                    now,
                    Record::Retire {
                        index: prompt.index,
                        problem: prompt.problem_id.clone(),
                    },
                );
                info!(
                    problem_id = %prompt.problem_id,
                    pass_rate = history.rate(),
                    samples = history.count,
                    "problem retired"
                );
            }
        }
    }
}

/// The results whose problem was in the lease (others are ignored).
fn recorded_results(prompts: &[LeasedPrompt], results: &[ProblemResult]) -> Vec<RecordedResult> {
    results
        .iter()
        .filter(|result| {
            let known = prompts.iter().any(|p| p.problem_id == result.problem_id);
            if !known {
                debug!(problem_id = %result.problem_id, "result for a problem not in the lease ignored");
            }
            known
        })
        .map(|result| RecordedResult {
            problem: result.problem_id.clone(),
            rewards: result.rewards.clone(),
        })
        .collect()
}

mod durable;
mod image;
mod replay;
mod settle;

pub(crate) use image::StateImage;
#[cfg(test)]
pub(crate) use replay::tests as replay_tests;
pub(crate) use replay::Resume;

#[cfg(test)]
mod tests;
