//! The learner step: filtering, rejection of bad groups, version bookkeeping, learning.

mod common;

use learner::{Learner, LearnerError};

fn weights_of(l: &Learner) -> Vec<f32> {
    l.model.vars()["model.norm.weight"]
        .as_tensor()
        .to_vec1::<f32>()
        .unwrap()
}

#[test]
fn nan_or_inf_is_rejected_before_it_reaches_the_weights() {
    let mut l = common::learner(1);
    let before = weights_of(&l);
    let good = common::group(&l.model, "g", "1+1=", &[("2", 1.0, 0.0), ("3", 0.0, 0.0)]);
    for corrupt in [f32::NAN, f32::INFINITY] {
        let mut bad = common::group(&l.model, "b", "2+2=", &[("4", 1.0, 0.0), ("5", 0.0, 0.0)]);
        bad.samples[1].logprobs[0] = corrupt;
        let err = l.step(&[good.clone(), bad]).unwrap_err();
        assert!(
            matches!(err, LearnerError::InvalidGroup { ref group, .. } if group == "b"),
            "{err}"
        );
        assert!(err.to_string().contains("log-prob"), "{err}");
    }
    let mut bad = common::group(
        &l.model,
        "r",
        "2+2=",
        &[("4", f32::NAN, 0.0), ("5", 0.0, 0.0)],
    );
    bad.samples[0].reward = f32::NAN;
    assert!(l.step(&[bad]).unwrap_err().to_string().contains("reward"));
    assert_eq!(weights_of(&l), before);
    assert_eq!(l.version(), 0);
}

#[test]
fn zero_variance_and_stale_groups_are_dropped_and_counted() {
    let mut l = common::learner(2);
    l.set_version(10);
    let at_version = |mut g: rollout::RolloutGroup, v: u64| {
        for s in &mut g.samples {
            s.versions = vec![v; s.tokens.len()];
        }
        g
    };
    let all_right = at_version(
        common::group(&l.model, "z1", "1+1=", &[("2", 1.0, 0.0), ("2", 1.0, 0.0)]),
        10,
    );
    let all_wrong = at_version(
        common::group(&l.model, "z0", "1+2=", &[("4", 0.0, 0.0), ("5", 0.0, 0.0)]),
        10,
    );
    let mut stale = common::group(&l.model, "s", "3+3=", &[("6", 1.0, 0.0), ("7", 0.0, 0.0)]);
    for s in &mut stale.samples {
        s.versions = vec![1; s.tokens.len()]; // lag 9 > k = 8
    }
    let before = weights_of(&l);
    let r = l
        .step(&[all_right.clone(), all_wrong.clone(), stale])
        .unwrap();
    assert_eq!(
        (r.zero_variance_groups, r.dropped_stale, r.tokens),
        (2, 1, 0)
    );
    // Of the 3 groups received (the stale one included), 2 had zero variance.
    assert!((r.zero_variance_frac - 2.0 / 3.0).abs() < 1e-12, "{r:?}");
    assert_eq!(
        r.zero_variance_ids,
        vec!["z1".to_string(), "z0".to_string()]
    );
    assert_eq!(l.version(), 10, "nothing to learn from: no new version");
    assert_eq!(weights_of(&l), before);

    let mut fresh = common::group(&l.model, "f", "3+3=", &[("6", 1.0, 0.0), ("7", 0.0, 0.0)]);
    for s in &mut fresh.samples {
        s.versions = vec![2; s.tokens.len()]; // lag 8 == k: allowed
    }
    let r = l.step(&[all_right, fresh]).unwrap();
    assert_eq!(l.version(), 11);
    assert_eq!(r.lag_max, 8);
    assert_eq!(r.lag_hist.get(&8).copied(), Some(2));
    assert_eq!(r.zero_variance_groups, 1);
    assert_eq!(r.zero_variance_frac, 0.5);
    assert_eq!(l.step(&[]).unwrap().zero_variance_frac, 0.0, "no prompts");
    assert!(r.grad_norm > 0.0 && r.loss.is_finite());
    assert_ne!(weights_of(&l), before);
}

#[test]
fn repeated_steps_raise_the_likelihood_of_rewarded_answers() {
    let mut l = common::learner(3);
    let score = |l: &Learner, text: &str| {
        let tok = &l.model.tokenizer;
        let seq: Vec<u32> = tok.encode(&format!("5+4={text}")).unwrap();
        let lp = policy::score_sequences(l.model.policy(), &[seq], 0, 1.0)
            .unwrap()
            .remove(0);
        lp[3..].iter().sum::<f32>()
    };
    let (right0, wrong0) = (score(&l, "9"), score(&l, "8"));
    for i in 0..15 {
        let g = common::group(
            &l.model,
            &format!("g{i}"),
            "5+4=",
            &[("9", 1.0, 0.0), ("8", 0.0, 0.0)],
        );
        for s in &g.samples {
            assert!(s.versions.iter().all(|&v| v == 0));
        }
        let mut g = g;
        for s in &mut g.samples {
            s.versions = vec![l.version(); s.tokens.len()];
        }
        l.step(&[g]).unwrap();
    }
    let (right1, wrong1) = (score(&l, "9"), score(&l, "8"));
    assert!(right1 > right0 + 0.5, "log p(right) {right0} -> {right1}");
    assert!(wrong1 < wrong0 - 0.5, "log p(wrong) {wrong0} -> {wrong1}");
}

#[test]
fn a_step_report_reads_back_from_its_metrics_line() {
    // A line as the pipeline writes it: lag_hist's keys are JSON strings.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("metrics.jsonl");
    let line = r#"{"step":1,"wall_s":0.13,"tokens_per_s":401.5,"version":1,"prompts":3,"samples":12,"tokens":32,"reward_mean":0.25,"pass_rate":0.25,"zero_variance_groups":1,"zero_variance_frac":0.3333333333333333,"dropped_stale":0,"truncated_frac":0.0,"loss":0.04,"grad_norm":1.6,"lr":1e-6,"rho_mean":1.0,"clip_frac":0.0,"lag_mean":0.5,"lag_max":2,"lag_hist":{"0":30,"2":2},"mixed_version_samples":0}"#;
    std::fs::write(&path, format!("{line}\n")).unwrap();
    let back = learner::metrics::read_metrics(&path).unwrap();
    assert_eq!(back.len(), 1);
    let report = &back[0].report;
    assert_eq!(report.lag_hist, [(0, 30), (2, 2)].into_iter().collect());
    assert!((report.zero_variance_frac - 1.0 / 3.0).abs() < 1e-12);
}

/// Every parameter of `l`, flattened in name order.
fn all_weights(l: &Learner) -> Vec<f32> {
    let vars = l.model.vars();
    let mut names: Vec<&String> = vars.keys().collect();
    names.sort();
    names
        .into_iter()
        .flat_map(|n| {
            vars[n]
                .as_tensor()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        })
        .collect()
}

#[test]
fn sharing_prompts_takes_the_step_that_written_out_sequences_take() {
    let shared = |on: bool| {
        let mut l = common::learner(7);
        l.config.share_prompts = on;
        l.config.micro_batch = 3; // micro-batches that split a group
        let m = &l.model;
        let groups = vec![
            common::group(
                m,
                "a",
                "12+34=",
                &[("46", 1.0, 0.1), ("47", 0.0, 0.0), ("4", 0.0, 0.2)],
            ),
            common::group(m, "b", "9+1=", &[("10", 1.0, 0.0), ("100", 0.0, 0.3)]),
        ];
        let before = all_weights(&l);
        let report = l.step(&groups).unwrap();
        let moved: Vec<f32> = all_weights(&l)
            .iter()
            .zip(&before)
            .map(|(a, b)| a - b)
            .collect();
        (report, moved)
    };
    let ((on, moved_on), (off, moved_off)) = (shared(true), shared(false));
    assert_eq!((on.tokens, on.samples), (off.tokens, off.samples));
    assert!(
        (on.loss - off.loss).abs() < 1e-5 * off.loss.abs().max(1.0),
        "{} / {}",
        on.loss,
        off.loss
    );
    assert!(
        (on.grad_norm - off.grad_norm).abs() < 1e-4 * off.grad_norm,
        "{} / {}",
        on.grad_norm,
        off.grad_norm
    );
    // AdamW's first step moves a weight by about lr times the sign of its gradient, so a
    // gradient that is zero up to float error may move either way: compare on average.
    let mean =
        |v: &mut dyn Iterator<Item = f32>| v.map(f64::from).sum::<f64>() / moved_off.len() as f64;
    let scale = mean(&mut moved_off.iter().map(|d| d.abs()));
    let off_by = mean(&mut moved_on.iter().zip(&moved_off).map(|(a, b)| (a - b).abs()));
    assert!(
        scale > 0.0 && off_by < 1e-2 * scale,
        "the steps differ by {off_by} of {scale}"
    );
}
