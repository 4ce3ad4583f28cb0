//! The synchronous RL loop: it learns (fixed seeds, measured on held-out problems), its
//! metrics follow the documented schema, and a stopped run resumes exactly.

mod common;

use common::{oxrl, read_jsonl, sampled_start_and_end};

/// The RL effect users look at: what the policy samples (T = 1) on held-out problems, measured
/// by the run itself at step 0 and at its end. Defaults but the step count; fixed seed.
#[test]
fn sync_rl_raises_held_out_sampled_pass_rate() {
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path().join("run");
    let out = oxrl(&[
        "run",
        "--sync",
        "--out",
        run_dir.to_str().unwrap(),
        "--steps",
        "24",
        "--eval-every",
        "12",
        "--eval-n",
        "300",
        "--seed",
        "1",
    ]);
    let (before, after) = sampled_start_and_end(&run_dir);
    assert!(
        after > before + 0.2,
        "held-out sampled pass@1 {before:.3} -> {after:.3}"
    );
    // The final line says where it started and where it ended, and the curve is drawn.
    let stdout = String::from_utf8_lossy(&out.stdout);
    let expected = format!("held-out pass@1 sampled {before:.3} -> {after:.3}");
    assert!(stdout.contains(&expected), "{stdout}");
    let png = std::fs::read(run_dir.join("curve.png")).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
}

const SCHEMA: [&str; 18] = [
    "step",
    "version",
    "wall_s",
    "update_s",
    "prompts",
    "samples",
    "tokens",
    "reward_mean",
    "pass_rate",
    "zero_variance_groups",
    "dropped_stale",
    "truncated_frac",
    "loss",
    "grad_norm",
    "lr",
    "lag_mean",
    "lag_max",
    "lag_hist",
];

fn small_run(out: &std::path::Path, steps: &str, resume: bool) {
    let dir = out.to_str().unwrap();
    let mut args = vec![
        "run",
        "--sync",
        "--steps",
        steps,
        "--prompts-per-step",
        "4",
        "--group-size",
        "4",
        "--eval-every",
        "2",
        "--eval-n",
        "20",
        "--checkpoint-every",
        "2",
        "--seed",
        "3",
    ];
    if resume {
        args.extend(["--resume", dir]);
    } else {
        args.extend(["--out", dir]);
    }
    oxrl(&args);
}

#[test]
fn a_stopped_run_resumes_with_the_same_versions_and_samples() {
    let dir = tempfile::tempdir().unwrap();
    let (whole, split) = (dir.path().join("whole"), dir.path().join("split"));
    small_run(&whole, "4", false);
    small_run(&split, "2", false);
    small_run(&split, "4", true);
    let (a, b) = (
        read_jsonl(&whole.join("metrics.jsonl")),
        read_jsonl(&split.join("metrics.jsonl")),
    );
    assert_eq!(a.len(), 4);
    assert_eq!(b.len(), 4);
    for (x, y) in a.iter().zip(&b) {
        for key in SCHEMA {
            assert!(x.get(key).is_some(), "metrics line lacks {key}: {x}");
        }
        for key in [
            "step",
            "version",
            "reward_mean",
            "samples",
            "tokens",
            "zero_variance_groups",
        ] {
            assert_eq!(x[key], y[key], "{key} differs after resume");
        }
        assert_eq!(x["lag_max"], 0, "the synchronous loop has no lag");
        assert!(x["update_s"].as_f64().unwrap() > 0.0, "{x}");
        assert!(
            x.get("wait_s").is_none(),
            "the synchronous loop waits for no batch: {x}"
        );
        let loss = |v: &serde_json::Value| v["loss"].as_f64().unwrap();
        assert!(
            (loss(x) - loss(y)).abs() < 1e-5,
            "loss differs after resume: {x} vs {y}"
        );
    }
    let versions: Vec<u64> = b.iter().map(|l| l["version"].as_u64().unwrap()).collect();
    assert!(
        versions.windows(2).all(|w| w[1] >= w[0]),
        "versions must not go back: {versions:?}"
    );
    assert!(split.join("checkpoints/step-4/state.json").exists());
    let cfg = std::fs::read_to_string(split.join("config.toml")).unwrap();
    assert!(
        cfg.contains("prompts_per_step = 4"),
        "config in force is saved: {cfg}"
    );
}

#[test]
fn malformed_and_unknown_config_keys_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    std::fs::write(&cfg, "steps = 3\nstepz = 4\n").unwrap();
    let out = common::oxrl_unchecked(&[
        "run",
        "--sync",
        "--config",
        cfg.to_str().unwrap(),
        "--out",
        dir.path().join("r").to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("stepz") && err.contains("bad.toml"), "{err}");
    std::fs::write(&cfg, "steps = \"three\"\n").unwrap();
    let out = common::oxrl_unchecked(&[
        "run",
        "--sync",
        "--config",
        cfg.to_str().unwrap(),
        "--out",
        dir.path().join("r").to_str().unwrap(),
    ]);
    assert!(!out.status.success());
}
