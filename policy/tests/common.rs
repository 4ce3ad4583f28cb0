//! Helpers shared by the policy integration tests: small checkpoints written by the test.

#![allow(dead_code)]

use candle_core::Device;
use policy::{random_weights, save_model_dir, tokenizer::char_tokenizer, ModelConfig, ModelDir};

/// A small Llama config with grouped-query attention and untied embeddings.
pub fn llama_config() -> ModelConfig {
    let mut cfg = ModelConfig::tiny(char_tokenizer().vocab_size(), 32, 2, 4, 2);
    cfg.tie_word_embeddings = false;
    cfg.eos_token_id = Some(2.into());
    cfg
}

/// A small Qwen2 config: q/k/v biases, tied embeddings, large rope theta.
pub fn qwen2_config() -> ModelConfig {
    let mut cfg = ModelConfig::tiny(char_tokenizer().vocab_size(), 32, 2, 4, 1);
    cfg.architectures = vec!["Qwen2ForCausalLM".into()];
    cfg.model_type = "qwen2".into();
    cfg.attention_bias = None;
    cfg.rope_theta = 1_000_000.0;
    cfg.eos_token_id = Some(2.into());
    cfg
}

/// The device the tests run on: `OXRL_TEST_DEVICE` (`cuda`, `cuda:N`; a `cuda` build), else
/// the CPU. Weights stay fp32 either way, so the 1e-4 invariants hold on a GPU too.
pub fn device() -> Device {
    policy::device::Placement::from_test_env()
        .expect("OXRL_TEST_DEVICE names a device this build can open")
        .device
}

/// A model with random weights; biases get random values too so they matter.
pub fn model(cfg: &ModelConfig, seed: u64) -> ModelDir {
    let mut weights = random_weights(cfg, seed, &device()).unwrap();
    for (name, t) in weights.iter_mut() {
        if name.ends_with(".bias") || name.ends_with("norm.weight") {
            let noise = t.randn_like(0.0, 0.3).unwrap();
            *t = (t.clone() + noise).unwrap();
        } else {
            // Larger weights than the 0.02 init, so the distributions are far from uniform.
            *t = (t.clone() * 20.0).unwrap();
        }
    }
    ModelDir {
        config: cfg.clone(),
        tokenizer: char_tokenizer(),
        weights,
    }
}

/// Writes `m` to a fresh temporary directory.
pub fn write(m: &ModelDir) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    save_model_dir(dir.path(), &m.config, &m.tokenizer, &m.weights).unwrap();
    dir
}
