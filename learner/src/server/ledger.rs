//! `trained_groups.jsonl`: which groups each optimizer step trained on, one line per step
//! (`{"step":N,"version":V,"groups":["lease-3/addition:17",...]}`), so that "no group is
//! trained twice" and "no prompt is lost" can be checked after a run, faults included.
//!
//! Appended, like `metrics.jsonl`: a learner restarted from a checkpoint trains the steps
//! after it again, and the later line of a step replaces the earlier one (the earlier one
//! belonged to weights that were lost). A restarted learner reads back the groups its
//! checkpoint holds ([`trained_up_to`]) so that it refuses them as duplicates too.

use crate::error::{LearnerError, Result};
use rollout::RolloutGroup;
use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};

const FILE: &str = "trained_groups.jsonl";

/// The open ledger of a run directory.
pub(crate) struct TrainedLedger {
    path: PathBuf,
    file: std::fs::File,
}

impl TrainedLedger {
    /// Opens (creating or appending to) `dir/trained_groups.jsonl`.
    pub fn open(dir: &Path) -> Result<Self> {
        let path = dir.join(FILE);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| LearnerError::io(&path, e))?;
        Ok(TrainedLedger { path, file })
    }

    /// Records the batch of `step` (the groups handed to the update; `dropped_stale` in the
    /// step's metrics counts those the update itself then left out).
    pub fn append(&mut self, step: u64, version: u64, groups: &[RolloutGroup]) -> Result<()> {
        let ids: Vec<&str> = groups.iter().map(|g| g.group_id.as_str()).collect();
        let line = serde_json::json!({ "step": step, "version": version, "groups": ids });
        writeln!(self.file, "{line}")
            .and_then(|_| self.file.flush())
            .map_err(|e| LearnerError::io(&self.path, e))
    }
}

/// The ids of the groups trained in steps `1..=step` of the lineage that led to the
/// checkpoint at `step` (for each step, its last line). Empty for a fresh run; a line that
/// does not parse (torn by a crash) is skipped.
pub(crate) fn trained_up_to(dir: &Path, step: u64) -> Result<HashSet<String>> {
    let path = dir.join(FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(HashSet::new()),
        Err(e) => return Err(LearnerError::io(&path, e)),
    };
    let mut by_step: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        #[derive(serde::Deserialize)]
        struct Line {
            step: u64,
            groups: Vec<String>,
        }
        match serde_json::from_str::<Line>(line) {
            Ok(l) if l.step <= step => {
                by_step.insert(l.step, l.groups);
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(path = %path.display(), error = %e, "skipped a torn line"),
        }
    }
    Ok(by_step.into_values().flatten().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_step_appended_across_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let group = |id: &str| RolloutGroup {
            group_id: id.into(),
            problem_id: "p".into(),
            prompt_tokens: vec![1],
            samples: Vec::new(),
        };
        TrainedLedger::open(dir.path())
            .unwrap()
            .append(1, 1, &[group("a"), group("b")])
            .unwrap();
        TrainedLedger::open(dir.path())
            .unwrap()
            .append(2, 2, &[group("c")])
            .unwrap();
        let text = std::fs::read_to_string(dir.path().join("trained_groups.jsonl")).unwrap();
        assert_eq!(
            text,
            "{\"groups\":[\"a\",\"b\"],\"step\":1,\"version\":1}\n{\"groups\":[\"c\"],\"step\":2,\"version\":2}\n"
        );
    }

    #[test]
    fn a_restart_reads_back_the_lineage_of_its_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        assert!(trained_up_to(dir.path(), 5).unwrap().is_empty());
        let lines = [
            r#"{"step":1,"version":1,"groups":["a"]}"#,
            r#"{"step":2,"version":2,"groups":["b"]}"#,
            // Lost: the learner died after step 3 and resumed from step 2.
            r#"{"step":3,"version":3,"groups":["lost"]}"#,
            r#"{"step":3,"version":3,"groups":["c"]}"#,
            r#"{"step":4,"version":4,"groups":["after"]}"#,
            r#"{"step":5,"vers"#,
        ];
        std::fs::write(dir.path().join(FILE), lines.join("\n")).unwrap();
        let mut got: Vec<_> = trained_up_to(dir.path(), 3).unwrap().into_iter().collect();
        got.sort();
        assert_eq!(got, ["a", "b", "c"]);
    }
}
