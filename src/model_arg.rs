//! `--model`: a Hugging Face directory, or `default` for the embedded default model.

use anyhow::Context;
use policy::ModelDir;

/// The value that selects the embedded default.
pub const DEFAULT_MODEL: &str = "default";

/// Loads the model named by `--model`.
pub fn load(model: &str) -> anyhow::Result<ModelDir> {
    policy::default_model::load_model(model).with_context(|| format!("loading model {model:?}"))
}
