//! Decode suite: batched sampling and teacher-forced scoring throughput per model; with
//! `--torch`, the same in PyTorch (transformers) on the same checkpoint for comparison.

use super::torch::{self, Outcome};
use super::{bench_models_on, best_of};
use crate::progress;
use indicatif::ProgressBar;
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
    /// Also run the PyTorch baseline (bench/torch_baseline.sh; creates its environment on
    /// first use). Skipped with a message when unavailable.
    #[arg(long)]
    torch: bool,
    #[command(flatten)]
    target: super::Target,
    /// With --torch: skip instead of creating a missing PyTorch environment.
    #[arg(long, hide = true)]
    torch_no_setup: bool,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let mut rows = Vec::new();
    let tmp = std::env::temp_dir().join(format!("oxrl-bench-decode-{}", std::process::id()));
    println!(
        "{:<8} {:>10} {:>14} {:>14} {:>10} {:>14} {:>10}",
        "model", "params", "decode b=1", "decode b=N", "ratio", "score b=N", "ratio"
    );
    let pb = progress::spinner("bench decode");
    let placement = a.target.placement()?;
    let on_gpu = placement.spec.is_cuda();
    for (name, m) in bench_models_on(!a.quick, a.target.half_billion, &placement.device)? {
        let policy = m
            .policy()?
            .with_compute_dtype(placement.dtype)
            .for_sampling()?;
        let prompt = m.tokenizer.encode("12+34=")?;
        // No stop tokens: every sequence decodes exactly `new_tokens`.
        let params = SamplingParams {
            max_new_tokens: a.new_tokens,
            seed: 1,
            ..Default::default()
        };
        pb.set_message(format!("{name}: decode b=1"));
        let one = best_of(a.reps, || {
            Ok(generate(&policy, vec![prompt.clone()], &params, 0).map(|_| ())?)
        })?;
        let mut seqs = Vec::new();
        pb.set_message(format!("{name}: decode b={}", a.batch));
        let batched = best_of(a.reps, || {
            let out = generate(&policy, vec![prompt.clone(); a.batch], &params, 0)?;
            seqs = out
                .into_iter()
                .map(|c| prompt.iter().chain(&c.tokens).copied().collect())
                .collect();
            Ok(())
        })?;
        pb.set_message(format!("{name}: scoring b={}", a.batch));
        let score = best_of(a.reps, || {
            Ok(score_sequences(&policy, &seqs, 0, 1.0).map(|_| ())?)
        })?;
        let decode1 = a.new_tokens as f64 / one;
        let decode_n = (a.new_tokens * a.batch) as f64 / batched;
        let scored: usize = seqs.iter().map(|s| s.len() - 1).sum();
        let score_n = scored as f64 / score;
        pb.suspend(|| {
            println!(
                "{name:<8} {:>10} {:>10.0} t/s {:>10.0} t/s {:>9.1}x {:>10.0} t/s {:>9.1}x",
                m.config.num_parameters(),
                decode1,
                decode_n,
                decode_n / decode1,
                score_n,
                score_n / decode1
            )
        });
        let mut row = serde_json::json!({
            "model": name, "params": m.config.num_parameters(), "batch": a.batch, "new_tokens": a.new_tokens,
            "decode_b1_tok_s": decode1, "decode_batched_tok_s": decode_n, "decode_batched_ratio": decode_n / decode1,
            "score_tok_s": score_n, "score_ratio": score_n / decode1,
        });
        row["device"] = placement.spec.to_string().into();
        if a.torch && on_gpu {
            pb.suspend(|| println!("{name}: PyTorch baseline skipped (it runs on the CPU only)"));
        } else if a.torch {
            pb.set_message(format!("{name}: PyTorch baseline"));
            let figures = [decode1, decode_n, score_n];
            row["torch"] = torch_row(&a, &name, &m, &prompt, &tmp, figures, &pb)?;
        }
        rows.push(row);
    }
    pb.finish_and_clear();
    let _ = std::fs::remove_dir_all(&tmp);
    println!(
        "{}",
        serde_json::json!({"suite": "decode", "results": rows})
    );
    Ok(())
}

/// Runs the PyTorch baseline on model `name` and prints its row with oxrl's figures as
/// ratios against it; returns the JSON for the results (or the skip reason).
fn torch_row(
    a: &Args,
    name: &str,
    m: &policy::ModelDir,
    prompt: &[u32],
    tmp: &std::path::Path,
    [decode1, decode_n, score_n]: [f64; 3],
    pb: &ProgressBar,
) -> anyhow::Result<serde_json::Value> {
    let dir = torch::model_dir(name, m, tmp)?;
    let extra: Vec<String> = [
        ("--batch", a.batch),
        ("--new-tokens", a.new_tokens),
        ("--reps", a.reps),
    ]
    .iter()
    .flat_map(|(k, v)| [k.to_string(), v.to_string()])
    .collect();
    match torch::run("decode", &dir, prompt, &extra, !a.torch_no_setup) {
        Outcome::Ran(v) => {
            let f = |k: &str| v[k].as_f64().unwrap_or(f64::NAN);
            let (t1, tn, ts) = (
                f("decode_b1_tok_s"),
                f("decode_batched_tok_s"),
                f("score_tok_s"),
            );
            pb.suspend(|| {
                println!(
                    "{:<8} {:>10} {:>10.0} t/s {:>10.0} t/s {:>10} {:>10.0} t/s   (PyTorch {})",
                    format!("{name}/pt"),
                    v["params"],
                    t1,
                    tn,
                    "",
                    ts,
                    v["torch"].as_str().unwrap_or("?")
                );
                println!(
                    "{:<8} oxrl / PyTorch: decode b=1 {:.2}x, decode b=N {:.2}x, scoring {:.2}x",
                    "",
                    decode1 / t1,
                    decode_n / tn,
                    score_n / ts
                );
            });
            let mut v = v;
            v["oxrl_over_torch_decode_b1"] = (decode1 / t1).into();
            v["oxrl_over_torch_decode_batched"] = (decode_n / tn).into();
            v["oxrl_over_torch_score"] = (score_n / ts).into();
            Ok(v)
        }
        Outcome::Skipped(why) => {
            pb.suspend(|| {
                println!(
                    "{:<8} PyTorch baseline skipped: {why}",
                    format!("{name}/pt")
                )
            });
            Ok(serde_json::json!({ "skipped": why }))
        }
    }
}
