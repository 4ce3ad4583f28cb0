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

use policy::sampling::log_softmax;
use policy::{Decoder, FinishReason, Policy};
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
    if params.max_new_tokens == 0 || prompts.is_empty() {
        return Ok(BeamOutput {
            best: vec![Beam::empty(); prompts.len()],
            tokens: 0,
        });
    }
    let (mut decoder, mut logits) = Decoder::start(policy, prompts, pad_id)?;
    let mut search = Search::new(params, prompts.len());
    for step in 0..params.max_new_tokens {
        let parents = search.advance(&logits, step + 1 == params.max_new_tokens);
        if search.live.is_empty() {
            break;
        }
        decoder.select(&parents)?;
        logits = decoder.step(policy, &search.last_tokens())?;
    }
    Ok(search.into_output())
}

impl Beam {
    /// What a prompt gets when nothing was decoded.
    fn empty() -> Self {
        Beam {
            tokens: Vec::new(),
            logprobs: Vec::new(),
            score: 0.0,
            finish: FinishReason::Length,
        }
    }
}

/// The state of one beam search: live hypotheses aligned with the decoder's rows, the prompt
/// each belongs to, and every prompt's finished hypotheses (its W best).
struct Search<'a> {
    params: &'a BeamParams,
    live: Vec<Hyp>,
    owner: Vec<usize>,
    finished: Vec<Vec<Hyp>>,
    /// Tokens added to hypotheses so far.
    tokens: usize,
}

impl<'a> Search<'a> {
    /// One empty live hypothesis per prompt.
    fn new(params: &'a BeamParams, prompts: usize) -> Self {
        let empty = Hyp {
            tokens: Vec::new(),
            logprobs: Vec::new(),
            total: 0.0,
        };
        Search {
            params,
            live: vec![empty; prompts],
            owner: (0..prompts).collect(),
            finished: vec![Vec::new(); prompts],
            tokens: 0,
        }
    }

    /// A hypothesis's rank: total log-prob, or mean per token when length-normalised.
    fn score(&self, h: &Hyp) -> f64 {
        if self.params.length_normalised {
            h.total / h.tokens.len().max(1) as f64
        } else {
            h.total
        }
    }

    /// Extends the live hypotheses by one token given each row's next-token `logits`;
    /// returns, for each new live hypothesis, the row it continues.
    fn advance(&mut self, logits: &[Vec<f32>], last_step: bool) -> Vec<usize> {
        let (mut live, mut owner, mut parents) = (Vec::new(), Vec::new(), Vec::new());
        for (p, cands) in self.candidates(logits).into_iter().enumerate() {
            if cands.is_empty() {
                continue;
            }
            let kept = self.extend(p, cands, last_step);
            if self.can_improve(p, &kept) {
                for (row, hyp) in kept {
                    parents.push(row);
                    owner.push(p);
                    live.push(hyp);
                }
            }
        }
        self.live = live;
        self.owner = owner;
        parents
    }

    /// Each prompt's candidate extensions: every live row's best `W + stop tokens` tokens.
    fn candidates(&self, logits: &[Vec<f32>]) -> Vec<Vec<Candidate>> {
        let per_row = self.params.width + self.params.stop_tokens.len();
        let mut cands: Vec<Vec<Candidate>> = self.finished.iter().map(|_| Vec::new()).collect();
        for (row, row_logits) in logits.iter().enumerate() {
            let logp = log_softmax(row_logits, 1.0);
            for token in top_tokens(&logp, per_row) {
                cands[self.owner[row]].push(Candidate {
                    total: self.live[row].total + logp[token] as f64,
                    row,
                    token: token as u32,
                    logprob: logp[token],
                });
            }
        }
        cands
    }

    /// Ranks prompt `p`'s candidates by total log-prob: those that stop (or reach the budget)
    /// join its finished hypotheses, of which the W best are kept; returns the W best others
    /// with the row each continues.
    fn extend(
        &mut self,
        p: usize,
        mut cands: Vec<Candidate>,
        last_step: bool,
    ) -> Vec<(usize, Hyp)> {
        cands.sort_by(|a, b| {
            b.total
                .total_cmp(&a.total)
                .then(a.row.cmp(&b.row))
                .then(a.token.cmp(&b.token))
        });
        let mut kept: Vec<(usize, Hyp)> = Vec::new();
        for c in cands {
            let parent = &self.live[c.row];
            let mut hyp = Hyp {
                tokens: parent.tokens.clone(),
                logprobs: parent.logprobs.clone(),
                total: c.total,
            };
            hyp.tokens.push(c.token);
            hyp.logprobs.push(c.logprob);
            self.tokens += 1;
            if last_step || self.params.stop_tokens.contains(&c.token) {
                self.finished[p].push(hyp);
            } else {
                kept.push((c.row, hyp));
                if kept.len() == self.params.width {
                    break;
                }
            }
        }
        let mut done = std::mem::take(&mut self.finished[p]);
        done.sort_by(|a, b| self.score(b).total_cmp(&self.score(a)));
        done.truncate(self.params.width);
        self.finished[p] = done;
        kept
    }

    /// Whether any of prompt `p`'s live hypotheses `kept` can still beat its best finished
    /// one (log-probs are <= 0: a total only falls, a mean rises at most to total / budget).
    fn can_improve(&self, p: usize, kept: &[(usize, Hyp)]) -> bool {
        let best_finished = self.finished[p].first().map(|h| self.score(h));
        kept.iter().any(|(_, h)| match best_finished {
            None => true,
            Some(best) if self.params.length_normalised => {
                h.total / self.params.max_new_tokens as f64 > best
            }
            Some(best) => h.total > best,
        })
    }

    /// The last token of every live hypothesis: what each row decodes next.
    fn last_tokens(&self) -> Vec<u32> {
        self.live
            .iter()
            .map(|h| *h.tokens.last().expect("a live hypothesis has a token"))
            .collect()
    }

    /// Every prompt's best finished hypothesis.
    fn into_output(self) -> BeamOutput {
        let best = self
            .finished
            .iter()
            .map(|done| match done.first() {
                Some(h) => Beam {
                    score: self.score(h),
                    finish: match h.tokens.last() {
                        Some(t) if self.params.stop_tokens.contains(t) => FinishReason::Stop,
                        _ => FinishReason::Length,
                    },
                    tokens: h.tokens.clone(),
                    logprobs: h.logprobs.clone(),
                },
                None => Beam::empty(),
            })
            .collect();
        BeamOutput {
            best,
            tokens: self.tokens,
        }
    }
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
