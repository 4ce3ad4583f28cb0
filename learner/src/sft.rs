//! Supervised fine-tuning on task solutions: the warm start of the embedded default.
//!
//! Cross-entropy on the solution tokens (and the end-of-sequence token), the prompt masked
//! out; AdamW with warm-up and cosine decay.

use crate::batch::TokenBatch;
use crate::error::{LearnerError, Result};
use crate::optim::{learning_rate, AdamW, AdamWConfig};
use crate::params::TrainableModel;
use serde::{Deserialize, Serialize};
use tasks::{ProblemSource, Split};

/// SFT hyper-parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SftConfig {
    /// Task spec (`addition`, `addition:3`, `FILE.jsonl`).
    pub task: String,
    pub steps: u64,
    pub batch_size: usize,
    pub lr: f64,
    pub warmup: u64,
    /// Seed of the training problems (the model init has its own seed).
    pub seed: u64,
    pub optimizer: AdamWConfig,
}

impl Default for SftConfig {
    fn default() -> Self {
        SftConfig {
            task: "addition:2".into(),
            steps: 800,
            batch_size: 64,
            lr: 3e-3,
            warmup: 40,
            seed: 0,
            optimizer: AdamWConfig {
                weight_decay: 0.01,
                eps: 1e-8,
                ..Default::default()
            },
        }
    }
}

/// Progress of one SFT step.
#[derive(Debug, Clone, Copy)]
pub struct SftStep {
    pub step: u64,
    pub loss: f64,
    pub lr: f64,
    pub tokens: usize,
}

/// Trains `model` on `source`'s training solutions; `on_step` sees every step.
pub fn train_sft(
    model: &TrainableModel,
    source: &dyn ProblemSource,
    cfg: &SftConfig,
    eos: u32,
    mut on_step: impl FnMut(SftStep),
) -> Result<()> {
    let tok = &model.tokenizer;
    let mut opt = AdamW::new(cfg.optimizer.clone());
    let device = model.policy().device().clone();
    for step in 0..cfg.steps {
        let mut pairs = Vec::with_capacity(cfg.batch_size);
        for i in 0..cfg.batch_size as u64 {
            let p = source.problem(
                Split::Train,
                cfg.seed.wrapping_mul(1_000_003) + step * cfg.batch_size as u64 + i,
            );
            let prompt = tok.encode(&p.prompt)?;
            let mut completion = tok.encode(&p.solution)?;
            completion.push(eos);
            pairs.push((prompt, completion));
        }
        let refs: Vec<(&[u32], &[u32])> = pairs
            .iter()
            .map(|(p, c)| (p.as_slice(), c.as_slice()))
            .collect();
        let batch = TokenBatch::new(&refs, tok.pad_id(), &device)?;
        let mask = batch.completion_mask()?;
        let logp = policy::next_token_logprobs(model.policy(), &batch.ids, &batch.pads, 1.0)?;
        let n = batch.completion_tokens() as f64;
        let loss = ((logp * &mask)?.sum_all()?.neg()? / n)?;
        let loss_value = loss.to_scalar::<f32>()? as f64;
        if !loss_value.is_finite() {
            return Err(LearnerError::NonFinite {
                what: "SFT loss",
                step,
            });
        }
        let mut grads = crate::optim::Grads::new();
        crate::optim::accumulate(&mut grads, model.vars(), &loss.backward()?)?;
        let lr = learning_rate(cfg.lr, step, cfg.warmup, cfg.steps, 0.1);
        opt.step(model.vars(), &grads, lr)?;
        on_step(SftStep {
            step,
            loss: loss_value,
            lr,
            tokens: batch.completion_tokens(),
        });
    }
    Ok(())
}
