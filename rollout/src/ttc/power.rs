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

use super::stepper::Stepper;
use policy::sampling::{log_softmax, sample_token};
use policy::{FinishReason, Policy, PolicyError, SamplingParams};
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
        .map(|i| Chain {
            tokens: Vec::new(),
            logp: Vec::new(),
            logq: Vec::new(),
            stopped: false,
            rng: StdRng::seed_from_u64(chain_seed(params.seed, i as u64)),
            proposals: 0,
            accepted: 0,
            generated: 0,
        })
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
        // Grow every unfinished completion to the end of this block.
        let growing: Vec<(usize, usize)> = (0..chains.len())
            .filter(|&i| !chains[i].stopped && chains[i].tokens.len() < block_end)
            .map(|i| (i, chains[i].tokens.len()))
            .collect();
        let draws = run.propose(&mut chains, &growing, block_end)?;
        for (&(i, _), d) in growing.iter().zip(draws) {
            let c = &mut chains[i];
            c.generated += d.tokens.len();
            c.tokens.extend(d.tokens);
            c.logp.extend(d.logp);
            c.logq.extend(d.logq);
            c.stopped = d.stopped;
        }
        for _ in 0..params.mcmc_steps {
            // Each chain picks the position its proposal resamples from.
            let picks: Vec<(usize, usize)> = chains
                .iter_mut()
                .enumerate()
                .filter(|(_, c)| !c.tokens.is_empty())
                .map(|(i, c)| (i, c.rng.random_range(0..c.tokens.len())))
                .collect();
            let draws = run.propose(&mut chains, &picks, block_end)?;
            for (&(i, m), d) in picks.iter().zip(draws) {
                let c = &mut chains[i];
                c.proposals += 1;
                c.generated += d.tokens.len();
                let sum = |v: &[f32]| v.iter().map(|&x| x as f64).sum::<f64>();
                let (len, new_len) = (c.tokens.len() as f64, (m + d.tokens.len()) as f64);
                let log_ratio = params.alpha as f64 * (sum(&d.logp) - sum(&c.logp[m..]))
                    + (sum(&c.logq[m..]) - sum(&d.logq))
                    + (len.ln() - new_len.ln());
                let u: f64 = c.rng.random();
                if u.ln() < log_ratio {
                    c.accepted += 1;
                    c.tokens.truncate(m);
                    c.logp.truncate(m);
                    c.logq.truncate(m);
                    c.tokens.extend(d.tokens);
                    c.logp.extend(d.logp);
                    c.logq.extend(d.logq);
                    c.stopped = d.stopped;
                }
            }
        }
    }
    Ok(chains
        .into_iter()
        .map(|c| PowerSample {
            finish: if c.stopped {
                FinishReason::Stop
            } else {
                FinishReason::Length
            },
            tokens: c.tokens,
            logprobs: c.logp,
            proposals: c.proposals,
            accepted: c.accepted,
            tokens_generated: c.generated,
        })
        .collect())
}

/// What every proposal of one [`power_sample`] call shares.
struct Run<'a> {
    policy: &'a Policy,
    prompts: &'a [Vec<u32>],
    params: &'a PowerParams,
    pad_id: u32,
}

impl Run<'_> {
    /// For each `(chain, start)` in `picks`, samples from the proposal a continuation of the
    /// chain's prompt and its first `start` tokens, up to `end` completion tokens in all.
    fn propose(
        &self,
        chains: &mut [Chain],
        picks: &[(usize, usize)],
        end: usize,
    ) -> policy::Result<Vec<Draw>> {
        let mut draws: Vec<Draw> = picks
            .iter()
            .map(|_| Draw {
                tokens: Vec::new(),
                logp: Vec::new(),
                logq: Vec::new(),
                stopped: false,
            })
            .collect();
        if picks.is_empty() {
            return Ok(draws);
        }
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
        let (mut stepper, mut logits) = Stepper::start(self.policy, &prefixes, self.pad_id)?;
        // Rows still sampling, as indices into `draws`.
        let mut rows: Vec<usize> = (0..picks.len()).collect();
        loop {
            let mut keep = Vec::with_capacity(rows.len());
            for (r, &j) in rows.iter().enumerate() {
                let (i, start) = picks[j];
                let (token, logq) = sample_token(&logits[r], &proposal, &mut chains[i].rng);
                let d = &mut draws[j];
                d.tokens.push(token);
                d.logq.push(logq);
                d.logp.push(log_softmax(&logits[r], 1.0)[token as usize]);
                if self.params.stop_tokens.contains(&token) {
                    d.stopped = true;
                } else if start + d.tokens.len() < end {
                    keep.push(r);
                }
            }
            if keep.is_empty() {
                return Ok(draws);
            }
            stepper.select(&keep)?;
            rows = keep.iter().map(|&r| rows[r]).collect();
            let feed: Vec<u32> = rows
                .iter()
                .map(|&j| *draws[j].tokens.last().unwrap())
                .collect();
            logits = stepper.step(self.policy, &feed)?;
        }
    }
}

/// Seed of chain `i`: splitmix64 of the pair, so neighbouring chains get unrelated streams.
pub(crate) fn chain_seed(seed: u64, i: u64) -> u64 {
    let mut z = seed
        ^ i.wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .wrapping_add(0x2545_F491_4F6C_DD1D);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
