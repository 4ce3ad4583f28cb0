//! `--model`: a Hugging Face directory, or `default` for the embedded default model.

use anyhow::Context;
use candle_core::{DType, Device};
use policy::ModelDir;

/// The value that selects the embedded default.
pub const DEFAULT_MODEL: &str = "default";

/// Loads the model named by `--model`.
pub fn load(model: &str) -> anyhow::Result<ModelDir> {
    if model == DEFAULT_MODEL {
        return policy::default_model::embedded().context("loading the embedded default model");
    }
    ModelDir::load(std::path::Path::new(model), &Device::Cpu, DType::F32)
        .with_context(|| format!("loading model directory {model}"))
}
