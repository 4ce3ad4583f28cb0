//! `oxrl run`: an RL training run. `--sync` is the single-process loop (the baseline).

use crate::config::load_config;
use crate::{model_arg, progress};
use anyhow::Context;
use learner::sync_loop::{run_sync, Start};
use learner::{RunConfig, TrainableModel};
use std::path::PathBuf;

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
    /// Held-out problems of a dataset task (JSONL); default: a hash split of the task file.
    #[arg(long)]
    eval_data: Option<String>,
    /// Training prompts of a procedural task, walked in epochs (0: an unbounded stream).
    #[arg(long)]
    train_size: Option<u64>,
    /// Passes over the training pool before the run ends (0: no limit).
    #[arg(long)]
    epochs: Option<u64>,
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
    /// Draws per held-out problem of the sampled (T = 1) evaluation.
    #[arg(long)]
    eval_samples: Option<usize>,
    #[arg(long)]
    checkpoint_every: Option<u64>,
    /// Actor processes (pipeline mode).
    #[arg(long)]
    actors: Option<usize>,
    /// Pipeline lag bound k: no token trains more than k versions after it was sampled.
    #[arg(long)]
    max_lag: Option<u64>,
    /// How versions travel to actors ([pipeline] weight_sync): full (fp32, exact), bf16,
    /// delta (fp32 XOR the actor's version, exact) or bf16-delta.
    #[arg(long)]
    weight_sync: Option<learner::WeightSync>,
    /// Restarts of one crashed role (coordinator, learner, an actor) within the restart
    /// window before the run ends (pipeline mode; 0: the first crash ends it).
    #[arg(long)]
    max_restarts: Option<u32>,
    /// The window, in seconds, over which a role's restarts are counted.
    #[arg(long)]
    restart_window_s: Option<f64>,
    /// Delay before restarting a crashed role, doubling with each recent restart of it.
    #[arg(long)]
    restart_backoff_ms: Option<u64>,
    /// The longest delay before a restart.
    #[arg(long)]
    restart_backoff_max_ms: Option<u64>,
}

impl Args {
    fn apply(&self, cfg: &mut RunConfig) {
        if let Some(v) = &self.model {
            cfg.model = v.clone();
        }
        if let Some(v) = &self.task {
            cfg.task = v.clone();
        }
        if let Some(v) = &self.eval_data {
            cfg.eval_data = Some(v.clone());
        }
        if let Some(v) = self.train_size {
            cfg.train_size = v;
        }
        if let Some(v) = self.epochs {
            cfg.epochs = v;
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
        if let Some(v) = self.eval_samples {
            cfg.eval_samples = v;
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
        if let Some(v) = self.weight_sync {
            cfg.pipeline.weight_sync = v;
        }
        self.apply_restarts(&mut cfg.pipeline);
    }

    fn apply_restarts(&self, pipeline: &mut learner::PipelineConfig) {
        if let Some(v) = self.max_restarts {
            pipeline.max_restarts = v;
        }
        if let Some(v) = self.restart_window_s {
            pipeline.restart_window_s = v;
        }
        if let Some(v) = self.restart_backoff_ms {
            pipeline.restart_backoff_ms = v;
        }
        if let Some(v) = self.restart_backoff_max_ms {
            pipeline.restart_backoff_max_ms = v;
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
    // Before any work: a value that cannot be meant is refused with its field and range.
    cfg.validate()?;
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::write(dir.join("config.toml"), toml::to_string(&cfg)?)?;
    tracing::info!(config = ?cfg, dir = %dir.display(), "run");
    if a.resume.is_none() {
        anyhow::ensure!(
            learner::checkpoint::latest(&dir).is_none(),
            "{} already holds a run; use --resume {} or another --out",
            dir.display(),
            dir.display()
        );
    }
    if !a.sync {
        return crate::commands::launch::run_pipeline(&cfg, &dir, a.resume.is_some());
    }
    // A remote environment ([episode] url) is dialled with the user's token, if any.
    if let Ok(raw) = std::env::var(proto::transport::TOKEN_ENV) {
        let token = proto::transport::AuthToken::parse(&raw, "env OXRL_AUTH_TOKEN")?;
        learner::episodes::use_security(&proto::transport::Security::default().with_token(token));
    }
    let start = if a.resume.is_some() {
        Start::Resume
    } else {
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
        if line.eval_sampled_pass_rate.is_some() {
            last_eval = line.eval_sampled_pass_rate;
        }
        pb.set_position(line.step);
        pb.set_message(format!(
            "v{} reward {:.3} sampled pass@1 {} {:.0} tok/s",
            line.report.version,
            line.report.reward_mean,
            last_eval.map_or("-".into(), |e| format!("{e:.3}")),
            line.tokens_per_s
        ));
        tracing::debug!(step = line.step, reward = line.report.reward_mean, "step");
    })?;
    pb.finish_and_clear();
    crate::fit::run_curve::finish(&dir, state.step, state.version, state.wall_s)
}
