//! The learner server's training thread: batches of `prompts_per_step` groups from the
//! queue, one update each (the synchronous loop's code), then a new version for actors and
//! the coordinator.
//!
//! The run ends after `steps` steps, or earlier when the coordinator's prompt pool is
//! exhausted (every prompt retired, or the epochs done): then the groups already queued are
//! trained (a last, partial step if they do not fill a batch) and the run finishes as at its
//! last step: evaluation, checkpoint, `final/`, and `done` published to the coordinator.

use super::ledger::TrainedLedger;
use super::{EncodedVersion, LearnerSummary, Shared};
use crate::checkpoint::{self, RunState};
use crate::error::{LearnerError, Result};
use crate::metrics::{EvalLine, MetricsLog};
use crate::params::TrainableModel;
use crate::replicas::Replicas;
use crate::sync_loop::{
    evaluate_logged, evaluate_start, open_run_on, record_step_with, Start as RunStart, StepExtras,
};
use crate::update::{Learner, StepReport};
use policy::device::{DeviceSpec, Placement};
use policy::PolicyError;
use proto::transport::{Retry, RetryLimits};
use rollout::config::RunConfig;
use rollout::{LagBound, RolloutGroup};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

/// The learner (its ranks, with `--gpus N > 1`) and counters the server starts with.
pub(crate) struct Start {
    learner: Replicas,
    state: RunState,
}

/// Checks that this build can train on `gpus` GPUs (0: the CPU), without opening any.
pub fn check_gpus(gpus: usize) -> Result<()> {
    if gpus > 0 && !policy::device::CUDA_BUILT {
        return Err(PolicyError::Device(policy::device::NOT_BUILT_WITH_CUDA.into()).into());
    }
    if gpus > 1 && !cfg!(feature = "nccl") {
        return Err(PolicyError::Device(format!(
            "--gpus {gpus} needs the `nccl` feature for data parallelism; rebuild with \
             --features cuda,nccl (or use --gpus 1)"
        ))
        .into());
    }
    Ok(())
}

/// Where each rank trains: the CPU for `gpus == 0`, else GPU i for rank i.
fn placements(gpus: usize) -> Result<Vec<Placement>> {
    check_gpus(gpus)?;
    if gpus == 0 {
        return Ok(vec![Placement::cpu()]);
    }
    (0..gpus)
        .map(|i| Ok(Placement::open(DeviceSpec::Cuda(i))?))
        .collect()
}

/// Joins rank 0 and the other ranks into one NCCL group over this node's GPUs.
#[cfg(feature = "nccl")]
fn data_parallel(primary: Learner, others: Vec<Learner>) -> Result<Replicas> {
    let mut comms =
        crate::collective::nccl::NcclCollective::local_group(others.len() + 1)?.into_iter();
    let primary = primary.with_collective(Box::new(comms.next().expect("rank 0's communicator")));
    let others = others
        .into_iter()
        .zip(comms)
        .map(|(l, c)| l.with_collective(Box::new(c)))
        .collect();
    Replicas::spawn(primary, others)
}

#[cfg(not(feature = "nccl"))]
fn data_parallel(_primary: Learner, others: Vec<Learner>) -> Result<Replicas> {
    check_gpus(others.len() + 1)?;
    unreachable!("check_gpus refuses more than one GPU without the nccl feature")
}

impl Start {
    /// Resumes from the latest checkpoint in `out`, or starts fresh from the config's model;
    /// on `gpus` GPUs (0: the CPU), one rank per GPU, every rank from the same checkpoint.
    pub fn load(cfg: &RunConfig, out: &std::path::Path, gpus: usize) -> Result<Self> {
        let resume = checkpoint::latest(out).is_some();
        let open = |at: &Placement| {
            let how = if resume {
                RunStart::Resume
            } else {
                let m = policy::default_model::load_model(&cfg.model)?;
                let model = if at.spec.is_cuda() {
                    TrainableModel::new_on(m.config, m.tokenizer, &m.weights, at)?
                } else {
                    TrainableModel::new(m.config, m.tokenizer, &m.weights)?
                };
                RunStart::Fresh(Box::new(model))
            };
            open_run_on(cfg, out, how, at)
        };
        let places = placements(gpus)?;
        let (primary, state) = open(&places[0])?;
        let learner = if places.len() == 1 {
            Replicas::single(primary)
        } else {
            let others = places[1..]
                .iter()
                .map(|at| open(at).map(|(l, _)| l))
                .collect::<Result<Vec<_>>>()?;
            let group = data_parallel(primary, others)?;
            tracing::info!(
                ranks = group.world_size(),
                "data-parallel learner over NCCL"
            );
            group
        };
        Ok(Start { learner, state })
    }

    pub fn model(&self) -> &TrainableModel {
        &self.learner.primary().model
    }

    pub fn version(&self) -> u64 {
        self.learner.primary().version()
    }

    /// Optimizer steps the run has taken (0 when fresh).
    pub fn step(&self) -> u64 {
        self.state.step
    }
}

/// Tells the coordinator about a new version. A failure is logged and training goes on (the
/// next step's publication brings the coordinator up to date), except for the last one: the
/// actors stop only when the coordinator knows the run is done, so that one is retried while
/// the coordinator is down or restarting.
fn publish(shared: &Shared, handle: &tokio::runtime::Handle, req: proto::PublishVersionRequest) {
    let version = req.version;
    let result = if req.done {
        let mut retry = Retry::new(
            "telling the coordinator the run is done",
            RetryLimits::default(),
            shared.request_timeout,
        );
        handle.block_on(retry.run(|| {
            let (mut c, r) = (shared.coordinator.clone(), req.clone());
            async move { c.publish_version(r).await }
        }))
    } else {
        let mut client = shared.coordinator.clone();
        handle
            .block_on(client.publish_version(req))
            .map_err(|s| s.message().to_string())
    };
    if let Err(error) = result {
        tracing::warn!(version, %error, "could not publish the version to the coordinator");
    }
}

/// What may end training before the run's last step.
pub(crate) struct Ends {
    /// An outside shutdown: checkpoint and return.
    pub stop: watch::Receiver<bool>,
    /// The coordinator's prompt pool is exhausted: no more groups will come.
    pub exhausted: watch::Receiver<bool>,
}

/// What waiting for the next group brought.
enum Next {
    Group(RolloutGroup),
    Stop,
    Exhausted,
}

/// Trains until the run's last step, until the rollouts are over (the pool exhausted) or
/// until `stop` is set; returns what it did.
pub(crate) fn train(
    cfg: RunConfig,
    out: PathBuf,
    start: Start,
    mut queue: mpsc::Receiver<RolloutGroup>,
    shared: Arc<Shared>,
    handle: tokio::runtime::Handle,
    ends: Ends,
) -> Result<LearnerSummary> {
    let Start {
        mut learner,
        mut state,
    } = start;
    let Ends {
        mut stop,
        mut exhausted,
    } = ends;
    let source = cfg.problem_source(&tasks::VerifierRegistry::new())?;
    let mut log = MetricsLog::open(&out)?;
    let mut ledger = TrainedLedger::open(&out)?;
    let started = Instant::now();
    let wall0 = state.wall_s;
    let mut last_eval = None;
    let mut stale_skipped = 0usize;
    // The rollouts ended (the pool is exhausted), and whether the step taken last was then
    // recorded as the run's last one (evaluated and checkpointed).
    let mut rollouts_over = false;
    let mut recorded_as_last = false;
    // Actors already sample with version 0 while this runs, so the start costs no pipeline time.
    evaluate_start(&cfg, &out, learner.primary(), &state, source.as_ref())?;
    while state.step < cfg.steps && !rollouts_over {
        let mut groups = Vec::with_capacity(cfg.prompts_per_step);
        while groups.len() < cfg.prompts_per_step {
            let next = handle.block_on(async {
                // Queued groups come before the end of the rollouts: every group of the run
                // is queued by the time the pool reads as exhausted.
                tokio::select! {
                    biased;
                    _ = stop.wait_for(|s| *s) => Next::Stop,
                    g = queue.recv() => g.map_or(Next::Stop, Next::Group),
                    Ok(_) = exhausted.wait_for(|e| *e) => Next::Exhausted,
                }
            });
            match next {
                // A group already past the lag bound is dropped here and does not take a
                // slot in the batch (it is counted in the next step's dropped_stale).
                Next::Group(g)
                    if LagBound(cfg.update.max_lag)
                        .group_is_stale(&g, learner.primary().version()) =>
                {
                    stale_skipped += 1
                }
                Next::Group(g) => groups.push(g),
                Next::Exhausted => {
                    tracing::info!(
                        step = state.step,
                        steps = cfg.steps,
                        groups = groups.len(),
                        "the coordinator's prompt pool is exhausted (every prompt retired or \
                         the configured epochs done): no more groups will come; training the \
                         groups at hand, then finishing the run"
                    );
                    rollouts_over = true;
                    break;
                }
                Next::Stop => {
                    tracing::info!(
                        step = state.step,
                        "stopping before the run's end; checkpointing"
                    );
                    checkpoint::save(
                        &out,
                        &learner.primary().model,
                        &learner.primary().optimizer,
                        &state,
                    )?;
                    return Ok(LearnerSummary {
                        steps: state.step,
                        version: state.version,
                        last_eval,
                    });
                }
            }
        }
        if groups.is_empty() {
            break;
        }
        let step_started = Instant::now();
        let mut report = learner.step(&groups)?;
        report.dropped_stale += std::mem::take(&mut stale_skipped);
        state.step += 1;
        state.wall_s = wall0 + started.elapsed().as_secs_f64();
        ledger.append(state.step, learner.primary().version(), &groups)?;
        let zero_variance = report.zero_variance_ids.clone();
        if learner.primary().version() != state.version {
            state.version = learner.primary().version();
            let encoding = Instant::now();
            let encoded = EncodedVersion::encode(state.version, &learner.primary().model)?;
            shared
                .metrics
                .weight_encode_seconds
                .observe(encoding.elapsed().as_secs_f64());
            shared.version.store(state.version, Ordering::Relaxed);
            shared.weights.send_replace(Arc::new(encoded));
        }
        let step_seconds = step_started.elapsed();
        shared
            .metrics
            .record_step(&report, step_seconds.as_secs_f64());
        // Published before the evaluation record_step may run, so actors never wait on it.
        let stats = step_stats(&report, state.step, state.wall_s, step_seconds);
        publish(
            &shared,
            &handle,
            proto::PublishVersionRequest {
                version: state.version,
                zero_variance_problem_ids: zero_variance,
                done: false,
                stats: Some(stats),
            },
        );
        // The step after which the rollouts ended is the run's last: evaluated and
        // checkpointed as the configured last step would be.
        recorded_as_last = rollouts_over || state.step == cfg.steps;
        let extras = StepExtras {
            report,
            step_started,
            pool: None,
            last: recorded_as_last,
        };
        let line = record_step_with(
            &cfg,
            &out,
            learner.primary(),
            &state,
            extras,
            source.as_ref(),
            &mut log,
        )?;
        if line.eval_pass_rate.is_some() {
            last_eval = line.eval_pass_rate;
        }
        tracing::info!(
            step = line.step,
            version = line.report.version,
            reward = line.report.reward_mean,
            lag_max = line.report.lag_max,
            dropped_stale = line.report.dropped_stale,
            eval = ?line.eval_pass_rate,
            "step"
        );
    }
    if rollouts_over && !recorded_as_last && state.step > 0 {
        // The rollouts ended right after a full step, which was recorded as any other.
        checkpoint::save(
            &out,
            &learner.primary().model,
            &learner.primary().optimizer,
            &state,
        )?;
        if let Some(line) = evaluate_end(&cfg, &out, learner.primary(), &state, source.as_ref())? {
            last_eval = Some(line.eval_pass_rate);
        }
    }
    learner.primary().model.save(&out.join("final"))?;
    publish(
        &shared,
        &handle,
        proto::PublishVersionRequest {
            version: state.version,
            done: true,
            ..Default::default()
        },
    );
    if rollouts_over {
        tracing::info!(
            steps = state.step,
            configured_steps = cfg.steps,
            version = state.version,
            "the run ended with its rollouts: final weights and checkpoint saved"
        );
    } else if state.step < cfg.steps {
        return Err(LearnerError::Remote("stopped early".into()));
    }
    Ok(LearnerSummary {
        steps: state.step,
        version: state.version,
        last_eval,
    })
}

/// The held-out evaluation of a run whose rollouts ended after a step that was not
/// evaluated (`eval_every > 0` and the step not a multiple of it), appended to `eval.jsonl`.
fn evaluate_end(
    cfg: &RunConfig,
    out: &std::path::Path,
    learner: &Learner,
    state: &RunState,
    source: &dyn tasks::ProblemSource,
) -> Result<Option<EvalLine>> {
    if cfg.eval_every == 0 || state.step.is_multiple_of(cfg.eval_every) {
        return Ok(None);
    }
    let line = evaluate_logged(cfg, out, learner, state, source)?;
    tracing::info!(
        greedy = line.eval_pass_rate,
        sampled = line.eval_sampled_pass_rate,
        step = state.step,
        "held-out pass@1 at the end"
    );
    Ok(Some(line))
}

/// One step as the coordinator's dashboard shows it (the numbers of its metrics.jsonl line).
fn step_stats(r: &StepReport, step: u64, wall_s: f64, took: Duration) -> proto::StepStats {
    let longest = r.lag_hist.keys().next_back().map_or(0, |&k| k as usize + 1);
    let mut lag_tokens = vec![0u64; longest];
    for (&lag, &tokens) in &r.lag_hist {
        lag_tokens[lag as usize] = tokens;
    }
    let step_seconds = took.as_secs_f64();
    proto::StepStats {
        step,
        reward_mean: r.reward_mean,
        pass_rate: r.pass_rate,
        tokens_per_s: r.tokens as f64 / step_seconds.max(1e-9),
        step_seconds,
        lag_tokens,
        dropped_stale: r.dropped_stale as u64,
        zero_variance_groups: r.zero_variance_groups as u64,
        tokens: r.tokens as u64,
        wall_s,
    }
}
