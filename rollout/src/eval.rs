//! Greedy pass@1 on held-out problems.

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

/// Greedy pass@1 over the first `n` problems of the held-out split, in batches.
pub fn greedy_eval(
    policy: &Policy,
    tok: &Tokenizer,
    source: &dyn ProblemSource,
    n: usize,
    max_new_tokens: usize,
    stop_tokens: &[u32],
) -> policy::Result<EvalReport> {
    let verifier = source.verifier();
    let problems: Vec<_> = (0..n as u64)
        .map(|i| source.problem(Split::Eval, i))
        .collect();
    let params = SamplingParams {
        temperature: 0.0,
        max_new_tokens,
        stop_tokens: stop_tokens.to_vec(),
        ..Default::default()
    };
    let (mut correct, mut tokens, mut examples) = (0, 0, Vec::new());
    for chunk in problems.chunks(256) {
        let prompts = chunk
            .iter()
            .map(|p| tok.encode(&p.prompt))
            .collect::<Result<Vec<_>, _>>()?;
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
