//! Power sampling is exact: on a model with a tiny vocabulary, where every completion can be
//! enumerated, the histogram of power samples matches normalised `p^alpha`, which sampling
//! at temperature `1/alpha` does not.

mod common;

use common::*;
use policy::{generate, SamplingParams};
use rollout::ttc::{power_sample, PowerParams};

const ALPHA: f64 = 4.0;
const CHAINS: usize = 20_000;

/// Exact `p^alpha` and tempered distributions over `outcomes`, and the power-sample histogram.
fn distributions(
    policy: &policy::Policy,
    prompt: &[u32],
    outcomes: &[Vec<u32>],
    params: &PowerParams,
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let logp = completion_logprobs(policy, prompt, outcomes, 1.0);
    let target = normalise(&logp.iter().map(|l| ALPHA * l).collect::<Vec<_>>());
    let tempered = normalise(&completion_logprobs(policy, prompt, outcomes, 1.0 / ALPHA));
    let out = power_sample(policy, &vec![prompt.to_vec(); CHAINS], params, 0).unwrap();
    for s in out.iter().take(50) {
        // The recorded log-probs are the model's own.
        let exact = completion_logprobs(policy, prompt, std::slice::from_ref(&s.tokens), 1.0)[0];
        let recorded: f64 = s.logprobs.iter().map(|&l| l as f64).sum();
        assert!((exact - recorded).abs() < 1e-4, "{exact} vs {recorded}");
    }
    let samples: Vec<Vec<u32>> = out.into_iter().map(|s| s.tokens).collect();
    (target, tempered, histogram(outcomes, &samples))
}

#[test]
fn power_samples_match_p_to_the_alpha_and_tempering_does_not() {
    // 4 tokens, completions of exactly 3 (no stop token): 64 outcomes, one block.
    let policy = tiny_policy(4, 0, 20.0);
    let prompt = [1u32, 2];
    let outcomes = all_sequences(4, 3);
    let params = PowerParams {
        alpha: ALPHA as f32,
        block: 3,
        mcmc_steps: 30,
        max_new_tokens: 3,
        stop_tokens: Vec::new(),
        seed: 7,
    };
    let (target, tempered, power) = distributions(&policy, &prompt, &outcomes, &params);
    let tv_power = total_variation(&power, &target);
    assert!(tv_power < 0.02, "power samples vs p^alpha: TV {tv_power}");

    // Token-level tempering is a different distribution, exactly and as sampled.
    let tv_exact = total_variation(&tempered, &target);
    assert!(tv_exact > 0.3, "tempered vs p^alpha: TV {tv_exact}");
    let low_temp = SamplingParams {
        temperature: (1.0 / ALPHA) as f32,
        max_new_tokens: 3,
        seed: 7,
        ..Default::default()
    };
    let sampled: Vec<Vec<u32>> = generate(&policy, vec![prompt.to_vec(); CHAINS], &low_temp, 0)
        .unwrap()
        .into_iter()
        .map(|c| c.tokens)
        .collect();
    let tv_low_temp = total_variation(&histogram(&outcomes, &sampled), &target);
    println!(
        "TV to p^alpha: power {tv_power:.4}, tempered {tv_exact:.3} (sampled {tv_low_temp:.3})"
    );
    assert!(
        tv_low_temp > 0.3 && tv_low_temp > 10.0 * tv_power,
        "temperature-1/alpha samples vs p^alpha: TV {tv_low_temp} (power: {tv_power})"
    );
}

#[test]
fn power_samples_match_p_to_the_alpha_with_stop_tokens_and_several_blocks() {
    // Token 0 stops a completion: 121 outcomes of 1 to 4 tokens, grown in blocks of 2. The
    // Hastings factor len(x)/len(x') keeps the target exact when lengths differ.
    let policy = tiny_policy(4, 2, 20.0);
    let prompt = [1u32, 2];
    let outcomes = all_stopping_sequences(4, 0, 4);
    assert_eq!(outcomes.len(), 1 + 3 + 9 + 27 * 4);
    let params = PowerParams {
        alpha: ALPHA as f32,
        block: 2,
        mcmc_steps: 12,
        max_new_tokens: 4,
        stop_tokens: vec![0],
        seed: 11,
    };
    let (target, tempered, power) = distributions(&policy, &prompt, &outcomes, &params);
    let tv_power = total_variation(&power, &target);
    assert!(tv_power < 0.02, "power samples vs p^alpha: TV {tv_power}");
    let tv_tempered = total_variation(&tempered, &target);
    println!("TV to p^alpha with stop tokens: power {tv_power:.4}, tempered {tv_tempered:.3}");
    assert!(tv_tempered > 0.2, "tempered vs p^alpha: TV {tv_tempered}");
}

#[test]
fn a_fixed_seed_power_run_is_reproducible() {
    let policy = tiny_policy(6, 3, 10.0);
    let prompts: Vec<Vec<u32>> = vec![vec![1, 2, 3], vec![4], vec![5, 5]]
        .into_iter()
        .cycle()
        .take(60)
        .collect();
    let params = PowerParams {
        block: 3,
        mcmc_steps: 5,
        max_new_tokens: 7,
        stop_tokens: vec![0],
        seed: 42,
        ..Default::default()
    };
    let a = power_sample(&policy, &prompts, &params, 0).unwrap();
    let b = power_sample(&policy, &prompts, &params, 0).unwrap();
    assert_eq!(a, b);
    // Every chain made its proposals, and the tokens counted include rejected ones.
    for s in &a {
        // Three blocks (7 tokens in blocks of 3), MCMC after each, stopped chains included.
        assert_eq!(s.proposals, params.mcmc_steps * 3);
        assert!(s.tokens_generated >= s.tokens.len());
    }
    let other = power_sample(&policy, &prompts, &PowerParams { seed: 43, ..params }, 0).unwrap();
    assert_ne!(
        a.iter().map(|s| &s.tokens).collect::<Vec<_>>(),
        other.iter().map(|s| &s.tokens).collect::<Vec<_>>()
    );
}
