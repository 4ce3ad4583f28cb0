//! The lease book: the leases issued, their prompts, holder and deadline, and what became of
//! them (outstanding, completed or expired). Outstanding leases are kept until they end; the
//! last [`FINISHED_KEPT`] finished ones are kept after that (so the learner can check a late
//! group's lease and a repeated completion is recognised), older ones are forgotten, so the
//! book's memory stays bounded however long a run goes.

use rollout::lease_ids::{lease_id, lease_seq};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

use tokio::time::Instant;

/// A prompt inside a lease: the pool index (to release or give it back), the problem id (to
/// check groups against) and the id its group gets (kept if the prompt is leased again).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct LeasedPrompt {
    pub index: u64,
    pub problem_id: String,
    pub group_id: String,
}

/// Where a lease stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LeaseState {
    /// Issued, neither completed nor expired yet.
    Outstanding { deadline: Instant },
    /// Completed by its holder before the deadline.
    Completed,
    /// Not completed in time (or its holder died); its prompts went back to the pool.
    Expired,
}

/// One issued lease.
#[derive(Debug, Clone)]
pub(crate) struct Lease {
    pub member_id: String,
    pub prompts: Vec<LeasedPrompt>,
    pub state: LeaseState,
}

impl Lease {
    /// Whether `problem_id` was among the lease's prompts.
    pub(crate) fn contains(&self, problem_id: &str) -> bool {
        self.prompts.iter().any(|p| p.problem_id == problem_id)
    }

    /// The pool indices of the lease's prompts.
    #[cfg(test)]
    pub(crate) fn indices(&self) -> impl Iterator<Item = u64> + '_ {
        self.prompts.iter().map(|p| p.index)
    }
}

/// Finished (completed or expired) leases remembered after they end. A group arriving for a
/// lease older than that is refused as of an unknown lease; its prompt was completed, or
/// leased again under the same group id, long before.
pub(crate) const FINISHED_KEPT: usize = 4096;

/// One lease as a snapshot keeps it: an outstanding one's deadline on the wall clock.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct SavedLease {
    seq: u64,
    member: String,
    prompts: Vec<LeasedPrompt>,
    /// None once the lease is finished.
    deadline_ms: Option<u64>,
    expired: bool,
}

/// The lease book as a snapshot keeps it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct SavedLeases {
    next_seq: u64,
    leases: Vec<SavedLease>,
    finished: Vec<u64>,
    expired: u64,
}

/// The leases, by sequence number (`lease-<seq>`), in issue order.
#[derive(Debug, Default)]
pub(crate) struct LeaseBook {
    next_seq: u64,
    leases: BTreeMap<u64, Lease>,
    outstanding: BTreeSet<u64>,
    /// Finished leases still remembered, oldest first.
    finished: VecDeque<u64>,
    expired: u64,
}

impl LeaseBook {
    /// Records a new outstanding lease and returns its id.
    pub(crate) fn issue(
        &mut self,
        member_id: &str,
        prompts: Vec<LeasedPrompt>,
        deadline: Instant,
    ) -> String {
        self.next_seq += 1;
        let seq = self.next_seq;
        self.leases.insert(
            seq,
            Lease {
                member_id: member_id.to_string(),
                prompts,
                state: LeaseState::Outstanding { deadline },
            },
        );
        self.outstanding.insert(seq);
        lease_id(seq)
    }

    /// The id the next `issue` will return.
    pub(crate) fn next_id(&self) -> String {
        lease_id(self.next_seq + 1)
    }

    /// Replays the issue of `lease_id`, which must be the next id in sequence.
    pub(crate) fn replay_issue(
        &mut self,
        lease_id: &str,
        member_id: &str,
        prompts: Vec<LeasedPrompt>,
        deadline: Instant,
    ) -> Result<(), String> {
        if lease_id != self.next_id() {
            return Err(format!(
                "{lease_id} granted where {} was expected next",
                self.next_id()
            ));
        }
        self.issue(member_id, prompts, deadline);
        Ok(())
    }

    /// Moves an outstanding lease's deadline (after a restart); false if it is not outstanding.
    pub(crate) fn set_deadline(&mut self, lease_id: &str, deadline: Instant) -> bool {
        let Some(seq) = lease_seq(lease_id).filter(|s| self.outstanding.contains(s)) else {
            return false;
        };
        match self.leases.get_mut(&seq) {
            Some(lease) => {
                lease.state = LeaseState::Outstanding { deadline };
                true
            }
            None => false,
        }
    }

    /// The prompts of every outstanding lease.
    pub(crate) fn outstanding_prompts(&self) -> impl Iterator<Item = &LeasedPrompt> + '_ {
        self.outstanding
            .iter()
            .filter_map(|seq| self.leases.get(seq))
            .flat_map(|lease| lease.prompts.iter())
    }

    /// The sequence number the next `issue` takes.
    pub(crate) fn next_seq(&self) -> u64 {
        self.next_seq + 1
    }

    /// Ids of all outstanding leases, oldest first.
    pub(crate) fn outstanding_ids(&self) -> Vec<String> {
        self.outstanding_where(|_| true)
    }

    /// Every lease in issue order without deadlines, to compare a replayed book with the live
    /// one.
    #[cfg(test)]
    pub(crate) fn describe(&self) -> String {
        let mut out = format!("next {} expired {}", self.next_seq, self.expired);
        for (seq, lease) in &self.leases {
            let state = match lease.state {
                LeaseState::Outstanding { .. } => "outstanding",
                LeaseState::Completed => "completed",
                LeaseState::Expired => "expired",
            };
            out.push_str(&format!(
                "\n{seq} {} {state} {:?}",
                lease.member_id, lease.prompts
            ));
        }
        out
    }

    /// The lease with this id, whatever its state.
    pub(crate) fn get(&self, lease_id: &str) -> Option<&Lease> {
        self.leases.get(&lease_seq(lease_id)?)
    }

    /// Marks an outstanding lease completed; returns it, or None if it is not outstanding.
    pub(crate) fn complete(&mut self, lease_id: &str) -> Option<&Lease> {
        let seq = self.finish(lease_id, LeaseState::Completed)?;
        self.leases.get(&seq)
    }

    /// Marks an outstanding lease expired and counts it; returns it, or None if it is not
    /// outstanding.
    pub(crate) fn expire(&mut self, lease_id: &str) -> Option<&Lease> {
        let seq = self.finish(lease_id, LeaseState::Expired)?;
        self.expired += 1;
        self.leases.get(&seq)
    }

    /// Ids of outstanding leases whose deadline is at or before `now`, oldest first.
    pub(crate) fn due(&self, now: Instant) -> Vec<String> {
        self.outstanding_where(
            |lease| matches!(lease.state, LeaseState::Outstanding { deadline } if deadline <= now),
        )
    }

    /// Ids of the outstanding leases held by `member_id`, oldest first.
    pub(crate) fn held_by(&self, member_id: &str) -> Vec<String> {
        self.outstanding_where(|lease| lease.member_id == member_id)
    }

    /// Leases neither completed nor expired.
    pub(crate) fn outstanding(&self) -> u64 {
        self.outstanding.len() as u64
    }

    /// Leases that expired so far.
    pub(crate) fn expired(&self) -> u64 {
        self.expired
    }

    /// Every remembered lease, for a snapshot; `wall_ms` puts a deadline on the wall clock.
    pub(crate) fn save(&self, wall_ms: impl Fn(Instant) -> u64) -> SavedLeases {
        let leases = self
            .leases
            .iter()
            .map(|(&seq, lease)| SavedLease {
                seq,
                member: lease.member_id.clone(),
                prompts: lease.prompts.clone(),
                deadline_ms: match lease.state {
                    LeaseState::Outstanding { deadline } => Some(wall_ms(deadline)),
                    _ => None,
                },
                expired: lease.state == LeaseState::Expired,
            })
            .collect();
        SavedLeases {
            next_seq: self.next_seq,
            leases,
            finished: self.finished.iter().copied().collect(),
            expired: self.expired,
        }
    }

    /// The book a snapshot kept, every outstanding lease due at `now` (the caller re-bases
    /// them), and each one's wall-clock deadline by id.
    pub(crate) fn restore(
        saved: SavedLeases,
        now: Instant,
    ) -> Result<(Self, Vec<(String, u64)>), String> {
        let mut book = LeaseBook {
            next_seq: saved.next_seq,
            expired: saved.expired,
            ..LeaseBook::default()
        };
        let mut deadlines = Vec::new();
        for lease in saved.leases {
            if lease.seq == 0 || lease.seq > saved.next_seq {
                return Err(format!(
                    "lease {} in a book whose last lease is {}",
                    lease.seq, saved.next_seq
                ));
            }
            let state = match (lease.deadline_ms, lease.expired) {
                (Some(deadline_ms), _) => {
                    book.outstanding.insert(lease.seq);
                    deadlines.push((lease_id(lease.seq), deadline_ms));
                    LeaseState::Outstanding { deadline: now }
                }
                (None, true) => LeaseState::Expired,
                (None, false) => LeaseState::Completed,
            };
            let lease_state = Lease {
                member_id: lease.member,
                prompts: lease.prompts,
                state,
            };
            book.leases.insert(lease.seq, lease_state);
        }
        for seq in saved.finished {
            match book.leases.get(&seq) {
                Some(lease) if !matches!(lease.state, LeaseState::Outstanding { .. }) => {
                    book.finished.push_back(seq)
                }
                _ => return Err(format!("lease {seq} listed finished but not kept finished")),
            }
        }
        Ok((book, deadlines))
    }

    /// Moves an outstanding lease to `end`; returns its sequence number, or None if it is not
    /// outstanding.
    fn finish(&mut self, lease_id: &str, end: LeaseState) -> Option<u64> {
        let seq = lease_seq(lease_id)?;
        if !self.outstanding.remove(&seq) {
            return None;
        }
        self.leases.get_mut(&seq)?.state = end;
        self.finished.push_back(seq);
        if self.finished.len() > FINISHED_KEPT {
            if let Some(oldest) = self.finished.pop_front() {
                self.leases.remove(&oldest);
            }
        }
        Some(seq)
    }

    fn outstanding_where(&self, keep: impl Fn(&Lease) -> bool) -> Vec<String> {
        self.outstanding
            .iter()
            .filter(|seq| self.leases.get(seq).is_some_and(&keep))
            .map(|&seq| lease_id(seq))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn finished_leases_are_forgotten_past_the_limit_outstanding_ones_never() {
        let now = Instant::now();
        let mut book = LeaseBook::default();
        let held = book.issue("a", Vec::new(), now);
        let ids: Vec<String> = (0..FINISHED_KEPT + 10)
            .map(|_| book.issue("b", Vec::new(), now))
            .collect();
        for id in &ids {
            book.complete(id).unwrap();
        }
        assert_eq!(
            book.leases.len(),
            FINISHED_KEPT + 1,
            "kept + the outstanding one"
        );
        assert!(
            book.get(&ids[9]).is_none(),
            "the oldest finished are forgotten"
        );
        assert!(book.get(&ids[10]).is_some());
        assert!(
            book.get(&held).is_some(),
            "an outstanding lease is never forgotten"
        );
        assert_eq!(book.outstanding_ids(), vec![held.clone()]);
        book.expire(&held).unwrap();
        assert_eq!(book.expired(), 1);
    }

    fn prompts(indices: &[u64]) -> Vec<LeasedPrompt> {
        indices
            .iter()
            .map(|&index| LeasedPrompt {
                index,
                problem_id: format!("p/{index}"),
                group_id: format!("g/{index}"),
            })
            .collect()
    }

    #[test]
    fn ids_are_unique_and_only_canonical_ids_resolve() {
        let mut book = LeaseBook::default();
        let now = Instant::now();
        let a = book.issue("actor-1", prompts(&[0]), now);
        let b = book.issue("actor-1", prompts(&[1]), now);
        assert_eq!((a.as_str(), b.as_str()), ("lease-1", "lease-2"));
        assert!(book.get("lease-1").is_some());
        for bad in ["lease-01", "lease-+1", "lease-", "1", "lease-3", ""] {
            assert!(book.get(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn a_lease_finishes_once() {
        let mut book = LeaseBook::default();
        let now = Instant::now();
        let id = book.issue("actor-1", prompts(&[0, 1]), now);
        assert_eq!(book.outstanding(), 1);
        assert_eq!(
            book.complete(&id).unwrap().indices().collect::<Vec<_>>(),
            [0, 1]
        );
        assert!(book.complete(&id).is_none());
        assert!(book.expire(&id).is_none());
        assert_eq!((book.outstanding(), book.expired()), (0, 0));
        assert_eq!(book.get(&id).unwrap().state, LeaseState::Completed);
        assert!(book.get(&id).unwrap().contains("p/1"));
        assert!(!book.get(&id).unwrap().contains("p/2"));
    }

    #[test]
    fn due_and_held_by_list_outstanding_leases_in_issue_order() {
        let mut book = LeaseBook::default();
        let now = Instant::now();
        let later = now + Duration::from_secs(10);
        let first = book.issue("actor-1", prompts(&[0]), now);
        let second = book.issue("actor-2", prompts(&[1]), later);
        let third = book.issue("actor-1", prompts(&[2]), now);
        assert_eq!(book.due(now), [first.clone(), third.clone()]);
        assert_eq!(book.due(later), [first.clone(), second, third.clone()]);
        book.expire(&first);
        assert_eq!(book.held_by("actor-1"), [third]);
        assert_eq!(book.expired(), 1);
    }
}
