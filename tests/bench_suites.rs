//! The benchmark suites run end to end and report figures against their same-run baselines
//! (the figures themselves are checked by reading them, in BENCHMARKS.md, not here).

mod common;

fn last_json(out: &std::process::Output) -> serde_json::Value {
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.lines().last().expect("a JSON line")).unwrap()
}

#[test]
fn weights_suite_compares_grpc_with_raw_tcp_of_the_same_bytes() {
    let out = common::oxrl(&["bench", "weights", "--large", "false", "--reps", "1"]);
    let json = last_json(&out);
    assert_eq!(json["suite"], "weights");
    let row = &json["rows"][0];
    assert_eq!(row["model"], "default");
    // Every fp32 parameter crossed both transports.
    let t = &row["transport"];
    assert_eq!(t["bytes"].as_u64(), row["params"].as_u64().map(|p| p * 4));
    for key in ["grpc_over_raw", "kept_over_raw", "grpc_over_kept"] {
        let ratio = t[key].as_f64().unwrap();
        assert!(ratio > 0.0 && ratio.is_finite(), "{key}: {row}");
    }
    for stage in ["encode_s", "crc_s", "transfer_s", "decode_s", "tensors_s"] {
        assert!(
            row["stages"][stage].as_f64().unwrap() > 0.0,
            "{stage}: {row}"
        );
    }
    // Every mode arrived as it promises (the suite checks the tensors), in fewer bytes than
    // the whole fp32 version except that one itself.
    let modes = row["modes"].as_array().unwrap();
    let names: Vec<_> = modes.iter().map(|m| m["mode"].as_str().unwrap()).collect();
    assert_eq!(names, ["full", "bf16", "delta", "bf16-delta"]);
    let full = t["bytes"].as_u64().unwrap();
    assert_eq!(modes[0]["wire_bytes"].as_u64(), Some(full));
    assert_eq!(modes[1]["wire_bytes"].as_u64(), Some(full / 2));
    for m in &modes[2..] {
        assert!(m["wire_bytes"].as_u64().unwrap() < full, "{m}");
    }
}

#[test]
fn learner_suite_reports_the_step_against_the_forward_pass() {
    let out = common::oxrl(&[
        "bench",
        "learner",
        "--quick",
        "--reps",
        "1",
        "--groups",
        "2",
        "--peak-tflops",
        "1",
    ]);
    let json = last_json(&out);
    assert_eq!(json["suite"], "learner");
    let row = &json["results"][0];
    assert_eq!(row["device"], "cpu");
    // MFU is the model FLOPs (6 per parameter per trained token) over the peak given.
    let tok_s = row["train_step_tok_s"].as_f64().unwrap();
    let params = row["params"].as_f64().unwrap();
    let mfu = row["mfu"].as_f64().unwrap();
    assert!(mfu > 0.0, "{row}");
    assert!((mfu - 6.0 * params * tok_s / 1e12).abs() < 1e-9, "{row}");
    let (fwd, step) = (
        row["forward_tok_s"].as_f64().unwrap(),
        row["train_step_tok_s"].as_f64().unwrap(),
    );
    // A training step does a forward pass and more: it cannot be faster than one.
    assert!(step > 0.0 && step < fwd, "{row}");
}

#[test]
fn a_gpu_device_on_a_cpu_build_is_a_clear_error() {
    for suite in ["decode", "learner"] {
        let out = common::oxrl_unchecked(&["bench", suite, "--quick", "--device", "cuda"]);
        assert!(!out.status.success(), "{suite}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("--features cuda"), "{suite}: {err}");
    }
}

#[test]
fn step_suite_times_whole_rl_steps_by_phase_and_a_missing_torch_is_a_skip() {
    let out = common::oxrl_with_env(
        &[
            "bench",
            "step",
            "--steps",
            "1",
            "--prompts",
            "2",
            "--group-size",
            "4",
            "--torch",
        ],
        &[("OXRL_TORCH_BASELINE", "/nonexistent/torch_baseline.sh")],
    );
    let json = last_json(&out);
    assert_eq!(json["suite"], "step");
    assert_eq!(json["prompts"], 2);
    // The update shares each prompt among its group's completions, as runs do by default.
    assert_eq!(json["share_prompts"], true);
    let f = |k: &str| json[k].as_f64().unwrap();
    assert!(f("sample_s") > 0.0 && f("update_s") > 0.0, "{json}");
    // One timed step: its whole is the sum of its phases.
    assert!(
        (f("step_s") - f("sample_s") - f("update_s")).abs() < 1e-9,
        "{json}"
    );
    assert!((0.0..=1.0).contains(&f("pass_rate")), "{json}");
    // No PyTorch here: the baseline is skipped with the reason, and the suite still succeeds.
    let why = json["torch"]["skipped"].as_str().unwrap();
    assert!(why.contains("not found"), "{why}");
}

#[test]
fn pipeline_suite_reports_the_overlap_bound() {
    let out = common::oxrl(&[
        "bench",
        "pipeline",
        "--steps",
        "2",
        "--prompts-per-step",
        "4",
        "--group-size",
        "2",
    ]);
    let json = last_json(&out);
    assert_eq!(json["suite"], "pipeline");
    let f = |k: &str| json[k].as_f64().unwrap();
    assert!(
        f("generation_alone_s") > 0.0 && f("training_alone_s") > 0.0,
        "{json}"
    );
    let bound = f("generation_alone_s").max(f("training_alone_s"));
    assert!(
        (f("overlap_ratio") - f("learner_wall_s_k") / bound).abs() < 1e-9,
        "{json}"
    );
    // The pipelined run did both kinds of work: it cannot beat the slower one done alone
    // by much (a ratio far below 1 would mean the bound measures something else).
    assert!(f("overlap_ratio") > 0.5, "{json}");
}

#[test]
fn matmul_suite_times_each_product_of_a_layer_and_the_head() {
    let out = common::oxrl(&["bench", "matmul", "--quick", "--rows", "64", "--reps", "1"]);
    let json = last_json(&out);
    assert_eq!(json["suite"], "matmul");
    let rows = json["results"].as_array().unwrap();
    let products: Vec<_> = rows
        .iter()
        .map(|r| r["product"].as_str().unwrap())
        .collect();
    assert_eq!(products, ["q/o", "k/v", "up/gate", "down", "lm head"]);
    for r in rows {
        assert_eq!(r["m"], 64);
        assert!(r["gflops"].as_f64().unwrap() > 0.0, "{r}");
        assert!(r["grad_w_gflops"].as_f64().unwrap() > 0.0, "{r}");
        assert!(r["kept_t_gflops"].as_f64().unwrap() > 0.0, "{r}");
    }
}

#[test]
fn journal_suite_times_the_whole_journal_against_snapshot_and_tail() {
    let out = common::oxrl(&[
        "bench",
        "journal",
        "--records",
        "2000",
        "--compact-every",
        "700",
    ]);
    let json = last_json(&out);
    assert_eq!(json["suite"], "journal");
    let n = |key: &str| json[key].as_f64().unwrap_or(f64::NAN);
    assert!(n("records") >= 2000.0, "{json}");
    // Compacted every 700 records: the tail holds fewer, and the snapshot exists.
    assert!(n("tail_records") < 700.0, "{json}");
    assert!(n("snapshot_bytes") > 0.0, "{json}");
    assert!(
        n("full_open_s") > 0.0 && n("compacted_open_s") > 0.0,
        "{json}"
    );
    assert!(n("full_over_compacted").is_finite(), "{json}");
}
