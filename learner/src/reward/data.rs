//! The reward model's data: N completions per prompt sampled from the policy and labelled by
//! the task's verifier (1 right, 0 wrong), laid out as the episodes show them (the model's chat
//! template, if it has one), so that training and `oxrl eval --rm` score the same tokens.

use crate::error::Result;
use policy::{FixedWeights, Policy, SamplingParams, Tokenizer};
use rollout::{ChatFormat, Episodes, GroupBatch};
use std::sync::Arc;
use tasks::{Problem, Verifier};

/// One sampled completion with its verifier label.
#[derive(Debug, Clone, PartialEq)]
pub struct Labelled {
    /// Index of its prompt among the prompts sampled.
    pub prompt: usize,
    /// Prompt and completion tokens, as the reward model reads them.
    pub sequence: Vec<u32>,
    /// Tokens of `sequence` that are the prompt (the completion follows).
    pub prompt_len: usize,
    /// Whether the verifier accepted the completion.
    pub correct: bool,
}

/// How the samples are drawn.
#[derive(Debug, Clone)]
pub struct Draw {
    /// Completions per prompt (N).
    pub per_prompt: usize,
    /// Temperature, length budget, stop tokens and seed.
    pub params: SamplingParams,
    /// Sequences decoded together.
    pub rows: usize,
}

/// `draw.per_prompt` completions of each of `problems` from `policy`, labelled by `verifier`;
/// `on_prompts(done)` sees progress.
pub fn label_samples(
    policy: &Policy,
    tok: &Tokenizer,
    problems: &[Problem],
    verifier: Arc<dyn Verifier>,
    draw: &Draw,
    mut on_prompts: impl FnMut(usize),
) -> Result<Vec<Labelled>> {
    let (n, params, rows) = (draw.per_prompt, &draw.params, draw.rows);
    let episodes = Episodes {
        chat: ChatFormat::resolve(rollout::episode::chat::AUTO, None, tok)?,
        ..Episodes::single(verifier)
    };
    let per_batch = (rows / n.max(1)).max(1);
    let mut out = Vec::with_capacity(problems.len() * n);
    for (b, chunk) in problems.chunks(per_batch).enumerate() {
        let ids: Vec<String> = chunk.iter().map(|p| format!("{}/rm", p.id)).collect();
        let batch = GroupBatch {
            problems: chunk,
            ids: &ids,
            group_size: n,
        };
        let chunk_params = SamplingParams {
            seed: policy::row_seed(params.seed, b as u64),
            ..params.clone()
        };
        let hook = &mut FixedWeights { policy, version: 0 };
        let outcome = rollout::run_episodes(hook, tok, &episodes, batch, &chunk_params)?
            .expect("fixed weights never stop decoding");
        for d in &outcome.dropped {
            tracing::warn!(group = %d.group_id, error = %d.error, "dropped a group: its environment failed");
        }
        let first = b * per_batch;
        for group in outcome.groups {
            let prompt = first
                + chunk
                    .iter()
                    .position(|p| p.id == group.problem_id)
                    .expect("a group answers a problem of its batch");
            for s in group.samples {
                let sequence = group
                    .prompt_tokens
                    .iter()
                    .chain(&s.tokens)
                    .copied()
                    .collect();
                out.push(Labelled {
                    prompt,
                    sequence,
                    prompt_len: group.prompt_tokens.len(),
                    correct: s.reward > 0.5,
                });
            }
        }
        on_prompts((first + chunk.len()).min(problems.len()));
    }
    Ok(out)
}
