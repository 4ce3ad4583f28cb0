//! Pass@1 on held-out problems: greedy, and sampled at T = 1 from a fixed seed (what the
//! policy actually does when it samples; the same problems and the same random streams every
//! time, so two evaluations differ only by the weights).
//!
//! `EvalSet::sample` is the one place that draws completions of held-out problems, decodes
//! and verifies them: training's evaluation here and `oxrl eval`'s samplers (`ttc/`) both go
//! through it, so `oxrl eval --sampler greedy` and training's greedy pass@1 are one
//! computation.

use crate::episode::{run_episodes, Episodes};
use crate::group::GroupBatch;
use policy::{Policy, SamplingParams, Tokenizer};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Instant;
use tasks::{Problem, ProblemSource, Split, Verifier};

/// Outcome of an evaluation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EvalReport {
    pub task: String,
    pub n: usize,
    pub correct: usize,
    pub pass_rate: f64,
    pub tokens: usize,
    /// A few (prompt, completion, reward) examples.
    pub examples: Vec<(String, String, f32)>,
}

/// Seed of the sampled evaluation's streams: fixed, so every evaluation draws alike.
pub const SAMPLED_EVAL_SEED: u64 = 0x5EED_E7A1;

/// Prompts decoded together by training's evaluation.
const EVAL_BATCH: usize = 256;

/// Greedy pass@1 over the first `n` problems of the held-out split, in batches, each an
/// episode against `episodes`' environments.
pub fn greedy_eval(
    policy: &Policy,
    tok: &Tokenizer,
    source: &dyn ProblemSource,
    episodes: &Episodes,
    n: usize,
    max_new_tokens: usize,
    stop_tokens: &[u32],
) -> policy::Result<EvalReport> {
    let params = SamplingParams {
        temperature: 0.0,
        max_new_tokens,
        stop_tokens: stop_tokens.to_vec(),
        ..Default::default()
    };
    held_out_eval(policy, tok, source, episodes, n, &params)
}

/// Sampled pass@1 (T = 1, no truncation) over the same problems as [`greedy_eval`]: the mean
/// over `draws` completions per problem, draw r from the streams of
/// `SAMPLED_EVAL_SEED + r`, so every evaluation draws alike and more draws only narrow the
/// estimate (its standard error shrinks as 1 / sqrt(n * draws) while problems still differ).
#[allow(clippy::too_many_arguments)] // greedy_eval's arguments and the draws
pub fn sampled_eval(
    policy: &Policy,
    tok: &Tokenizer,
    source: &dyn ProblemSource,
    episodes: &Episodes,
    n: usize,
    draws: usize,
    max_new_tokens: usize,
    stop_tokens: &[u32],
) -> policy::Result<EvalReport> {
    let mut total: Option<EvalReport> = None;
    for r in 0..draws.max(1) as u64 {
        let params = SamplingParams {
            temperature: 1.0,
            max_new_tokens,
            stop_tokens: stop_tokens.to_vec(),
            seed: SAMPLED_EVAL_SEED.wrapping_add(r.wrapping_mul(0x9E37_79B9)),
            ..Default::default()
        };
        let one = held_out_eval(policy, tok, source, episodes, n, &params)?;
        total = Some(match total {
            None => one,
            Some(mut t) => {
                t.correct += one.correct;
                t.n += one.n;
                t.tokens += one.tokens;
                t
            }
        });
    }
    let mut report = total.expect("at least one draw");
    report.pass_rate = report.correct as f64 / report.n.max(1) as f64;
    Ok(report)
}

/// Pass@1 of one completion per problem drawn with `params` over the first `n` held-out
/// problems. Problem i always draws from the same stream of `params.seed`, whatever else is
/// evaluated.
pub fn held_out_eval(
    policy: &Policy,
    tok: &Tokenizer,
    source: &dyn ProblemSource,
    episodes: &Episodes,
    n: usize,
    params: &SamplingParams,
) -> policy::Result<EvalReport> {
    let problems = held_out_problems(source, n);
    let verifier = source.verifier();
    let set = EvalSet {
        policy,
        tok,
        problems: &problems,
        verifier: &verifier,
        episodes,
        batch_rows: EVAL_BATCH,
        on_problems: &|_| {},
    };
    let draws = set.sample(1, params)?;
    let mut correct = 0;
    let mut examples = Vec::new();
    for (p, drawn) in problems.iter().zip(draws.per_problem) {
        for d in drawn {
            correct += (d.reward > 0.5) as usize;
            if examples.len() < 5 {
                examples.push((p.prompt.clone(), d.text, d.reward));
            }
        }
    }
    Ok(EvalReport {
        task: source.name().to_string(),
        n: problems.len(),
        correct,
        pass_rate: correct as f64 / problems.len().max(1) as f64,
        tokens: draws.tokens,
        examples,
    })
}

/// The first `n` problems of the held-out split, never more than it has: repeating them
/// would only fake precision.
pub fn held_out_problems(source: &dyn ProblemSource, n: usize) -> Vec<Problem> {
    let requested = n;
    let n = tasks::capped_eval_n(source, n);
    if n < requested {
        tracing::warn!(
            requested,
            held_out = n,
            task = source.name(),
            "more problems asked for than the held-out set has: evaluating each one once"
        );
    }
    (0..n as u64)
        .map(|i| source.problem(Split::Eval, i))
        .collect()
}

/// One completion, decoded and scored.
pub(crate) struct Drawn {
    pub text: String,
    pub tokens: Vec<u32>,
    /// Per-token log-probs: at the sampling temperature, or the model's own once
    /// `EvalSet::model_logprobs` has run (see [`Draws::at_t1`]).
    pub logprobs: Vec<f32>,
    pub reward: f32,
}

/// Completions of every problem, in problem order.
pub(crate) struct Draws {
    pub per_problem: Vec<Vec<Drawn>>,
    /// Tokens generated to get them (rejected proposals and pruned beams included).
    pub tokens: usize,
    pub wall_s: f64,
    /// Whether `logprobs` are the model's own (temperature 1).
    pub at_t1: bool,
}

/// The model, its tokenizer and the problems it is evaluated on.
pub(crate) struct EvalSet<'a> {
    pub policy: &'a Policy,
    pub tok: &'a Tokenizer,
    pub problems: &'a [Problem],
    pub verifier: &'a Arc<dyn Verifier>,
    /// What each draw is an episode against (one turn scored by `verifier` for `oxrl eval`).
    pub episodes: &'a Episodes,
    /// Sequences decoded together (problems x completions per problem).
    pub batch_rows: usize,
    /// Called with the problems done so far each time a batch finishes.
    pub on_problems: &'a dyn Fn(usize),
}

impl EvalSet<'_> {
    /// `per` completions of every problem drawn with `params` (temperature 0 is greedy), in
    /// batches of about `batch_rows` sequences; batch c draws from the streams of
    /// `params.seed + c * (2^32 + 1)`.
    pub fn sample(&self, per: usize, params: &SamplingParams) -> policy::Result<Draws> {
        let started = Instant::now();
        let mut per_problem = Vec::with_capacity(self.problems.len());
        let mut tokens = 0;
        let chunks = self.problems.chunks((self.batch_rows / per.max(1)).max(1));
        for (c, chunk) in chunks.enumerate() {
            let chunk_params = SamplingParams {
                seed: params.seed.wrapping_add(c as u64 * 0x1_0000_0001),
                ..params.clone()
            };
            let ids: Vec<String> = chunk.iter().map(|p| p.id.clone()).collect();
            let batch = GroupBatch {
                problems: chunk,
                ids: &ids,
                group_size: per,
            };
            let hook = &mut policy::FixedWeights {
                policy: self.policy,
                version: 0,
            };
            let outcome = run_episodes(hook, self.tok, self.episodes, batch, &chunk_params)?
                .expect("fixed weights never stop decoding");
            if let Some(d) = outcome.dropped.first() {
                // An evaluation has no group to drop: a failing environment is an error.
                return Err(policy::PolicyError::Input(format!(
                    "evaluating {}: {} of {} groups lost to their environment, first {}: {}",
                    d.problem_id,
                    outcome.dropped.len(),
                    chunk.len(),
                    d.error.reason(),
                    d.error
                )));
            }
            for g in outcome.groups {
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
}
