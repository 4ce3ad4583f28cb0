//! Power sampling (Karan & Du 2025, "Reasoning with Sampling", Algorithm 1): draw whole
//! completions from `pi(x) ~ p(x)^alpha`, the base model's sequence distribution sharpened,
//! by Metropolis-Hastings over token ids.
//!
//! This is *not* sampling at temperature `1/alpha`. Token-level tempering gives
//! `q(x) = prod_t p(x_t | x_<t)^alpha / Z_t(x_<t)`, which differs from `p(x)^alpha` by the
//! product of the per-step normalisers `Z_t`: `p^alpha` also favours prefixes whose futures
//! are likely, which tempering cannot see.
//!
//! The algorithm, per chain (one per prompt, batched across prompts):
//! - The completion grows in blocks of B tokens, up to the length budget T. Each block is
//!   first drawn from the proposal `q` = the model at temperature `1/alpha`.
//! - After each block, N_MCMC Metropolis-Hastings steps: pick a position m uniformly among the
//!   completion's tokens, resample the suffix from m (up to the block's end) from `q`, and
//!   accept the new completion x' with probability
//!   `min(1, p(x')^alpha q(x) / (p(x)^alpha q(x')))`.
//!   The prefix before m is shared, so its terms cancel and only the suffixes' token log-probs
//!   enter: `alpha * (log p(x'_m..) - log p(x_m..)) + log q(x_m..) - log q(x'_m..)`, with
//!   `log p` at temperature 1 and `log q` at `1/alpha`, both from the same logits.
//! - When a stop token can end a completion early, completions differ in length, the
//!   position's probability `1/len` differs between the move and its reverse, and the ratio
//!   gains the Hastings factor `len(x) / len(x')` (1 for fixed-length sequences, where the
//!   rule is exactly the paper's). With it, the chain's stationary distribution is exactly
//!   `p^alpha` over completions that stop or reach the budget.
//!
//! The paper's defaults are alpha = 4, B = 192, N_MCMC = 10. Chain i draws every random number
//! (positions, tokens, acceptances) from its own stream seeded by `(seed, i)`, so a run is
//! reproducible whatever the batch.

use policy::sampling::{log_softmax, sample_token, stream_seed};
use policy::{decode_rows, FinishReason, FixedWeights, Policy, PolicyError, SamplingParams};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Power sampling settings.
#[derive(Debug, Clone, PartialEq)]
pub struct PowerParams {
    /// The exponent: the target is `p(x)^alpha`; the proposal samples at `1/alpha`.
    pub alpha: f32,
    /// Block size B: tokens added before each round of MCMC steps.
    pub block: usize,
    /// Metropolis-Hastings steps after each block (N_MCMC).
    pub mcmc_steps: usize,
    /// Length budget T of a completion.
    pub max_new_tokens: usize,
    /// Tokens that end a completion (kept as its last token).
    pub stop_tokens: Vec<u32>,
    /// Base seed; chain i uses the stream `(seed, i)`.
    pub seed: u64,
}

impl Default for PowerParams {
    fn default() -> Self {
        PowerParams {
            alpha: 4.0,
            block: 192,
            mcmc_steps: 10,
            max_new_tokens: 64,
            stop_tokens: Vec::new(),
            seed: 0,
        }
    }
}

/// The final state of one chain.
#[derive(Debug, Clone, PartialEq)]
pub struct PowerSample {
    /// Completion ids, the stop token included when there is one.
    pub tokens: Vec<u32>,
    /// Log-prob of each token under the model (temperature 1).
    pub logprobs: Vec<f32>,
    /// Stop token or length budget.
    pub finish: FinishReason,
    /// Metropolis-Hastings proposals made.
    pub proposals: usize,
    /// Proposals accepted.
    pub accepted: usize,
    /// Tokens sampled in all, rejected proposals included (the work done).
    pub tokens_generated: usize,
}

/// One chain's current completion with both log-probs of every token.
struct Chain {
    tokens: Vec<u32>,
    logp: Vec<f32>,
    logq: Vec<f32>,
    stopped: bool,
    rng: StdRng,
    proposals: usize,
    accepted: usize,
    generated: usize,
}

/// A continuation sampled from the proposal.
#[derive(Default)]
struct Draw {
    tokens: Vec<u32>,
    logp: Vec<f32>,
    logq: Vec<f32>,
    stopped: bool,
}

/// Power-samples one completion of each prompt (token ids); see the module documentation.
pub fn power_sample(
    policy: &Policy,
    prompts: &[Vec<u32>],
    params: &PowerParams,
    pad_id: u32,
) -> policy::Result<Vec<PowerSample>> {
    if !(params.alpha.is_finite() && params.alpha > 0.0) {
        return Err(PolicyError::Input(format!(
            "power sampling needs alpha > 0, got {}",
            params.alpha
        )));
    }
    if params.block == 0 {
        return Err(PolicyError::Input(
            "power sampling block size must be >= 1".into(),
        ));
    }
    let mut chains: Vec<Chain> = (0..prompts.len())
        .map(|i| Chain::new(chain_seed(params.seed, i as u64)))
        .collect();
    let run = Run {
        policy,
        prompts,
        params,
        pad_id,
    };
    let mut block_end = 0;
    while block_end < params.max_new_tokens {
        block_end = (block_end + params.block).min(params.max_new_tokens);
        run.grow(&mut chains, block_end)?;
        for _ in 0..params.mcmc_steps {
            run.mcmc_step(&mut chains, block_end)?;
        }
    }
    Ok(chains.into_iter().map(Chain::into_sample).collect())
}

impl Chain {
    /// An empty completion drawing from the stream `seed`.
    fn new(seed: u64) -> Self {
        Chain {
            tokens: Vec::new(),
            logp: Vec::new(),
            logq: Vec::new(),
            stopped: false,
            rng: StdRng::seed_from_u64(seed),
            proposals: 0,
            accepted: 0,
            generated: 0,
        }
    }

    /// Replaces the completion from position `m` on by `d`.
    fn splice(&mut self, m: usize, d: Draw) {
        self.tokens.truncate(m);
        self.logp.truncate(m);
        self.logq.truncate(m);
        self.tokens.extend(d.tokens);
        self.logp.extend(d.logp);
        self.logq.extend(d.logq);
        self.stopped = d.stopped;
    }

    /// The Metropolis-Hastings step for the proposal `d` resampled from position `m`:
    /// accepts it (and splices it in) with probability `min(1, ratio)`.
    fn consider(&mut self, m: usize, d: Draw, alpha: f32) {
        self.proposals += 1;
        self.generated += d.tokens.len();
        let sum = |v: &[f32]| v.iter().map(|&x| x as f64).sum::<f64>();
        let (len, new_len) = (self.tokens.len() as f64, (m + d.tokens.len()) as f64);
        let log_ratio = alpha as f64 * (sum(&d.logp) - sum(&self.logp[m..]))
            + (sum(&self.logq[m..]) - sum(&d.logq))
            + (len.ln() - new_len.ln());
        let u: f64 = self.rng.random();
        if u.ln() < log_ratio {
            self.accepted += 1;
            self.splice(m, d);
        }
    }

    fn into_sample(self) -> PowerSample {
        PowerSample {
            finish: if self.stopped {
                FinishReason::Stop
            } else {
                FinishReason::Length
            },
            tokens: self.tokens,
            logprobs: self.logp,
            proposals: self.proposals,
            accepted: self.accepted,
            tokens_generated: self.generated,
        }
    }
}

/// What every proposal of one [`power_sample`] call shares.
struct Run<'a> {
    policy: &'a Policy,
    prompts: &'a [Vec<u32>],
    params: &'a PowerParams,
    pad_id: u32,
}

impl Run<'_> {
    /// Grows every unfinished completion to `block_end` tokens from the proposal.
    fn grow(&self, chains: &mut [Chain], block_end: usize) -> policy::Result<()> {
        let growing: Vec<(usize, usize)> = (0..chains.len())
            .filter(|&i| !chains[i].stopped && chains[i].tokens.len() < block_end)
            .map(|i| (i, chains[i].tokens.len()))
            .collect();
        let draws = self.propose(chains, &growing, block_end)?;
        for (&(i, start), d) in growing.iter().zip(draws) {
            chains[i].generated += d.tokens.len();
            chains[i].splice(start, d);
        }
        Ok(())
    }

    /// One Metropolis-Hastings step of every chain: each picks a position uniformly, resamples
    /// from it to `block_end` and accepts or rejects.
    fn mcmc_step(&self, chains: &mut [Chain], block_end: usize) -> policy::Result<()> {
        let picks: Vec<(usize, usize)> = chains
            .iter_mut()
            .enumerate()
            .filter(|(_, c)| !c.tokens.is_empty())
            .map(|(i, c)| (i, c.rng.random_range(0..c.tokens.len())))
            .collect();
        let draws = self.propose(chains, &picks, block_end)?;
        for (&(i, m), d) in picks.iter().zip(draws) {
            chains[i].consider(m, d, self.params.alpha);
        }
        Ok(())
    }

    /// For each `(chain, start)` in `picks`, samples from the proposal a continuation of the
    /// chain's prompt and its first `start` tokens, up to `end` completion tokens in all.
    fn propose(
        &self,
        chains: &mut [Chain],
        picks: &[(usize, usize)],
        end: usize,
    ) -> policy::Result<Vec<Draw>> {
        let mut draws: Vec<Draw> = picks.iter().map(|_| Draw::default()).collect();
        let prefixes: Vec<Vec<u32>> = picks
            .iter()
            .map(|&(i, m)| {
                let kept = &chains[i].tokens[..m];
                self.prompts[i].iter().chain(kept).copied().collect()
            })
            .collect();
        let proposal = SamplingParams {
            temperature: 1.0 / self.params.alpha,
            ..Default::default()
        };
        let fixed = &mut FixedWeights {
            policy: self.policy,
            version: 0,
        };
        decode_rows(&prefixes, self.pad_id, fixed, |j, logits, _| {
            let (i, start) = picks[j];
            let (token, logq) = sample_token(logits, &proposal, &mut chains[i].rng);
            let d = &mut draws[j];
            d.tokens.push(token);
            d.logq.push(logq);
            d.logp.push(log_softmax(logits, 1.0)[token as usize]);
            if self.params.stop_tokens.contains(&token) {
                d.stopped = true;
                None
            } else {
                (start + d.tokens.len() < end).then_some(token)
            }
        })?;
        Ok(draws)
    }
}

/// Seed of chain `i`: neighbouring chains get unrelated streams.
pub(crate) fn chain_seed(seed: u64, i: u64) -> u64 {
    stream_seed(seed, i, 0x2545_F491_4F6C_DD1D)
}
