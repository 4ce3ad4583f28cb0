//! `metrics.jsonl`: one JSON object per optimizer step, and `eval.jsonl`: one per held-out
//! evaluation, the start (step 0) included. Other tools parse them; the field names are a
//! contract (documented in docs/metrics.md).

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
    /// Seconds of this step's update (forward, backward, optimizer step).
    #[serde(default)]
    pub update_s: f64,
    /// Seconds the learner waited for this step's batch to arrive (the pipeline; the
    /// synchronous loop samples its batch itself and has none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_s: Option<f64>,
    /// Greedy pass@1 on held-out problems, on evaluation steps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_pass_rate: Option<f64>,
    /// Sampled (T = 1, no truncation) pass@1 on the same held-out problems, same steps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_sampled_pass_rate: Option<f64>,
    /// The training pool after the step (the synchronous loop; the pipeline's coordinator
    /// reports its pool on /metrics instead).
    #[serde(default, flatten, skip_serializing_if = "Option::is_none")]
    pub pool: Option<crate::sync_curriculum::PoolStats>,
    #[serde(flatten)]
    pub report: StepReport,
}

/// One held-out evaluation (a line of `eval.jsonl`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EvalLine {
    /// Optimizer steps taken when it was measured (0: the starting weights).
    pub step: u64,
    /// Version of the weights evaluated.
    pub version: u64,
    /// Seconds since the run started.
    pub wall_s: f64,
    /// Greedy pass@1 on the held-out problems.
    pub eval_pass_rate: f64,
    /// Sampled (T = 1) pass@1 on the same problems.
    pub eval_sampled_pass_rate: f64,
}

/// Appends lines to `DIR/eval.jsonl`.
pub struct EvalLog(MetricsLog);

impl EvalLog {
    /// Opens (creating or appending to) `dir/eval.jsonl`.
    pub fn open(dir: &Path) -> Result<Self> {
        MetricsLog::open_file(dir, "eval.jsonl").map(EvalLog)
    }

    /// Writes one evaluation and flushes it.
    pub fn append(&mut self, line: &EvalLine) -> Result<()> {
        self.0
            .write(&serde_json::to_string(line).expect("eval line serialises"))
    }
}

/// Reads `dir/eval.jsonl` (empty when the run never evaluated).
pub fn read_evals(dir: &Path) -> Result<Vec<EvalLine>> {
    let path = dir.join("eval.jsonl");
    if !path.exists() {
        return Ok(Vec::new());
    }
    read_lines(&path)
}

/// Appends lines to `DIR/metrics.jsonl`.
pub struct MetricsLog {
    path: PathBuf,
    file: std::fs::File,
}

impl MetricsLog {
    /// Opens (creating or appending to) `dir/metrics.jsonl`.
    pub fn open(dir: &Path) -> Result<Self> {
        Self::open_file(dir, "metrics.jsonl")
    }

    fn open_file(dir: &Path, name: &str) -> Result<Self> {
        let path = dir.join(name);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| LearnerError::io(&path, e))?;
        Ok(MetricsLog { path, file })
    }

    /// Writes one line and flushes it, so a reader sees whole steps only.
    pub fn append(&mut self, line: &MetricsLine) -> Result<()> {
        self.write(&serde_json::to_string(line).expect("metrics serialise"))
    }

    fn write(&mut self, text: &str) -> Result<()> {
        writeln!(self.file, "{text}")
            .and_then(|_| self.file.flush())
            .map_err(|e| LearnerError::io(&self.path, e))
    }
}

/// Reads every line of a metrics log.
pub fn read_metrics(path: &Path) -> Result<Vec<MetricsLine>> {
    read_lines(path)
}

/// Every non-empty line of a JSONL log, parsed; an unreadable line is an error naming it.
fn read_lines<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Vec<T>> {
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
