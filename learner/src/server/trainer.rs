//! The learner server's training thread: batches of `prompts_per_step` groups from the
//! queue, one update each (the synchronous loop's code), then a new version for actors and
//! the coordinator.
//!
//! The run ends after `steps` steps, or earlier when the coordinator's prompt pool is
//! exhausted (every prompt retired, or the epochs done): then the groups already queued are
//! trained (a last, partial step if they do not fill a batch) and the run finishes as at its
//! last step: evaluation, checkpoint, `final/`, and `done` published to the coordinator.

use super::ledger::TrainedLedger;
use super::{LearnerSummary, Shared};
use crate::checkpoint::{self, RunState};
use crate::error::{LearnerError, Result};
use crate::metrics::{EvalLine, MetricsLog};
use crate::params::TrainableModel;
use crate::replicas::Replicas;
use crate::sync_loop::{
    checkpoint_due, evaluate_logged, evaluate_start, open_run_on, record_step_with,
    Start as RunStart, StepExtras,
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
fn publish(
    shared: &Shared,
    handle: &tokio::runtime::Handle,
    req: proto::PublishVersionRequest,
) -> bool {
    let version = req.version;
    let result = if req.done {
        let mut retry = Retry::new(
            "telling the coordinator the run is done",
            RetryLimits::default(),
            shared.request_timeout,
        );
        handle
            .block_on(retry.run(|| {
                let (mut c, r) = (shared.coordinator.clone(), req.clone());
                async move { c.publish_version(r).await }
            }))
            .map(tonic::Response::into_inner)
            .map_err(|e| e.to_string())
    } else {
        let mut client = shared.coordinator.clone();
        handle
            .block_on(client.publish_version(req))
            .map(tonic::Response::into_inner)
            .map_err(|s| s.message().to_string())
    };
    match result {
        Ok(reply) => {
            // The groups the coordinator has settled for good are forgotten (`seen.rs`).
            shared
                .seen_groups
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .settle_below(reply.settled_below);
            true
        }
        Err(error) => {
            tracing::warn!(version, %error, "could not publish the version to the coordinator");
            false
        }
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
    /// Time to tell the coordinator again about dropped groups it has not heard of.
    Retry,
}

/// How often the report of dropped groups is retried while the coordinator cannot be reached.
const REQUEUE_RETRY: Duration = Duration::from_secs(1);

/// What the trainer brings from the queue for one step.
enum Batch {
    /// Groups to train on (fewer than a batch when the rollouts ended; possibly none).
    Groups(Vec<RolloutGroup>),
    /// An outside shutdown came first.
    Stopped,
}

/// The training thread's state across steps.
struct Trainer {
    cfg: RunConfig,
    out: PathBuf,
    learner: Replicas,
    state: RunState,
    queue: mpsc::Receiver<RolloutGroup>,
    shared: Arc<Shared>,
    handle: tokio::runtime::Handle,
    ends: Ends,
    source: Box<dyn tasks::ProblemSource>,
    log: MetricsLog,
    ledger: TrainedLedger,
    started: Instant,
    wall0: f64,
    last_eval: Option<f64>,
    /// Groups dropped at the queue's exit as past the lag bound, counted in the next step.
    stale_skipped: usize,
    /// Groups trained since the last checkpoint the coordinator heard of: named durable with
    /// the next one.
    undurable: Vec<String>,
    /// Groups dropped past the lag bound that the coordinator has not yet been told to lease
    /// again (told at once; kept and retried while it cannot be reached).
    requeue: Vec<String>,
    /// The rollouts ended (the pool is exhausted).
    rollouts_over: bool,
    /// Whether the step taken last was recorded as the run's last one (evaluated and
    /// checkpointed).
    recorded_as_last: bool,
}

/// Trains until the run's last step, until the rollouts are over (the pool exhausted) or
/// until `stop` is set; returns what it did.
pub(crate) fn train(
    cfg: RunConfig,
    out: PathBuf,
    start: Start,
    queue: mpsc::Receiver<RolloutGroup>,
    shared: Arc<Shared>,
    handle: tokio::runtime::Handle,
    ends: Ends,
) -> Result<LearnerSummary> {
    let source = cfg.problem_source(&tasks::VerifierRegistry::new())?;
    let mut t = Trainer {
        log: MetricsLog::open(&out)?,
        ledger: TrainedLedger::open(&out)?,
        started: Instant::now(),
        wall0: start.state.wall_s,
        learner: start.learner,
        state: start.state,
        cfg,
        out,
        queue,
        shared,
        handle,
        ends,
        source,
        last_eval: None,
        stale_skipped: 0,
        undurable: Vec::new(),
        requeue: Vec::new(),
        rollouts_over: false,
        recorded_as_last: false,
    };
    // Actors already sample with version 0 while this runs, so the start costs no pipeline time.
    evaluate_start(
        &t.cfg,
        &t.out,
        t.learner.primary(),
        &t.state,
        t.source.as_ref(),
    )?;
    while t.state.step < t.cfg.steps && !t.rollouts_over {
        let waiting = Instant::now();
        let groups = match t.next_batch() {
            Batch::Groups(groups) => groups,
            Batch::Stopped => return t.stop_early(),
        };
        if groups.is_empty() {
            break;
        }
        t.train_step(&groups, waiting.elapsed())?;
    }
    t.finish()
}

impl Trainer {
    /// Waits for `prompts_per_step` groups, or fewer when the rollouts end first.
    fn next_batch(&mut self) -> Batch {
        let mut groups = Vec::with_capacity(self.cfg.prompts_per_step);
        while groups.len() < self.cfg.prompts_per_step {
            let (stop, exhausted, queue) = (
                &mut self.ends.stop,
                &mut self.ends.exhausted,
                &mut self.queue,
            );
            let retry = !self.requeue.is_empty();
            let next = self.handle.block_on(async {
                // Queued groups come before the end of the rollouts: every group of the run
                // is queued by the time the pool reads as exhausted.
                tokio::select! {
                    biased;
                    _ = stop.wait_for(|s| *s) => Next::Stop,
                    g = queue.recv() => g.map_or(Next::Stop, Next::Group),
                    Ok(_) = exhausted.wait_for(|e| *e) => Next::Exhausted,
                    _ = tokio::time::sleep(REQUEUE_RETRY), if retry => Next::Retry,
                }
            });
            match next {
                // A group already past the lag bound is dropped here and does not take a
                // slot in the batch (it is counted in the next step's dropped_stale).
                Next::Group(g)
                    if LagBound(self.cfg.update.max_lag)
                        .group_is_stale(&g, self.learner.primary().version()) =>
                {
                    self.drop_stale(g);
                }
                Next::Group(g) => groups.push(g),
                Next::Retry => self.report_requeue(),
                Next::Exhausted => {
                    tracing::info!(
                        step = self.state.step,
                        steps = self.cfg.steps,
                        groups = groups.len(),
                        "the coordinator's prompt pool is exhausted (every prompt retired or \
                         the configured epochs done): no more groups will come; training the \
                         groups at hand, then finishing the run"
                    );
                    self.rollouts_over = true;
                    break;
                }
                Next::Stop => return Batch::Stopped,
            }
        }
        Batch::Groups(groups)
    }

    /// A group that waited in the queue past the lag bound: not trained, forgotten by the
    /// deduplication, and its prompt leased again under the same group id (the coordinator is
    /// told at once), so the epoch still trains it once. Its samples are lost, not its prompt.
    fn drop_stale(&mut self, g: RolloutGroup) {
        tracing::info!(
            group_id = %g.group_id,
            "dropped a group past the lag bound: its prompt is leased again"
        );
        self.stale_skipped += 1;
        self.shared
            .seen_groups
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&g.group_id);
        self.requeue.push(g.group_id);
        self.report_requeue();
    }

    /// Tells the coordinator which dropped groups to lease again; kept for the next try when
    /// it cannot be reached.
    fn report_requeue(&mut self) {
        if self.requeue.is_empty() {
            return;
        }
        let request = proto::PublishVersionRequest {
            version: self.state.version,
            requeue_group_ids: std::mem::take(&mut self.requeue),
            ..Default::default()
        };
        if !publish(&self.shared, &self.handle, request.clone()) {
            self.requeue = request.requeue_group_ids;
        }
    }

    /// An outside shutdown: checkpoints where the run stands and returns.
    fn stop_early(mut self) -> Result<LearnerSummary> {
        tracing::info!(
            step = self.state.step,
            "stopping before the run's end; checkpointing"
        );
        self.checkpoint()?;
        self.report_durable(false);
        Ok(self.summary())
    }

    /// One optimizer step on `groups`, then the new version out to actors and the
    /// coordinator, and the step's record (metrics line, evaluation, checkpoint when due).
    /// `waited`: how long the batch took to arrive.
    fn train_step(&mut self, groups: &[RolloutGroup], waited: Duration) -> Result<()> {
        let span = tracing::info_span!(
            "step",
            step = self.state.step + 1,
            version = tracing::field::Empty
        );
        let _entered = span.enter();
        let group_ids: Vec<&str> = groups.iter().map(|g| g.group_id.as_str()).collect();
        tracing::info!(?group_ids, "training on groups");
        let step_started = Instant::now();
        let mut report = self.learner.step(groups)?;
        let update_s = step_started.elapsed().as_secs_f64();
        report.dropped_stale += std::mem::take(&mut self.stale_skipped);
        self.state.step += 1;
        checkpoint::ensure_finite(&self.learner.primary().model, self.state.step)?;
        self.state.wall_s = self.wall0 + self.started.elapsed().as_secs_f64();
        self.ledger
            .append(self.state.step, self.learner.primary().version(), groups)?;
        self.undurable
            .extend(groups.iter().map(|g| g.group_id.clone()));
        span.record("version", self.learner.primary().version());
        let zero_variance = report.zero_variance_ids.clone();
        self.send_weights()?;
        self.report_requeue();
        let step_seconds = step_started.elapsed();
        self.shared
            .metrics
            .record_step(&report, step_seconds.as_secs_f64());
        // Published before the evaluation record_step may run, so actors never wait on it.
        let stats = step_stats(&report, self.state.step, self.state.wall_s, step_seconds);
        publish(
            &self.shared,
            &self.handle,
            proto::PublishVersionRequest {
                version: self.state.version,
                zero_variance_problem_ids: zero_variance,
                done: false,
                stats: Some(stats),
                durable_group_ids: Vec::new(),
                requeue_group_ids: Vec::new(),
            },
        );
        // The step after which the rollouts ended is the run's last: evaluated and
        // checkpointed as the configured last step would be.
        self.recorded_as_last = self.rollouts_over || self.state.step == self.cfg.steps;
        let extras = StepExtras {
            report,
            step_started,
            update_s,
            wait_s: Some(waited.as_secs_f64()),
            pool: None,
            last: self.recorded_as_last,
        };
        let line = record_step_with(
            &self.cfg,
            &self.out,
            self.learner.primary(),
            &self.state,
            extras,
            self.source.as_ref(),
            &mut self.log,
        )?;
        if line.eval_pass_rate.is_some() {
            self.last_eval = line.eval_pass_rate;
        }
        if checkpoint_due(&self.cfg, self.state.step, self.recorded_as_last) {
            self.report_durable(false);
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
        Ok(())
    }

    /// After a step that made a new version: encodes it and hands it to the weight streams.
    fn send_weights(&mut self) -> Result<()> {
        let version = self.learner.primary().version();
        if version == self.state.version {
            return Ok(());
        }
        self.state.version = version;
        let encoding = Instant::now();
        let encoded = self
            .shared
            .publisher
            .lock()
            .expect("the publisher's lock is never poisoned")
            .publish(
                version,
                self.shared.lineage.current(),
                &self.learner.primary().model,
            )?;
        self.shared
            .metrics
            .weight_encode_seconds
            .observe(encoding.elapsed().as_secs_f64());
        self.shared.version.store(version, Ordering::Relaxed);
        self.shared.weights.send_replace(Arc::new(encoded));
        Ok(())
    }

    /// The end of the run: the last checkpoint and evaluation when the rollouts ended after
    /// a step not recorded as the last, `final/`, and `done` published to the coordinator.
    fn finish(mut self) -> Result<LearnerSummary> {
        if self.rollouts_over && !self.recorded_as_last && self.state.step > 0 {
            // The rollouts ended right after a full step, which was recorded as any other.
            self.checkpoint()?;
            let end = evaluate_end(
                &self.cfg,
                &self.out,
                self.learner.primary(),
                &self.state,
                self.source.as_ref(),
            )?;
            if let Some(line) = end {
                self.last_eval = Some(line.eval_pass_rate);
            }
        }
        checkpoint::save_final(&self.out, &self.learner.primary().model, self.state.step)?;
        // Every step is checkpointed by now: the last report rides with `done`.
        self.report_durable(true);
        if self.rollouts_over {
            tracing::info!(
                steps = self.state.step,
                configured_steps = self.cfg.steps,
                version = self.state.version,
                "the run ended with its rollouts: final weights and checkpoint saved"
            );
        } else if self.state.step < self.cfg.steps {
            return Err(LearnerError::StoppedEarly {
                step: self.state.step,
                steps: self.cfg.steps,
            });
        }
        Ok(self.summary())
    }

    /// Tells the coordinator, right after a checkpoint, which groups it now holds (and which
    /// were refused for good), so that their prompts are done; with `done`, that the run is
    /// over too. Groups whose report fails are named again with the next checkpoint's.
    fn report_durable(&mut self, done: bool) {
        self.report_requeue();
        // The checkpoint's history, for a life resumed from it (a failure only makes that
        // life refuse this one's groups: samples lost, never a token of a lost future).
        if let Err(e) = super::lineage::save(&self.out, self.state.step, &self.shared.lineage) {
            tracing::warn!(error = %e, "could not save the checkpoint's lineage");
        }
        let mut ids = std::mem::take(&mut self.undurable);
        ids.append(
            &mut self
                .shared
                .refused_groups
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        if ids.is_empty() && !done {
            return;
        }
        let request = proto::PublishVersionRequest {
            version: self.state.version,
            done,
            durable_group_ids: ids,
            ..Default::default()
        };
        if !publish(&self.shared, &self.handle, request.clone()) {
            self.undurable = request.durable_group_ids;
        }
    }

    fn checkpoint(&self) -> Result<()> {
        let primary = self.learner.primary();
        checkpoint::save(&self.out, &primary.model, &primary.optimizer, &self.state)?;
        Ok(())
    }

    fn summary(&self) -> LearnerSummary {
        LearnerSummary {
            steps: self.state.step,
            version: self.state.version,
            last_eval: self.last_eval,
        }
    }
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
        turns_mean: r.turns_mean,
        env_tokens: r.env_tokens as u64,
    }
}
