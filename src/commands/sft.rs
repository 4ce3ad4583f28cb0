//! `oxrl sft`: supervised warm start on task solutions, saved as a Hugging Face directory.

use crate::progress;
use anyhow::Context;
use learner::{train_sft, SftConfig, TrainableModel};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// TOML file with an SftConfig; flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Start from this model directory (`default`: the embedded default) instead of a fresh
    /// default model.
    #[arg(long)]
    from: Option<PathBuf>,
    /// Seed of the fresh model's initialisation.
    #[arg(long, default_value_t = 0)]
    init_seed: u64,
    #[arg(long)]
    task: Option<String>,
    #[arg(long)]
    steps: Option<u64>,
    #[arg(long)]
    batch_size: Option<usize>,
    #[arg(long)]
    lr: Option<f64>,
    #[arg(long)]
    seed: Option<u64>,
    /// Fraction of solutions replaced by a near miss (one digit moved by one).
    #[arg(long)]
    label_noise: Option<f64>,
    /// The environment a multi-turn task's solutions are played against (`guess`); its
    /// answers are masked out of the loss.
    #[arg(long)]
    env: Option<String>,
    /// Model turns per episode in the held-out evaluation at the end.
    #[arg(long)]
    max_turns: Option<u32>,
    /// With `--env calculator`: the fraction of solutions shown as a tool call, then the
    /// answer.
    #[arg(long)]
    tool_rate: Option<f64>,
    /// How demonstrations are laid out: `auto` (the model's chat template if its directory
    /// has one), `none` (plain text), or the path of a Jinja template file.
    #[arg(long)]
    chat_template: Option<String>,
    /// A system message opening every demonstration (with a chat template only).
    #[arg(long)]
    system_prompt: Option<String>,
    /// Output directory (config.json, model.safetensors, tokenizer.json, sft.toml).
    #[arg(long, default_value = "runs/sft")]
    out: PathBuf,
    /// Held-out problems for the greedy evaluation at the end (0 = skip).
    #[arg(long, default_value_t = 500)]
    eval_n: usize,
}

/// The config file (or the defaults) with the flags given on top.
fn config(a: &Args) -> anyhow::Result<SftConfig> {
    let mut cfg: SftConfig = match &a.config {
        Some(p) => {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            toml::from_str(&text).with_context(|| format!("parsing {}", p.display()))?
        }
        None => SftConfig::default(),
    };
    if let Some(v) = a.task.clone() {
        cfg.task = v;
    }
    if let Some(v) = a.steps {
        cfg.steps = v;
    }
    if let Some(v) = a.batch_size {
        cfg.batch_size = v;
    }
    if let Some(v) = a.lr {
        cfg.lr = v;
    }
    if let Some(v) = a.seed {
        cfg.seed = v;
    }
    if let Some(v) = a.label_noise {
        cfg.label_noise = v;
    }
    if let Some(v) = a.chat_template.clone() {
        cfg.chat_template = v;
    }
    if let Some(v) = a.system_prompt.clone() {
        cfg.system_prompt = Some(v);
    }
    if let Some(v) = a.env.clone() {
        cfg.env = v;
    }
    if let Some(v) = a.max_turns {
        cfg.max_turns = v;
    }
    if let Some(v) = a.tool_rate {
        cfg.tool_rate = v;
    }
    Ok(cfg)
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let cfg = config(&a)?;
    cfg.validate()?;
    tracing::info!(config = ?cfg, "sft");
    let model = match &a.from {
        Some(dir) if dir.as_os_str() == "default" => {
            let m = policy::default_model::embedded()?;
            TrainableModel::new(m.config, m.tokenizer, &m.weights)?
        }
        Some(dir) => {
            TrainableModel::load(dir).with_context(|| format!("loading {}", dir.display()))?
        }
        None => {
            let m = policy::default_model::random_default(a.init_seed)?;
            TrainableModel::new(m.config, m.tokenizer, &m.weights)?
        }
    };
    let source = tasks::from_spec(&cfg.task, cfg.seed, &tasks::VerifierRegistry::new())?;
    let eos = model
        .tokenizer
        .eos_ids()
        .first()
        .copied()
        .context("the tokenizer has no end-of-sequence token")?;
    let pb = progress::bar(cfg.steps, "sft");
    let started = std::time::Instant::now();
    let (mut tokens, mut ema) = (0usize, f64::NAN);
    train_sft(&model, source.as_ref(), &cfg, eos, |s| {
        tokens += s.tokens;
        ema = if ema.is_nan() {
            s.loss
        } else {
            0.95 * ema + 0.05 * s.loss
        };
        let tps = tokens as f64 / started.elapsed().as_secs_f64();
        pb.set_position(s.step + 1);
        pb.set_message(format!("loss {ema:.3} lr {:.1e} {tps:.0} tok/s", s.lr));
        if (s.step + 1) % 50 == 0 {
            tracing::debug!(step = s.step + 1, loss = ema, "sft");
        }
    })?;
    pb.finish_and_clear();
    model
        .save(&a.out)
        .with_context(|| format!("saving {}", a.out.display()))?;
    std::fs::write(a.out.join("sft.toml"), toml::to_string(&cfg)?)?;
    tracing::info!(out = %a.out.display(), loss = ema, secs = started.elapsed().as_secs_f64(), "sft done");
    if a.eval_n > 0 {
        let episode = rollout::config::EpisodeConfig {
            env: cfg.env.clone(),
            max_turns: cfg.max_turns,
            chat_template: cfg.chat_template.clone(),
            system_prompt: cfg.system_prompt.clone(),
            ..Default::default()
        };
        let episodes = rollout::Episodes::builtin(&episode, source.verifier())?
            .with_chat(&episode, &model.tokenizer)?;
        let greedy = rollout::greedy_eval(
            model.policy(),
            &model.tokenizer,
            source.as_ref(),
            &episodes,
            a.eval_n,
            16,
            &[eos],
        )?;
        let sampled = rollout::sampled_eval(
            model.policy(),
            &model.tokenizer,
            source.as_ref(),
            &episodes,
            a.eval_n,
            4,
            16,
            &[eos],
        )?;
        println!(
            "{}: held-out pass@1 greedy {:.3} ({}/{}), sampled at T = 1 {:.3} ({}/{} draws)",
            greedy.task,
            greedy.pass_rate,
            greedy.correct,
            greedy.n,
            sampled.pass_rate,
            sampled.correct,
            sampled.n
        );
    }
    Ok(())
}
