//! The learner server's training thread: batches of `prompts_per_step` groups from the
//! queue, one update each (the synchronous loop's code), then a new version for actors and
//! the coordinator.

use super::{EncodedVersion, LearnerSummary, Shared};
use crate::checkpoint::{self, RunState};
use crate::error::{LearnerError, Result};
use crate::metrics::MetricsLog;
use crate::params::TrainableModel;
use crate::sync_loop::{open_run, record_step, Start as RunStart};
use crate::update::{Learner, StepReport};
use rollout::config::RunConfig;
use rollout::RolloutGroup;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

/// The learner and counters the server starts with.
pub(crate) struct Start {
    learner: Learner,
    state: RunState,
}

impl Start {
    /// Resumes from the latest checkpoint in `out`, or starts fresh from the config's model.
    pub fn load(cfg: &RunConfig, out: &std::path::Path) -> Result<Self> {
        let how = if checkpoint::latest(out).is_some() {
            RunStart::Resume
        } else {
            let m = policy::default_model::load_model(&cfg.model)?;
            RunStart::Fresh(Box::new(TrainableModel::new(
                m.config,
                m.tokenizer,
                &m.weights,
            )?))
        };
        let (learner, state) = open_run(cfg, out, how)?;
        Ok(Start { learner, state })
    }

    pub fn model(&self) -> &TrainableModel {
        &self.learner.model
    }

    pub fn version(&self) -> u64 {
        self.learner.version()
    }
}

fn publish(shared: &Shared, handle: &tokio::runtime::Handle, req: proto::PublishVersionRequest) {
    let mut client = shared.coordinator.clone();
    let version = req.version;
    if let Err(s) = handle.block_on(client.publish_version(req)) {
        tracing::warn!(version, error = %s.message(), "could not publish the version to the coordinator");
    }
}

/// Trains until the run's last step or until `stop` is set; returns what it did.
pub(crate) fn train(
    cfg: RunConfig,
    out: PathBuf,
    start: Start,
    mut queue: mpsc::Receiver<RolloutGroup>,
    shared: Arc<Shared>,
    handle: tokio::runtime::Handle,
    mut stop: watch::Receiver<bool>,
) -> Result<LearnerSummary> {
    let Start {
        mut learner,
        mut state,
    } = start;
    let source = tasks::from_spec(&cfg.task, cfg.seed, &tasks::VerifierRegistry::new())?;
    let mut log = MetricsLog::open(&out)?;
    let started = Instant::now();
    let wall0 = state.wall_s;
    let mut last_eval = None;
    let mut stale_skipped = 0usize;
    while state.step < cfg.steps {
        let mut groups = Vec::with_capacity(cfg.prompts_per_step);
        while groups.len() < cfg.prompts_per_step {
            let next = handle.block_on(async {
                tokio::select! {
                    g = queue.recv() => g,
                    _ = stop.wait_for(|s| *s) => None,
                }
            });
            match next {
                // A group already past the lag bound is dropped here and does not take a
                // slot in the batch (it is counted in the next step's dropped_stale).
                Some(g) if max_lag(&g, learner.version()) > cfg.update.max_lag => {
                    stale_skipped += 1
                }
                Some(g) => groups.push(g),
                None => {
                    tracing::info!(
                        step = state.step,
                        "stopping before the run's end; checkpointing"
                    );
                    checkpoint::save(&out, &learner.model, &learner.optimizer, &state)?;
                    return Ok(LearnerSummary {
                        steps: state.step,
                        version: state.version,
                        last_eval,
                    });
                }
            }
        }
        let step_started = Instant::now();
        let mut report = learner.step(&groups)?;
        report.dropped_stale += std::mem::take(&mut stale_skipped);
        state.step += 1;
        state.wall_s = wall0 + started.elapsed().as_secs_f64();
        let zero_variance = report.zero_variance_ids.clone();
        if learner.version() != state.version {
            state.version = learner.version();
            let encoded = EncodedVersion::encode(state.version, &learner.model)?;
            shared.version.store(state.version, Ordering::Relaxed);
            shared.weights.send_replace(Arc::new(encoded));
        }
        // Published before the evaluation record_step may run, so actors never wait on it.
        let stats = step_stats(&report, state.step, state.wall_s, step_started.elapsed());
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
        let line = record_step(
            &cfg,
            &out,
            &learner,
            &state,
            report,
            step_started,
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
    learner.model.save(&out.join("final"))?;
    publish(
        &shared,
        &handle,
        proto::PublishVersionRequest {
            version: state.version,
            done: true,
            ..Default::default()
        },
    );
    if state.step < cfg.steps {
        return Err(LearnerError::Remote("stopped early".into()));
    }
    Ok(LearnerSummary {
        steps: state.step,
        version: state.version,
        last_eval,
    })
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

/// The largest lag of any token of `g` if it were trained at `version`.
fn max_lag(g: &RolloutGroup, version: u64) -> u64 {
    g.samples
        .iter()
        .flat_map(|s| &s.versions)
        .map(|&v| version.saturating_sub(v))
        .max()
        .unwrap_or(0)
}
