//! A pipelined run whose prompt pool runs out ends by itself, long before its `steps`: the
//! coordinator sees the pool exhausted (the epochs done, or every prompt retired), the actors
//! stop, the learner trains the groups it holds (a last partial step), writes `final/` and a
//! checkpoint, and `oxrl run` exits 0. Each role's log says why it stopped.

mod common;

use common::read_jsonl;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Runs `oxrl run` on `config` into `run`, failing if it has not exited 0 within `deadline`.
fn run_until_it_ends(config: &str, run: &Path, deadline: Duration) {
    let dir = run.parent().unwrap();
    let config_path = dir.join("run.toml");
    std::fs::write(&config_path, config).unwrap();
    let stderr = dir.join("oxrl-run.log");
    let child = Command::new(env!("CARGO_BIN_EXE_oxrl"))
        .args(["run", "--config", config_path.to_str().unwrap()])
        .args(["--out", run.to_str().unwrap()])
        // The roles inherit it: their logs must hold the info lines saying why they stopped.
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .expect("the oxrl binary starts");
    common::wait_run_ok(child, &stderr, run, deadline);
}

fn log(run: &Path, role: &str) -> String {
    std::fs::read_to_string(run.join(format!("logs/{role}.log"))).unwrap()
}

/// The run ended by itself: `final/`, the last step's checkpoint, every prompt of the pool
/// trained on once, and each role saying why it stopped.
fn assert_ended_with_the_pool(run: &Path, prompts: u64, coordinator_reason: &str) {
    assert!(run.join("final/config.json").exists(), "no final/ weights");
    let lines = read_jsonl(&run.join("metrics.jsonl"));
    let steps = lines.len() as u64;
    assert!((1..100).contains(&steps), "{steps} steps");
    assert!(
        run.join(format!("checkpoints/step-{steps}/state.json"))
            .exists(),
        "no checkpoint of the last step"
    );
    let trained: u64 = lines.iter().map(|l| l["prompts"].as_u64().unwrap()).sum();
    assert_eq!(trained, prompts, "each prompt of the pool once: {lines:?}");
    for line in &lines {
        let frac = line["zero_variance_frac"].as_f64().unwrap();
        let expected =
            line["zero_variance_groups"].as_f64().unwrap() / line["prompts"].as_f64().unwrap();
        assert!((frac - expected).abs() < 1e-9, "{line}");
    }

    let coordinator = log(run, "coordinator");
    assert!(
        coordinator.contains("the prompt pool is exhausted")
            && coordinator.contains(coordinator_reason),
        "the coordinator did not say why:\n{coordinator}"
    );
    let learner = log(run, "learner");
    for said in [
        "prompt pool is exhausted",
        "the run ended with its rollouts",
    ] {
        assert!(
            learner.contains(said),
            "no {said:?} in the learner log:\n{learner}"
        );
    }
    for i in 0..2 {
        let actor = log(run, &format!("actor-{i}"));
        assert!(
            actor.contains("prompt pool is exhausted") && actor.contains("stopping"),
            "actor-{i} did not say why it stopped:\n{actor}"
        );
        // The summary line an actor prints when it returns cleanly.
        let summary = run.join(format!("logs/actor-{i}.json"));
        assert!(summary.exists(), "actor-{i} did not finish cleanly");
    }
}

#[test]
fn a_run_ends_when_its_epochs_are_done() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    // 8 prompts, one epoch, 3 prompts a step: steps of 3, 3 and a partial 2, then the end,
    // far short of the 100 steps configured.
    let config = r#"
train_size = 8
epochs = 1
steps = 100
prompts_per_step = 3
group_size = 4
eval_every = 0
checkpoint_every = 0

[pipeline]
actors = 2
prompts_per_lease = 2
"#;
    run_until_it_ends(config, &run, Duration::from_secs(240));
    assert_ended_with_the_pool(&run, 8, "the configured epochs are done");
    let lines = read_jsonl(&run.join("metrics.jsonl"));
    assert_eq!(
        lines.last().unwrap()["prompts"],
        2,
        "the last step is partial"
    );
}

#[test]
fn a_run_ends_when_every_prompt_is_retired() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    // Any pass rate retires a prompt after its first group: 6 prompts, each trained once.
    let config = r#"
train_size = 6
steps = 100
prompts_per_step = 4
group_size = 4
eval_every = 0
checkpoint_every = 0

[pipeline]
actors = 2
prompts_per_lease = 2
retire_pass_rate = 0.0
retire_min_samples = 4
pass_rate_window = 4
"#;
    run_until_it_ends(config, &run, Duration::from_secs(240));
    assert_ended_with_the_pool(&run, 6, "every prompt is retired");
}
