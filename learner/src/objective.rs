//! The policy-gradient objectives of DESIGN.md section 5, on `[B, T - 1]` token tensors.
//!
//! With `rho_t = pi_train(y_t) / pi_gen(y_t) = exp(logp_train - logp_gen)` and per-token
//! aggregation weights `w_t` (see [`Aggregation`]), the objectives maximised are:
//!
//! * CISPO (ScaleRL's default): `J = sum_t w_t * sg(min(rho_t, eps_max)) * A * logp_train_t`.
//!   `sg` is a detach: the truncated ratio weights the gradient and receives none, so
//!   `grad J = sum_t w_t * min(rho_t, eps_max) * A * grad logp_train_t`.
//! * PPO-clip (GRPO; DAPO with `eps_high > eps_low` and token aggregation):
//!   `J = sum_t w_t * min(rho_t * A, clip(rho_t, 1 - eps_low, 1 + eps_high) * A)`.
//! * GSPO: the same clipped surrogate on the sequence-level ratio
//!   `s_i = exp(mean_t (logp_train_it - logp_gen_it))`, weighted by the sequence's total
//!   weight `sum_t w_it`. GSPO weights sequences as its paper does whatever [`Aggregation`]
//!   says: [`sample_weights`] gives each sequence a total of `1 / G` in its group of `G`,
//!   groups averaged, so `J = mean over groups of 1/G sum_i min(s_i A_i, clip(s_i) A_i)`.
//!   A length-dependent weighting would count a long sequence's single ratio several times.
//!
//! The loss is `-J`. Padding and prompt positions carry weight 0.

use crate::error::Result;
use candle_core::{Tensor, D};

pub use rollout::config::{AdvantageNorm, Aggregation, Objective};

/// `A_i = r_i - mean(r)` for one group.
pub fn advantage(rewards: &[f32]) -> Vec<f32> {
    let mean = rewards.iter().sum::<f32>() / rewards.len().max(1) as f32;
    rewards.iter().map(|r| r - mean).collect()
}

fn std(values: &[f32]) -> f32 {
    let n = values.len().max(1) as f32;
    let mean = values.iter().sum::<f32>() / n;
    (values.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / n).sqrt()
}

/// Group-centred advantages of each group's rewards, normalised as `norm` says.
pub fn normalised_advantages(groups: &[Vec<f32>], norm: AdvantageNorm) -> Vec<Vec<f32>> {
    const EPS: f32 = 1e-6;
    let centred: Vec<Vec<f32>> = groups.iter().map(|r| advantage(r)).collect();
    match norm {
        AdvantageNorm::None => centred,
        AdvantageNorm::Group => centred
            .into_iter()
            .zip(groups)
            .map(|(a, r)| {
                let s = std(r) + EPS;
                a.into_iter().map(|x| x / s).collect()
            })
            .collect(),
        AdvantageNorm::Batch => {
            let all: Vec<f32> = centred.iter().flatten().copied().collect();
            let s = std(&all) + EPS;
            centred
                .into_iter()
                .map(|a| a.into_iter().map(|x| x / s).collect())
                .collect()
        }
    }
}

/// Per-sample token weights of an aggregation. `group_of[i]` is sample i's group,
/// `lens[i]` its completion token count; returns one weight per sample (each of its tokens
/// gets it), so that the objective is `sum_i weight_i * sum_t term_it`.
pub fn aggregation_weights(agg: Aggregation, group_of: &[usize], lens: &[usize]) -> Vec<f32> {
    let groups = group_of.iter().copied().max().map_or(0, |g| g + 1);
    match agg {
        Aggregation::Prompt => {
            let mut group_tokens = vec![0usize; groups];
            for (&g, &l) in group_of.iter().zip(lens) {
                group_tokens[g] += l;
            }
            group_of
                .iter()
                .map(|&g| 1.0 / (groups as f32 * group_tokens[g].max(1) as f32))
                .collect()
        }
        Aggregation::Sample => lens
            .iter()
            .map(|&l| 1.0 / (lens.len() as f32 * l.max(1) as f32))
            .collect(),
        Aggregation::Token => {
            let total: usize = lens.iter().sum();
            vec![1.0 / total.max(1) as f32; lens.len()]
        }
    }
}

/// Per-sample token weights for objective `obj`: [`aggregation_weights`] of `agg`, except
/// for GSPO, which ignores `agg` and weights sequences as the GSPO paper does: sample i of a
/// group of `G_g` samples, out of `groups` groups, gets `1 / (groups * G_g * lens[i])` per
/// token, so that its sequence-level term has total weight `1 / (groups * G_g)` (each
/// sequence 1/G in its group, groups averaged) whatever its length. `group_of` and `lens` are
/// as for [`aggregation_weights`]; this is what the learner feeds [`loss`].
pub fn sample_weights(
    obj: Objective,
    agg: Aggregation,
    group_of: &[usize],
    lens: &[usize],
) -> Vec<f32> {
    match obj {
        Objective::Gspo { .. } => {
            let groups = group_of.iter().copied().max().map_or(0, |g| g + 1);
            let mut group_sizes = vec![0usize; groups];
            for &g in group_of {
                group_sizes[g] += 1;
            }
            group_of
                .iter()
                .zip(lens)
                .map(|(&g, &l)| 1.0 / (groups as f32 * group_sizes[g] as f32 * l.max(1) as f32))
                .collect()
        }
        Objective::Cispo { .. } | Objective::PpoClip { .. } => {
            aggregation_weights(agg, group_of, lens)
        }
    }
}

/// Everything the objective needs, as `[B, T - 1]` tensors aligned with the log-probs.
pub struct ObjectiveInputs<'a> {
    /// `log pi_train` of each token, with gradient.
    pub logp_train: &'a Tensor,
    /// `log pi_gen` recorded by the actor.
    pub logp_gen: &'a Tensor,
    /// Advantage of the token's sample.
    pub advantage: &'a Tensor,
    /// Aggregation weight of the token (0 for prompt and padding positions), from
    /// [`sample_weights`]; GSPO uses each sequence's total.
    pub weight: &'a Tensor,
}

/// Diagnostics of one objective evaluation (no gradient).
#[derive(Debug, Clone, Copy, Default)]
pub struct ObjectiveStats {
    /// Weighted mean of the importance ratio.
    pub rho_mean: f64,
    /// Mean of `(rho - 1)^2` over the same tokens (with `rho_mean`, the ratio's variance;
    /// centred at 1 so that f32 sums of ratios near 1 keep their digits).
    pub rho_sq_dev: f64,
    /// Fraction of weighted tokens whose ratio was truncated or clipped.
    pub clip_frac: f64,
}

/// `rho = exp(logp_train - logp_gen)`, detached.
pub fn rho(logp_train: &Tensor, logp_gen: &Tensor) -> Result<Tensor> {
    Ok((logp_train.detach() - logp_gen)?.exp()?)
}

/// The CISPO token weight `sg(min(rho, eps_max))`.
pub fn truncated_weight(rho: &Tensor, eps_max: f64) -> Result<Tensor> {
    Ok(rho.clamp(f64::NEG_INFINITY, eps_max)?.detach())
}

/// The loss `-J` (a scalar with gradient) and its diagnostics.
pub fn loss(obj: Objective, x: &ObjectiveInputs) -> Result<(Tensor, ObjectiveStats)> {
    let active = x.weight.gt(0.0)?.to_dtype(x.weight.dtype())?;
    let n_active = active.sum_all()?.to_scalar::<f32>()?.max(1.0) as f64;
    let r = rho(x.logp_train, x.logp_gen)?;
    let rho_mean = (r.mul(&active)?.sum_all()?.to_scalar::<f32>()? as f64) / n_active;
    let rho_sq_dev = ((r.affine(1.0, -1.0)?.sqr()?.mul(&active)?)
        .sum_all()?
        .to_scalar::<f32>()? as f64)
        / n_active;
    let frac = |m: Tensor| -> Result<f64> {
        Ok(m.to_dtype(active.dtype())?
            .mul(&active)?
            .sum_all()?
            .to_scalar::<f32>()? as f64
            / n_active)
    };
    let (j, clip_frac) = match obj {
        Objective::Cispo { eps_max } => {
            let w = truncated_weight(&r, eps_max)?;
            let term = (w * x.advantage)?.mul(x.logp_train)?;
            (term.mul(x.weight)?.sum_all()?, frac(r.gt(eps_max)?)?)
        }
        Objective::PpoClip { eps_low, eps_high } => {
            let ratio = (x.logp_train - x.logp_gen)?.exp()?;
            let unclipped = ratio.mul(x.advantage)?;
            let clipped = ratio
                .clamp(1.0 - eps_low, 1.0 + eps_high)?
                .mul(x.advantage)?;
            let term = unclipped.minimum(&clipped)?;
            let outside = (r.lt(1.0 - eps_low)?.to_dtype(active.dtype())?
                + r.gt(1.0 + eps_high)?.to_dtype(active.dtype())?)?;
            (term.mul(x.weight)?.sum_all()?, frac(outside)?)
        }
        Objective::Gspo { eps_low, eps_high } => {
            // Per-sequence mean log-ratio over the sequence's own tokens.
            let tokens = active.sum_keepdim(D::Minus1)?.clamp(1.0, f64::INFINITY)?;
            let log_ratio = ((x.logp_train - x.logp_gen)?
                .mul(&active)?
                .sum_keepdim(D::Minus1)?
                / tokens)?;
            let s = log_ratio.exp()?;
            let adv = (x.advantage.mul(&active)?.sum_keepdim(D::Minus1)?
                / active.sum_keepdim(D::Minus1)?.clamp(1.0, f64::INFINITY)?)?;
            let unclipped = s.mul(&adv)?;
            let clipped = s.clamp(1.0 - eps_low, 1.0 + eps_high)?.mul(&adv)?;
            let term = unclipped.minimum(&clipped)?;
            let seq_weight = x.weight.sum_keepdim(D::Minus1)?;
            let sd = s.detach();
            let outside = (sd.lt(1.0 - eps_low)?.to_dtype(active.dtype())?
                + sd.gt(1.0 + eps_high)?.to_dtype(active.dtype())?)?;
            let seqs = active.max_keepdim(D::Minus1)?;
            let n_seqs = seqs.sum_all()?.to_scalar::<f32>()?.max(1.0) as f64;
            let clip = outside.mul(&seqs)?.sum_all()?.to_scalar::<f32>()? as f64 / n_seqs;
            (term.mul(&seq_weight)?.sum_all()?, clip)
        }
    };
    Ok((
        j.neg()?,
        ObjectiveStats {
            rho_mean,
            rho_sq_dev,
            clip_frac,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn t(v: &[f32]) -> Tensor {
        Tensor::new(v, &Device::Cpu).unwrap().unsqueeze(0).unwrap()
    }

    #[test]
    fn advantages_centre_and_normalise() {
        let groups = vec![vec![1.0, 0.0, 0.0, 1.0], vec![1.0, 0.0, 0.0, 0.0]];
        let raw = normalised_advantages(&groups, AdvantageNorm::None);
        assert_eq!(raw[0], vec![0.5, -0.5, -0.5, 0.5]);
        assert_eq!(raw[1], vec![0.75, -0.25, -0.25, -0.25]);
        // Batch std of all eight advantages: sqrt((4*0.25 + 0.5625 + 3*0.0625) / 8).
        let s = ((4.0 * 0.25 + 0.5625 + 3.0 * 0.0625) / 8.0f32).sqrt();
        let batch = normalised_advantages(&groups, AdvantageNorm::Batch);
        assert!((batch[1][0] - 0.75 / s).abs() < 1e-5);
        let group = normalised_advantages(&groups, AdvantageNorm::Group);
        assert!((group[0][0] - 1.0).abs() < 1e-4, "{group:?}");
        assert!((group[1][0] - 0.75 / 0.1875f32.sqrt()).abs() < 1e-4);
    }

    #[test]
    fn aggregation_weights_follow_their_definitions() {
        // Two groups: group 0 has samples of 2 and 4 tokens, group 1 one of 3 tokens.
        let (g, l) = ([0, 0, 1], [2, 4, 3]);
        let p = aggregation_weights(Aggregation::Prompt, &g, &l);
        assert_eq!(p, vec![1.0 / 12.0, 1.0 / 12.0, 1.0 / 6.0]);
        let s = aggregation_weights(Aggregation::Sample, &g, &l);
        assert_eq!(s, vec![1.0 / 6.0, 1.0 / 12.0, 1.0 / 9.0]);
        let tok = aggregation_weights(Aggregation::Token, &g, &l);
        assert_eq!(tok, vec![1.0 / 9.0; 3]);
        // Each weighting sums to one over tokens.
        for w in [p, s, tok] {
            let total: f32 = w.iter().zip(l).map(|(w, l)| w * l as f32).sum();
            assert!((total - 1.0).abs() < 1e-6);
        }
    }

    #[test]
    // The hand computation keeps each term's factors as the formula has them (advantage -1).
    #[allow(clippy::neg_multiply)]
    fn cispo_loss_on_a_hand_computed_batch() {
        // Three tokens: rho = e^0.5 (< 4), e^2 (> 4, truncated), e^-1.
        let logp_train = t(&[-1.0, -0.5, -2.0]);
        let logp_gen = t(&[-1.5, -2.5, -1.0]);
        let adv = t(&[2.0, 2.0, -1.0]);
        let weight = t(&[0.25, 0.25, 0.5]);
        let (l, stats) = loss(
            Objective::Cispo { eps_max: 4.0 },
            &ObjectiveInputs {
                logp_train: &logp_train,
                logp_gen: &logp_gen,
                advantage: &adv,
                weight: &weight,
            },
        )
        .unwrap();
        // Written term by term, as the hand computation has it.
        #[allow(clippy::neg_multiply)]
        let j = 0.25 * 0.5f64.exp() * 2.0 * -1.0
            + 0.25 * 4.0 * 2.0 * -0.5
            + 0.5 * (-1.0f64).exp() * -1.0 * -2.0;
        assert!((l.to_scalar::<f32>().unwrap() as f64 + j).abs() < 1e-5);
        assert!((stats.clip_frac - 1.0 / 3.0).abs() < 1e-6);
        // The ratio's moments over the three tokens, as the step report combines them.
        let rhos = [0.5f64.exp(), 2.0f64.exp(), (-1.0f64).exp()];
        let mean = rhos.iter().sum::<f64>() / 3.0;
        let sq_dev = rhos.iter().map(|r| (r - 1.0).powi(2)).sum::<f64>() / 3.0;
        assert!((stats.rho_mean - mean).abs() < 1e-5, "{}", stats.rho_mean);
        assert!(
            (stats.rho_sq_dev - sq_dev).abs() < 1e-4,
            "{}",
            stats.rho_sq_dev
        );
    }

    #[test]
    fn ppo_clip_takes_the_pessimistic_side() {
        // rho = e^0.5 = 1.65 > 1.2 with A > 0: clipped to 1.2. rho = e^-0.5 = 0.61 < 0.8 with
        // A < 0: min(0.61 * -1, 0.8 * -1) = -0.8.
        let logp_train = t(&[-1.0, -1.5]);
        let logp_gen = t(&[-1.5, -1.0]);
        let adv = t(&[1.0, -1.0]);
        let weight = t(&[0.5, 0.5]);
        let (l, stats) = loss(
            Objective::PpoClip {
                eps_low: 0.2,
                eps_high: 0.2,
            },
            &ObjectiveInputs {
                logp_train: &logp_train,
                logp_gen: &logp_gen,
                advantage: &adv,
                weight: &weight,
            },
        )
        .unwrap();
        let j = 0.5 * 1.2 + 0.5 * -0.8;
        assert!((l.to_scalar::<f32>().unwrap() as f64 + j).abs() < 1e-5);
        assert_eq!(stats.clip_frac, 1.0);
    }

    #[test]
    fn gspo_uses_the_sequence_ratio() {
        // One sequence of two tokens, mean log-ratio 0.05 -> s = e^0.05 inside the clip range.
        let logp_train = t(&[-1.0, -1.0]);
        let logp_gen = t(&[-1.1, -1.0]);
        let adv = t(&[2.0, 2.0]);
        let weight = t(&[0.5, 0.5]);
        let (l, _) = loss(
            Objective::Gspo {
                eps_low: 0.2,
                eps_high: 0.2,
            },
            &ObjectiveInputs {
                logp_train: &logp_train,
                logp_gen: &logp_gen,
                advantage: &adv,
                weight: &weight,
            },
        )
        .unwrap();
        let j = 0.05f64.exp() * 2.0;
        assert!((l.to_scalar::<f32>().unwrap() as f64 + j).abs() < 1e-5);
    }

    /// Two groups (3 and 2 samples) of different lengths, padded to `[5, 5]`.
    struct GspoBatch {
        group_of: Vec<usize>,
        lens: Vec<usize>,
        logp_train: Vec<Vec<f32>>,
        logp_gen: Vec<Vec<f32>>,
        adv: Vec<f32>,
    }

    fn gspo_batch() -> GspoBatch {
        GspoBatch {
            group_of: vec![0, 0, 0, 1, 1],
            lens: vec![2, 5, 1, 4, 3],
            logp_train: vec![
                vec![-1.0, -0.5, 0.0, 0.0, 0.0],
                vec![-0.2, -1.3, -0.7, -2.0, -0.1],
                vec![-0.9, 0.0, 0.0, 0.0, 0.0],
                vec![-1.1, -0.4, -0.6, -0.3, 0.0],
                vec![-0.8, -1.6, -0.2, 0.0, 0.0],
            ],
            logp_gen: vec![
                vec![-1.1, -0.6, 0.0, 0.0, 0.0],
                vec![-0.3, -1.2, -0.7, -2.1, -0.1],
                vec![-0.3, 0.0, 0.0, 0.0, 0.0], // s = e^-0.6, clipped
                vec![-1.0, -0.5, -0.6, -0.2, 0.0],
                vec![-0.9, -1.5, -0.3, 0.0, 0.0],
            ],
            adv: vec![1.0, -0.5, -0.5, 0.8, -0.8],
        }
    }

    /// `(loss, d loss / d logp_train)` of GSPO with the weights of `agg`.
    fn gspo_loss_and_grad(b: &GspoBatch, agg: Aggregation) -> (f32, Vec<Vec<f32>>) {
        let obj = Objective::Gspo {
            eps_low: 0.2,
            eps_high: 0.2,
        };
        let w = sample_weights(obj, agg, &b.group_of, &b.lens);
        let rows = |f: &dyn Fn(usize, usize) -> f32| -> Tensor {
            let v: Vec<Vec<f32>> = (0..5)
                .map(|i| {
                    (0..5)
                        .map(|t| if t < b.lens[i] { f(i, t) } else { 0.0 })
                        .collect()
                })
                .collect();
            Tensor::new(v, &Device::Cpu).unwrap()
        };
        let train = candle_core::Var::from_tensor(&rows(&|i, t| b.logp_train[i][t])).unwrap();
        let (l, _) = loss(
            obj,
            &ObjectiveInputs {
                logp_train: train.as_tensor(),
                logp_gen: &rows(&|i, t| b.logp_gen[i][t]),
                advantage: &rows(&|i, _| b.adv[i]),
                weight: &rows(&|i, _| w[i]),
            },
        )
        .unwrap();
        let grads = l.backward().unwrap();
        let g = grads.get(train.as_tensor()).unwrap().to_vec2().unwrap();
        (l.to_scalar().unwrap(), g)
    }

    #[test]
    fn gspo_weights_each_sequence_one_over_g_whatever_the_aggregation() {
        let b = gspo_batch();
        let obj = Objective::Gspo {
            eps_low: 0.2,
            eps_high: 0.2,
        };
        let aggs = [Aggregation::Prompt, Aggregation::Sample, Aggregation::Token];
        for agg in aggs {
            let w = sample_weights(obj, agg, &b.group_of, &b.lens);
            // Sequence totals: 1/(2 groups * 3) in group 0, 1/(2 * 2) in group 1.
            let totals: Vec<f32> = w.iter().zip(&b.lens).map(|(w, &l)| w * l as f32).collect();
            for (total, expected) in totals.iter().zip([6.0, 6.0, 6.0, 4.0, 4.0]) {
                assert!((total - 1.0 / expected).abs() < 1e-7, "{agg:?}: {totals:?}");
            }
            // The other objectives keep the aggregation's own weights.
            let cispo = Objective::Cispo { eps_max: 4.0 };
            assert_eq!(
                sample_weights(cispo, agg, &b.group_of, &b.lens),
                aggregation_weights(agg, &b.group_of, &b.lens)
            );
        }

        let (l0, g0) = gspo_loss_and_grad(&b, Aggregation::Prompt);
        for agg in [Aggregation::Sample, Aggregation::Token] {
            let (l, g) = gspo_loss_and_grad(&b, agg);
            assert_eq!(l, l0, "{agg:?} loss");
            assert_eq!(g, g0, "{agg:?} gradient");
        }

        // The GSPO paper's objective: mean over groups of 1/G sum_i min(s_i A_i, clip(s_i) A_i).
        let term = |i: usize| {
            let l = b.lens[i];
            let log_ratio: f64 = (0..l)
                .map(|t| (b.logp_train[i][t] - b.logp_gen[i][t]) as f64)
                .sum::<f64>()
                / l as f64;
            let (s, a) = (log_ratio.exp(), b.adv[i] as f64);
            (s * a).min(s.clamp(0.8, 1.2) * a)
        };
        let j = 0.5 * ((term(0) + term(1) + term(2)) / 3.0 + (term(3) + term(4)) / 2.0);
        assert!((l0 as f64 + j).abs() < 1e-6, "{l0} vs {}", -j);
        // Sequence 2 is clipped (s = e^-0.6 < 0.8 with A < 0 takes the clipped side): no
        // gradient; the others' gradients are spread evenly over their own tokens only.
        assert!(g0[2].iter().all(|&x| x == 0.0), "{:?}", g0[2]);
        for (i, row) in g0.iter().enumerate() {
            assert!(
                row[b.lens[i]..].iter().all(|&x| x == 0.0),
                "padding row {i}"
            );
            assert!(row[..b.lens[i]].iter().all(|&x| (x - row[0]).abs() < 1e-7));
        }
    }
}
