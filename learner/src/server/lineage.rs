//! The learner life's lineage (`rollout::lineage`): a fresh id for every start, the history
//! read from the checkpoint it resumes (`checkpoints/step-N/lineage.json`) and saved beside
//! every checkpoint it writes.

use crate::error::{LearnerError, Result};
use rollout::Lineage;
use std::hash::BuildHasher;
use std::path::{Path, PathBuf};

const FILE: &str = "lineage.json";

fn path(out: &Path, step: u64) -> PathBuf {
    out.join(format!("checkpoints/step-{step}")).join(FILE)
}

/// A fresh, random, nonzero lineage id (0 means "not stated").
fn fresh_id() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    std::collections::hash_map::RandomState::new().hash_one((nanos, std::process::id())) | 1
}

/// This life's history: fresh at step 0, else the checkpoint's at `step` (version
/// `version`) closed there, with a new life on top.
pub(crate) fn start(out: &Path, step: u64, version: u64) -> Result<Lineage> {
    let id = fresh_id();
    let history = if step == 0 {
        Lineage::fresh(id, version)
    } else {
        let file = path(out, step);
        let saved = match std::fs::read_to_string(&file) {
            Ok(text) => serde_json::from_str(&text).map_err(|e| LearnerError::Checkpoint {
                path: file.clone(),
                message: format!("lineage.json does not parse: {e}"),
            })?,
            // A checkpoint from before lineages (or whose lineage was not saved).
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Lineage::default(),
            Err(e) => return Err(LearnerError::io(&file, e)),
        };
        Lineage::resumed(&saved, version, id)
    };
    tracing::info!(
        lineage = id,
        version,
        segments = history.segments.len(),
        "learner lineage"
    );
    Ok(history)
}

/// Saves `history` beside the checkpoint at `step`.
pub(crate) fn save(out: &Path, step: u64, history: &Lineage) -> Result<()> {
    let file = path(out, step);
    let text = serde_json::to_string(history).map_err(|e| LearnerError::Checkpoint {
        path: file.clone(),
        message: e.to_string(),
    })?;
    std::fs::write(&file, text).map_err(|e| LearnerError::io(&file, e))
}
