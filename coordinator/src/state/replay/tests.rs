//! Replaying the journal rebuilds the state the records came from: the same pool, leases,
//! curriculum, registry and versions, so the next answers are the same too.

use std::time::Duration;

use tokio::time::Instant;

use crate::domain::{
    Completion, Grant, LeaseRequest, MemberRole, ProblemResult, Publication, Registration,
};
use crate::pool::tests::FixedSource;
use crate::record::Entry;
use crate::state::State;

fn fresh(len: Option<u64>) -> State {
    fresh_for(len, 0)
}

/// A fresh state over `len` problems walked for `epochs` passes.
pub(crate) fn fresh_for(len: Option<u64>, epochs: u64) -> State {
    State::new(run_for(epochs), Box::new(FixedSource { len }))
}

/// The run config of these tests' states, over the `fixed` task walked for `epochs` passes.
pub(crate) fn run_for(epochs: u64) -> rollout::config::RunConfig {
    crate::test_run(|run| {
        run.task = "fixed".to_string();
        run.epochs = epochs;
        run.update.max_lag = 2;
        run.pipeline.lease_timeout_s = 2.0;
        run.pipeline.actor_timeout_s = 5.0;
        run.pipeline.retire_pass_rate = 0.9;
        run.pipeline.retire_min_samples = 4;
    })
}

/// A live state and every record it wrote, numbered like journal lines (the header is 1).
pub(crate) struct Live {
    pub state: State,
    pub records: Vec<(usize, Entry)>,
    epochs: u64,
}

impl Live {
    pub(crate) fn new(len: Option<u64>) -> Self {
        Self::for_epochs(len, 0)
    }

    fn for_epochs(len: Option<u64>, epochs: u64) -> Self {
        Self {
            state: fresh_for(len, epochs),
            records: Vec::new(),
            epochs,
        }
    }

    fn run<R>(&mut self, operation: impl FnOnce(&mut State) -> R) -> R {
        let answer = operation(&mut self.state);
        for entry in self.state.take_records() {
            let line = self.records.len() + 2;
            self.records.push((line, entry));
        }
        answer
    }

    pub(crate) fn replayed(&self, len: Option<u64>, now: Instant) -> State {
        let mut state = fresh_for(len, self.epochs);
        state.replay(self.records.clone(), now).expect("replays");
        assert!(state.take_records().is_empty(), "a replay journals nothing");
        state
    }
}

fn registration(role: MemberRole, name: &str) -> Registration {
    Registration {
        role,
        advertise_addr: match role {
            MemberRole::Actor => String::new(),
            MemberRole::Learner => format!("http://{name}:7001"),
        },
        name: name.to_string(),
    }
}

fn lease_request(member_id: &str, version: u64, max_prompts: u32) -> LeaseRequest {
    LeaseRequest {
        member_id: member_id.to_string(),
        version,
        max_prompts,
    }
}

fn completion(member_id: &str, grant: &Grant, rewards: &[f32]) -> Completion {
    Completion {
        member_id: member_id.to_string(),
        lease_id: grant.lease_id.clone(),
        results: grant
            .prompts
            .iter()
            .map(|p| ProblemResult {
                problem_id: p.id.clone(),
                rewards: rewards.to_vec(),
            })
            .collect(),
    }
}

/// A small deterministic pseudo-random stream (no dependency needed for a test).
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}

/// Drives `live` through a random mix of every operation, including expiries, dead actors,
/// retirements, late completions and a learner restarting at a lower version.
pub(crate) fn random_run(live: &mut Live, seed: u64, start: Instant) -> Instant {
    let mut rng = Lcg(seed);
    let mut now = start;
    let mut actors: Vec<String> = Vec::new();
    let mut grants: Vec<(String, Grant)> = Vec::new();
    // Groups delivered and not yet named durable by a checkpoint.
    let mut delivered: Vec<String> = Vec::new();
    let mut version = 0;
    live.run(|s| s.register(registration(MemberRole::Learner, "l1"), now));
    live.run(|s| {
        s.publish_version(
            Publication {
                version: 0,
                ..Publication::default()
            },
            now,
        )
    });
    for _ in 0..400 {
        match rng.below(10) {
            0 if actors.len() < 4 => {
                let name = format!("a{}", actors.len());
                let id = live
                    .run(|s| s.register(registration(MemberRole::Actor, &name), now))
                    .member_id;
                actors.push(id);
            }
            1..=3 if !actors.is_empty() => {
                let actor = actors[rng.below(actors.len() as u64) as usize].clone();
                let max = 1 + rng.below(3) as u32;
                let answer = live.run(|s| s.lease(lease_request(&actor, version, max), now));
                if let Ok(Ok(grant)) = answer.map(|a| a.outcome) {
                    grants.push((actor, grant));
                }
            }
            4 | 5 if !grants.is_empty() => {
                // Completes a lease, possibly one that expired meanwhile (a late completion).
                let (actor, grant) = grants.remove(rng.below(grants.len() as u64) as usize);
                let rewards: Vec<f32> = (0..4).map(|_| (rng.below(5) > 0) as u8 as f32).collect();
                live.run(|s| s.complete(completion(&actor, &grant, &rewards), now));
                delivered.extend(grant.group_ids.iter().cloned());
            }
            6 => now += Duration::from_millis(200 + rng.below(2_000)),
            7 if !actors.is_empty() => {
                let actor = actors[rng.below(actors.len() as u64) as usize].clone();
                live.run(|s| s.heartbeat(&actor, version, now));
            }
            8 => {
                version += 1;
                let zero_variance = (0..rng.below(3))
                    .map(|i| format!("fixed/{}", rng.below(8) + i))
                    .collect();
                // Every third publication the learner dropped groups past the lag bound: the
                // newest delivery, and one of a lease not yet completed (no draw from `rng`).
                let mut requeue = Vec::new();
                if version % 3 == 0 {
                    requeue.extend(delivered.pop());
                    requeue.extend(
                        grants
                            .first()
                            .and_then(|(_, g)| g.group_ids.first().cloned()),
                    );
                }
                live.run(|s| {
                    s.publish_version(
                        Publication {
                            version,
                            zero_variance_problem_ids: zero_variance,
                            done: false,
                            stats: None,
                            // A checkpoint now holds the older half of the deliveries
                            // (no draw from `rng`, which would change the seeds' runs).
                            durable_group_ids: delivered.drain(..delivered.len() / 2).collect(),
                            requeue_group_ids: requeue,
                        },
                        now,
                    )
                });
            }
            9 if rng.below(8) == 0 => {
                // The learner restarts from a checkpoint a few versions back.
                version = version.saturating_sub(3);
                live.run(|s| s.register(registration(MemberRole::Learner, "l2"), now));
                live.run(|s| {
                    s.publish_version(
                        Publication {
                            version,
                            ..Publication::default()
                        },
                        now,
                    )
                });
            }
            _ => {
                live.run(|s| s.reap(now));
            }
        }
    }
    now
}

#[test]
fn a_replayed_state_is_the_live_state() {
    let mut every_kind = std::collections::HashSet::new();
    for (len, seed) in [(None, 1), (Some(7), 2), (Some(3), 3), (None, 4)] {
        let start = Instant::now();
        let mut live = Live::new(len);
        let now = random_run(&mut live, seed, start);
        let kinds: std::collections::HashSet<_> = live
            .records
            .iter()
            .map(|(_, e)| serde_json::to_value(e).unwrap()["kind"].clone())
            .collect();
        // A short run of a 3-prompt data set may retire nothing; together the runs must
        // exercise every kind of record (checked after the loop).
        assert!(kinds.len() >= 6, "seed {seed} exercised only {kinds:?}");
        every_kind.extend(kinds);

        let later = now + Duration::from_secs(3600);
        let mut replayed = live.replayed(len, later);
        assert_eq!(replayed.describe(), live.state.describe(), "seed {seed}");

        // Both answer the next requests alike (fresh members, same ids).
        let ids = [&mut live.state, &mut replayed].map(|s| {
            let actor = s
                .register(registration(MemberRole::Actor, "new"), later)
                .member_id;
            let version = s.status(later).learner_version;
            let grant = s
                .lease(lease_request(&actor, version, 3), later)
                .unwrap()
                .outcome
                .ok();
            grant.map(|g| (actor, g.lease_id, g.group_ids))
        });
        assert_eq!(ids[0], ids[1], "seed {seed}");
    }
    assert_eq!(
        every_kind.len(),
        7,
        "the runs exercised only {every_kind:?}"
    );
}

#[test]
fn a_replayed_pool_keeps_its_epochs_and_its_exhaustion() {
    for (len, epochs, seed) in [(Some(4), 2, 5), (Some(6), 3, 6), (Some(2), 1, 7)] {
        let start = Instant::now();
        let mut live = Live::for_epochs(len, epochs);
        let now = random_run(&mut live, seed, start);
        let later = now + Duration::from_secs(3600);
        let mut replayed = live.replayed(len, later);
        assert_eq!(replayed.describe(), live.state.describe(), "seed {seed}");
        let [a, b] = [&mut live.state, &mut replayed].map(|s| {
            let status = s.status(later);
            (status.epoch, status.exhausted, status.pool_active)
        });
        assert_eq!(a, b, "seed {seed}");
        assert!(a.0 >= 1, "seed {seed}: the run walked at least one epoch");
    }
}

#[test]
fn outstanding_leases_keep_the_time_they_had_left() {
    let mut live = Live::new(None);
    let t0 = Instant::now();
    let actor = live
        .run(|s| s.register(registration(MemberRole::Actor, "a"), t0))
        .member_id;
    let grant = live
        .run(|s| s.lease(lease_request(&actor, 0, 2), t0))
        .unwrap()
        .outcome
        .unwrap();
    // The last record is written 500 ms later: the lease had 1.5 s left then.
    let t1 = t0 + Duration::from_millis(500);
    live.run(|s| s.heartbeat(&actor, 0, t1));
    live.run(|s| s.register(registration(MemberRole::Actor, "b"), t1));

    // The coordinator restarts much later; the lease clock stopped meanwhile.
    let restart = t0 + Duration::from_secs(600);
    let mut state = live.replayed(None, restart);
    let status = state.status(restart);
    assert_eq!(status.leases_outstanding, 1);
    assert!(status.actors.iter().all(|a| a.alive), "{status:?}");
    // The holder is still a member: its heartbeat is known.
    let beat = state.heartbeat(&actor, 0, restart + Duration::from_millis(1_000));
    assert!(!beat.unknown_member);
    assert!(state
        .reap(restart + Duration::from_millis(1_499))
        .expired_leases
        .is_empty());
    let reaped = state.reap(restart + Duration::from_millis(1_500));
    assert_eq!(reaped.expired_leases, std::slice::from_ref(&grant.lease_id));
    // The completing actor is too late now, but its rewards still count.
    let outcome = state.complete(
        completion(&actor, &grant, &[1.0; 4]),
        restart + Duration::from_secs(2),
    );
    assert_eq!(outcome, crate::domain::CompleteOutcome::Expired);
}

#[test]
fn a_prompt_leased_again_keeps_its_group_id_across_a_restart() {
    let mut live = Live::new(None);
    let t0 = Instant::now();
    let a = live
        .run(|s| s.register(registration(MemberRole::Actor, "a"), t0))
        .member_id;
    let first = live
        .run(|s| s.lease(lease_request(&a, 0, 2), t0))
        .unwrap()
        .outcome
        .unwrap();
    assert_eq!(first.group_ids, ["lease-1/fixed/0", "lease-1/fixed/1"]);
    // The actor goes silent: declared dead, its lease expires.
    let t1 = t0 + Duration::from_secs(6);
    let b = live
        .run(|s| s.register(registration(MemberRole::Actor, "b"), t1))
        .member_id;
    let mut replayed = live.replayed(None, t1);
    for state in [&mut live.state, &mut replayed] {
        let again = state
            .lease(lease_request(&b, 0, 3), t1)
            .unwrap()
            .outcome
            .unwrap();
        assert_eq!(again.lease_id, "lease-2");
        assert_eq!(
            again.group_ids,
            ["lease-1/fixed/0", "lease-1/fixed/1", "lease-2/fixed/2"]
        );
    }
}

#[test]
fn records_that_do_not_fit_are_errors_naming_the_line() {
    let mut live = Live::new(None);
    let now = Instant::now();
    let actor = live
        .run(|s| s.register(registration(MemberRole::Actor, "a"), now))
        .member_id;
    let grant = live
        .run(|s| s.lease(lease_request(&actor, 0, 1), now))
        .unwrap()
        .outcome
        .unwrap();
    live.run(|s| s.complete(completion(&actor, &grant, &[1.0]), now));
    // Line 4 (the completion) without line 3 (the grant).
    let mut broken = live.records.clone();
    broken.remove(1);
    let err = fresh(None).replay(broken, now).unwrap_err();
    assert_eq!(err.0, 4);
    assert!(
        err.1.contains("lease-1 completed but never granted"),
        "{err:?}"
    );
    // The same completion twice.
    let mut twice = live.records.clone();
    twice.push((5, twice[2].1.clone()));
    let err = fresh(None).replay(twice, now).unwrap_err();
    assert_eq!(err.0, 5);
    assert!(err.1.contains("lease-1"), "{err:?}");
}

#[test]
fn a_learner_that_rejoins_may_go_back_and_reopens_the_run() {
    let mut live = Live::new(None);
    let now = Instant::now();
    let publish = |version, done| Publication {
        version,
        done,
        ..Publication::default()
    };
    live.run(|s| s.register(registration(MemberRole::Learner, "l"), now));
    live.run(|s| s.publish_version(publish(9, false), now));
    live.run(|s| s.publish_version(publish(4, false), now));
    assert_eq!(live.state.status(now).learner_version, 9, "older ignored");
    live.run(|s| s.publish_version(publish(10, true), now));
    assert!(live.state.status(now).done);
    // Restarted from its checkpoint at version 6: taken, and the run is on again.
    live.run(|s| s.register(registration(MemberRole::Learner, "l"), now));
    assert!(!live.state.status(now).done);
    live.run(|s| s.publish_version(publish(6, false), now));
    live.run(|s| s.publish_version(publish(5, false), now));
    let status = live.state.status(now);
    assert_eq!((status.learner_version, status.done), (6, false));
    let replayed = live.replayed(None, now);
    assert_eq!(replayed.describe(), live.state.describe());
}
