//! The draws only test-time compute needs, on the held-out set of `crate::eval`: beam
//! search's best, power-sampling chains (each batch seeding its chains from `(seed, batch
//! index)`), and the model's own log-probs of sampled completions for best-of-N. N samples
//! per problem (greedy and sampled included) come from `EvalSet::sample`, which training's
//! evaluation uses too.

use super::beam::{beam_search, BeamParams};
use super::power::{chain_seed, power_sample, PowerParams};
use crate::eval::{Drawn, Draws, EvalSet};
use policy::score_sequences;
use std::time::Instant;
use tasks::Problem;

impl EvalSet<'_> {
    /// Replaces the log-probs of `draws` by the model's own (temperature 1), teacher-forced.
    pub fn model_logprobs(&self, draws: &mut Draws) -> policy::Result<()> {
        if draws.at_t1 {
            return Ok(());
        }
        let mut rows: Vec<(Vec<u32>, &mut Drawn)> = Vec::new();
        for (p, samples) in self.problems.iter().zip(draws.per_problem.iter_mut()) {
            let prompt = self.prompt_tokens(p)?;
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
        problems.iter().map(|p| self.prompt_tokens(p)).collect()
    }

    /// A problem's prompt as the episodes show it (in the model's chat template, if any).
    pub(super) fn prompt_tokens(&self, p: &Problem) -> policy::Result<Vec<u32>> {
        let mut conversation = crate::Conversation::new(self.episodes.chat.clone());
        let text = conversation
            .open(&p.prompt)
            .map_err(|e| policy::PolicyError::Input(e.to_string()))?;
        self.tok.encode(&text)
    }
}
