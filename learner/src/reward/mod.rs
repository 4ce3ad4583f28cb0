//! An outcome reward model (ORM) trained as a verifier (Cobbe et al. 2021): N completions per
//! training prompt are sampled from the policy and labelled by the task's verifier (1 right,
//! 0 wrong), and the policy's decoder with a scalar head on the last token of prompt +
//! completion is trained with binary cross-entropy on the label, decoder initialised from the
//! policy and head from zero. The held-out figures are AUC and calibration on samples of
//! held-out prompts.
//!
//! Binary cross-entropy rather than a Bradley-Terry pairwise loss: its sigmoid is a
//! calibrated probability of being right (usable as a confidence, not only a ranking), and
//! every sample teaches it, also on prompts where all N samples are right or all wrong, which
//! have no pairs to compare.

pub mod calibration;
pub mod data;

use crate::error::{LearnerError, Result};
use crate::optim::{accumulate, learning_rate, AdamW, AdamWConfig, Grads};
use calibration::Calibration;
use candle_core::{DType, Tensor, Var};
use data::{label_samples, Draw, Labelled};
use policy::{reward_config, ModelDir, RewardModel, RewardModelDir, SamplingParams, Weights};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rollout::config::{at_least, real, ConfigError, Interval};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use tasks::{ProblemSource, Split};

/// What the reward model is fitted on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RmObjective {
    /// Binary cross-entropy of the score at the last token (the one used at test time).
    LastToken,
    /// Cobbe et al. 2021: the same label at every completion token, binary cross-entropy
    /// averaged over a sample's completion tokens, then over the batch. Only the loss
    /// changes: scoring still reads the last token, so the saved model is the same format.
    /// The default: on held-out prompts it ranks each prompt's samples better
    /// (docs/reward-model.md, "Loss").
    #[default]
    EveryToken,
}

/// `oxrl rm train`'s hyper-parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RmConfig {
    /// Training prompts (the first of the task's training split).
    pub train_prompts: usize,
    /// Held-out prompts whose samples the figures are computed on.
    pub eval_prompts: usize,
    /// Completions sampled per prompt (N).
    pub samples_per_prompt: usize,
    /// Length budget of each completion.
    pub max_new_tokens: usize,
    /// Sampling temperature of the policy's completions.
    pub temperature: f32,
    pub steps: u64,
    /// Labelled samples per optimizer step.
    pub batch_size: usize,
    pub lr: f64,
    pub warmup: u64,
    /// Seed of the samples and of the order they are trained in.
    pub seed: u64,
    /// Sequences decoded together while sampling.
    pub sample_rows: usize,
    pub optimizer: AdamWConfig,
    /// The training loss: at the last token, or at every completion token.
    pub objective: RmObjective,
}

impl Default for RmConfig {
    fn default() -> Self {
        RmConfig {
            train_prompts: 512,
            eval_prompts: 128,
            samples_per_prompt: 8,
            max_new_tokens: 32,
            temperature: 1.0,
            steps: 300,
            batch_size: 32,
            lr: 3e-4,
            warmup: 20,
            seed: 0,
            sample_rows: 256,
            optimizer: AdamWConfig {
                eps: 1e-8,
                ..Default::default()
            },
            objective: RmObjective::EveryToken,
        }
    }
}

impl RmConfig {
    /// Refuses values that cannot be meant, naming the field and its range.
    pub fn validate(&self) -> std::result::Result<(), ConfigError> {
        at_least("train_prompts", self.train_prompts as u64, 1)?;
        at_least("eval_prompts", self.eval_prompts as u64, 1)?;
        at_least("samples_per_prompt", self.samples_per_prompt as u64, 1)?;
        at_least("max_new_tokens", self.max_new_tokens as u64, 1)?;
        at_least("steps", self.steps, 1)?;
        at_least("batch_size", self.batch_size as u64, 1)?;
        at_least("sample_rows", self.sample_rows as u64, 1)?;
        real("lr", self.lr, Interval::above(0.0, 1.0))?;
        real(
            "temperature",
            f64::from(self.temperature),
            Interval::POSITIVE,
        )?;
        self.optimizer.validate("optimizer")
    }
}

/// What `train_reward_model` is doing, for a progress bar.
#[derive(Debug, Clone, Copy)]
pub enum RmProgress {
    /// Sampling the training (`held_out: false`) or held-out prompts' completions.
    Sampling {
        held_out: bool,
        done: usize,
        total: usize,
    },
    /// One optimizer step taken.
    Step(RmStep),
}

/// One optimizer step of the reward model.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RmStep {
    pub step: u64,
    /// Mean binary cross-entropy of the step's batch.
    pub loss: f64,
    pub lr: f64,
}

/// A trained reward model and its figures.
#[derive(Debug)]
pub struct RmOutcome {
    pub model: RewardModelDir,
    /// Fraction of training samples that are correct.
    pub train_accuracy: f64,
    pub train_samples: usize,
    /// AUC and calibration on the held-out prompts' samples.
    pub held_out: Calibration,
    /// AUC within each held-out prompt (right against wrong samples of the same prompt),
    /// averaged over the prompts that have both: the ranking best-of-N uses, which the pooled
    /// AUC can overstate by ranking easy prompts above hard ones.
    pub held_out_within_prompt_auc: Option<f64>,
    /// Of each held-out prompt's N samples, the reward model's pick: its mean correctness.
    pub held_out_best_of_n: f64,
}

/// Mean binary cross-entropy of logits `s` against labels `y` (0 or 1), written with
/// differentiable ops and stable for large |s|: `max(s, 0) - s y + log(1 + exp(-|s|))`.
pub fn bce_with_logits(s: &Tensor, y: &Tensor) -> Result<Tensor> {
    let softplus_neg_abs = (s.abs()?.neg()?.exp()? + 1.0)?.log()?;
    let per = ((s.relu()? - (s * y)?)? + softplus_neg_abs)?;
    Ok(per.mean_all()?)
}

/// Binary cross-entropy at every completion token (Cobbe et al. 2021): `scores` `[B, t]` from
/// [`RewardModel::score_every_token`] (row `i` left-padded by `pads[i]`), each sample's label
/// at every slot from its first completion token (`prompt_lens[i]`; the last token if the
/// completion is empty) to its end, averaged over those slots, then over the batch. A sample
/// with a one-token completion contributes exactly its last-token loss.
pub fn every_token_bce(
    scores: &Tensor,
    labels: &[f32],
    pads: &[usize],
    prompt_lens: &[usize],
) -> Result<Tensor> {
    let (b, t) = scores.dims2()?;
    let mut y = Vec::with_capacity(b * t);
    let mut w = Vec::with_capacity(b * t);
    for i in 0..b {
        let first = (pads[i] + prompt_lens[i]).min(t - 1);
        let weight = 1.0 / ((t - first) * b) as f32;
        y.extend(std::iter::repeat_n(labels[i], t));
        w.extend((0..t).map(|j| if j >= first { weight } else { 0.0 }));
    }
    let device = scores.device();
    let y = Tensor::from_vec(y, (b, t), device)?;
    let w = Tensor::from_vec(w, (b, t), device)?;
    let softplus_neg_abs = (scores.abs()?.neg()?.exp()? + 1.0)?.log()?;
    let per = ((scores.relu()? - (scores * &y)?)? + softplus_neg_abs)?;
    Ok((per * w)?.sum_all()?)
}

/// Trains a reward model for `policy` on `source`; `on_progress` sees sampling and each step.
pub fn train_reward_model(
    policy: &ModelDir,
    source: &dyn ProblemSource,
    cfg: &RmConfig,
    mut on_progress: impl FnMut(RmProgress),
) -> Result<RmOutcome> {
    cfg.validate()?;
    let tok = &policy.tokenizer;
    let sampler = policy.policy()?.for_sampling()?;
    let params = SamplingParams {
        temperature: cfg.temperature,
        max_new_tokens: cfg.max_new_tokens,
        stop_tokens: policy.eos_ids(),
        seed: cfg.seed,
        ..Default::default()
    };
    let sample = |split: Split, count: usize, on: &mut dyn FnMut(RmProgress)| {
        let problems: Vec<_> = match split {
            Split::Train => (0..count as u64)
                .map(|i| source.problem(Split::Train, i))
                .collect(),
            Split::Eval => rollout::eval::held_out_problems(source, count),
        };
        let held_out = split == Split::Eval;
        let total = problems.len();
        let draw = Draw {
            per_prompt: cfg.samples_per_prompt,
            params: SamplingParams {
                seed: params.seed ^ (u64::from(held_out) << 32),
                ..params.clone()
            },
            rows: cfg.sample_rows,
        };
        label_samples(&sampler, tok, &problems, source.verifier(), &draw, |done| {
            on(RmProgress::Sampling {
                held_out,
                done,
                total,
            })
        })
    };
    let train = sample(Split::Train, cfg.train_prompts, &mut on_progress)?;
    let held_out = sample(Split::Eval, cfg.eval_prompts, &mut on_progress)?;
    if train.is_empty() {
        return Err(LearnerError::Config(
            "no training samples (every group was dropped)".into(),
        ));
    }
    let config = reward_config(&policy.config, tok.pad_id())?;
    let vars = initial_vars(policy)?;
    let tensors: Weights = vars
        .iter()
        .map(|(n, v)| (n.clone(), v.as_tensor().clone()))
        .collect();
    let rm = RewardModel::new(&config, &tensors)?;
    fit(&rm, &vars, &train, cfg, tok.pad_id(), &mut on_progress)?;
    let probs = probabilities(&rm, &held_out, cfg.sample_rows, tok.pad_id())?;
    let labels: Vec<bool> = held_out.iter().map(|l| l.correct).collect();
    let held_out_best_of_n = best_of_n(&held_out, &probs);
    let held_out_within_prompt_auc = within_prompt_auc(&held_out, &probs);
    let snapshot: Weights = vars
        .iter()
        .map(|(n, v)| Ok((n.clone(), v.as_tensor().detach().copy()?)))
        .collect::<Result<_>>()?;
    Ok(RmOutcome {
        model: RewardModelDir {
            config,
            tokenizer: tok.clone(),
            weights: snapshot,
        },
        train_accuracy: train.iter().filter(|l| l.correct).count() as f64 / train.len() as f64,
        train_samples: train.len(),
        held_out: calibration::calibration(&probs, &labels),
        held_out_within_prompt_auc,
        held_out_best_of_n,
    })
}

/// The trainable weights: the policy's decoder (no LM head) and a zero score head.
fn initial_vars(policy: &ModelDir) -> Result<BTreeMap<String, Var>> {
    let mut vars = BTreeMap::new();
    for (name, t) in &policy.weights {
        if name != "lm_head.weight" {
            vars.insert(
                name.clone(),
                Var::from_tensor(&t.to_dtype(DType::F32)?.copy()?)?,
            );
        }
    }
    let device = vars
        .values()
        .next()
        .map_or(candle_core::Device::Cpu, |v| v.device().clone());
    let head = Tensor::zeros((1, policy.config.hidden_size), DType::F32, &device)?;
    vars.insert(policy::SCORE_WEIGHT.into(), Var::from_tensor(&head)?);
    Ok(vars)
}

/// `cfg.steps` AdamW steps on batches of `train`, in a seeded order reshuffled every epoch.
fn fit(
    rm: &RewardModel,
    vars: &BTreeMap<String, Var>,
    train: &[Labelled],
    cfg: &RmConfig,
    pad_id: u32,
    on_progress: &mut dyn FnMut(RmProgress),
) -> Result<()> {
    let mut opt = AdamW::new(cfg.optimizer.clone());
    let mut rng = rand::rngs::StdRng::seed_from_u64(cfg.seed);
    let mut order: Vec<usize> = Vec::new();
    let device = rm.decoder().device().clone();
    for step in 0..cfg.steps {
        let mut batch = Vec::with_capacity(cfg.batch_size);
        while batch.len() < cfg.batch_size {
            if order.is_empty() {
                order = (0..train.len()).collect();
                order.shuffle(&mut rng);
            }
            batch.push(&train[order.pop().expect("refilled")]);
        }
        let seqs: Vec<Vec<u32>> = batch.iter().map(|l| l.sequence.clone()).collect();
        let labels: Vec<f32> = batch
            .iter()
            .map(|l| f32::from(u8::from(l.correct)))
            .collect();
        let loss = match cfg.objective {
            RmObjective::LastToken => {
                let y = Tensor::from_vec(labels, batch.len(), &device)?;
                bce_with_logits(&rm.score_tensor(&seqs, pad_id)?, &y)?
            }
            RmObjective::EveryToken => {
                let (scores, pads) = rm.score_every_token(&seqs, pad_id)?;
                let prompt_lens: Vec<usize> = batch.iter().map(|l| l.prompt_len).collect();
                every_token_bce(&scores, &labels, &pads, &prompt_lens)?
            }
        };
        let mut grads = Grads::new();
        accumulate(&mut grads, vars, &loss.backward()?)?;
        let lr = learning_rate(cfg.lr, step, cfg.warmup, cfg.steps, 0.1);
        opt.step(vars, &grads, lr)?;
        let loss = f64::from(loss.to_scalar::<f32>()?);
        if !loss.is_finite() {
            return Err(LearnerError::NonFinite { what: "loss", step });
        }
        on_progress(RmProgress::Step(RmStep { step, loss, lr }));
    }
    Ok(())
}

/// The reward model's probability of being correct (sigmoid of its score) for each sample.
pub fn probabilities(
    rm: &RewardModel,
    samples: &[Labelled],
    rows: usize,
    pad_id: u32,
) -> Result<Vec<f64>> {
    let mut out = Vec::with_capacity(samples.len());
    for chunk in samples.chunks(rows.max(1)) {
        let seqs: Vec<Vec<u32>> = chunk.iter().map(|l| l.sequence.clone()).collect();
        let scores = rm.scores(&seqs, pad_id)?;
        out.extend(scores.iter().map(|&s| 1.0 / (1.0 + (-f64::from(s)).exp())));
    }
    Ok(out)
}

/// Mean correctness of the highest-probability sample of each prompt (ties: the first).
fn best_of_n(samples: &[Labelled], probs: &[f64]) -> f64 {
    let mut best: BTreeMap<usize, (f64, bool)> = BTreeMap::new();
    for (l, &p) in samples.iter().zip(probs) {
        let entry = best.entry(l.prompt).or_insert((f64::NEG_INFINITY, false));
        if p > entry.0 {
            *entry = (p, l.correct);
        }
    }
    best.values().filter(|(_, c)| *c).count() as f64 / best.len().max(1) as f64
}

/// The mean over prompts of the AUC among that prompt's own samples (prompts with both a
/// right and a wrong sample); `None` if no prompt has both.
pub fn within_prompt_auc(samples: &[Labelled], probs: &[f64]) -> Option<f64> {
    let mut by_prompt: BTreeMap<usize, (Vec<f64>, Vec<bool>)> = BTreeMap::new();
    for (l, &p) in samples.iter().zip(probs) {
        let entry = by_prompt.entry(l.prompt).or_default();
        entry.0.push(p);
        entry.1.push(l.correct);
    }
    let aucs: Vec<f64> = by_prompt
        .values()
        .filter_map(|(p, l)| calibration::auc(p, l))
        .collect();
    (!aucs.is_empty()).then(|| aucs.iter().sum::<f64>() / aucs.len() as f64)
}

#[cfg(test)]
mod tests;
