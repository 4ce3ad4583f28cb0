//! Step suite: whole synchronous RL steps of the default run (sample G completions of each
//! prompt with their log-probs, verify them, update with CISPO), timed by phase, against the
//! same steps written in PyTorch + transformers (`--torch`: `generate` sampling on the same
//! checkpoint and prompt tokens, the same answer rule, the same loss, AdamW).
//!
//! Both sides take the same prompts (the run's first training problems, `--prompts` a step)
//! and the same shapes; each reports the median over `--steps` steps after one warm-up step.

use super::torch::{self, Outcome};
use crate::progress;
use learner::sync_loop::{timed_step, TimedStep};
use learner::{Learner, RunConfig, TrainableModel};
use std::path::Path;
use tasks::{ProblemSource, Split};

#[derive(clap::Args)]
pub struct Args {
    /// Prompts per step (default: the default run's).
    #[arg(long)]
    prompts: Option<usize>,
    /// Samples per prompt (default: the default run's).
    #[arg(long)]
    group_size: Option<usize>,
    /// Completion tokens at most (default: the default run's).
    #[arg(long)]
    max_new_tokens: Option<usize>,
    /// Run each prompt once for its group's completions in the update (`[update]
    /// share_prompts`, the run's default); `false` writes every sequence out, as the
    /// PyTorch step does.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    share_prompts: bool,
    /// Steps timed after one warm-up step; figures are medians.
    #[arg(long, default_value_t = 3)]
    steps: usize,
    /// Also run the same steps in PyTorch + transformers (bench/torch_baseline.sh). Skipped
    /// with a message when unavailable.
    #[arg(long)]
    torch: bool,
}

/// Median seconds of each phase.
#[derive(Debug, Clone, Copy)]
struct Phases {
    sample_s: f64,
    update_s: f64,
    step_s: f64,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    anyhow::ensure!(a.steps > 0, "--steps must be at least 1");
    let mut cfg = RunConfig::default();
    if let Some(p) = a.prompts {
        cfg.prompts_per_step = p;
    }
    if let Some(g) = a.group_size {
        cfg.group_size = g;
    }
    if let Some(t) = a.max_new_tokens {
        cfg.sampling.max_new_tokens = t;
    }
    cfg.update.warmup = 0;
    cfg.update.share_prompts = a.share_prompts;
    cfg.validate()?;
    let m = crate::model_arg::load(crate::model_arg::DEFAULT_MODEL)?;
    let pb = progress::spinner("bench step");
    let mut inputs = Vec::new();
    let mut timed = timed_steps(&cfg, &m, a.steps + 1, &pb, |t, problems| {
        inputs.push(step_input(t, problems))
    })?;
    timed.remove(0);
    let ours = medians(&timed);
    let samples = cfg.prompts_per_step * cfg.group_size;
    println!(
        "whole RL step: {} prompts x G = {} ({samples} samples, <= {} new tokens), default model, median of {} steps; oxrl's update {}",
        cfg.prompts_per_step,
        cfg.group_size,
        cfg.sampling.max_new_tokens,
        a.steps,
        if a.share_prompts {
            "runs each prompt once for its group"
        } else {
            "writes every sequence out"
        }
    );
    println!(
        "{:<10} {:>10} {:>10} {:>10}",
        "", "sample s", "update s", "step s"
    );
    print_row("oxrl", ours);
    let mut row = serde_json::json!({
        "suite": "step", "prompts": cfg.prompts_per_step, "group_size": cfg.group_size,
        "max_new_tokens": cfg.sampling.max_new_tokens, "steps": a.steps,
        "sample_s": ours.sample_s, "update_s": ours.update_s, "step_s": ours.step_s,
        "share_prompts": a.share_prompts,
        "pass_rate": mean(timed.iter().map(|t| t.report.pass_rate)),
    });
    if a.torch {
        pb.set_message("PyTorch + transformers: the same steps");
        let tmp = std::env::temp_dir().join(format!("oxrl-bench-step-{}", std::process::id()));
        row["torch"] = torch_baseline(&cfg, &m, &inputs, &tmp, ours, &mut row, &pb)?;
        let _ = std::fs::remove_dir_all(&tmp);
    }
    pb.finish_and_clear();
    println!("{row}");
    Ok(())
}

/// `steps` steps of `cfg`'s synchronous run on the model `m` (from its start), each timed by
/// phase; `each` sees every step's groups and problems.
pub(super) fn timed_steps(
    cfg: &RunConfig,
    m: &policy::ModelDir,
    steps: usize,
    pb: &indicatif::ProgressBar,
    mut each: impl FnMut(&TimedStep, &[tasks::Problem]),
) -> anyhow::Result<Vec<TimedStep>> {
    let registry = tasks::VerifierRegistry::new();
    let source = cfg.problem_source(&registry)?;
    let model = TrainableModel::new(m.config.clone(), m.tokenizer.clone(), &m.weights)?;
    let mut learner = Learner::new(model, cfg.update.clone(), 0);
    let mut timed = Vec::with_capacity(steps);
    for step in 0..steps {
        pb.set_message(format!("in-process step {} of {steps}", step + 1));
        let problems = problems_of(source.as_ref(), cfg, step);
        let t = timed_step(cfg, &mut learner, source.as_ref(), &problems, step as u64)?;
        each(&t, &problems);
        timed.push(t);
    }
    Ok(timed)
}

/// The training problems of step `step`: the next `prompts_per_step` of the pool, in order.
fn problems_of(source: &dyn ProblemSource, cfg: &RunConfig, step: usize) -> Vec<tasks::Problem> {
    let n = cfg.prompts_per_step as u64;
    let size = source.len(Split::Train).unwrap_or(u64::MAX).max(1);
    (0..n)
        .map(|i| source.problem(Split::Train, (step as u64 * n + i) % size))
        .collect()
}

/// What the PyTorch side needs of one step: each prompt's tokens and reference answer.
fn step_input(t: &TimedStep, problems: &[tasks::Problem]) -> serde_json::Value {
    let answers: std::collections::HashMap<&str, &str> = problems
        .iter()
        .map(|p| (p.id.as_str(), p.answer.as_str()))
        .collect();
    t.groups
        .iter()
        .map(|g| {
            serde_json::json!({
                "prompt": g.prompt_tokens,
                "answer": answers.get(g.problem_id.as_str()).copied().unwrap_or_default(),
            })
        })
        .collect()
}

fn mean(xs: impl Iterator<Item = f64>) -> f64 {
    let v: Vec<f64> = xs.collect();
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn medians(t: &[TimedStep]) -> Phases {
    Phases {
        sample_s: median(t.iter().map(|t| t.sample_s).collect()),
        update_s: median(t.iter().map(|t| t.update_s).collect()),
        step_s: median(t.iter().map(|t| t.sample_s + t.update_s).collect()),
    }
}

fn print_row(name: &str, p: Phases) {
    println!(
        "{name:<10} {:>10.3} {:>10.3} {:>10.3}",
        p.sample_s, p.update_s, p.step_s
    );
}

/// `--torch`: writes the steps' inputs and the model for bench/torch_baseline.py's `step`
/// suite, runs it, prints its row and the ratios, and returns its JSON (or why it skipped).
fn torch_baseline(
    cfg: &RunConfig,
    m: &policy::ModelDir,
    inputs: &[serde_json::Value],
    tmp: &Path,
    ours: Phases,
    row: &mut serde_json::Value,
    pb: &indicatif::ProgressBar,
) -> anyhow::Result<serde_json::Value> {
    let dir = torch::model_dir("default", m, tmp)?;
    let vocab: Vec<String> = (0..m.tokenizer.vocab_size() as u32)
        .map(|id| m.tokenizer.decode(&[id]).unwrap_or_default())
        .collect();
    let rollout::config::Objective::Cispo { eps_max } = cfg.update.objective else {
        anyhow::bail!("the step suite's PyTorch side writes the CISPO loss only");
    };
    let spec = serde_json::json!({
        "steps": inputs, "group_size": cfg.group_size,
        "max_new_tokens": cfg.sampling.max_new_tokens, "temperature": cfg.sampling.temperature,
        "stop": m.tokenizer.eos_ids(), "vocab": vocab,
        "lr": cfg.update.lr, "eps_max": eps_max, "max_grad_norm": cfg.update.optimizer.max_grad_norm,
        "weight_decay": cfg.update.optimizer.weight_decay,
    });
    let path = tmp.join("step.json");
    std::fs::write(&path, spec.to_string())?;
    let extra = vec!["--step-spec".to_string(), path.display().to_string()];
    Ok(match torch::run("step", &dir, &[], &extra, true) {
        Outcome::Ran(v) => {
            let f = |k: &str| v[k].as_f64().unwrap_or(f64::NAN);
            let pt = Phases {
                sample_s: f("sample_s"),
                update_s: f("update_s"),
                step_s: f("step_s"),
            };
            pb.suspend(|| {
                print_row("PyTorch", pt);
                println!(
                    "{:<10} {:>9.2}x {:>9.2}x {:>9.2}x   (PyTorch {}, transformers {})",
                    "oxrl/PT",
                    pt.sample_s / ours.sample_s,
                    pt.update_s / ours.update_s,
                    pt.step_s / ours.step_s,
                    v["torch"].as_str().unwrap_or("?"),
                    v["transformers"].as_str().unwrap_or("?"),
                )
            });
            row["vs_torch_sample"] = (pt.sample_s / ours.sample_s).into();
            row["vs_torch_update"] = (pt.update_s / ours.update_s).into();
            row["vs_torch_step"] = (pt.step_s / ours.step_s).into();
            v
        }
        Outcome::Skipped(why) => {
            pb.suspend(|| println!("PyTorch baseline skipped: {why}"));
            serde_json::json!({ "skipped": why })
        }
    })
}
