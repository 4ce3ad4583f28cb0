//! One learner step: rollout groups in, one optimizer step out (the ScaleRL update).
//!
//! Groups are validated (a bad one is rejected before it can reach the weights), groups
//! past the lag bound are dropped, zero-variance groups are dropped and counted,
//! advantages are group-centred and normalised, the objective is evaluated in
//! micro-batches whose gradients are summed, and AdamW takes one step.

use crate::batch::{BatchRow, Layout, TokenBatch};
use crate::collective::{Collective, SingleProcess};
use crate::error::{LearnerError, Result};
use crate::objective::{self, ObjectiveInputs};
use crate::optim::{accumulate, learning_rate, AdamW, Grads};
use crate::params::TrainableModel;
use crate::shared_batch::SharedBatch;
use rollout::{staleness, LagBound, RolloutGroup};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub use rollout::config::UpdateConfig;

/// What one step consumed and did; becomes a line of `metrics.jsonl`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StepReport {
    /// Version the update produced (the learner's version after the step).
    pub version: u64,
    /// Groups (prompts) received.
    pub prompts: usize,
    /// Samples received.
    pub samples: usize,
    /// Model tokens trained on (environment tokens of multi-turn episodes are not counted).
    pub tokens: usize,
    pub reward_mean: f64,
    /// Fraction of samples with full reward.
    pub pass_rate: f64,
    pub zero_variance_groups: usize,
    /// `zero_variance_groups / prompts` (0 with no prompts): the share of the step's groups
    /// the policy already always solves or always fails.
    #[serde(default)]
    pub zero_variance_frac: f64,
    pub dropped_stale: usize,
    pub truncated_frac: f64,
    pub loss: f64,
    pub grad_norm: f64,
    pub lr: f64,
    pub rho_mean: f64,
    /// Standard deviation of the importance ratio over the step's tokens: with `rho_mean`,
    /// how far the sampling weights were from the trained ones (lag, or bf16 weight sync).
    #[serde(default)]
    pub rho_std: f64,
    pub clip_frac: f64,
    pub lag_mean: f64,
    pub lag_max: u64,
    /// Lag in versions -> completion tokens trained on.
    #[serde(deserialize_with = "lag_hist_from_json")]
    pub lag_hist: BTreeMap<u64, u64>,
    /// Trained samples whose tokens came from more than one version (in-flight updates).
    pub mixed_version_samples: usize,
    /// Mean model turns per received sample (1 for one-turn tasks).
    #[serde(default = "one")]
    pub turns_mean: f64,
    /// Environment tokens in the received samples (context only: never trained on).
    #[serde(default)]
    pub env_tokens: usize,
    /// Problem ids whose group had zero variance (for the curriculum).
    #[serde(skip)]
    pub zero_variance_ids: Vec<String>,
}

fn one() -> f64 {
    1.0
}

/// Reads `lag_hist` back from JSON, whose object keys are strings ("0": tokens). serde_json
/// parses integer keys itself, but not once the report is flattened into a `metrics.jsonl`
/// line (`#[serde(flatten)]` buffers the keys as strings first).
fn lag_hist_from_json<'de, D>(deserializer: D) -> std::result::Result<BTreeMap<u64, u64>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let by_key = BTreeMap::<String, u64>::deserialize(deserializer)?;
    by_key
        .into_iter()
        .map(|(lag, tokens)| {
            lag.parse::<u64>().map(|lag| (lag, tokens)).map_err(|_| {
                serde::de::Error::custom(format!("lag_hist key {lag:?} is not a lag in versions"))
            })
        })
        .collect()
}

/// The learner's state: weights, optimizer, version, and its data-parallel group.
pub struct Learner {
    pub model: TrainableModel,
    pub optimizer: AdamW,
    pub config: UpdateConfig,
    version: u64,
    collective: Box<dyn Collective>,
}

impl Learner {
    /// A learner at `version` over `model`.
    pub fn new(model: TrainableModel, config: UpdateConfig, version: u64) -> Self {
        Learner {
            optimizer: AdamW::new(config.optimizer.clone()),
            model,
            config,
            version,
            collective: Box::new(SingleProcess),
        }
    }

    /// Makes this learner one rank of a data-parallel group. Every rank must start from
    /// the same weights and receive the same groups: advantages and aggregation weights stay
    /// global, each rank runs forward/backward on its share of the micro-batches, and the
    /// summed gradients make every rank take the same optimizer step as one process would.
    pub fn with_collective(mut self, collective: Box<dyn Collective>) -> Self {
        self.collective = collective;
        self
    }

    /// The version of the current weights (one per optimizer step).
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Restores the version counter (on resume).
    pub fn set_version(&mut self, v: u64) {
        self.version = v;
    }

    /// Trains on `groups`. Invalid groups are an error and nothing is updated; stale and
    /// zero-variance groups are dropped and counted. With nothing left to learn from, the
    /// weights and version stay as they are (`tokens == 0` in the report).
    pub fn step(&mut self, groups: &[RolloutGroup]) -> Result<StepReport> {
        let vocab = self.model.config.vocab_size;
        for g in groups {
            g.validate(vocab).map_err(|e| LearnerError::InvalidGroup {
                group: g.group_id.clone(),
                reason: e.to_string(),
            })?;
        }
        let mut report = received(groups);
        // The version this step trains; lag is measured against it.
        let trained = self.version;
        let kept = self.keep(groups, trained, &mut report);
        record_lags(&kept, trained, &mut report);
        report.lr = learning_rate(
            self.config.lr,
            self.optimizer.steps(),
            self.config.warmup,
            0,
            1.0,
        );
        report.version = self.version;
        if kept.is_empty() {
            return Ok(report);
        }
        let rows = Rows::new(&kept, &self.config);
        let (grads, sums) = self.gradients(&kept, &rows)?;
        let stats = self.optimizer.step(self.model.vars(), &grads, report.lr)?;
        self.version += 1;
        report.version = self.version;
        report.tokens = sums.tokens;
        report.loss = sums.loss;
        report.grad_norm = stats.grad_norm;
        report.rho_mean = sums.rho / sums.tokens.max(1) as f64;
        let sq_dev = sums.rho_sq_dev / sums.tokens.max(1) as f64;
        report.rho_std = (sq_dev - (report.rho_mean - 1.0).powi(2)).max(0.0).sqrt();
        report.clip_frac = sums.clip / sums.tokens.max(1) as f64;
        Ok(report)
    }

    /// The groups to train on: those past the lag bound and those with zero variance are
    /// dropped and counted in `report`.
    fn keep<'g>(
        &self,
        groups: &'g [RolloutGroup],
        trained: u64,
        report: &mut StepReport,
    ) -> Vec<&'g RolloutGroup> {
        let mut kept = Vec::new();
        for g in groups {
            if LagBound(self.config.max_lag).group_is_stale(g, trained) {
                report.dropped_stale += 1;
                continue;
            }
            if g.zero_variance() {
                report.zero_variance_groups += 1;
                report.zero_variance_ids.push(g.problem_id.clone());
                continue;
            }
            kept.push(g);
        }
        report.zero_variance_frac = if groups.is_empty() {
            0.0
        } else {
            report.zero_variance_groups as f64 / groups.len() as f64
        };
        report.mixed_version_samples = kept
            .iter()
            .flat_map(|g| &g.samples)
            .filter(|s| s.versions.windows(2).any(|w| w[0] != w[1]))
            .count();
        kept
    }

    /// Forward and backward over this rank's micro-batches of `rows`; the gradients and
    /// figures summed over the whole data-parallel group.
    fn gradients(&mut self, kept: &[&RolloutGroup], rows: &Rows) -> Result<(Grads, Sums)> {
        let mut grads = Grads::new();
        let mut sums = Sums::default();
        let (rank, world) = (self.collective.rank(), self.collective.world_size());
        let chunk_size = self
            .config
            .micro_batch
            .min(rows.len().div_ceil(world))
            .max(1);
        let all: Vec<usize> = (0..rows.len()).collect();
        for (ci, chunk) in all.chunks(chunk_size).enumerate() {
            if ci % world == rank {
                self.micro_batch(kept, rows, chunk, &mut grads, &mut sums)?;
            }
        }
        if world > 1 {
            grads = self.all_reduce(grads)?;
            let mut flat = [
                sums.loss as f32,
                sums.rho as f32,
                sums.clip as f32,
                sums.tokens as f32,
                sums.rho_sq_dev as f32,
            ];
            self.collective.all_reduce_sum(&mut flat)?;
            sums = Sums {
                loss: flat[0] as f64,
                rho: flat[1] as f64,
                clip: flat[2] as f64,
                tokens: flat[3] as usize,
                rho_sq_dev: flat[4] as f64,
            };
        }
        Ok((grads, sums))
    }

    /// The objective over the rows in `chunk`: its gradient added to `grads`, its figures to
    /// `sums`. A non-finite loss is an error before anything is accumulated.
    fn micro_batch(
        &self,
        kept: &[&RolloutGroup],
        rows: &Rows,
        chunk: &[usize],
        grads: &mut Grads,
        sums: &mut Sums,
    ) -> Result<()> {
        let sample = |r: usize| &kept[rows.at[r].0].samples[rows.at[r].1];
        let batch_rows: Vec<BatchRow> = chunk
            .iter()
            .map(|&r| BatchRow {
                prompt: kept[rows.at[r].0].prompt_tokens.as_slice(),
                completion: sample(r).tokens.as_slice(),
                mask: sample(r).mask.as_slice(),
            })
            .collect();
        let pad = self.model.tokenizer.pad_id();
        let device = self.model.policy().device().clone();
        let shared = self
            .config
            .share_prompts
            .then(|| SharedBatch::from_rows(&batch_rows, pad, &device))
            .flatten();
        let batch: Box<dyn Layout> = match shared {
            Some(b) => Box::new(b),
            None => Box::new(TokenBatch::from_rows(&batch_rows, pad, &device)?),
        };
        let per_sample = |f: &dyn Fn(usize) -> Vec<f32>| -> Vec<Vec<f32>> {
            chunk.iter().map(|&r| f(r)).collect()
        };
        let logp_gen = batch.per_token(&per_sample(&|r| sample(r).logprobs.clone()), 0.0)?;
        let adv = batch.per_token(
            &per_sample(&|r| vec![rows.advantages[rows.at[r].0][rows.at[r].1]; rows.lens[r]]),
            0.0,
        )?;
        let weight = batch.per_token(&per_sample(&|r| vec![rows.weights[r]; rows.lens[r]]), 0.0)?;
        let logp_train = batch.logprobs(self.model.policy())?;
        let (loss, stats) = objective::loss(
            self.config.objective,
            &ObjectiveInputs {
                logp_train: &logp_train,
                logp_gen: &logp_gen,
                advantage: &adv,
                weight: &weight,
            },
        )?;
        let value = loss.to_scalar::<f32>()? as f64;
        if !value.is_finite() {
            return Err(LearnerError::NonFinite {
                what: "loss",
                step: self.optimizer.steps(),
            });
        }
        let t = batch.completion_tokens();
        sums.loss += value;
        sums.rho += stats.rho_mean * t as f64;
        sums.rho_sq_dev += stats.rho_sq_dev * t as f64;
        sums.clip += stats.clip_frac * t as f64;
        sums.tokens += t;
        accumulate(grads, self.model.vars(), &loss.backward()?)?;
        Ok(())
    }

    /// Makes this rank's weights rank 0's (call once when a data-parallel group forms, so
    /// every rank starts from the same weights whatever each loaded).
    pub fn sync_weights(&mut self) -> Result<()> {
        crate::collective::broadcast_vars(self.collective.as_mut(), self.model.vars())
    }

    /// This learner's rank and the size of its data-parallel group.
    pub fn rank_and_world(&self) -> (usize, usize) {
        (self.collective.rank(), self.collective.world_size())
    }

    /// Sums gradients over the group: one flat buffer in parameter-name order (on the
    /// weights' device, so NCCL reduces it in place on the GPU), zeros where this rank
    /// computed none.
    fn all_reduce(&mut self, grads: Grads) -> Result<Grads> {
        use candle_core::{DType, Tensor};
        let mut parts = Vec::with_capacity(self.model.vars().len());
        for (name, var) in self.model.vars() {
            parts.push(match grads.get(name) {
                Some(g) => g.flatten_all()?.to_dtype(DType::F32)?,
                None => Tensor::zeros(var.elem_count(), DType::F32, var.device())?,
            });
        }
        let flat = self
            .collective
            .all_reduce_sum_tensor(&Tensor::cat(&parts, 0)?)?;
        let mut out = Grads::new();
        let mut offset = 0;
        for (name, var) in self.model.vars() {
            let n = var.elem_count();
            out.insert(
                name.clone(),
                flat.narrow(0, offset, n)?.reshape(var.dims())?,
            );
            offset += n;
        }
        Ok(out)
    }
}

/// What a step received, before anything is dropped: counts, mean reward, pass and
/// truncation rates.
fn received(groups: &[RolloutGroup]) -> StepReport {
    let all: Vec<_> = groups.iter().flat_map(|g| &g.samples).collect();
    let n = all.len().max(1) as f64;
    StepReport {
        prompts: groups.len(),
        samples: all.len(),
        reward_mean: all.iter().map(|s| s.reward as f64).sum::<f64>() / n,
        pass_rate: all.iter().filter(|s| s.reward >= 1.0).count() as f64 / n,
        truncated_frac: all.iter().filter(|s| s.truncated).count() as f64 / n,
        turns_mean: all.iter().map(|s| s.turns.max(1) as f64).sum::<f64>() / n,
        env_tokens: all.iter().map(|s| s.env_tokens()).sum(),
        ..Default::default()
    }
}

/// The lag of every kept token against the version `trained`: histogram, mean and max.
fn record_lags(kept: &[&RolloutGroup], trained: u64, report: &mut StepReport) {
    let (mut lag_sum, mut lag_n) = (0u64, 0u64);
    for v in kept
        .iter()
        .flat_map(|g| &g.samples)
        .flat_map(|s| &s.versions)
    {
        let lag = staleness::lag(*v, trained);
        *report.lag_hist.entry(lag).or_default() += 1;
        lag_sum += lag;
        lag_n += 1;
        report.lag_max = report.lag_max.max(lag);
    }
    report.lag_mean = lag_sum as f64 / lag_n.max(1) as f64;
}

/// The step's samples as rows (group, sample), with what the objective needs per row.
struct Rows {
    at: Vec<(usize, usize)>,
    /// Model tokens of each row (environment tokens carry no weight).
    lens: Vec<usize>,
    /// Advantage of each sample, by group then sample.
    advantages: Vec<Vec<f32>>,
    /// Aggregation weight of each row.
    weights: Vec<f32>,
}

impl Rows {
    fn new(kept: &[&RolloutGroup], config: &UpdateConfig) -> Rows {
        let rewards: Vec<Vec<f32>> = kept
            .iter()
            .map(|g| g.samples.iter().map(|s| s.reward).collect())
            .collect();
        let advantages = objective::normalised_advantages(&rewards, config.advantage_norm);
        let at: Vec<(usize, usize)> = kept
            .iter()
            .enumerate()
            .flat_map(|(gi, g)| (0..g.samples.len()).map(move |si| (gi, si)))
            .collect();
        let group_of: Vec<usize> = at.iter().map(|&(g, _)| g).collect();
        let lens: Vec<usize> = at
            .iter()
            .map(|&(g, s)| kept[g].samples[s].model_tokens())
            .collect();
        let weights =
            objective::sample_weights(config.objective, config.aggregation, &group_of, &lens);
        Rows {
            at,
            lens,
            advantages,
            weights,
        }
    }

    fn len(&self) -> usize {
        self.at.len()
    }
}

/// Figures summed over micro-batches (and ranks): loss, token-weighted rho, its squared
/// deviation from 1 and clip fraction, completion tokens.
#[derive(Debug, Default, Clone, Copy)]
struct Sums {
    loss: f64,
    rho: f64,
    rho_sq_dev: f64,
    clip: f64,
    tokens: usize,
}
