//! What the simulated actors saw, gathered across all of them: every acknowledgement, every
//! completed lease, every failed RPC, every heartbeat and every lease latency. Lost and duplicated groups are
//! computed from these sets at the end, against the learner's own count of what it trained.

use proto::push_ack::Outcome;
use std::collections::HashSet;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

/// Errors kept verbatim for the report (the rest are only counted).
const KEPT_ERRORS: usize = 5;

/// Shared by every simulated actor; each call takes the lock briefly.
#[derive(Default)]
pub(super) struct Tally {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Group ids the learner acknowledged as accepted.
    accepted: HashSet<String>,
    /// Accepted acknowledgements for an id that was accepted before.
    accepted_twice: u64,
    /// Group ids of leases the coordinator accepted as completed.
    completed: Vec<String>,
    rejected: u64,
    rpc_errors: u64,
    completions_refused: u64,
    missing_acks: u64,
    /// Groups pushed a second time on purpose, and how many of those came back `Duplicate`.
    resent: u64,
    resent_acked_duplicate: u64,
    leases: u64,
    refusals: u64,
    heartbeats: u64,
    /// Round trips of Lease RPCs since the measured window began (all of them before).
    lease_ms: Vec<f64>,
    first_errors: Vec<String>,
}

/// Running counts, read at the edges of a measured window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Counts {
    /// Lease RPCs answered with prompts.
    pub leases: u64,
    /// Lease RPCs answered with a refusal (or failed).
    pub refusals: u64,
    pub heartbeats: u64,
    /// Groups of leases the coordinator accepted as completed.
    pub completed: u64,
    /// Distinct groups the learner accepted.
    pub accepted: u64,
}

impl std::ops::Sub for Counts {
    type Output = Counts;
    fn sub(self, earlier: Counts) -> Counts {
        Counts {
            leases: self.leases - earlier.leases,
            refusals: self.refusals - earlier.refusals,
            heartbeats: self.heartbeats - earlier.heartbeats,
            completed: self.completed - earlier.completed,
            accepted: self.accepted - earlier.accepted,
        }
    }
}

/// Lease round trips of the measured window: median and 99th percentile, in ms.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Latency {
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// The figures the report prints, computed once the run has drained.
#[derive(Debug, Clone, Default)]
pub(super) struct Summary {
    pub accepted: u64,
    pub accepted_twice: u64,
    pub completed: u64,
    /// Groups of completed leases that the learner never accepted.
    pub completed_not_accepted: u64,
    pub rejected: u64,
    pub rpc_errors: u64,
    pub completions_refused: u64,
    pub missing_acks: u64,
    pub resent: u64,
    pub resent_acked_duplicate: u64,
    pub leases: u64,
    pub refusals: u64,
    pub first_errors: Vec<String>,
}

impl Tally {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// One Lease RPC's round trip, granted or refused.
    pub fn lease_answered(&self, took: Duration, granted: bool) {
        let mut t = self.lock();
        t.lease_ms.push(took.as_secs_f64() * 1e3);
        if granted {
            t.leases += 1;
        } else {
            t.refusals += 1;
        }
    }

    /// One acknowledgement; `resend` says the group was pushed a second time on purpose.
    pub fn ack(&self, ack: &proto::PushAck, resend: bool) {
        let mut t = self.lock();
        if resend {
            t.resent += 1;
        }
        match Outcome::try_from(ack.outcome) {
            Ok(Outcome::Accepted) => {
                if !t.accepted.insert(ack.group_id.clone()) {
                    t.accepted_twice += 1;
                }
            }
            Ok(Outcome::Duplicate) if resend => t.resent_acked_duplicate += 1,
            // A first push answered `Duplicate` was never queued: the set difference at the
            // end counts it as lost if its lease completed.
            Ok(Outcome::Duplicate) => {}
            Ok(Outcome::Rejected | Outcome::StaleLineage | Outcome::Unspecified) | Err(_) => {
                t.rejected += 1;
                keep(
                    &mut t.first_errors,
                    format!("group {} rejected: {}", ack.group_id, ack.reason),
                );
            }
        }
    }

    /// The stream ended with fewer acknowledgements than groups pushed.
    pub fn missing_acks(&self, n: u64) {
        let mut t = self.lock();
        t.missing_acks += n;
        keep(
            &mut t.first_errors,
            format!("{n} groups were never acknowledged"),
        );
    }

    /// The coordinator accepted the completion of a lease holding these groups.
    pub fn completed(&self, group_ids: impl IntoIterator<Item = String>) {
        self.lock().completed.extend(group_ids);
    }

    /// The coordinator answered a completion with `accepted: false`.
    pub fn completion_refused(&self, lease_id: &str) {
        let mut t = self.lock();
        t.completions_refused += 1;
        keep(
            &mut t.first_errors,
            format!("completion of {lease_id} refused"),
        );
    }

    /// An RPC failed.
    pub fn rpc_error(&self, what: &str, status: &tonic::Status) {
        let mut t = self.lock();
        t.rpc_errors += 1;
        keep(
            &mut t.first_errors,
            format!("{what}: {:?} {}", status.code(), status.message()),
        );
    }

    /// A failure that is not a gRPC status (a connection that never opened).
    pub fn other_error(&self, what: String) {
        let mut t = self.lock();
        t.rpc_errors += 1;
        keep(&mut t.first_errors, what);
    }

    /// One heartbeat answered.
    pub fn heartbeat(&self) {
        self.lock().heartbeats += 1;
    }

    /// Acceptances so far: a group accepted again (after the learner dropped it past the lag
    /// bound and its prompt was leased again) counts each time, as the learner counts it.
    pub fn accepted(&self) -> u64 {
        let t = self.lock();
        t.accepted.len() as u64 + t.accepted_twice
    }

    /// The running counts now.
    pub fn counts(&self) -> Counts {
        let t = self.lock();
        Counts {
            leases: t.leases,
            refusals: t.refusals,
            heartbeats: t.heartbeats,
            completed: t.completed.len() as u64,
            accepted: t.accepted.len() as u64,
        }
    }

    /// Forgets the lease round trips so far: the latency percentiles cover the measured
    /// window, not the warm-up.
    pub fn start_window(&self) {
        self.lock().lease_ms.clear();
    }

    /// Percentiles of the lease round trips since `start_window`.
    pub fn latency(&self) -> Latency {
        let mut ms = self.lock().lease_ms.clone();
        ms.sort_by(f64::total_cmp);
        Latency {
            p50_ms: percentile(&ms, 0.50),
            p99_ms: percentile(&ms, 0.99),
        }
    }

    /// Everything counted, with the set difference.
    pub fn summary(&self) -> Summary {
        let t = self.lock();
        Summary {
            accepted: t.accepted.len() as u64,
            accepted_twice: t.accepted_twice,
            completed: t.completed.len() as u64,
            completed_not_accepted: t
                .completed
                .iter()
                .filter(|id| !t.accepted.contains(*id))
                .count() as u64,
            rejected: t.rejected,
            rpc_errors: t.rpc_errors,
            completions_refused: t.completions_refused,
            missing_acks: t.missing_acks,
            resent: t.resent,
            resent_acked_duplicate: t.resent_acked_duplicate,
            leases: t.leases,
            refusals: t.refusals,
            first_errors: t.first_errors.clone(),
        }
    }
}

fn keep(errors: &mut Vec<String>, error: String) {
    if errors.len() < KEPT_ERRORS {
        errors.push(error);
    }
}

/// The `q` quantile of sorted values (nearest rank); 0 for none.
pub(super) fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ack(id: &str, outcome: Outcome) -> proto::PushAck {
        proto::PushAck {
            group_id: id.into(),
            outcome: outcome as i32,
            reason: String::new(),
            learner_version: 0,
        }
    }

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), 50.0);
        assert_eq!(percentile(&v, 0.99), 99.0);
        assert_eq!(percentile(&[3.0], 0.99), 3.0);
        assert_eq!(percentile(&[], 0.5), 0.0);
    }

    #[test]
    fn lost_and_duplicated_groups_are_counted() {
        let t = Tally::default();
        t.ack(&ack("a", Outcome::Accepted), false);
        t.ack(&ack("a", Outcome::Duplicate), true);
        t.ack(&ack("b", Outcome::Duplicate), false);
        t.ack(&ack("c", Outcome::Accepted), false);
        t.ack(&ack("c", Outcome::Accepted), true);
        t.completed(["a", "b", "c"].map(String::from));
        let s = t.summary();
        assert_eq!((s.accepted, s.accepted_twice), (2, 1));
        assert_eq!(
            s.completed_not_accepted, 1,
            "b completed but never accepted"
        );
        assert_eq!((s.resent, s.resent_acked_duplicate), (2, 1));
        assert_eq!(s.rejected, 0);
        let c = t.counts();
        assert_eq!((c.accepted, c.completed), (2, 3));
    }

    #[test]
    fn window_counts_and_latency_start_at_the_window() {
        let t = Tally::default();
        t.lease_answered(Duration::from_millis(100), true);
        t.heartbeat();
        let before = t.counts();
        t.start_window();
        for ms in 1..=100 {
            t.lease_answered(Duration::from_millis(ms), ms % 10 != 0);
        }
        t.heartbeat();
        t.heartbeat();
        let d = t.counts() - before;
        assert_eq!((d.leases, d.refusals, d.heartbeats), (90, 10, 2));
        let l = t.latency();
        assert!((l.p50_ms - 50.0).abs() < 1e-6, "{l:?}");
        assert!(
            (l.p99_ms - 99.0).abs() < 1e-6,
            "the warm-up's 100 ms is forgotten: {l:?}"
        );
    }
}
