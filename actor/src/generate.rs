//! Generating one lease: every prompt G times in one batch through `rollout`'s sampling of
//! groups, with a step hook ([`Follow`] over the weight slot) that swaps to newer weights
//! between decode steps and never lets a step run with weights more than `max_lag` versions
//! behind the learner.

use crate::error::ActorError;
use crate::subscriber::Versioned;
use policy::{Policy, SamplingParams, StepHook, Tokenizer};
use rollout::{GroupBatch, RolloutGroup};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tasks::{Problem, Verifier};
use tokio::sync::watch;

/// What the decode loop needs to follow the learner.
pub struct Follow {
    pub slot: watch::Receiver<Option<Versioned>>,
    /// The learner's version as last heard (heartbeats, weight headers).
    pub learner_version: Arc<AtomicU64>,
    pub max_lag: u64,
    pub stop: Arc<AtomicBool>,
    pub handle: tokio::runtime::Handle,
}

/// Generation statistics of one lease.
#[derive(Debug, Default, Clone, Copy)]
pub struct LeaseStats {
    pub swaps: u64,
    pub waited: Duration,
}

/// Samples `group_size` completions for each problem, the group of `problems[i]` under
/// `group_ids[i]` (the coordinator's: a prompt leased again keeps its id, so the learner
/// trains on it once); `None` if stopped midway.
#[allow(clippy::too_many_arguments)]
pub fn generate_lease(
    problems: &[Problem],
    tok: &Tokenizer,
    verifier: &Arc<dyn Verifier>,
    group_size: usize,
    params: SamplingParams,
    group_ids: &[String],
    follow: &mut Follow,
) -> Result<Option<(Vec<RolloutGroup>, LeaseStats)>, ActorError> {
    let current = follow
        .slot
        .borrow()
        .clone()
        .expect("weights before generating");
    let mut hook = LeaseHook {
        follow,
        current,
        stats: LeaseStats::default(),
    };
    let batch = GroupBatch {
        problems,
        ids: group_ids,
        group_size,
    };
    let groups = rollout::sample_groups_with(&mut hook, tok, verifier, batch, &params)?;
    Ok(groups.map(|g| (g, hook.stats)))
}

/// The actor's step hook: the newest complete weights before every step, after waiting for
/// weights within `max_lag` of the learner.
struct LeaseHook<'a> {
    follow: &'a mut Follow,
    current: Versioned,
    stats: LeaseStats,
}

impl LeaseHook<'_> {
    /// In-flight update: takes the newest complete version the slot holds.
    fn take_newer(&mut self) {
        let newer = self.follow.slot.borrow().clone();
        if let Some(newer) = newer {
            if newer.0 > self.current.0 {
                self.current = newer;
                self.stats.swaps += 1;
            }
        }
    }

    fn stopped(&self) -> bool {
        self.follow.stop.load(Ordering::Relaxed)
    }

    /// Lag gate: waits rather than decode with weights older than learner - k; false if
    /// stopped while waiting.
    fn wait_within_lag(&mut self) -> bool {
        let waited = Instant::now();
        while self.follow.learner_version.load(Ordering::Relaxed)
            > self.current.0 + self.follow.max_lag
        {
            if self.stopped() {
                return false;
            }
            let slot = &mut self.follow.slot;
            let _ = self.follow.handle.block_on(async {
                tokio::time::timeout(Duration::from_millis(200), slot.changed()).await
            });
            self.take_newer();
        }
        self.stats.waited += waited.elapsed();
        true
    }
}

impl StepHook for LeaseHook<'_> {
    fn weights(&mut self) -> Option<(&Policy, u64)> {
        self.take_newer();
        if !self.wait_within_lag() || self.stopped() {
            return None;
        }
        Some((&self.current.1, self.current.0))
    }
}
