//! Run checkpoints: `DIR/checkpoints/step-N/` holds the Hugging Face weights, the
//! optimizer state and `state.json` (step, version, seed, wall time), enough to resume with
//! the same version numbers and the same sampling streams.

use crate::error::{LearnerError, Result};
use crate::optim::AdamW;
use crate::params::TrainableModel;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Counters that continue across a resume. Sampling seeds derive from `(seed, step)`, so
/// these are the whole RNG state.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RunState {
    pub step: u64,
    pub version: u64,
    pub seed: u64,
    pub wall_s: f64,
}

/// Writes a checkpoint of `model`, `opt` and `state`; returns its directory.
pub fn save(
    run_dir: &Path,
    model: &TrainableModel,
    opt: &AdamW,
    state: &RunState,
) -> Result<PathBuf> {
    let dir = run_dir
        .join("checkpoints")
        .join(format!("step-{}", state.step));
    // Write into a temporary directory and rename, so a crash never leaves half a checkpoint.
    let tmp = run_dir
        .join("checkpoints")
        .join(format!(".tmp-step-{}", state.step));
    let _ = std::fs::remove_dir_all(&tmp);
    model.save(&tmp)?;
    opt.save(&tmp)?;
    let path = tmp.join("state.json");
    std::fs::write(
        &path,
        serde_json::to_string_pretty(state).expect("state serialises"),
    )
    .map_err(|e| LearnerError::io(&path, e))?;
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::rename(&tmp, &dir).map_err(|e| LearnerError::io(&dir, e))?;
    Ok(dir)
}

/// The newest complete checkpoint under `run_dir`, if any.
pub fn latest(run_dir: &Path) -> Option<PathBuf> {
    let entries = std::fs::read_dir(run_dir.join("checkpoints")).ok()?;
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let step: u64 = name.strip_prefix("step-")?.parse().ok()?;
            e.path()
                .join("state.json")
                .exists()
                .then_some((step, e.path()))
        })
        .max_by_key(|(s, _)| *s)
        .map(|(_, p)| p)
}

/// Reads a checkpoint's `state.json`.
pub fn load_state(dir: &Path) -> Result<RunState> {
    let path = dir.join("state.json");
    let text = std::fs::read_to_string(&path).map_err(|e| LearnerError::io(&path, e))?;
    serde_json::from_str(&text).map_err(|e| LearnerError::Checkpoint {
        path,
        message: e.to_string(),
    })
}
