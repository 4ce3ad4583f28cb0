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

#[test]
fn rm_score_prints_the_models_scores_batched_or_alone_and_refuses_a_wrong_token() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("rm");
    common::write_reward_model(&model, 5);
    let tok = policy::tokenizer::char_tokenizer();
    let seqs: Vec<Vec<u32>> = ["12+34=46", "7+5=", "1", "99+99=198\n"]
        .iter()
        .map(|t| tok.encode(t).unwrap())
        .collect();
    let ids = dir.path().join("ids.json");
    std::fs::write(&ids, serde_json::json!({ "sequences": seqs }).to_string()).unwrap();
    let rm =
        policy::RewardModelDir::load(&model, &candle_core::Device::Cpu, candle_core::DType::F32)
            .unwrap()
            .model()
            .unwrap();
    for batch in ["64", "1"] {
        let out = oxrl(&[
            "rm",
            "score",
            "--model",
            model.to_str().unwrap(),
            "--ids-json",
            ids.to_str().unwrap(),
            "--batch",
            batch,
        ]);
        let scores = last_json(&out)["scores"].as_array().unwrap().clone();
        assert_eq!(scores.len(), seqs.len());
        for (seq, got) in seqs.iter().zip(&scores) {
            let alone = rm.scores(std::slice::from_ref(seq), 0).unwrap()[0];
            let got = got.as_f64().unwrap() as f32;
            assert!(
                (alone - got).abs() < 1e-5,
                "batch {batch}: {got} vs {alone}"
            );
        }
    }
    std::fs::write(&ids, r#"{"sequences": [[1, 100000]]}"#).unwrap();
    let out = oxrl_unchecked(&[
        "rm",
        "score",
        "--model",
        model.to_str().unwrap(),
        "--ids-json",
        ids.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("vocabulary"));
}
