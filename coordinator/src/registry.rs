//! The member registry: who has joined the run, when each was last heard from, the version each
//! actor holds, and where the learner serves.
//!
//! Only actors are declared dead for silence: the learner talks to the coordinator through
//! calls that carry no member id, so its silence says nothing.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use tokio::time::Instant;

use crate::domain::{ActorSnapshot, EnvTotals, MemberRole};

/// Dead actors still shown (alive = false) in the status, most recent last.
const DEAD_SHOWN: usize = 64;

/// One registered member.
#[derive(Debug, Clone)]
pub(crate) struct Member {
    pub role: MemberRole,
    pub name: String,
    /// The version of the weights it last said it holds.
    pub version: u64,
    pub last_heard: Instant,
    /// Its environment figures as of its last heartbeat.
    pub env: EnvTotals,
    /// Registration order, for a stable status listing.
    seq: u64,
}

/// A member as a snapshot keeps it (heard from, version and figures are not journaled: a
/// restore, like a replay, starts them afresh).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct SavedMember {
    id: String,
    role: String,
    name: String,
    seq: u64,
}

/// The registry as a snapshot keeps it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct SavedRegistry {
    members: Vec<SavedMember>,
    dead: Vec<SavedMember>,
    next_seq: u64,
    next_actor: u64,
    next_learner: u64,
    learner_addr: Option<String>,
}

/// The members of the run.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    members: HashMap<String, Member>,
    next_seq: u64,
    next_actor: u64,
    next_learner: u64,
    learner_addr: Option<String>,
    dead: VecDeque<(String, Member)>,
}

impl Registry {
    /// Adds a member and returns its new id (`actor-N`, `learner-N`); a learner's
    /// `advertise_addr` becomes the run's learner address.
    pub(crate) fn register(
        &mut self,
        role: MemberRole,
        name: &str,
        advertise_addr: &str,
        now: Instant,
    ) -> String {
        let counter = match role {
            MemberRole::Actor => &mut self.next_actor,
            MemberRole::Learner => &mut self.next_learner,
        };
        *counter += 1;
        let member_id = format!("{}-{}", role.as_str(), counter);
        self.insert(&member_id, role, name, advertise_addr, now);
        member_id
    }

    /// Adds a member heard from at `now`; a learner's address becomes the one actors use.
    fn insert(
        &mut self,
        member_id: &str,
        role: MemberRole,
        name: &str,
        advertise_addr: &str,
        now: Instant,
    ) {
        if role == MemberRole::Learner {
            self.learner_addr = Some(advertise_addr.to_string());
        }
        self.next_seq += 1;
        self.members.insert(
            member_id.to_string(),
            Member {
                role,
                name: name.to_string(),
                version: 0,
                last_heard: now,
                env: EnvTotals::default(),
                seq: self.next_seq,
            },
        );
    }

    /// Replays the registration of `member_id`, heard from at `now` (a restarted coordinator
    /// gives every member it knew a full `actor_timeout` to be heard again).
    pub(crate) fn restore(
        &mut self,
        member_id: &str,
        role: MemberRole,
        name: &str,
        advertise_addr: &str,
        now: Instant,
    ) -> Result<(), String> {
        let number = member_id
            .strip_prefix(role.as_str())
            .and_then(|rest| rest.strip_prefix('-'))
            .and_then(|n| n.parse::<u64>().ok())
            .ok_or_else(|| format!("member id {member_id:?} is not {}-<n>", role.as_str()))?;
        if self.members.contains_key(member_id) {
            return Err(format!("member {member_id} registered twice"));
        }
        let counter = match role {
            MemberRole::Actor => &mut self.next_actor,
            MemberRole::Learner => &mut self.next_learner,
        };
        *counter = (*counter).max(number);
        self.insert(member_id, role, name, advertise_addr, now);
        Ok(())
    }

    /// Members, the dead shown, counters and the learner's address, for a snapshot.
    pub(crate) fn save(&self) -> SavedRegistry {
        let saved = |id: &String, m: &Member| SavedMember {
            id: id.clone(),
            role: m.role.as_str().to_string(),
            name: m.name.clone(),
            seq: m.seq,
        };
        let mut members: Vec<SavedMember> =
            self.members.iter().map(|(id, m)| saved(id, m)).collect();
        members.sort_by_key(|m| m.seq);
        SavedRegistry {
            members,
            dead: self.dead.iter().map(|(id, m)| saved(id, m)).collect(),
            next_seq: self.next_seq,
            next_actor: self.next_actor,
            next_learner: self.next_learner,
            learner_addr: self.learner_addr.clone(),
        }
    }

    /// The registry a snapshot kept, every member heard from at `now`.
    pub(crate) fn restore_saved(saved: SavedRegistry, now: Instant) -> Result<Self, String> {
        let member = |m: SavedMember| -> Result<(String, Member), String> {
            let role =
                MemberRole::parse(&m.role).ok_or_else(|| format!("unknown role {:?}", m.role))?;
            let member = Member {
                role,
                name: m.name,
                version: 0,
                last_heard: now,
                env: EnvTotals::default(),
                seq: m.seq,
            };
            Ok((m.id, member))
        };
        Ok(Self {
            members: saved
                .members
                .into_iter()
                .map(member)
                .collect::<Result<_, _>>()?,
            dead: saved
                .dead
                .into_iter()
                .map(member)
                .collect::<Result<_, _>>()?,
            next_seq: saved.next_seq,
            next_actor: saved.next_actor,
            next_learner: saved.next_learner,
            learner_addr: saved.learner_addr,
        })
    }

    /// Members, counters and the learner's address in a canonical order, to compare a
    /// replayed registry with the live one.
    #[cfg(test)]
    pub(crate) fn describe(&self) -> String {
        let mut members: Vec<_> = self
            .members
            .iter()
            .map(|(id, m)| format!("{id} {} {} #{}", m.role.as_str(), m.name, m.seq))
            .collect();
        members.sort();
        let dead: Vec<_> = self.dead.iter().map(|(id, _)| id.as_str()).collect();
        format!(
            "{members:?} dead {dead:?} next {} {} {} learner {:?}",
            self.next_seq, self.next_actor, self.next_learner, self.learner_addr
        )
    }

    /// Notes that `member_id` was heard from; false if it is unknown.
    pub(crate) fn touch(&mut self, member_id: &str, now: Instant) -> bool {
        let member = self.members.get_mut(member_id);
        member.map(|m| m.last_heard = now).is_some()
    }

    /// Records the environment figures a member reported; false if it is unknown.
    pub(crate) fn set_env(&mut self, member_id: &str, env: EnvTotals) -> bool {
        let member = self.members.get_mut(member_id);
        member.map(|m| m.env = env).is_some()
    }

    /// Records the version a member holds; false if it is unknown.
    pub(crate) fn set_version(&mut self, member_id: &str, version: u64) -> bool {
        let member = self.members.get_mut(member_id);
        member.map(|m| m.version = version).is_some()
    }

    /// Actors silent for at least `timeout` at `now`, in registration order.
    pub(crate) fn silent_actors(&self, now: Instant, timeout: Duration) -> Vec<String> {
        let mut silent: Vec<(&String, &Member)> = self
            .members
            .iter()
            .filter(|(_, m)| {
                m.role == MemberRole::Actor
                    && now.saturating_duration_since(m.last_heard) >= timeout
            })
            .collect();
        silent.sort_by_key(|(_, m)| m.seq);
        silent.into_iter().map(|(id, _)| id.clone()).collect()
    }

    /// Drops a member for good: its id is unknown from now on. Dead actors stay in the status.
    pub(crate) fn declare_dead(&mut self, member_id: &str) -> Option<Member> {
        let member = self.members.remove(member_id)?;
        if member.role == MemberRole::Actor {
            if self.dead.len() == DEAD_SHOWN {
                self.dead.pop_front();
            }
            self.dead.push_back((member_id.to_string(), member.clone()));
        }
        Some(member)
    }

    /// Where the learner serves, once one has registered.
    pub(crate) fn learner_addr(&self) -> Option<&str> {
        self.learner_addr.as_deref()
    }

    /// Live actors in registration order, then the most recently dead ones.
    pub(crate) fn actors(&self, now: Instant) -> Vec<ActorSnapshot> {
        let mut live: Vec<(&String, &Member)> = self
            .members
            .iter()
            .filter(|(_, m)| m.role == MemberRole::Actor)
            .collect();
        live.sort_by_key(|(_, m)| m.seq);
        let snapshot = |id: &String, member: &Member, alive: bool| ActorSnapshot {
            member_id: id.clone(),
            name: member.name.clone(),
            version: member.version,
            since_heard: now.saturating_duration_since(member.last_heard),
            alive,
            env: member.env.clone(),
        };
        live.into_iter()
            .map(|(id, m)| snapshot(id, m, true))
            .chain(self.dead.iter().map(|(id, m)| snapshot(id, m, false)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_count_per_role_and_the_last_learner_gives_the_address() {
        let mut registry = Registry::default();
        let now = Instant::now();
        assert_eq!(registry.learner_addr(), None);
        assert_eq!(
            registry.register(MemberRole::Actor, "a", "", now),
            "actor-1"
        );
        assert_eq!(
            registry.register(MemberRole::Learner, "l", "http://x:1", now),
            "learner-1"
        );
        assert_eq!(
            registry.register(MemberRole::Actor, "b", "", now),
            "actor-2"
        );
        assert_eq!(registry.learner_addr(), Some("http://x:1"));
        registry.register(MemberRole::Learner, "l", "http://y:2", now);
        assert_eq!(registry.learner_addr(), Some("http://y:2"));
    }

    #[test]
    fn only_silent_actors_are_reaped_and_dead_ones_are_forgotten() {
        let mut registry = Registry::default();
        let start = Instant::now();
        let timeout = Duration::from_secs(5);
        registry.register(MemberRole::Learner, "l", "http://x:1", start);
        registry.register(MemberRole::Actor, "quiet", "", start);
        registry.register(MemberRole::Actor, "chatty", "", start);
        let later = start + timeout;
        assert!(registry.touch("actor-2", later - Duration::from_millis(1)));
        assert_eq!(registry.silent_actors(later, timeout), ["actor-1"]);
        assert!(registry.declare_dead("actor-1").is_some());
        assert!(!registry.touch("actor-1", later));
        assert!(!registry.set_version("actor-1", 3));
        assert!(registry.set_version("actor-2", 3));

        let actors = registry.actors(later);
        let summary: Vec<_> = actors
            .iter()
            .map(|a| (a.member_id.as_str(), a.version, a.alive))
            .collect();
        assert_eq!(summary, [("actor-2", 3, true), ("actor-1", 0, false)]);
        assert_eq!(actors[1].since_heard, timeout);
    }
}
