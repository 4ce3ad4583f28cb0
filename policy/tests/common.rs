//! Helpers shared by the policy integration tests: small checkpoints written by the test.

#![allow(dead_code)]

use candle_core::Device;
use policy::{random_weights, save_model_dir, tokenizer::char_tokenizer, ModelConfig, ModelDir};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

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
    // The noise comes from the seed too (not candle's unseeded generator), so a test sees the
    // same model on every run.
    let mut rng = StdRng::seed_from_u64(seed ^ 0xB1A5);
    let mut names: Vec<String> = weights.keys().cloned().collect();
    names.sort();
    for name in names {
        let t = weights.get_mut(&name).unwrap();
        if name.ends_with(".bias") || name.ends_with("norm.weight") {
            let noise: Vec<f32> = (0..t.elem_count())
                .map(|_| normal(&mut rng) * 0.3)
                .collect();
            let noise = candle_core::Tensor::from_vec(noise, t.shape(), t.device()).unwrap();
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

/// A standard normal draw (Box-Muller).
fn normal(rng: &mut StdRng) -> f32 {
    let u1: f32 = rng.random::<f32>().max(f32::MIN_POSITIVE);
    let u2: f32 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
}

/// `m`'s weights as trainable variables, and the policy built over them.
pub fn over_vars(
    m: &ModelDir,
) -> (
    std::collections::HashMap<String, candle_core::Var>,
    policy::Policy,
) {
    let vars: std::collections::HashMap<String, candle_core::Var> = m
        .weights
        .iter()
        .map(|(n, t)| (n.clone(), candle_core::Var::from_tensor(t).unwrap()))
        .collect();
    let tensors = vars
        .iter()
        .map(|(n, v)| (n.clone(), v.as_tensor().clone()))
        .collect();
    let policy = policy::Policy::new(&m.config, &tensors).unwrap();
    (vars, policy)
}
