//! The invariant everything in RL rests on: log-probs recorded while sampling equal the
//! teacher-forced log-probs of the same tokens under the same weights. Sampling goes through
//! `Policy::for_sampling` (transposed copies of the weights) and scoring through the policy
//! itself, as actors and the learner do.

mod common;

use policy::{
    generate, sample, score_sequences, FinishReason, ModelDir, Policy, SamplingParams, StepHook,
};

fn check_invariant(m: &ModelDir, temperature: f32) {
    let policy = m.policy().unwrap();
    let tok = &m.tokenizer;
    let prompts: Vec<Vec<u32>> = ["1+2=", "123+456=", "9", "sort 3 1 2:", "77*8="]
        .iter()
        .map(|p| tok.encode(p).unwrap())
        .collect();
    let params = SamplingParams {
        temperature,
        max_new_tokens: 12,
        // Random weights rarely emit EOS: stop on any digit too, so lengths vary.
        stop_tokens: tok
            .encode("0123456789")
            .unwrap()
            .into_iter()
            .chain([2])
            .collect(),
        seed: 3,
        ..Default::default()
    };
    let sampler = policy.for_sampling().unwrap();
    let out = generate(&sampler, prompts.clone(), &params, 0).unwrap();
    let seqs: Vec<Vec<u32>> = prompts
        .iter()
        .zip(&out)
        .map(|(p, c)| p.iter().chain(&c.tokens).copied().collect())
        .collect();
    let scored = score_sequences(&policy, &seqs, 0, temperature as f64).unwrap();
    let mut max_diff = 0f32;
    for ((p, c), s) in prompts.iter().zip(&out).zip(&scored) {
        assert_eq!(s.len(), p.len() + c.tokens.len() - 1);
        for (i, lp) in c.logprobs.iter().enumerate() {
            assert!(lp.is_finite() && *lp <= 0.0);
            max_diff = max_diff.max((lp - s[p.len() - 1 + i]).abs());
        }
    }
    assert!(
        max_diff < 1e-4,
        "sampled vs teacher-forced log-probs differ by {max_diff}"
    );
    let lengths: std::collections::HashSet<usize> = out.iter().map(|c| c.tokens.len()).collect();
    assert!(
        lengths.len() > 1,
        "completions should have mixed lengths: {lengths:?}"
    );
}

#[test]
fn sampled_logprobs_equal_teacher_forced_llama_gqa() {
    check_invariant(&common::model(&common::llama_config(), 1), 1.0);
}

#[test]
fn sampled_logprobs_equal_teacher_forced_qwen2_bias_tied() {
    check_invariant(&common::model(&common::qwen2_config(), 2), 1.0);
}

#[test]
fn sampled_logprobs_equal_teacher_forced_at_temperature() {
    check_invariant(&common::model(&common::llama_config(), 4), 0.7);
}

#[test]
fn a_sequence_scores_the_same_alone_and_in_a_padded_batch() {
    let m = common::model(&common::qwen2_config(), 5);
    let policy = m.policy().unwrap();
    let a: Vec<u32> = m.tokenizer.encode("12+34=46").unwrap();
    let b: Vec<u32> = m.tokenizer.encode("5=5").unwrap();
    let alone = score_sequences(&policy, std::slice::from_ref(&b), 0, 1.0).unwrap();
    let batched = score_sequences(&policy, &[a, b], 0, 1.0).unwrap();
    for (x, y) in alone[0].iter().zip(&batched[1]) {
        assert!((x - y).abs() < 1e-5, "{x} vs {y}");
    }
}

#[test]
fn same_seed_same_samples_and_stop_and_length_are_reported() {
    let m = common::model(&common::llama_config(), 6);
    let policy = m.policy().unwrap();
    let prompts = vec![m.tokenizer.encode("1+1=").unwrap(); 8];
    let params = SamplingParams {
        max_new_tokens: 5,
        stop_tokens: vec![2],
        seed: 11,
        ..Default::default()
    };
    let a = generate(&policy, prompts.clone(), &params, 0).unwrap();
    let b = generate(&policy, prompts.clone(), &params, 0).unwrap();
    assert_eq!(a, b);
    // Different rows draw from different streams.
    assert!(a.iter().any(|c| c.tokens != a[0].tokens));
    for c in &a {
        match c.finish {
            FinishReason::Stop => assert_eq!(c.tokens.last(), Some(&2)),
            FinishReason::Length => assert_eq!(c.tokens.len(), 5),
        }
    }
    let other = generate(&policy, prompts, &SamplingParams { seed: 12, ..params }, 0).unwrap();
    assert_ne!(a, other);
}

#[test]
fn weights_swapped_between_steps_are_recorded_per_token() {
    let m1 = common::model(&common::llama_config(), 7);
    let m2 = common::model(&common::llama_config(), 8);
    let (p1, p2) = (m1.policy().unwrap(), m2.policy().unwrap());
    let prompts = vec![m1.tokenizer.encode("2+2=").unwrap(); 3];
    let params = SamplingParams {
        max_new_tokens: 6,
        seed: 1,
        ..Default::default()
    };
    // A hook that hands over version 1 for the first three steps, then version 2.
    struct Swap<'a> {
        step: usize,
        p1: &'a Policy,
        p2: &'a Policy,
    }
    impl StepHook for Swap<'_> {
        fn weights(&mut self) -> Option<(&Policy, u64)> {
            self.step += 1;
            Some(if self.step <= 3 {
                (self.p1, 1)
            } else {
                (self.p2, 2)
            })
        }
    }
    let hook = &mut Swap {
        step: 0,
        p1: &p1,
        p2: &p2,
    };
    let out = sample(&prompts, &params, 0, hook).unwrap().unwrap();
    for c in out {
        let n = c.tokens.len();
        assert!(c.versions.iter().take(3.min(n)).all(|&v| v == 1));
        assert!(c.versions.iter().skip(3).all(|&v| v == 2));
    }
}

#[test]
fn greedy_is_deterministic_and_matches_argmax_of_scores() {
    let m = common::model(&common::llama_config(), 9);
    let policy = m.policy().unwrap();
    let prompt = m.tokenizer.encode("45+45=").unwrap();
    let params = SamplingParams {
        temperature: 0.0,
        max_new_tokens: 4,
        ..Default::default()
    };
    let c = generate(&policy, vec![prompt.clone()], &params, 0)
        .unwrap()
        .remove(0);
    // Each greedy token must be at least as likely as any other continuation.
    let seq: Vec<u32> = prompt.iter().chain(&c.tokens).copied().collect();
    let scored = score_sequences(&policy, &[seq], 0, 1.0).unwrap().remove(0);
    for (i, lp) in c.logprobs.iter().enumerate() {
        assert!((lp - scored[prompt.len() - 1 + i]).abs() < 1e-4);
        assert!(
            *lp >= (1.0f32 / m.config.vocab_size as f32).ln() - 1e-4,
            "greedy token below uniform"
        );
    }
}

/// Max absolute difference of two logit rows.
fn gap(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn rows_joining_mid_flight_decode_as_they_would_alone() {
    let m = common::model(&common::llama_config(), 9);
    let policy = m.policy().unwrap();
    let enc = |s: &str| m.tokenizer.encode(s).unwrap();
    let (a, b) = (enc("1+2="), enc("123+456="));
    let (mut d, _) = policy::Decoder::start(&policy, &[a.clone(), b.clone()], 0).unwrap();
    let feed = [enc("7"), enc("9")];
    d.step(&policy, &[feed[0][0], feed[1][0]]).unwrap();
    // c is shorter than the batch's 9 slots, e a turn later longer than them.
    let c = enc("9*9=");
    let e = enc("sort 5 2 9 1 7 3 8 4:");
    let joined = d.join(&policy, &[c.clone(), e.clone()], 0).unwrap();
    for (row, ctx) in [&c, &e].into_iter().enumerate() {
        let (_, alone) = policy::Decoder::start(&policy, std::slice::from_ref(ctx), 0).unwrap();
        assert!(gap(&joined[row], &alone[0]) < 1e-4, "joined row {row}");
    }
    // One more step for all four rows: each agrees with its own decoder run alone.
    let next = [3u32, 4, 5, 6];
    let stepped = d.step(&policy, &next).unwrap();
    let histories = [
        [a, feed[0].clone()].concat(),
        [b, feed[1].clone()].concat(),
        c,
        e,
    ];
    for (row, (hist, tok)) in histories.iter().zip(next).enumerate() {
        let (mut alone, _) =
            policy::Decoder::start(&policy, std::slice::from_ref(hist), 0).unwrap();
        let want = alone.step(&policy, &[tok]).unwrap();
        assert!(
            gap(&stepped[row], &want[0]) < 1e-4,
            "row {row} after the join"
        );
    }
}
