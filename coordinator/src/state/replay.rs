//! Rebuilding the state from the journal after a restart: each record's effect, applied in
//! order through the same steps the live operations use.
//!
//! Outstanding leases stay outstanding with the time they had left when the last record was
//! written: the lease clock stops while the coordinator is down, so an actor is not blamed for
//! an outage. Members are restored as heard from at the restart, so each has a full
//! `actor_timeout` to heartbeat again before it is declared dead (and its leases returned).

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

use super::State;
use crate::domain::MemberRole;
use crate::leases::{LeaseState, LeasedPrompt};
use crate::record::{Entry, Record};

/// Where a replay starts: the wall-clock deadlines of the leases already outstanding and the
/// time of the last record already applied (both empty for a replay from the start).
#[derive(Debug, Default)]
pub(crate) struct Resume {
    pub deadlines: HashMap<String, u64>,
    pub last_t: u64,
}

/// What a replay restored.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Replayed {
    pub records: usize,
    pub outstanding_leases: u64,
    pub learner_version: u64,
}

impl State {
    /// Applies `entries` (the journal after its header, with line numbers) to this fresh
    /// state at `now`; on a record that does not fit, the line and what is wrong.
    #[cfg(test)]
    pub(crate) fn replay(
        &mut self,
        entries: Vec<(usize, Entry)>,
        now: Instant,
    ) -> Result<Replayed, (usize, String)> {
        self.replay_from(Resume::default(), entries, now)
    }

    /// Applies `entries` to this state as `resume` left it (a fresh state, or one a snapshot
    /// restored); see [`replay`](Self::replay).
    pub(crate) fn replay_from(
        &mut self,
        resume: Resume,
        entries: Vec<(usize, Entry)>,
        now: Instant,
    ) -> Result<Replayed, (usize, String)> {
        let records = entries.len();
        let Resume {
            mut deadlines,
            mut last_t,
        } = resume;
        for (line, entry) in entries {
            last_t = last_t.max(entry.t);
            self.apply_record(entry.record, now, &mut deadlines)
                .map_err(|reason| (line, reason))?;
        }
        for lease_id in self.leases.outstanding_ids() {
            let deadline_ms = deadlines.get(&lease_id).copied().unwrap_or(last_t);
            let left = Duration::from_millis(deadline_ms.saturating_sub(last_t));
            self.leases.set_deadline(&lease_id, now + left);
        }
        Ok(Replayed {
            records,
            outstanding_leases: self.leases.outstanding(),
            learner_version: self.learner_version,
        })
    }

    fn apply_record(
        &mut self,
        record: Record,
        now: Instant,
        deadlines: &mut HashMap<String, u64>,
    ) -> Result<(), String> {
        match record {
            Record::Header { .. } => return Err("a second header".to_string()),
            Record::Register {
                member,
                role,
                name,
                addr,
            } => {
                let role =
                    MemberRole::parse(&role).ok_or_else(|| format!("unknown role {role:?}"))?;
                self.registry.restore(&member, role, &name, &addr, now)?;
                if role == MemberRole::Learner {
                    self.learner_joined();
                }
            }
            Record::Dead { member } => {
                if self.registry.declare_dead(&member).is_none() {
                    return Err(format!("{member} declared dead but not a member"));
                }
            }
            Record::Grant {
                lease,
                member,
                prompts,
                cursor,
                deadline_ms,
            } => {
                let indices: Vec<u64> = prompts.iter().map(|p| p.index).collect();
                self.pool.replay_take(&indices, cursor);
                let leased = prompts
                    .into_iter()
                    .map(|p| {
                        self.reissue.remove(&p.index);
                        LeasedPrompt {
                            index: p.index,
                            problem_id: p.problem,
                            group_id: p.group,
                        }
                    })
                    .collect();
                self.leases.replay_issue(&lease, &member, leased, now)?;
                deadlines.insert(lease, deadline_ms);
            }
            Record::Complete {
                lease,
                accepted,
                results,
            } => {
                let Some(state) = self.leases.get(&lease).map(|l| l.state) else {
                    return Err(format!("{lease} completed but never granted"));
                };
                let outstanding = matches!(state, LeaseState::Outstanding { .. });
                if accepted != outstanding {
                    return Err(format!(
                        "{lease} completed (accepted: {accepted}) while {state:?}"
                    ));
                }
                // What it retires comes as the journal's own retire records.
                self.apply_completion(&lease, accepted, &results);
            }
            Record::Expire { lease } => {
                if !self.apply_expiry(&lease) {
                    return Err(format!("{lease} expired but not outstanding"));
                }
            }
            Record::Retire { index, .. } => {
                self.apply_retirement(index);
            }
            publication @ Record::Publish { .. } => self.apply_publication(&publication),
        }
        Ok(())
    }

    /// Everything a replay must reproduce, in a canonical order (deadlines and heartbeat times
    /// aside: they are re-based at the restart).
    #[cfg(test)]
    pub(crate) fn describe(&self) -> String {
        let mut reissue: Vec<_> = self.reissue.iter().collect();
        reissue.sort();
        format!(
            "pool {}\ncurriculum {}\nleases {}\nregistry {}\nversion {} any {} done {} completed {}\nreissue {reissue:?}\nundurable {:?}\nstraddling {:?} durable early {:?} requeue early {:?} learner seen {}",
            self.pool.describe(),
            self.curriculum.describe(),
            self.leases.describe(),
            self.registry.describe(),
            self.learner_version,
            self.accept_any_version,
            self.done,
            self.prompts_completed,
            self.undurable.keys().collect::<Vec<_>>(),
            self.straddling,
            self.durable_early,
            self.requeue_early,
            self.learner_seen,
        )
    }
}

#[cfg(test)]
pub(crate) mod tests;
