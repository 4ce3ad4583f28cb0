//! The synchronous RL loop (`oxrl run --sync`): one process samples a batch of groups with
//! the current weights, verifies them, updates, and repeats. Every lag is 0. It is the
//! baseline of the asynchronous pipeline and uses exactly the same update.

use crate::checkpoint::{self, RunState};
use crate::error::{LearnerError, Result};
use crate::metrics::{EvalLine, EvalLog, MetricsLine, MetricsLog};
use crate::params::TrainableModel;
use crate::sync_curriculum::SyncCurriculum;
use crate::update::Learner;
use crate::AdamW;
use policy::device::Placement;
use rollout::config::RunConfig;
use std::path::Path;
use std::time::Instant;
use tasks::ProblemSource;

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
    let source = cfg.problem_source(&registry)?;
    let episodes = crate::episodes::for_run(cfg, source.as_ref(), &learner.model.tokenizer)?;
    let mut curriculum = match checkpoint::latest(dir) {
        Some(ckpt) if state.step > 0 => SyncCurriculum::load_or_new(cfg, source.as_ref(), &ckpt)?,
        _ => SyncCurriculum::new(cfg, source.as_ref())?,
    };
    let rm = crate::rm_rewards::RmRewards::for_run(&cfg.reward)?;
    let mut rm_dropped = 0;
    let mut log = MetricsLog::open(dir)?;
    let eos = learner.model.tokenizer.eos_ids();
    let started = Instant::now();
    let wall0 = state.wall_s;
    evaluate_start(cfg, dir, &learner, &state, source.as_ref())?;
    while state.step < cfg.steps {
        let step_started = Instant::now();
        let (indices, problems): (Vec<u64>, Vec<_>) = curriculum
            .next_problems(source.as_ref(), cfg.prompts_per_step)
            .into_iter()
            .unzip();
        if problems.is_empty() {
            tracing::info!(
                step = state.step,
                "the training pool is exhausted (every prompt retired or the epochs done): the run ends"
            );
            break;
        }
        let sampled = sample_step(cfg, &learner, &episodes, &problems, state.step, &eos)?;
        let groups = match &rm {
            Some(rm) => {
                let (groups, dropped) = rm.score(sampled);
                rm_dropped += dropped;
                groups
            }
            None => sampled,
        };
        curriculum.record(&indices, &groups);
        let updating = Instant::now();
        let report = learner.step(&groups)?;
        let update_s = updating.elapsed().as_secs_f64();
        state.step += 1;
        checkpoint::ensure_finite(&learner.model, state.step)?;
        state.version = learner.version();
        state.wall_s = wall0 + started.elapsed().as_secs_f64();
        // The last step: the cap, or the pool has nothing left after this batch.
        let last = state.step == cfg.steps || curriculum.exhausted();
        let line = record_step_with(
            cfg,
            dir,
            &learner,
            &state,
            StepExtras {
                report,
                step_started,
                update_s,
                wait_s: None,
                pool: Some(curriculum.stats()),
                last,
            },
            source.as_ref(),
            &mut log,
        )?;
        if let Some(ckpt) =
            checkpoint::latest(dir).filter(|c| c.ends_with(format!("step-{}", state.step)))
        {
            curriculum.save(&ckpt)?;
        }
        on_step(&line);
        if last {
            break;
        }
    }
    if rm_dropped > 0 {
        tracing::warn!(
            groups = rm_dropped,
            "groups dropped because the reward model gave no usable scores (see the warnings above)"
        );
    }
    checkpoint::save_final(dir, &learner.model, state.step)?;
    Ok(state)
}

/// One step of [`run_sync`] on `problems` with `learner`'s current weights, split into its
/// two phases (`oxrl bench step`): sampling G episodes of each problem with their rewards
/// (the verifier's), then the update.
pub struct TimedStep {
    /// The groups sampled (their prompt tokens, completions and rewards).
    pub groups: Vec<rollout::RolloutGroup>,
    pub sample_s: f64,
    pub update_s: f64,
    pub report: crate::update::StepReport,
}

/// Runs one [`TimedStep`] as `run_sync` would at step `step` (the same sampling seed).
pub fn timed_step(
    cfg: &RunConfig,
    learner: &mut Learner,
    source: &dyn ProblemSource,
    problems: &[tasks::Problem],
    step: u64,
) -> Result<TimedStep> {
    let episodes = crate::episodes::for_run(cfg, source, &learner.model.tokenizer)?;
    let eos = learner.model.tokenizer.eos_ids();
    let t0 = Instant::now();
    let groups = sample_step(cfg, learner, &episodes, problems, step, &eos)?;
    let sample_s = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    let report = learner.step(&groups)?;
    let update_s = t1.elapsed().as_secs_f64();
    Ok(TimedStep {
        groups,
        sample_s,
        update_s,
        report,
    })
}

/// Step `step`'s groups: G episodes of each of `problems` with the learner's current weights
/// (groups whose environment failed are logged and left out).
fn sample_step(
    cfg: &RunConfig,
    learner: &Learner,
    episodes: &rollout::Episodes,
    problems: &[tasks::Problem],
    step: u64,
    eos: &[u32],
) -> Result<Vec<rollout::RolloutGroup>> {
    let mut params = cfg.sampling.clone();
    params.seed = step_seed(cfg.seed, step);
    if params.stop_tokens.is_empty() {
        params.stop_tokens = eos.to_vec();
    }
    let ids: Vec<String> = problems
        .iter()
        .map(|p| format!("{}/step-{step}", p.id))
        .collect();
    let batch = rollout::GroupBatch {
        problems,
        ids: &ids,
        group_size: cfg.group_size,
    };
    // A snapshot with transposed weights for decoding; the model's own follow its variables.
    let sampling = learner.model.policy().for_sampling()?;
    let hook = &mut policy::FixedWeights {
        policy: &sampling,
        version: learner.version(),
    };
    let outcome = rollout::run_episodes(hook, &learner.model.tokenizer, episodes, batch, &params)?
        .expect("fixed weights never stop decoding");
    for d in &outcome.dropped {
        tracing::warn!(group = %d.group_id, reason = d.error.reason(), error = %d.error, "dropped a group: its environment failed");
    }
    Ok(outcome.groups)
}

/// What a step leaves for [`record_step_with`] besides the learner's state.
pub(crate) struct StepExtras {
    pub report: crate::update::StepReport,
    pub step_started: Instant,
    /// Seconds of the update itself.
    pub update_s: f64,
    /// Seconds spent waiting for the batch (the pipeline's learner).
    pub wait_s: Option<f64>,
    /// The sync loop's pool figures.
    pub pool: Option<crate::sync_curriculum::PoolStats>,
    /// The run's last step (evaluated and checkpointed whatever the schedule says).
    pub last: bool,
}

/// After a step: held-out evaluation when due (or on the run's last step), the metrics line,
/// a checkpoint when due. Shared by the synchronous loop and the learner server.
pub(crate) fn record_step_with(
    cfg: &RunConfig,
    dir: &Path,
    learner: &Learner,
    state: &RunState,
    extras: StepExtras,
    source: &dyn ProblemSource,
    log: &mut MetricsLog,
) -> Result<MetricsLine> {
    let StepExtras {
        report,
        step_started,
        update_s,
        wait_s,
        pool,
        last,
    } = extras;
    let eval_due = cfg.eval_every > 0 && (state.step.is_multiple_of(cfg.eval_every) || last);
    let eval = if eval_due {
        Some(evaluate_logged(cfg, dir, learner, state, source)?)
    } else {
        None
    };
    let line = MetricsLine {
        step: state.step,
        wall_s: state.wall_s,
        tokens_per_s: report.tokens as f64 / step_started.elapsed().as_secs_f64(),
        update_s,
        wait_s,
        eval_pass_rate: eval.map(|e| e.eval_pass_rate),
        eval_sampled_pass_rate: eval.map(|e| e.eval_sampled_pass_rate),
        pool,
        report,
    };
    log.append(&line)?;
    if checkpoint_due(cfg, state.step, last) {
        checkpoint::save(dir, &learner.model, &learner.optimizer, state)?;
    }
    Ok(line)
}

/// Whether the step `step` is checkpointed: every `checkpoint_every` steps, and the last.
pub(crate) fn checkpoint_due(cfg: &RunConfig, step: u64, last: bool) -> bool {
    (cfg.checkpoint_every > 0 && step.is_multiple_of(cfg.checkpoint_every)) || last
}

/// Evaluates the starting weights (step 0) of a fresh run into `eval.jsonl`, so that a
/// run's curve has its origin; a resumed run or `eval_every = 0` skips it.
pub(crate) fn evaluate_start(
    cfg: &RunConfig,
    dir: &Path,
    learner: &Learner,
    state: &RunState,
    source: &dyn ProblemSource,
) -> Result<Option<EvalLine>> {
    if cfg.eval_every == 0 || state.step > 0 {
        return Ok(None);
    }
    let line = evaluate_logged(cfg, dir, learner, state, source)?;
    tracing::info!(
        greedy = line.eval_pass_rate,
        sampled = line.eval_sampled_pass_rate,
        "held-out pass@1 at the start"
    );
    Ok(Some(line))
}

/// Greedy and sampled held-out pass@1 of the learner's weights, appended to `eval.jsonl`.
pub(crate) fn evaluate_logged(
    cfg: &RunConfig,
    dir: &Path,
    learner: &Learner,
    state: &RunState,
    source: &dyn ProblemSource,
) -> Result<EvalLine> {
    let episodes = crate::episodes::for_run(cfg, source, &learner.model.tokenizer)?;
    let (greedy, sampled) = evaluate(
        &learner.model,
        source,
        &episodes,
        cfg.eval_n,
        cfg.eval_samples,
        cfg.sampling.max_new_tokens,
        &learner.model.tokenizer.eos_ids(),
    )?;
    let line = EvalLine {
        step: state.step,
        version: learner.version(),
        wall_s: state.wall_s,
        eval_pass_rate: greedy,
        eval_sampled_pass_rate: sampled,
    };
    EvalLog::open(dir)?.append(&line)?;
    Ok(line)
}

/// Greedy and sampled (T = 1, `draws` per problem) pass@1 on the same held-out problems,
/// each draw an episode against `episodes`.
#[allow(clippy::too_many_arguments)] // what the two evaluations take, passed straight on
pub fn evaluate(
    model: &TrainableModel,
    source: &dyn ProblemSource,
    episodes: &rollout::Episodes,
    n: usize,
    draws: usize,
    max_new_tokens: usize,
    eos: &[u32],
) -> Result<(f64, f64)> {
    let (policy, tok) = (&model.policy().for_sampling()?, &model.tokenizer);
    let greedy = rollout::greedy_eval(policy, tok, source, episodes, n, max_new_tokens, eos)?;
    let sampled =
        rollout::sampled_eval(policy, tok, source, episodes, n, draws, max_new_tokens, eos)?;
    Ok((greedy.pass_rate, sampled.pass_rate))
}
