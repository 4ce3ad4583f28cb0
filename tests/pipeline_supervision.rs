//! `oxrl run` supervises its children: a learner, a coordinator and an actor SIGKILLed in the
//! middle of a run are restarted (the learner from its checkpoint, the coordinator from its
//! journal on its old address, the actor under its name) and the run finishes, while a
//! SIGSTOPped actor is left alone; a role that keeps crashing ends the run with its budget's
//! error and the end of its log.

mod common;

use common::supervised::{finish, last_step, pid, restarts_of, signal, start_run};
use common::{read_jsonl, wait_until, write_run_config};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A small, fast run whose roles are restarted after 100 ms (doubling to 1 s).
fn write_config(dir: &Path, steps: u64, max_restarts: u32) -> PathBuf {
    let text = format!(
        "steps = {steps}\nprompts_per_step = 4\ngroup_size = 8\neval_every = 0\ncheckpoint_every = 2\n\
         [update]\nmax_lag = 4\n\
         [pipeline]\nactors = 2\nprompts_per_lease = 2\nlease_timeout_s = 4.0\nactor_timeout_s = 3.0\n\
         heartbeat_interval_ms = 100\nlearner_queue = 8\nmax_restarts = {max_restarts}\n\
         restart_window_s = 60.0\nrestart_backoff_ms = 100\nrestart_backoff_max_ms = 1000\n"
    );
    write_run_config(dir, &text)
}

/// SIGKILLs `role` and waits until `oxrl run` has it running again under a new pid and the
/// run has made two more steps.
fn kill_and_see_it_restarted(run: &Path, role: &str) {
    let old = pid(run, role).unwrap();
    let step = last_step(run);
    signal(old, "-KILL");
    wait_until(
        Duration::from_secs(60),
        &format!("the {role} to be restarted"),
        || restarts_of(run, role) == 1 && pid(run, role).is_some_and(|p| p != old),
    );
    wait_until(
        Duration::from_secs(60),
        &format!("two steps past step {step} after the {role}'s restart"),
        || last_step(run) >= step + 2,
    );
}

#[test]
fn oxrl_run_restarts_a_killed_learner_coordinator_and_actor_and_finishes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (run, steps) = (d.join("run"), 60);
    let config = write_config(d, steps, 5);
    let parent = start_run(d, &config, &run, &[]);
    wait_until(Duration::from_secs(120), "the run's first steps", || {
        last_step(&run) >= 3
    });

    kill_and_see_it_restarted(&run, "actor-0");
    // A stopped child is not a crash: the run goes on with the other actor, and the stopped one
    // carries on, the same process, once continued.
    let frozen = pid(&run, "actor-1").unwrap();
    let step = last_step(&run);
    signal(frozen, "-STOP");
    wait_until(
        Duration::from_secs(60),
        "two steps with actor-1 stopped",
        || last_step(&run) >= step + 2,
    );
    signal(frozen, "-CONT");
    assert_eq!(restarts_of(&run, "actor-1"), 0);
    assert_eq!(pid(&run, "actor-1"), Some(frozen));
    kill_and_see_it_restarted(&run, "learner");
    kill_and_see_it_restarted(&run, "coordinator");
    let (status, out) = finish(parent, d, Duration::from_secs(180));
    assert!(status.success(), "oxrl run failed ({status}):\n{out}");

    // One restart each, recorded, summed up and said on the terminal.
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("restarts.json")).unwrap()).unwrap();
    assert_eq!(summary["total"], 3, "{summary}");
    for (role, n) in [
        ("coordinator", 1),
        ("learner", 1),
        ("actor-0", 1),
        ("actor-1", 0),
    ] {
        assert_eq!(summary["by_role"][role], n, "{role}: {summary}");
    }
    assert!(
        out.contains("restarts: actor-0 1, coordinator 1, learner 1"),
        "{out}"
    );
    assert_eq!(
        out.matches("a role crashed; restarting it").count(),
        3,
        "{out}"
    );
    assert_eq!(
        out.matches("was killed by signal 9 (SIGKILL)").count(),
        3,
        "{out}"
    );
    for line in read_jsonl(&run.join("logs/restarts.jsonl")) {
        assert_eq!(line["signal"], 9, "{line}");
        assert!(line["log"].as_str().unwrap().ends_with(".log"), "{line}");
    }
    // The coordinator came back from its journal, which `oxrl run` keeps in the run.
    assert!(run.join("coordinator.journal").exists());
    let coordinator_log = std::fs::read_to_string(run.join("logs/coordinator.log")).unwrap();
    assert!(
        coordinator_log.contains("replayed the journal"),
        "{coordinator_log}"
    );
    let learner_log = std::fs::read_to_string(run.join("logs/learner.log")).unwrap();
    assert!(
        learner_log.contains("----- oxrl run: restart 1 -----"),
        "the learner's log should keep both lives"
    );

    // Training went on to the end: every step in the surviving lineage (a step trained again
    // after the learner's restart replaces the lost one), versions never going back.
    let mut by_step = std::collections::BTreeMap::new();
    for line in read_jsonl(&run.join("metrics.jsonl")) {
        by_step.insert(
            line["step"].as_u64().unwrap(),
            line["version"].as_u64().unwrap(),
        );
    }
    assert_eq!(
        by_step.keys().copied().collect::<Vec<_>>(),
        (1..=steps).collect::<Vec<_>>()
    );
    let versions: Vec<u64> = by_step.values().copied().collect();
    assert!(versions.windows(2).all(|w| w[0] <= w[1]), "{versions:?}");
    assert!(versions.last().unwrap() > &versions[0], "{versions:?}");
}

/// Makes every checkpoint of `run` unreadable: a restarted learner fails as it resumes.
fn corrupt_checkpoints(run: &Path) {
    for entry in std::fs::read_dir(run.join("checkpoints")).unwrap() {
        let state = entry.unwrap().path().join("state.json");
        if state.exists() {
            std::fs::write(&state, "{ not json").unwrap();
        }
    }
}

#[test]
fn a_role_that_keeps_crashing_ends_the_run_with_the_end_of_its_log() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let run = d.join("run");
    // The flag overrides the config's budget of 5.
    let config = write_config(d, 400, 5);
    let parent = start_run(d, &config, &run, &["--max-restarts", "2"]);
    wait_until(
        Duration::from_secs(120),
        "the run's first checkpoint",
        || {
            std::fs::read_dir(run.join("checkpoints"))
                .is_ok_and(|mut dirs| dirs.any(|e| e.unwrap().path().join("state.json").exists()))
        },
    );
    // Frozen, no checkpoint can appear while the others are spoilt; then killed.
    let learner = pid(&run, "learner").unwrap();
    signal(learner, "-STOP");
    corrupt_checkpoints(&run);
    signal(learner, "-KILL");

    let (status, out) = finish(parent, d, Duration::from_secs(120));
    assert!(!status.success(), "the run should fail:\n{out}");
    assert!(
        out.contains("the learner exited with code 1 and has used its restarts (2 within 60 s"),
        "{out}"
    );
    assert!(out.contains("The last lines of"), "{out}");
    // The learner's own error, quoted from its log: what the person must fix.
    assert!(out.contains("state.json"), "{out}");
    assert!(!out.contains("panicked"), "{out}");
    assert!(!out.to_lowercase().contains("backtrace"), "{out}");
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("restarts.json")).unwrap()).unwrap();
    assert_eq!(summary["by_role"]["learner"], 2, "{summary}");
    let restarts = read_jsonl(&run.join("logs/restarts.jsonl"));
    assert_eq!(restarts[0]["signal"], 9);
    assert_eq!(restarts[1]["code"], 1);
    // Backoff doubles: 100 ms, then 200 ms.
    assert_eq!(restarts[0]["delay_ms"], 100);
    assert_eq!(restarts[1]["delay_ms"], 200);
}
