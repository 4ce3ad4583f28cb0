//! The asynchronous pipeline, as `oxrl run` starts it: separate processes on loopback.

mod common;

use common::{oxrl, oxrl_with_env, read_jsonl, sampled_start_and_end};

#[test]
fn pipelined_run_with_two_actors_learns_within_the_lag_bound() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    // actor-0 holds one lease after its first decode step until the learner's next version
    // lands (actor-1 feeds the learner meanwhile), so an in-flight swap inside a sequence is
    // certain, not a matter of timing; everything else runs as `oxrl run` always does.
    let args = [
        "run",
        "--out",
        run.to_str().unwrap(),
        "--steps",
        "24",
        "--eval-every",
        "12",
        "--eval-n",
        "300",
        "--seed",
        "1",
        "--actors",
        "2",
    ];
    oxrl_with_env(&args, &[("OXRL_TEST_HOLD_FOR_SWAP", "actor-0")]);
    let (before, after) = sampled_start_and_end(&run);
    assert!(
        after > before + 0.2,
        "held-out sampled pass@1 {before:.3} -> {after:.3}"
    );

    let lines = read_jsonl(&run.join("metrics.jsonl"));
    assert_eq!(lines.len(), 24);
    let k = 8;
    let mut mixed = 0;
    for l in &lines {
        assert!(
            l["lag_max"].as_u64().unwrap() <= k,
            "a token trained past the lag bound: {l}"
        );
        for lag in l["lag_hist"].as_object().unwrap().keys() {
            assert!(lag.parse::<u64>().unwrap() <= k);
        }
        mixed += l["mixed_version_samples"].as_u64().unwrap();
        // The learner's time, taken apart: its update, and its wait for the batch.
        assert!(l["update_s"].as_f64().unwrap() > 0.0, "{l}");
        assert!(l["wait_s"].as_f64().unwrap() >= 0.0, "{l}");
    }
    assert!(
        lines.iter().any(|l| l["lag_max"].as_u64().unwrap() > 0),
        "k = 8 should let some lag through"
    );
    assert!(
        mixed > 0,
        "no sequence spanned two versions: in-flight updates never happened"
    );
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("learner_summary.json")).unwrap())
            .unwrap();
    assert_eq!(summary["duplicates"], 0);
    // Both actors did work and exited by themselves.
    for i in 0..2 {
        let path = run.join(format!("logs/actor-{i}.json"));
        let actor: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert!(actor["groups_accepted"].as_u64().unwrap() > 0, "{actor}");
        if i == 0 {
            assert!(actor["in_flight_swaps"].as_u64().unwrap() >= 1, "{actor}");
        }
    }
}

#[test]
fn with_k_zero_every_token_is_on_policy() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    oxrl(&[
        "run",
        "--out",
        run.to_str().unwrap(),
        "--steps",
        "5",
        "--prompts-per-step",
        "8",
        "--group-size",
        "4",
        "--eval-every",
        "0",
        "--max-lag",
        "0",
        "--actors",
        "2",
    ]);
    let lines = read_jsonl(&run.join("metrics.jsonl"));
    assert_eq!(lines.len(), 5);
    for l in &lines {
        assert_eq!(l["lag_max"], 0, "{l}");
        let hist = l["lag_hist"].as_object().unwrap();
        assert!(hist.keys().all(|k| k == "0"), "{l}");
        assert_eq!(l["mixed_version_samples"], 0);
    }
    assert!(lines.iter().any(|l| l["tokens"].as_u64().unwrap() > 0));
}

#[test]
fn a_run_streaming_bf16_deltas_completes_and_reports_the_ratio_spread() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    oxrl(&[
        "run",
        "--out",
        run.to_str().unwrap(),
        "--steps",
        "3",
        "--prompts-per-step",
        "8",
        "--group-size",
        "4",
        "--eval-every",
        "0",
        "--actors",
        "1",
        "--weight-sync",
        "bf16-delta",
    ]);
    let lines = read_jsonl(&run.join("metrics.jsonl"));
    assert_eq!(lines.len(), 3);
    for l in &lines {
        let std = l["rho_std"].as_f64().unwrap();
        assert!(std.is_finite() && std >= 0.0, "{l}");
    }
    let config = std::fs::read_to_string(run.join("config.toml")).unwrap();
    assert!(config.contains("weight_sync = \"bf16-delta\""), "{config}");
}
