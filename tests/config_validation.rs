//! Values that cannot be meant are refused before any work, by every entry point, with the
//! field (its TOML path or flag) and its allowed range: `oxrl run` (sync and pipeline),
//! `oxrl coordinator --config`, `oxrl sft` and `oxrl eval`.

mod common;

use common::{oxrl_unchecked, write_run_config};
use std::process::Output;

/// Asserts `out` failed, without output on stdout, and that its stderr names every `words`.
fn refused(out: &Output, words: &[&str]) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "accepted; stderr:\n{stderr}");
    for word in words {
        assert!(stderr.contains(word), "no {word:?} in:\n{stderr}");
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        !stdout.contains("OXRL_LISTENING") && !stdout.contains("accuracy"),
        "it started working:\n{stdout}"
    );
}

#[test]
fn run_refuses_a_negative_or_nan_learning_rate_before_doing_work() {
    let dir = tempfile::tempdir().unwrap();
    for lr in ["--lr=-1", "--lr=nan", "--lr=inf"] {
        let out_dir = dir.path().join(lr.trim_start_matches("--lr="));
        let out = oxrl_unchecked(&[
            "run",
            "--sync",
            lr,
            "--steps",
            "1",
            "--out",
            out_dir.to_str().unwrap(),
        ]);
        refused(&out, &["update.lr", "(0, 1]"]);
        assert!(!out_dir.exists(), "{lr}: the run directory was made");
    }
}

#[test]
fn the_pipeline_refuses_a_bad_config_file_by_its_toml_path() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_run_config(dir.path(), "group_size = 1\n");
    let out_dir = dir.path().join("run");
    let out = oxrl_unchecked(&[
        "run",
        "--config",
        config.to_str().unwrap(),
        "--out",
        out_dir.to_str().unwrap(),
    ]);
    refused(&out, &["group_size = 1", ">= 2"]);
    assert!(!out_dir.exists());
}

#[test]
fn the_coordinator_refuses_a_bad_config_before_listening() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "[pipeline]\nactor_timeout_s = 0.0\n[update]\nlr = 3e-4\n",
            ["pipeline.actor_timeout_s = 0", "(0, 604800]"],
        ),
        (
            "[update.objective]\nkind = \"cispo\"\neps_max = nan\n",
            ["update.objective.eps_max = NaN", "(0, inf)"],
        ),
    ];
    for (text, words) in cases {
        let config = write_run_config(dir.path(), text);
        let out = oxrl_unchecked(&[
            "coordinator",
            "--listen",
            "127.0.0.1:0",
            "--config",
            config.to_str().unwrap(),
        ]);
        refused(&out, &words);
    }
}

#[test]
fn eval_refuses_zero_problems_and_sft_a_nan_learning_rate() {
    // `oxrl eval --n 0` printed an accuracy of -0.0.
    refused(&oxrl_unchecked(&["eval", "--n", "0"]), &["--n = 0", ">= 1"]);
    refused(
        &oxrl_unchecked(&["eval", "--n", "4", "--top-p", "0"]),
        &["--top-p = 0"],
    );
    // `oxrl generate` shares eval's sampling flags, and their check.
    refused(
        &oxrl_unchecked(&["generate", "--prompt", "1+2=", "--temperature=nan"]),
        &["--temperature = NaN"],
    );
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("sft");
    refused(
        &oxrl_unchecked(&["sft", "--lr=nan", "--out", out_dir.to_str().unwrap()]),
        &["lr = NaN"],
    );
    assert!(!out_dir.exists());
}

#[test]
fn the_example_run_configs_parse_and_validate() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/episodes");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let text = std::fs::read_to_string(&path).unwrap();
            let cfg: rollout::config::RunConfig =
                toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            cfg.validate()
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert_ne!(cfg.episode.env, "single", "{}", path.display());
            seen += 1;
        }
    }
    assert!(seen >= 2, "the episode examples are missing");
}
