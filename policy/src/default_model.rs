//! The embedded default: a tiny Llama config over the character-level tokenizer.

use crate::checkpoint::{random_weights, ModelDir};
use crate::config::ModelConfig;
use crate::device::Placement;
use crate::error::Result;
use crate::tokenizer::char_tokenizer;
use candle_core::Device;

/// The default model's config: about 1.1 M parameters, 4 layers, grouped-query attention.
pub fn default_config() -> ModelConfig {
    let tok = char_tokenizer();
    let mut cfg = ModelConfig::tiny(tok.vocab_size(), 160, 4, 4, 2);
    cfg.bos_token_id = Some(1);
    cfg.eos_token_id = Some(2.into());
    cfg.pad_token_id = Some(0);
    cfg
}

/// A freshly initialised default model (the starting point of `oxrl sft`).
pub fn random_default(seed: u64) -> Result<ModelDir> {
    let config = default_config();
    let weights = random_weights(&config, seed, &Device::Cpu)?;
    Ok(ModelDir {
        config,
        tokenizer: char_tokenizer(),
        weights,
    })
}

/// Where the embedded default's files live in the source tree (`oxrl sft` writes them).
pub const EMBEDDED_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../assets/default-policy");

/// The embedded default model: the SFT warm start shipped with oxrl (see README).
pub fn embedded() -> Result<ModelDir> {
    ModelDir::load(
        std::path::Path::new(EMBEDDED_DIR),
        &Device::Cpu,
        candle_core::DType::F32,
    )
}

/// Loads a model by the name a config or flag gives: `default` for the embedded default,
/// otherwise a Hugging Face directory. On the CPU in fp32.
pub fn load_model(name: &str) -> Result<ModelDir> {
    load_model_on(name, &Placement::cpu())
}

/// [`load_model`] with the weights cast to `at.dtype` on `at.device` (bf16 on a GPU).
pub fn load_model_on(name: &str, at: &Placement) -> Result<ModelDir> {
    let dir = if name == "default" {
        EMBEDDED_DIR
    } else {
        name
    };
    ModelDir::load(std::path::Path::new(dir), &at.device, at.dtype)
}
