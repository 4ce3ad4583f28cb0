//! Pass@1 on held-out problems: greedy, and sampled at T = 1 from a fixed seed (what the
//! policy actually does when it samples; the same problems and the same random streams every
//! time, so two evaluations differ only by the weights).

use policy::{generate, Policy, SamplingParams, Tokenizer};
use serde::{Deserialize, Serialize};
use tasks::{ProblemSource, Split};

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

/// Greedy pass@1 over the first `n` problems of the held-out split, in batches.
pub fn greedy_eval(
    policy: &Policy,
    tok: &Tokenizer,
    source: &dyn ProblemSource,
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
    held_out_eval(policy, tok, source, n, &params)
}

/// Sampled pass@1 (T = 1, no truncation) over the same problems as [`greedy_eval`]: the mean
/// over `draws` completions per problem, draw r from the streams of
/// `SAMPLED_EVAL_SEED + r`, so every evaluation draws alike and more draws only narrow the
/// estimate (its standard error shrinks as 1 / sqrt(n * draws) while problems still differ).
pub fn sampled_eval(
    policy: &Policy,
    tok: &Tokenizer,
    source: &dyn ProblemSource,
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
        let one = held_out_eval(policy, tok, source, n, &params)?;
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
/// problems. Problem i always draws from stream i of `params.seed`, whatever the batching.
pub fn held_out_eval(
    policy: &Policy,
    tok: &Tokenizer,
    source: &dyn ProblemSource,
    n: usize,
    params: &SamplingParams,
) -> policy::Result<EvalReport> {
    let verifier = source.verifier();
    // Never more problems than the held-out set has: repeating them would only fake precision.
    let requested = n;
    let n = tasks::capped_eval_n(source, n);
    if n < requested {
        tracing::warn!(
            requested,
            held_out = n,
            task = source.name(),
            "eval_n is larger than the held-out set: evaluating every held-out problem once"
        );
    }
    let problems: Vec<_> = (0..n as u64)
        .map(|i| source.problem(Split::Eval, i))
        .collect();
    let (mut correct, mut tokens, mut examples) = (0, 0, Vec::new());
    for (c, chunk) in problems.chunks(256).enumerate() {
        let prompts = chunk
            .iter()
            .map(|p| tok.encode(&p.prompt))
            .collect::<Result<Vec<_>, _>>()?;
        let mut params = params.clone();
        params.seed = params.seed.wrapping_add(c as u64 * 0x1_0000_0001);
        let out = generate(policy, prompts, &params, tok.pad_id())?;
        for (p, c) in chunk.iter().zip(out) {
            let text = tok.decode(&c.tokens)?;
            let r = verifier.score(&text, &p.answer);
            correct += (r > 0.5) as usize;
            tokens += c.tokens.len();
            if examples.len() < 5 {
                examples.push((p.prompt.clone(), text, r));
            }
        }
    }
    Ok(EvalReport {
        task: source.name().to_string(),
        n,
        correct,
        pass_rate: correct as f64 / n.max(1) as f64,
        tokens,
        examples,
    })
}
