//! The recorded log-prob of a sampled token is the log-prob of the distribution it was drawn
//! from (tempered, truncated, renormalised), so the learner's ratio
//! `rho = pi_train / pi_gen = exp(logp_train - logp_gen)`, with `pi_train` the model at
//! T = 1, is the true importance ratio for every sampler.
//!
//! Checked by enumeration on a tiny two-step "model" given by fixed logit tables: the
//! importance-weighted Monte Carlo estimate `mean(rho * f)` over sampled sequences must match
//! the exact `E_{pi_train}[f]`. Truncated sampling never draws a token outside the kept set,
//! so it has no samples there and the estimate only covers the kept sequences: only an `f`
//! that is zero outside them can be estimated without bias. With temperature alone every
//! token keeps positive probability and any `f` works.

use policy::sampling::{log_softmax, sample_token, sampling_logprobs};
use policy::SamplingParams;
use rand::SeedableRng;

const V: usize = 5;

/// Step-1 logits.
const FIRST: [f32; V] = [1.2, 0.3, 2.0, -0.5, 0.9];

/// Step-2 logits given the first token.
const SECOND: [[f32; V]; V] = [
    [0.1, 1.5, -1.0, 0.7, 0.0],
    [2.2, -0.3, 0.4, 0.4, 1.1],
    [-0.6, 0.2, 0.9, 1.8, 0.5],
    [1.0, 1.0, 0.0, -2.0, 0.3],
    [0.0, -1.2, 1.4, 0.6, 2.5],
];

fn probs(logits: &[f32], t: f32) -> Vec<f64> {
    log_softmax(logits, t)
        .iter()
        .map(|&l| (l as f64).exp())
        .collect()
}

/// The kept set of one row, computed independently of the sampler: tokens by tempered
/// probability (descending), top-k, then min-p, then the shortest prefix reaching top-p.
fn kept(logits: &[f32], p: &SamplingParams) -> Vec<usize> {
    let q = probs(logits, p.temperature);
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_by(|&a, &b| q[b].total_cmp(&q[a]));
    if p.top_k > 0 {
        order.truncate(p.top_k);
    }
    let top = q[order[0]];
    order.retain(|&i| q[i] >= p.min_p as f64 * top);
    if p.top_p < 1.0 {
        let mut mass = 0.0;
        let at = order
            .iter()
            .position(|&i| {
                mass += q[i];
                mass >= p.top_p as f64
            })
            .unwrap_or(order.len() - 1);
        order.truncate(at + 1);
    }
    order
}

/// The test function on sequences.
fn f(a: usize, b: usize) -> f64 {
    1.0 + a as f64 + 0.5 * (b as f64) * (b as f64) - 0.7 * (a * b) as f64
}

/// Exact `E_{pi_train}[f * 1{kept}]`, with `kept_only` false for plain `E[f]`.
fn exact(p: &SamplingParams, kept_only: bool) -> f64 {
    let p1 = probs(&FIRST, 1.0);
    let k1 = kept(&FIRST, p);
    let mut total = 0.0;
    for a in 0..V {
        let p2 = probs(&SECOND[a], 1.0);
        let k2 = kept(&SECOND[a], p);
        for (b, p2_b) in p2.iter().enumerate() {
            if !kept_only || (k1.contains(&a) && k2.contains(&b)) {
                total += p1[a] * p2_b * f(a, b);
            }
        }
    }
    total
}

/// `mean(rho * f)` and its standard error over `n` sampled sequences; `gen_logprob` gives the
/// log pi_gen used in rho for a row and the sampled token and its recorded log-prob.
fn estimate(
    p: &SamplingParams,
    n: usize,
    gen_logprob: impl Fn(&[f32], usize, f32) -> f64,
) -> (f64, f64) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let (mut sum, mut sum_sq) = (0.0, 0.0);
    for _ in 0..n {
        let (a, lp_a) = sample_token(&FIRST, p, &mut rng);
        let (b, lp_b) = sample_token(&SECOND[a as usize], p, &mut rng);
        let (a, b) = (a as usize, b as usize);
        let logp_train =
            log_softmax(&FIRST, 1.0)[a] as f64 + log_softmax(&SECOND[a], 1.0)[b] as f64;
        let logp_gen = gen_logprob(&FIRST, a, lp_a) + gen_logprob(&SECOND[a], b, lp_b);
        let x = (logp_train - logp_gen).exp() * f(a, b);
        sum += x;
        sum_sq += x * x;
    }
    let mean = sum / n as f64;
    let var = (sum_sq / n as f64 - mean * mean).max(0.0);
    (mean, (var / n as f64).sqrt())
}

fn recorded(_: &[f32], _: usize, lp: f32) -> f64 {
    lp as f64
}

const N: usize = 200_000;

fn truncating_samplers() -> Vec<SamplingParams> {
    let base = SamplingParams {
        temperature: 0.7,
        ..Default::default()
    };
    vec![
        SamplingParams {
            top_k: 2,
            ..base.clone()
        },
        SamplingParams {
            top_p: 0.9,
            ..base.clone()
        },
        SamplingParams {
            temperature: 1.6,
            top_p: 0.75,
            ..base.clone()
        },
        SamplingParams {
            min_p: 0.3,
            ..base.clone()
        },
        SamplingParams {
            temperature: 1.3,
            top_k: 4,
            top_p: 0.9,
            min_p: 0.1,
            ..base
        },
    ]
}

#[test]
fn recorded_logprob_is_the_renormalised_kept_probability() {
    for p in truncating_samplers() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        for row in std::iter::once(&FIRST).chain(SECOND.iter()) {
            let keep = kept(row, &p);
            assert!(keep.len() < V, "{p:?} must cut something from {row:?}");
            let q = probs(row, p.temperature);
            let mass: f64 = keep.iter().map(|&i| q[i]).sum();
            let full = sampling_logprobs(row, &p);
            for i in 0..V {
                if keep.contains(&i) {
                    let expected = q[i] / mass;
                    assert!(
                        ((full[i] as f64).exp() - expected).abs() < 1e-6,
                        "{p:?} token {i}: {} vs {expected}",
                        (full[i] as f64).exp()
                    );
                } else {
                    assert_eq!(full[i], f32::NEG_INFINITY, "{p:?} token {i} is cut");
                }
            }
            for _ in 0..200 {
                let (tok, lp) = sample_token(row, &p, &mut rng);
                let tok = tok as usize;
                assert!(keep.contains(&tok), "{p:?} drew cut token {tok}");
                let expected = q[tok] / mass;
                assert!(
                    ((lp as f64).exp() - expected).abs() < 1e-6,
                    "{p:?} token {tok}: recorded {} vs renormalised {expected}",
                    (lp as f64).exp()
                );
                assert_eq!(lp, full[tok]);
            }
        }
    }
}

/// `E_{pi_gen}[rho * f]` by enumeration, with pi_gen from [`sampling_logprobs`].
fn exact_weighted(p: &SamplingParams) -> f64 {
    let g1 = sampling_logprobs(&FIRST, p);
    let mut total = 0.0;
    for a in 0..V {
        let g2 = sampling_logprobs(&SECOND[a], p);
        for (b, &g2_b) in g2.iter().enumerate() {
            let logp_gen = g1[a] as f64 + g2_b as f64;
            if logp_gen == f64::NEG_INFINITY {
                continue; // never drawn
            }
            let logp_train =
                log_softmax(&FIRST, 1.0)[a] as f64 + log_softmax(&SECOND[a], 1.0)[b] as f64;
            total += logp_gen.exp() * (logp_train - logp_gen).exp() * f(a, b);
        }
    }
    total
}

#[test]
fn importance_weights_are_unbiased_on_the_kept_set_under_truncation() {
    for p in truncating_samplers() {
        let truth = exact(&p, true);
        // The identity behind it, exactly: sum over what can be drawn of pi_gen * rho * f.
        assert!((exact_weighted(&p) - truth).abs() < 1e-5, "{p:?}");
        // f is only estimable where the sampler has support: E_{pi_train}[f * 1{kept}].
        let (est, se) = estimate(&p, N, recorded);
        assert!(
            (est - truth).abs() < 5.0 * se + 1e-3,
            "{p:?}: estimate {est} (se {se}) vs exact {truth}"
        );
        // The old record, the tempered but untruncated log-prob, is biased: its rho
        // overweights every kept token by the kept mass it ignores.
        let (old, _) = estimate(&p, N, |row, tok, _| {
            log_softmax(row, p.temperature)[tok] as f64
        });
        assert!(
            (old - truth).abs() > 20.0 * se,
            "{p:?}: the untruncated record should be visibly biased: {old} vs {truth}"
        );
        // And the kept-set expectation really differs from the full one: f outside the kept
        // set cannot be estimated.
        assert!((exact(&p, false) - truth).abs() > 20.0 * se, "{p:?}");
    }
}

#[test]
fn temperature_alone_estimates_any_function() {
    for t in [0.6, 1.0, 1.5] {
        let p = SamplingParams {
            temperature: t,
            ..Default::default()
        };
        assert_eq!(exact(&p, true), exact(&p, false), "nothing is cut");
        let truth = exact(&p, false);
        assert!((exact_weighted(&p) - truth).abs() < 1e-5, "T = {t}");
        let (est, se) = estimate(&p, N, recorded);
        assert!(
            (est - truth).abs() < 5.0 * se + 1e-3,
            "T = {t}: estimate {est} (se {se}) vs exact {truth}"
        );
        // Without truncation the record is exactly the tempered log-prob.
        let mut rng = rand::rngs::StdRng::seed_from_u64(2);
        for _ in 0..100 {
            let (tok, lp) = sample_token(&FIRST, &p, &mut rng);
            assert_eq!(lp, log_softmax(&FIRST, t)[tok as usize]);
            assert_eq!(sampling_logprobs(&FIRST, &p), log_softmax(&FIRST, t));
        }
    }
}

#[test]
fn greedy_still_records_the_model_logprob() {
    let p = SamplingParams {
        temperature: 0.0,
        top_k: 2,
        top_p: 0.5,
        ..Default::default()
    };
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let (tok, lp) = sample_token(&FIRST, &p, &mut rng);
    assert_eq!(tok, 2);
    assert_eq!(lp, log_softmax(&FIRST, 1.0)[2]);
    assert!(p.records_model_logprobs());
    assert!(SamplingParams::default().records_model_logprobs());
    for truncated in &truncating_samplers() {
        assert!(truncated.truncates() && !truncated.records_model_logprobs());
    }
    let t1_top_p = SamplingParams {
        top_p: 0.9,
        ..Default::default()
    };
    assert!(
        !t1_top_p.records_model_logprobs(),
        "T = 1 with top-p is not the model's own"
    );
}
