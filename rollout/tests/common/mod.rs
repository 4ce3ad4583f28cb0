//! Helpers for the exactness tests: a model with a tiny vocabulary whose every short
//! sequence can be enumerated, and exact sequence distributions computed by brute force.

#![allow(dead_code)]

use candle_core::Device;
use policy::{random_weights, score_sequences, ModelConfig, Policy};

/// A one-layer model over `vocab` tokens with random weights scaled by `scale` (the 0.02
/// init is nearly uniform; scaled up, the next-token distributions are far from it).
pub fn tiny_policy(vocab: usize, seed: u64, scale: f64) -> Policy {
    let cfg = ModelConfig::tiny(vocab, 16, 1, 2, 1);
    let mut weights = random_weights(&cfg, seed, &Device::Cpu).unwrap();
    for (name, t) in weights.iter_mut() {
        if !name.ends_with("norm.weight") {
            *t = (t.clone() * scale).unwrap();
        }
    }
    Policy::new(&cfg, &weights).unwrap()
}

/// Every sequence of `len` tokens over `0..vocab` (no stop token), in lexicographic order.
pub fn all_sequences(vocab: u32, len: usize) -> Vec<Vec<u32>> {
    let mut out = vec![Vec::new()];
    for _ in 0..len {
        out = out
            .into_iter()
            .flat_map(|s| {
                (0..vocab).map(move |t| {
                    let mut s = s.clone();
                    s.push(t);
                    s
                })
            })
            .collect();
    }
    out
}

/// Every completion of at most `max_len` tokens over `0..vocab` that either ends with its
/// only `stop` token or reaches `max_len` without one.
pub fn all_stopping_sequences(vocab: u32, stop: u32, max_len: usize) -> Vec<Vec<u32>> {
    let mut out = Vec::new();
    let mut open = vec![Vec::new()];
    for depth in 0..max_len {
        let mut next = Vec::new();
        for s in &open {
            for t in 0..vocab {
                let mut s = s.clone();
                s.push(t);
                if t == stop || depth + 1 == max_len {
                    out.push(s);
                } else {
                    next.push(s);
                }
            }
        }
        open = next;
    }
    out
}

/// Total log-prob of each completion after `prompt`, at `temperature`.
pub fn completion_logprobs(
    policy: &Policy,
    prompt: &[u32],
    completions: &[Vec<u32>],
    temperature: f64,
) -> Vec<f64> {
    let seqs: Vec<Vec<u32>> = completions
        .iter()
        .map(|c| prompt.iter().chain(c).copied().collect())
        .collect();
    score_sequences(policy, &seqs, 0, temperature)
        .unwrap()
        .iter()
        .zip(completions)
        .map(|(lps, c)| lps[lps.len() - c.len()..].iter().map(|&l| l as f64).sum())
        .collect()
}

/// `exp(w_i) / sum exp(w)`.
pub fn normalise(log_weights: &[f64]) -> Vec<f64> {
    let max = log_weights
        .iter()
        .cloned()
        .fold(f64::NEG_INFINITY, f64::max);
    let w: Vec<f64> = log_weights.iter().map(|l| (l - max).exp()).collect();
    let z: f64 = w.iter().sum();
    w.into_iter().map(|x| x / z).collect()
}

/// Total variation distance between two distributions over the same outcomes.
pub fn total_variation(a: &[f64], b: &[f64]) -> f64 {
    0.5 * a.iter().zip(b).map(|(x, y)| (x - y).abs()).sum::<f64>()
}

/// The empirical distribution of `samples` over `outcomes` (each sample must be one of them).
pub fn histogram(outcomes: &[Vec<u32>], samples: &[Vec<u32>]) -> Vec<f64> {
    let index: std::collections::HashMap<&Vec<u32>, usize> =
        outcomes.iter().enumerate().map(|(i, s)| (s, i)).collect();
    let mut counts = vec![0.0; outcomes.len()];
    for s in samples {
        counts[*index
            .get(s)
            .unwrap_or_else(|| panic!("{s:?} is not an outcome"))] += 1.0;
    }
    counts.iter().map(|c| c / samples.len() as f64).collect()
}
