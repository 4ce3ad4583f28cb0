//! `oxrl rm train`: an outcome reward model for a policy and task (the learner's
//! `reward` module), saved as a Hugging Face sequence classifier with its training curve and
//! held-out figures (docs/reward-model.md).

use crate::{model_arg, progress};
use anyhow::Context;
use learner::{train_reward_model, RmConfig, RmObjective, RmProgress};
use std::io::Write;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: RmCommand,
}

#[derive(clap::Subcommand)]
enum RmCommand {
    /// Train a verifier on the policy's own samples, labelled by the task's verifier.
    Train(TrainArgs),
    /// Serve a reward model's scores over gRPC (oxrl.v1.RewardModel), batching concurrent
    /// requests, to runs whose config says `reward = { rm = "URL" }`.
    Serve(super::rm_serve::ServeArgs),
    /// Score token-id sequences given as JSON (`{"sequences": [[ids...], ...]}`) and print
    /// `{"scores": [...]}`: what the check against transformers compares.
    Score(super::rm_score::ScoreArgs),
}

/// Arguments of `oxrl rm train`; unset values come from `RmConfig`'s defaults.
#[derive(clap::Args)]
pub struct TrainArgs {
    /// The policy whose samples it learns to judge and whose decoder it starts from: a model
    /// directory, or `default` for the embedded default.
    #[arg(long)]
    policy: String,
    /// Task spec: `addition:2`, `multiplication`, ..., or `FILE.jsonl[@VERIFIER]`.
    #[arg(long)]
    task: String,
    /// Completions sampled per prompt (N).
    #[arg(long)]
    samples_per_prompt: Option<usize>,
    /// Training prompts (from the task's training split).
    #[arg(long)]
    train_prompts: Option<usize>,
    /// Held-out prompts whose samples AUC and calibration are measured on.
    #[arg(long)]
    eval_prompts: Option<usize>,
    #[arg(long)]
    steps: Option<u64>,
    /// Labelled samples per optimizer step.
    #[arg(long)]
    batch_size: Option<usize>,
    #[arg(long)]
    lr: Option<f64>,
    /// Length budget of each sampled completion.
    #[arg(long)]
    max_new_tokens: Option<usize>,
    #[arg(long)]
    seed: Option<u64>,
    /// The training loss: `every-token` (the default; Cobbe et al. 2021: the label at every
    /// completion token, averaged) or `last-token` (binary cross-entropy of the score at the
    /// last token); scoring reads the last token either way.
    #[arg(long, value_parser = ["last-token", "every-token"])]
    objective: Option<String>,
    /// Output directory: the reward model (config.json, model.safetensors, tokenizer),
    /// curve.jsonl ({"step", "loss"} per step), eval.json and rm.toml.
    #[arg(long, default_value = "runs/rm")]
    out: PathBuf,
}

impl TrainArgs {
    fn config(&self) -> RmConfig {
        let mut cfg = RmConfig::default();
        let set = |slot: &mut usize, v: Option<usize>| *slot = v.unwrap_or(*slot);
        set(&mut cfg.samples_per_prompt, self.samples_per_prompt);
        set(&mut cfg.train_prompts, self.train_prompts);
        set(&mut cfg.eval_prompts, self.eval_prompts);
        set(&mut cfg.batch_size, self.batch_size);
        set(&mut cfg.max_new_tokens, self.max_new_tokens);
        cfg.steps = self.steps.unwrap_or(cfg.steps);
        cfg.lr = self.lr.unwrap_or(cfg.lr);
        cfg.seed = self.seed.unwrap_or(cfg.seed);
        if let Some(o) = &self.objective {
            cfg.objective = if o == "every-token" {
                RmObjective::EveryToken
            } else {
                RmObjective::LastToken
            };
        }
        cfg
    }
}

pub fn run(a: Args) -> anyhow::Result<()> {
    match a.command {
        RmCommand::Train(t) => train(t),
        RmCommand::Serve(s) => super::rm_serve::serve(s),
        RmCommand::Score(s) => super::rm_score::score(s),
    }
}

fn train(a: TrainArgs) -> anyhow::Result<()> {
    let cfg = a.config();
    cfg.validate()?;
    let policy = model_arg::load(&a.policy)?;
    let source = tasks::from_spec(&a.task, cfg.seed, &tasks::VerifierRegistry::new())
        .with_context(|| format!("loading task {:?}", a.task))?;
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let curve_path = a.out.join("curve.jsonl");
    let mut curve = std::io::BufWriter::new(
        std::fs::File::create(&curve_path)
            .with_context(|| format!("creating {}", curve_path.display()))?,
    );
    tracing::info!(config = ?cfg, policy = a.policy, task = a.task, "rm train");
    let started = std::time::Instant::now();
    let sampling = progress::bar(cfg.train_prompts as u64, "rm samples");
    let pb = progress::bar(cfg.steps, "rm train");
    let (mut ema, mut written) = (f64::NAN, Ok(()));
    let out = train_reward_model(&policy, source.as_ref(), &cfg, |p| match p {
        RmProgress::Sampling {
            held_out,
            done,
            total,
        } => {
            sampling.set_length(total as u64);
            sampling.set_position(done as u64);
            sampling.set_message(if held_out { "held-out" } else { "train" });
        }
        RmProgress::Step(s) => {
            sampling.finish_and_clear();
            ema = if ema.is_nan() {
                s.loss
            } else {
                0.95 * ema + 0.05 * s.loss
            };
            pb.set_position(s.step + 1);
            pb.set_message(format!("bce {ema:.3} lr {:.1e}", s.lr));
            let line = serde_json::json!({"step": s.step, "loss": s.loss});
            if written.is_ok() {
                written = writeln!(curve, "{line}");
            }
        }
    })?;
    pb.finish_and_clear();
    written
        .and_then(|()| curve.flush())
        .with_context(|| format!("writing {}", curve_path.display()))?;
    out.model
        .save(&a.out)
        .with_context(|| format!("saving {}", a.out.display()))?;
    std::fs::write(a.out.join("rm.toml"), toml::to_string(&cfg)?)?;
    let report = serde_json::json!({
        "policy": a.policy,
        "task": source.name(),
        "train_samples": out.train_samples,
        "train_accuracy": out.train_accuracy,
        "held_out": out.held_out,
        "held_out_within_prompt_auc": out.held_out_within_prompt_auc,
        "held_out_best_of_n": out.held_out_best_of_n,
        "samples_per_prompt": cfg.samples_per_prompt,
        "objective": cfg.objective,
        "wall_s": started.elapsed().as_secs_f64(),
    });
    std::fs::write(
        a.out.join("eval.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    let h = &out.held_out;
    println!(
        "{}: reward model in {}; held-out ({} samples of {} prompts): AUC {} (within a \
         prompt {}), ECE {:.3}, mean predicted {:.3} vs accuracy {:.3}; its pick of {} samples \
         is right {:.3} of the time",
        source.name(),
        a.out.display(),
        h.n,
        h.n / cfg.samples_per_prompt.max(1),
        h.auc
            .map_or("n/a (one class)".into(), |v| format!("{v:.3}")),
        out.held_out_within_prompt_auc
            .map_or("n/a".into(), |v| format!("{v:.3}")),
        h.ece,
        h.mean_predicted,
        h.accuracy,
        cfg.samples_per_prompt,
        out.held_out_best_of_n
    );
    println!("{report}");
    Ok(())
}
