//! Unit tests of the coordinator's logic on a fixed source with explicit clocks.

use std::time::Duration;

use tokio::time::Instant;

use super::*;
use crate::domain::MemberRole;
use crate::pool::tests::FixedSource;

/// The tests' run config with `change` applied: lag bound 2, leases of 2 s, actors dead
/// after 5 s.
fn run_with(change: impl FnOnce(&mut RunConfig)) -> RunConfig {
    crate::test_run(|run| {
        run.task = "fixed".to_string();
        run.seed = 7;
        run.update.max_lag = 2;
        run.pipeline.lease_timeout_s = 2.0;
        run.pipeline.actor_timeout_s = 5.0;
        change(run);
    })
}

fn settings() -> RunConfig {
    run_with(|_| {})
}

/// A run over `len` problems (None: unbounded) named `fixed/<index>`.
fn state_with(len: Option<u64>, run: RunConfig) -> State {
    State::new(run, Box::new(FixedSource { len }))
}

fn state(len: Option<u64>) -> State {
    state_with(len, settings())
}

fn join(state: &mut State, role: MemberRole, now: Instant) -> String {
    let registration = Registration {
        role,
        advertise_addr: match role {
            MemberRole::Actor => String::new(),
            MemberRole::Learner => "http://127.0.0.1:7001".to_string(),
        },
        name: "test".to_string(),
    };
    state.register(registration, now).member_id
}

fn lease(
    state: &mut State,
    member_id: &str,
    version: u64,
    max_prompts: u32,
    now: Instant,
) -> Result<Grant, Refusal> {
    let request = LeaseRequest {
        member_id: member_id.to_string(),
        version,
        max_prompts,
    };
    state.lease(request, now).expect("known member").outcome
}

fn ids(grant: &Grant) -> Vec<&str> {
    grant.prompts.iter().map(|p| p.id.as_str()).collect()
}

fn complete(
    state: &mut State,
    member_id: &str,
    grant: &Grant,
    reward: f32,
    now: Instant,
) -> CompleteOutcome {
    let results = grant
        .prompts
        .iter()
        .map(|p| ProblemResult {
            problem_id: p.id.clone(),
            rewards: vec![reward; 4],
        })
        .collect();
    let completion = Completion {
        member_id: member_id.to_string(),
        lease_id: grant.lease_id.clone(),
        results,
    };
    state.complete(completion, now)
}

fn publish(state: &mut State, version: u64, now: Instant) {
    let publication = Publication {
        version,
        ..Publication::default()
    };
    state.publish_version(publication, now);
}

/// The learner names the groups of `grants` durable: a checkpoint holds them.
fn checkpointed(state: &mut State, grants: &[&Grant], now: Instant) {
    let publication = Publication {
        version: state.status(now).learner_version,
        durable_group_ids: grants.iter().flat_map(|g| g.group_ids.clone()).collect(),
        ..Publication::default()
    };
    state.publish_version(publication, now);
}

#[test]
fn register_answers_with_the_run_config_and_the_learner() {
    let mut state = state(None);
    let now = Instant::now();
    let actor = state.register(
        Registration {
            role: MemberRole::Actor,
            advertise_addr: String::new(),
            name: "a".to_string(),
        },
        now,
    );
    assert_eq!(actor.member_id, "actor-1");
    assert_eq!(actor.learner_addr, None);
    // The whole run config, once: the lag bound and the heartbeat travel inside it.
    let received = RunConfig::from_wire(&actor.run_config).unwrap();
    assert_eq!(received, settings());
    assert_eq!((received.seed, received.update.max_lag), (7, 2));
    assert_eq!(join(&mut state, MemberRole::Learner, now), "learner-1");
    publish(&mut state, 3, now);
    let second = state.register(
        Registration {
            role: MemberRole::Actor,
            advertise_addr: String::new(),
            name: "b".to_string(),
        },
        now,
    );
    assert_eq!(second.member_id, "actor-2");
    assert_eq!(
        second.learner_addr.as_deref(),
        Some("http://127.0.0.1:7001")
    );
    assert_eq!(second.learner_version, 3);
}

#[test]
fn leases_hand_out_train_indices_in_order_with_unique_ids() {
    let mut state = state(None);
    let now = Instant::now();
    let actor = join(&mut state, MemberRole::Actor, now);
    let first = lease(&mut state, &actor, 0, 3, now).unwrap();
    assert_eq!(ids(&first), ["fixed/0", "fixed/1", "fixed/2"]);
    assert_eq!(first.prompts[1].prompt, "1+0=");
    assert_eq!(first.prompts[1].answer, "1");
    assert_eq!(first.deadline, now + Duration::from_secs(2));
    let second = lease(&mut state, &actor, 0, 0, now).unwrap();
    assert_eq!(ids(&second), ["fixed/3"], "max_prompts 0 still gets one");
    assert_ne!(first.lease_id, second.lease_id);
    let status = state.status(now);
    assert_eq!(status.leases_outstanding, 2);
    assert_eq!(status.pool_active, 4, "distinct problems seen so far");
}

#[test]
fn an_unknown_member_cannot_lease() {
    let mut state = state(None);
    let request = LeaseRequest {
        member_id: "actor-9".to_string(),
        version: 0,
        max_prompts: 1,
    };
    let err = state.lease(request, Instant::now()).unwrap_err();
    assert!(
        matches!(err, CoordinatorError::UnknownMember { ref member_id } if member_id == "actor-9"),
        "{err:?}"
    );
}

#[test]
fn expired_prompts_are_leased_again_first() {
    let mut state = state(None);
    let start = Instant::now();
    let slow = join(&mut state, MemberRole::Actor, start);
    let other = join(&mut state, MemberRole::Actor, start);
    let lost = lease(&mut state, &slow, 0, 2, start).unwrap();
    assert_eq!(ids(&lost), ["fixed/0", "fixed/1"]);
    let kept = lease(&mut state, &other, 0, 1, start).unwrap();

    // One tick before the deadline nothing has expired.
    let deadline = start + Duration::from_secs(2);
    assert_eq!(
        state.reap(deadline - Duration::from_millis(1)),
        Reaped::default()
    );
    state.heartbeat(&other, 0, deadline - Duration::from_millis(1));
    assert_eq!(
        state.status(deadline).leases_expired,
        2,
        "both leases are due"
    );

    let again = lease(&mut state, &other, 0, 4, deadline).unwrap();
    assert_eq!(ids(&again), ["fixed/0", "fixed/1", "fixed/2", "fixed/3"]);
    assert_eq!(
        ids(&kept),
        ["fixed/2"],
        "the other actor's own expired lease came back too"
    );
    let status = state.status(deadline);
    assert_eq!((status.leases_outstanding, status.leases_expired), (1, 2));
}

#[test]
fn staleness_gate_allows_exactly_k_versions_behind() {
    let mut state = state(None);
    let now = Instant::now();
    let actor = join(&mut state, MemberRole::Actor, now);
    publish(&mut state, 5, now);
    // max_lag = 2: version 3 + 2 == 5 may still generate, version 2 may not.
    assert!(lease(&mut state, &actor, 3, 1, now).is_ok());
    assert_eq!(
        lease(&mut state, &actor, 2, 1, now).unwrap_err(),
        Refusal::StaleWeights
    );
    assert!(
        lease(&mut state, &actor, 7, 1, now).is_ok(),
        "ahead is fine"
    );
    let answer = state
        .lease(
            LeaseRequest {
                member_id: actor.clone(),
                version: 0,
                max_prompts: 1,
            },
            now,
        )
        .unwrap();
    assert_eq!(answer.learner_version, 5);
    assert_eq!(
        state.status(now).actors[0].version,
        0,
        "the lease recorded the version"
    );
}

#[test]
fn a_problem_retires_at_the_pass_rate_after_min_samples() {
    let mut state = state(Some(2));
    let now = Instant::now();
    let actor = join(&mut state, MemberRole::Actor, now);
    // 4 samples a completion, 16 needed: four perfect groups retire fixed/0.
    for round in 0..4 {
        let grant = lease(&mut state, &actor, 0, 1, now).unwrap();
        assert_eq!(ids(&grant), ["fixed/0"], "round {round}");
        assert_eq!(
            complete(&mut state, &actor, &grant, 1.0, now),
            CompleteOutcome::Accepted
        );
        // fixed/1 goes out and fails, keeping it active.
        let other = lease(&mut state, &actor, 0, 1, now).unwrap();
        assert_eq!(ids(&other), ["fixed/1"]);
        complete(&mut state, &actor, &other, 0.0, now);
    }
    let status = state.status(now);
    assert_eq!((status.pool_active, status.pool_retired), (1, 1));
    assert_eq!(status.prompts_completed, 8);
    for _ in 0..3 {
        let grant = lease(&mut state, &actor, 0, 5, now).unwrap();
        assert_eq!(ids(&grant), ["fixed/1"], "retired problems never come back");
        complete(&mut state, &actor, &grant, 0.0, now);
    }
}

#[test]
fn a_pass_rate_just_below_the_threshold_does_not_retire() {
    let mut state = state_with(Some(1), run_with(|run| run.pipeline.retire_min_samples = 4));
    let now = Instant::now();
    let actor = join(&mut state, MemberRole::Actor, now);
    let grant = lease(&mut state, &actor, 0, 1, now).unwrap();
    let completion = Completion {
        member_id: actor.clone(),
        lease_id: grant.lease_id.clone(),
        results: vec![ProblemResult {
            problem_id: "fixed/0".to_string(),
            // 0.875 < 0.9 with 8 samples.
            rewards: vec![1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0],
        }],
    };
    assert!(state.complete(completion, now).accepted());
    assert_eq!(state.status(now).pool_retired, 0);
    assert!(lease(&mut state, &actor, 0, 1, now).is_ok());
}

#[test]
fn a_dead_actors_leases_return_to_the_pool() {
    let mut state = state_with(None, run_with(|run| run.pipeline.lease_timeout_s = 60.0));
    let start = Instant::now();
    let dead = join(&mut state, MemberRole::Actor, start);
    let alive = join(&mut state, MemberRole::Actor, start);
    let lost = lease(&mut state, &dead, 0, 2, start).unwrap();
    state.heartbeat(&alive, 0, start + Duration::from_secs(4));

    let timeout = start + Duration::from_secs(5);
    let reaped = state.reap(timeout);
    assert_eq!(reaped.dead_actors, [dead.as_str()]);
    assert_eq!(reaped.expired_leases, [lost.lease_id.as_str()]);

    let again = lease(&mut state, &alive, 0, 2, timeout).unwrap();
    assert_eq!(ids(&again), ids(&lost));
    assert!(state.heartbeat(&dead, 0, timeout).unknown_member);
    assert!(!state.heartbeat(&alive, 0, timeout).unknown_member);
    assert!(matches!(
        state.lease(
            LeaseRequest {
                member_id: dead.clone(),
                version: 0,
                max_prompts: 1
            },
            timeout
        ),
        Err(CoordinatorError::UnknownMember { .. })
    ));
    let status = state.status(timeout);
    let actors: Vec<_> = status
        .actors
        .iter()
        .map(|a| (a.member_id.as_str(), a.alive))
        .collect();
    assert_eq!(actors, [(alive.as_str(), true), (dead.as_str(), false)]);
    assert_eq!(status.leases_expired, 1);
}

#[test]
fn the_learner_is_never_declared_dead() {
    let mut state = state(None);
    let start = Instant::now();
    let learner = join(&mut state, MemberRole::Learner, start);
    let reaped = state.reap(start + Duration::from_secs(3600));
    assert!(reaped.dead_actors.is_empty());
    assert!(!state.heartbeat(&learner, 0, start).unknown_member);
}

#[test]
fn each_lease_completes_once_and_not_after_expiry() {
    let mut state = state(None);
    let start = Instant::now();
    let actor = join(&mut state, MemberRole::Actor, start);
    let other = join(&mut state, MemberRole::Actor, start);
    let grant = lease(&mut state, &actor, 0, 1, start).unwrap();
    assert_eq!(
        complete(&mut state, &other, &grant, 1.0, start),
        CompleteOutcome::NotHolder
    );
    assert_eq!(
        complete(&mut state, &actor, &grant, 1.0, start),
        CompleteOutcome::Accepted
    );
    assert_eq!(
        complete(&mut state, &actor, &grant, 1.0, start),
        CompleteOutcome::AlreadyCompleted
    );
    let history = state.curriculum.history("fixed/0").unwrap();
    assert_eq!(history.count, 4, "a duplicate completion records nothing");

    let late = lease(&mut state, &actor, 0, 1, start).unwrap();
    let deadline = late.deadline;
    assert_eq!(
        complete(&mut state, &actor, &late, 1.0, deadline),
        CompleteOutcome::Expired
    );
    assert_eq!(
        state.curriculum.history("fixed/1").unwrap().count,
        4,
        "a late completion's rewards still count"
    );
    let status = state.status(deadline);
    assert_eq!(status.prompts_completed, 1);
    assert_eq!((status.leases_outstanding, status.leases_expired), (0, 1));

    let mut unknown = late.clone();
    unknown.lease_id = "lease-99".to_string();
    assert_eq!(
        complete(&mut state, &actor, &unknown, 1.0, deadline),
        CompleteOutcome::UnknownLease
    );
}

#[test]
fn results_for_problems_outside_the_lease_are_ignored() {
    let mut state = state(None);
    let now = Instant::now();
    let actor = join(&mut state, MemberRole::Actor, now);
    let grant = lease(&mut state, &actor, 0, 1, now).unwrap();
    let completion = Completion {
        member_id: actor,
        lease_id: grant.lease_id,
        results: vec![ProblemResult {
            problem_id: "fixed/5".to_string(),
            rewards: vec![1.0; 32],
        }],
    };
    assert!(state.complete(completion, now).accepted());
    assert_eq!(state.curriculum.history("fixed/5"), None);
    assert_eq!(state.status(now).prompts_completed, 0);
}

#[test]
fn check_lease_knows_every_issued_lease_and_its_problems() {
    let mut state = state(None);
    let start = Instant::now();
    let actor = join(&mut state, MemberRole::Actor, start);
    let completed = lease(&mut state, &actor, 0, 2, start).unwrap();
    complete(&mut state, &actor, &completed, 0.0, start);
    let expired = lease(&mut state, &actor, 0, 1, start).unwrap();
    let later = start + Duration::from_secs(3);
    state.heartbeat(&actor, 0, start + Duration::from_secs(1));
    let outstanding = lease(&mut state, &actor, 0, 1, later).unwrap();
    assert_eq!(state.status(later).leases_expired, 1);

    for grant in [&completed, &expired, &outstanding] {
        for problem in &grant.prompts {
            assert_eq!(
                state.check_lease(&grant.lease_id, &problem.id),
                LeaseCheck::Known
            );
        }
    }
    assert_eq!(
        state.check_lease(&completed.lease_id, "fixed/2"),
        LeaseCheck::ProblemNotInLease
    );
    assert_eq!(
        state.check_lease("lease-42", "fixed/0"),
        LeaseCheck::UnknownLease
    );
    assert_eq!(LeaseCheck::UnknownLease.reason(), "unknown lease");
    assert_eq!(
        LeaseCheck::ProblemNotInLease.reason(),
        "problem not in lease"
    );
}

#[test]
fn a_dataset_cycles_and_runs_dry_while_everything_is_leased() {
    let mut state = state(Some(3));
    let now = Instant::now();
    let a = join(&mut state, MemberRole::Actor, now);
    let b = join(&mut state, MemberRole::Actor, now);
    let first = lease(&mut state, &a, 0, 2, now).unwrap();
    assert_eq!(ids(&first), ["fixed/0", "fixed/1"]);
    let second = lease(&mut state, &b, 0, 2, now).unwrap();
    assert_eq!(ids(&second), ["fixed/2"], "0 and 1 are leased");
    assert_eq!(
        lease(&mut state, &b, 0, 1, now).unwrap_err(),
        Refusal::PoolEmpty
    );
    complete(&mut state, &a, &first, 0.0, now);
    let next_epoch = lease(&mut state, &b, 0, 5, now).unwrap();
    assert_eq!(ids(&next_epoch), ["fixed/0", "fixed/1"]);
    assert_eq!(state.status(now).pool_active, 3);
}

#[test]
fn a_fully_retired_dataset_is_exhausted_and_says_so() {
    let mut state = state_with(Some(1), run_with(|run| run.pipeline.retire_min_samples = 4));
    let now = Instant::now();
    let actor = join(&mut state, MemberRole::Actor, now);
    let grant = lease(&mut state, &actor, 0, 1, now).unwrap();
    assert!(!state.status(now).exhausted, "a lease is out");
    complete(&mut state, &actor, &grant, 1.0, now);
    // Until a checkpoint holds its group, a learner restart could bring the prompt back.
    assert_eq!(
        lease(&mut state, &actor, 0, 1, now).unwrap_err(),
        Refusal::PoolEmpty
    );
    assert!(!state.heartbeat(&actor, 0, now).stop);
    assert!(
        state.status(now).exhausted,
        "the learner trains what it holds"
    );
    checkpointed(&mut state, &[&grant], now);
    assert_eq!(
        lease(&mut state, &actor, 0, 1, now).unwrap_err(),
        Refusal::Exhausted
    );
    let status = state.status(now);
    assert_eq!((status.pool_active, status.pool_retired), (0, 1));
    assert!(status.exhausted);
    assert!(!status.done, "the learner decides when it is done");
    assert!(state.heartbeat(&actor, 0, now).stop, "actors may go");
}

#[test]
fn the_pool_is_exhausted_once_its_epochs_are_done_and_every_lease_is_in() {
    let mut state = state_with(Some(3), run_with(|run| run.epochs = 2));
    let now = Instant::now();
    let a = join(&mut state, MemberRole::Actor, now);
    let b = join(&mut state, MemberRole::Actor, now);
    let first = lease(&mut state, &a, 0, 2, now).unwrap();
    let second = lease(&mut state, &b, 0, 2, now).unwrap();
    assert_eq!(
        ids(&second),
        ["fixed/2"],
        "the walk waits at fixed/0, leased"
    );
    assert_eq!(state.status(now).epoch, 1);
    complete(&mut state, &a, &first, 0.0, now);
    let third = lease(&mut state, &a, 0, 5, now).unwrap();
    assert_eq!(
        ids(&third),
        ["fixed/0", "fixed/1"],
        "the same prompts, epoch 2"
    );
    // Epoch 2 still needs fixed/2, which b holds: empty for now, not for good.
    assert_eq!(
        lease(&mut state, &a, 0, 1, now).unwrap_err(),
        Refusal::PoolEmpty
    );
    complete(&mut state, &b, &second, 0.0, now);
    let last = lease(&mut state, &b, 0, 5, now).unwrap();
    assert_eq!(ids(&last), ["fixed/2"]);
    assert_eq!(
        lease(&mut state, &a, 0, 1, now).unwrap_err(),
        Refusal::PoolEmpty,
        "two leases are still out"
    );
    assert!(!state.heartbeat(&a, 0, now).stop);
    complete(&mut state, &a, &third, 0.0, now);
    complete(&mut state, &b, &last, 0.0, now);
    let status = state.status(now);
    assert!(status.exhausted);
    assert_eq!(
        (status.epoch, status.epochs, status.pool_size),
        (2, 2, Some(3))
    );
    assert_eq!(
        status.pool_retired, 0,
        "nothing retired: the epochs ended it"
    );
    checkpointed(&mut state, &[&first, &second, &third, &last], now);
    assert_eq!(
        lease(&mut state, &a, 0, 1, now).unwrap_err(),
        Refusal::Exhausted
    );
    assert!(state.heartbeat(&b, 0, now).stop);
}

#[test]
fn an_expired_lease_keeps_a_spent_pool_open_until_its_prompts_are_done() {
    let mut state = state_with(Some(2), run_with(|run| run.epochs = 1));
    let start = Instant::now();
    let slow = join(&mut state, MemberRole::Actor, start);
    let lost = lease(&mut state, &slow, 0, 2, start).unwrap();
    assert_eq!(ids(&lost), ["fixed/0", "fixed/1"]);
    let later = start + Duration::from_secs(3);
    let other = join(&mut state, MemberRole::Actor, later);
    state.heartbeat(&slow, 0, later);
    assert!(!state.status(later).exhausted, "the prompts came back");
    let again = lease(&mut state, &other, 0, 5, later).unwrap();
    assert_eq!(ids(&again), ["fixed/0", "fixed/1"]);
    complete(&mut state, &other, &again, 0.0, later);
    assert!(state.status(later).exhausted);
}

#[test]
fn the_pass_rate_is_over_the_recent_window() {
    // Retire at 0.75 over the last 8 samples (2 completions of 4).
    let windowed = || {
        state_with(
            Some(2),
            run_with(|run| {
                run.pipeline.retire_pass_rate = 0.75;
                run.pipeline.retire_min_samples = 8;
                run.pipeline.pass_rate_window = 8;
            }),
        )
    };
    let now = Instant::now();
    // fixed/0 failed long ago and is solved now: it retires once the failures are out of
    // the window. fixed/1 keeps failing and stays.
    let mut state = windowed();
    let actor = join(&mut state, MemberRole::Actor, now);
    for (round, reward) in [0.0, 0.0, 1.0, 1.0].into_iter().enumerate() {
        let grant = lease(&mut state, &actor, 0, 2, now).unwrap();
        assert_eq!(ids(&grant)[0], "fixed/0", "round {round}");
        let results = vec![
            ProblemResult {
                problem_id: "fixed/0".to_string(),
                rewards: vec![reward; 4],
            },
            ProblemResult {
                problem_id: "fixed/1".to_string(),
                rewards: vec![0.0; 4],
            },
        ];
        state.complete(
            Completion {
                member_id: actor.clone(),
                lease_id: grant.lease_id.clone(),
                results,
            },
            now,
        );
    }
    assert_eq!(state.status(now).pool_retired, 1, "8 of the last 8");
    assert_eq!(
        ids(&lease(&mut state, &actor, 0, 2, now).unwrap()),
        ["fixed/1"]
    );

    // fixed/0 was solved long ago and fails now: since the start it passes 3 of 6 = 0.5,
    // over the last 4 samples 1 of 4. With a window it stays; without one it would retire.
    for (window, retires) in [(4, 0), (1000, 1)] {
        let mut state = state_with(
            Some(1),
            run_with(|run| {
                run.pipeline.retire_pass_rate = 0.5;
                run.pipeline.retire_min_samples = 4;
                run.pipeline.pass_rate_window = window;
            }),
        );
        let actor = join(&mut state, MemberRole::Actor, now);
        for rewards in [[1.0; 3], [0.0; 3]] {
            let grant = lease(&mut state, &actor, 0, 1, now).unwrap();
            let completion = Completion {
                member_id: actor.clone(),
                lease_id: grant.lease_id.clone(),
                results: vec![ProblemResult {
                    problem_id: "fixed/0".to_string(),
                    rewards: rewards.to_vec(),
                }],
            };
            assert!(state.complete(completion, now).accepted());
        }
        assert_eq!(state.status(now).pool_retired, retires, "window {window}");
    }
}

#[test]
fn versions_only_go_up_and_done_stops_the_run() {
    let mut state = state(None);
    let now = Instant::now();
    let actor = join(&mut state, MemberRole::Actor, now);
    publish(&mut state, 5, now);
    publish(&mut state, 3, now);
    state.publish_version(
        Publication {
            version: 6,
            zero_variance_problem_ids: vec!["fixed/0".to_string(), "fixed/0".to_string()],
            done: false,
            stats: None,
            ..Default::default()
        },
        now,
    );
    assert_eq!(state.curriculum.zero_variance_total(), 2);
    let beat = state.heartbeat(&actor, 6, now);
    assert_eq!((beat.learner_version, beat.stop), (6, false));

    state.publish_version(
        Publication {
            version: 7,
            zero_variance_problem_ids: vec!["fixed/1".to_string()],
            done: true,
            stats: None,
            ..Default::default()
        },
        now,
    );
    let beat = state.heartbeat(&actor, 7, now);
    assert_eq!(
        (beat.learner_version, beat.stop, beat.unknown_member),
        (7, true, false)
    );
    assert_eq!(
        lease(&mut state, &actor, 7, 1, now).unwrap_err(),
        Refusal::Stopping
    );
    let status = state.status(now);
    assert!(status.done);
    assert_eq!(status.zero_variance_groups, 3);
    assert_eq!(status.learner_version, 7);
}

#[test]
fn heartbeats_keep_an_actor_alive_and_record_its_version() {
    let mut state = state(None);
    let start = Instant::now();
    let actor = join(&mut state, MemberRole::Actor, start);
    for second in 1..=20 {
        let beat = state.heartbeat(&actor, second, start + Duration::from_secs(second));
        assert!(!beat.unknown_member, "second {second}");
    }
    let now = start + Duration::from_millis(20_250);
    let status = state.status(now);
    assert_eq!(status.actors.len(), 1);
    assert_eq!(status.actors[0].version, 20);
    assert_eq!(status.actors[0].since_heard, Duration::from_millis(250));
    assert!(state.heartbeat("actor-7", 0, now).unknown_member);
}

#[test]
fn reported_steps_reach_the_history_with_the_pool_size() {
    let mut state = state(Some(10));
    let now = Instant::now();
    let report = |version: u64, step: u64| Publication {
        version,
        stats: Some(crate::domain::StepStats {
            step,
            reward_mean: 0.5,
            lag_tokens: vec![3, 1],
            tokens: 4,
            ..Default::default()
        }),
        ..Publication::default()
    };
    state.publish_version(report(1, 1), now);
    state.publish_version(report(2, 2), now);
    // An older learner's late report is ignored with its version.
    state.publish_version(report(1, 9), now);
    let view = state.view(now);
    let steps: Vec<(u64, u64)> = view.steps.iter().map(|p| (p.step, p.version)).collect();
    assert_eq!(steps, [(1, 1), (2, 2)]);
    assert_eq!(view.steps[1].max_lag, 1);
    assert_eq!(
        (view.steps[1].pool_active, view.steps[1].pool_retired),
        (10, 0)
    );
    assert_eq!(view.totals.lag_tokens, [6, 2]);
    assert_eq!(view.status.learner_version, 2);
}

#[test]
fn a_learner_restart_leases_again_what_no_checkpoint_holds_under_the_same_group_ids() {
    let mut state = state_with(Some(6), run_with(|run| run.epochs = 1));
    let now = Instant::now();
    join(&mut state, MemberRole::Learner, now);
    let actor = join(&mut state, MemberRole::Actor, now);
    let first = lease(&mut state, &actor, 0, 2, now).unwrap();
    let second = lease(&mut state, &actor, 0, 2, now).unwrap();
    complete(&mut state, &actor, &first, 1.0, now);
    complete(&mut state, &actor, &second, 0.0, now);
    // A checkpoint holds the first lease's groups; the second's were lost with the learner.
    state.publish_version(
        Publication {
            version: 1,
            durable_group_ids: first.group_ids.clone(),
            ..Publication::default()
        },
        now,
    );
    assert_eq!(state.undurable_prompts(), 2);
    // Outstanding at the restart: the dead learner may have queued some of its groups.
    let third = lease(&mut state, &actor, 1, 1, now).unwrap();
    join(&mut state, MemberRole::Learner, now);
    publish(&mut state, 0, now);
    assert_eq!(state.undurable_prompts(), 0);
    let again = lease(&mut state, &actor, 0, 2, now).unwrap();
    assert_eq!(
        again.group_ids, second.group_ids,
        "first, and under their ids"
    );
    assert_eq!(ids(&again), ids(&second));
    complete(&mut state, &actor, &third, 1.0, now);
    let straddled = lease(&mut state, &actor, 0, 1, now).unwrap();
    assert_eq!(straddled.group_ids, third.group_ids);
    complete(&mut state, &actor, &again, 1.0, now);
    complete(&mut state, &actor, &straddled, 1.0, now);
    // The epoch goes on with the prompts never leased, and ends when they are in.
    let rest = lease(&mut state, &actor, 0, 6, now).unwrap();
    assert_eq!(ids(&rest), ["fixed/5"]);
    assert!(!state.status(now).exhausted);
    complete(&mut state, &actor, &rest, 1.0, now);
    assert!(state.status(now).exhausted);
    // The rewards of both deliveries count: 4 samples each time.
    assert_eq!(state.status(now).prompts_completed, 9);
}

#[test]
fn requests_reap_at_most_every_ten_ms_so_what_is_due_is_at_most_that_late() {
    let mut state = state(None);
    let start = Instant::now();
    let holder = join(&mut state, MemberRole::Actor, start);
    let other = join(&mut state, MemberRole::Actor, start);
    lease(&mut state, &holder, 0, 1, start).unwrap();
    let deadline = start + Duration::from_secs(2);
    let ms = Duration::from_millis;
    // This request reaps: nothing is due yet.
    state.heartbeat(&holder, 0, deadline - ms(5));
    // 6 ms later the lease is due, but a request reaped less than 10 ms ago: not yet.
    state.heartbeat(&other, 0, deadline + ms(1));
    assert_eq!(state.leases.expired(), 0);
    // 10 ms after the last reap, a request reaps again.
    state.heartbeat(&other, 0, deadline + ms(5));
    assert_eq!(state.leases.expired(), 1);
}

/// The learner dropped `group_ids` untrained (past the lag bound): lease them again.
fn requeued(state: &mut State, group_ids: &[String], now: Instant) {
    let publication = Publication {
        version: state.status(now).learner_version,
        requeue_group_ids: group_ids.to_vec(),
        ..Publication::default()
    };
    state.publish_version(publication, now);
}

#[test]
fn a_group_the_learner_dropped_past_the_lag_bound_is_leased_again_under_its_id() {
    let mut state = state_with(Some(3), run_with(|run| run.epochs = 1));
    let now = Instant::now();
    join(&mut state, MemberRole::Learner, now);
    let actor = join(&mut state, MemberRole::Actor, now);
    let first = lease(&mut state, &actor, 0, 2, now).unwrap();
    complete(&mut state, &actor, &first, 1.0, now);
    // The learner trained the first group and dropped the second, stale in its queue.
    requeued(&mut state, &first.group_ids[1..], now);
    assert_eq!(state.undurable_prompts(), 1);
    let again = lease(&mut state, &actor, 0, 1, now).unwrap();
    assert_eq!(again.group_ids, first.group_ids[1..], "first, under its id");
    assert_eq!(ids(&again), ids(&first)[1..]);
    complete(&mut state, &actor, &again, 1.0, now);
    let rest = lease(&mut state, &actor, 0, 3, now).unwrap();
    assert_eq!(ids(&rest), ["fixed/2"]);
    complete(&mut state, &actor, &rest, 1.0, now);
    assert_eq!(
        state.undurable_prompts(),
        3,
        "every delivery awaits a checkpoint"
    );
    checkpointed(&mut state, &[&first, &again, &rest], now);
    assert_eq!(state.undurable_prompts(), 0);
    assert!(state.status(now).exhausted);
}

#[test]
fn a_drop_reported_twice_costs_at_most_one_more_lease_never_a_loss() {
    let mut state = state_with(Some(2), run_with(|run| run.epochs = 1));
    let now = Instant::now();
    join(&mut state, MemberRole::Learner, now);
    let actor = join(&mut state, MemberRole::Actor, now);
    let first = lease(&mut state, &actor, 0, 1, now).unwrap();
    complete(&mut state, &actor, &first, 1.0, now);
    requeued(&mut state, &first.group_ids, now);
    let again = lease(&mut state, &actor, 0, 1, now).unwrap();
    assert_eq!(again.group_ids, first.group_ids);
    // The report again (its reply was lost) while the prompt is leased again: the coordinator
    // cannot tell the copies apart, so that delivery is put back too.
    requeued(&mut state, &first.group_ids, now);
    complete(&mut state, &actor, &again, 1.0, now);
    let rest = lease(&mut state, &actor, 0, 2, now).unwrap();
    assert_eq!(ids(&rest), ["fixed/0", "fixed/1"]);
    // The learner trained the second delivery and a checkpoint holds it: the third is done
    // as soon as it completes (the learner answers it as a duplicate).
    checkpointed(&mut state, &[&again], now);
    complete(&mut state, &actor, &rest, 1.0, now);
    assert_eq!(
        state.undurable_prompts(),
        1,
        "only fixed/1 awaits a checkpoint"
    );
    checkpointed(&mut state, &[&rest], now);
    assert!(state.status(now).exhausted);
}

#[test]
fn a_drop_reported_before_its_lease_completes_is_applied_when_it_does() {
    let mut state = state_with(Some(2), run_with(|run| run.epochs = 1));
    let now = Instant::now();
    join(&mut state, MemberRole::Learner, now);
    let actor = join(&mut state, MemberRole::Actor, now);
    let first = lease(&mut state, &actor, 0, 1, now).unwrap();
    // The learner's queue was quicker than the actor's completion.
    requeued(&mut state, &first.group_ids, now);
    complete(&mut state, &actor, &first, 1.0, now);
    assert_eq!(state.undurable_prompts(), 0);
    let again = lease(&mut state, &actor, 0, 1, now).unwrap();
    assert_eq!(again.group_ids, first.group_ids);
    // Delivered again, it waits for a checkpoint like any other.
    complete(&mut state, &actor, &again, 1.0, now);
    assert_eq!(state.undurable_prompts(), 1);

    // An early drop whose lease expires instead: the expiry puts the prompt back, once.
    let second = lease(&mut state, &actor, 0, 1, now).unwrap();
    requeued(&mut state, &second.group_ids, now);
    let later = now + Duration::from_secs(3);
    state.heartbeat(&actor, 0, later);
    let retry = lease(&mut state, &actor, 0, 1, later).unwrap();
    assert_eq!(retry.group_ids, second.group_ids);
    complete(&mut state, &actor, &retry, 1.0, later);
    assert_eq!(state.undurable_prompts(), 2, "not put back a second time");
}
