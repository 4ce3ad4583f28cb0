//! How to pick each next token: greedy, temperature, top-k, top-p and min-p, stop tokens, a
//! length budget and per-sequence seeds ([`SamplingParams`]), and the log-prob each pick
//! records.
//!
//! The recorded log-prob of each sampled token is its log-prob under the distribution it was
//! actually drawn from (DESIGN.md section 5, pi_gen): `softmax(logits / T)` at the
//! temperature `T` in force, restricted to the tokens top-k / top-p / min-p keep and
//! renormalised over them, i.e. `log softmax(logits / T)[token] - log sum_{kept}
//! softmax(logits / T)` ([`sampling_logprobs`]). Without truncation that is the tempered
//! log-prob, which teacher-forced scoring at the same temperature reproduces. The learner
//! scores the model at T = 1, so its ratio `rho = exp(logp_train - logp_gen)` is the true
//! importance ratio for any sampler; only a function that is zero outside the kept sets can
//! be estimated without bias, since truncated sampling never draws the other tokens.
//! Greedy (`T <= 0`) records the model's own T = 1 log-prob. RL sampling uses T = 1 without
//! truncation, where the record is the model's own log-prob.
//!
//! This file picks one token from one row of logits; `generate.rs` is the loop that decodes
//! whole batches with it.

use rand::Rng;
use serde::{Deserialize, Serialize};

/// How to pick each next token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SamplingParams {
    /// 0 is greedy; 1 samples from the model's own distribution.
    pub temperature: f32,
    /// Nucleus sampling mass (1 = off).
    pub top_p: f32,
    /// Keep the k most likely tokens (0 = off).
    pub top_k: usize,
    /// Keep tokens with probability >= min_p * the top probability (0 = off).
    pub min_p: f32,
    /// Length budget; a sequence that reaches it ends as it stands.
    pub max_new_tokens: usize,
    /// Tokens that end a sequence (kept as its last token).
    pub stop_tokens: Vec<u32>,
    /// Base seed; sequence i draws from its own stream `(seed, i)`.
    pub seed: u64,
}

impl SamplingParams {
    /// Whether top-k, top-p or min-p may cut tokens from the tempered distribution (greedy
    /// aside).
    pub fn truncates(&self) -> bool {
        self.top_k > 0 || self.top_p < 1.0 || self.min_p > 0.0
    }

    /// Whether the recorded log-probs are the model's own (temperature 1, nothing cut):
    /// greedy, or T = 1 without truncation.
    pub fn records_model_logprobs(&self) -> bool {
        self.temperature <= 0.0 || (self.temperature == 1.0 && !self.truncates())
    }
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            temperature: 1.0,
            top_p: 1.0,
            top_k: 0,
            min_p: 0.0,
            max_new_tokens: 64,
            stop_tokens: Vec::new(),
            seed: 0,
        }
    }
}

/// Seed of stream `i` under a base `seed`: splitmix64 of the pair (offset by `salt`, so
/// that different uses of one base seed get unrelated streams), so neighbouring streams are
/// unrelated too.
pub fn stream_seed(seed: u64, i: u64, salt: u64) -> u64 {
    let mut z = seed ^ i.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(salt);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// `log softmax(logits / t)` of every token.
pub fn log_softmax(logits: &[f32], t: f32) -> Vec<f32> {
    let max = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = logits.iter().map(|&l| (((l - max) / t) as f64).exp()).sum();
    let lse = sum.ln() as f32;
    logits.iter().map(|&l| (l - max) / t - lse).collect()
}

/// Picks one token from a row of logits; returns it with its recorded log-prob: the log-prob
/// under the distribution it was drawn from (see the module docs and [`sampling_logprobs`]);
/// greedy (`temperature <= 0`) records the model's own T = 1 log-prob.
pub fn sample_token(logits: &[f32], p: &SamplingParams, rng: &mut impl Rng) -> (u32, f32) {
    if p.temperature <= 0.0 {
        let logp = log_softmax(logits, 1.0);
        let tok = argmax(&logp);
        return (tok as u32, logp[tok]);
    }
    let logp = log_softmax(logits, p.temperature);
    if !p.truncates() {
        let weights: Vec<f32> = logp.iter().map(|l| l.exp()).collect();
        let tok = draw(&weights, rng);
        return (tok as u32, logp[tok]);
    }
    let kept = kept_tokens(&logp, p);
    let weights: Vec<f32> = kept.iter().map(|&i| logp[i].exp()).collect();
    let tok = kept[draw(&weights, rng)];
    (tok as u32, logp[tok] - kept_log_mass(&logp, &kept))
}

/// The log-prob of every token under the distribution [`sample_token`] draws from with `p`:
/// `log softmax(logits / T)` with the tokens top-k / top-p / min-p cut set to `-inf` and
/// the kept ones renormalised. Greedy (`temperature <= 0`) gives the model's own
/// `log softmax(logits)`, which is what it records, not the point mass it draws from.
pub fn sampling_logprobs(logits: &[f32], p: &SamplingParams) -> Vec<f32> {
    if p.temperature <= 0.0 {
        return log_softmax(logits, 1.0);
    }
    let logp = log_softmax(logits, p.temperature);
    if !p.truncates() {
        return logp;
    }
    let kept = kept_tokens(&logp, p);
    let log_mass = kept_log_mass(&logp, &kept);
    let mut out = vec![f32::NEG_INFINITY; logp.len()];
    for &i in &kept {
        out[i] = logp[i] - log_mass;
    }
    out
}

/// The tokens truncation keeps, most likely first: top-k, then min-p (relative to the most
/// likely token), then the smallest prefix whose tempered mass reaches top-p. Never empty.
fn kept_tokens(logp: &[f32], p: &SamplingParams) -> Vec<usize> {
    let mut order: Vec<usize> = (0..logp.len()).collect();
    order.sort_unstable_by(|&a, &b| logp[b].total_cmp(&logp[a]));
    if p.top_k > 0 {
        order.truncate(p.top_k.max(1));
    }
    let top = logp[order[0]].exp();
    if p.min_p > 0.0 {
        order.retain(|&i| logp[i].exp() >= p.min_p * top);
    }
    if p.top_p < 1.0 {
        let mut mass = 0.0;
        let mut cut = order.len();
        for (n, &i) in order.iter().enumerate() {
            mass += logp[i].exp();
            if mass >= p.top_p {
                cut = n + 1;
                break;
            }
        }
        order.truncate(cut.max(1));
    }
    order
}

/// `log sum_{kept} exp(logp)`: 0 when nothing is cut, so an untruncated record is exactly the
/// tempered log-prob.
fn kept_log_mass(logp: &[f32], kept: &[usize]) -> f32 {
    if kept.len() == logp.len() {
        return 0.0;
    }
    // Relative to the largest kept log-prob (kept[0]), in f64, so that a tiny kept mass
    // neither underflows nor loses digits.
    let max = logp[kept[0]] as f64;
    let sum: f64 = kept.iter().map(|&i| (logp[i] as f64 - max).exp()).sum();
    (max + sum.ln()) as f32
}

fn argmax(v: &[f32]) -> usize {
    v.iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1).then(b.0.cmp(&a.0)))
        .map(|(i, _)| i)
        .unwrap_or(0)
}

/// Index drawn with probability proportional to `weights`.
fn draw(weights: &[f32], rng: &mut impl Rng) -> usize {
    let total: f32 = weights.iter().sum();
    let mut u = rng.random::<f32>() * total;
    for (i, &w) in weights.iter().enumerate() {
        if u < w {
            return i;
        }
        u -= w;
    }
    weights.iter().rposition(|&w| w > 0.0).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn greedy_takes_argmax_and_records_model_logprob() {
        let p = SamplingParams {
            temperature: 0.0,
            ..Default::default()
        };
        let mut rng = rand::rngs::StdRng::seed_from_u64(0);
        let (tok, lp) = sample_token(&[0.0, 2.0, 1.0], &p, &mut rng);
        assert_eq!(tok, 1);
        let expected = 2.0 - (1f32 + 2f32.exp() + 1f32.exp()).ln();
        assert!((lp - expected).abs() < 1e-6);
    }

    #[test]
    fn top_k_one_is_greedy_and_top_p_keeps_the_nucleus() {
        let logits = [0.0, 3.0, 2.9, -5.0];
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let k1 = SamplingParams {
            top_k: 1,
            ..Default::default()
        };
        for _ in 0..50 {
            assert_eq!(sample_token(&logits, &k1, &mut rng).0, 1);
        }
        let nucleus = SamplingParams {
            top_p: 0.8,
            ..Default::default()
        };
        for _ in 0..200 {
            let t = sample_token(&logits, &nucleus, &mut rng).0;
            assert!(t == 1 || t == 2, "token {t} is outside the nucleus");
        }
    }

    #[test]
    fn sampling_frequencies_follow_tempered_probabilities() {
        let logits = [0.0f32, 1.0, 2.0];
        let p = SamplingParams {
            temperature: 2.0,
            ..Default::default()
        };
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut counts = [0usize; 3];
        let n = 40_000;
        for _ in 0..n {
            counts[sample_token(&logits, &p, &mut rng).0 as usize] += 1;
        }
        let probs: Vec<f32> = log_softmax(&logits, 2.0).iter().map(|l| l.exp()).collect();
        for i in 0..3 {
            let f = counts[i] as f32 / n as f32;
            assert!(
                (f - probs[i]).abs() < 0.01,
                "token {i}: {f} vs {}",
                probs[i]
            );
        }
    }
}
