//! `metrics.jsonl`: one JSON object per optimizer step. Other tools parse it; the field
//! names are a contract (documented in docs/metrics.md).

use crate::error::{LearnerError, Result};
use crate::update::StepReport;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

/// One line of the metrics log.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MetricsLine {
    /// Optimizer steps taken so far in the run (1-based).
    pub step: u64,
    /// Seconds since the run started (continues across resumes).
    pub wall_s: f64,
    /// Completion tokens trained per second of this step.
    pub tokens_per_s: f64,
    /// Greedy pass@1 on held-out problems, on evaluation steps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_pass_rate: Option<f64>,
    #[serde(flatten)]
    pub report: StepReport,
}

/// Appends lines to `DIR/metrics.jsonl`.
pub struct MetricsLog {
    path: PathBuf,
    file: std::fs::File,
}

impl MetricsLog {
    /// Opens (creating or appending to) `dir/metrics.jsonl`.
    pub fn open(dir: &Path) -> Result<Self> {
        let path = dir.join("metrics.jsonl");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| LearnerError::io(&path, e))?;
        Ok(MetricsLog { path, file })
    }

    /// Writes one line and flushes it, so a reader sees whole steps only.
    pub fn append(&mut self, line: &MetricsLine) -> Result<()> {
        let text = serde_json::to_string(line).expect("metrics serialise");
        writeln!(self.file, "{text}")
            .and_then(|_| self.file.flush())
            .map_err(|e| LearnerError::io(&self.path, e))
    }
}

/// Reads every line of a metrics log.
pub fn read_metrics(path: &Path) -> Result<Vec<MetricsLine>> {
    let text = std::fs::read_to_string(path).map_err(|e| LearnerError::io(path, e))?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| LearnerError::Checkpoint {
                path: path.into(),
                message: format!("line {}: {e}", i + 1),
            })
        })
        .collect()
}
