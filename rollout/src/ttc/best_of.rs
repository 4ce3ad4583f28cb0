//! Best-of-N selection: pick one of N samples of a prompt by its sequence log-prob under the
//! model (total, or per-token mean), or by the verifier (the oracle, an upper bound that needs
//! the reference answer and so is not a deployable method).

use serde::{Deserialize, Serialize};

/// How best-of-N ranks samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Selection {
    /// Highest total log-prob `sum_t log p(x_t | x_<t)` (favours short answers).
    TotalLogprob,
    /// Highest mean log-prob per token.
    MeanLogprob,
    /// Any correct sample, if there is one (pass@N): an upper bound, not a method.
    Oracle,
}

/// The score of a sequence under `selection` from its per-token log-probs at temperature 1;
/// `None` for [`Selection::Oracle`], which ranks by reward instead.
pub fn sequence_score(logprobs: &[f32], selection: Selection) -> Option<f64> {
    let total: f64 = logprobs.iter().map(|&l| l as f64).sum();
    match selection {
        Selection::TotalLogprob => Some(total),
        Selection::MeanLogprob => Some(total / logprobs.len().max(1) as f64),
        Selection::Oracle => None,
    }
}

/// Index of the highest score; ties go to the earliest sample and NaN never wins. `None` for
/// an empty list.
pub fn best_index(scores: &[f64]) -> Option<usize> {
    let mut best: Option<usize> = None;
    for (i, &s) in scores.iter().enumerate() {
        match best {
            _ if s.is_nan() => {}
            None => best = Some(i),
            Some(b) if s > scores[b] => best = Some(i),
            Some(_) => {}
        }
    }
    best.or(if scores.is_empty() { None } else { Some(0) })
}

/// The sample best-of-N returns: by `selection` over `logprobs` (per sample, temperature 1),
/// or for the oracle the first sample whose reward is positive (else the first sample).
pub fn select(logprobs: &[Vec<f32>], rewards: &[f32], selection: Selection) -> Option<usize> {
    if selection == Selection::Oracle {
        return rewards
            .iter()
            .position(|&r| r > 0.5)
            .or((!rewards.is_empty()).then_some(0));
    }
    let scores: Vec<f64> = logprobs
        .iter()
        .map(|l| sequence_score(l, selection).unwrap_or(f64::NAN))
        .collect();
    best_index(&scores)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn total_and_mean_can_disagree() {
        let short = vec![-1.0f32];
        let long = vec![-0.6f32, -0.6];
        let lps = [short, long];
        assert_eq!(select(&lps, &[0.0, 1.0], Selection::TotalLogprob), Some(0));
        assert_eq!(select(&lps, &[0.0, 1.0], Selection::MeanLogprob), Some(1));
        assert_eq!(select(&lps, &[0.0, 1.0], Selection::Oracle), Some(1));
        assert_eq!(select(&lps, &[0.0, 0.0], Selection::Oracle), Some(0));
    }

    #[test]
    fn ties_go_first_and_nan_never_wins() {
        assert_eq!(best_index(&[-1.0, -0.5, -0.5]), Some(1));
        assert_eq!(best_index(&[f64::NAN, -3.0, -4.0]), Some(1));
        assert_eq!(best_index(&[f64::NAN]), Some(0));
        assert_eq!(best_index(&[]), None);
        assert_eq!(
            sequence_score(&[-1.0, -2.0], Selection::MeanLogprob),
            Some(-1.5)
        );
        assert_eq!(sequence_score(&[-1.0], Selection::Oracle), None);
    }
}
