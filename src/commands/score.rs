//! `oxrl score`: teacher-forced log-probs of texts.
//!
//! Input lines `{"text": ...}`; output lines `{"text", "token_ids", "logprobs"}` where
//! `token_ids` tokenizes `text` with no special tokens and
//! `logprobs[i] = log p(token_ids[i+1] | token_ids[..=i])` (fp32, one entry fewer).

use crate::model_arg;
use anyhow::{bail, Context};
use std::io::{BufRead, Write};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// Model directory, or `default` for the embedded default.
    #[arg(long)]
    model: String,
    #[arg(long)]
    input: PathBuf,
    #[arg(long)]
    output: PathBuf,
    /// Texts scored per forward pass.
    #[arg(long, default_value_t = 16)]
    batch_size: usize,
}

#[derive(serde::Deserialize)]
struct Line {
    text: String,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let m = model_arg::load(&a.model)?;
    let policy = m.policy()?;
    let file =
        std::fs::File::open(&a.input).with_context(|| format!("opening {}", a.input.display()))?;
    let mut texts = Vec::new();
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.with_context(|| format!("reading {}", a.input.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        let parsed: Line = serde_json::from_str(&line).with_context(|| {
            format!(
                "{} line {}: expected {{\"text\": ...}}",
                a.input.display(),
                i + 1
            )
        })?;
        texts.push(parsed.text);
    }
    let out = std::fs::File::create(&a.output)
        .with_context(|| format!("creating {}", a.output.display()))?;
    let mut out = std::io::BufWriter::new(out);
    for chunk in texts.chunks(a.batch_size.max(1)) {
        let ids: Vec<Vec<u32>> = chunk
            .iter()
            .map(|t| m.tokenizer.encode(t))
            .collect::<Result<_, _>>()?;
        // Texts of fewer than two tokens have nothing to score: empty logprobs.
        let scorable: Vec<Vec<u32>> = ids.iter().filter(|s| s.len() >= 2).cloned().collect();
        let mut scored =
            policy::score_sequences(&policy, &scorable, m.tokenizer.pad_id(), 1.0)?.into_iter();
        for (text, token_ids) in chunk.iter().zip(&ids) {
            let logprobs = if token_ids.len() >= 2 {
                scored.next().unwrap()
            } else {
                Vec::new()
            };
            if logprobs.iter().any(|l| !l.is_finite()) {
                bail!("non-finite log-prob while scoring {text:?}");
            }
            let line =
                serde_json::json!({"text": text, "token_ids": token_ids, "logprobs": logprobs});
            writeln!(out, "{line}")?;
        }
    }
    out.flush()?;
    Ok(())
}
