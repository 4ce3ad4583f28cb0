//! `oxrl rm score`: a reward model's scores of token-id sequences given as JSON, printed as
//! JSON. What `bench/rm_transformers_check.py` compares with transformers'
//! `*ForSequenceClassification` on the same directory (docs/reward-model.md, "Checking
//! against transformers").

use anyhow::Context;
use std::path::PathBuf;

/// Arguments of `oxrl rm score`.
#[derive(clap::Args)]
pub struct ScoreArgs {
    /// The reward model directory (`oxrl rm train --out`, or any one-label
    /// LlamaForSequenceClassification / Qwen2ForSequenceClassification with a tokenizer.json).
    #[arg(long)]
    model: PathBuf,
    /// A JSON file `{"sequences": [[ids...], ...]}`: prompt + completion token ids.
    #[arg(long)]
    ids_json: PathBuf,
    /// Sequences per forward pass (left-padded together, as `oxrl eval --rm` and `oxrl rm
    /// serve` batch them); 1 scores each alone.
    #[arg(long, default_value_t = 64)]
    batch: usize,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Input {
    sequences: Vec<Vec<u32>>,
}

/// Prints `{"scores": [...]}` (raw scores, not sigmoids), one per input sequence.
pub fn score(a: ScoreArgs) -> anyhow::Result<()> {
    anyhow::ensure!(a.batch > 0, "--batch must be positive");
    let text = std::fs::read_to_string(&a.ids_json)
        .with_context(|| format!("reading {}", a.ids_json.display()))?;
    let input: Input = serde_json::from_str(&text).with_context(|| {
        format!(
            "{}: expected {{\"sequences\": [[token ids], ...]}}",
            a.ids_json.display()
        )
    })?;
    let dir =
        policy::RewardModelDir::load(&a.model, &candle_core::Device::Cpu, candle_core::DType::F32)
            .with_context(|| format!("loading the reward model {}", a.model.display()))?;
    let vocab = dir.config.vocab_size;
    if let Some((i, t)) = input
        .sequences
        .iter()
        .enumerate()
        .find_map(|(i, s)| s.iter().find(|&&t| t as usize >= vocab).map(|t| (i, t)))
    {
        anyhow::bail!("sequence {i} has token {t}, outside the model's vocabulary of {vocab}");
    }
    let pad = dir.config.pad_token_id.context("no pad_token_id")?;
    let model = dir.model().context("building the reward model")?;
    let mut scores = Vec::with_capacity(input.sequences.len());
    for chunk in input.sequences.chunks(a.batch) {
        scores.extend(model.scores(chunk, pad)?);
    }
    println!("{}", serde_json::json!({ "scores": scores }));
    Ok(())
}
