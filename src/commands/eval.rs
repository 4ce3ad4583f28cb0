//! `oxrl eval`: greedy pass@1 on held-out problems, as a table and as JSON.

use crate::model_arg;
use anyhow::Context;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// Model directory, or `default` for the embedded default.
    #[arg(long, default_value = model_arg::DEFAULT_MODEL)]
    model: String,
    /// Task spec: `addition`, `addition:3`, `multiplication`, `countdown`, `sorting`, or a
    /// JSONL file (`FILE.jsonl`, `FILE.jsonl@exact`).
    #[arg(long, default_value = "addition:2")]
    task: String,
    /// Number of held-out problems.
    #[arg(long, default_value_t = 500)]
    n: usize,
    #[arg(long, default_value_t = 32)]
    max_new_tokens: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let m = model_arg::load(&a.model)?;
    let source = tasks::from_spec(&a.task, a.seed, &tasks::VerifierRegistry::new())?;
    let policy = m.policy()?;
    let started = std::time::Instant::now();
    let r = rollout::greedy_eval(
        &policy,
        &m.tokenizer,
        source.as_ref(),
        a.n,
        a.max_new_tokens,
        &m.eos_ids(),
    )?;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{:<20} {:>8} {:>8} {:>10} {:>8}",
        "task", "n", "correct", "pass@1", "secs"
    );
    println!(
        "{:<20} {:>8} {:>8} {:>10.3} {:>8.1}",
        r.task, r.n, r.correct, r.pass_rate, secs
    );
    for (p, c, reward) in &r.examples {
        println!("  {p:?} -> {c:?} ({reward})");
    }
    let json =
        serde_json::json!({"model": a.model, "sampler": "greedy", "report": r, "wall_s": secs});
    println!("{json}");
    if let Some(path) = a.json {
        std::fs::write(&path, serde_json::to_string_pretty(&json)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
