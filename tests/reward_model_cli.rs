//! `oxrl rm train` as a user runs it: a reward model directory with its curve and held-out
//! figures, which `oxrl eval --sampler best-of-rm:N --rm DIR` then ranks samples with; and
//! `best-of-rm:N` without `--rm` refused before anything runs.

mod common;

use common::{last_json, oxrl, oxrl_unchecked};

#[test]
fn rm_train_writes_a_classifier_its_curve_and_figures_and_eval_ranks_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let rm = dir.path().join("rm");
    let out = oxrl(&[
        "rm",
        "train",
        "--policy",
        "default",
        "--task",
        "addition:2",
        "--samples-per-prompt",
        "4",
        "--train-prompts",
        "8",
        "--eval-prompts",
        "4",
        "--steps",
        "4",
        "--batch-size",
        "8",
        "--max-new-tokens",
        "8",
        "--out",
        rm.to_str().unwrap(),
    ]);
    let report = last_json(&out);
    assert_eq!(report["train_samples"], 32);
    assert_eq!(report["held_out"]["n"], 16);
    let ece = report["held_out"]["ece"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&ece), "{report}");
    let curve = std::fs::read_to_string(rm.join("curve.jsonl")).unwrap();
    let steps: Vec<serde_json::Value> = curve
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(steps.len(), 4);
    assert_eq!(steps[3]["step"], 3);
    // A zero head starts at the loss of a coin: ln 2.
    assert!((steps[0]["loss"].as_f64().unwrap() - 2f64.ln()).abs() < 1e-4);
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(rm.join("config.json")).unwrap()).unwrap();
    assert_eq!(
        config["architectures"],
        serde_json::json!(["LlamaForSequenceClassification"])
    );
    assert!(rm.join("eval.json").exists() && rm.join("tokenizer.json").exists());

    let out = oxrl(&[
        "eval",
        "--n",
        "3",
        "--max-new-tokens",
        "8",
        "--sampler",
        "best-of:4,best-of-rm:4,majority:4",
        "--rm",
        rm.to_str().unwrap(),
    ]);
    let json = last_json(&out);
    let rows = json["samplers"].as_array().unwrap();
    assert_eq!(rows[1]["sampler"], "best-of-rm:4");
    assert_eq!(rows[1]["samples_per_problem"], 4);
    // One set of draws for all three.
    assert_eq!(rows[0]["tokens"], rows[1]["tokens"]);
    assert_eq!(rows[2]["tokens"], rows[1]["tokens"]);
    // The reward model is not a policy.
    let out = oxrl_unchecked(&["eval", "--n", "2", "--model", rm.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is a reward model"));
}

#[test]
fn best_of_rm_without_a_reward_model_is_a_clear_error() {
    let out = oxrl_unchecked(&["eval", "--n", "2", "--sampler", "greedy,best-of-rm:4"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("best-of-rm:4") && err.contains("--rm DIR"),
        "{err}"
    );
    let help = oxrl(&["eval", "--help"]);
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.contains("best-of-rm:N") && help.contains("--rm <RM>"),
        "{help}"
    );
}
