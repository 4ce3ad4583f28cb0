//! Exactly-once training across learner crashes, with the real binaries: a finite pool of
//! prompts, one epoch, the learner SIGKILLed twice between checkpoints and started again on
//! the same `--out`. Every prompt of the epoch is trained exactly once in the lineage of steps
//! that survived, and the run ends with its pool. A group that waits in the learner's queue
//! past the lag bound is dropped, and its prompt leased again and trained once.

mod common;

use common::supervised::signal;
use common::{
    learner_args, start_actor, start_coordinator, surviving_steps, wait_until, RoleProcess,
};
use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::time::Duration;

const PROMPTS: u64 = 20;

/// One epoch over `PROMPTS` prompts, two a step, a checkpoint every two steps.
fn write_config(dir: &Path) -> std::path::PathBuf {
    let text = format!(
        "train_size = {PROMPTS}\nepochs = 1\nsteps = 1000\nprompts_per_step = 2\ngroup_size = 4\n\
         eval_every = 0\ncheckpoint_every = 2\n\
         [update]\nmax_lag = 64\n\
         [pipeline]\nprompts_per_lease = 1\nlease_timeout_s = 6.0\nactor_timeout_s = 3.0\n\
         heartbeat_interval_ms = 100\nlearner_queue = 4\n"
    );
    common::write_run_config(dir, &text)
}

/// The steps of the lineage that survived, with their groups: a line of step `s` replaces
/// the lines of steps `>= s` written before it (they belonged to weights that were lost).
fn surviving_lineage(run: &Path) -> BTreeMap<u64, Vec<String>> {
    surviving_steps(&run.join("trained_groups.jsonl"))
        .into_iter()
        .map(|(step, line)| {
            let groups = line["groups"].as_array().unwrap().iter();
            (
                step,
                groups.map(|g| g.as_str().unwrap().to_string()).collect(),
            )
        })
        .collect()
}

/// The newest checkpoint's step (0: none yet).
fn latest_checkpoint(run: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(run.join("checkpoints")) else {
        return 0;
    };
    entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter_map(|n| n.strip_prefix("step-")?.parse().ok())
        .filter(|&s| {
            run.join(format!("checkpoints/step-{s}/state.json"))
                .exists()
        })
        .max()
        .unwrap_or(0)
}

/// Steps trained so far (lines of trained_groups.jsonl, all lives together: the file the
/// kills are timed by).
fn steps_logged(run: &Path) -> u64 {
    // Counted, not parsed: the learner may be halfway through a line.
    std::fs::read_to_string(run.join("trained_groups.jsonl"))
        .map(|text| text.lines().filter(|l| l.ends_with('}')).count() as u64)
        .unwrap_or(0)
}

/// Waits until the learner's newest step is past its newest checkpoint and at least `step`
/// (so its kill loses a step), then SIGKILLs it.
fn kill_between_checkpoints(learner: &mut RoleProcess, run: &Path, step: u64) {
    let past = || {
        let head = surviving_lineage(run)
            .keys()
            .next_back()
            .copied()
            .unwrap_or(0);
        head >= step && head > latest_checkpoint(run)
    };
    let pid = learner.child.id();
    wait_until(
        Duration::from_secs(90),
        &format!("step {step} or later, past the last checkpoint"),
        || {
            if !past() {
                return false;
            }
            // Frozen, it cannot write a checkpoint between this look and the kill.
            signal(pid, "-STOP");
            if past() {
                return true;
            }
            signal(pid, "-CONT");
            false
        },
    );
    learner.child.kill().unwrap();
    learner.child.wait().unwrap();
}

/// The test's coordinator, its learner (writing `dir/run`, logging to `l1.log`) and two
/// actors, started by hand.
fn start_by_hand(d: &Path) -> (RoleProcess, RoleProcess, Vec<RoleProcess>) {
    let cfg = write_config(d);
    let coord = start_coordinator(d, &cfg, &[]);
    let url = coord.url();
    let run = d.join("run");
    let learner = RoleProcess::start(
        &learner_args(&url, run.to_str().unwrap()),
        &d.join("l1.log"),
        true,
    );
    let actors = (0..2)
        .map(|i| {
            start_actor(
                &url,
                &format!("actor-{i}"),
                &d.join(format!("actor-{i}.log")),
            )
        })
        .collect();
    (coord, learner, actors)
}

#[test]
fn every_prompt_is_trained_exactly_once_though_the_learner_is_killed_twice() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (coord, mut learner, mut actors) = start_by_hand(d);
    let (url, run) = (coord.url(), d.join("run"));
    let run_s = run.to_str().unwrap().to_string();
    let args = learner_args(&url, &run_s);

    // Early in the epoch, then late in it (10 steps make the epoch).
    kill_between_checkpoints(&mut learner, &run, 3);
    let mut learner = RoleProcess::start(&args, &d.join("l2.log"), true);
    kill_between_checkpoints(&mut learner, &run, 7);
    let lost_before_end = steps_logged(&run);
    let mut learner = RoleProcess::start(&args, &d.join("l3.log"), true);
    let status = learner
        .wait(Duration::from_secs(120))
        .unwrap_or_else(|| panic!("the run did not end; see {}", d.display()));
    assert!(
        status.success(),
        "the last learner failed; see {}",
        d.display()
    );

    let lineage = surviving_lineage(&run);
    let trained: Vec<&String> = lineage.values().flatten().collect();
    let groups: HashSet<&String> = trained.iter().copied().collect();
    assert_eq!(
        groups.len(),
        trained.len(),
        "a group trained twice: {lineage:?}"
    );
    // Group ids are `lease-N/<problem id>`: one group per prompt, every prompt of the pool.
    let problems: HashSet<&str> = trained
        .iter()
        .map(|g| g.split_once('/').unwrap().1)
        .collect();
    assert_eq!(
        problems.len(),
        trained.len(),
        "a prompt trained twice: {lineage:?}"
    );
    assert_eq!(problems.len() as u64, PROMPTS, "prompts lost: {lineage:?}");
    // The kills really lost steps: more steps were logged than survive.
    let steps: Vec<u64> = lineage.keys().copied().collect();
    assert_eq!(steps, (1..=steps.len() as u64).collect::<Vec<_>>());
    assert!(steps_logged(&run) > steps.len() as u64 && lost_before_end > 0);
    let coordinator_log = std::fs::read_to_string(d.join("c.log")).unwrap();
    assert!(
        coordinator_log.contains("a learner restarted"),
        "nothing was leased again: {coordinator_log}"
    );
    for (i, actor) in actors.iter_mut().enumerate() {
        let status = actor
            .wait(Duration::from_secs(30))
            .unwrap_or_else(|| panic!("actor-{i} did not stop; see {}", d.display()));
        assert!(status.success(), "actor-{i} failed; see {}", d.display());
    }
    coord.stop();
}

/// `key=value` of the first line of `log` that contains `line` and `key=`.
fn logged_value(log: &str, line: &str, key: &str) -> Option<u64> {
    log.lines()
        .filter(|l| l.contains(line))
        .find_map(|l| l.split(&format!("{key}=")).nth(1))
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|digits| digits.parse().ok())
}

#[test]
fn weights_of_a_lost_future_are_dropped_and_groups_sampled_with_them_never_trained() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (coord, mut learner, mut actors) = start_by_hand(d);
    let (url, run) = (coord.url(), d.join("run"));
    let run_s = run.to_str().unwrap().to_string();
    let args = learner_args(&url, &run_s);
    kill_between_checkpoints(&mut learner, &run, 3);
    let ckpt = latest_checkpoint(&run);
    let saved: rollout::Lineage = serde_json::from_str(
        &std::fs::read_to_string(run.join(format!("checkpoints/step-{ckpt}/lineage.json")))
            .unwrap(),
    )
    .unwrap();
    let lost = saved.current();
    let state: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(run.join(format!("checkpoints/step-{ckpt}/state.json"))).unwrap(),
    )
    .unwrap();
    let ckpt_version = state["version"].as_u64().unwrap();

    let mut learner = RoleProcess::start(&args, &d.join("l2.log"), true);
    let push = |group_id: &str, version: u64| {
        let mut group = common::two_sample_group(group_id, "lease-999", "p", version);
        group.lineage = lost;
        let acks = tokio::runtime::Runtime::new()
            .unwrap()
            .block_on(common::push_acks(&learner.url(), vec![group]))
            .unwrap();
        acks[0].outcome
    };
    // Past the checkpoint, the dead life's versions are a lost future; up to it, the same
    // weights (refused here only for the made-up lease).
    let stale = proto::push_ack::Outcome::StaleLineage as i32;
    assert_eq!(push("made-up/1", ckpt_version + 1), stale);
    assert_ne!(push("made-up/2", ckpt_version), stale);

    // Every actor drops the old weights for the new life's.
    let l2 = std::fs::read_to_string(d.join("l2.log")).unwrap();
    let new = logged_value(&l2, "learner lineage", "lineage").expect("the new lineage logged");
    assert_ne!(new, lost);
    for i in 0..2 {
        let log = d.join(format!("actor-{i}.log"));
        wait_until(
            Duration::from_secs(30),
            "the actor takes the new lineage",
            || {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                logged_value(&text, "new learner lineage", "lineage") == Some(new)
            },
        );
    }
    let status = learner
        .wait(Duration::from_secs(120))
        .unwrap_or_else(|| panic!("the run did not end; see {}", d.display()));
    assert!(status.success(), "the learner failed; see {}", d.display());
    // The run still trained every prompt once, whatever was refused on the way.
    let trained: Vec<String> = surviving_lineage(&run).into_values().flatten().collect();
    let problems: HashSet<&str> = trained
        .iter()
        .map(|g| g.split_once('/').unwrap().1)
        .collect();
    assert_eq!(
        (problems.len(), trained.len() as u64),
        (PROMPTS as usize, PROMPTS)
    );
    for actor in &mut actors {
        assert!(actor
            .wait(Duration::from_secs(30))
            .is_some_and(|s| s.success()));
    }
    coord.stop();
}

/// The learner's version as the coordinator knows it.
async fn learner_version(url: &str) -> u64 {
    let mut c = proto::coordinator_client::CoordinatorClient::connect(url.to_string())
        .await
        .unwrap();
    c.status(proto::StatusRequest {})
        .await
        .unwrap()
        .into_inner()
        .learner_version
}

#[test]
fn a_group_dropped_past_the_lag_bound_has_its_prompt_leased_again_and_trained_once() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Lag bound 1; leases and actors that outlive the hand-made actor's silences.
    let text = format!(
        "train_size = {PROMPTS}\nepochs = 1\nsteps = 1000\nprompts_per_step = 2\ngroup_size = 4\n\
         eval_every = 0\ncheckpoint_every = 2\n\
         [update]\nmax_lag = 1\n\
         [pipeline]\nprompts_per_lease = 1\nlease_timeout_s = 120.0\nactor_timeout_s = 120.0\n\
         heartbeat_interval_ms = 100\n"
    );
    let cfg = common::write_run_config(d, &text);
    let coord = start_coordinator(d, &cfg, &[]);
    let (url, run) = (coord.url(), d.join("run"));
    let mut learner = RoleProcess::start(
        &learner_args(&url, run.to_str().unwrap()),
        &d.join("l.log"),
        true,
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    // A hand-made actor leases one prompt at version 0 and holds its group back.
    let mut c = rt
        .block_on(proto::coordinator_client::CoordinatorClient::connect(
            url.clone(),
        ))
        .unwrap();
    let lease = rt.block_on(common::probe_lease_with(&mut c, 1, Duration::from_secs(60)));
    let prompt = lease.prompts[0].clone();
    let _actors: Vec<RoleProcess> = (0..2)
        .map(|i| start_actor(&url, &format!("actor-{i}"), &d.join(format!("a{i}.log"))))
        .collect();
    wait_until(Duration::from_secs(120), "learner version 2", || {
        rt.block_on(learner_version(&url)) >= 2
    });
    // Sampled at version 0, the group is past the bound by the time the learner takes it.
    let group = common::two_sample_group(&prompt.group_id, &lease.lease_id, &prompt.problem_id, 0);
    let acks = rt
        .block_on(common::push_acks(&learner.url(), vec![group]))
        .unwrap();
    assert_eq!(acks[0].outcome, proto::push_ack::Outcome::Accepted as i32);
    // Acknowledged, so the actor completes its lease, as a real one does (it registered
    // before the real actors started: the coordinator named it actor-1).
    let complete = proto::CompleteRequest {
        member_id: "actor-1".into(),
        lease_id: lease.lease_id.clone(),
        results: vec![proto::ProblemResult {
            problem_id: prompt.problem_id.clone(),
            rewards: vec![0.0, 1.0],
        }],
    };
    assert!(
        rt.block_on(c.complete(complete))
            .unwrap()
            .into_inner()
            .accepted
    );
    let status = learner
        .wait(Duration::from_secs(180))
        .unwrap_or_else(|| panic!("the run did not end; see {}", d.display()));
    assert!(status.success(), "the learner failed; see {}", d.display());

    let log = std::fs::read_to_string(d.join("l.log")).unwrap();
    assert!(
        log.contains("dropped a group past the lag bound"),
        "no group was dropped; see {}",
        d.display()
    );
    let dropped: u64 = common::read_jsonl(&run.join("metrics.jsonl"))
        .iter()
        .map(|l| l["dropped_stale"].as_u64().unwrap_or(0))
        .sum();
    assert!(dropped >= 1);
    // Its prompt was leased again under the same group id, to a real actor, and trained
    // once; so was every other prompt of the epoch.
    let trained = common::trained_group_ids(&run);
    let times = trained.iter().filter(|g| **g == prompt.group_id).count();
    assert_eq!(times, 1, "{} in {trained:?}", prompt.group_id);
    let problems: HashSet<&str> = trained
        .iter()
        .map(|g| g.split_once('/').unwrap().1)
        .collect();
    assert_eq!(problems.len(), trained.len(), "a prompt trained twice");
    assert_eq!(problems.len() as u64, PROMPTS, "prompts lost: {trained:?}");
    coord.stop();
}
