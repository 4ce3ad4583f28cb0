//! Exactly-once delivery across learner restarts: a completed prompt counts as done only once
//! a learner checkpoint holds its group.
//!
//! An accepted completion moves the lease's prompts to `undurable`; the learner names the
//! groups a checkpoint now holds (`PublishVersionRequest.durable_group_ids`), which are then
//! forgotten. When a learner registers again (it restarted from its latest checkpoint), every
//! undurable prompt goes back to the pool, to be leased first under its group id: the new
//! learner refuses a group its checkpoint was trained on as a duplicate and trains the rest.
//! Leases outstanding at that moment may hold groups the dead learner had queued: they are
//! marked `straddling`, and their prompts go back to the pool when they complete.
//!
//! A group the learner took but dropped untrained (it waited in the learner's queue past the
//! lag bound, say behind a restart) is named in `PublishVersionRequest.requeue_group_ids`:
//! its prompt goes back to the pool at once, to be leased first under its group id, which
//! the learner has forgotten. A drop reported before its lease completed (the learner's queue
//! can be quicker than the actor's completion) is kept in `requeue_early` and applied when
//! the lease completes; an expiry puts the prompt back anyway.
//!
//! The rewards of the first delivery stay in the pass rates (the samples were really drawn);
//! only the training is done again. A prompt put back is part of the epoch it was leased in:
//! the pool is not exhausted while it waits. All of it follows from journaled records
//! (complete, register, publish), so a replay rebuilds it.

use rollout::lease_ids::group_lease_seq;
use tracing::info;

use super::State;
use crate::leases::LeasedPrompt;

impl State {
    /// An accepted lease's `prompts`: kept until a checkpoint holds their groups, or put back
    /// at once if the lease straddled a learner restart.
    pub(super) fn settle_completed(&mut self, lease_id: &str, prompts: Vec<LeasedPrompt>) {
        let indices: Vec<u64> = prompts.iter().map(|p| p.index).collect();
        self.pool.release(indices);
        if self.straddling.remove(lease_id) {
            self.return_prompts(prompts);
            return;
        }
        let mut dropped = Vec::new();
        for prompt in prompts {
            if self.requeue_early.remove(&prompt.group_id) {
                dropped.push(prompt);
            } else if !self.durable_early.remove(&prompt.group_id) {
                // Unless a checkpoint already holds it (`settle.rs`): then done.
                self.undurable.insert(prompt.group_id.clone(), prompt);
            }
        }
        self.lease_again(dropped);
    }

    /// The learner dropped these groups untrained: their prompts are leased again first.
    /// A group still in an outstanding lease waits for its completion; one that is neither
    /// delivered nor leased (a report repeated after its prompt went back) is left alone.
    pub(super) fn requeue_dropped(&mut self, group_ids: &[String]) {
        let mut dropped = Vec::new();
        for group_id in group_ids {
            if let Some(prompt) = self.undurable.remove(group_id) {
                dropped.push(prompt);
            } else if self
                .leases
                .outstanding_prompts()
                .any(|p| &p.group_id == group_id)
            {
                self.requeue_early.insert(group_id.clone());
            }
        }
        if !dropped.is_empty() {
            info!(
                groups = dropped.len(),
                "the learner dropped groups past the lag bound: their prompts are leased again"
            );
        }
        self.lease_again(dropped);
    }

    /// Delivered prompts (their leases completed) back in the pool, oldest lease first, to be
    /// leased again under their group ids (retired ones are dropped).
    fn lease_again(&mut self, mut prompts: Vec<LeasedPrompt>) {
        // Oldest lease first (`lease-<seq>`), so the order does not depend on id spelling.
        prompts.sort_by_key(|p| (group_lease_seq(&p.group_id).unwrap_or(u64::MAX), p.index));
        // Not leased any more: queued without touching what is leased.
        self.pool.requeue(prompts.iter().map(|p| p.index));
        for prompt in prompts {
            if !self.pool.is_retired(prompt.index) {
                self.reissue.insert(prompt.index, prompt.group_id);
            }
        }
    }

    /// Forgets the prompts of groups a learner checkpoint now holds.
    pub(super) fn forget_durable(&mut self, group_ids: &[String]) {
        for group_id in group_ids {
            if self.undurable.remove(group_id).is_none() {
                self.note_durable_early(group_id);
            }
        }
    }

    /// A learner registered after another: whatever no checkpoint holds is trained again.
    pub(super) fn learner_restarted(&mut self) {
        let undurable = std::mem::take(&mut self.undurable);
        let straddling = self.leases.outstanding_ids();
        if !undurable.is_empty() || !straddling.is_empty() {
            info!(
                prompts = undurable.len(),
                leases_outstanding = straddling.len(),
                "a learner restarted: the prompts delivered after its checkpoint are leased again"
            );
        }
        self.lease_again(undurable.into_values().collect());
        // Every outstanding lease's prompts go back when it completes: early drops included.
        self.requeue_early.clear();
        self.straddling = straddling.into_iter().collect();
    }

    /// Prompts completed but not yet held by a learner checkpoint.
    #[cfg(test)]
    pub(crate) fn undurable_prompts(&self) -> usize {
        self.undurable.len()
    }
}
