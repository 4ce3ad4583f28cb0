//! A long run over an unbounded source keeps the coordinator's per-prompt memory flat, the
//! settled horizon only moves up, and a replay of the journal forgets exactly the same.

use std::time::Duration;

use tokio::time::Instant;

use crate::domain::{
    Completion, LeaseRequest, MemberRole, ProblemResult, Publication, Registration,
};
use crate::pool::tests::FixedSource;
use crate::record::Entry;
use crate::state::State;

fn fresh(len: Option<u64>) -> State {
    let run = crate::test_run(|run| {
        run.task = "fixed".to_string();
        run.update.max_lag = 1_000_000;
        run.pipeline.lease_timeout_s = 2.0;
        run.pipeline.actor_timeout_s = 1e6;
        run.pipeline.retire_pass_rate = 0.9;
        run.pipeline.retire_min_samples = 4;
    });
    State::new(run, Box::new(FixedSource { len }))
}

fn join(state: &mut State, role: MemberRole, now: Instant) -> String {
    let registration = Registration {
        role,
        advertise_addr: "http://learner:1".to_string(),
        name: "t".to_string(),
    };
    state.register(registration, now).member_id
}

/// Drives `leases` leases of 4 prompts through `state`: every third prompt passes (and
/// retires), every seventh lease expires and is completed late, and the learner checkpoints
/// every 5 leases. Returns the records and the largest sizes seen.
fn endless(state: &mut State, leases: u64) -> (Vec<(usize, Entry)>, usize) {
    let mut now = Instant::now();
    let mut records = Vec::new();
    let mut keep = |state: &mut State| {
        for entry in state.take_records() {
            records.push((records.len() + 2, entry));
        }
    };
    let actor = join(state, MemberRole::Actor, now);
    join(state, MemberRole::Learner, now);
    let mut delivered: Vec<String> = Vec::new();
    let mut largest = 0;
    let mut horizon = 0;
    let mut late: Option<(String, Vec<ProblemResult>)> = None;
    for n in 0..leases {
        now += Duration::from_millis(10);
        let request = LeaseRequest {
            member_id: actor.clone(),
            version: 0,
            max_prompts: 4,
        };
        let grant = state.lease(request, now).unwrap().outcome.expect("a grant");
        let results: Vec<ProblemResult> = grant
            .prompts
            .iter()
            .map(|p| ProblemResult {
                problem_id: p.id.clone(),
                rewards: vec![
                    if p.id[6..].parse::<u64>().unwrap() % 3 == 0 {
                        1.0
                    } else {
                        0.0
                    };
                    4
                ],
            })
            .collect();
        if n % 7 == 3 {
            // Left to expire; completed late, after its prompts were leased again.
            now += Duration::from_secs(3);
            state.reap(now);
            if let Some((lease_id, results)) = late.take() {
                state.complete(completion(&actor, &lease_id, results), now);
            }
            late = Some((grant.lease_id.clone(), results));
        } else {
            state.complete(completion(&actor, &grant.lease_id, results), now);
            delivered.extend(grant.group_ids.clone());
        }
        if n % 5 == 4 {
            let publication = Publication {
                version: n,
                durable_group_ids: std::mem::take(&mut delivered),
                zero_variance_problem_ids: vec![grant.prompts[0].id.clone()],
                ..Publication::default()
            };
            let settled = state.publish_version(publication, now);
            assert!(settled >= horizon, "the horizon never goes down");
            horizon = settled;
        }
        keep(state);
        largest = largest
            .max(state.curriculum.tracked())
            .max(state.pool.retired_marks())
            .max(state.undurable.len())
            .max(state.reissue.len());
    }
    assert!(horizon > leases / 2, "the horizon moves: {horizon}");
    (records, largest)
}

fn completion(member_id: &str, lease_id: &str, results: Vec<ProblemResult>) -> Completion {
    Completion {
        member_id: member_id.to_string(),
        lease_id: lease_id.to_string(),
        results,
    }
}

#[test]
fn an_unbounded_source_keeps_per_prompt_memory_flat() {
    let mut state = fresh(None);
    let (_, largest_short) = endless(&mut state, 500);
    let mut state = fresh(None);
    let (_, largest_long) = endless(&mut state, 20_000);
    // 80 000 prompts handed out; only the live ones (a few leases' worth) are remembered.
    assert!(largest_long <= 64, "{largest_long}");
    assert!(
        largest_long <= largest_short + 8,
        "{largest_short} -> {largest_long}"
    );
    let status = state.snapshot(Instant::now());
    assert!(
        status.pool_retired > 10_000,
        "retirements still counted: {}",
        status.pool_retired
    );
    assert_eq!(status.zero_variance_groups, 20_000 / 5);
}

#[test]
fn a_replay_forgets_exactly_what_the_live_run_forgot() {
    let mut live = fresh(None);
    let (records, _) = endless(&mut live, 700);
    let mut replayed = fresh(None);
    replayed.replay(records, Instant::now()).expect("replays");
    assert_eq!(replayed.describe(), live.describe());
    assert_eq!(replayed.settled_below(), live.settled_below());
}

#[test]
fn a_finite_pool_forgets_nothing() {
    let mut state = fresh(Some(40));
    endless(&mut state, 200);
    // Every problem of the pool keeps its window or its retirement.
    assert!(
        state.curriculum.tracked() >= 40,
        "{}",
        state.curriculum.tracked()
    );
}
