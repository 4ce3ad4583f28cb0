//! Loading the run config a user hands to `oxrl run` or `oxrl coordinator`.

use anyhow::Context;
use learner::RunConfig;
use std::path::Path;

/// Reads a RunConfig from TOML with a clear error on unknown or malformed keys.
pub fn load_config(path: &Path) -> anyhow::Result<RunConfig> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("invalid run config {}", path.display()))
}
