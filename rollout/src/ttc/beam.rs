//! Beam search over token ids, batched across prompts, on the model's own distribution
//! (temperature 1).
//!
//! Each prompt keeps up to W live hypotheses of equal length. At every step each live
//! hypothesis is extended by its best tokens, the extensions of a prompt are ranked by total
//! log-prob, those ending in a stop token or at the length budget become finished hypotheses
//! (the W best are kept), and the W best of the rest stay live. With `length_normalised` a
//! finished hypothesis is ranked by its mean log-prob per token instead of its total; live
//! hypotheses are always of equal length, so the two rankings agree on them.
//!
//! A prompt stops early only when no live hypothesis can beat its best finished one: log-probs
//! are <= 0, so a total can only fall, and a mean can rise at most to `total / budget`. With
//! W at least the number of possible sequences nothing is ever pruned, and the result is the
//! exact most likely sequence (tested by brute force on a tiny model).

use super::stepper::Stepper;
use policy::sampling::log_softmax;
use policy::{FinishReason, Policy};
use std::cmp::Ordering;

/// Beam search settings.
#[derive(Debug, Clone, PartialEq)]
pub struct BeamParams {
    /// Beam width W (>= 1).
    pub width: usize,
    /// Rank finished hypotheses by mean log-prob per token instead of total log-prob.
    pub length_normalised: bool,
    /// Length budget; a hypothesis that reaches it is finished.
    pub max_new_tokens: usize,
    /// Tokens that end a hypothesis (kept as its last token).
    pub stop_tokens: Vec<u32>,
}

/// A finished hypothesis.
#[derive(Debug, Clone, PartialEq)]
pub struct Beam {
    /// Completion ids, the stop token included when there is one.
    pub tokens: Vec<u32>,
    /// Log-prob of each token under the model (temperature 1).
    pub logprobs: Vec<f32>,
    /// Its rank score: total log-prob, or mean log-prob when length-normalised.
    pub score: f64,
    /// Stop token or length budget.
    pub finish: FinishReason,
}

/// What [`beam_search`] returns.
#[derive(Debug, Clone)]
pub struct BeamOutput {
    /// The best hypothesis of each prompt, in prompt order.
    pub best: Vec<Beam>,
    /// Tokens added to hypotheses over the whole search (the work done).
    pub tokens: usize,
}

#[derive(Debug, Clone)]
struct Hyp {
    tokens: Vec<u32>,
    logprobs: Vec<f32>,
    total: f64,
}

struct Candidate {
    total: f64,
    row: usize,
    token: u32,
    logprob: f32,
}

/// Beam search of every prompt (token ids); see the module documentation.
pub fn beam_search(
    policy: &Policy,
    prompts: &[Vec<u32>],
    params: &BeamParams,
    pad_id: u32,
) -> policy::Result<BeamOutput> {
    if params.width == 0 {
        return Err(policy::PolicyError::Input("beam width must be >= 1".into()));
    }
    let empty = Beam {
        tokens: Vec::new(),
        logprobs: Vec::new(),
        score: 0.0,
        finish: FinishReason::Length,
    };
    if params.max_new_tokens == 0 || prompts.is_empty() {
        return Ok(BeamOutput {
            best: vec![empty; prompts.len()],
            tokens: 0,
        });
    }
    let score = |h: &Hyp| {
        if params.length_normalised {
            h.total / h.tokens.len().max(1) as f64
        } else {
            h.total
        }
    };
    let (mut stepper, mut logits) = Stepper::start(policy, prompts, pad_id)?;
    // Live hypotheses, aligned with the stepper's rows, and the prompt each belongs to.
    let mut live: Vec<Hyp> = vec![
        Hyp {
            tokens: Vec::new(),
            logprobs: Vec::new(),
            total: 0.0,
        };
        prompts.len()
    ];
    let mut owner: Vec<usize> = (0..prompts.len()).collect();
    let mut finished: Vec<Vec<Hyp>> = vec![Vec::new(); prompts.len()];
    let mut tokens = 0;
    let per_row = params.width + params.stop_tokens.len();
    for step in 0..params.max_new_tokens {
        let last_step = step + 1 == params.max_new_tokens;
        let mut cands: Vec<Vec<Candidate>> = (0..prompts.len()).map(|_| Vec::new()).collect();
        for (row, row_logits) in logits.iter().enumerate() {
            let logp = log_softmax(row_logits, 1.0);
            for token in top_tokens(&logp, per_row) {
                cands[owner[row]].push(Candidate {
                    total: live[row].total + logp[token] as f64,
                    row,
                    token: token as u32,
                    logprob: logp[token],
                });
            }
        }
        let (mut next_live, mut next_owner, mut parents) = (Vec::new(), Vec::new(), Vec::new());
        for (p, mut cs) in cands.into_iter().enumerate() {
            if cs.is_empty() {
                continue;
            }
            cs.sort_by(|a, b| {
                b.total
                    .total_cmp(&a.total)
                    .then(a.row.cmp(&b.row))
                    .then(a.token.cmp(&b.token))
            });
            let mut kept: Vec<(usize, Hyp)> = Vec::new();
            for c in cs {
                let parent = &live[c.row];
                let mut hyp = Hyp {
                    tokens: parent.tokens.clone(),
                    logprobs: parent.logprobs.clone(),
                    total: c.total,
                };
                hyp.tokens.push(c.token);
                hyp.logprobs.push(c.logprob);
                tokens += 1;
                if last_step || params.stop_tokens.contains(&c.token) {
                    finished[p].push(hyp);
                } else {
                    kept.push((c.row, hyp));
                    if kept.len() == params.width {
                        break;
                    }
                }
            }
            let done = &mut finished[p];
            done.sort_by(|a, b| score(b).total_cmp(&score(a)));
            done.truncate(params.width);
            let best_finished = done.first().map(score);
            let can_improve = |h: &Hyp| match best_finished {
                None => true,
                Some(best) if params.length_normalised => {
                    h.total / params.max_new_tokens as f64 > best
                }
                Some(best) => h.total > best,
            };
            if kept.iter().any(|(_, h)| can_improve(h)) {
                for (row, hyp) in kept {
                    parents.push(row);
                    next_owner.push(p);
                    next_live.push(hyp);
                }
            }
        }
        if next_live.is_empty() {
            break;
        }
        stepper.select(&parents)?;
        let feed: Vec<u32> = next_live
            .iter()
            .map(|h| *h.tokens.last().unwrap())
            .collect();
        live = next_live;
        owner = next_owner;
        logits = stepper.step(policy, &feed)?;
    }
    let best = finished
        .into_iter()
        .map(|done| {
            done.into_iter()
                .next()
                .map(|h| Beam {
                    score: score(&h),
                    finish: match h.tokens.last() {
                        Some(t) if params.stop_tokens.contains(t) => FinishReason::Stop,
                        _ => FinishReason::Length,
                    },
                    tokens: h.tokens,
                    logprobs: h.logprobs,
                })
                .unwrap_or_else(|| empty.clone())
        })
        .collect();
    Ok(BeamOutput { best, tokens })
}

/// Indices of the `k` largest entries of `logp`, best first (ties: lower index first).
fn top_tokens(logp: &[f32], k: usize) -> Vec<usize> {
    let by_value =
        |a: &usize, b: &usize| -> Ordering { logp[*b].total_cmp(&logp[*a]).then(a.cmp(b)) };
    let mut idx: Vec<usize> = (0..logp.len()).collect();
    if k < idx.len() {
        idx.select_nth_unstable_by(k, by_value);
        idx.truncate(k);
    }
    idx.sort_by(by_value);
    idx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_tokens_are_the_largest_in_order() {
        let logp = [-3.0, -0.5, -2.0, -0.5, -9.0];
        assert_eq!(top_tokens(&logp, 2), vec![1, 3]);
        assert_eq!(top_tokens(&logp, 3), vec![1, 3, 2]);
        assert_eq!(top_tokens(&logp, 10), vec![1, 3, 2, 0, 4]);
    }
}
