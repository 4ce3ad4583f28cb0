//! Beam search is exact when wide enough: with a width of at least the number of possible
//! completions it returns the most likely one, found here by brute force on a tiny model.

mod common;

use common::*;
use policy::{generate, FinishReason, SamplingParams};
use rollout::ttc::{beam_search, BeamParams};

/// Index of the largest value, checking that it wins by a margin float noise cannot flip.
fn clear_argmax(values: &[f64]) -> usize {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| values[b].total_cmp(&values[a]));
    assert!(
        values[order[0]] - values[order[1]] > 1e-3,
        "the best two are too close to test: {} vs {}",
        values[order[0]],
        values[order[1]]
    );
    order[0]
}

#[test]
fn a_beam_as_wide_as_the_space_finds_the_most_likely_sequence() {
    // 5 tokens, completions of exactly 4: 625 of them. Prompts of different lengths share a
    // batch.
    let policy = tiny_policy(5, 1, 10.0);
    let outcomes = all_sequences(5, 4);
    let prompts = vec![vec![1u32, 2], vec![3], vec![4, 4, 0]];
    let params = BeamParams {
        width: outcomes.len(),
        length_normalised: false,
        max_new_tokens: 4,
        stop_tokens: Vec::new(),
    };
    let out = beam_search(&policy, &prompts, &params, 0).unwrap();
    for (prompt, beam) in prompts.iter().zip(&out.best) {
        let logp = completion_logprobs(&policy, prompt, &outcomes, 1.0);
        let best = clear_argmax(&logp);
        assert_eq!(beam.tokens, outcomes[best], "prompt {prompt:?}");
        assert!((beam.score - logp[best]).abs() < 1e-4);
        let recorded: f64 = beam.logprobs.iter().map(|&l| l as f64).sum();
        assert!((recorded - logp[best]).abs() < 1e-4);
        assert_eq!(beam.finish, FinishReason::Length);
    }
    // Nothing pruned: every prefix of every prompt was extended once.
    assert_eq!(out.tokens, prompts.len() * (5 + 25 + 125 + 625));
}

#[test]
fn a_wide_beam_with_a_stop_token_is_exact_by_total_and_by_mean_log_prob() {
    // Token 0 stops: 1 + 4 + 16 + 64 * 5 = 341 completions of 1 to 4 tokens.
    let policy = tiny_policy(5, 9, 8.0);
    let prompt = vec![2u32, 3];
    let outcomes = all_stopping_sequences(5, 0, 4);
    assert_eq!(outcomes.len(), 341);
    let logp = completion_logprobs(&policy, &prompt, &outcomes, 1.0);
    let mean: Vec<f64> = logp
        .iter()
        .zip(&outcomes)
        .map(|(l, s)| l / s.len() as f64)
        .collect();
    for length_normalised in [false, true] {
        let params = BeamParams {
            width: outcomes.len(),
            length_normalised,
            max_new_tokens: 4,
            stop_tokens: vec![0],
        };
        let beam = beam_search(&policy, std::slice::from_ref(&prompt), &params, 0)
            .unwrap()
            .best
            .remove(0);
        let scores = if length_normalised { &mean } else { &logp };
        let best = clear_argmax(scores);
        assert_eq!(
            beam.tokens, outcomes[best],
            "normalised: {length_normalised}"
        );
        assert!((beam.score - scores[best]).abs() < 1e-4);
    }
    assert_ne!(
        clear_argmax(&logp),
        clear_argmax(&mean),
        "pick a model where length normalisation changes the answer"
    );
}

#[test]
fn a_width_one_beam_is_greedy_decoding() {
    let policy = tiny_policy(6, 5, 10.0);
    let prompts = vec![vec![1u32, 2, 3], vec![4], vec![5, 1]];
    let params = BeamParams {
        width: 1,
        length_normalised: false,
        max_new_tokens: 6,
        stop_tokens: vec![0],
    };
    let beams = beam_search(&policy, &prompts, &params, 0).unwrap().best;
    let greedy = generate(
        &policy,
        prompts.clone(),
        &SamplingParams {
            temperature: 0.0,
            max_new_tokens: 6,
            stop_tokens: vec![0],
            ..Default::default()
        },
        0,
    )
    .unwrap();
    for (b, g) in beams.iter().zip(&greedy) {
        assert_eq!(b.tokens, g.tokens);
        assert_eq!(b.finish, g.finish);
    }
}
