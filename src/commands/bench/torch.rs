//! The optional PyTorch baseline of the decode and learner suites (`--torch`): runs
//! `bench/torch_baseline.sh` (its own virtual environment with torch, transformers and
//! safetensors) on the same model directory, token ids and batch shapes, and returns its
//! JSON figures, or why it was skipped. A skip never fails the benchmark.

use std::path::{Path, PathBuf};

/// What the baseline gave.
pub enum Outcome {
    Ran(serde_json::Value),
    Skipped(String),
}

/// The wrapper script: `OXRL_TORCH_BASELINE`, else `bench/torch_baseline.sh` in the source
/// tree this binary was built from.
fn script() -> PathBuf {
    std::env::var_os("OXRL_TORCH_BASELINE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/bench/torch_baseline.sh"
            ))
        })
}

/// The compute threads this process was given (`--threads`), for `torch.set_num_threads`.
fn threads() -> String {
    std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "1".into())
}

/// A Hugging Face directory holding `m` (the embedded default included: it lives in the
/// binary), written under `tmp/name` for the Python side to load.
pub fn model_dir(name: &str, m: &policy::ModelDir, tmp: &Path) -> anyhow::Result<PathBuf> {
    let dir = tmp.join(name);
    std::fs::create_dir_all(&dir)?;
    m.save(&dir)?;
    Ok(dir)
}

/// Runs `torch_baseline.sh SUITE --model DIR --prompt-ids .. EXTRA..`. Without `setup`, a
/// missing environment is a skip rather than an install.
pub fn run(suite: &str, dir: &Path, prompt: &[u32], extra: &[String], setup: bool) -> Outcome {
    let script = script();
    if !script.is_file() {
        return Outcome::Skipped(format!("{} not found", script.display()));
    }
    let ids: Vec<String> = prompt.iter().map(|t| t.to_string()).collect();
    let mut cmd = std::process::Command::new("bash");
    cmd.arg(&script)
        .arg(suite)
        .arg("--model")
        .arg(dir)
        .args(["--prompt-ids", &ids.join(","), "--threads", &threads()])
        .args(extra);
    if !setup {
        cmd.env("OXRL_TORCH_NO_SETUP", "1");
    }
    let out = match cmd.output() {
        Ok(o) => o,
        Err(e) => return Outcome::Skipped(format!("running {}: {e}", script.display())),
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        let reason = stderr
            .lines()
            .rev()
            .find_map(|l| l.strip_prefix("skipped: "))
            .or_else(|| stderr.lines().rev().find(|l| !l.trim().is_empty()))
            .unwrap_or("the script failed");
        return Outcome::Skipped(reason.trim().to_string());
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    match stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .map(serde_json::from_str::<serde_json::Value>)
    {
        Some(Ok(v)) => Outcome::Ran(v),
        _ => Outcome::Skipped(format!("no JSON line from {}", script.display())),
    }
}
