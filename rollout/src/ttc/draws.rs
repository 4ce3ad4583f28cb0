//! Generating the completions the samplers choose from, decoded and verified: N samples per
//! problem, beam search's best, or power-sampling chains, in batches of about `batch_rows`
//! sequences. Each batch seeds its own streams from `(seed, batch index)`.

use super::beam::{beam_search, BeamParams};
use super::power::{chain_seed, power_sample, PowerParams};
use crate::group::sample_groups;
use policy::{score_sequences, Policy, SamplingParams, Tokenizer};
use std::sync::Arc;
use std::time::Instant;
use tasks::{Problem, Verifier};

/// One completion, decoded and scored.
pub(super) struct Drawn {
    pub text: String,
    pub tokens: Vec<u32>,
    /// Per-token log-probs: at the sampling temperature, or the model's own once
    /// [`EvalSet::model_logprobs`] has run (see [`Draws::at_t1`]).
    pub logprobs: Vec<f32>,
    pub reward: f32,
}

/// Completions of every problem, in problem order.
pub(super) struct Draws {
    pub per_problem: Vec<Vec<Drawn>>,
    /// Tokens generated to get them (rejected proposals and pruned beams included).
    pub tokens: usize,
    pub wall_s: f64,
    /// Whether `logprobs` are the model's own (temperature 1).
    pub at_t1: bool,
}

/// The model, its tokenizer and the problems it is evaluated on.
pub(super) struct EvalSet<'a> {
    pub policy: &'a Policy,
    pub tok: &'a Tokenizer,
    pub problems: &'a [Problem],
    pub verifier: &'a Arc<dyn Verifier>,
    pub batch_rows: usize,
    /// Called with the problems done so far each time a batch finishes.
    pub on_problems: &'a dyn Fn(usize),
}

impl EvalSet<'_> {
    /// `per` samples of every problem with `params` (temperature 0 is greedy).
    pub fn sample(&self, per: usize, params: &SamplingParams) -> policy::Result<Draws> {
        let started = Instant::now();
        let mut per_problem = Vec::with_capacity(self.problems.len());
        let mut tokens = 0;
        let chunks = self.problems.chunks((self.batch_rows / per).max(1));
        for (ci, chunk) in chunks.enumerate() {
            let chunk_params = SamplingParams {
                seed: chain_seed(params.seed, ci as u64),
                ..params.clone()
            };
            let groups = sample_groups(
                self.policy,
                self.tok,
                chunk,
                self.verifier,
                per,
                &chunk_params,
                0,
            )?;
            for g in groups {
                tokens += g.num_tokens();
                per_problem.push(
                    g.samples
                        .into_iter()
                        .map(|s| Drawn {
                            text: s.text,
                            tokens: s.tokens,
                            logprobs: s.logprobs,
                            reward: s.reward,
                        })
                        .collect(),
                );
            }
            (self.on_problems)(per_problem.len());
        }
        Ok(Draws {
            per_problem,
            tokens,
            wall_s: started.elapsed().as_secs_f64(),
            // Greedy, and T = 1 without truncation, record the model's own log-probs; other
            // samplers record those of the distribution they drew from.
            at_t1: params.records_model_logprobs(),
        })
    }

    /// Replaces the log-probs of `draws` by the model's own (temperature 1), teacher-forced.
    pub fn model_logprobs(&self, draws: &mut Draws) -> policy::Result<()> {
        if draws.at_t1 {
            return Ok(());
        }
        let mut rows: Vec<(Vec<u32>, &mut Drawn)> = Vec::new();
        for (p, samples) in self.problems.iter().zip(draws.per_problem.iter_mut()) {
            let prompt = self.tok.encode(&p.prompt)?;
            for s in samples.iter_mut().filter(|s| !s.tokens.is_empty()) {
                rows.push((prompt.iter().chain(&s.tokens).copied().collect(), s));
            }
        }
        for chunk in rows.chunks_mut(self.batch_rows.max(1)) {
            let seqs: Vec<Vec<u32>> = chunk.iter().map(|(seq, _)| seq.clone()).collect();
            let scored = score_sequences(self.policy, &seqs, self.tok.pad_id(), 1.0)?;
            for ((_, s), lps) in chunk.iter_mut().zip(scored) {
                s.logprobs = lps[lps.len() - s.tokens.len()..].to_vec();
            }
        }
        draws.at_t1 = true;
        Ok(())
    }

    /// Beam search's best completion of every problem.
    pub fn beam(&self, params: &BeamParams) -> policy::Result<Draws> {
        let started = Instant::now();
        let (mut per_problem, mut tokens) = (Vec::with_capacity(self.problems.len()), 0);
        for chunk in self
            .problems
            .chunks((self.batch_rows / params.width).max(1))
        {
            let out = beam_search(self.policy, &self.encode(chunk)?, params, self.tok.pad_id())?;
            tokens += out.tokens;
            for (p, b) in chunk.iter().zip(out.best) {
                per_problem.push(vec![self.scored(p, b.tokens, b.logprobs)?]);
            }
            (self.on_problems)(per_problem.len());
        }
        Ok(Draws {
            per_problem,
            tokens,
            wall_s: started.elapsed().as_secs_f64(),
            at_t1: true,
        })
    }

    /// `chains` power-sampling chains per problem; also returns the MCMC acceptance rate.
    pub fn power(&self, chains: usize, params: &PowerParams) -> policy::Result<(Draws, f64)> {
        let started = Instant::now();
        let (mut per_problem, mut tokens) = (Vec::with_capacity(self.problems.len()), 0);
        let (mut proposals, mut accepted) = (0, 0);
        for (ci, chunk) in self
            .problems
            .chunks((self.batch_rows / chains).max(1))
            .enumerate()
        {
            let prompts: Vec<Vec<u32>> = self
                .encode(chunk)?
                .into_iter()
                .flat_map(|p| std::iter::repeat_n(p, chains))
                .collect();
            let chunk_params = PowerParams {
                seed: chain_seed(params.seed, ci as u64),
                ..params.clone()
            };
            let out = power_sample(self.policy, &prompts, &chunk_params, self.tok.pad_id())?;
            let mut it = out.into_iter();
            for p in chunk {
                let mut samples = Vec::with_capacity(chains);
                for s in it.by_ref().take(chains) {
                    tokens += s.tokens_generated;
                    proposals += s.proposals;
                    accepted += s.accepted;
                    samples.push(self.scored(p, s.tokens, s.logprobs)?);
                }
                per_problem.push(samples);
            }
            (self.on_problems)(per_problem.len());
        }
        let draws = Draws {
            per_problem,
            tokens,
            wall_s: started.elapsed().as_secs_f64(),
            at_t1: true,
        };
        Ok((draws, accepted as f64 / proposals.max(1) as f64))
    }

    fn scored(&self, p: &Problem, tokens: Vec<u32>, logprobs: Vec<f32>) -> policy::Result<Drawn> {
        let text = self.tok.decode(&tokens)?;
        Ok(Drawn {
            reward: self.verifier.score(&text, &p.answer),
            text,
            tokens,
            logprobs,
        })
    }

    fn encode(&self, problems: &[Problem]) -> policy::Result<Vec<Vec<u32>>> {
        problems
            .iter()
            .map(|p| self.tok.encode(&p.prompt))
            .collect()
    }
}
