//! A chaos run (issue 14 section 3): a seeded schedule of faults against a real `oxrl run` on a
//! finite pool of prompts. Every time the run has made progress, a random child (coordinator,
//! learner or an actor) is SIGKILLed, or SIGSTOPped for a moment and continued; `oxrl run`
//! restarts what was killed. Then the run's own files must show that nothing went wrong:
//! the run completed by exhausting its pool, every step of the surviving lineage is there
//! with versions rising by one at each step that trained (a step with nothing to train, every
//! group zero-variance, keeps its version), no token trained past the lag bound, no group trained twice, every
//! prompt of the pool trained exactly once per epoch (until the curriculum retired it), and
//! every kill cost exactly one restart where the role could not have exited on its own.
//!
//! The default test injects a few faults (CI); `chaos_long` injects `OXRL_CHAOS_FAULTS`
//! (default 30) on a larger pool and prints the figures BENCHMARKS.md quotes:
//! `OXRL_CHAOS_FAULTS=30 cargo test --release --test chaos -- --ignored --nocapture`
//! (`OXRL_CHAOS_SEED` picks another schedule for either).

mod common;

use common::supervised::{finish, last_step, pid, start_run, try_signal};
use common::{read_jsonl, surviving_steps, wait_until, write_run_config};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::time::Duration;

const MAX_LAG: u64 = 4;
const ROLES: [&str; 4] = ["coordinator", "learner", "actor-0", "actor-1"];

/// A small, seeded random stream (xorshift64*): the schedule is the same for a seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// What was injected, by kind and role.
#[derive(Debug, Default)]
struct Injected {
    kills: BTreeMap<&'static str, u64>,
    stops: BTreeMap<&'static str, u64>,
}

impl Injected {
    fn total(&self) -> u64 {
        self.kills.values().sum::<u64>() + self.stops.values().sum::<u64>()
    }
}

fn write_config(dir: &Path, train_size: u64, epochs: u64) -> std::path::PathBuf {
    let text = format!(
        "steps = 10000\nprompts_per_step = 4\ngroup_size = 8\neval_every = 0\ncheckpoint_every = 2\n\
         train_size = {train_size}\nepochs = {epochs}\n\
         [update]\nmax_lag = {MAX_LAG}\n\
         [pipeline]\nactors = 2\nprompts_per_lease = 2\nlease_timeout_s = 4.0\nactor_timeout_s = 3.0\n\
         heartbeat_interval_ms = 100\nlearner_queue = 8\nmax_restarts = 100\n\
         restart_window_s = 600.0\nrestart_backoff_ms = 100\nrestart_backoff_max_ms = 1000\n"
    );
    write_run_config(dir, &text)
}

/// Injects up to `faults` faults, one each time the run has made a step since the last, until
/// the run exits.
fn inject(run: &Path, parent: &mut std::process::Child, faults: u64, seed: u64) -> Injected {
    let mut rng = Rng(seed.max(1));
    let mut injected = Injected::default();
    let mut step = 0;
    while injected.total() < faults {
        let moved = || last_step(run) > step;
        let deadline = std::time::Instant::now() + Duration::from_secs(90);
        while !moved() && parent.try_wait().unwrap().is_none() {
            assert!(
                std::time::Instant::now() < deadline,
                "no progress after a fault"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        if parent.try_wait().unwrap().is_some() {
            break;
        }
        step = last_step(run);
        let role = ROLES[rng.below(ROLES.len() as u64) as usize];
        let Some(target) = pid(run, role) else {
            continue;
        };
        if rng.below(10) < 7 {
            if try_signal(target, "-KILL") {
                *injected.kills.entry(role).or_default() += 1;
                // The next fault waits for the restart, so faults never overlap.
                wait_until(Duration::from_secs(60), "the restart", || {
                    pid(run, role).is_some_and(|p| p != target)
                        || parent.try_wait().unwrap().is_some()
                });
            }
        } else if try_signal(target, "-STOP") {
            std::thread::sleep(Duration::from_millis(300 + rng.below(1500)));
            assert!(try_signal(target, "-CONT"), "continuing {role}");
            *injected.stops.entry(role).or_default() += 1;
        }
    }
    injected
}

/// Checks the invariants on the run's files; returns (steps, groups trained, groups dropped past
/// the lag bound and leased again).
fn check_invariants(run: &Path, train_size: u64, epochs: u64) -> (u64, usize, u64) {
    let metrics = surviving_steps(&run.join("metrics.jsonl"));
    let steps = *metrics.keys().last().expect("some steps");
    assert_eq!(
        metrics.keys().copied().collect::<Vec<_>>(),
        (1..=steps).collect::<Vec<_>>(),
        "every step of the surviving lineage"
    );
    let mut version = 0;
    for (step, line) in &metrics {
        if line["tokens"].as_u64().unwrap_or(0) > 0 {
            version += 1;
        }
        assert_eq!(line["version"], version, "step {step}: {line}");
        let lag = line["lag_max"].as_u64().unwrap_or(0);
        assert!(
            lag <= MAX_LAG,
            "step {step} trained a token {lag} versions stale"
        );
    }
    assert!(
        steps < 10000,
        "the run ended with its pool, not its step budget"
    );

    let trained = surviving_steps(&run.join("trained_groups.jsonl"));
    let mut seen = HashSet::new();
    let mut per_problem: HashMap<String, u64> = HashMap::new();
    for line in trained.values() {
        for group in line["groups"].as_array().unwrap() {
            let group = group.as_str().unwrap();
            assert!(
                seen.insert(group.to_string()),
                "group {group} trained twice"
            );
            let problem = group.split_once('/').map_or(group, |(_, p)| p);
            *per_problem.entry(problem.to_string()).or_default() += 1;
        }
    }
    // Exactly once per epoch: every prompt of the pool, in every epoch until the curriculum
    // retired it.
    let retired = retired_problems(run);
    assert!(
        per_problem.len() as u64 <= train_size,
        "only prompts of the pool trained"
    );
    // A group that waited in the learner's queue past the lag bound was dropped, and its
    // prompt leased again under the same group id: it still counts once in its epoch.
    let stale: u64 = metrics
        .values()
        .map(|l| l["dropped_stale"].as_u64().unwrap_or(0))
        .sum();
    // A prompt of the pool never trained at all must have been retired before its turn.
    let never_trained = train_size - per_problem.len() as u64;
    let retired_untrained = retired
        .iter()
        .filter(|p| !per_problem.contains_key(*p))
        .count() as u64;
    assert!(
        never_trained <= retired_untrained,
        "{never_trained} prompts never trained, only {retired_untrained} of them retired"
    );
    for (problem, n) in &per_problem {
        if retired.contains(problem) {
            assert!(
                *n <= epochs,
                "{problem} trained {n} times in {epochs} epochs"
            );
        } else {
            assert_eq!(*n, epochs, "{problem} trained {n} times in {epochs} epochs");
        }
    }
    (steps, seen.len(), stale)
}

/// The problems the curriculum retired, from the coordinator's journal.
fn retired_problems(run: &Path) -> HashSet<String> {
    read_jsonl(&run.join("coordinator.journal"))
        .into_iter()
        .filter(|l| l["kind"] == "retire")
        .filter_map(|l| l["problem"].as_str().map(str::to_string))
        .collect()
}

fn chaos(train_size: u64, epochs: u64, faults: u64, seed: u64) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let run = d.join("run");
    let config = write_config(d, train_size, epochs);
    let mut parent = start_run(d, &config, &run, &[]);
    wait_until(Duration::from_secs(120), "the run's first step", || {
        last_step(&run) >= 1
    });
    let injected = inject(&run, &mut parent, faults, seed);
    let (status, out) = finish(parent, d, Duration::from_secs(300));
    assert!(status.success(), "oxrl run failed ({status}):\n{out}");

    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("restarts.json")).unwrap()).unwrap();
    let restarts = |role: &str| summary["by_role"][role].as_u64().unwrap_or(0);
    // The coordinator never exits on its own: each kill is one restart. The others may have
    // been finishing when killed (then there is nothing to restart).
    let kills = |role: &str| injected.kills.get(role).copied().unwrap_or(0);
    assert_eq!(restarts("coordinator"), kills("coordinator"), "{summary}");
    for role in ROLES {
        assert!(
            restarts(role) <= kills(role),
            "{role}: {summary} vs {injected:?}"
        );
    }
    let (steps, groups, dropped_stale) = check_invariants(&run, train_size, epochs);
    println!(
        "{}",
        serde_json::json!({
            "seed": seed, "train_size": train_size, "epochs": epochs,
            "faults": injected.total(), "kills": injected.kills, "stops": injected.stops,
            "restarts": summary["total"], "steps": steps, "groups_trained": groups,
            "groups_offered": train_size * epochs,
            "groups_trained_twice": 0, "prompt_epochs_missed": 0,
            "groups_dropped_stale_and_leased_again": dropped_stale,
            "retired": retired_problems(&run).len(), "max_lag_bound_violations": 0,
        })
    );
    assert!(
        injected.total() >= faults.min(4),
        "too few faults landed: {injected:?}"
    );
}

/// The schedule's seed: `OXRL_CHAOS_SEED`, or `default`.
fn seed(default: u64) -> u64 {
    std::env::var("OXRL_CHAOS_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
fn a_seeded_chaos_run_loses_nothing_and_trains_nothing_twice() {
    chaos(64, 2, 6, seed(2));
}

#[test]
#[ignore = "long: OXRL_CHAOS_FAULTS=30 cargo test --release --test chaos -- --ignored --nocapture"]
fn chaos_long() {
    let faults = std::env::var("OXRL_CHAOS_FAULTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    chaos(256, 3, faults, seed(11));
}
