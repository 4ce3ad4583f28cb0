//! The synchronous RL loop (`oxrl run --sync`): one process samples a batch of groups with
//! the current weights, verifies them, updates, and repeats. Every lag is 0. It is the
//! baseline of the asynchronous pipeline and uses exactly the same update.

use crate::checkpoint::{self, RunState};
use crate::error::{LearnerError, Result};
use crate::metrics::{MetricsLine, MetricsLog};
use crate::params::TrainableModel;
use crate::update::Learner;
use crate::AdamW;
use policy::device::Placement;
use rollout::config::RunConfig;
use std::path::Path;
use std::time::Instant;
use tasks::{ProblemSource, Split};

/// Where a run starts from.
pub enum Start {
    /// A fresh run from `model`.
    Fresh(Box<TrainableModel>),
    /// Continue from the latest checkpoint in the run directory.
    Resume,
}

/// The learner and counters a run starts with: fresh, or from the latest checkpoint.
pub(crate) fn open_run(cfg: &RunConfig, dir: &Path, start: Start) -> Result<(Learner, RunState)> {
    open_run_on(cfg, dir, start, &Placement::cpu())
}

/// [`open_run`] with a resumed model loaded onto `at` (a fresh model is already placed).
pub(crate) fn open_run_on(
    cfg: &RunConfig,
    dir: &Path,
    start: Start,
    at: &Placement,
) -> Result<(Learner, RunState)> {
    Ok(match start {
        Start::Fresh(model) => {
            let state = RunState {
                step: 0,
                version: 0,
                seed: cfg.seed,
                wall_s: 0.0,
            };
            (Learner::new(*model, cfg.update.clone(), 0), state)
        }
        Start::Resume => {
            let ckpt = checkpoint::latest(dir).ok_or_else(|| LearnerError::Checkpoint {
                path: dir.into(),
                message: "no checkpoint to resume from (expected checkpoints/step-N/state.json)"
                    .into(),
            })?;
            let state = checkpoint::load_state(&ckpt)?;
            let model = TrainableModel::load_on(&ckpt, at)?;
            let mut learner = Learner::new(model, cfg.update.clone(), state.version);
            learner.optimizer =
                AdamW::load(&ckpt, learner.model.vars(), cfg.update.optimizer.clone())?;
            tracing::info!(checkpoint = %ckpt.display(), step = state.step, version = state.version, "resuming");
            (learner, state)
        }
    })
}

/// Seed of the sampling stream of `step` (so a resumed run draws what it would have).
pub fn step_seed(seed: u64, step: u64) -> u64 {
    seed.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ step.wrapping_add(1).wrapping_mul(0xD1B5_4A32_D192_ED03)
}

/// Runs (or resumes) a synchronous run in `dir` until `cfg.steps`; `on_step` sees each line.
pub fn run_sync(
    cfg: &RunConfig,
    dir: &Path,
    start: Start,
    mut on_step: impl FnMut(&MetricsLine),
) -> Result<RunState> {
    std::fs::create_dir_all(dir).map_err(|e| LearnerError::io(dir, e))?;
    let (mut learner, mut state) = open_run(cfg, dir, start)?;
    let registry = tasks::VerifierRegistry::new();
    let source = tasks::from_spec(&cfg.task, cfg.seed, &registry)?;
    let verifier = source.verifier();
    let mut log = MetricsLog::open(dir)?;
    let eos = learner.model.tokenizer.eos_ids();
    let started = Instant::now();
    let wall0 = state.wall_s;
    while state.step < cfg.steps {
        let step_started = Instant::now();
        let problems: Vec<_> = (0..cfg.prompts_per_step as u64)
            .map(|i| source.problem(Split::Train, state.step * cfg.prompts_per_step as u64 + i))
            .collect();
        let mut params = cfg.sampling.clone();
        params.seed = step_seed(cfg.seed, state.step);
        if params.stop_tokens.is_empty() {
            params.stop_tokens = eos.clone();
        }
        let mut groups = rollout::sample_groups(
            learner.model.policy(),
            &learner.model.tokenizer,
            &problems,
            &verifier,
            cfg.group_size,
            &params,
            learner.version(),
        )?;
        for g in &mut groups {
            g.group_id = format!("{}/step-{}", g.problem_id, state.step);
        }
        let report = learner.step(&groups)?;
        state.step += 1;
        state.version = learner.version();
        state.wall_s = wall0 + started.elapsed().as_secs_f64();
        let line = record_step(
            cfg,
            dir,
            &learner,
            &state,
            report,
            step_started,
            source.as_ref(),
            &mut log,
        )?;
        on_step(&line);
    }
    learner.model.save(&dir.join("final"))?;
    Ok(state)
}

/// After a step: held-out evaluation when due, the metrics line, a checkpoint when due.
/// Shared by the synchronous loop and the learner server.
#[allow(clippy::too_many_arguments)]
pub(crate) fn record_step(
    cfg: &RunConfig,
    dir: &Path,
    learner: &Learner,
    state: &RunState,
    report: crate::update::StepReport,
    step_started: Instant,
    source: &dyn ProblemSource,
    log: &mut MetricsLog,
) -> Result<MetricsLine> {
    let eos = learner.model.tokenizer.eos_ids();
    let eval_due = cfg.eval_every > 0
        && (state.step.is_multiple_of(cfg.eval_every) || state.step == cfg.steps);
    let eval_pass_rate = if eval_due {
        Some(evaluate(
            &learner.model,
            source,
            cfg.eval_n,
            cfg.sampling.max_new_tokens,
            &eos,
        )?)
    } else {
        None
    };
    let line = MetricsLine {
        step: state.step,
        wall_s: state.wall_s,
        tokens_per_s: report.tokens as f64 / step_started.elapsed().as_secs_f64(),
        eval_pass_rate,
        report,
    };
    log.append(&line)?;
    let ckpt_due = (cfg.checkpoint_every > 0 && state.step.is_multiple_of(cfg.checkpoint_every))
        || state.step == cfg.steps;
    if ckpt_due {
        checkpoint::save(dir, &learner.model, &learner.optimizer, state)?;
    }
    Ok(line)
}

/// Greedy pass@1 on the held-out split.
pub fn evaluate(
    model: &TrainableModel,
    source: &dyn ProblemSource,
    n: usize,
    max_new_tokens: usize,
    eos: &[u32],
) -> Result<f64> {
    let r = rollout::greedy_eval(
        model.policy(),
        &model.tokenizer,
        source,
        n,
        max_new_tokens,
        eos,
    )?;
    Ok(r.pass_rate)
}
