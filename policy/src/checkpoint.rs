//! Hugging Face model directories: `config.json`, `model.safetensors` (or shards listed in
//! `model.safetensors.index.json`), `tokenizer.json` and the chat template's files, read and
//! written as transformers does.

use crate::config::ModelConfig;
use crate::error::{PolicyError, Result};
use crate::model::{validate_weights, Policy};
use crate::tokenizer::Tokenizer;
use candle_core::{DType, Device, Tensor};
use rand::{Rng, SeedableRng};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Named weight tensors, Hugging Face names.
pub type Weights = HashMap<String, Tensor>;

/// A model directory loaded into memory.
#[derive(Debug)]
pub struct ModelDir {
    pub config: ModelConfig,
    pub tokenizer: Tokenizer,
    pub weights: Weights,
}

impl ModelDir {
    /// Loads config, tokenizer and weights from `dir`, checking every tensor's shape.
    /// Weights are converted to `dtype` on `device`.
    pub fn load(dir: &Path, device: &Device, dtype: DType) -> Result<Self> {
        let config = ModelConfig::load(&dir.join("config.json"))?;
        if config.is_reward_model() {
            return Err(PolicyError::Config {
                path: dir.join("config.json"),
                message: format!(
                    "{:?} is a reward model (a score head, no LM head): it scores completions \
                     (`oxrl eval --rm`), it cannot generate them",
                    config.architectures
                ),
            });
        }
        let tokenizer = Tokenizer::load_dir(dir)?;
        let weights = load_weights(dir, &config, device, dtype)?;
        if tokenizer.vocab_size() > config.vocab_size {
            return Err(PolicyError::Config {
                path: dir.join("config.json"),
                message: format!(
                    "tokenizer has {} tokens but vocab_size is {}",
                    tokenizer.vocab_size(),
                    config.vocab_size
                ),
            });
        }
        Ok(ModelDir {
            config,
            tokenizer,
            weights,
        })
    }

    /// The policy over these weights.
    pub fn policy(&self) -> Result<Policy> {
        Policy::new(&self.config, &self.weights)
    }

    /// Writes the directory so that oxrl and transformers load it unchanged.
    pub fn save(&self, dir: &Path) -> Result<()> {
        save_model_dir(dir, &self.config, &self.tokenizer, &self.weights)
    }

    /// Stop tokens for generation: the config's end-of-sequence ids, else the tokenizer's.
    pub fn eos_ids(&self) -> Vec<u32> {
        let ids = self.config.eos_ids();
        if ids.is_empty() {
            self.tokenizer.eos_ids()
        } else {
            ids
        }
    }
}

/// The safetensors files of a directory: the shards of the index, or `model.safetensors`.
fn weight_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let index = dir.join("model.safetensors.index.json");
    if index.exists() {
        let text = std::fs::read_to_string(&index).map_err(|e| PolicyError::io(&index, e))?;
        let json: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| PolicyError::Config {
                path: index.clone(),
                message: e.to_string(),
            })?;
        let map = json["weight_map"]
            .as_object()
            .ok_or_else(|| PolicyError::Config {
                path: index.clone(),
                message: "no weight_map object".into(),
            })?;
        let mut files: Vec<PathBuf> = map
            .values()
            .filter_map(|v| v.as_str())
            .map(|f| dir.join(f))
            .collect();
        files.sort();
        files.dedup();
        return Ok(files);
    }
    let single = dir.join("model.safetensors");
    if single.exists() {
        return Ok(vec![single]);
    }
    Err(PolicyError::NoWeights { dir: dir.into() })
}

/// Loads and validates the weights of `dir` for `config`.
pub fn load_weights(
    dir: &Path,
    config: &ModelConfig,
    device: &Device,
    dtype: DType,
) -> Result<Weights> {
    let mut weights = Weights::new();
    for file in weight_files(dir)? {
        let bytes = std::fs::read(&file).map_err(|e| PolicyError::io(&file, e))?;
        weights.extend(read_safetensors(&bytes, &file, device)?);
    }
    checked_weights(weights, config, dir, dtype)
}

/// The tensors of one safetensors file held in memory; `origin` names it in errors.
pub fn read_safetensors(bytes: &[u8], origin: &Path, device: &Device) -> Result<Weights> {
    candle_core::safetensors::load_buffer(bytes, device).map_err(|e| PolicyError::Config {
        path: origin.into(),
        message: format!("not a readable safetensors file: {e}"),
    })
}

/// Checks `weights` against `config` (names and shapes), drops the tensors the model does not
/// use and casts the rest to `dtype`; `source` names the checkpoint in errors.
pub fn checked_weights(
    mut weights: Weights,
    config: &ModelConfig,
    source: &Path,
    dtype: DType,
) -> Result<Weights> {
    // Tied checkpoints sometimes carry lm_head anyway; untied ones must have it.
    if config.tie_word_embeddings {
        weights.remove("lm_head.weight");
    }
    validate_weights(config, &weights, source)?;
    let expected: std::collections::HashSet<String> = config
        .parameter_shapes()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    weights.retain(|name, _| {
        let keep = expected.contains(name);
        if !keep {
            tracing::debug!(name, "ignoring checkpoint tensor the model does not use");
        }
        keep
    });
    for t in weights.values_mut() {
        *t = t.to_dtype(dtype)?;
    }
    Ok(weights)
}

/// Writes `model.safetensors` (with transformers' `format: pt` metadata).
pub fn save_weights(path: &Path, weights: &Weights) -> Result<()> {
    let metadata: HashMap<String, String> = [("format".to_string(), "pt".to_string())].into();
    let mut sorted: Vec<(&String, &Tensor)> = weights.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    safetensors::tensor::serialize_to_file(sorted, Some(metadata), path)
        .map_err(|e| PolicyError::io(path, std::io::Error::other(e.to_string())))
}

/// Writes a complete model directory.
pub fn save_model_dir(
    dir: &Path,
    config: &ModelConfig,
    tokenizer: &Tokenizer,
    weights: &Weights,
) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| PolicyError::io(dir, e))?;
    validate_weights(config, weights, dir)?;
    let mut to_save = Weights::new();
    for (name, _) in config.parameter_shapes() {
        // Contiguous fp32 copies: a Var's storage may be updated while we write.
        to_save.insert(name.clone(), weights[&name].to_dtype(DType::F32)?.copy()?);
    }
    save_weights(&dir.join("model.safetensors"), &to_save)?;
    config.save(&dir.join("config.json"))?;
    tokenizer.save_dir(dir)
}

/// Freshly initialised weights: normal(0, 0.02) matrices (output projections scaled by
/// 1/sqrt(2 * layers), as GPT-2 does), unit norms, zero biases. Deterministic in `seed`.
pub fn random_weights(config: &ModelConfig, seed: u64, device: &Device) -> Result<Weights> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let out_scale = 1.0 / (2.0 * config.num_hidden_layers as f32).sqrt();
    let mut weights = Weights::new();
    for (name, shape) in config.parameter_shapes() {
        let n: usize = shape.iter().product();
        let values: Vec<f32> = if name.ends_with("norm.weight") {
            vec![1.0; n]
        } else if name.ends_with(".bias") {
            vec![0.0; n]
        } else {
            let std = if name.ends_with("o_proj.weight") || name.ends_with("down_proj.weight") {
                0.02 * out_scale
            } else {
                0.02
            };
            (0..n).map(|_| std * standard_normal(&mut rng)).collect()
        };
        weights.insert(name, Tensor::from_vec(values, shape, device)?);
    }
    Ok(weights)
}

/// One standard-normal draw (Box-Muller).
pub fn standard_normal(rng: &mut impl Rng) -> f32 {
    let u1: f32 = rng.random::<f32>().max(f32::MIN_POSITIVE);
    let u2: f32 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f32::consts::PI * u2).cos()
}
