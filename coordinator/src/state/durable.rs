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
        for prompt in prompts {
            // A checkpoint already holds it (`settle.rs`): done.
            if !self.durable_early.remove(&prompt.group_id) {
                self.undurable.insert(prompt.group_id.clone(), prompt);
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
        // Oldest lease first (`lease-<seq>`), so the order does not depend on id spelling.
        let mut prompts: Vec<LeasedPrompt> = undurable.into_values().collect();
        prompts.sort_by_key(|p| (group_lease_seq(&p.group_id).unwrap_or(u64::MAX), p.index));
        // Not leased any more (their leases completed): queued without touching what is leased.
        self.pool.requeue(prompts.iter().map(|p| p.index));
        for prompt in prompts {
            if !self.pool.is_retired(prompt.index) {
                self.reissue.insert(prompt.index, prompt.group_id);
            }
        }
        self.straddling = straddling.into_iter().collect();
    }

    /// Prompts completed but not yet held by a learner checkpoint.
    #[cfg(test)]
    pub(crate) fn undurable_prompts(&self) -> usize {
        self.undurable.len()
    }
}
