//! `oxrl run`: an RL training run. `--sync` is the single-process loop (the baseline).

use crate::{model_arg, progress};
use anyhow::Context;
use learner::sync_loop::{run_sync, Start};
use learner::{RunConfig, TrainableModel};
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct Args {
    /// Single process: sample with the current weights, update, repeat (every lag is 0).
    #[arg(long)]
    sync: bool,
    /// Run directory: config.toml, metrics.jsonl, checkpoints/, final/ (default: a new
    /// `runs/run-<unix time>-<pid>`, so repeating the command never clashes with an earlier run).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Continue the run in this directory from its latest checkpoint (uses its config.toml).
    #[arg(long, conflicts_with = "out")]
    resume: Option<PathBuf>,
    /// TOML file with a RunConfig; the flags below override it.
    #[arg(long)]
    config: Option<PathBuf>,
    #[arg(long)]
    model: Option<String>,
    #[arg(long)]
    task: Option<String>,
    #[arg(long)]
    steps: Option<u64>,
    #[arg(long)]
    prompts_per_step: Option<usize>,
    #[arg(long)]
    group_size: Option<usize>,
    #[arg(long)]
    lr: Option<f64>,
    #[arg(long)]
    seed: Option<u64>,
    #[arg(long)]
    eval_every: Option<u64>,
    #[arg(long)]
    eval_n: Option<usize>,
    #[arg(long)]
    checkpoint_every: Option<u64>,
    /// Actor processes (pipeline mode).
    #[arg(long)]
    actors: Option<usize>,
    /// Pipeline lag bound k: no token trains more than k versions after it was sampled.
    #[arg(long)]
    max_lag: Option<u64>,
}

/// Reads a RunConfig from TOML with a clear error on unknown or malformed keys.
pub fn load_config(path: &Path) -> anyhow::Result<RunConfig> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("invalid run config {}", path.display()))
}

impl Args {
    fn apply(&self, cfg: &mut RunConfig) {
        if let Some(v) = &self.model {
            cfg.model = v.clone();
        }
        if let Some(v) = &self.task {
            cfg.task = v.clone();
        }
        if let Some(v) = self.steps {
            cfg.steps = v;
        }
        if let Some(v) = self.prompts_per_step {
            cfg.prompts_per_step = v;
        }
        if let Some(v) = self.group_size {
            cfg.group_size = v;
        }
        if let Some(v) = self.lr {
            cfg.update.lr = v;
        }
        if let Some(v) = self.seed {
            cfg.seed = v;
        }
        if let Some(v) = self.eval_every {
            cfg.eval_every = v;
        }
        if let Some(v) = self.eval_n {
            cfg.eval_n = v;
        }
        if let Some(v) = self.checkpoint_every {
            cfg.checkpoint_every = v;
        }
        if let Some(v) = self.actors {
            cfg.pipeline.actors = v;
        }
        if let Some(v) = self.max_lag {
            cfg.update.max_lag = v;
        }
    }
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let (dir, mut cfg) = match &a.resume {
        Some(dir) => (dir.clone(), load_config(&dir.join("config.toml"))?),
        None => {
            let cfg = match &a.config {
                Some(p) => load_config(p)?,
                None => RunConfig::default(),
            };
            let out = a.out.clone().unwrap_or_else(|| {
                let secs = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0);
                PathBuf::from(format!("runs/run-{secs}-{}", std::process::id()))
            });
            (out, cfg)
        }
    };
    a.apply(&mut cfg);
    anyhow::ensure!(
        cfg.group_size >= 2,
        "group_size must be at least 2 (advantages are group-centred)"
    );
    anyhow::ensure!(
        cfg.prompts_per_step >= 1,
        "prompts_per_step must be at least 1"
    );
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::write(dir.join("config.toml"), toml::to_string(&cfg)?)?;
    tracing::info!(config = ?cfg, dir = %dir.display(), "run");
    if !a.sync {
        if a.resume.is_none() {
            anyhow::ensure!(
                learner::checkpoint::latest(&dir).is_none(),
                "{} already holds a run; use --resume {} or another --out",
                dir.display(),
                dir.display()
            );
        }
        return crate::commands::launch::run_pipeline(&cfg, &dir);
    }
    let start = if a.resume.is_some() {
        Start::Resume
    } else {
        anyhow::ensure!(
            learner::checkpoint::latest(&dir).is_none(),
            "{} already holds a run; use --resume {} or another --out",
            dir.display(),
            dir.display()
        );
        let m = model_arg::load(&cfg.model)?;
        Start::Fresh(Box::new(TrainableModel::new(
            m.config,
            m.tokenizer,
            &m.weights,
        )?))
    };
    let pb = progress::bar(cfg.steps, "rl");
    let mut last_eval = None;
    let state = run_sync(&cfg, &dir, start, |line| {
        if line.eval_pass_rate.is_some() {
            last_eval = line.eval_pass_rate;
        }
        pb.set_position(line.step);
        pb.set_message(format!(
            "v{} reward {:.3} eval {} {:.0} tok/s",
            line.report.version,
            line.report.reward_mean,
            last_eval.map_or("-".into(), |e| format!("{e:.3}")),
            line.tokens_per_s
        ));
        tracing::debug!(step = line.step, reward = line.report.reward_mean, "step");
    })?;
    pb.finish_and_clear();
    println!(
        "run finished: {} steps, version {}, held-out greedy pass@1 {}, {:.0} s; metrics in {}",
        state.step,
        state.version,
        last_eval.map_or("-".into(), |e| format!("{e:.3}")),
        state.wall_s,
        dir.join("metrics.jsonl").display()
    );
    Ok(())
}

/// The last held-out evaluation in a metrics log.
pub fn last_eval(metrics: &Path) -> Option<f64> {
    let text = std::fs::read_to_string(metrics).ok()?;
    text.lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find_map(|v| v["eval_pass_rate"].as_f64())
}
