//! Learner suite: one RL update (forward + backward + AdamW) on synthetic groups, against
//! the forward pass alone on the same tokens.

use super::torch::{self, Outcome};
use super::{bench_models_on, best_of};
use crate::progress;
use learner::{Learner, TrainableModel, UpdateConfig};
use policy::Placement;
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
    #[command(flatten)]
    target: super::Target,
    /// Peak FLOP/s of the device in TFLOP/s (e.g. 989 for an H100/H200's dense bf16): then
    /// the model FLOPs utilisation is reported too.
    #[arg(long)]
    peak_tflops: Option<f64>,
    /// Also run the PyTorch baseline (bench/torch_baseline.sh: the same groups, CISPO loss,
    /// backward and AdamW in transformers). Skipped with a message when unavailable.
    #[arg(long)]
    torch: bool,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let mut rows = Vec::new();
    let tmp = std::env::temp_dir().join(format!("oxrl-bench-learner-{}", std::process::id()));
    println!(
        "{:<8} {:>10} {:>16} {:>16} {:>12}",
        "model", "params", "forward", "train step", "step/fwd"
    );
    let pb = progress::spinner("bench learner");
    let placement = a.target.placement()?;
    let on_gpu = placement.spec.is_cuda();
    for (name, m) in bench_models_on(!a.quick, a.target.half_billion, &placement.device)? {
        let prompt = m.tokenizer.encode("12+34=")?;
        let mut learner = Learner::new(
            trainable(&m, &placement)?,
            UpdateConfig {
                warmup: 0,
                lr: 1e-6,
                // Every sequence written out, as the PyTorch step computes it: this suite
                // compares the same arithmetic (`bench step` times the shared prompts).
                share_prompts: false,
                ..Default::default()
            },
            0,
        );
        let groups = synthetic_groups(&a, &prompt);
        let tokens = (a.groups * a.group_size * a.tokens) as f64;
        pb.set_message(format!("{name}: forward"));
        let fwd = time_forward(&learner, &groups, a.reps)?;
        pb.set_message(format!("{name}: train step"));
        let step = time_step(&mut learner, &groups, a.reps)?;
        let params = m.config.num_parameters();
        pb.suspend(|| {
            println!(
                "{name:<8} {params:>10} {:>12.0} t/s {:>12.0} t/s {:>11.2}x",
                tokens / fwd,
                tokens / step,
                fwd / step
            )
        });
        // Model FLOPs of a training step: 6 per parameter per token (forward 2, backward 4).
        let flops_s = 6.0 * params as f64 * tokens / step;
        let mut row = serde_json::json!({
            "model": name, "params": params, "tokens_per_step": tokens,
            "forward_tok_s": tokens / fwd, "train_step_tok_s": tokens / step, "step_over_forward": fwd / step,
            "device": placement.spec.to_string(), "model_tflops_s": flops_s / 1e12,
        });
        if let Some(peak) = a.peak_tflops {
            let mfu = flops_s / (peak * 1e12);
            row["mfu"] = mfu.into();
            pb.suspend(|| {
                println!(
                    "{name:<8} model FLOPs {:.3} TFLOP/s = {:.1} % of {peak} TFLOP/s (MFU)",
                    flops_s / 1e12,
                    100.0 * mfu
                )
            });
        }
        if a.torch && on_gpu {
            pb.suspend(|| println!("{name}: PyTorch baseline skipped (it runs on the CPU only)"));
        } else if a.torch {
            pb.set_message(format!("{name}: PyTorch baseline"));
            let ours = (tokens / fwd, tokens / step);
            let dir = torch::model_dir(&name, &m, &tmp)?;
            let baseline = torch_baseline(&a, &name, &dir, &prompt, ours, &mut row, &pb);
            row["torch"] = baseline;
        }
        rows.push(row);
    }
    pb.finish_and_clear();
    let _ = std::fs::remove_dir_all(&tmp);
    println!(
        "{}",
        serde_json::json!({"suite": "learner", "results": rows})
    );
    Ok(())
}

/// The trainable copy of `m` where the bench runs.
fn trainable(m: &policy::ModelDir, placement: &Placement) -> anyhow::Result<TrainableModel> {
    let (config, tokenizer) = (m.config.clone(), m.tokenizer.clone());
    Ok(if placement.spec.is_cuda() {
        TrainableModel::new_on(config, tokenizer, &m.weights, placement)?
    } else {
        TrainableModel::new(config, tokenizer, &m.weights)?
    })
}

/// `--groups` groups of `--group-size` samples of `--tokens` tokens each, half of them right.
fn synthetic_groups(a: &Args, prompt: &[u32]) -> Vec<RolloutGroup> {
    (0..a.groups)
        .map(|g| RolloutGroup {
            group_id: format!("g{g}"),
            problem_id: format!("p{g}"),
            prompt_tokens: prompt.to_vec(),
            samples: (0..a.group_size)
                .map(|s| Sample {
                    tokens: (0..a.tokens)
                        .map(|t| 4 + ((g + s + t) % 90) as u32)
                        .collect(),
                    logprobs: vec![-1.0; a.tokens],
                    versions: vec![0; a.tokens],
                    reward: (s % 2) as f32,
                    truncated: false,
                    mask: Vec::new(),
                    turns: 1,
                    text: String::new(),
                })
                .collect(),
        })
        .collect()
}

/// Seconds of the best of `reps` forward passes over the groups' sequences.
fn time_forward(learner: &Learner, groups: &[RolloutGroup], reps: usize) -> anyhow::Result<f64> {
    let seqs: Vec<Vec<u32>> = groups
        .iter()
        .flat_map(|g| {
            g.samples
                .iter()
                .map(|s| g.prompt_tokens.iter().chain(&s.tokens).copied().collect())
        })
        .collect();
    best_of(reps, || {
        Ok(policy::score_sequences(learner.model.policy(), &seqs, 0, 1.0).map(|_| ())?)
    })
}

/// Seconds of the best of `reps` training steps, each on the groups sampled at the learner's
/// current version (so none is stale).
fn time_step(learner: &mut Learner, groups: &[RolloutGroup], reps: usize) -> anyhow::Result<f64> {
    best_of(reps, || {
        let v = learner.version();
        let mut gs = groups.to_vec();
        for g in &mut gs {
            for s in &mut g.samples {
                s.versions = vec![v; s.tokens.len()];
            }
        }
        learner.step(&gs)?;
        Ok(())
    })
}

/// `--torch`: the same forward and step in PyTorch (bench/torch_baseline.sh), its figures as
/// JSON and the ratios `ours` (forward, step tokens/s) over them added to `row`.
fn torch_baseline(
    a: &Args,
    name: &str,
    dir: &std::path::Path,
    prompt: &[u32],
    ours: (f64, f64),
    row: &mut serde_json::Value,
    pb: &indicatif::ProgressBar,
) -> serde_json::Value {
    let extra: Vec<String> = [
        ("--groups", a.groups),
        ("--group-size", a.group_size),
        ("--tokens", a.tokens),
        ("--reps", a.reps),
    ]
    .iter()
    .flat_map(|(k, v)| [k.to_string(), v.to_string()])
    .collect();
    let label = format!("{name}/pt");
    match torch::run("learner", dir, prompt, &extra, true) {
        Outcome::Ran(v) => {
            let pt_step = v["train_step_tok_s"].as_f64().unwrap_or(f64::NAN);
            let pt_fwd = v["forward_tok_s"].as_f64().unwrap_or(f64::NAN);
            pb.suspend(|| {
                println!(
                    "{label:<8} {:>10} {pt_fwd:>12.0} t/s {pt_step:>12.0} t/s   oxrl/PyTorch: forward {:.2}x, train step {:.2}x (PyTorch {})",
                    v["params"],
                    ours.0 / pt_fwd,
                    ours.1 / pt_step,
                    v["torch"].as_str().unwrap_or("?")
                )
            });
            row["vs_torch_forward"] = (ours.0 / pt_fwd).into();
            row["vs_torch_train_step"] = (ours.1 / pt_step).into();
            v
        }
        Outcome::Skipped(why) => {
            pb.suspend(|| println!("{label:<8} PyTorch baseline skipped: {why}"));
            serde_json::json!({ "skipped": why })
        }
    }
}
