//! Shared helpers for the learner tests: a tiny model and hand-made rollout groups.

#![allow(dead_code)]

use learner::TrainableModel;
use policy::{random_weights, tokenizer::char_tokenizer, ModelConfig};
use rollout::{RolloutGroup, Sample};

/// A one-layer model with random weights, scaled up so its distributions are not uniform.
pub fn tiny_model(seed: u64) -> TrainableModel {
    let mut cfg = ModelConfig::tiny(char_tokenizer().vocab_size(), 16, 1, 2, 1);
    cfg.tie_word_embeddings = false;
    // OXRL_TEST_DEVICE (e.g. `cuda` on a GPU build) picks the device; the CPU otherwise.
    let device = policy::device::Placement::from_test_env()
        .expect("OXRL_TEST_DEVICE names a device this build can open")
        .device;
    let mut w = random_weights(&cfg, seed, &device).unwrap();
    for (name, t) in w.iter_mut() {
        if !name.ends_with("norm.weight") {
            *t = (t.clone() * 10.0).unwrap();
        }
    }
    TrainableModel::new(cfg, char_tokenizer(), &w).unwrap()
}

/// A learner at version 0 over `tiny_model(seed)`: no warm-up, lr 1e-2.
pub fn learner(seed: u64) -> learner::Learner {
    learner::Learner::new(
        tiny_model(seed),
        learner::UpdateConfig {
            warmup: 0,
            lr: 1e-2,
            ..Default::default()
        },
        0,
    )
}

/// A group whose samples have the given tokens and rewards; log-probs are filled by
/// teacher forcing under `model` plus `offset[i]` per sample (so rho != 1), versions 0.
pub fn group(
    model: &TrainableModel,
    id: &str,
    prompt: &str,
    completions: &[(&str, f32, f32)],
) -> RolloutGroup {
    let tok = &model.tokenizer;
    let prompt_tokens = tok.encode(prompt).unwrap();
    let samples = completions
        .iter()
        .map(|(text, reward, offset)| {
            let tokens = tok.encode(text).unwrap();
            let seq: Vec<u32> = prompt_tokens.iter().chain(&tokens).copied().collect();
            let scored = policy::score_sequences(model.policy(), &[seq], 0, 1.0)
                .unwrap()
                .remove(0);
            let logprobs: Vec<f32> = scored[prompt_tokens.len() - 1..]
                .iter()
                .enumerate()
                .map(|(i, l)| (l - offset * if i % 2 == 0 { 1.0 } else { -0.5 }).min(0.0))
                .collect();
            Sample {
                versions: vec![0; tokens.len()],
                tokens,
                logprobs,
                reward: *reward,
                truncated: false,
                mask: Vec::new(),
                turns: 1,
                text: text.to_string(),
            }
        })
        .collect();
    RolloutGroup {
        group_id: id.into(),
        problem_id: id.into(),
        prompt_tokens,
        samples,
    }
}
