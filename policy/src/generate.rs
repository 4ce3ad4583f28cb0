//! The one sampling loop: decode a batch of prompts one token per step until every sequence
//! stops or reaches its budget, with the weights a [`StepHook`] hands over before each step.
//!
//! The hook is where an actor swaps to newer weights between steps (the sequences in flight
//! keep their KV cache: PipelineRL's in-flight update) and waits when its weights lag the
//! learner too far; every other caller decodes with one fixed policy ([`FixedWeights`]).
//! Each token records the version of the weights that produced its distribution, and the
//! log-prob [`sample_token`] gives it under that distribution.
//!
//! [`decode_rows`] is the loop itself, with the choice of each row's next token left to the
//! caller: [`sample`] draws with [`SamplingParams`]; power sampling draws its proposals
//! through it too.

use crate::decoder::{check_prompts, Decoder};
use crate::error::Result;
use crate::model::Policy;
use crate::sampling::{sample_token, stream_seed, SamplingParams};
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

/// Why a sequence ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FinishReason {
    /// It produced a stop token.
    Stop,
    /// It reached the length budget (truncated).
    Length,
}

/// One sampled continuation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Completion {
    /// Sampled ids, the stop token included when there was one.
    pub tokens: Vec<u32>,
    /// Log-prob of each token under the distribution it was drawn from: tempered, truncated
    /// and renormalised (the model's own, T = 1, for greedy).
    pub logprobs: Vec<f32>,
    /// Version of the weights that produced each token's distribution.
    pub versions: Vec<u64>,
    /// Stop or length.
    pub finish: FinishReason,
}

/// Called before every decode step (the prompts' forward pass included): hands over the
/// weights to run the step with and their version, or `None` to stop decoding.
pub trait StepHook {
    /// The weights for the next step, labelled with their version; `None` stops.
    fn weights(&mut self) -> Option<(&Policy, u64)>;
}

/// The no-op hook: one policy for every step.
pub struct FixedWeights<'a> {
    pub policy: &'a Policy,
    /// The version every token records.
    pub version: u64,
}

impl StepHook for FixedWeights<'_> {
    fn weights(&mut self) -> Option<(&Policy, u64)> {
        Some((self.policy, self.version))
    }
}

/// Decodes every prompt one token per step until each row has ended, running each step with
/// the weights `hook` hands over. `pick(row, logits, version)` gets row `row`'s next-token
/// logits (from the weights labelled `version`) and returns the token to feed it next, or
/// `None` when the row ends. Returns false when the hook stopped decoding.
pub fn decode_rows(
    prompts: &[Vec<u32>],
    pad_id: u32,
    hook: &mut impl StepHook,
    mut pick: impl FnMut(usize, &[f32], u64) -> Option<u32>,
) -> Result<bool> {
    if prompts.is_empty() {
        return Ok(true);
    }
    let Some((policy, mut version)) = hook.weights() else {
        return Ok(false);
    };
    let (mut decoder, mut logits) = Decoder::start(policy, prompts, pad_id)?;
    // Rows still decoding, as indices into `prompts`, aligned with the decoder's rows.
    let mut rows: Vec<usize> = (0..prompts.len()).collect();
    loop {
        let (mut keep, mut feed) = (Vec::with_capacity(rows.len()), Vec::new());
        for (i, &row) in rows.iter().enumerate() {
            if let Some(token) = pick(row, &logits[i], version) {
                keep.push(i);
                feed.push(token);
            }
        }
        if keep.is_empty() {
            return Ok(true);
        }
        decoder.select(&keep)?;
        rows = keep.iter().map(|&i| rows[i]).collect();
        let Some((policy, next)) = hook.weights() else {
            return Ok(false);
        };
        version = next;
        logits = decoder.step(policy, &feed)?;
    }
}

/// Samples a continuation of every prompt with `params` (sequence i from its own stream
/// `(params.seed, i)`), with the weights `hook` hands over step by step; `None` when the
/// hook stopped decoding.
pub fn sample(
    prompts: &[Vec<u32>],
    params: &SamplingParams,
    pad_id: u32,
    hook: &mut impl StepHook,
) -> Result<Option<Vec<Completion>>> {
    check_prompts(prompts)?;
    let mut out: Vec<Completion> = prompts
        .iter()
        .map(|_| Completion {
            tokens: Vec::new(),
            logprobs: Vec::new(),
            versions: Vec::new(),
            finish: FinishReason::Length,
        })
        .collect();
    if params.max_new_tokens == 0 {
        return Ok(Some(out));
    }
    let mut rngs: Vec<rand::rngs::StdRng> = (0..prompts.len())
        .map(|i| rand::rngs::StdRng::seed_from_u64(mix(params.seed, i as u64)))
        .collect();
    let finished = decode_rows(prompts, pad_id, hook, |row, logits, version| {
        let (token, logprob) = sample_token(logits, params, &mut rngs[row]);
        let c = &mut out[row];
        c.tokens.push(token);
        c.logprobs.push(logprob);
        c.versions.push(version);
        if params.stop_tokens.contains(&token) {
            c.finish = FinishReason::Stop;
            None
        } else {
            (c.tokens.len() < params.max_new_tokens).then_some(token)
        }
    })?;
    Ok(finished.then_some(out))
}

/// Samples continuations of every prompt with one fixed policy (tokens record version 0).
pub fn generate(
    policy: &Policy,
    prompts: Vec<Vec<u32>>,
    params: &SamplingParams,
    pad_id: u32,
) -> Result<Vec<Completion>> {
    let fixed = &mut FixedWeights { policy, version: 0 };
    Ok(sample(&prompts, params, pad_id, fixed)?.expect("fixed weights never stop decoding"))
}

/// Seed of sequence `i`'s stream.
fn mix(seed: u64, i: u64) -> u64 {
    stream_seed(seed, i, 0xD1B5_4A32_D192_ED03)
}
