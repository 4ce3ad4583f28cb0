//! The one sampling loop: decode a batch of prompts one token per step until every sequence
//! stops or reaches its budget, with the weights a [`StepHook`] hands over before each step.
//!
//! The hook is where an actor swaps to newer weights between steps (the sequences in flight
//! keep their KV cache: PipelineRL's in-flight update) and waits when its weights lag the
//! learner too far; every other caller decodes with one fixed policy ([`FixedWeights`]).
//! Each token records the version of the weights that produced its distribution, and the
//! log-prob [`sample_token`] gives it under that distribution.
//!
//! [`decode_dynamic`] is the loop itself, over rows that a [`RowDriver`] adds between steps
//! (multi-turn episodes) and whose next tokens it chooses; [`decode_rows`] is its case of a
//! fixed set of prompts: [`sample`] draws with [`SamplingParams`]; power sampling draws its
//! proposals through it too.

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

/// Drives a batch whose rows come and go: which rows join before each step, and each row's
/// next token. Multi-turn episodes use it directly (a row leaves when its turn ends and
/// joins again, with its whole context, once the environment has answered);
/// [`decode_rows`] is the case of one set of rows that all join at the start.
pub trait RowDriver {
    /// Rows to add before the next step, as (key, context). `idle` is true when no row is
    /// decoding; then an empty answer means "nothing yet" and the driver should wait a little
    /// before returning it. `None`: nothing will ever join again.
    fn arrivals(&mut self, idle: bool) -> Option<Vec<(usize, Vec<u32>)>>;
    /// Row `key`'s next token from its next-token `logits` (computed with the weights
    /// labelled `version`), or `None` when the row leaves the batch.
    fn pick(&mut self, key: usize, logits: &[f32], version: u64) -> Option<u32>;
}

/// Decodes rows one token per step, each step with the weights `hook` hands over (a join's
/// prefill included), until `driver` has no row decoding and none to come. Returns false when
/// the hook stopped decoding.
pub fn decode_dynamic(
    pad_id: u32,
    hook: &mut impl StepHook,
    driver: &mut impl RowDriver,
) -> Result<bool> {
    let mut decoder: Option<Decoder> = None;
    // Keys of the rows decoding, aligned with the decoder's rows, each row's next-token
    // logits and the version of the weights that computed them.
    let (mut rows, mut logits, mut versions) = (Vec::new(), Vec::new(), Vec::new());
    let mut more = true;
    loop {
        if more {
            match driver.arrivals(rows.is_empty()) {
                None => more = false,
                Some(new) if !new.is_empty() => {
                    let Some((policy, version)) = hook.weights() else {
                        return Ok(false);
                    };
                    let (keys, contexts): (Vec<usize>, Vec<Vec<u32>>) = new.into_iter().unzip();
                    let fresh = match decoder.as_mut() {
                        Some(d) => d.join(policy, &contexts, pad_id)?,
                        None => {
                            let (d, l) = Decoder::start(policy, &contexts, pad_id)?;
                            decoder = Some(d);
                            l
                        }
                    };
                    versions.extend(std::iter::repeat_n(version, keys.len()));
                    rows.extend(keys);
                    logits.extend(fresh);
                }
                Some(_) => {}
            }
        }
        let Some(d) = decoder.as_mut().filter(|_| !rows.is_empty()) else {
            if more {
                continue;
            }
            return Ok(true);
        };
        let (mut keep, mut feed) = (Vec::with_capacity(rows.len()), Vec::new());
        for (i, &key) in rows.iter().enumerate() {
            if let Some(token) = driver.pick(key, &logits[i], versions[i]) {
                keep.push(i);
                feed.push(token);
            }
        }
        d.select(&keep)?;
        rows = keep.iter().map(|&i| rows[i]).collect();
        if rows.is_empty() {
            logits.clear();
            versions.clear();
            continue;
        }
        let Some((policy, version)) = hook.weights() else {
            return Ok(false);
        };
        logits = d.step(policy, &feed)?;
        versions = vec![version; rows.len()];
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
    pick: impl FnMut(usize, &[f32], u64) -> Option<u32>,
) -> Result<bool> {
    check_prompts(prompts)?;
    struct AllAtStart<'p, F> {
        prompts: Option<&'p [Vec<u32>]>,
        pick: F,
    }
    impl<F: FnMut(usize, &[f32], u64) -> Option<u32>> RowDriver for AllAtStart<'_, F> {
        fn arrivals(&mut self, _idle: bool) -> Option<Vec<(usize, Vec<u32>)>> {
            let prompts = self.prompts.take().filter(|p| !p.is_empty())?;
            Some(prompts.iter().cloned().enumerate().collect())
        }
        fn pick(&mut self, key: usize, logits: &[f32], version: u64) -> Option<u32> {
            (self.pick)(key, logits, version)
        }
    }
    let driver = &mut AllAtStart {
        prompts: Some(prompts),
        pick,
    };
    decode_dynamic(pad_id, hook, driver)
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
        .map(|i| rand::rngs::StdRng::seed_from_u64(row_seed(params.seed, i as u64)))
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

/// Seed of sequence `i`'s stream: the sampling loop's rows, and the turns of episode `i`
/// (which therefore draws exactly what [`sample`] draws for a one-turn task).
pub fn row_seed(seed: u64, i: u64) -> u64 {
    stream_seed(seed, i, 0xD1B5_4A32_D192_ED03)
}
