//! How good a verifier's probabilities are on held-out samples: how well they rank right
//! above wrong (AUC) and whether they mean what they say (expected calibration error, and
//! the mean prediction against the actual accuracy).

use serde::{Deserialize, Serialize};

/// Bins of the expected calibration error.
pub const ECE_BINS: usize = 10;

/// A reward model's figures on labelled samples.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    /// Samples scored.
    pub n: usize,
    /// Probability that a random correct sample scores above a random wrong one (ties count
    /// half); `None` when all samples are right or all wrong.
    pub auc: Option<f64>,
    /// Expected calibration error over [`ECE_BINS`] equal-width bins of the predicted
    /// probability: `sum_b |b| / n * |mean prediction_b - accuracy_b|`.
    pub ece: f64,
    /// Mean predicted probability of being correct.
    pub mean_predicted: f64,
    /// Fraction actually correct.
    pub accuracy: f64,
}

/// The figures of `probs` (predicted probability of being correct) against `labels`.
pub fn calibration(probs: &[f64], labels: &[bool]) -> Calibration {
    let n = probs.len().min(labels.len());
    let mean = |v: &mut dyn Iterator<Item = f64>| v.sum::<f64>() / n.max(1) as f64;
    Calibration {
        n,
        auc: auc(probs, labels),
        ece: ece(probs, labels, ECE_BINS),
        mean_predicted: mean(&mut probs.iter().take(n).copied()),
        accuracy: mean(&mut labels.iter().take(n).map(|&l| f64::from(u8::from(l)))),
    }
}

/// The area under the ROC curve (Mann-Whitney U over pairs), ties counted half; `None`
/// without both a positive and a negative.
pub fn auc(scores: &[f64], labels: &[bool]) -> Option<f64> {
    let mut order: Vec<(f64, bool)> = scores.iter().copied().zip(labels.iter().copied()).collect();
    order.sort_by(|a, b| a.0.total_cmp(&b.0));
    let positives = order.iter().filter(|(_, l)| *l).count();
    let negatives = order.len() - positives;
    if positives == 0 || negatives == 0 {
        return None;
    }
    // Sum over positives of (negatives below + half the negatives tied), one tie run at a time.
    let (mut wins, mut below, mut i) = (0.0, 0usize, 0);
    while i < order.len() {
        let j = (i..order.len())
            .find(|&j| order[j].0 != order[i].0)
            .unwrap_or(order.len());
        let pos = order[i..j].iter().filter(|(_, l)| *l).count();
        let neg = (j - i) - pos;
        wins += pos as f64 * (below as f64 + 0.5 * neg as f64);
        below += neg;
        i = j;
    }
    Some(wins / (positives * negatives) as f64)
}

/// Expected calibration error over `bins` equal-width bins of `probs` in [0, 1].
pub fn ece(probs: &[f64], labels: &[bool], bins: usize) -> f64 {
    let n = probs.len().min(labels.len());
    if n == 0 || bins == 0 {
        return 0.0;
    }
    let mut sums = vec![(0usize, 0.0f64, 0.0f64); bins];
    for (&p, &l) in probs.iter().zip(labels) {
        let b = ((p.clamp(0.0, 1.0) * bins as f64) as usize).min(bins - 1);
        sums[b].0 += 1;
        sums[b].1 += p;
        sums[b].2 += f64::from(u8::from(l));
    }
    // Per bin, |sum of predictions - number correct| / n = |b| / n * |mean prediction - accuracy|.
    sums.iter()
        .map(|&(_, p, correct)| (p - correct).abs() / n as f64)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auc_counts_ordered_pairs_and_half_ties() {
        // Positives 0.9, 0.4; negatives 0.5, 0.1: pairs won 2 + 1 of 4.
        let (s, l) = ([0.9, 0.5, 0.4, 0.1], [true, false, true, false]);
        assert_eq!(auc(&s, &l), Some(0.75));
        assert_eq!(auc(&[0.3, 0.3], &[true, false]), Some(0.5));
        assert_eq!(auc(&[0.1, 0.9], &[false, true]), Some(1.0));
        assert_eq!(auc(&[0.9, 0.1], &[false, true]), Some(0.0));
        assert_eq!(auc(&[0.9, 0.1], &[true, true]), None);
    }

    #[test]
    fn ece_is_the_weighted_gap_per_bin() {
        // Bin 0.8-0.9: two predictions of 0.8, one right: gap 0.3, weight 2/4.
        // Bin 0.1-0.2: two of 0.1, none right: gap 0.1, weight 2/4.
        let p = [0.8, 0.8, 0.1, 0.1];
        let l = [true, false, false, false];
        assert!((ece(&p, &l, 10) - (0.5 * 0.3 + 0.5 * 0.1)).abs() < 1e-12);
        // Perfectly calibrated bins have no error.
        assert!(ece(&[0.5, 0.5], &[true, false], 10).abs() < 1e-12);
        let c = calibration(&p, &l);
        assert_eq!((c.n, c.accuracy), (4, 0.25));
        assert!((c.mean_predicted - 0.45).abs() < 1e-12);
        assert_eq!(c.auc, Some(5.0 / 6.0));
    }
}
