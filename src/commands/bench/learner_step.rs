//! Learner suite: one RL update (forward + backward + AdamW) on synthetic groups, against
//! the forward pass alone on the same tokens.

use super::{bench_models, best_of};
use learner::{Learner, TrainableModel, UpdateConfig};
use rollout::{RolloutGroup, Sample};

#[derive(clap::Args)]
pub struct Args {
    /// Groups per step.
    #[arg(long, default_value_t = 8)]
    groups: usize,
    /// Samples per group.
    #[arg(long, default_value_t = 8)]
    group_size: usize,
    /// Completion tokens per sample.
    #[arg(long, default_value_t = 32)]
    tokens: usize,
    /// Only the default model (skip the ~20 M config).
    #[arg(long)]
    quick: bool,
    #[arg(long, default_value_t = 2)]
    reps: usize,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let mut rows = Vec::new();
    println!(
        "{:<8} {:>10} {:>16} {:>16} {:>12}",
        "model", "params", "forward", "train step", "step/fwd"
    );
    for (name, m) in bench_models(!a.quick)? {
        let prompt = m.tokenizer.encode("12+34=")?;
        let model = TrainableModel::new(m.config.clone(), m.tokenizer.clone(), &m.weights)?;
        let mut learner = Learner::new(
            model,
            UpdateConfig {
                warmup: 0,
                lr: 1e-6,
                ..Default::default()
            },
            0,
        );
        let groups: Vec<RolloutGroup> = (0..a.groups)
            .map(|g| RolloutGroup {
                group_id: format!("g{g}"),
                problem_id: format!("p{g}"),
                prompt_tokens: prompt.clone(),
                samples: (0..a.group_size)
                    .map(|s| Sample {
                        tokens: (0..a.tokens)
                            .map(|t| 4 + ((g + s + t) % 90) as u32)
                            .collect(),
                        logprobs: vec![-1.0; a.tokens],
                        versions: vec![0; a.tokens],
                        reward: (s % 2) as f32,
                        truncated: false,
                        text: String::new(),
                    })
                    .collect(),
            })
            .collect();
        let seqs: Vec<Vec<u32>> = groups
            .iter()
            .flat_map(|g| {
                g.samples
                    .iter()
                    .map(|s| g.prompt_tokens.iter().chain(&s.tokens).copied().collect())
            })
            .collect();
        let tokens = (a.groups * a.group_size * a.tokens) as f64;
        let fwd = best_of(a.reps, || {
            Ok(policy::score_sequences(learner.model.policy(), &seqs, 0, 1.0).map(|_| ())?)
        })?;
        let step = best_of(a.reps, || {
            let v = learner.version();
            let mut gs = groups.clone();
            for g in &mut gs {
                for s in &mut g.samples {
                    s.versions = vec![v; s.tokens.len()];
                }
            }
            learner.step(&gs)?;
            Ok(())
        })?;
        println!(
            "{name:<8} {:>10} {:>12.0} t/s {:>12.0} t/s {:>11.2}x",
            m.config.num_parameters(),
            tokens / fwd,
            tokens / step,
            fwd / step
        );
        rows.push(serde_json::json!({
            "model": name, "params": m.config.num_parameters(), "tokens_per_step": tokens,
            "forward_tok_s": tokens / fwd, "train_step_tok_s": tokens / step, "step_over_forward": fwd / step,
        }));
    }
    println!(
        "{}",
        serde_json::json!({"suite": "learner", "results": rows})
    );
    Ok(())
}
