//! The embedded default: a tiny Llama config over the character-level tokenizer, and the
//! SFT-trained model compiled into the binary.

use crate::checkpoint::{checked_weights, random_weights, read_safetensors, ModelDir};
use crate::config::ModelConfig;
use crate::device::Placement;
use crate::error::Result;
use crate::tokenizer::{char_tokenizer, Tokenizer};
use candle_core::Device;
use std::path::Path;

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

/// Where the embedded default's files live in the source tree (`oxrl sft --out` writes them
/// there). Read at compile time only: the files below are part of the binary.
macro_rules! embedded_file {
    ($name:literal) => {
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../assets/default-policy/",
            $name
        )
    };
}

/// The embedded default's `config.json`, `tokenizer.json` and `model.safetensors`, compiled
/// into the binary (4.5 MB), so that a binary that is moved or installed still has its model.
const CONFIG_JSON: &str = include_str!(embedded_file!("config.json"));
const TOKENIZER_JSON: &str = include_str!(embedded_file!("tokenizer.json"));
const WEIGHTS: &[u8] = include_bytes!(embedded_file!("model.safetensors"));

/// How errors name the embedded default's files.
const ORIGIN: &str = "<embedded default model>";

/// The embedded default model: the SFT warm start shipped with oxrl (see README).
pub fn embedded() -> Result<ModelDir> {
    embedded_on(&Placement::cpu())
}

/// [`embedded`] with the weights cast to `at.dtype` on `at.device`.
fn embedded_on(at: &Placement) -> Result<ModelDir> {
    let origin = Path::new(ORIGIN);
    let config = ModelConfig::from_json(CONFIG_JSON, origin)?;
    let tokenizer = Tokenizer::from_json(TOKENIZER_JSON)?;
    let weights = read_safetensors(WEIGHTS, origin, &at.device)?;
    let weights = checked_weights(weights, &config, origin, at.dtype)?;
    Ok(ModelDir {
        config,
        tokenizer,
        weights,
    })
}

/// The embedded default's `config.json` (for a parameter count without loading weights).
pub fn embedded_config() -> Result<ModelConfig> {
    ModelConfig::from_json(CONFIG_JSON, Path::new(ORIGIN))
}

/// Loads a model by the name a config or flag gives: `default` for the embedded default,
/// otherwise a Hugging Face directory. On the CPU in fp32.
pub fn load_model(name: &str) -> Result<ModelDir> {
    load_model_on(name, &Placement::cpu())
}

/// [`load_model`] with the weights cast to `at.dtype` on `at.device` (bf16 on a GPU).
pub fn load_model_on(name: &str, at: &Placement) -> Result<ModelDir> {
    if name == "default" {
        return embedded_on(at);
    }
    ModelDir::load(Path::new(name), &at.device, at.dtype)
}
