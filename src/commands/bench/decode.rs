//! Decode suite: batched sampling and teacher-forced scoring throughput per model.

use super::{bench_models, best_of};
use policy::{generate, score_sequences, SamplingParams};

#[derive(clap::Args)]
pub struct Args {
    /// Sequences per batch.
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Tokens generated per sequence.
    #[arg(long, default_value_t = 48)]
    new_tokens: usize,
    /// Only the default model (skip the ~20 M config).
    #[arg(long)]
    quick: bool,
    #[arg(long, default_value_t = 2)]
    reps: usize,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let mut rows = Vec::new();
    println!(
        "{:<8} {:>10} {:>14} {:>14} {:>10} {:>14} {:>10}",
        "model", "params", "decode b=1", "decode b=N", "ratio", "score b=N", "ratio"
    );
    for (name, m) in bench_models(!a.quick)? {
        let policy = m.policy()?;
        let prompt = m.tokenizer.encode("12+34=")?;
        // No stop tokens: every sequence decodes exactly `new_tokens`.
        let params = SamplingParams {
            max_new_tokens: a.new_tokens,
            seed: 1,
            ..Default::default()
        };
        let one = best_of(a.reps, || {
            Ok(generate(&policy, vec![prompt.clone()], &params, 0).map(|_| ())?)
        })?;
        let mut seqs = Vec::new();
        let batched = best_of(a.reps, || {
            let out = generate(&policy, vec![prompt.clone(); a.batch], &params, 0)?;
            seqs = out
                .into_iter()
                .map(|c| prompt.iter().chain(&c.tokens).copied().collect())
                .collect();
            Ok(())
        })?;
        let score = best_of(a.reps, || {
            Ok(score_sequences(&policy, &seqs, 0, 1.0).map(|_| ())?)
        })?;
        let decode1 = a.new_tokens as f64 / one;
        let decode_n = (a.new_tokens * a.batch) as f64 / batched;
        let scored: usize = seqs.iter().map(|s| s.len() - 1).sum();
        let score_n = scored as f64 / score;
        println!(
            "{name:<8} {:>10} {:>10.0} t/s {:>10.0} t/s {:>9.1}x {:>10.0} t/s {:>9.1}x",
            m.config.num_parameters(),
            decode1,
            decode_n,
            decode_n / decode1,
            score_n,
            score_n / decode1
        );
        rows.push(serde_json::json!({
            "model": name, "params": m.config.num_parameters(), "batch": a.batch, "new_tokens": a.new_tokens,
            "decode_b1_tok_s": decode1, "decode_batched_tok_s": decode_n, "decode_batched_ratio": decode_n / decode1,
            "score_tok_s": score_n, "score_ratio": score_n / decode1,
        }));
    }
    println!(
        "{}",
        serde_json::json!({"suite": "decode", "results": rows})
    );
    Ok(())
}
