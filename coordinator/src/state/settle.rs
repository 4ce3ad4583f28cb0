//! Settled prompts: what the coordinator may forget, so that its memory stays flat on an
//! endless (unbounded procedural) task, and the horizon it gives the learner for the same end.
//!
//! A leased group is *live* while the coordinator may still lease it or wait for it: its
//! prompt is in an outstanding lease, waits in the pool to be leased again under its group id
//! (`reissue`, after an expiry or a learner restart), or was delivered and no learner
//! checkpoint holds it yet (`undurable`). Once none of these holds, the group is *settled*:
//! trained and checkpointed (or refused or dropped for good and reported so), or retired
//! before it could be leased again. Nothing brings a settled group back: new leases take
//! fresh prompts (an unbounded source's walk never comes back behind its cursor) under fresh
//! group ids, and only live groups are leased again.
//!
//! - On an unbounded source a settled prompt's pass-rate window and retirement marks are
//!   forgotten ([`State::forget_settled`], after each publication); a finite pool keeps
//!   them, since its walk comes round again. Late results for a forgotten prompt (a late
//!   completion of an expired lease) are swept again with the next publication and retire
//!   nothing (a settled prompt is leased no more anyway).
//! - Group ids are `lease-<seq>/<problem>`, `seq` the lease that first issued them, and only
//!   live ones are ever leased again; so every group with `seq` below the smallest live one
//!   is settled, for good ([`State::settled_below`]). The learner forgets the ids below it
//!   and refuses any group below it, which bounds its deduplication memory
//!   (`learner/src/server/seen.rs`).
//!
//! Everything here follows from journaled records through the same steps (publication,
//! completion, retirement), so a replay forgets exactly what the live run forgot.

use std::collections::HashSet;

use super::State;
use crate::leases::LeasedPrompt;

impl State {
    /// On an unbounded source, forgets the pass-rate windows and retirement marks of the
    /// settled prompts (a finite pool keeps them).
    pub(super) fn forget_settled(&mut self) {
        if self.pool.size().is_some() {
            return;
        }
        let mut problems: HashSet<&str> = HashSet::new();
        let mut indices: HashSet<u64> = HashSet::new();
        for prompt in self
            .leases
            .outstanding_prompts()
            .chain(self.undurable.values())
        {
            problems.insert(&prompt.problem_id);
            indices.insert(prompt.index);
        }
        for (&index, group_id) in &self.reissue {
            indices.insert(index);
            if let Some((_, problem)) = group_id.split_once('/') {
                problems.insert(problem);
            }
        }
        self.curriculum.retain(|id| problems.contains(id));
        self.pool.forget_settled(|index| indices.contains(&index));
    }

    /// Whether the prompt at `index` is live (leased, waiting to be leased again, or
    /// delivered and not yet held by a checkpoint). Always true on a finite pool, whose
    /// prompts all come round again.
    pub(super) fn is_live(&self, index: u64) -> bool {
        self.pool.size().is_some()
            || self.pool.is_leased(index)
            || self.reissue.contains_key(&index)
            || self.undurable.values().any(|p| p.index == index)
    }

    /// The smallest lease sequence number among live groups (the next lease's when none is
    /// live): every group id `lease-<seq>/...` with a smaller `seq` is settled for good. It
    /// never goes down.
    pub(crate) fn settled_below(&self) -> u64 {
        let reissued = self.reissue.values().map(String::as_str);
        let delivered = self.undurable.keys().map(String::as_str);
        let leased = self
            .leases
            .outstanding_prompts()
            .map(|p: &LeasedPrompt| p.group_id.as_str());
        reissued
            .chain(delivered)
            .chain(leased)
            .map(|g| rollout::lease_ids::group_lease_seq(g).unwrap_or(u64::MAX))
            .min()
            .unwrap_or(u64::MAX)
            .min(self.leases.next_seq())
    }

    /// A checkpoint holds `group_id` but it is not waiting in `undurable`: if it is live
    /// anyway (leased again after an expiry raced its delivery), its next accepted delivery
    /// is done at once instead of waiting for a report that will not come again.
    pub(super) fn note_durable_early(&mut self, group_id: &str) {
        let live = self.reissue.values().any(|g| g == group_id)
            || self
                .leases
                .outstanding_prompts()
                .any(|p| p.group_id == group_id);
        if live {
            self.durable_early.insert(group_id.to_string());
        }
    }
}

#[cfg(test)]
mod tests;
