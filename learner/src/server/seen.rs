//! The learner's deduplication memory: the group ids it has taken, bounded by the
//! coordinator's settled horizon.
//!
//! Why forgetting is safe. A group id is `lease-<seq>/<problem>`, `seq` the lease that first
//! issued it; the coordinator leases a prompt again only under its old group id, and only
//! while the group is *live* there: in an outstanding lease, waiting in the pool after an
//! expired lease or a learner restart, or delivered with no learner checkpoint holding it yet
//! (`coordinator/src/state/settle.rs`). With each publication the coordinator answers the
//! smallest `seq` of a live group, its horizon `H`, which never goes down. A group below `H`
//! is settled: a checkpoint holds its training (or it was refused or dropped for good and
//! reported so), or it was retired before it could be leased again.
//!
//! Copies of a settled group can still arrive: a push retried after a lost ack, a frozen or
//! slow actor finishing an expired lease (the lease check still knows recent leases, and the
//! lag bound k cannot help: an actor resumed after a long pause waits for fresh weights and
//! samples within the bound). So the learner does not merely forget the ids below `H`: it
//! refuses every group below `H`, under the same lock it inserts with, so a copy whose lease
//! was checked before `H` moved is refused too. Ids at or above `H` are kept exactly as
//! before. A learner restarted from a checkpoint starts from the ids its checkpoint holds
//! (`ledger::trained_up_to`), which covers every undurable group the coordinator leases
//! again; the first publication's horizon then trims them. An id that does not name a lease
//! sequence is kept for good (none comes from a coordinator).

use rollout::lease_ids::group_lease_seq;
use std::collections::HashSet;

/// Group ids taken, and the horizon below which every group is refused.
#[derive(Debug, Default)]
pub(crate) struct SeenGroups {
    ids: HashSet<String>,
    settled_below: u64,
}

/// What [`SeenGroups::insert`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Seen {
    /// Not seen before: taken.
    Fresh,
    /// Taken before.
    Duplicate,
    /// Below the horizon: settled at the coordinator (trained and checkpointed, or retired).
    Settled,
}

impl SeenGroups {
    /// Starts from the ids a checkpoint holds.
    pub(crate) fn new(ids: HashSet<String>) -> Self {
        Self {
            ids,
            settled_below: 0,
        }
    }

    /// Takes `group_id` unless it was taken before or is below the horizon.
    pub(crate) fn insert(&mut self, group_id: &str) -> Seen {
        if group_lease_seq(group_id).is_some_and(|seq| seq < self.settled_below) {
            return Seen::Settled;
        }
        if self.ids.insert(group_id.to_string()) {
            Seen::Fresh
        } else {
            Seen::Duplicate
        }
    }

    /// Gives back a group that was taken but will not be trained (it could not be queued, or
    /// it waited past the lag bound and its prompt is leased again under the same id).
    pub(crate) fn remove(&mut self, group_id: &str) {
        self.ids.remove(group_id);
    }

    /// Moves the horizon up to `settled_below` (never down) and forgets the ids below it.
    pub(crate) fn settle_below(&mut self, settled_below: u64) {
        if settled_below <= self.settled_below {
            return;
        }
        self.settled_below = settled_below;
        self.ids
            .retain(|id| group_lease_seq(id).is_none_or(|seq| seq >= settled_below));
    }

    /// Ids remembered.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.ids.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_below_the_horizon_are_forgotten_and_refused() {
        let mut seen = SeenGroups::default();
        assert_eq!(seen.insert("lease-1/p"), Seen::Fresh);
        assert_eq!(seen.insert("lease-1/p"), Seen::Duplicate);
        assert_eq!(seen.insert("lease-5/q"), Seen::Fresh);
        seen.settle_below(5);
        assert_eq!(seen.len(), 1, "lease-1/p forgotten");
        // A late copy of a forgotten group is still refused.
        assert_eq!(seen.insert("lease-1/p"), Seen::Settled);
        assert_eq!(seen.insert("lease-4/r"), Seen::Settled);
        assert_eq!(
            seen.insert("lease-5/q"),
            Seen::Duplicate,
            "kept at the horizon"
        );
        // The horizon never goes down.
        seen.settle_below(2);
        assert_eq!(seen.insert("lease-3/p"), Seen::Settled);
    }

    #[test]
    fn ids_without_a_lease_sequence_are_kept() {
        let mut seen = SeenGroups::new(["g-1".to_string()].into());
        seen.settle_below(u64::MAX);
        assert_eq!(seen.insert("g-1"), Seen::Duplicate);
        assert_eq!(seen.insert("lease-01/p"), Seen::Fresh, "not canonical");
        seen.remove("lease-01/p");
        assert_eq!(seen.len(), 1);
    }

    #[test]
    fn an_endless_run_keeps_only_the_live_window() {
        let mut seen = SeenGroups::default();
        for seq in 1..=100_000u64 {
            assert_eq!(seen.insert(&format!("lease-{seq}/p{seq}")), Seen::Fresh);
            // The coordinator's horizon trails the newest lease by the live window.
            seen.settle_below(seq.saturating_sub(64));
        }
        assert!(seen.len() <= 65, "{}", seen.len());
    }
}
