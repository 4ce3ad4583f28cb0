//! The points a fit uses, read from a run's `metrics.jsonl` (field names: docs/metrics.md):
//! x is the compute (cumulative trained tokens, steps, or FLOPs = 6 * params * tokens) and
//! y a reward column. Lines are read as plain JSON so that logs written by older or newer
//! versions still parse as long as the named fields are there.

use anyhow::{bail, Context};
use std::path::Path;

/// The compute axis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum XAxis {
    /// Cumulative completion tokens trained on (the `tokens` field summed over steps).
    Tokens,
    /// Optimizer steps (`step`).
    Steps,
    /// 6 * parameters * cumulative trained tokens (forward + backward of the learner).
    Flops,
}

/// The reward series.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum YSeries {
    /// `eval_pass_rate` when the log has at least 4 evaluation points, else `reward_mean`.
    Auto,
    /// Greedy pass@1 on held-out problems (`eval_pass_rate`, on evaluation steps only).
    EvalPassRate,
    /// Sampled (T = 1) pass@1 on held-out problems (`eval_sampled_pass_rate`, evaluation
    /// steps only).
    EvalSampledPassRate,
    /// Mean verifier reward of the step's training samples (`reward_mean`).
    RewardMean,
    /// Fraction of the step's training samples with full reward (`pass_rate`).
    PassRate,
}

impl YSeries {
    /// The metrics field.
    pub fn field(self) -> &'static str {
        match self {
            YSeries::Auto | YSeries::EvalPassRate => "eval_pass_rate",
            YSeries::EvalSampledPassRate => "eval_sampled_pass_rate",
            YSeries::RewardMean => "reward_mean",
            YSeries::PassRate => "pass_rate",
        }
    }
}

impl XAxis {
    pub fn name(self) -> &'static str {
        match self {
            XAxis::Tokens => "tokens",
            XAxis::Steps => "steps",
            XAxis::Flops => "flops",
        }
    }
}

/// Points in step order.
#[derive(Debug, Clone)]
pub struct Series {
    pub x: Vec<f64>,
    pub y: Vec<f64>,
    pub steps: Vec<u64>,
    /// The y field actually used (`auto` resolved).
    pub y_series: YSeries,
}

/// Reads `path`. `params` is needed for `XAxis::Flops`.
pub fn load(path: &Path, x: XAxis, y: YSeries, params: Option<u64>) -> anyhow::Result<Series> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut lines = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(line)
            .with_context(|| format!("{} line {}: not JSON", path.display(), i + 1))?;
        lines.push((i + 1, v));
    }
    if lines.is_empty() {
        bail!("{} has no metrics lines", path.display());
    }
    let y = match y {
        YSeries::Auto => {
            let evals = lines
                .iter()
                .filter(|(_, v)| v["eval_pass_rate"].is_number())
                .count();
            if evals >= 4 {
                YSeries::EvalPassRate
            } else {
                YSeries::RewardMean
            }
        }
        other => other,
    };
    let scale = match (x, params) {
        (XAxis::Flops, Some(p)) => 6.0 * p as f64,
        (XAxis::Flops, None) => bail!("--x flops needs the parameter count (--params)"),
        _ => 1.0,
    };
    let mut out = Series {
        x: Vec::new(),
        y: Vec::new(),
        steps: Vec::new(),
        y_series: y,
    };
    let mut tokens = 0.0;
    for (line, v) in &lines {
        let num = |field: &str| {
            v[field]
                .as_f64()
                .with_context(|| format!("{} line {line}: no number `{field}`", path.display()))
        };
        let step = num("step")? as u64;
        if x != XAxis::Steps {
            tokens += num("tokens")?;
        }
        let Some(reward) = v[y.field()].as_f64() else {
            if matches!(y, YSeries::EvalPassRate | YSeries::EvalSampledPassRate) {
                continue; // not an evaluation step
            }
            bail!("{} line {line}: no number `{}`", path.display(), y.field());
        };
        out.x.push(match x {
            XAxis::Steps => step as f64,
            _ => tokens * scale,
        });
        out.y.push(reward);
        out.steps.push(step);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(lines: &[&str]) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), lines.join("\n")).unwrap();
        f
    }

    #[test]
    fn tokens_accumulate_and_eval_points_are_picked() {
        let f = write(&[
            r#"{"step":1,"tokens":100,"reward_mean":0.1,"pass_rate":0.1}"#,
            r#"{"step":2,"tokens":50,"reward_mean":0.2,"pass_rate":0.2,"eval_pass_rate":0.4}"#,
            r#"{"step":3,"tokens":25,"reward_mean":0.3,"pass_rate":0.3,"eval_pass_rate":0.5}"#,
        ]);
        let s = load(f.path(), XAxis::Tokens, YSeries::RewardMean, None).unwrap();
        assert_eq!(s.x, vec![100.0, 150.0, 175.0]);
        assert_eq!(s.y, vec![0.1, 0.2, 0.3]);
        let s = load(f.path(), XAxis::Flops, YSeries::EvalPassRate, Some(10)).unwrap();
        assert_eq!(s.x, vec![9000.0, 10500.0]);
        assert_eq!(s.steps, vec![2, 3]);
        // Two evaluation points are too few for auto to choose them.
        let s = load(f.path(), XAxis::Steps, YSeries::Auto, None).unwrap();
        assert_eq!(s.y_series, YSeries::RewardMean);
        assert_eq!(s.x, vec![1.0, 2.0, 3.0]);
    }

    #[test]
    fn bad_lines_are_errors_that_name_the_line() {
        let f = write(&[r#"{"step":1,"tokens":100,"reward_mean":0.1}"#, "{oops"]);
        let e = load(f.path(), XAxis::Tokens, YSeries::RewardMean, None).unwrap_err();
        assert!(format!("{e:#}").contains("line 2"), "{e:#}");
        let f = write(&[r#"{"step":1,"reward_mean":0.1}"#]);
        let e = load(f.path(), XAxis::Tokens, YSeries::RewardMean, None).unwrap_err();
        assert!(format!("{e:#}").contains("tokens"), "{e:#}");
        assert!(load(f.path(), XAxis::Flops, YSeries::RewardMean, None).is_err());
    }
}
